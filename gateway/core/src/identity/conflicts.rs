//! The review queue: limits, blocked values, suggestions and attribute
//! conflicts recorded instead of a bad merge.

use serde::{Deserialize, Serialize};

use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::store::{Backend, Txn, get};

/// An item in the review queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Random id, `k_` + 32 hex digits.
    pub id: String,
    /// Unix seconds.
    pub at: u64,
    /// `limit`, `blocked`, `suggestion` or `attribute`.
    pub kind: String,
    /// The customer the event went to.
    pub customer_id: String,
    /// The other customer involved, if any.
    pub other_customer_id: Option<String>,
    /// What happened, without personal data.
    pub detail: String,
    /// Set once an admin resolved it.
    pub resolved_at: Option<u64>,
}

impl Ctx<'_> {
    pub(crate) async fn record_conflict(
        &self,
        txn: &mut dyn Txn,
        kind: &str,
        customer: &str,
        other: Option<&str>,
        detail: String,
        at: u64,
    ) -> Result<String, DbError> {
        let id = self.random_id("k");
        let conflict = Conflict {
            id: id.clone(),
            at,
            kind: kind.to_string(),
            customer_id: customer.to_string(),
            other_customer_id: other.map(String::from),
            detail,
            resolved_at: None,
        };
        let key = self.k().conflict(&id);
        txn.put(&key, self.seal(&key, &conflict)?);
        let index_key = self.k().conflicts();
        let mut index: Vec<String> = self.open_or_default(txn, &index_key).await?;
        index.push(id.clone());
        txn.put(&index_key, self.seal(&index_key, &index)?);
        Ok(id)
    }
}

impl<B: Backend> Db<B> {
    /// A customer's own request to be erased (from the widget), queued for
    /// an admin in the review queue as kind `erasure_request`: erasure
    /// stays the business's decision. Asking again while one is open
    /// returns the open one.
    pub async fn request_erasure(
        &self,
        customer_id: &str,
        source: &str,
        at: u64,
    ) -> Result<String, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                let index: Vec<String> = ctx.open_or_default(txn, &ctx.k().conflicts()).await?;
                for id in index.iter().rev() {
                    let key = ctx.k().conflict(id);
                    if let Some(bytes) = crate::store::get(txn, &key).await? {
                        let k: Conflict = ctx.open(&key, &bytes)?;
                        if k.kind == "erasure_request"
                            && k.customer_id == c.id
                            && k.resolved_at.is_none()
                        {
                            return Ok(k.id);
                        }
                    }
                }
                ctx.record_conflict(
                    txn,
                    "erasure_request",
                    &c.id,
                    None,
                    format!("the customer asked to be erased ({source})"),
                    at,
                )
                .await
            })
        })
        .await
    }

    /// The review queue, oldest first.
    pub async fn conflicts(&self) -> Result<Vec<Conflict>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let index_key = ctx.k().conflicts();
                let ids: Vec<String> = ctx.open_or_default(txn, &index_key).await?;
                let keys: Vec<String> = ids.iter().map(|id| ctx.k().conflict(id)).collect();
                let values = txn.get_many(&keys).await?;
                let mut out = Vec::new();
                for (k, v) in keys.iter().zip(values) {
                    if let Some(v) = v {
                        out.push(ctx.open::<Conflict>(k, &v)?);
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    /// Marks a conflict resolved.
    pub async fn resolve_conflict(&self, id: &str, at: u64) -> Result<Conflict, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let key = ctx.k().conflict(id);
                let bytes = get(txn, &key)
                    .await?
                    .ok_or_else(|| DbError::NotFound(format!("conflict {id}")))?;
                let mut c: Conflict = ctx.open(&key, &bytes)?;
                c.resolved_at.get_or_insert(at);
                txn.put(&key, ctx.seal(&key, &c)?);
                Ok(c)
            })
        })
        .await
    }
}
