//! What happens after an inbound message is stored, as decisions over the
//! store: the durable job queue, the agent's answer turned into outbound
//! messages, deliveries and their statuses, hand-offs, and abandoned-cart
//! reminders under consent and a frequency cap.
//!
//! Everything here is a unit of work on the same store as the identity
//! graph, so each step is atomic with what it decides: an inbound message
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

use std::collections::BTreeMap;

use crate::channel::{DeliveryState, DeliveryStatus, InboundMessage};
use crate::conversation::state::{ConversationState, Route};
use crate::conversation::{Direction, Entry};
use crate::delivery::{Job, JobKind, JobRef, Outbound, OutboundState, SHARDS, shard_of};

mod queue;
use crate::identity::graph::{Ctx, Customer, Graph, GraphError, unit};
use crate::store::{Backend, BoxFuture, StoreError, Txn, get};
pub use queue::WINDOW;

/// The agent's answer to one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Replies, sent in order on the channel the message came from.
    pub replies: Vec<String>,
    /// Hand the conversation to a person, with this reason.
    pub handoff: Option<String>,
    /// Attributes to set on the customer (source `agent`).
    pub attributes: BTreeMap<String, String>,
}

/// What an agent gets to answer one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInput {
    /// The customer as they stand now.
    pub customer: Customer,
    /// The message to answer.
    pub incoming: Entry,
    /// The unified timeline, oldest first (the message included).
    pub history: Vec<Entry>,
    /// Whether a person has the conversation: the agent stays silent.
    pub handed_off: bool,
}

/// An agent that answers without I/O (the built-in one), run inside the
/// claiming unit.
pub type InlineAgent = dyn Fn(&AgentInput) -> Answer + Send + Sync;

/// How the worker claims a job (see [`Graph::claim_for_worker`]).
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

/// Why a reminder was not sent (recorded on the timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A purchase came after the abandoned cart.
    Purchased,
    /// The customer has not granted marketing consent.
    NoConsent,
    /// A proactive message already went out within the day.
    FrequencyCap,
    /// No channel the customer can be reached on.
    NoChannel,
}

impl Skip {
    /// Its name on the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Purchased => "purchased",
            Skip::NoConsent => "no_consent",
            Skip::FrequencyCap => "frequency_cap",
            Skip::NoChannel => "no_channel",
        }
    }
}

/// Settings for reminders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRules {
    /// Proactive messages per customer per rolling day, all channels.
    pub per_day: u32,
    /// Channels to try, best first, after the customer's preferred one.
    pub channel_priority: Vec<String>,
}

/// An open hand-off, for the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHandoff {
    /// The customer (their one conversation across channels).
    pub customer_id: String,
    /// The hand-off.
    pub handoff: crate::conversation::state::Handoff,
}

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

/// The attribute naming a customer's preferred channel.
pub const PREFERRED_CHANNEL: &str = "preferred_channel";
/// The attribute holding marketing consent: `granted` or `denied`.
pub const MARKETING_CONSENT: &str = "consent.marketing";

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
    async fn load_state(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
    ) -> Result<ConversationState, GraphError> {
        self.open_or_default(txn, &self.k().conversation(customer))
            .await
    }

    fn save_state(&self, txn: &mut dyn Txn, customer: &str, state: &ConversationState) {
        let key = self.k().conversation(customer);
        txn.put(&key, self.seal(&key, state));
    }

    /// Adds or removes `customer` in the inbox index.
    async fn index_handoff(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        open: bool,
    ) -> Result<(), GraphError> {
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
        txn.put(&key, self.seal(&key, &ids));
        Ok(())
    }

    /// Opens (or adds to) a hand-off and lists it in the inbox.
    #[allow(clippy::too_many_arguments, reason = "the hand-off's fields")]
    async fn open_handoff(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        state: &mut ConversationState,
        reason: &str,
        detail: Option<String>,
        channel: &str,
        at: u64,
    ) -> Result<(), GraphError> {
        state.hand_off(reason, detail, channel, at);
        self.index_handoff(txn, customer, true).await
    }

    /// Stores an outbound message, its timeline entry and the job that
    /// delivers it.
    #[allow(clippy::too_many_arguments, reason = "the message's parts")]
    async fn queue_outbound(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        state: &mut ConversationState,
        text: &str,
        author: &str,
        routes: Vec<Route>,
        now_ms: u64,
    ) -> Result<Outbound, GraphError> {
        let at = now_ms / 1000;
        let channel = routes
            .first()
            .map(|r| r.identity.channel.clone())
            .unwrap_or_default();
        let (_, entry_key) = self
            .append(txn, customer, Entry::outbound(&channel, text, author, at))
            .await?;
        let outbound = Outbound {
            id: self.random_id("o"),
            customer_id: customer.to_string(),
            text: text.to_string(),
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
        txn.put(&key, self.seal(&key, &outbound));
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

    async fn load_outbound(&self, txn: &mut dyn Txn, id: &str) -> Result<Outbound, GraphError> {
        let key = self.k().outbound(id);
        let bytes = get(txn, &key)
            .await?
            .ok_or_else(|| GraphError::NotFound(format!("outbound message {id}")))?;
        self.open(&key, &bytes)
    }

    /// Saves an outbound message and mirrors its state (and channel) on
    /// its timeline entry.
    async fn save_outbound(&self, txn: &mut dyn Txn, o: &Outbound) -> Result<(), GraphError> {
        let key = self.k().outbound(&o.id);
        txn.put(&key, self.seal(&key, o));
        if let Some(bytes) = get(txn, &o.entry_key).await? {
            let mut entry: Entry = self.open(&o.entry_key, &bytes)?;
            entry.status = Some(o.state.as_str().to_string());
            if let Some(r) = o.routes.get(o.route) {
                entry.channel = r.identity.channel.clone();
            }
            txn.put(&o.entry_key, self.seal(&o.entry_key, &entry));
        }
        Ok(())
    }

    /// Takes a message that is done with (sent or failed) off its
    /// customer's outbox, letting the next one go.
    async fn sent_from_outbox(&self, txn: &mut dyn Txn, o: &Outbound) -> Result<(), GraphError> {
        let mut state = self.load_state(txn, &o.customer_id).await?;
        if state.outbox.contains(&o.id) {
            state.outbox.retain(|id| *id != o.id);
            self.save_state(txn, &o.customer_id, &state);
        }
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
    ) -> Result<(), GraphError> {
        let keys = [
            self.k().timeline_seq(customer),
            self.k().conversation(customer),
            self.k().queue_seq(shard_of(customer)),
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
    ) -> Result<(), GraphError> {
        let mut state = self.load_state(txn, customer).await?;
        state.saw(&m.sender, m.reply_handle.as_deref(), m.timestamp);
        self.save_state(txn, customer, &state);
        if entry.kind != "reaction" && !m.edited {
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

/// What the agent needs to answer `job` (see [`Graph::agent_input`]).
async fn agent_input_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    job: &Job,
    history: usize,
) -> Result<AgentInput, GraphError> {
    let JobKind::Agent {
        customer_id,
        entry_id,
        ..
    } = &job.kind
    else {
        return Err(GraphError::Invalid(format!(
            "{} is not an agent job",
            job.id
        )));
    };
    let customer = ctx.live_customer(txn, customer_id).await?;
    let mut history = ctx.timeline_tail(txn, &customer, history).await?;
    if !history.iter().any(|e| e.id == *entry_id) {
        history = ctx.timeline_of(txn, &customer).await?;
    }
    let incoming = history
        .iter()
        .find(|e| e.id == *entry_id)
        .cloned()
        .ok_or_else(|| GraphError::NotFound(format!("timeline entry {entry_id}")))?;
    let handed_off = ctx.load_state(txn, &customer.id).await?.handoff.is_some();
    Ok(AgentInput {
        customer,
        incoming,
        history,
        handed_off,
    })
}

/// Acts on an agent's answer (see [`Graph::finish_agent`]).
async fn finish_agent_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    shard: u32,
    job: &Job,
    answer: &Answer,
    now_ms: u64,
) -> Result<Step, GraphError> {
    let JobKind::Agent {
        customer_id, route, ..
    } = &job.kind
    else {
        return Err(GraphError::Invalid(format!(
            "{} is not an agent job",
            job.id
        )));
    };
    if !ctx.still_ours(txn, job).await? {
        return Ok(Step::Lost);
    }
    let at = now_ms / 1000;
    let mut customer = ctx.live_customer(txn, customer_id).await?;
    let mut state = ctx.load_state(txn, &customer.id).await?;
    let channel = route.identity.channel.as_str();
    if state.handoff.is_some() {
        ctx.open_handoff(
            txn,
            &customer.id,
            &mut state,
            "requested",
            None,
            channel,
            at,
        )
        .await?;
    } else {
        if !answer.attributes.is_empty() {
            for (k, v) in &answer.attributes {
                customer.set_attribute(k, v, "agent", at);
            }
            ctx.save_customer(txn, &customer);
        }
        for text in answer.replies.iter().filter(|t| !t.trim().is_empty()) {
            ctx.queue_outbound(
                txn,
                &customer.id,
                &mut state,
                text,
                "agent",
                vec![route.clone()],
                now_ms,
            )
            .await?;
        }
        if let Some(reason) = &answer.handoff {
            ctx.open_handoff(txn, &customer.id, &mut state, reason, None, channel, at)
                .await?;
        }
    }
    ctx.save_state(txn, &customer.id, &state);
    ctx.remove_job(txn, shard, &job.id).await?;
    Ok(Step::Done)
}

fn consent_granted(c: &Customer) -> bool {
    c.attributes
        .get(MARKETING_CONSENT)
        .is_some_and(|a| a.value == "granted")
}

impl<B: Backend> Graph<B> {
    /// What the agent needs to answer an agent job: the customer now, the
    /// message, and the last `history` entries of the unified timeline (the
    /// whole of it if the message is older than that).
    pub async fn agent_input(&self, job: &Job, history: usize) -> Result<AgentInput, GraphError> {
        unit!(read self, |ctx, txn| agent_input_in(ctx, txn, job, history))
    }

    /// Acts on the agent's answer to a claimed agent job, atomically:
    /// attributes, replies (timeline entries and delivery jobs) or a
    /// hand-off, and the job's removal. While a hand-off is open the
    /// message only counts as waiting on it.
    pub async fn finish_agent(
        &self,
        shard: u32,
        job: &Job,
        answer: &Answer,
        now_ms: u64,
    ) -> Result<Step, GraphError> {
        unit!(self, |ctx, txn| finish_agent_in(
            ctx, txn, shard, job, answer, now_ms
        ))
    }

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
    ) -> Result<Option<Claimed>, GraphError> {
        unit!(self, |ctx, txn| async move {
            let Some(job) = queue::claim_in(ctx, txn, shard, found, now_ms, lease_ms).await? else {
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
                        Err(GraphError::NotFound(_)) => None,
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
                                    if let Some(mut waiting) = ctx.load_job(txn, &found.id).await? {
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
                                ctx.save_state(txn, &o.customer_id, &state);
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
    ) -> Result<Step, GraphError> {
        unit!(self, |ctx, txn| async move {
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
            let said: Result<(), GraphError> = async {
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
                        ctx.save_state(txn, &c.id, &state);
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
                        ctx.save_state(txn, &c.id, &state);
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
    }

    /// The outbound message a delivery job delivers.
    pub async fn outbound(&self, id: &str) -> Result<Outbound, GraphError> {
        unit!(read self, |ctx, txn| ctx.load_outbound(txn, id))
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
    ) -> Result<Step, GraphError> {
        let JobKind::Deliver { outbound_id } = &job.kind else {
            return Err(GraphError::Invalid(format!("{} is not a delivery", job.id)));
        };
        unit!(self, |ctx, txn| async move {
            if !ctx.still_ours(txn, job).await? {
                return Ok(Step::Lost);
            }
            let mut o = ctx.load_outbound(txn, outbound_id).await?;
            o.state = o.state.max(OutboundState::Sent);
            o.updated_at = now_ms / 1000;
            o.provider_message_id = provider_message_id.map(String::from);
            if let (Some(pid), Some(route)) = (provider_message_id, o.routes.get(o.route)) {
                let key = ctx.k().provider_id(&route.identity.channel, pid);
                txn.put(&key, o.id.as_bytes().to_vec());
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
    ) -> Result<Step, GraphError> {
        let JobKind::Deliver { outbound_id } = &job.kind else {
            return Err(GraphError::Invalid(format!("{} is not a delivery", job.id)));
        };
        let moved: bool = unit!(self, |ctx, txn| async move {
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
        })?;
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
    ) -> Result<bool, GraphError> {
        let reported = match status.state {
            DeliveryState::Sent => OutboundState::Sent,
            DeliveryState::Delivered => OutboundState::Delivered,
            DeliveryState::Read => OutboundState::Read,
            DeliveryState::Failed => OutboundState::Failed,
        };
        unit!(self, |ctx, txn| async move {
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
                    ctx.seal(&early_key, &kept),
                    crate::store::Expiry::until(
                        status.timestamp.saturating_add(EARLY_STATUS_KEPT_SECONDS),
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
    }

    /// Records a business event on the customer's timeline. A
    /// `cart_abandoned` schedules a reminder `reminder_after_ms` later; a
    /// `purchase` cancels the reminders pending.
    pub async fn record_event(
        &self,
        customer_id: &str,
        entry: &Entry,
        reminder_after_ms: u64,
        now_ms: u64,
    ) -> Result<Entry, GraphError> {
        unit!(self, |ctx, txn| async move {
            let c = ctx.live_customer(txn, customer_id).await?;
            let (stored, _) = ctx.append(txn, &c.id, entry.clone()).await?;
            match entry.kind.as_str() {
                "cart_abandoned" => {
                    let mut state = ctx.load_state(txn, &c.id).await?;
                    let job = ctx
                        .enqueue(
                            txn,
                            shard_of(&c.id),
                            JobKind::Reminder {
                                customer_id: c.id.clone(),
                                abandoned_at: entry.at,
                            },
                            now_ms + reminder_after_ms,
                            now_ms,
                        )
                        .await?;
                    state.reminders.push(job);
                    ctx.save_state(txn, &c.id, &state);
                }
                "purchase" => {
                    let mut state = ctx.load_state(txn, &c.id).await?;
                    for job in std::mem::take(&mut state.reminders) {
                        ctx.remove_job(txn, shard_of(&c.id), &job).await?;
                    }
                    ctx.save_state(txn, &c.id, &state);
                }
                _ => {}
            }
            Ok(stored)
        })
    }

    /// Runs a claimed reminder job: sends the reminder `text(name)` on the
    /// customer's preferred channel (else by `rules.channel_priority`)
    /// unless a purchase came since, consent is missing, or the frequency
    /// cap is reached — each recorded on the timeline as
    /// `reminder_skipped` with its reason. `None` if the job was no longer
    /// this claimer's.
    pub async fn run_reminder(
        &self,
        shard: u32,
        job: &Job,
        rules: &ReminderRules,
        text: &(dyn Fn(Option<&str>) -> String + Send + Sync),
        now_ms: u64,
    ) -> Result<Option<Result<Outbound, Skip>>, GraphError> {
        let JobKind::Reminder {
            customer_id,
            abandoned_at,
        } = &job.kind
        else {
            return Err(GraphError::Invalid(format!("{} is not a reminder", job.id)));
        };
        unit!(self, |ctx, txn| async move {
            if !ctx.still_ours(txn, job).await? {
                return Ok(None);
            }
            let at = now_ms / 1000;
            let c = ctx.live_customer(txn, customer_id).await?;
            let mut state = ctx.load_state(txn, &c.id).await?;
            state.reminders.retain(|j| *j != job.id);
            ctx.remove_job(txn, shard, &job.id).await?;
            let history = ctx.timeline_of(txn, &c).await?;
            let purchased = history.iter().any(|e| {
                e.direction == Direction::Event && e.kind == "purchase" && e.at >= *abandoned_at
            });
            let preferred = c
                .attributes
                .get(PREFERRED_CHANNEL)
                .map(|a| a.value.as_str());
            let mut routes: Vec<Route> = state.routes.values().cloned().collect();
            let rank = |ch: &str| {
                if Some(ch) == preferred {
                    0
                } else {
                    1 + rules
                        .channel_priority
                        .iter()
                        .position(|p| p == ch)
                        .unwrap_or(rules.channel_priority.len())
                }
            };
            routes.sort_by_key(|r| (rank(&r.identity.channel), std::cmp::Reverse(r.at)));
            let skip = if purchased {
                Some(Skip::Purchased)
            } else if !consent_granted(&c) {
                Some(Skip::NoConsent)
            } else if !state.may_send_proactive(rules.per_day, at) {
                Some(Skip::FrequencyCap)
            } else if routes.is_empty() {
                Some(Skip::NoChannel)
            } else {
                None
            };
            if let Some(skip) = skip {
                let mut entry = Entry::event(
                    "reminder_skipped",
                    serde_json::json!({"reason": skip.as_str()}),
                    at,
                );
                entry.channel = "gateway".into();
                ctx.append(txn, &c.id, entry).await?;
                ctx.save_state(txn, &c.id, &state);
                return Ok(Some(Err(skip)));
            }
            // A reminder answers no message: reply handles do not apply.
            for r in &mut routes {
                r.reply_handle = None;
            }
            let name = c.attributes.get("name").map(|a| a.value.as_str());
            let o = ctx
                .queue_outbound(
                    txn,
                    &c.id,
                    &mut state,
                    &text(name),
                    "reminder",
                    routes,
                    now_ms,
                )
                .await?;
            state.sent_proactive(at);
            ctx.save_state(txn, &c.id, &state);
            Ok(Some(Ok(o)))
        })
    }

    /// Open hand-offs, oldest first.
    pub async fn handoffs(&self) -> Result<Vec<OpenHandoff>, GraphError> {
        unit!(read self, |ctx, txn| async move {
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
    }

    /// A person's reply to a customer: queued on the customer's preferred
    /// channel, else the one they used most recently (falling through to
    /// the next if the plugin cannot deliver there).
    pub async fn reply_as_human(
        &self,
        customer_id: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<Outbound, GraphError> {
        unit!(self, |ctx, txn| async move {
            let c = ctx.live_customer(txn, customer_id).await?;
            let mut state = ctx.load_state(txn, &c.id).await?;
            let preferred = c
                .attributes
                .get(PREFERRED_CHANNEL)
                .map(|a| a.value.as_str());
            let routes = state.reply_routes(preferred);
            if routes.is_empty() {
                return Err(GraphError::Invalid(format!(
                    "{} has not written on any channel yet: there is nowhere to reply",
                    c.id
                )));
            }
            let o = ctx
                .queue_outbound(txn, &c.id, &mut state, text, "human", routes, now_ms)
                .await?;
            ctx.save_state(txn, &c.id, &state);
            Ok(o)
        })
    }

    /// Closes the customer's hand-off: the agent answers again. `false` if
    /// none was open.
    pub async fn close_handoff(&self, customer_id: &str) -> Result<bool, GraphError> {
        unit!(self, |ctx, txn| async move {
            let c = ctx.live_customer(txn, customer_id).await?;
            let mut state = ctx.load_state(txn, &c.id).await?;
            let was_open = state.handoff.take().is_some();
            if was_open {
                ctx.save_state(txn, &c.id, &state);
            }
            ctx.index_handoff(txn, &c.id, false).await?;
            Ok(was_open)
        })
    }
}
