//! Erasure: forgetting a customer completely. One unit removes everything
//! the key table lists for the customer and every customer merged into it
//! (the same person): the profiles, every lookup key (blind-index entries)
//! that still points at them, the timelines with each message's dedup
//! entry and each reply's outbound record and channel id, the
//! conversation state with the link tokens and merge records it lists,
//! queued jobs (agent turns, deliveries, reminders), the hand-off, the
//! review-queue items that name them, and kept malformed payloads that
//! carry one of their identifiers. Then their own keys are destroyed
//! (crypto-shredding), so that copies the gateway cannot rewrite — an AOF
//! or RDB file, a backup — no longer open either.
//!
//! A message that arrives while the erasure runs is never lost: either it
//! is stored first and erased with the rest (the unit reads what it
//! erases, so a write in between makes it run again), or it arrives after
//! and, finding no lookup key, starts a new customer.

use std::collections::{BTreeMap, BTreeSet};

use crate::conversation::state::ConversationState;
use crate::conversation::{Direction, Entry};
use crate::db::{Ctx, Db, DbError};
use crate::delivery::{JobKind, Outbound, shard_of};
use crate::identity::Customer;
use crate::identity::conflicts::Conflict;
use crate::quarantine::{KeptIndex, Malformed};
use crate::seal::{SealError, Sealer, sealer};
use crate::store::{Backend, Txn, get};

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    /// The customer asked for.
    pub customer_id: String,
    /// Every customer erased with it: the one that stands for the person
    /// now, and those merged into it.
    pub customers: Vec<String>,
    /// How many records of each kind were removed.
    pub removed: BTreeMap<&'static str, u64>,
}

impl Erased {
    pub(crate) fn count(&mut self, kind: &'static str, n: u64) {
        *self.removed.entry(kind).or_default() += n;
    }
}

/// The kinds an erasure counts, in the receipt's `removed` (all present,
/// zero when there were none, so receipts compare).
pub const REMOVED_KINDS: &[&str] = &[
    "customers",
    "identities",
    "identifiers",
    "lookup_keys",
    "messages",
    "events",
    "outbound_messages",
    "channel_message_ids",
    "jobs",
    "link_tokens",
    "merges",
    "conflicts",
    "handoffs",
    "malformed_payloads",
    "customer_keys",
];

impl<B: Backend> Db<B> {
    /// Erases customer `id` and everyone merged with it (see the module
    /// doc), then destroys their keys. [`DbError::NotFound`] when there is
    /// no such customer (or it was erased already).
    pub async fn erase(&self, id: &str) -> Result<Erased, DbError> {
        self.erase_checked(id, None).await
    }

    /// [`Db::erase`] of a customer retention archived at `archived_at`,
    /// only if it still is ([`DbError::Invalid`] otherwise: restored or
    /// active again meanwhile).
    pub async fn erase_archived(&self, id: &str, archived_at: u64) -> Result<Erased, DbError> {
        self.erase_checked(id, Some(archived_at)).await
    }

    async fn erase_checked(&self, id: &str, archived_at: Option<u64>) -> Result<Erased, DbError> {
        // An earlier erasure stopped before its keys were destroyed.
        self.finish_pending_shredding().await?;
        let mut erased = self
            .unit(move |ctx, txn| {
                Box::pin(async move {
                    if let Some(at) = archived_at
                        && ctx.load_customer(txn, id).await?.archived_at != Some(at)
                    {
                        return Err(DbError::Invalid(format!(
                            "customer {id} is no longer archived"
                        )));
                    }
                    ctx.erase_in(txn, id).await
                })
            })
            .await?;
        let keys = self.finish_shredding(&erased.customers).await?;
        erased.count("customer_keys", keys as u64);
        Ok(erased)
    }

    /// Destroys the keys of customers whose records are erased, then
    /// takes them off the list of pending shreds. Returns how many keys
    /// there were.
    async fn finish_shredding(&self, customers: &[String]) -> Result<usize, DbError> {
        let n = self.shred_keys(customers).await?;
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let key = ctx.k().shredding();
                let mut pending = pending_shreds(txn, &key).await?;
                pending.retain(|c| !customers.contains(c));
                put_pending(txn, &key, &pending);
                Ok(())
            })
        })
        .await?;
        Ok(n)
    }

    /// Finishes erasures whose records went but whose keys a crash kept
    /// (the retention sweeper calls it). Returns how many customers.
    pub async fn finish_pending_shredding(&self) -> Result<usize, DbError> {
        let pending = self
            .read_unit(move |ctx, txn| {
                Box::pin(async move { pending_shreds(txn, &ctx.k().shredding()).await })
            })
            .await?;
        if !pending.is_empty() {
            self.finish_shredding(&pending).await?;
        }
        Ok(pending.len())
    }
}

async fn pending_shreds(txn: &mut dyn Txn, key: &str) -> Result<Vec<String>, DbError> {
    match get(txn, key).await? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| {
            DbError::Store(crate::store::StoreError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })
        }),
        None => Ok(Vec::new()),
    }
}

fn put_pending(txn: &mut dyn Txn, key: &str, pending: &[String]) {
    if pending.is_empty() {
        txn.delete(key);
    } else {
        txn.put(key, serde_json::to_vec(pending).expect("ids serialize"));
    }
}

impl Ctx<'_> {
    /// The erasure's unit (see the module doc).
    async fn erase_in(&self, txn: &mut dyn Txn, id: &str) -> Result<Erased, DbError> {
        let live = self.live_customer(txn, id).await?;
        let members: Vec<Customer> = self.group_of(txn, &live).await?;
        let group: BTreeSet<String> = members.iter().map(|c| c.id.clone()).collect();
        let mut erased = Erased {
            customer_id: id.to_string(),
            customers: group.iter().cloned().collect(),
            removed: REMOVED_KINDS.iter().map(|k| (*k, 0)).collect(),
        };
        // Out of every report, then their summaries go with the rest.
        self.analytics_regroup(
            txn,
            &[(live.id.clone(), group.iter().cloned().collect())],
            &[],
        )
        .await?;
        for c in &members {
            txn.delete(&self.k().analytics(&c.id));
        }
        let mut outbound_ids = BTreeSet::new();
        for c in &members {
            self.erase_lookups(txn, c, &group, &mut erased).await?;
            self.erase_timeline(txn, &c.id, &mut outbound_ids, &mut erased)
                .await?;
            let state: ConversationState = self.load_state(txn, &c.id).await?;
            outbound_ids.extend(state.outbox.iter().cloned());
            for owned in &state.owned {
                if get(txn, &owned.key).await?.is_some() {
                    let kind = if owned.key.contains("token:") {
                        "link_tokens"
                    } else {
                        "merges"
                    };
                    erased.count(kind, 1);
                }
                txn.delete(&owned.key);
            }
            if state.handoff.is_some() {
                erased.count("handoffs", 1);
            }
            txn.delete(&self.k().conversation(&c.id));
            txn.delete(&self.k().customer(&c.id));
            erased.count("customers", 1);
        }
        for oid in &outbound_ids {
            self.erase_outbound(txn, oid, &mut erased).await?;
        }
        self.erase_jobs(txn, &group, &outbound_ids, &mut erased)
            .await?;
        // The inbox index.
        let key = self.k().handoffs();
        let mut open: Vec<String> = self.open_or_default(txn, &key).await?;
        if open.iter().any(|c| group.contains(c)) {
            open.retain(|c| !group.contains(c));
            txn.put(&key, self.seal(&key, &open)?);
        }
        self.erase_conflicts(txn, &group, &mut erased).await?;
        self.erase_malformed(txn, &members, &mut erased).await?;
        // Their keys go once this unit has committed; until then (and if
        // a crash comes between) they are listed as pending.
        let key = self.k().shredding();
        let mut shreds = pending_shreds(txn, &key).await?;
        shreds.extend(group.iter().cloned());
        shreds.sort();
        shreds.dedup();
        put_pending(txn, &key, &shreds);
        Ok(erased)
    }

    /// Every lookup key of `c`'s identities and identifiers that points at
    /// someone in `group` (one another customer took over stays theirs).
    pub(crate) async fn erase_lookups(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
        group: &BTreeSet<String>,
        erased: &mut Erased,
    ) -> Result<(), DbError> {
        let keys: Vec<String> = self.lookup_keys(c).into_iter().map(|(k, _)| k).collect();
        erased.count("identities", c.identities.len() as u64);
        erased.count("identifiers", c.identifiers.len() as u64);
        let values = txn.get_many(&keys).await?;
        for (key, value) in keys.iter().zip(values) {
            let Some(v) = value else { continue };
            let owner = self.open_id(key, &v)?;
            if group.contains(&owner) {
                txn.delete(key);
                erased.count("lookup_keys", 1);
            }
        }
        Ok(())
    }

    /// `customer`'s own timeline, each message's dedup entry, and the ids
    /// of the outbound messages it lists.
    async fn erase_timeline(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        outbound_ids: &mut BTreeSet<String>,
        erased: &mut Erased,
    ) -> Result<(), DbError> {
        let seq_key = self.k().timeline_seq(customer);
        let n: u64 = get(txn, &seq_key)
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
            .unwrap_or(0);
        let keys: Vec<String> = (0..n)
            .map(|i| self.k().timeline_entry(customer, i))
            .collect();
        for chunk in keys.chunks(512) {
            let values = txn.get_many(chunk).await?;
            for (key, value) in chunk.iter().zip(values) {
                let Some(bytes) = value else { continue };
                txn.delete(key);
                let entry: Entry = self.open(key, &bytes)?;
                match entry.direction {
                    Direction::Event => erased.count("events", 1),
                    _ => erased.count("messages", 1),
                }
                match (&entry.direction, &entry.message_ref) {
                    (Direction::Inbound, Some(pid)) => {
                        let dk = self.k().dedup(&entry.channel, pid);
                        if get(txn, &dk).await?.is_some() {
                            txn.delete(&dk);
                            erased.count("channel_message_ids", 1);
                        }
                    }
                    (Direction::Outbound, Some(oid)) => {
                        outbound_ids.insert(oid.clone());
                    }
                    _ => {}
                }
            }
        }
        txn.delete(&seq_key);
        txn.delete(&self.k().timeline_first(customer));
        Ok(())
    }

    /// An outbound message's record and the key its channel id finds it by.
    pub(crate) async fn erase_outbound(
        &self,
        txn: &mut dyn Txn,
        id: &str,
        erased: &mut Erased,
    ) -> Result<(), DbError> {
        let key = self.k().outbound(id);
        let Some(bytes) = get(txn, &key).await? else {
            return Ok(());
        };
        let o: Outbound = self.open(&key, &bytes)?;
        if let (Some(pid), Some(route)) = (&o.provider_message_id, o.routes.get(o.route)) {
            let sk = self.k().provider_id(&route.identity.channel, pid);
            if get(txn, &sk).await?.is_some() {
                txn.delete(&sk);
                erased.count("channel_message_ids", 1);
            }
        }
        txn.delete(&key);
        erased.count("outbound_messages", 1);
        Ok(())
    }

    /// Queued jobs about the group: their agent turns and reminders (sealed
    /// under their keys, so the envelope says whose they are without
    /// opening it) and deliveries of their outbound messages.
    async fn erase_jobs(
        &self,
        txn: &mut dyn Txn,
        group: &BTreeSet<String>,
        outbound_ids: &BTreeSet<String>,
        erased: &mut Erased,
    ) -> Result<(), DbError> {
        let shards: BTreeSet<u32> = group.iter().map(|c| shard_of(c)).collect();
        for shard in shards {
            for job_id in self.job_ids(txn, shard).await? {
                let key = self.k().job(&job_id);
                let Some(bytes) = get(txn, &key).await? else {
                    continue;
                };
                let theirs = match sealer(&bytes) {
                    Some(Sealer::Customer(c)) => group.contains(c),
                    _ => match self.open::<crate::delivery::Job>(&key, &bytes) {
                        Ok(job) => match &job.kind {
                            JobKind::Deliver { outbound_id } => outbound_ids.contains(outbound_id),
                            JobKind::Agent { customer_id, .. }
                            | JobKind::Reminder { customer_id, .. } => group.contains(customer_id),
                        },
                        Err(_) => false,
                    },
                };
                if theirs {
                    self.remove_job(txn, shard, &job_id).await?;
                    erased.count("jobs", 1);
                }
            }
        }
        Ok(())
    }

    /// Review-queue items that name anyone in the group.
    async fn erase_conflicts(
        &self,
        txn: &mut dyn Txn,
        group: &BTreeSet<String>,
        erased: &mut Erased,
    ) -> Result<(), DbError> {
        let index_key = self.k().conflicts();
        let index: Vec<String> = self.open_or_default(txn, &index_key).await?;
        let keys: Vec<String> = index.iter().map(|id| self.k().conflict(id)).collect();
        let mut kept = Vec::with_capacity(index.len());
        for ((id, key), value) in index.iter().zip(&keys).zip(txn.get_many(&keys).await?) {
            let Some(bytes) = value else { continue };
            let c: Conflict = self.open(key, &bytes)?;
            let names = group.contains(&c.customer_id)
                || c.other_customer_id
                    .as_ref()
                    .is_some_and(|o| group.contains(o));
            if names {
                txn.delete(key);
                erased.count("conflicts", 1);
            } else {
                kept.push(id.clone());
            }
        }
        if kept.len() != index.len() {
            txn.put(&index_key, self.seal(&index_key, &kept)?);
        }
        Ok(())
    }

    /// Kept malformed payloads that carry one of the group's channel ids
    /// or identifier values (a payload that failed to parse names no
    /// customer, so its bytes are searched).
    async fn erase_malformed(
        &self,
        txn: &mut dyn Txn,
        members: &[Customer],
        erased: &mut Erased,
    ) -> Result<(), DbError> {
        let mut needles: BTreeSet<String> = BTreeSet::new();
        for c in members {
            needles.extend(c.identities.iter().map(|i| i.id.clone()));
            for i in &c.identifiers {
                needles.insert(i.identifier.value.clone());
                // A phone appears in channels' payloads without its `+`.
                if let Some(digits) = i.identifier.value.strip_prefix('+') {
                    needles.insert(digits.to_string());
                }
            }
        }
        // Too short to say whose a payload is.
        needles.retain(|n| n.len() >= 8);
        if needles.is_empty() {
            return Ok(());
        }
        let index_key = self.k().malformed();
        let mut index: KeptIndex = self.open_or_default(txn, &index_key).await?;
        let keys: Vec<String> = index
            .kept
            .iter()
            .map(|r| self.k().malformed_item(r.seq))
            .collect();
        let mut gone = BTreeSet::new();
        for ((r, key), value) in index.kept.iter().zip(&keys).zip(txn.get_many(&keys).await?) {
            let Some(bytes) = value else { continue };
            let item: Malformed = self.open(key, &bytes)?;
            let theirs = needles
                .iter()
                .any(|n| item.body.windows(n.len()).any(|w| w == n.as_bytes()));
            if theirs {
                txn.delete(key);
                gone.insert(r.seq);
                erased.count("malformed_payloads", 1);
            }
        }
        if !gone.is_empty() {
            index.kept.retain(|r| !gone.contains(&r.seq));
            txn.put(&index_key, self.seal(&index_key, &index)?);
        }
        Ok(())
    }
}

/// Whether `e` says a record was sealed under an erased customer's key.
pub fn is_shredded(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Seal {
            source: SealError::Shredded(_),
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ClaimKind;
    use crate::db::testing::{T0, claim, db, message, run, sender};
    use crate::identity::{How, Rules};
    use crate::inbound::Recorded;

    fn stored(r: Recorded) -> String {
        match r {
            Recorded::Stored { resolution, .. } => resolution.customer_id,
            other => panic!("not stored: {other:?}"),
        }
    }

    #[test]
    fn erasure_leaves_nothing_of_the_person_and_a_new_message_starts_afresh() {
        let (db, _clock) = db(Rules::default());
        let phone = claim(ClaimKind::Phone, "+15551234567", true);
        let wa = sender("whatsapp", "15551234567", vec![phone.clone()], T0);
        let tg = sender("telegram", "tg-77", vec![], T0 + 1);
        let a = stored(run(db.record_inbound(&message(&wa, "wamid.1", "hi"))).unwrap());
        let b = stored(run(db.record_inbound(&message(&tg, "tg.1", "hello"))).unwrap());
        // Someone else, who must be untouched.
        let other = sender("whatsapp", "15559999999", vec![], T0 + 2);
        let o = stored(run(db.record_inbound(&message(&other, "wamid.9", "yo"))).unwrap());
        run(db.merge(&a, &b, How::AdminMerge, T0 + 3)).unwrap();
        run(db.create_link_token(&a, "telegram", 600, T0 + 4)).unwrap();
        let before = run(db.backend().dump()).unwrap();

        let erased = run(db.erase(&b)).unwrap();
        assert_eq!(erased.customers.len(), 2, "{erased:?}");
        assert_eq!(erased.removed["customers"], 2);
        assert_eq!(erased.removed["messages"], 2);
        assert_eq!(erased.removed["link_tokens"], 1);
        assert_eq!(erased.removed["merges"], 1);
        assert_eq!(erased.removed["customer_keys"], 2);
        assert_eq!(erased.removed["channel_message_ids"], 2);

        let after = run(db.backend().dump()).unwrap();
        for (key, value) in &after {
            assert!(
                !key.contains(&a) && !key.contains(&b),
                "{key} is left of the erased customers"
            );
            let text = String::from_utf8_lossy(value);
            assert!(!text.contains(&a) && !text.contains(&b), "{key}: {text}");
        }
        // Every key the erased customers had is gone, blind ones included;
        // the other customer's keys all stay.
        let kept: BTreeSet<&String> = after.iter().map(|(k, _)| k).collect();
        let theirs_before = before
            .iter()
            .filter(|(k, v)| k.contains(&o) || String::from_utf8_lossy(v).contains(&o))
            .count();
        let theirs_after = after
            .iter()
            .filter(|(k, v)| k.contains(&o) || String::from_utf8_lossy(v).contains(&o))
            .count();
        assert_eq!(theirs_before, theirs_after);
        assert!(
            kept.len() < before.len(),
            "{} keys before, {} after",
            before.len(),
            kept.len()
        );
        assert_eq!(
            run(db.find_identity("whatsapp", "15551234567")).unwrap(),
            None
        );
        assert_eq!(run(db.find_identity("telegram", "tg-77")).unwrap(), None);
        assert!(matches!(run(db.erase(&a)), Err(DbError::NotFound(_))));

        // The same phone writes again: a new person, and the old
        // message id is not taken for a redelivery.
        let fresh = stored(run(db.record_inbound(&message(&wa, "wamid.1", "hi again"))).unwrap());
        assert_ne!(fresh, a);
        assert_ne!(fresh, b);
    }
}
