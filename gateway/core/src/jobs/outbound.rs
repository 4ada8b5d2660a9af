//! Outbound messages: queued in the customer's outbox order, delivered,
//! rerouted to the next channel, and moved by the channel's statuses.

use super::*;
use crate::channel::{DeliveryState, DeliveryStatus};
use crate::conversation::Entry;
use crate::conversation::state::{ConversationState, Route};
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::delivery::{Job, JobKind, Outbound, OutboundState, shard_of};
use crate::store::{Backend, Expiry, Txn, get};

/// A delivery status that arrived before the send it reports on was
/// recorded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct EarlyStatus {
    state: OutboundState,
    at: u64,
    error: Option<String>,
}

/// How long an early status waits for its send: a day.
const EARLY_STATUS_KEPT_SECONDS: u64 = 86_400;

/// How long the channel's id of a sent message is remembered to apply its
/// statuses: 7 days, the longest the channels keep retrying a status
/// webhook (WhatsApp). A status later than that is kept as an early one
/// for a day, then dropped.
const SENT_ID_KEPT_SECONDS: u64 = 7 * 86_400;

impl Ctx<'_> {
    /// Stores an outbound message, its timeline entry and the job that
    /// delivers it.
    #[allow(clippy::too_many_arguments, reason = "the message's parts")]
    pub(crate) async fn queue_outbound(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        state: &mut ConversationState,
        content: &crate::channel::OutboundContent,
        author: &str,
        routes: Vec<Route>,
        now_ms: u64,
    ) -> Result<Outbound, DbError> {
        let at = now_ms / 1000;
        let channel = routes
            .first()
            .map(|r| r.identity.channel.clone())
            .unwrap_or_default();
        let id = self.random_id("o");
        let text = &content.as_text();
        let (_, entry_key) = self
            .append(
                txn,
                customer,
                Entry::outbound(&id, &channel, text, author, at),
            )
            .await?;
        let outbound = Outbound {
            id,
            customer_id: customer.to_string(),
            text: text.to_string(),
            content: match content {
                crate::channel::OutboundContent::Text { .. } => None,
                rich => Some(rich.clone()),
            },
            author: author.to_string(),
            routes,
            route: 0,
            entry_key,
            state: OutboundState::Queued,
            provider_message_id: None,
            error: None,
            created_at: at,
            updated_at: at,
        };
        let key = self.k().outbound(&outbound.id);
        txn.put(&key, self.seal_for(customer, &key, &outbound)?);
        // Sent in the order queued (the caller saves `state`).
        state.outbox.push(outbound.id.clone());
        self.enqueue(
            txn,
            shard_of(customer),
            JobKind::Deliver {
                outbound_id: outbound.id.clone(),
            },
            now_ms,
            now_ms,
        )
        .await?;
        Ok(outbound)
    }

    pub(crate) async fn load_outbound(
        &self,
        txn: &mut dyn Txn,
        id: &str,
    ) -> Result<Outbound, DbError> {
        let key = self.k().outbound(id);
        let bytes = get(txn, &key)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("outbound message {id}")))?;
        self.open(&key, &bytes)
    }

    /// Saves an outbound message and mirrors its state (and channel) on
    /// its timeline entry.
    pub(crate) async fn save_outbound(
        &self,
        txn: &mut dyn Txn,
        o: &Outbound,
    ) -> Result<(), DbError> {
        let key = self.k().outbound(&o.id);
        txn.put(&key, self.seal_for(&o.customer_id, &key, o)?);
        if let Some(bytes) = get(txn, &o.entry_key).await? {
            let mut entry: Entry = self.open(&o.entry_key, &bytes)?;
            entry.status = Some(o.state.as_str().to_string());
            if let Some(r) = o.routes.get(o.route) {
                entry.channel = r.identity.channel.clone();
            }
            txn.put(&o.entry_key, self.seal(&o.entry_key, &entry)?);
        }
        Ok(())
    }

    /// Takes a message that is done with (sent or failed) off its
    /// customer's outbox, letting the next one go.
    pub(crate) async fn sent_from_outbox(
        &self,
        txn: &mut dyn Txn,
        o: &Outbound,
    ) -> Result<(), DbError> {
        let mut state = self.load_state(txn, &o.customer_id).await?;
        if state.outbox.contains(&o.id) {
            state.outbox.retain(|id| *id != o.id);
            self.save_state(txn, &o.customer_id, &state)?;
        }
        Ok(())
    }
}

impl<B: Backend> Db<B> {
    /// The outbound message a delivery job delivers.
    pub async fn outbound(&self, id: &str) -> Result<Outbound, DbError> {
        self.read_unit(move |ctx, txn| Box::pin(ctx.load_outbound(txn, id)))
            .await
    }

    /// A claimed delivery was accepted by the channel: the message is
    /// `sent` (a status already reported stays), its provider id is
    /// indexed for status reports, and the job is gone.
    pub async fn delivered(
        &self,
        shard: u32,
        job: &Job,
        provider_message_id: Option<&str>,
        now_ms: u64,
    ) -> Result<Step, DbError> {
        let JobKind::Deliver { outbound_id } = &job.kind else {
            return Err(DbError::Invalid(format!("{} is not a delivery", job.id)));
        };
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                if !ctx.still_ours(txn, job).await? {
                    return Ok(Step::Lost);
                }
                let mut o = ctx.load_outbound(txn, outbound_id).await?;
                o.state = o.state.max(OutboundState::Sent);
                o.updated_at = now_ms / 1000;
                o.provider_message_id = provider_message_id.map(String::from);
                if let (Some(pid), Some(route)) = (provider_message_id, o.routes.get(o.route)) {
                    let key = ctx.k().provider_id(&route.identity.channel, pid);
                    txn.put_expiring(
                        &key,
                        o.id.as_bytes().to_vec(),
                        Expiry::after(now_ms / 1000, SENT_ID_KEPT_SECONDS),
                    );
                    // A status that beat us here.
                    let early_key = ctx.k().early_status(&route.identity.channel, pid);
                    if let Some(b) = get(txn, &early_key).await? {
                        let early: EarlyStatus = ctx.open(&early_key, &b)?;
                        o.state = o.state.advance(early.state);
                        o.updated_at = o.updated_at.max(early.at);
                        if o.state == OutboundState::Failed {
                            o.error = early.error.or(Some("reported failed".into()));
                        }
                        txn.delete(&early_key);
                    }
                }
                ctx.save_outbound(txn, &o).await?;
                ctx.sent_from_outbox(txn, &o).await?;
                ctx.remove_job(txn, shard, &job.id).await?;
                Ok(Step::Done)
            })
        })
        .await
    }

    /// The plugin cannot render the message for its current route (a
    /// Discord user with no open interaction, …): the next route is tried
    /// at once; with none left the delivery fails onto the inbox.
    pub async fn reroute(
        &self,
        shard: u32,
        job: &Job,
        error: &str,
        now_ms: u64,
    ) -> Result<Step, DbError> {
        let JobKind::Deliver { outbound_id } = &job.kind else {
            return Err(DbError::Invalid(format!("{} is not a delivery", job.id)));
        };
        let moved: bool = self
            .unit(move |ctx, txn| {
                Box::pin(async move {
                    if !ctx.still_ours(txn, job).await? {
                        return Ok(false);
                    }
                    let mut o = ctx.load_outbound(txn, outbound_id).await?;
                    if o.route + 1 >= o.routes.len() {
                        return Ok(false);
                    }
                    o.route += 1;
                    o.error = Some(error.to_string());
                    ctx.save_outbound(txn, &o).await?;
                    ctx.set_due(txn, shard, job, now_ms).await?;
                    Ok(true)
                })
            })
            .await?;
        if moved {
            Ok(Step::Retry(now_ms))
        } else {
            self.fail(shard, job, error, None, now_ms).await
        }
    }

    /// Applies a channel's status report to the outbound message it is
    /// about. `false` if the gateway did not send that message.
    pub async fn record_status(
        &self,
        channel: &str,
        status: &DeliveryStatus,
    ) -> Result<bool, DbError> {
        let reported = match status.state {
            DeliveryState::Sent => OutboundState::Sent,
            DeliveryState::Delivered => OutboundState::Delivered,
            DeliveryState::Read => OutboundState::Read,
            DeliveryState::Failed => OutboundState::Failed,
        };
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let key = ctx.k().provider_id(channel, &status.provider_message_id);
                let Some(id) = get(txn, &key).await? else {
                    // Maybe ours, reported before our send was recorded (a
                    // channel can be that quick): kept a day for it.
                    let early_key = ctx.k().early_status(channel, &status.provider_message_id);
                    let prior: Option<EarlyStatus> = match get(txn, &early_key).await? {
                        Some(b) => Some(ctx.open(&early_key, &b)?),
                        None => None,
                    };
                    let kept = EarlyStatus {
                        state: prior
                            .as_ref()
                            .map_or(reported, |p| p.state.advance(reported)),
                        at: prior
                            .as_ref()
                            .map_or(status.timestamp, |p| p.at.max(status.timestamp)),
                        error: status.error.clone().or(prior.and_then(|p| p.error)),
                    };
                    txn.put_expiring(
                        &early_key,
                        ctx.seal(&early_key, &kept)?,
                        crate::store::Expiry::until(
                            kept.at.saturating_add(EARLY_STATUS_KEPT_SECONDS),
                            ctx.clock.now_secs(),
                        ),
                    );
                    return Ok(false);
                };
                let id = String::from_utf8_lossy(&id).into_owned();
                let mut o = ctx.load_outbound(txn, &id).await?;
                let next = o.state.advance(reported);
                if next != o.state {
                    o.state = next;
                    o.updated_at = o.updated_at.max(status.timestamp);
                    if next == OutboundState::Failed {
                        o.error = status.error.clone().or(Some("reported failed".into()));
                    }
                    ctx.save_outbound(txn, &o).await?;
                }
                Ok(true)
            })
        })
        .await
    }
}
