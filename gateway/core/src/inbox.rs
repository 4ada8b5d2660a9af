//! The hand-off inbox: conversations waiting for a person, a person's
//! reply, and closing a hand-off.

use crate::conversation::state::ConversationState;
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::delivery::Outbound;
use crate::identity::PREFERRED_CHANNEL;
use crate::store::{Backend, Txn};

/// An open hand-off, for the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHandoff {
    /// The customer (their one conversation across channels).
    pub customer_id: String,
    /// The hand-off.
    pub handoff: crate::conversation::state::Handoff,
}

impl Ctx<'_> {
    /// Adds or removes `customer` in the inbox index.
    pub(crate) async fn index_handoff(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        open: bool,
    ) -> Result<(), DbError> {
        let key = self.k().handoffs();
        let mut ids: Vec<String> = self.open_or_default(txn, &key).await?;
        let present = ids.iter().any(|i| i == customer);
        if open == present {
            return Ok(());
        }
        if open {
            ids.push(customer.to_string());
        } else {
            ids.retain(|i| i != customer);
        }
        txn.put(&key, self.seal(&key, &ids)?);
        Ok(())
    }

    /// Opens (or adds to) a hand-off and lists it in the inbox.
    #[allow(clippy::too_many_arguments, reason = "the hand-off's fields")]
    pub(crate) async fn open_handoff(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        state: &mut ConversationState,
        reason: &str,
        detail: Option<String>,
        channel: &str,
        at: u64,
    ) -> Result<(), DbError> {
        state.hand_off(reason, detail, channel, at);
        self.index_handoff(txn, customer, true).await
    }
}

impl<B: Backend> Db<B> {
    /// Open hand-offs, oldest first.
    pub async fn handoffs(&self) -> Result<Vec<OpenHandoff>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let ids: Vec<String> = ctx.open_or_default(txn, &ctx.k().handoffs()).await?;
                let mut out = Vec::new();
                for id in ids {
                    if let Some(h) = ctx.load_state(txn, &id).await?.handoff {
                        out.push(OpenHandoff {
                            customer_id: id,
                            handoff: h,
                        });
                    }
                }
                out.sort_by_key(|h| h.handoff.opened_at);
                Ok(out)
            })
        })
        .await
    }

    /// A person's reply to a customer: queued on the customer's preferred
    /// channel, else the one they used most recently (falling through to
    /// the next if the plugin cannot deliver there).
    pub async fn reply_as_human(
        &self,
        customer_id: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<Outbound, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                let mut state = ctx.load_state(txn, &c.id).await?;
                let preferred = c
                    .attributes
                    .get(PREFERRED_CHANNEL)
                    .map(|a| a.value.as_str());
                let routes = state.reply_routes(preferred);
                if routes.is_empty() {
                    return Err(DbError::Invalid(format!(
                        "{} has not written on any channel yet: there is nowhere to reply",
                        c.id
                    )));
                }
                let o = ctx
                    .queue_outbound(
                        txn,
                        &c.id,
                        &mut state,
                        &crate::channel::OutboundContent::text(text),
                        "human",
                        routes,
                        now_ms,
                    )
                    .await?;
                ctx.save_state(txn, &c.id, &state)?;
                Ok(o)
            })
        })
        .await
    }

    /// Closes the customer's hand-off: the agent answers again. `false` if
    /// none was open.
    pub async fn close_handoff(&self, customer_id: &str) -> Result<bool, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                let mut state = ctx.load_state(txn, &c.id).await?;
                let was_open = state.handoff.take().is_some();
                if was_open {
                    ctx.save_state(txn, &c.id, &state)?;
                }
                ctx.index_handoff(txn, &c.id, false).await?;
                Ok(was_open)
            })
        })
        .await
    }
}
