//! The unified timeline: each customer's own entries, and, read together,
//! those of every customer merged into it.

use crate::conversation::Entry;
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::identity::*;
use crate::store::{Backend, Txn, get};

impl Ctx<'_> {
    /// Appends an entry to a customer's own timeline.
    pub(crate) async fn append(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        mut entry: Entry,
    ) -> Result<(Entry, String), DbError> {
        entry.id = self.random_id("e");
        let seq_key = self.k().timeline_seq(customer);
        let n: u64 = match get(txn, &seq_key).await? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        let key = self.k().timeline_entry(customer, n);
        txn.put(&key, self.seal(&key, &entry)?);
        txn.put(&seq_key, (n + 1).to_string().into_bytes());
        Ok((entry, key))
    }

    /// `c`'s unified timeline (its entries and, transitively, those of
    /// every customer merged into it), oldest first.
    pub(crate) async fn timeline_of(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
    ) -> Result<Vec<Entry>, DbError> {
        self.timeline_tail(txn, c, usize::MAX).await
    }

    /// The last `limit` entries of `c`'s unified timeline, oldest first,
    /// reading no more than `limit` entries per customer merged into it.
    pub(crate) async fn timeline_tail(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
        limit: usize,
    ) -> Result<Vec<Entry>, DbError> {
        let mut owners = vec![c.id.clone()];
        let mut pending = c.absorbed.clone();
        while let Some(id) = pending.pop() {
            pending.extend(self.load_customer(txn, &id).await?.absorbed);
            owners.push(id);
        }
        // Each owner's counter, and where retention left off (`N:AT`).
        let mut counter_keys: Vec<String> =
            owners.iter().map(|o| self.k().timeline_seq(o)).collect();
        counter_keys.extend(owners.iter().map(|o| self.k().timeline_first(o)));
        let mut counts = txn.get_many(&counter_keys).await?;
        let firsts = counts.split_off(owners.len());
        let mut keys = Vec::new();
        for ((owner, count), first) in owners.iter().zip(counts).zip(firsts) {
            let n: u64 = count
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                .unwrap_or(0);
            let first: u64 = first
                .and_then(|b| {
                    std::str::from_utf8(&b)
                        .ok()?
                        .split(':')
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            let from = n.saturating_sub(limit as u64).max(first);
            keys.extend((from..n).map(|k| self.k().timeline_entry(owner, k)));
        }
        let values = txn.get_many(&keys).await?;
        let mut entries = Vec::new();
        for (k, v) in keys.iter().zip(values) {
            if let Some(v) = v {
                entries.push(self.open::<Entry>(k, &v)?);
            }
        }
        // Stable: entries at the same second keep their stored order.
        entries.sort_by_key(|e| e.at);
        let excess = entries.len().saturating_sub(limit);
        entries.drain(..excess);
        Ok(entries)
    }
}

impl<B: Backend> Db<B> {
    /// A customer's unified timeline — its own entries and those of every
    /// customer merged into it — oldest first.
    pub async fn timeline(&self, customer_id: &str) -> Result<Vec<Entry>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                ctx.timeline_of(txn, &c).await
            })
        })
        .await
    }

    /// The last `limit` entries of a customer's unified timeline, oldest
    /// first (what a live widget session reads to catch up).
    pub async fn timeline_tail(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                ctx.timeline_tail(txn, &c, limit).await
            })
        })
        .await
    }
}
