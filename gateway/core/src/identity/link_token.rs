//! One-time link tokens: a customer's proof, carried through another
//! channel, that both identities are one person.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::store::Backend;

/// A one-time link token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LinkToken {
    pub(crate) customer_id: String,
    pub(crate) channel: String,
    pub(crate) expires_at: u64,
}

impl<B: Backend> Db<B> {
    /// Issues a one-time link token for `customer_id` on `channel`, valid
    /// for `ttl` seconds. Returns the token (URL-safe, 22 characters).
    pub async fn create_link_token(
        &self,
        customer_id: &str,
        channel: &str,
        ttl: u64,
        at: u64,
    ) -> Result<String, DbError> {
        let mut raw = [0u8; 16];
        self.rng
            .fill(&mut raw)
            .map_err(|_| DbError::Invalid("no randomness".into()))?;
        use base64::Engine as _;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let token_ref = &token;
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                let key = ctx.k().link_token(token_ref);
                let record = LinkToken {
                    customer_id: c.id,
                    channel: channel.to_string(),
                    expires_at: at + ttl,
                };
                // Gone from the store once expired, as from the customer's
                // list of what erasure removes.
                txn.put_expiring(
                    &key,
                    ctx.seal_for(&record.customer_id, &key, &record)?,
                    crate::store::Expiry::until(record.expires_at, at),
                );
                let mut state = ctx.load_state(txn, &record.customer_id).await?;
                state.own(key, Some(record.expires_at), at);
                ctx.save_state(txn, &record.customer_id, &state)?;
                Ok(())
            })
        })
        .await?;
        Ok(token)
    }
}
