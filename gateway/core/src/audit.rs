//! The audit log: who read or changed what, when, and how it ended — an
//! append-only, hash-chained list in the same store as the data, holding
//! ids and names of actions, never personal data.
//!
//! Entry N commits to entry N−1: its `hash` is SHA-256 over its own JSON
//! (without `hash`), which includes `prev`, the hash of entry N−1. Editing,
//! removing or reordering an entry breaks the chain at that entry, and
//! [`Db::verify_audit`] names it. (Cutting the newest entries off the end
//! and rewinding the counter leaves a shorter chain that verifies: anchor
//! the head hash it reports somewhere else to catch that too.)

use serde::{Deserialize, Serialize};

use crate::db::{Ctx, Db, DbError};
use crate::store::{Backend, Txn, get};

/// What is about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    /// Who: the admin token's name (`-` when there was no valid token).
    pub actor: String,
    /// What: `customer.read`, `customer.update`, `merge`, … (docs/security.md).
    pub action: String,
    /// The route pattern (`GET /admin/v1/customers/{id}`).
    pub route: String,
    /// The customer concerned, when there is one.
    pub customer_id: Option<String>,
    /// `ok`, `refused`, `unauthenticated`, or `error:<code>`.
    pub outcome: String,
}

/// One entry, as stored and as `GET /admin/v1/audit` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its place in the chain, from 0.
    pub seq: u64,
    /// Unix seconds, by the injected clock.
    pub at: u64,
    /// See [`AuditDraft`].
    pub actor: String,
    /// See [`AuditDraft`].
    pub action: String,
    /// See [`AuditDraft`].
    pub route: String,
    /// See [`AuditDraft`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// See [`AuditDraft`].
    pub outcome: String,
    /// The previous entry's hash (hex; 64 zeros for the first).
    pub prev: String,
    /// SHA-256 (hex) of this entry's JSON without `hash`.
    #[serde(default)]
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must carry.
    pub fn expected_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let json = serde_json::to_vec(&unhashed).expect("an entry serializes");
        crate::verify::hex_encode(ring::digest::digest(&ring::digest::SHA256, &json).as_ref())
    }
}

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which entries a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this customer's.
    pub customer_id: Option<String>,
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// At or after (Unix seconds).
    pub from: Option<u64>,
    /// At or before (Unix seconds).
    pub to: Option<u64>,
}

impl AuditFilter {
    fn keeps(&self, e: &AuditEntry) -> bool {
        self.customer_id
            .as_ref()
            .is_none_or(|c| e.customer_id.as_ref() == Some(c))
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self.action.as_ref().is_none_or(|a| &e.action == a)
            && self.from.is_none_or(|f| e.at >= f)
            && self.to.is_none_or(|t| e.at <= t)
    }
}

/// What [`Db::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every entry is where it was written, as it was written.
    Intact {
        /// How many entries.
        entries: u64,
        /// The newest entry's hash (anchor it elsewhere to catch a cut tail).
        head: String,
    },
    /// The first entry that is not as written, and how.
    Broken {
        /// Its place.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// How many entries one store read fetches while paging or verifying.
const BATCH: u64 = 256;

fn parse_seq(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Ctx<'_> {
    /// Appends `draft` at the clock's now, chained to the newest entry, in
    /// the caller's unit.
    pub(crate) async fn append_audit(
        &self,
        txn: &mut dyn Txn,
        draft: &AuditDraft,
    ) -> Result<AuditEntry, DbError> {
        let seq_key = self.k().audit_seq();
        let seq = parse_seq(get(txn, &seq_key).await?);
        let prev = match seq.checked_sub(1) {
            None => GENESIS.to_string(),
            Some(p) => {
                let key = self.k().audit_entry(p);
                let bytes = get(txn, &key)
                    .await?
                    .ok_or_else(|| DbError::Invalid(format!("audit entry {p} is missing")))?;
                serde_json::from_slice::<AuditEntry>(&bytes)
                    .map_err(|_| DbError::Invalid(format!("audit entry {p} does not decode")))?
                    .hash
            }
        };
        let mut entry = AuditEntry {
            seq,
            at: self.clock.now_secs(),
            actor: draft.actor.clone(),
            action: draft.action.clone(),
            route: draft.route.clone(),
            customer_id: draft.customer_id.clone(),
            outcome: draft.outcome.clone(),
            prev,
            hash: String::new(),
        };
        entry.hash = entry.expected_hash();
        txn.put(
            &self.k().audit_entry(seq),
            serde_json::to_vec(&entry).expect("an entry serializes"),
        );
        txn.put(&seq_key, (seq + 1).to_string().into_bytes());
        Ok(entry)
    }
}

impl<B: Backend> Db<B> {
    /// Appends one entry in a unit of its own (a read, a refusal, or a
    /// change whose unit has already committed).
    pub async fn audit(&self, draft: &AuditDraft) -> Result<AuditEntry, DbError> {
        let mut entries = self.audit_all(std::slice::from_ref(draft)).await?;
        Ok(entries.remove(0))
    }

    /// Appends several entries, in order, in one unit (a host batching the
    /// entries of concurrent requests: one chain update instead of many
    /// contending ones).
    pub async fn audit_all(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditEntry>, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(drafts.len());
                for d in drafts {
                    out.push(ctx.append_audit(txn, d).await?);
                }
                Ok(out)
            })
        })
        .await
    }

    /// Up to `limit` entries kept by `filter`, oldest first, after the
    /// entry `after` (a page's `next`); and the next page's cursor.
    pub async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
        filter: &AuditFilter,
    ) -> Result<(Vec<AuditEntry>, Option<u64>), DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let total = parse_seq(get(txn, &ctx.k().audit_seq()).await?);
                let mut next = after.map_or(0, |a| a + 1);
                let mut out = Vec::new();
                while next < total && out.len() < limit {
                    let end = (next + BATCH).min(total);
                    let keys: Vec<String> = (next..end).map(|n| ctx.k().audit_entry(n)).collect();
                    for (n, v) in (next..end).zip(txn.get_many(&keys).await?) {
                        next = n + 1;
                        let Some(bytes) = v else { continue };
                        let Ok(e) = serde_json::from_slice::<AuditEntry>(&bytes) else {
                            continue;
                        };
                        if filter.keeps(&e) {
                            out.push(e);
                            if out.len() == limit {
                                break;
                            }
                        }
                    }
                }
                let cursor = (next < total).then(|| next - 1);
                Ok((out, cursor))
            })
        })
        .await
    }

    /// Walks the whole chain and names the first entry that was edited,
    /// removed or moved.
    pub async fn verify_audit(&self) -> Result<AuditVerdict, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let total = parse_seq(get(txn, &ctx.k().audit_seq()).await?);
                let mut prev = GENESIS.to_string();
                let mut start = 0;
                while start < total {
                    let end = (start + BATCH).min(total);
                    let keys: Vec<String> = (start..end).map(|n| ctx.k().audit_entry(n)).collect();
                    for (n, v) in (start..end).zip(txn.get_many(&keys).await?) {
                        let broken = |reason: String| Ok(AuditVerdict::Broken { seq: n, reason });
                        let Some(bytes) = v else {
                            return broken("removed: the entry is missing".into());
                        };
                        let Ok(e) = serde_json::from_slice::<AuditEntry>(&bytes) else {
                            return broken("edited: the entry does not decode".into());
                        };
                        if e.seq != n {
                            return broken(format!(
                                "moved: this place holds entry {} (reordered or swapped)",
                                e.seq
                            ));
                        }
                        if e.hash != e.expected_hash() {
                            return broken("edited: its content does not match its hash".into());
                        }
                        if e.prev != prev {
                            return broken(
                                "out of chain: it does not follow the entry before it".into(),
                            );
                        }
                        prev = e.hash;
                    }
                    start = end;
                }
                Ok(AuditVerdict::Intact {
                    entries: total,
                    head: prev,
                })
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::AuditHook as _;
    use crate::db::testing::{db, run};
    use crate::identity::Rules;

    fn draft(n: u32) -> AuditDraft {
        AuditDraft {
            actor: "ops".into(),
            action: if n.is_multiple_of(2) {
                "customer.read"
            } else {
                "merge"
            }
            .into(),
            route: "GET /admin/v1/customers/{id}".into(),
            customer_id: Some(format!("c_{n}")),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn the_chain_verifies_pages_and_filters() {
        let (db, _) = db(Rules::default());
        for n in 0..600 {
            run(db.audit(&draft(n))).unwrap();
        }
        let AuditVerdict::Intact { entries, .. } = run(db.verify_audit()).unwrap() else {
            panic!("intact")
        };
        assert_eq!(entries, 600);
        let merges = AuditFilter {
            action: Some("merge".into()),
            ..Default::default()
        };
        let (page, next) = run(db.audit_page(None, 100, &merges)).unwrap();
        assert_eq!(page.len(), 100);
        assert!(page.iter().all(|e| e.action == "merge"));
        let (rest, end) = run(db.audit_page(next, 1000, &merges)).unwrap();
        assert_eq!(rest.len(), 200);
        assert_eq!(end, None);
        assert!(rest[0].seq > page[99].seq);
        let one = AuditFilter {
            customer_id: Some("c_7".into()),
            ..Default::default()
        };
        assert_eq!(run(db.audit_page(None, 10, &one)).unwrap().0.len(), 1);
    }

    /// Rewrites entry `n`'s stored bytes with `edit`.
    fn tamper(db: &Db<crate::store::memory::Memory>, n: u64, value: Option<Vec<u8>>) {
        run(db.unit(move |ctx, txn| {
            let value = value.clone();
            Box::pin(async move {
                let key = ctx.k().audit_entry(n);
                match value {
                    Some(v) => txn.put(&key, v),
                    None => txn.delete(&key),
                }
                Ok(())
            })
        }))
        .unwrap();
    }

    fn stored(db: &Db<crate::store::memory::Memory>, n: u64) -> Vec<u8> {
        run(db.read_unit(move |ctx, txn| {
            Box::pin(async move { Ok(get(txn, &ctx.k().audit_entry(n)).await?.unwrap()) })
        }))
        .unwrap()
    }

    #[test]
    fn an_edited_removed_or_swapped_entry_is_named() {
        let (db, _) = db(Rules::default());
        for n in 0..5 {
            run(db.audit(&draft(n))).unwrap();
        }
        // Edited: another actor written in.
        let original = stored(&db, 2);
        let mut e: AuditEntry = serde_json::from_slice(&original).unwrap();
        e.actor = "someone-else".into();
        tamper(&db, 2, Some(serde_json::to_vec(&e).unwrap()));
        assert_eq!(
            run(db.verify_audit()).unwrap(),
            AuditVerdict::Broken {
                seq: 2,
                reason: "edited: its content does not match its hash".into()
            }
        );
        // Edited, hash recomputed: the next entry no longer follows it.
        e.hash = e.expected_hash();
        tamper(&db, 2, Some(serde_json::to_vec(&e).unwrap()));
        let AuditVerdict::Broken { seq: 3, .. } = run(db.verify_audit()).unwrap() else {
            panic!("entry 3 no longer follows")
        };
        tamper(&db, 2, Some(original));
        assert!(matches!(
            run(db.verify_audit()).unwrap(),
            AuditVerdict::Intact { .. }
        ));
        // Swapped.
        let (one, three) = (stored(&db, 1), stored(&db, 3));
        tamper(&db, 1, Some(three.clone()));
        tamper(&db, 3, Some(one.clone()));
        let AuditVerdict::Broken { seq: 1, reason } = run(db.verify_audit()).unwrap() else {
            panic!("entry 1 moved")
        };
        assert!(reason.starts_with("moved"), "{reason}");
        tamper(&db, 1, Some(one));
        tamper(&db, 3, Some(three));
        // Removed.
        tamper(&db, 4, None);
        assert_eq!(
            run(db.verify_audit()).unwrap(),
            AuditVerdict::Broken {
                seq: 4,
                reason: "removed: the entry is missing".into()
            }
        );
    }

    /// A host's hook holding one pending draft.
    #[derive(Debug, Default)]
    struct OneDraft(std::sync::Mutex<Option<AuditDraft>>);

    impl crate::db::AuditHook for OneDraft {
        fn pending(&self) -> Option<AuditDraft> {
            self.0.lock().unwrap().clone()
        }
        fn committed(&self) {
            self.0.lock().unwrap().take();
        }
    }

    #[test]
    fn a_change_carries_its_entry_in_its_own_unit_once() {
        let (db, _) = db(Rules::default());
        let hook = std::sync::Arc::new(OneDraft::default());
        let db = db.with_audit_hook(hook.clone());
        *hook.0.lock().unwrap() = Some(draft(1));
        // A unit that fails carries nothing; the draft waits.
        let failed: Result<(), DbError> = run(db.unit(|ctx, txn| {
            Box::pin(async move {
                txn.put(&ctx.k().audit_seq(), b"999".to_vec());
                Err(DbError::Invalid("no".into()))
            })
        }));
        assert!(failed.is_err());
        assert!(hook.pending().is_some());
        // Reads carry nothing either.
        run(db.audit_page(None, 10, &AuditFilter::default())).unwrap();
        assert!(hook.pending().is_some());
        // The first write unit that commits carries it, and only it.
        run(db.unit(|_, _| Box::pin(async { Ok(()) }))).unwrap();
        run(db.unit(|_, _| Box::pin(async { Ok(()) }))).unwrap();
        let (entries, _) = run(db.audit_page(None, 10, &AuditFilter::default())).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].action, "merge");
        assert!(hook.pending().is_none());
    }
}
