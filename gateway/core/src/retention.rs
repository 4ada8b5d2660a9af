//! Retention (`[privacy]`): conversation history older than
//! `history_days` is removed (each message with its dedup entry, each
//! reply with its outbound record); a customer inactive for
//! `archive_after_days` is archived — kept, sealed, but out of every
//! lookup, so that a message from them starts a new customer — until an
//! admin restores them; one archived for `delete_archived_after_days` is
//! erased. A walk over the customers a page at a time, one unit per
//! customer, judged by the injected clock; 0 turns a rule off.

use std::collections::BTreeSet;

use crate::conversation::{Direction, Entry};
use crate::db::{Ctx, Db, DbError};
use crate::erasure::Erased;
use crate::identity::Customer;
use crate::store::{Backend, Txn, get};

const DAY: u64 = 24 * 3600;

/// Timeline entries one unit removes at most (the walk comes back for the
/// rest): a unit stays small beside a customer's live traffic.
const TRIM_PER_UNIT: u64 = 256;

/// The retention rules, in days (0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Timeline entries older than this go.
    pub history_days: u64,
    /// Customers inactive this long are archived.
    pub archive_after_days: u64,
    /// Customers archived this long are erased.
    pub delete_archived_after_days: u64,
}

/// What a walk (or a page of it) removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionStats {
    /// Customers looked at.
    pub customers: u64,
    /// Timeline entries removed for age.
    pub entries_removed: u64,
    /// Customers archived.
    pub archived: u64,
    /// Archived customers erased.
    pub erased: u64,
    /// Customers the walk could not judge this time (a record that does
    /// not open, a customer too busy to lock): left for the next walk.
    pub failed: u64,
}

impl RetentionStats {
    /// Adds `other` to these.
    pub fn add(&mut self, other: RetentionStats) {
        self.customers += other.customers;
        self.entries_removed += other.entries_removed;
        self.archived += other.archived;
        self.erased += other.erased;
        self.failed += other.failed;
    }
}

/// What the unit for one customer decided.
enum Decision {
    Kept { removed: u64, archived: bool },
    Erase { archived_at: u64 },
}

impl<B: Backend> Db<B> {
    /// One page of the walk: up to `limit` customers from `cursor`, each in
    /// its own unit. Returns what it removed and the next cursor (`None`
    /// at the end of the walk).
    pub async fn retention_page(
        &self,
        rules: &Retention,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(RetentionStats, Option<String>), DbError> {
        let prefix = crate::store::Keys::new(self.prefix(), self.keyring()).customer_prefix();
        let (page, next) = self.backend().scan(&prefix, cursor, limit).await?;
        let mut stats = RetentionStats::default();
        for (key, _) in &page {
            let Some(id) = key
                .strip_prefix(prefix.as_str())
                .and_then(|k| k.strip_suffix('}'))
            else {
                continue;
            };
            stats.customers += 1;
            // Trimming a long history takes several units.
            let decision = loop {
                let d = self
                    .unit(move |ctx, txn| Box::pin(ctx.retain_in(txn, id, rules)))
                    .await;
                match d {
                    Ok(Decision::Kept { removed, archived }) => {
                        stats.entries_removed += removed;
                        stats.archived += u64::from(archived);
                        if removed < TRIM_PER_UNIT || archived {
                            break Ok(());
                        }
                    }
                    // Only if still archived since then (not restored or
                    // active again meanwhile).
                    Ok(Decision::Erase { archived_at }) => {
                        match self.erase_archived(id, archived_at).await {
                            Ok(_) => {
                                stats.erased += 1;
                                break self
                                    .audit(&crate::audit::AuditDraft {
                                        actor: "retention".into(),
                                        action: "customer.erase".into(),
                                        route: "retention: delete_archived_after_days".into(),
                                        customer_id: Some(id.to_string()),
                                        outcome: "ok".into(),
                                    })
                                    .await
                                    .map(|_| ());
                            }
                            Err(DbError::NotFound(_) | DbError::Invalid(_)) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                    // Erased or merged away since the page was read.
                    Err(DbError::NotFound(_)) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match decision {
                Ok(()) => {}
                // The store is unreachable: the walk stops here.
                Err(DbError::Store(crate::store::StoreError::Unavailable(m))) => {
                    return Err(DbError::Store(crate::store::StoreError::Unavailable(m)));
                }
                // One customer that cannot be judged (a record that does
                // not open, a customer too busy to lock) does not stop the
                // walk: the next one tries again.
                Err(_) => stats.failed += 1,
            }
        }
        Ok((stats, next))
    }

    /// A whole walk over every customer.
    pub async fn retention_pass(
        &self,
        rules: &Retention,
        limit: usize,
    ) -> Result<RetentionStats, DbError> {
        let mut total = RetentionStats::default();
        let mut cursor: Option<String> = None;
        loop {
            let (s, next) = self.retention_page(rules, cursor.as_deref(), limit).await?;
            total.add(s);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(total),
            }
        }
    }

    /// Restores an archived customer: back in the lookups for every
    /// identity and identifier nobody else has taken meanwhile. Returns the
    /// customer and what could not be linked back (`channel:id` or
    /// `kind:value`: someone new has it now; merge them to bring it back).
    pub async fn restore(&self, id: &str) -> Result<(Customer, Vec<String>), DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let mut c = ctx.load_customer(txn, id).await?;
                if c.archived_at.is_none() {
                    return Err(DbError::Invalid(format!("customer {id} is not archived")));
                }
                if c.merged_into.is_some() {
                    return Err(DbError::Invalid(format!(
                        "customer {id} was merged into another: restore that one"
                    )));
                }
                let members = ctx.group_of(txn, &c).await?;
                let mut taken = Vec::new();
                for m in &members {
                    for (key, name) in ctx.lookup_keys(m) {
                        match get(txn, &key).await? {
                            None => ctx.put_id(txn, &key, &c.id),
                            Some(v) if ctx.open_id(&key, &v)? == c.id => {}
                            Some(_) => taken.push(name),
                        }
                    }
                }
                c.archived_at = None;
                c.restored_at = Some(ctx.clock.now_secs());
                ctx.save_customer(txn, &c)?;
                taken.sort();
                taken.dedup();
                Ok((c, taken))
            })
        })
        .await
    }
}

impl Ctx<'_> {
    /// The retention unit for one customer (see the module doc).
    async fn retain_in(
        &self,
        txn: &mut dyn Txn,
        id: &str,
        rules: &Retention,
    ) -> Result<Decision, DbError> {
        let mut c = self.load_customer(txn, id).await?;
        if c.merged_into.is_some() {
            // Its survivor's walk covers its timeline.
            return Ok(Decision::Kept {
                removed: 0,
                archived: false,
            });
        }
        let now = self.clock.now_secs();
        let members = self.group_of(txn, &c).await?;
        let mut removed = 0;
        let mut last_active = c.created_at.max(c.restored_at.unwrap_or(0));
        for m in &members {
            last_active = last_active.max(
                m.attributes
                    .values()
                    .map(|a| a.updated_at)
                    .max()
                    .unwrap_or(0),
            );
            let (n, last) = self.trim_history(txn, &m.id, rules, now).await?;
            removed += n;
            last_active = last_active.max(last);
        }
        if let Some(at) = c.archived_at {
            if last_active > at {
                // Active again since (a merge, a reply, a change brought
                // them back): no longer archived.
                c.archived_at = None;
                self.save_customer(txn, &c)?;
            } else if rules.delete_archived_after_days > 0
                && now.saturating_sub(at) >= rules.delete_archived_after_days * DAY
            {
                return Ok(Decision::Erase { archived_at: at });
            }
        }
        let archive = c.archived_at.is_none()
            && rules.archive_after_days > 0
            && now.saturating_sub(last_active) >= rules.archive_after_days * DAY;
        if archive {
            let group: BTreeSet<String> = members.iter().map(|m| m.id.clone()).collect();
            let mut scratch = Erased::default();
            for m in &members {
                self.erase_lookups(txn, m, &group, &mut scratch).await?;
            }
            c.archived_at = Some(now);
            self.save_customer(txn, &c)?;
        }
        Ok(Decision::Kept {
            removed,
            archived: archive,
        })
    }

    /// Removes `customer`'s timeline entries older than the history rule,
    /// oldest first, from the first one not yet removed. Returns how many
    /// it removed and when the newest entry was (0 when none).
    async fn trim_history(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        rules: &Retention,
        now: u64,
    ) -> Result<(u64, u64), DbError> {
        let k = self.k();
        let (seq_key, first_key) = (k.timeline_seq(customer), k.timeline_first(customer));
        let counters = txn.get_many(&[seq_key, first_key.clone()]).await?;
        let number = |v: &Option<Vec<u8>>| -> u64 {
            v.as_deref()
                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                .unwrap_or(0)
        };
        // `tlfirst` is `N:AT`: the first entry not removed, and when the
        // newest entry removed so far was (activity that stays known once
        // its entry is gone).
        let marker = counters[1]
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("0")
            .to_string();
        let (first_part, trimmed_part) = marker.split_once(':').unwrap_or((&marker, "0"));
        let first: u64 = first_part.parse().unwrap_or(0);
        let mut trimmed_at: u64 = trimmed_part.parse().unwrap_or(0);
        let n = number(&counters[0]);
        if n == 0 {
            return Ok((0, 0));
        }
        let last_key = k.timeline_entry(customer, n - 1);
        let newest = match get(txn, &last_key).await? {
            Some(b) => self.open::<Entry>(&last_key, &b)?.at,
            None => 0,
        }
        .max(trimmed_at);
        if rules.history_days == 0 {
            return Ok((0, newest));
        }
        let cutoff = now.saturating_sub(rules.history_days * DAY);
        let mut removed = 0;
        let mut next = first;
        let mut scratch = Erased::default();
        'pages: while next < n && removed < TRIM_PER_UNIT {
            let keys: Vec<String> = (next..n.min(next + 64))
                .map(|i| k.timeline_entry(customer, i))
                .collect();
            for (key, value) in keys.iter().zip(txn.get_many(&keys).await?) {
                if let Some(bytes) = value {
                    let entry: Entry = self.open(key, &bytes)?;
                    if entry.at >= cutoff {
                        break 'pages;
                    }
                    txn.delete(key);
                    removed += 1;
                    trimmed_at = trimmed_at.max(entry.at);
                    match (&entry.direction, &entry.message_ref) {
                        (Direction::Inbound, Some(pid)) => {
                            txn.delete(&k.dedup(&entry.channel, pid));
                        }
                        (Direction::Outbound, Some(oid)) => {
                            self.erase_outbound(txn, oid, &mut scratch).await?;
                        }
                        _ => {}
                    }
                }
                next += 1;
            }
        }
        if next != first {
            txn.put(&first_key, format!("{next}:{trimmed_at}").into_bytes());
        }
        Ok((removed, newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::{T0, db, message, run, sender};
    use crate::identity::Rules;

    const RULES: Retention = Retention {
        history_days: 30,
        archive_after_days: 60,
        delete_archived_after_days: 90,
    };

    #[test]
    fn old_history_goes_inactive_customers_are_archived_then_erased_on_the_injected_clock() {
        let (db, clock) = db(Rules::default());
        let at = |days: u64| T0 + days * DAY;
        let s = |days| sender("whatsapp", "15551234567", vec![], at(days));
        let m = |days, id: &str, text: &str| message(&s(days), id, text);
        run(db.record_inbound(&m(0, "w1", "day 0"))).unwrap();
        clock.set_ms(at(20) * 1000);
        run(db.record_inbound(&m(20, "w2", "day 20"))).unwrap();
        let id = run(db.find_identity("whatsapp", "15551234567"))
            .unwrap()
            .unwrap();
        // Someone who keeps writing: never archived.
        let busy = |days| sender("telegram", "tg-1", vec![], at(days));

        // Day 31: the day-0 message is past 30 days; nothing else.
        clock.set_ms(at(31) * 1000);
        run(db.record_inbound(&message(&busy(31), "t1", "hi"))).unwrap();
        let done = run(db.retention_pass(&RULES, 1)).unwrap();
        assert_eq!(done.customers, 2);
        assert_eq!(done.entries_removed, 1, "{done:?}");
        assert_eq!(done.archived, 0);
        let texts: Vec<String> = run(db.timeline(&id))
            .unwrap()
            .into_iter()
            .filter_map(|e| e.text)
            .collect();
        assert_eq!(texts, ["day 20"]);
        // Again the same day: nothing more to do.
        assert_eq!(
            run(db.retention_pass(&RULES, 10)).unwrap().entries_removed,
            0
        );

        // Day 85: 65 days since their last message: archived, out of the
        // lookups; the busy one wrote on day 84 and stays.
        clock.set_ms(at(84) * 1000);
        run(db.record_inbound(&message(&busy(84), "t2", "still here"))).unwrap();
        clock.set_ms(at(85) * 1000);
        let done = run(db.retention_pass(&RULES, 10)).unwrap();
        assert_eq!(done.archived, 1, "{done:?}");
        assert_eq!(
            run(db.find_identity("whatsapp", "15551234567")).unwrap(),
            None
        );
        assert!(run(db.find_identity("telegram", "tg-1")).unwrap().is_some());
        assert_eq!(run(db.customer(&id)).unwrap().archived_at, Some(at(85)));

        // The same phone writes: a new customer, not the archived one.
        run(db.record_inbound(&m(85, "w3", "back again"))).unwrap();
        let newer = run(db.find_identity("whatsapp", "15551234567"))
            .unwrap()
            .unwrap();
        assert_ne!(newer, id);

        // Restored by an admin: back, but the phone is the new customer's
        // now, and the answer says so.
        let (c, taken) = run(db.restore(&id)).unwrap();
        assert_eq!(c.archived_at, None);
        assert_eq!(taken, ["whatsapp:15551234567"]);
        assert_eq!(
            run(db.find_identity("whatsapp", "15551234567")).unwrap(),
            Some(newer)
        );
        assert!(matches!(run(db.restore(&id)), Err(DbError::Invalid(_))));

        // A restore counts as activity: not archived again at once, but
        // 60 days later (with the other two, quiet since days 84 and 85);
        // then, 90 days archived, erased.
        clock.set_ms(at(86) * 1000);
        assert_eq!(run(db.retention_pass(&RULES, 10)).unwrap().archived, 0);
        clock.set_ms(at(145) * 1000);
        assert_eq!(run(db.retention_pass(&RULES, 10)).unwrap().archived, 3);
        clock.set_ms(at(145 + 89) * 1000);
        assert_eq!(run(db.retention_pass(&RULES, 10)).unwrap().erased, 0);
        clock.set_ms(at(145 + 90) * 1000);
        let done = run(db.retention_pass(&RULES, 10)).unwrap();
        assert_eq!(done.erased, 3, "{done:?}");
        assert!(matches!(run(db.customer(&id)), Err(DbError::NotFound(_))));
    }

    #[test]
    fn activity_outlives_its_trimmed_entries_and_brings_an_archived_customer_back() {
        let (db, clock) = db(Rules::default());
        let at = |days: u64| T0 + days * DAY;
        let s = sender("whatsapp", "15557654321", vec![], at(0));
        run(db.record_inbound(&message(&s, "w1", "hello"))).unwrap();
        let id = run(db.find_identity("whatsapp", "15557654321"))
            .unwrap()
            .unwrap();
        // Day 35: the message is trimmed; day 40: its time is still known,
        // so 40 days of quiet are not yet 60.
        clock.set_ms(at(35) * 1000);
        assert_eq!(
            run(db.retention_pass(&RULES, 10)).unwrap().entries_removed,
            1
        );
        clock.set_ms(at(40) * 1000);
        assert_eq!(run(db.retention_pass(&RULES, 10)).unwrap().archived, 0);
        clock.set_ms(at(61) * 1000);
        assert_eq!(run(db.retention_pass(&RULES, 10)).unwrap().archived, 1);
        // A change after the archiving is activity: the next walk takes
        // them out of the archive (and does not erase them later).
        clock.set_ms(at(62) * 1000);
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("tier".to_string(), "gold".to_string());
        run(db.set_attributes(&id, &attrs, "admin", at(62))).unwrap();
        run(db.retention_pass(&RULES, 10)).unwrap();
        assert_eq!(run(db.customer(&id)).unwrap().archived_at, None);
        clock.set_ms(at(61 + 91) * 1000);
        let done = run(db.retention_pass(&RULES, 10)).unwrap();
        assert_eq!(done.erased, 0, "{done:?}");
    }
}
