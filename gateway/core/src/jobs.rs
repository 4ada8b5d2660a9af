//! What happens after an inbound message is stored, as decisions over the
//! store: the durable job queue, the agent's answer turned into outbound
//! messages, deliveries and their statuses, and abandoned-cart reminders
//! under consent and a frequency cap (hand-offs are [`crate::inbox`]'s).
//!
//! Everything here is a unit of work on the same store as the identity
//! records, so each step is atomic with what it decides: an inbound message
//! and the job to answer it are written together; an agent's replies, their
//! timeline entries and their delivery jobs are written together with the
//! agent job's removal. A crash between steps leaves a job in the queue, and
//! a job claimed by a worker that died comes back when its lease runs out —
//! so nothing accepted is lost. The host drives it: it owns the clock (every
//! time is a parameter), the agent's HTTP call, the plugin and the channel
//! API.
//!
//! The queue's layout is in [`queue`]: per shard a FIFO of slots and a
//! short list of jobs due later, so every operation touches a bounded
//! number of keys whatever the backlog.

use crate::channel::InboundMessage;
use crate::conversation::Entry;
use crate::conversation::state::{ConversationState, Route};
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::delivery::{Job, JobKind, JobRef, Outbound, OutboundState, shard_of};
use crate::identity::*;
use crate::store::{Backend, Txn};

mod agent;
mod outbound;
mod queue;
mod reminders;

pub use agent::{AgentInput, Answer};
use agent::{agent_input_in, finish_agent_in};
pub use queue::WINDOW;
pub use reminders::{ReminderRules, Skip};

/// An agent that answers without I/O (the built-in one), run inside the
/// claiming unit.
pub type InlineAgent = dyn Fn(&AgentInput) -> Answer + Send + Sync;

/// How the worker claims a job (see [`Db::claim_for_worker`]).
#[derive(Clone, Copy)]
pub enum ClaimMode<'a> {
    /// Answer agent jobs inline with this agent.
    Inline(&'a InlineAgent),
    /// Claim, with a delivery's message; agent jobs are left to the caller.
    Normal,
    /// Only claim.
    Plain,
}

impl std::fmt::Debug for ClaimMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClaimMode::Inline(_) => "Inline",
            ClaimMode::Normal => "Normal",
            ClaimMode::Plain => "Plain",
        })
    }
}

/// How long a delivery waiting for an earlier message to the same customer
/// waits before it looks again.
pub const ORDER_RECHECK_MS: u64 = 1_000;

/// What the worker's claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// A job to run, leased; a delivery's outbound message with it
    /// (`None` if that message is gone).
    Job {
        /// The job.
        job: Job,
        /// For a delivery, the message.
        outbound: Option<Box<Outbound>>,
    },
    /// An agent job the inline agent answered in the claiming unit.
    Answered {
        /// The customer answered.
        customer_id: String,
        /// How it ended ([`Step::Done`], or [`Step::Lost`]).
        step: Step,
    },
}

/// Outcome of a step that holds a claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Done; the job is gone.
    Done,
    /// Retried later (due at this Unix millisecond).
    Retry(u64),
    /// Given up; what was given up on is on the hand-off inbox.
    GaveUp,
    /// The job was no longer ours (another worker took it over after our
    /// lease ran out, or it was cancelled): nothing written.
    Lost,
}

impl Ctx<'_> {
    pub(crate) async fn load_state(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
    ) -> Result<ConversationState, DbError> {
        self.open_or_default(txn, &self.k().conversation(customer))
            .await
    }

    pub(crate) fn save_state(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        state: &ConversationState,
    ) -> Result<(), DbError> {
        let key = self.k().conversation(customer);
        txn.put(&key, self.seal(&key, state)?);
        Ok(())
    }

    /// Reads, in one round trip, the keys the rest of `record_inbound`'s
    /// unit reads one by one (its timeline counter, conversation state and
    /// queue counter): backends that go over the network keep a unit's
    /// reads, so those later reads cost nothing.
    pub(crate) async fn prefetch_for_inbound(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
    ) -> Result<(), DbError> {
        let keys = [
            self.k().timeline_seq(customer),
            self.k().conversation(customer),
            self.k().queue_seq(shard_of(customer)),
            self.k().analytics(customer),
        ];
        txn.get_many(&keys).await?;
        Ok(())
    }

    /// Called by `record_inbound` in the same unit: remembers the route and
    /// queues the agent's turn (reactions get no answer).
    pub(crate) async fn after_inbound(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        entry: &Entry,
        m: &InboundMessage,
        answer: bool,
    ) -> Result<(), DbError> {
        let mut state = self.load_state(txn, customer).await?;
        state.saw(&m.sender, m.reply_handle.as_deref(), m.timestamp);
        self.save_state(txn, customer, &state)?;
        if answer && entry.kind != "reaction" && !m.edited {
            // The answer goes back to this message's sender, with its
            // handle (not the channel's latest route: a late redelivery may
            // come from another of the customer's identities there).
            let route = Route {
                identity: m.sender.clone(),
                reply_handle: m.reply_handle.clone(),
                at: m.timestamp,
            };
            self.enqueue(
                txn,
                shard_of(customer),
                JobKind::Agent {
                    customer_id: customer.to_string(),
                    entry_id: entry.id.clone(),
                    route,
                },
                0,
                m.timestamp * 1000,
            )
            .await?;
        }
        Ok(())
    }
}

impl<B: Backend> Db<B> {
    /// The worker's claim of a due job, in one unit. With
    /// [`ClaimMode::Inline`] an agent job is answered there and then by the
    /// inline agent (the built-in one, which needs no I/O), durably, with
    /// no lease; a delivery comes with its outbound message, and waits (out
    /// of the FIFO's way) while an earlier message to the same customer is
    /// still queued. [`ClaimMode::Plain`] only claims, for a job about to
    /// be given up.
    pub async fn claim_for_worker(
        &self,
        shard: u32,
        found: &JobRef,
        now_ms: u64,
        lease_ms: u64,
        history: usize,
        mode: ClaimMode<'_>,
    ) -> Result<Option<Claimed>, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let Some(job) = queue::claim_in(ctx, txn, shard, found, now_ms, lease_ms).await?
                else {
                    return Ok(None);
                };
                let inline = match mode {
                    ClaimMode::Plain => {
                        txn.relax_durability();
                        return Ok(Some(Claimed::Job {
                            job,
                            outbound: None,
                        }));
                    }
                    ClaimMode::Inline(agent) => Some(agent),
                    ClaimMode::Normal => None,
                };
                match (&job.kind, inline) {
                    (JobKind::Agent { customer_id, .. }, Some(agent)) => {
                        let input = agent_input_in(ctx, txn, &job, history).await?;
                        let answer = if input.handed_off {
                            Answer::default()
                        } else {
                            agent(&input)
                        };
                        let step = finish_agent_in(ctx, txn, shard, &job, &answer, now_ms).await?;
                        let customer_id = ctx.live_customer(txn, customer_id).await?.id;
                        Ok(Some(Claimed::Answered { customer_id, step }))
                    }
                    (JobKind::Deliver { outbound_id }, _) => {
                        txn.relax_durability();
                        let outbound = match ctx.load_outbound(txn, outbound_id).await {
                            Ok(o) => Some(Box::new(o)),
                            // The worker gives the job up, saying so.
                            Err(DbError::NotFound(_)) => None,
                            Err(e) => return Err(e),
                        };
                        if let Some(o) = &outbound {
                            // One customer's messages go out in the order they
                            // were queued: wait for the ones before this.
                            let mut state = ctx.load_state(txn, &o.customer_id).await?;
                            if state.outbox.contains(&o.id) {
                                let mut healed = false;
                                while let Some(first) = state.outbox.first().cloned()
                                    && first != o.id
                                {
                                    let pending = match ctx.load_outbound(txn, &first).await {
                                        Ok(p) => p.state == OutboundState::Queued,
                                        Err(e) if e.is_transient() => return Err(e),
                                        // Gone or unreadable: it will never go.
                                        Err(_) => false,
                                    };
                                    if pending {
                                        // Not this one's turn: out of the FIFO's
                                        // way (no attempt counted) until then.
                                        txn.discard();
                                        txn.relax_durability();
                                        if let Some(mut waiting) =
                                            ctx.load_job(txn, &found.id).await?
                                        {
                                            ctx.postpone(
                                                txn,
                                                shard,
                                                &mut waiting,
                                                now_ms + ORDER_RECHECK_MS,
                                            )
                                            .await?;
                                        }
                                        return Ok(None);
                                    }
                                    // Done with but left listed: not a reason
                                    // to hold the rest back.
                                    state.outbox.remove(0);
                                    healed = true;
                                }
                                if healed {
                                    ctx.save_state(txn, &o.customer_id, &state)?;
                                }
                            }
                        }
                        Ok(Some(Claimed::Job { job, outbound }))
                    }
                    _ => {
                        txn.relax_durability();
                        Ok(Some(Claimed::Job {
                            job,
                            outbound: None,
                        }))
                    }
                }
            })
        })
        .await
    }

    /// A claimed job's attempt failed with `error`: retried after
    /// `delay_ms` if `Some`, else given up — an agent job becomes a
    /// hand-off (`agent_unavailable`), a delivery fails and becomes one
    /// (`delivery_failed`), a reminder is dropped (recorded on the
    /// timeline). Never silently.
    pub async fn fail(
        &self,
        shard: u32,
        job: &Job,
        error: &str,
        delay_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Step, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                if !ctx.still_ours(txn, job).await? {
                    return Ok(Step::Lost);
                }
                if let Some(delay) = delay_ms {
                    let due = now_ms + delay;
                    let mut stored = job.clone();
                    stored.last_error = Some(error.to_string());
                    ctx.postpone(txn, shard, &mut stored, due).await?;
                    return Ok(Step::Retry(due));
                }
                let at = now_ms / 1000;
                // Say so where people will see it; if what it would be said
                // about is gone (an erased customer, …), the job goes anyway.
                let said: Result<(), DbError> = async {
                    match &job.kind {
                        JobKind::Agent {
                            customer_id, route, ..
                        } => {
                            let c = ctx.live_customer(txn, customer_id).await?;
                            let mut state = ctx.load_state(txn, &c.id).await?;
                            ctx.open_handoff(
                                txn,
                                &c.id,
                                &mut state,
                                "agent_unavailable",
                                Some(error.to_string()),
                                &route.identity.channel,
                                at,
                            )
                            .await?;
                            ctx.save_state(txn, &c.id, &state)?;
                        }
                        JobKind::Deliver { outbound_id } => {
                            let mut o = ctx.load_outbound(txn, outbound_id).await?;
                            o.state = OutboundState::Failed;
                            o.error = Some(error.to_string());
                            o.updated_at = at;
                            ctx.sent_from_outbox(txn, &o).await?;
                            ctx.save_outbound(txn, &o).await?;
                            let c = ctx.live_customer(txn, &o.customer_id).await?;
                            let mut state = ctx.load_state(txn, &c.id).await?;
                            let channel = o
                                .routes
                                .get(o.route)
                                .map(|r| r.identity.channel.clone())
                                .unwrap_or_default();
                            ctx.open_handoff(
                                txn,
                                &c.id,
                                &mut state,
                                "delivery_failed",
                                Some(error.to_string()),
                                &channel,
                                at,
                            )
                            .await?;
                            ctx.save_state(txn, &c.id, &state)?;
                        }
                        JobKind::Reminder { customer_id, .. } => {
                            let c = ctx.live_customer(txn, customer_id).await?;
                            let mut entry = Entry::event(
                                "reminder_failed",
                                serde_json::json!({"error": error}),
                                at,
                            );
                            entry.channel = "gateway".into();
                            ctx.append(txn, &c.id, entry).await?;
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = said
                    && e.is_transient()
                {
                    return Err(e);
                }
                ctx.remove_job(txn, shard, &job.id).await?;
                Ok(Step::GaveUp)
            })
        })
        .await
    }
}

/// How often a widget session opening gives the agent a turn: once a day.
pub const SESSION_OPENED_EVERY_SECONDS: u64 = 86_400;

impl<B: Backend> Db<B> {
    /// What is still to go out to customer `id` (and those merged into
    /// it): outbound messages not yet sent, and scheduled reminders with
    /// their jobs (for the export).
    pub async fn queued_for(&self, id: &str) -> Result<(Vec<Outbound>, Vec<Job>), DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let live = ctx.live_customer(txn, id).await?;
                let (mut outbound, mut reminders) = (Vec::new(), Vec::new());
                for m in ctx.group_of(txn, &live).await? {
                    let state = ctx.load_state(txn, &m.id).await?;
                    for oid in &state.outbox {
                        match ctx.load_outbound(txn, oid).await {
                            Ok(o) => outbound.push(o),
                            Err(DbError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    for jid in &state.reminders {
                        reminders.extend(ctx.load_job(txn, jid).await?);
                    }
                }
                Ok((outbound, reminders))
            })
        })
        .await
    }
}

impl<B: Backend> Db<B> {
    /// A widget session opened for `customer_id` (as `identity`): when the
    /// customer has written on another channel and no session opened in
    /// the last day, records a `session_opened` event on the timeline and
    /// queues the agent's turn on it, in one unit — the agent may greet
    /// with what was said elsewhere. Returns whether a turn was queued.
    pub async fn widget_session_opened(
        &self,
        customer_id: &str,
        identity: &crate::channel::ChannelIdentity,
        now_ms: u64,
    ) -> Result<bool, DbError> {
        let at = now_ms / 1000;
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let customer = ctx.live_customer(txn, customer_id).await?;
                let mut state = ctx.load_state(txn, &customer.id).await?;
                let recently = state
                    .widget_opened_at
                    .is_some_and(|t| at.saturating_sub(t) < SESSION_OPENED_EVERY_SECONDS);
                let elsewhere = state.routes.keys().any(|c| c != &identity.channel);
                if recently || !elsewhere || state.handoff.is_some() {
                    return Ok(false);
                }
                state.widget_opened_at = Some(at);
                ctx.save_state(txn, &customer.id, &state)?;
                let event = Entry::event(
                    "session_opened",
                    serde_json::json!({"channel": identity.channel}),
                    at,
                );
                let (event, _) = ctx.append(txn, &customer.id, event).await?;
                let route = Route {
                    identity: identity.clone(),
                    reply_handle: None,
                    at,
                };
                ctx.enqueue(
                    txn,
                    shard_of(&customer.id),
                    JobKind::Agent {
                        customer_id: customer.id.clone(),
                        entry_id: event.id,
                        route,
                    },
                    0,
                    now_ms,
                )
                .await?;
                Ok(true)
            })
        })
        .await
    }
}
