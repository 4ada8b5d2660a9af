//! A small in-memory backend, so that the rules written against [`Txn`]
//! (resolution order, limits, merge and undo, queue leases, reminders)
//! have unit tests beside their code. Units run one at a time, to
//! completion, under one lock: serializable by construction. It keeps
//! nothing across restarts and is for tests, not for serving; the real
//! backends are `embedded` and `redis` in the native gateway, held to the
//! same behaviour by its conformance suite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Backend, BoxFuture, Dump, Scope, StoreError, Txn, Work, Write, WriteSet};

/// Key → (value, the Unix second its retention ends).
type Map = BTreeMap<String, (Vec<u8>, Option<u64>)>;

/// The in-memory store.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    data: Arc<Mutex<Map>>,
    /// Held for the whole of a unit of work.
    writer: Arc<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking unit leaves no half-applied writes (they are applied
    // after the unit returns), so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct MemoryTxn {
    data: Arc<Mutex<Map>>,
    writes: WriteSet,
    read_only: bool,
    wrote: bool,
}

impl Txn for MemoryTxn {
    fn get_many<'a>(
        &'a mut self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, StoreError>> {
        let data = lock(&self.data);
        let values = self
            .writes
            .read_through(keys, |k| Ok(data.get(k).map(|(v, _)| v.clone())));
        Box::pin(std::future::ready(values))
    }

    fn put(&mut self, key: &str, value: Vec<u8>) {
        self.wrote = true;
        self.writes.put(key, value);
    }

    fn delete(&mut self, key: &str) {
        self.wrote = true;
        self.writes.delete(key);
    }

    fn add(&mut self, key: &str, delta: &std::collections::BTreeMap<String, f64>) {
        self.wrote = true;
        self.writes.add(key, delta);
    }

    fn discard(&mut self) {
        self.wrote = false;
        self.writes.discard();
    }

    fn put_expiring(&mut self, key: &str, value: Vec<u8>, expiry: super::Expiry) {
        self.wrote = true;
        self.writes.put_expiring(key, value, expiry);
    }
}

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn run<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
        read_only: bool,
    ) -> Result<T, StoreError> {
        let _unit = lock(&self.writer);
        let mut txn = MemoryTxn {
            data: self.data.clone(),
            writes: WriteSet::default(),
            read_only,
            wrote: false,
        };
        // Every read is ready at once, so a unit completes on its first
        // poll; anything else awaited something other than the store.
        let out = {
            let mut fut = work(&mut txn, Scope::new());
            match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    return Err(StoreError::Unavailable(
                        "memory: a unit of work awaited something other than the store".into(),
                    ));
                }
            }
        };
        let out = out?;
        if txn.read_only && txn.wrote {
            return Err(StoreError::Unavailable(
                "memory: a read-only unit of work tried to write".into(),
            ));
        }
        let mut data = lock(&self.data);
        for (k, w) in txn.writes.iter() {
            match w {
                Write::Put(v) => data.insert(k.clone(), (v.clone(), None)),
                Write::PutUntil(v, e) => data.insert(k.clone(), (v.clone(), Some(e.at))),
                Write::Delete => data.remove(k),
                Write::Add(delta) => {
                    let now = super::add_counters(data.get(k).map(|(v, _)| v.as_slice()), delta);
                    data.insert(k.clone(), (now, None))
                }
            };
        }
        Ok(out)
    }
}

impl Backend for Memory {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(std::future::ready(self.run(work, false)))
    }

    fn read<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(std::future::ready(self.run(work, true)))
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        let mut data = lock(&self.data);
        let expired: Vec<String> = data
            .iter()
            .filter(|(_, (_, until))| until.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        for k in &expired {
            data.remove(k);
        }
        Box::pin(std::future::ready(Ok(expired.len())))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn dump(&self) -> BoxFuture<'_, Result<Dump, StoreError>> {
        let data = lock(&self.data);
        let all = data
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        Box::pin(std::future::ready(Ok(all)))
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<super::ScanPage, StoreError>> {
        use std::ops::Bound;
        let data = lock(&self.data);
        let from = match cursor {
            Some(c) => Bound::Excluded(c.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        let page: Dump = data
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let next = (page.len() == limit).then(|| page[limit - 1].0.clone());
        Box::pin(std::future::ready(Ok((page, next))))
    }
}
