//! The embedded backend: one redb file, one table of keys and sealed
//! values. A unit of work runs inside one redb write transaction, so it is
//! atomic and serialized with every other; reads inside it see its own
//! writes. redb's API is synchronous: the unit runs on the calling task and
//! its futures are always ready.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chatcrafter_core::store::{Backend, BoxFuture, StoreError, Txn, Work, Write};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// The redb file.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
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
        w.commit().map_err(err)?;
        Ok(Embedded { db: Arc::new(db) })
    }
}

struct EmbeddedTxn {
    tx: redb::WriteTransaction,
    writes: BTreeMap<String, Write>,
}

impl Txn for EmbeddedTxn {
    fn get_many<'a>(
        &'a mut self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, StoreError>> {
        let result = (|| {
            let table = self.tx.open_table(TABLE).map_err(err)?;
            keys.iter()
                .map(|k| match self.writes.get(k) {
                    Some(Write::Put(v)) => Ok(Some(v.clone())),
                    Some(Write::Delete) => Ok(None),
                    None => Ok(table
                        .get(k.as_str())
                        .map_err(err)?
                        .map(|g| g.value().to_vec())),
                })
                .collect()
        })();
        Box::pin(std::future::ready(result))
    }

    fn put(&mut self, key: &str, value: Vec<u8>) {
        self.writes.insert(key.to_string(), Write::Put(value));
    }

    fn delete(&mut self, key: &str) {
        self.writes.insert(key.to_string(), Write::Delete);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl Backend for Embedded {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(std::future::ready((|| {
            let tx = self.db.begin_write().map_err(err)?;
            let txn: Box<dyn Txn> = Box::new(EmbeddedTxn {
                tx,
                writes: BTreeMap::new(),
            });
            // Every read is synchronous, so the unit completes on its first
            // poll; anything else is a bug in the unit.
            let (txn, out) = {
                let mut fut = work(txn);
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(r) => r,
                    Poll::Pending => {
                        return Err(err("a unit of work awaited something other than the store"));
                    }
                }
            };
            let mut txn = txn
                .into_any()
                .downcast::<EmbeddedTxn>()
                .map_err(|_| err("foreign transaction"))?;
            let out = match out {
                Ok(v) => v,
                Err(e) => {
                    txn.tx.abort().map_err(err)?;
                    return Err(e);
                }
            };
            let writes = std::mem::take(&mut txn.writes);
            let tx = txn.tx;
            if writes.is_empty() {
                // Nothing to make durable: skip the commit and its fsync.
                tx.abort().map_err(err)?;
                return Ok(out);
            }
            {
                let mut table = tx.open_table(TABLE).map_err(err)?;
                for (k, w) in &writes {
                    match w {
                        Write::Put(v) => {
                            table.insert(k.as_str(), v.as_slice()).map_err(err)?;
                        }
                        Write::Delete => {
                            table.remove(k.as_str()).map_err(err)?;
                        }
                    }
                }
            }
            tx.commit().map_err(err)?;
            Ok(out)
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
}
