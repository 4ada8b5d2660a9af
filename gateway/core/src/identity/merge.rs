//! Merges and their exact undo: every merge writes a record of what it
//! moved and what it dropped.

use serde::{Deserialize, Serialize};

use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::identity::identifier::{Identifier, IdentifierKind};
use crate::identity::*;
use crate::store::{Backend, Txn, get};

/// What a merge moved, so that undo is exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// Random id, `m_` + 32 hex digits.
    pub merge_id: String,
    /// The customer that remains.
    pub surviving: String,
    /// The customer folded into it.
    pub merged: String,
    /// Unix seconds.
    pub at: u64,
    /// Admin or automatic.
    pub how: How,
    /// The surviving customer exactly as it was before.
    pub surviving_before: Customer,
    /// The merged customer exactly as it was before.
    pub merged_before: Customer,
    /// Attribute values the merge dropped (the older of two differing
    /// values); undo brings them back with both customers.
    pub dropped: Vec<DroppedValue>,
    /// Set once undone.
    pub undone_at: Option<u64>,
}

/// A value a merge dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedValue {
    /// The customer that held it.
    pub customer_id: String,
    /// The attribute.
    pub attribute: String,
    /// The value that lost to a more recent one.
    pub value: String,
}

impl<B: Backend> Db<B> {
    /// Merges `merged` into `surviving` (admin or automatic), recording what
    /// moved. Fails with [`DbError::Limit`] rather than break a limit.
    pub async fn merge(
        &self,
        surviving: &str,
        merged: &str,
        how: How,
        at: u64,
    ) -> Result<MergeRecord, DbError> {
        if surviving == merged {
            return Err(DbError::Invalid(
                "a customer cannot be merged into itself".into(),
            ));
        }
        self.unit(move |ctx, txn| Box::pin(merge_in(ctx, txn, surviving, merged, how, at)))
            .await
    }

    /// Reverses a merge exactly: both customers as they were, every moved
    /// identity and identifier pointing back at its owner.
    pub async fn undo(&self, merge_id: &str, at: u64) -> Result<MergeRecord, DbError> {
        self.unit(move |ctx, txn| Box::pin(undo_in(ctx, txn, merge_id, at)))
            .await
    }
}

pub(crate) async fn merge_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    surviving: &str,
    merged: &str,
    how: How,
    at: u64,
) -> Result<MergeRecord, DbError> {
    let s = ctx.live_customer(txn, surviving).await?;
    let m = ctx.live_customer(txn, merged).await?;
    if s.id == m.id {
        return Err(DbError::Invalid(format!(
            "{merged} is already part of {}",
            s.id
        )));
    }
    for kind in [
        IdentifierKind::Email,
        IdentifierKind::Phone,
        IdentifierKind::UserId,
    ] {
        let mut values: Vec<&Identifier> = s
            .identifiers
            .iter()
            .chain(&m.identifiers)
            .map(|i| &i.identifier)
            .filter(|i| i.kind == kind)
            .collect();
        values.sort();
        values.dedup();
        let limit = ctx.limit(kind);
        if values.len() > limit {
            return Err(DbError::Limit {
                kind: kind.as_str(),
                count: values.len(),
                limit,
            });
        }
    }
    let mut record = MergeRecord {
        merge_id: ctx.random_id("m"),
        surviving: s.id.clone(),
        merged: m.id.clone(),
        at,
        how,
        surviving_before: s.clone(),
        merged_before: m.clone(),
        dropped: Vec::new(),
        undone_at: None,
    };
    let before = [
        (s.id.clone(), ctx.group_ids(txn, &s).await?),
        (m.id.clone(), ctx.group_ids(txn, &m).await?),
    ];
    let mut s2 = s.clone();
    ctx.point_links_at(txn, &m, &s2.id);
    s2.identities.extend(m.identities.iter().cloned());
    for i in &m.identifiers {
        if !s2.identifiers.iter().any(|x| x.identifier == i.identifier) {
            s2.identifiers.push(i.clone());
        }
    }
    // Attributes: the most recent value wins; the other is recorded.
    for (name, a) in &m.attributes {
        let dropped = match s2.attributes.get(name) {
            Some(cur) if cur.value == a.value => None,
            Some(cur) if cur.updated_at >= a.updated_at => Some((m.id.clone(), a.value.clone())),
            Some(cur) => {
                let lost = (s2.id.clone(), cur.value.clone());
                s2.attributes.insert(name.clone(), a.clone());
                Some(lost)
            }
            None => {
                s2.attributes.insert(name.clone(), a.clone());
                None
            }
        };
        if let Some((customer_id, value)) = dropped {
            record.dropped.push(DroppedValue {
                customer_id,
                attribute: name.clone(),
                value,
            });
        }
    }
    // Both consent histories, in time order.
    s2.consent_history.extend(m.consent_history.iter().cloned());
    s2.consent_history.sort_by_key(|c| c.at);
    s2.attribute_history
        .extend(m.attribute_history.iter().cloned());
    s2.attribute_history.sort_by_key(|a| a.replaced_at);
    let mut m2 = m.clone();
    m2.merged_into = Some(s2.id.clone());
    s2.absorbed.push(m2.id.clone());
    ctx.save_customer(txn, &s2)?;
    ctx.save_customer(txn, &m2)?;
    let members: Vec<String> = before.iter().flat_map(|(_, g)| g.clone()).collect();
    ctx.analytics_regroup(
        txn,
        &before,
        &[crate::analytics::Group { live: &s2, members }],
    )
    .await?;
    let key = ctx.k().merge(&record.merge_id);
    // Under the survivor's key: erasing the survivor shreds it.
    txn.put(&key, ctx.seal_for(&s2.id, &key, &record)?);
    for owner in [&s2.id, &m2.id] {
        let mut state = ctx.load_state(txn, owner).await?;
        state.own(key.clone(), None, record.at);
        ctx.save_state(txn, owner, &state)?;
    }
    Ok(record)
}

pub(crate) async fn undo_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    merge_id: &str,
    at: u64,
) -> Result<MergeRecord, DbError> {
    let key = ctx.k().merge(merge_id);
    let bytes = get(txn, &key)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("merge {merge_id}")))?;
    let mut record: MergeRecord = ctx.open(&key, &bytes)?;
    if record.undone_at.is_some() {
        return Err(DbError::Invalid(format!(
            "merge {merge_id} was already undone"
        )));
    }
    let current = ctx.load_customer(txn, &record.surviving).await?;
    if current.merged_into.is_some() {
        return Err(DbError::Invalid(format!(
            "{} was merged again since; undo that merge first",
            record.surviving
        )));
    }
    // The survivor keeps what it gained since the merge, minus what the
    // merge brought; the merged customer comes back exactly as it was.
    let moved_identities = &record.merged_before.identities;
    let moved_identifiers: Vec<&Identifier> = record
        .merged_before
        .identifiers
        .iter()
        .map(|i| &i.identifier)
        .filter(|i| {
            !record
                .surviving_before
                .identifiers
                .iter()
                .any(|x| &x.identifier == *i)
        })
        .collect();
    let before = [(current.id.clone(), ctx.group_ids(txn, &current).await?)];
    let mut s = current.clone();
    s.absorbed.retain(|id| *id != record.merged);
    s.identities.retain(|i| !moved_identities.contains(i));
    s.identifiers
        .retain(|i| !moved_identifiers.contains(&&i.identifier));
    for (name, before) in &record.surviving_before.attributes {
        if let Some(now) = s.attributes.get(name)
            && now.updated_at <= record.at
            && now != before
        {
            s.attributes.insert(name.clone(), before.clone());
        }
    }
    s.attributes.retain(|name, a| {
        record.surviving_before.attributes.contains_key(name) || a.updated_at > record.at
    });
    // The merged customer's consent history goes back with it; what was
    // given since the merge stays.
    s.consent_history
        .retain(|c| c.at > record.at || !record.merged_before.consent_history.contains(c));
    s.attribute_history.retain(|a| {
        a.replaced_at > record.at || !record.merged_before.attribute_history.contains(a)
    });
    let m = record.merged_before.clone();
    ctx.point_links_at(txn, &m, &m.id);
    // Identifiers both had before the merge stay with the survivor.
    for i in &record.surviving_before.identifiers {
        ctx.put_id(txn, &ctx.k().identifier(&i.identifier), &s.id);
    }
    ctx.save_customer(txn, &s)?;
    ctx.save_customer(txn, &m)?;
    // Analytics: the one group becomes two again.
    let m_members = ctx.group_ids(txn, &m).await?;
    let s_members: Vec<String> = before[0]
        .1
        .iter()
        .filter(|id| !m_members.contains(id))
        .cloned()
        .collect();
    ctx.analytics_regroup(
        txn,
        &before,
        &[
            crate::analytics::Group {
                live: &s,
                members: s_members,
            },
            crate::analytics::Group {
                live: &m,
                members: m_members,
            },
        ],
    )
    .await?;
    record.undone_at = Some(at);
    txn.put(&key, ctx.seal_for(&record.surviving, &key, &record)?);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use crate::channel::ClaimKind;
    use crate::db::testing::{T0, claim, db, run, sender};
    use crate::identity::{How, Rules};

    #[test]
    fn undo_brings_both_customers_back_exactly() {
        let (db, _) = db(Rules::default());
        let mut wa = sender(
            "whatsapp",
            "1",
            vec![claim(ClaimKind::Phone, "+15551230001", true)],
            T0,
        );
        wa.display_name = Some("Sarah".into());
        let mut tg = sender("telegram", "2", vec![], T0 + 1);
        tg.display_name = Some("Sarah K".into());
        let a = run(db.resolve(&wa)).unwrap().customer_id;
        let b = run(db.resolve(&tg)).unwrap().customer_id;
        let (before_a, before_b) = (run(db.customer(&a)).unwrap(), run(db.customer(&b)).unwrap());

        let m = run(db.merge(&a, &b, How::AdminMerge, T0 + 2)).unwrap();
        assert_eq!(
            run(db.find_identity("telegram", "2")).unwrap().as_deref(),
            Some(a.as_str())
        );
        // The newer name won; the older one is recorded as dropped.
        assert_eq!(
            run(db.customer(&a)).unwrap().attributes["name"].value,
            "Sarah K"
        );
        assert_eq!(m.dropped.len(), 1);

        run(db.undo(&m.merge_id, T0 + 3)).unwrap();
        assert_eq!(run(db.customer(&a)).unwrap(), before_a);
        assert_eq!(run(db.customer(&b)).unwrap(), before_b);
        assert_eq!(
            run(db.find_identity("telegram", "2")).unwrap().as_deref(),
            Some(b.as_str())
        );
        assert!(run(db.undo(&m.merge_id, T0 + 4)).is_err(), "undone twice");
    }

    #[test]
    fn a_customer_is_never_merged_into_itself() {
        let (db, _) = db(Rules::default());
        let a = run(db.resolve(&sender("widget", "u", vec![], T0)))
            .unwrap()
            .customer_id;
        assert!(run(db.merge(&a, &a, How::AdminMerge, T0)).is_err());
    }
}
