//! Malformed payloads: verified requests a plugin refused, kept sealed for
//! inspection. Each payload is its own key; a small index lists them, so
//! keeping one writes one payload and the index, never the others. The
//! newest [`MALFORMED_KEPT`] are kept, within [`MALFORMED_BUDGET_BYTES`] of
//! bodies; the oldest go first.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::store::Backend;

/// How many malformed requests are kept for inspection, at most.
pub const MALFORMED_KEPT: usize = 100;

/// Bytes of kept bodies, all together, at most; a body larger than this on
/// its own is kept cut to it (and says so).
pub const MALFORMED_BUDGET_BYTES: usize = 16 << 20;

/// A verified request its plugin refused as malformed, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformed {
    /// The host's request id.
    pub request_id: String,
    /// The channel.
    pub channel: String,
    /// Unix seconds.
    pub at: u64,
    /// The plugin's error.
    pub error: String,
    /// The raw body, as received (cut to [`MALFORMED_BUDGET_BYTES`] when
    /// `truncated`).
    pub body: Vec<u8>,
    /// Whether `body` was cut.
    #[serde(default)]
    pub truncated: bool,
}

/// One kept payload, as the index lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeptRef {
    pub(crate) seq: u64,
    pub(crate) bytes: usize,
}

/// `P malformed`: what is kept, oldest first, and the next sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeptIndex {
    pub(crate) next: u64,
    pub(crate) kept: Vec<KeptRef>,
}

/// One page of kept payloads, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedPage {
    /// The payloads, each with its sequence number (the page cursor).
    pub items: Vec<(u64, Malformed)>,
    /// The cursor of the next (older) page, if there is one.
    pub next: Option<u64>,
}

impl<B: Backend> Db<B> {
    /// Keeps a verified request its plugin could not parse, for an operator
    /// to inspect (sealed like everything else), evicting the oldest beyond
    /// [`MALFORMED_KEPT`] or [`MALFORMED_BUDGET_BYTES`].
    pub async fn keep_malformed(&self, item: &Malformed) -> Result<(), DbError> {
        let mut item = item.clone();
        if item.body.len() > MALFORMED_BUDGET_BYTES {
            item.body.truncate(MALFORMED_BUDGET_BYTES);
            item.truncated = true;
        }
        let item = &item;
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let index_key = ctx.k().malformed();
                let mut index: KeptIndex = ctx.open_or_default(txn, &index_key).await?;
                let seq = index.next;
                index.next += 1;
                let key = ctx.k().malformed_item(seq);
                txn.put(&key, ctx.seal(&key, item)?);
                index.kept.push(KeptRef {
                    seq,
                    bytes: item.body.len(),
                });
                let mut total: usize = index.kept.iter().map(|r| r.bytes).sum();
                while index.kept.len() > MALFORMED_KEPT || total > MALFORMED_BUDGET_BYTES {
                    let oldest = index.kept.remove(0);
                    total -= oldest.bytes;
                    txn.delete(&ctx.k().malformed_item(oldest.seq));
                }
                txn.put(&index_key, ctx.seal(&index_key, &index)?);
                Ok(())
            })
        })
        .await
    }

    /// Up to `limit` kept payloads, newest first, older than the cursor
    /// `before` when given (a page's `next`).
    pub async fn malformed_page(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<MalformedPage, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let index: KeptIndex = ctx.open_or_default(txn, &ctx.k().malformed()).await?;
                let older: Vec<u64> = index
                    .kept
                    .iter()
                    .rev()
                    .map(|r| r.seq)
                    .filter(|s| before.is_none_or(|b| *s < b))
                    .collect();
                let seqs: Vec<u64> = older.iter().take(limit).copied().collect();
                let keys: Vec<String> = seqs.iter().map(|s| ctx.k().malformed_item(*s)).collect();
                let mut items = Vec::new();
                for ((seq, key), value) in seqs.iter().zip(&keys).zip(txn.get_many(&keys).await?) {
                    if let Some(bytes) = value {
                        items.push((*seq, ctx.open::<Malformed>(key, &bytes)?));
                    }
                }
                let next = (older.len() > limit).then(|| older[limit - 1]);
                Ok(MalformedPage { items, next })
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::{db, run};
    use crate::identity::Rules;
    use crate::store::get;

    fn item(n: usize, bytes: usize) -> Malformed {
        Malformed {
            request_id: format!("req-{n}"),
            channel: "whatsapp".into(),
            at: n as u64,
            error: "body: not JSON".into(),
            body: vec![b'x'; bytes],
            truncated: false,
        }
    }

    #[test]
    fn the_keeper_writes_each_payload_once_and_evicts_the_oldest_by_count_and_bytes() {
        let (db, _) = db(Rules::default());
        for n in 0..MALFORMED_KEPT + 5 {
            run(db.keep_malformed(&item(n, 10))).unwrap();
        }
        let all = run(db.malformed_page(None, 1000)).unwrap();
        assert_eq!(all.items.len(), MALFORMED_KEPT);
        assert_eq!(
            all.items[0].1.request_id,
            format!("req-{}", MALFORMED_KEPT + 4)
        );
        assert_eq!(all.items.last().unwrap().1.request_id, "req-5");
        assert_eq!(all.next, None);
        // Evicted payloads are gone from the store, not only from the index.
        let stored = |seq: u64| {
            run(db.read_unit(move |ctx, txn| {
                Box::pin(async move { Ok(get(txn, &ctx.k().malformed_item(seq)).await?) })
            }))
            .unwrap()
            .is_some()
        };
        assert!(!stored(4) && stored(5));

        // Bodies of 5 MiB: the budget keeps three.
        for n in 200..205 {
            run(db.keep_malformed(&item(n, 5 << 20))).unwrap();
        }
        let big = run(db.malformed_page(None, 1000)).unwrap();
        let ids: Vec<&str> = big
            .items
            .iter()
            .map(|(_, m)| m.request_id.as_str())
            .collect();
        assert_eq!(ids, ["req-204", "req-203", "req-202"]);

        // One body over the whole budget is kept cut, and says so.
        run(db.keep_malformed(&item(300, MALFORMED_BUDGET_BYTES + 1))).unwrap();
        let one = run(db.malformed_page(None, 1000)).unwrap();
        assert_eq!(one.items.len(), 1);
        assert!(one.items[0].1.truncated);
        assert_eq!(one.items[0].1.body.len(), MALFORMED_BUDGET_BYTES);
    }

    #[test]
    fn pages_go_from_newest_to_oldest_without_gaps_or_repeats() {
        let (db, _) = db(Rules::default());
        for n in 0..7 {
            run(db.keep_malformed(&item(n, 1))).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = run(db.malformed_page(cursor, 3)).unwrap();
            seen.extend(page.items.iter().map(|(_, m)| m.at));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, [6, 5, 4, 3, 2, 1, 0]);
    }
}
