//! The CSV import's unit: one row ("these identifiers are one person")
//! applied atomically; re-applying a row changes nothing.

use std::collections::BTreeMap;

use super::merge::merge_in;
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::identity::identifier::Identifier;
use crate::identity::*;
use crate::store::{Backend, Txn, get};

/// One CSV row, normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRow {
    /// Identifiers (email, phone, user id).
    pub identifiers: Vec<Identifier>,
    /// Channel user ids as `(channel, id)`, linked in any scope.
    pub channel_ids: Vec<(String, String)>,
    /// `customer_name` and `attr:*` columns.
    pub attributes: BTreeMap<String, String>,
}

/// What one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// New links written (identifiers or channel ids).
    pub linked: usize,
    /// Customers merged because the row joined them.
    pub merged: usize,
    /// Conflicts recorded instead of a bad merge.
    pub conflicts: usize,
}

impl<B: Backend> Db<B> {
    /// Applies one CSV row ("these identifiers are one person"),
    /// atomically. Re-applying a row changes nothing.
    pub async fn import_row(&self, row: &ImportRow, at: u64) -> Result<ImportOutcome, DbError> {
        self.unit(move |ctx, txn| Box::pin(import_in(ctx, txn, row, at)))
            .await
    }
}

pub(crate) async fn import_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    row: &ImportRow,
    at: u64,
) -> Result<ImportOutcome, DbError> {
    let mut out = ImportOutcome::default();
    let idx_keys: Vec<String> = row
        .identifiers
        .iter()
        .map(|i| ctx.k().identifier(i))
        .collect();
    let any_keys: Vec<String> = row
        .channel_ids
        .iter()
        .map(|(c, i)| ctx.k().identity_any(c, i))
        .collect();
    let all: Vec<String> = idx_keys.iter().chain(&any_keys).cloned().collect();
    let values = txn.get_many(&all).await?;
    let mut owners: Vec<String> = Vec::new();
    for (k, v) in all.iter().zip(&values) {
        if let Some(b) = v {
            let id = ctx.live_customer(txn, &ctx.open_id(k, b)?).await?.id;
            if !owners.contains(&id) {
                owners.push(id);
            }
        }
    }
    let mut customer = match owners.first() {
        Some(id) => ctx.live_customer(txn, id).await?,
        None => Customer {
            id: ctx.random_id("c"),
            created_at: at,
            identities: vec![],
            identifiers: vec![],
            attributes: BTreeMap::new(),
            merged_into: None,
            absorbed: Vec::new(),
            consent_history: Vec::new(),
            attribute_history: Vec::new(),
            archived_at: None,
            restored_at: None,
        },
    };
    for other in owners.iter().skip(1) {
        ctx.save_customer(txn, &customer)?;
        match merge_in(ctx, txn, &customer.id, other, How::Csv, at).await {
            Ok(_) => {
                out.merged += 1;
                customer = ctx.load_customer(txn, &customer.id).await?;
            }
            Err(DbError::Limit { kind, count, limit }) => {
                ctx.record_conflict(txn, "limit", &customer.id, Some(other), format!("a CSV row joins two customers; merging would give {count} {kind} identifiers (limit {limit})"), at).await?;
                out.conflicts += 1;
            }
            Err(e) => return Err(e),
        }
    }
    for (ident, key) in row.identifiers.iter().zip(&idx_keys) {
        if ctx.rules.blocked.contains(ident) {
            continue;
        }
        if customer.identifiers.iter().any(|i| &i.identifier == ident) {
            continue;
        }
        match get(txn, key).await? {
            Some(_) => continue, // owned by a customer a refused merge kept apart
            None if ctx.count(&customer, ident.kind) >= ctx.limit(ident.kind) => {
                ctx.record_conflict(
                    txn,
                    "limit",
                    &customer.id,
                    None,
                    format!(
                        "a CSV {} was not linked: the customer has the maximum of {}",
                        ident.kind.as_str(),
                        ctx.limit(ident.kind)
                    ),
                    at,
                )
                .await?;
                out.conflicts += 1;
            }
            None => {
                customer.identifiers.push(LinkedIdentifier {
                    identifier: ident.clone(),
                    linked_at: at,
                    how: How::Csv,
                });
                ctx.put_id(txn, key, &customer.id);
                out.linked += 1;
            }
        }
    }
    for ((channel, id), key) in row.channel_ids.iter().zip(&any_keys) {
        if get(txn, key).await?.is_none() {
            ctx.put_id(txn, key, &customer.id);
            customer.identities.push(LinkedIdentity {
                channel: channel.clone(),
                scope: "*".into(),
                id: id.clone(),
                verified: true,
                linked_at: at,
                how: How::Csv,
            });
            out.linked += 1;
        }
    }
    let mut changed = out.linked > 0 || out.merged > 0 || owners.is_empty();
    for (k, v) in &row.attributes {
        if customer.attributes.get(k).map(|a| &a.value) != Some(v) {
            customer.set_attribute(k, v, "csv", at);
            changed = true;
        }
    }
    if changed {
        ctx.save_customer(txn, &customer)?;
        if row.attributes.contains_key(crate::analytics::CONSENT) {
            ctx.analytics_consent(txn, &customer).await?;
        }
    }
    Ok(out)
}
