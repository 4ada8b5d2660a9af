//! The store, as the core sees it: atomic units of work over keys and
//! values. [`keys`] is the one table of every key written and whose it is;
//! [`WriteSet`] is the buffer of writes every backend shares; [`memory`]
//! is a small backend for the core's own unit tests. Every backend — `embedded` (redb) and `redis` in the native
//! gateway, Spin's outbound Redis at the edge — implements [`Backend`]; all
//! domain logic is written once, in the rooms over [`crate::db::Db`],
//! against [`Txn`].
//!
//! A unit of work reads keys, decides, and writes. Backends make it atomic:
//! redb runs it inside one write transaction; Redis runs it optimistically —
//! reads are plain `MGET`s, and the commit is one Lua script that applies the
//! writes only if every key read still holds what was read, otherwise the
//! unit is retried. Runtime-free: futures here are polled by the host's
//! executor, whatever it is.

use std::future::Future;
use std::pin::Pin;

pub mod keys;
pub mod memory;
pub mod redis;
mod writeset;

pub use keys::Keys;
pub use writeset::WriteSet;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Values read for a list of keys, in order (`None` = absent).
pub type Values = Vec<Option<Vec<u8>>>;

/// Values read, and the value of the key the followed one named.
pub type Followed = (Values, Option<Vec<u8>>);

/// Every key and value.
pub type Dump = Vec<(String, Vec<u8>)>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Concurrent writers kept invalidating this unit of work.
    #[error("gave up after {0} conflicting concurrent attempts")]
    Contention(u32),
    /// A stored value does not decode.
    #[error("corrupt value at `{key}`: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// Whose fault it is: an unreachable or busy store is the store's (a
    /// retry later may succeed); a value that does not decode is ours.
    pub fn fault(&self) -> crate::Fault {
        match self {
            StoreError::Unavailable(_) | StoreError::Contention(_) => crate::Fault::Store,
            StoreError::Corrupt { .. } => crate::Fault::Gateway,
        }
    }
}

/// One atomic unit of work's view of the store. Reads see the unit's own
/// writes; writes become visible to others all at once, at commit, or never.
pub trait Txn: Send {
    /// Reads several keys at once (one round trip on Redis).
    fn get_many<'a>(
        &'a mut self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, StoreError>>;

    /// Reads `keys`, and — if `keys[follow]` holds a value `v` — also the key
    /// `prefix ‖ v ‖ suffix`, in one round trip where the backend can (a
    /// lookup key and the record it points to). The followed read counts as
    /// a read of this unit like any other.
    fn get_many_following<'a>(
        &'a mut self,
        keys: &'a [String],
        follow: usize,
        prefix: &'a str,
        suffix: &'a str,
    ) -> BoxFuture<'a, Result<Followed, StoreError>> {
        Box::pin(follow_in_two_reads(self, keys, follow, prefix, suffix))
    }

    /// Buffers a write.
    fn put(&mut self, key: &str, value: Vec<u8>);

    /// Buffers a deletion.
    fn delete(&mut self, key: &str);

    /// Drops every write buffered so far: the unit ends without changing
    /// anything (how a unit that fails with a domain error is abandoned).
    fn discard(&mut self);

    /// Buffers a write that the store may drop once its retention has
    /// passed — a retention, not a deadline: readers must still check the
    /// time if it matters to them.
    fn put_expiring(&mut self, key: &str, value: Vec<u8>, expiry: Expiry) {
        let _ = expiry;
        self.put(key, value);
    }

    /// Buffers increments of a counter key (see [`Write::Add`]). A unit
    /// never reads a key it adds to.
    fn add(&mut self, key: &str, delta: &std::collections::BTreeMap<String, f64>);

    /// Marks this unit's writes as safe to lose in a crash (a job's lease:
    /// lost, it only makes the job due again), so a backend may commit them
    /// without waiting for the disk. Backends without the distinction
    /// ignore it.
    fn relax_durability(&mut self) {}
}

/// [`Txn::get_many_following`] as two reads: for backends (and cases) that
/// cannot do it in one.
pub async fn follow_in_two_reads<T: Txn + ?Sized>(
    txn: &mut T,
    keys: &[String],
    follow: usize,
    prefix: &str,
    suffix: &str,
) -> Result<Followed, StoreError> {
    let values = txn.get_many(keys).await?;
    let target = match values.get(follow).cloned().flatten() {
        Some(v) => {
            let key = [format!("{prefix}{}{suffix}", String::from_utf8_lossy(&v))];
            txn.get_many(&key).await?.pop().flatten()
        }
        None => None,
    };
    Ok((values, target))
}

/// Reads one key.
pub async fn get(txn: &mut dyn Txn, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let keys = [key.to_string()];
    Ok(txn.get_many(&keys).await?.pop().flatten())
}

/// A unit of work: called once per attempt with a fresh transaction that it
/// borrows for that attempt; the backend commits the transaction after the
/// returned future completes. `'w` is how long what the unit captures
/// lives.
pub type Work<'w, T> = dyn for<'t> Fn(&'t mut dyn Txn, Scope<'t, 'w>) -> BoxFuture<'t, Result<T, StoreError>>
    + Send
    + Sync
    + 'w;

/// Carries nothing; its type says `'w: 't` — what a unit captures outlives
/// the attempt's borrow of the transaction — so that the unit's future may
/// borrow both. (A closure's signature cannot state that bound itself.)
#[derive(Debug, Clone, Copy)]
pub struct Scope<'t, 'w>(std::marker::PhantomData<&'t &'w ()>);

impl Scope<'_, '_> {
    /// The scope of one attempt (backends make one per call of a unit).
    pub fn new() -> Self {
        Scope(std::marker::PhantomData)
    }
}

impl Default for Scope<'_, '_> {
    fn default() -> Self {
        Self::new()
    }
}

/// A storage backend: runs units of work atomically.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Runs `work` atomically, retrying it on conflict.
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>>;

    /// Runs `work`, which only reads, on a snapshot of what is committed.
    /// Backends whose writers serialize can run it beside them, and refuse
    /// a unit that writes here (embedded, memory); the default runs it like
    /// any unit (Redis: a unit that only reads is one round trip anyway).
    fn read<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        self.transact(work)
    }

    /// Drops keys whose retention (see [`Txn::put_expiring`]) ended by
    /// `now` (Unix seconds), at most `limit` of them; returns how many.
    /// Backends that expire keys themselves (Redis) have nothing to do.
    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        let _ = (now, limit);
        Box::pin(std::future::ready(Ok(0)))
    }

    /// Whether the backend answers (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every key and value (for the leak test and exports). Backends may
    /// stream; this one is for bounded test data.
    fn dump(&self) -> BoxFuture<'_, Result<Dump, StoreError>>;

    /// About `limit` keys under `prefix` and their values, from where
    /// `cursor` (the previous page's) left off; the next cursor, `None`
    /// once every key has been seen. Keys written during a scan may or may
    /// not be seen; keys present throughout are seen at least once (for
    /// walks over the whole store: `gateway rekey`).
    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>>;
}

/// One page of [`Backend::scan`]: keys and values, and the next cursor.
pub type ScanPage = (Dump, Option<String>);

/// How many times a conflicted unit of work is retried.
pub const MAX_ATTEMPTS: u32 = 32;

/// How long a key is kept, stated both ways so that each backend can use
/// the one its expiry is judged by: a backend that sweeps by the injected
/// clock (embedded) uses [`Expiry::at`]; one whose server judges expiry by
/// its own wall clock (Redis) uses [`Expiry::ttl`], so that a node whose
/// clock differs from the server's — or a test whose clock is fixed — never
/// writes a key that is already gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Unix second, by the injected clock, after which the key may go.
    pub at: u64,
    /// Seconds from the write, the same retention relative to now.
    pub ttl: u64,
}

impl Expiry {
    /// Kept `ttl` seconds from `now` (Unix seconds, the injected clock).
    pub fn after(now: u64, ttl: u64) -> Self {
        Expiry {
            at: now.saturating_add(ttl),
            ttl,
        }
    }

    /// Kept until `at`, as seen at `now` (both Unix seconds by the
    /// injected clock). A `ttl` of 0 means the retention has already
    /// passed.
    pub fn until(at: u64, now: u64) -> Self {
        Expiry {
            at,
            ttl: at.saturating_sub(now),
        }
    }
}

/// A buffered write.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Set the key.
    Put(Vec<u8>),
    /// Set the key, droppable once its retention has passed.
    PutUntil(Vec<u8>, Expiry),
    /// Remove the key.
    Delete,
    /// Add to the numbers of a JSON object of counters (absent: `{}`),
    /// field by field, without the unit reading it: increments commute,
    /// so units adding to one counter key never conflict.
    Add(std::collections::BTreeMap<String, f64>),
}

/// A counter key's value after adding `delta` to `current` (a JSON object
/// of numbers; absent or unreadable counts as `{}`): how every backend but
/// Redis applies [`Write::Add`] (Redis runs the same in its commit script).
pub fn add_counters(
    current: Option<&[u8]>,
    delta: &std::collections::BTreeMap<String, f64>,
) -> Vec<u8> {
    let mut m: std::collections::BTreeMap<String, f64> = current
        .and_then(|c| serde_json::from_slice(c).ok())
        .unwrap_or_default();
    for (k, v) in delta {
        *m.entry(k.clone()).or_default() += v;
    }
    // A counter back at zero goes (what is taken out leaves no name).
    m.retain(|_, v| v.abs() >= 1e-9);
    serde_json::to_vec(&m).unwrap_or_default()
}

impl<B: Backend> Backend for std::sync::Arc<B> {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        (**self).transact(work)
    }

    fn read<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        (**self).read(work)
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        (**self).sweep_expired(now, limit)
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).ping()
    }

    fn dump(&self) -> BoxFuture<'_, Result<Dump, StoreError>> {
        (**self).dump()
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        (**self).scan(prefix, cursor, limit)
    }
}
