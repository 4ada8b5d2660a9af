//! The embedded backend: one redb file, one table of keys and sealed
//! values. A unit of work runs inside a redb write transaction, so it is
//! atomic and serialized with every other; reads inside it see its own
//! writes. redb's API is synchronous: the unit runs on the calling task and
//! its futures are always ready.
//!
//! Group commit: redb has one writer at a time and every durable commit is
//! an fsync, so units that arrive while a commit is in flight run, one
//! after another, in the *next* transaction, and that transaction is
//! committed (one fsync) for all of them. Each caller returns only once the
//! transaction holding its writes is durable; a unit that only read returns
//! at once, unless it read writes still waiting for their commit. Units
//! that asked for relaxed durability (a job's lease) are committed without
//! an fsync when nothing else in their batch needs one.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chatcrafter_core::store::{
    Backend, BoxFuture, Expiry, Scope, StoreError, Txn, Work, Write, WriteSet,
};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::{Mutex, watch};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Key → the Unix second its retention ends.
const EXPIRES: TableDefinition<&str, u64> = TableDefinition::new("expires");
/// (second, key) → (): the same, in time order, for the sweep.
const EXPIRY_ORDER: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry_order");

/// How a batch's commit ended (`None` while it is pending).
type Outcome = Option<Result<(), String>>;

/// The write transaction units are joining, and its commit's outcome.
struct Batch {
    tx: Option<redb::WriteTransaction>,
    /// Whether a unit has written in `tx`.
    written: bool,
    /// Whether a unit in `tx` needs an fsync.
    durable: bool,
    /// Whether the commit of `tx` is scheduled.
    committing: bool,
    done: watch::Sender<Outcome>,
}

/// The redb file.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    batch: Arc<Mutex<Batch>>,
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Embedded")
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

impl Embedded {
    /// Opens (or creates) `dir/gateway.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let path = dir.join("gateway.redb");
        let db = Database::create(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let w = db.begin_write().map_err(err)?;
        w.open_table(TABLE).map_err(err)?;
        w.open_table(EXPIRES).map_err(err)?;
        w.open_table(EXPIRY_ORDER).map_err(err)?;
        w.commit().map_err(err)?;
        Ok(Embedded {
            commits: Arc::default(),
            db: Arc::new(db),
            batch: Arc::new(Mutex::new(Batch {
                tx: None,
                written: false,
                durable: false,
                committing: false,
                done: watch::channel(None).0,
            })),
        })
    }
}

impl Embedded {
    /// Transactions committed since opening (each batch of units is one).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Waits for the commit a receiver belongs to.
async fn committed(mut rx: watch::Receiver<Outcome>) -> Result<(), StoreError> {
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return r.map_err(err);
        }
        if rx.changed().await.is_err() {
            return Err(err("the commit was abandoned"));
        }
    }
}

/// Commits the open batch, after letting the units already waiting join
/// it. Runs as its own task, so no caller's cancellation can strand the
/// batch.
async fn commit_batch(batch: Arc<Mutex<Batch>>, commits: Arc<std::sync::atomic::AtomicU64>) {
    tokio::task::yield_now().await;
    let mut g = batch.lock().await;
    let Some(mut tx) = g.tx.take() else {
        // The batch was lost (a unit panicked holding its transaction):
        // its waiters hear so rather than wait for the next batch.
        if g.done.borrow().is_none() {
            g.done
                .send_replace(Some(Err("the batch's transaction was lost".into())));
        }
        return;
    };
    if !g.durable {
        // Only leases: losing them in a crash just makes their jobs due.
        let _ = tx.set_durability(Durability::None);
    }
    let result = match tokio::task::spawn_blocking(move || tx.commit()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the commit task failed: {e}")),
    };
    commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    g.done.send_replace(Some(result));
}

/// `keys` from `table`, as the unit's own `pending` writes leave them.
fn read_keys(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    keys: &[String],
    pending: &WriteSet,
) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    pending.read_through(keys, |k| {
        Ok(table.get(k).map_err(err)?.map(|g| g.value().to_vec()))
    })
}

struct EmbeddedTxn {
    tx: redb::WriteTransaction,
    writes: WriteSet,
}

impl Txn for EmbeddedTxn {
    fn get_many<'a>(
        &'a mut self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, StoreError>> {
        let result = self
            .tx
            .open_table(TABLE)
            .map_err(err)
            .and_then(|table| read_keys(&table, keys, &self.writes));
        Box::pin(std::future::ready(result))
    }

    fn put(&mut self, key: &str, value: Vec<u8>) {
        self.writes.put(key, value);
    }

    fn delete(&mut self, key: &str) {
        self.writes.delete(key);
    }

    fn add(&mut self, key: &str, delta: &std::collections::BTreeMap<String, f64>) {
        self.writes.add(key, delta);
    }

    fn relax_durability(&mut self) {
        self.writes.relax();
    }

    fn discard(&mut self) {
        self.writes.discard();
    }

    fn put_expiring(&mut self, key: &str, value: Vec<u8>, expiry: Expiry) {
        self.writes.put_expiring(key, value, expiry);
    }
}

/// Applies a unit's writes to the batch's transaction, keeping the
/// retention tables in step (a key written again without one loses it).
fn apply(tx: &redb::WriteTransaction, writes: &WriteSet) -> Result<(), StoreError> {
    let mut table = tx.open_table(TABLE).map_err(err)?;
    let mut expires = tx.open_table(EXPIRES).map_err(err)?;
    let mut order = tx.open_table(EXPIRY_ORDER).map_err(err)?;
    for (k, w) in writes.iter() {
        let key = k.as_str();
        if let Some(old) = expires.remove(key).map_err(err)? {
            order.remove((old.value(), key)).map_err(err)?;
        }
        match w {
            Write::Put(v) => {
                table.insert(key, v.as_slice()).map_err(err)?;
            }
            Write::PutUntil(v, e) => {
                // Swept by the injected clock (`sweep_expired(now)`).
                table.insert(key, v.as_slice()).map_err(err)?;
                expires.insert(key, e.at).map_err(err)?;
                order.insert((e.at, key), ()).map_err(err)?;
            }
            Write::Delete => {
                table.remove(key).map_err(err)?;
            }
            Write::Add(delta) => {
                let now = {
                    let current = table.get(key).map_err(err)?;
                    chatcrafter_core::store::add_counters(
                        current.as_ref().map(|v| v.value()),
                        delta,
                    )
                };
                table.insert(key, now.as_slice()).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// A read-only unit's view: a redb read transaction.
struct SnapshotTxn {
    tx: redb::ReadTransaction,
    wrote: bool,
}

impl Txn for SnapshotTxn {
    fn get_many<'a>(
        &'a mut self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, StoreError>> {
        let result = self
            .tx
            .open_table(TABLE)
            .map_err(err)
            .and_then(|table| read_keys(&table, keys, &WriteSet::default()));
        Box::pin(std::future::ready(result))
    }

    fn put(&mut self, _key: &str, _value: Vec<u8>) {
        self.wrote = true;
    }

    fn delete(&mut self, _key: &str) {
        self.wrote = true;
    }

    fn add(&mut self, _key: &str, _delta: &std::collections::BTreeMap<String, f64>) {
        self.wrote = true;
    }

    fn discard(&mut self) {
        self.wrote = false;
    }
}

impl Backend for Embedded {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            let mut g = self.batch.lock().await;
            let tx = match g.tx.take() {
                Some(tx) => tx,
                None => {
                    // Never waits: every write transaction is begun here,
                    // under this lock, and committed under it.
                    let tx = self.db.begin_write().map_err(err)?;
                    g.written = false;
                    g.durable = false;
                    g.committing = false;
                    g.done = watch::channel(None).0;
                    tx
                }
            };
            let mut txn = EmbeddedTxn {
                tx,
                writes: WriteSet::default(),
            };
            // Every read is synchronous, so the unit completes on its first
            // poll; anything else is a bug in the unit.
            let out = {
                let mut fut = work(&mut txn, Scope::new());
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                }
            };
            let Some(out) = out else {
                // Nothing was applied: the batch's transaction goes back.
                g.tx = Some(txn.tx);
                return Err(err("a unit of work awaited something other than the store"));
            };
            let writes = std::mem::take(&mut txn.writes);
            let relaxed = writes.is_relaxed();
            let tx = txn.tx;
            let out = match out {
                Ok(v) => v,
                Err(e) => {
                    g.tx = Some(tx);
                    return Err(e);
                }
            };
            if writes.is_empty() {
                let waits = g.written;
                let rx = g.done.subscribe();
                g.tx = Some(tx);
                drop(g);
                if waits {
                    // It read writes that are not durable yet.
                    committed(rx).await?;
                }
                return Ok(out);
            }
            let applied = apply(&tx, &writes);
            if let Err(e) = applied {
                // Half applied: the whole batch goes, and says so.
                drop(tx);
                g.done.send_replace(Some(Err(e.to_string())));
                return Err(e);
            }
            g.tx = Some(tx);
            g.written = true;
            g.durable |= !relaxed;
            let rx = g.done.subscribe();
            if !g.committing {
                g.committing = true;
                tokio::spawn(commit_batch(self.batch.clone(), self.commits.clone()));
            }
            drop(g);
            committed(rx).await?;
            Ok(out)
        })
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            // What has expired, as of the last commit…
            let expired: Vec<(String, Vec<u8>)> = {
                let r = self.db.begin_read().map_err(err)?;
                let order = r.open_table(EXPIRY_ORDER).map_err(err)?;
                let table = r.open_table(TABLE).map_err(err)?;
                let mut out = Vec::new();
                for item in order
                    .range((0, "")..(now.saturating_add(1), ""))
                    .map_err(err)?
                {
                    let (k, _) = item.map_err(err)?;
                    let key = k.value().1.to_string();
                    if let Some(v) = table.get(key.as_str()).map_err(err)? {
                        out.push((key, v.value().to_vec()));
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                out
            };
            if expired.is_empty() {
                return Ok(0);
            }
            // …deleted in one unit, unless written again since.
            let keys: Vec<String> = expired.iter().map(|(k, _)| k.clone()).collect();
            let (keys, expired) = (&keys, &expired);
            let work: &Work<'_, usize> = &move |txn, _| {
                Box::pin(async move {
                    let now_values = txn.get_many(keys).await?;
                    let mut n = 0;
                    for ((key, then), current) in expired.iter().zip(now_values) {
                        if current.as_ref() == Some(then) {
                            txn.delete(key);
                            n += 1;
                        }
                    }
                    Ok(n)
                })
            };
            self.transact(work).await
        })
    }

    fn read<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        // A read transaction: the last commit's snapshot, beside the writer.
        Box::pin(std::future::ready((|| {
            let tx = self.db.begin_read().map_err(err)?;
            let mut txn = SnapshotTxn { tx, wrote: false };
            let out = {
                let mut fut = work(&mut txn, Scope::new());
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(r) => r,
                    Poll::Pending => {
                        return Err(err("a unit of work awaited something other than the store"));
                    }
                }
            };
            if txn.wrote {
                return Err(err("a read-only unit of work tried to write"));
            }
            out
        })()))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(
            self.db.begin_read().map(|_| ()).map_err(err),
        ))
    }

    fn dump(&self) -> BoxFuture<'_, Result<Vec<(String, Vec<u8>)>, StoreError>> {
        Box::pin(std::future::ready((|| {
            let r = self.db.begin_read().map_err(err)?;
            let table = r.open_table(TABLE).map_err(err)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })()))
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<chatcrafter_core::store::ScanPage, StoreError>> {
        Box::pin(std::future::ready((|| {
            use std::ops::Bound;
            let r = self.db.begin_read().map_err(err)?;
            let table = r.open_table(TABLE).map_err(err)?;
            let from = match cursor {
                Some(c) => Bound::Excluded(c),
                None => Bound::Included(prefix),
            };
            let mut page = Vec::new();
            for item in table.range::<&str>((from, Bound::Unbounded)).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                if !k.value().starts_with(prefix) || page.len() == limit {
                    break;
                }
                page.push((k.value().to_string(), v.value().to_vec()));
            }
            let next = (page.len() == limit).then(|| page[limit - 1].0.clone());
            Ok((page, next))
        })()))
    }
}
