//! Malformed payloads: verified requests a plugin refused, kept sealed for
//! inspection (the newest [`MALFORMED_KEPT`]).

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::store::Backend;

/// How many malformed requests are kept for inspection: the newest 100.
pub const MALFORMED_KEPT: usize = 100;

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
    /// The raw body, as received.
    pub body: Vec<u8>,
}

impl<B: Backend> Db<B> {
    /// Keeps a verified request its plugin could not parse, for an operator
    /// to inspect (sealed like everything else); the newest
    /// [`MALFORMED_KEPT`] are kept.
    pub async fn keep_malformed(&self, item: &Malformed) -> Result<(), DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let key = ctx.k().malformed();
                let mut list: Vec<Malformed> = ctx.open_or_default(txn, &key).await?;
                list.push(item.clone());
                let excess = list.len().saturating_sub(MALFORMED_KEPT);
                list.drain(..excess);
                txn.put(&key, ctx.seal(&key, &list));
                Ok(())
            })
        })
        .await
    }

    /// The kept malformed requests, oldest first.
    pub async fn malformed(&self) -> Result<Vec<Malformed>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move { ctx.open_or_default(txn, &ctx.k().malformed()).await })
        })
        .await
    }
}
