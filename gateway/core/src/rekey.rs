//! Re-sealing after a data-key rotation (`gateway rekey`): a walk over the
//! data store and the key vault, a page at a time, that seals again under
//! the current `data_key` every record still sealed under a retired one —
//! customers' wrapped keys first among them. It is idempotent (a record
//! already under the current key is left alone), so a walk that stops is
//! resumed by starting again; each page is one unit, so a record changed
//! meanwhile is read again. Records sealed under a customer's own key do
//! not change: their key does not rotate, only its wrapping does. Once a
//! walk finds nothing left under a retired key, that key can be removed
//! from the configuration.

use crate::db::{Db, DbError};
use crate::seal::{Sealer, sealer};
use crate::store::{Backend, Expiry, StoreError, Work};

/// What a walk (or one page of it) did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RekeyProgress {
    /// Records looked at.
    pub scanned: u64,
    /// Records sealed again under the current key.
    pub resealed: u64,
    /// Records under a retired key that did not open (corrupt, or sealed
    /// under a key this configuration lacks): left as they are.
    pub unreadable: u64,
}

impl RekeyProgress {
    fn add(&mut self, other: RekeyProgress) {
        self.scanned += other.scanned;
        self.resealed += other.resealed;
        self.unreadable += other.unreadable;
    }
}

/// Which store a walk is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The data store.
    Data,
    /// The key vault (the data store when it has none of its own).
    Vault,
}

impl<B: Backend> Db<B> {
    /// One page of the walk over `part`, from `cursor`: what it did and the
    /// next cursor (`None` at the end).
    pub async fn rekey_page(
        &self,
        part: Part,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(RekeyProgress, Option<String>), DbError> {
        let backend = match part {
            Part::Data => self.backend(),
            Part::Vault => self.vault(),
        };
        let current = self.keyring().current_id();
        let (page, next) = backend.scan(self.prefix(), cursor, limit).await?;
        let stale: Vec<String> = page
            .iter()
            .filter(|(_, v)| matches!(sealer(v), Some(Sealer::DataKey(id)) if id != current))
            .map(|(k, _)| k.clone())
            .collect();
        let mut progress = RekeyProgress {
            scanned: page.len() as u64,
            ..RekeyProgress::default()
        };
        if stale.is_empty() {
            return Ok((progress, next));
        }
        let (keys, rng, stale) = (self.keyring(), &*self.rng, &stale);
        let now = self.now_secs();
        let early = format!("{}early:", self.prefix());
        let token = format!("{}token:", self.prefix());
        let (early, token) = (&early, &token);
        let work: &Work<'_, (u64, u64)> = &move |txn, _| {
            Box::pin(async move {
                let values = txn.get_many(stale).await?;
                let (mut resealed, mut unreadable) = (0, 0);
                for (key, value) in stale.iter().zip(values) {
                    let Some(v) = value else { continue };
                    if !matches!(sealer(&v), Some(Sealer::DataKey(id)) if id != current) {
                        continue;
                    }
                    let Ok(plain) = keys.open(&v, key.as_bytes()) else {
                        unreadable += 1;
                        continue;
                    };
                    let sealed = keys
                        .seal(rng, &plain, key.as_bytes())
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    // Kept no longer than it would have been.
                    let stored_at = |field: &str| {
                        serde_json::from_slice::<serde_json::Value>(&plain)
                            .ok()
                            .and_then(|t| t[field].as_u64())
                    };
                    let expiry = if key.starts_with(early.as_str()) {
                        // A day from the status, as when it was written.
                        let at = stored_at("at").unwrap_or(now);
                        Some(Expiry::until(at.saturating_add(24 * 3600), now))
                    } else if key.starts_with(token.as_str()) {
                        stored_at("expires_at").map(|at| Expiry::until(at, now))
                    } else {
                        None
                    };
                    match expiry {
                        Some(e) => txn.put_expiring(key, sealed, e),
                        None => txn.put(key, sealed),
                    }
                    resealed += 1;
                }
                Ok((resealed, unreadable))
            })
        };
        let (resealed, unreadable) = backend.transact(work).await?;
        progress.resealed = resealed;
        progress.unreadable = unreadable;
        Ok((progress, next))
    }

    /// The whole walk: the key vault (when it is a store of its own), then
    /// the data store, `limit` records a page, calling `on_page` with the
    /// running totals after each page.
    pub async fn rekey(
        &self,
        limit: usize,
        mut on_page: impl FnMut(Part, RekeyProgress),
    ) -> Result<RekeyProgress, DbError> {
        let mut total = RekeyProgress::default();
        let parts: &[Part] = match self.has_separate_vault() {
            true => &[Part::Vault, Part::Data],
            false => &[Part::Data],
        };
        for part in parts {
            let mut cursor: Option<String> = None;
            loop {
                let (p, next) = self.rekey_page(*part, cursor.as_deref(), limit).await?;
                total.add(p);
                on_page(*part, total);
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        Ok(total)
    }

    /// How many records, in the data store and the key vault, are sealed
    /// under data key `id` (after a complete rekey: none, and the key can
    /// be removed from the configuration).
    pub async fn count_sealed_with(&self, id: u8) -> Result<u64, DbError> {
        let mut n = 0;
        let parts: Vec<&B> = match self.has_separate_vault() {
            true => vec![self.vault(), self.backend()],
            false => vec![self.backend()],
        };
        for backend in parts {
            let mut cursor: Option<String> = None;
            loop {
                let (page, next) = backend.scan(self.prefix(), cursor.as_deref(), 1000).await?;
                n += page
                    .iter()
                    .filter(|(_, v)| sealer(v) == Some(Sealer::DataKey(id)))
                    .count() as u64;
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ManualClock;
    use crate::db::testing::{T0, message, run, sender};
    use crate::identity::Rules;
    use crate::seal::Keyring;
    use crate::store::memory::Memory;

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    const IX: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

    fn db_with(store: &Memory, keys: Keyring) -> Db<Memory> {
        Db::new(
            store.clone(),
            Arc::new(ManualClock::at_ms(T0 * 1000)),
            Arc::new(keys),
            "t:",
            Rules::default(),
            Arc::new(ring::rand::SystemRandom::new()),
        )
    }

    #[test]
    fn after_a_rekey_nothing_uses_the_old_key_and_the_new_one_alone_reads_everything() {
        let store = Memory::new();
        let v1 = db_with(&store, Keyring::new(Some(K1), Some(IX)).unwrap());
        let s = sender("whatsapp", "15551234567", vec![], T0);
        run(v1.record_inbound(&message(&s, "wamid.1", "hello"))).unwrap();
        run(v1.keep_malformed(&crate::quarantine::Malformed {
            request_id: "r1".into(),
            channel: "whatsapp".into(),
            at: T0,
            error: "bad".into(),
            body: b"{}".to_vec(),
            truncated: false,
        }))
        .unwrap();
        assert!(run(v1.count_sealed_with(1)).unwrap() >= 3);

        // Key 2 added, key 1 retired: everything still reads.
        let both = Keyring::new(Some(K1), Some(IX))
            .unwrap()
            .rotate(2, K2)
            .unwrap();
        let v2 = db_with(&store, both);
        let id = run(v2.find_identity("whatsapp", "15551234567"))
            .unwrap()
            .unwrap();
        assert_eq!(run(v2.timeline(&id)).unwrap().len(), 1);
        let mut pages = 0;
        let done = run(v2.rekey(2, |_, _| pages += 1)).unwrap();
        assert!(pages > 1, "{pages} pages");
        assert!(done.resealed >= 3, "{done:?}");
        assert_eq!(done.unreadable, 0);
        assert_eq!(run(v2.count_sealed_with(1)).unwrap(), 0);
        // Again: nothing left to do.
        assert_eq!(run(v2.rekey(100, |_, _| {})).unwrap().resealed, 0);

        // Key 2 alone (a keyring without key 1) reads everything.
        let only2 = Keyring::new(Some(K2), Some(IX))
            .unwrap()
            .rotate(2, K2)
            .unwrap();
        let v3 = db_with(&store, only2);
        let id3 = run(v3.find_identity("whatsapp", "15551234567"))
            .unwrap()
            .unwrap();
        assert_eq!(id3, id);
        assert_eq!(
            run(v3.timeline(&id)).unwrap()[0].text.as_deref(),
            Some("hello")
        );
        assert_eq!(run(v3.malformed_page(None, 10)).unwrap().items.len(), 1);
    }
}
