//! The agent's turn: what it is given, and its answer turned into outbound
//! messages, timeline entries and delivery jobs in one unit.

use std::collections::BTreeMap;

use super::*;
use crate::conversation::Entry;
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::delivery::{Job, JobKind};
use crate::store::{Backend, Txn};

/// The agent's answer to one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Replies, sent in order on the channel the message came from
    /// (degraded there to what the channel takes).
    pub replies: Vec<crate::channel::OutboundContent>,
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

/// What the agent needs to answer `job` (see [`Db::agent_input`]).
pub(crate) async fn agent_input_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    job: &Job,
    history: usize,
) -> Result<AgentInput, DbError> {
    let JobKind::Agent {
        customer_id,
        entry_id,
        ..
    } = &job.kind
    else {
        return Err(DbError::Invalid(format!("{} is not an agent job", job.id)));
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
        .ok_or_else(|| DbError::NotFound(format!("timeline entry {entry_id}")))?;
    let handed_off = ctx.load_state(txn, &customer.id).await?.handoff.is_some();
    Ok(AgentInput {
        customer,
        incoming,
        history,
        handed_off,
    })
}

/// Acts on an agent's answer (see [`Db::finish_agent`]).
pub(crate) async fn finish_agent_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    shard: u32,
    job: &Job,
    answer: &Answer,
    now_ms: u64,
) -> Result<Step, DbError> {
    let JobKind::Agent {
        customer_id, route, ..
    } = &job.kind
    else {
        return Err(DbError::Invalid(format!("{} is not an agent job", job.id)));
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
            ctx.save_customer(txn, &customer)?;
            if answer.attributes.contains_key(crate::analytics::CONSENT) {
                ctx.analytics_consent(txn, &customer).await?;
            }
        }
        for content in answer
            .replies
            .iter()
            .filter(|c| !c.as_text().trim().is_empty())
        {
            ctx.queue_outbound(
                txn,
                &customer.id,
                &mut state,
                content,
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
    ctx.save_state(txn, &customer.id, &state)?;
    ctx.remove_job(txn, shard, &job.id).await?;
    Ok(Step::Done)
}

impl<B: Backend> Db<B> {
    /// What the agent needs to answer an agent job: the customer now, the
    /// message, and the last `history` entries of the unified timeline (the
    /// whole of it if the message is older than that).
    pub async fn agent_input(&self, job: &Job, history: usize) -> Result<AgentInput, DbError> {
        self.read_unit(move |ctx, txn| Box::pin(agent_input_in(ctx, txn, job, history)))
            .await
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
    ) -> Result<Step, DbError> {
        self.unit(move |ctx, txn| Box::pin(finish_agent_in(ctx, txn, shard, job, answer, now_ms)))
            .await
    }
}
