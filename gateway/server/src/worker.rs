//! Drives the durable job queue ([`chatcrafter_core::jobs`]): asks the
//! agent to answer stored messages, delivers outbound messages through the
//! channel's plugin and API, and runs due reminders. Every step is claimed
//! with a lease and ends in one atomic unit, so a crash at any point is
//! resumed (by this node restarted, or another) once the lease runs out.
//!
//! Jobs of one customer share a queue shard; shards run concurrently, and
//! a customer's outbound messages are claimed only in the order they were
//! queued (core keeps their outbox). New jobs on this node start at once
//! (the inbound pipeline wakes the worker); others are found by polling
//! every `poll_ms`.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use chatcrafter_core::agent;
use chatcrafter_core::channel::{
    ChannelError, OutboundContext, OutboundMessage, OutboundRequest, Purpose,
};
use chatcrafter_core::config::AgentKind;
use chatcrafter_core::db::DbError;
use chatcrafter_core::delivery::Outbound;
use chatcrafter_core::delivery::{self, Job, JobKind, JobRef, Policy, Verdict};
use chatcrafter_core::jobs::{AgentInput, Answer, ClaimMode, Claimed, ReminderRules, Step};
use chatcrafter_core::store::Backend as _;
use tokio::sync::Notify;

use crate::app::App;
use crate::outbound::HttpClient;
use crate::plugin::PluginError;

/// The shortest gap between two looks at the queue.
const COALESCE: Duration = Duration::from_millis(5);

/// How many recent timeline entries an agent's answer is computed from.
const AGENT_LOOKBACK: usize = 50;

/// The queue worker.
#[derive(Debug)]
pub struct Worker {
    app: Arc<App>,
    client: HttpClient,
    wake: Arc<Notify>,
}

/// What a failure's text says happened, without what the other side said:
/// failure texts put the former before the first `": "` (`POST
/// https://… answered 400`) and the latter after it (a channel API's or an
/// agent's body, which may quote a person's number or words). The whole
/// text is kept with the job, sealed; only the summary is logged.
fn summary(error: &str) -> &str {
    error.split(": ").next().unwrap_or(error)
}

/// Why one step failed: retried (with backoff) or given up at once.
#[derive(Debug)]
enum Failure {
    /// Worth another attempt.
    Transient(String),
    /// Another attempt would change nothing.
    Permanent(String),
}

impl Worker {
    /// A worker for `app`, woken by `wake` when this node queues a job.
    pub fn new(app: Arc<App>, wake: Arc<Notify>) -> Self {
        Worker {
            app,
            client: HttpClient::new(),
            wake,
        }
    }

    fn policy(&self) -> Policy {
        let d = &self.app.config.delivery;
        Policy {
            max_attempts: d.max_attempts,
            base_delay_ms: d.backoff_base_ms,
            max_delay_ms: d.backoff_max_ms,
            lease_ms: d.lease_ms,
        }
    }

    fn agent_policy(&self) -> Policy {
        Policy {
            max_attempts: self.app.config.agent.max_attempts,
            ..self.policy()
        }
    }

    /// Runs until the task is dropped: each round finds the due jobs (one
    /// read of the queue's index) and hands each shard's to that shard's
    /// runner, unless the shard is still busy with its previous ones — so a
    /// slow channel API holds up only its own shard.
    pub async fn run(self) {
        let this = Arc::new(self);
        let busy: Arc<Vec<std::sync::atomic::AtomicBool>> = Arc::new(
            (0..delivery::SHARDS)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
        );
        let poll = Duration::from_millis(this.app.config.delivery.poll_ms);
        loop {
            // Register for a wake-up before looking, so that a job queued
            // while this round runs is not slept through.
            let woken = this.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match this.app.db.due_jobs(this.app.clock.now_ms()).await {
                Ok(due) => {
                    let mut by_shard: std::collections::BTreeMap<u32, Vec<JobRef>> =
                        Default::default();
                    for (shard, r) in due {
                        by_shard.entry(shard).or_default().push(r);
                    }
                    for (shard, refs) in by_shard {
                        let flag = &busy[shard as usize];
                        if flag.swap(true, std::sync::atomic::Ordering::AcqRel) {
                            continue;
                        }
                        let (this, busy) = (this.clone(), busy.clone());
                        tokio::spawn(async move {
                            let mut ran = false;
                            for r in refs {
                                ran |= this.run_job(shard, &r).await;
                            }
                            busy[shard as usize].store(false, std::sync::atomic::Ordering::Release);
                            if ran {
                                // Its jobs may have queued more (a reply's
                                // delivery): look again at once.
                                this.wake.notify_one();
                            }
                        });
                    }
                }
                Err(e) => tracing::warn!("job queue unavailable: {e}"),
            }
            // Wake-ups within a few milliseconds share one look at the
            // queue: under load every stored message wakes the worker.
            tokio::time::sleep(COALESCE).await;
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Claims and runs one job, in its span (job id, kind, customer id once
    /// known; never a phone, email or text); `false` if it was not ours.
    async fn run_job(&self, shard: u32, found: &JobRef) -> bool {
        let span = tracing::info_span!(
            "job",
            job = %found.id,
            kind = tracing::field::Empty,
            customer_id = tracing::field::Empty,
        );
        self.claim_and_run(shard, found).instrument(span).await
    }

    async fn claim_and_run(&self, shard: u32, found: &JobRef) -> bool {
        let graph = &self.app.db;
        let now = self.app.clock.now_ms();
        let id = found.id.as_str();
        let lease = self.policy().lease_ms;
        let history = self.app.config.agent.history.max(AGENT_LOOKBACK);
        let mode = if self.app.config.agent.kind == AgentKind::Builtin {
            ClaimMode::Inline(&builtin_answer)
        } else {
            ClaimMode::Normal
        };
        let mut claimed = graph
            .claim_for_worker(shard, found, now, lease, history, mode)
            .await;
        let mut give_up = None;
        if let Err(e) = &claimed
            && !e.is_transient()
        {
            if matches!(e, DbError::UnreadableJob { .. }) {
                // The job's own record does not open: it can never run.
                // Said loudly and removed, rather than found due forever.
                tracing::error!(job = id, "dropping a job that cannot be read: {e}");
                self.app.metrics.inc("gateway_jobs_dropped_total", &[]);
                if let Err(e) = graph.drop_job(shard, found).await {
                    tracing::warn!(job = id, "dropping the job failed: {e}");
                }
                return true;
            }
            // Something it needs will not change by retrying (its unit
            // wrote nothing): claim the job alone and give it up, onto the
            // hand-off inbox.
            give_up = Some(e.to_string());
            claimed = graph
                .claim_for_worker(shard, found, now, lease, history, ClaimMode::Plain)
                .await;
        }
        let span = tracing::Span::current();
        let (job, outbound) = match claimed {
            Ok(Some(Claimed::Job { job, outbound })) => {
                span.record("kind", tracing::field::display(job.kind.as_str()));
                let customer = job
                    .kind
                    .customer_id()
                    .or(outbound.as_ref().map(|o| o.customer_id.as_str()));
                if let Some(c) = customer {
                    span.record("customer_id", tracing::field::display(c));
                }
                (job, outbound)
            }
            Ok(Some(Claimed::Answered { customer_id, step })) => {
                span.record("kind", tracing::field::display("agent"));
                span.record("customer_id", tracing::field::display(&customer_id));
                tracing::debug!(job = id, ?step, "answered");
                if step == Step::Done {
                    self.answered(customer_id).await;
                }
                return true;
            }
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(job = id, "claiming a job failed: {e}");
                return false;
            }
        };
        let result = match (&job.kind, outbound, give_up) {
            (_, _, Some(why)) => {
                self.failed(shard, &job, Failure::Permanent(why), self.policy())
                    .await
            }
            (JobKind::Agent { .. }, _, None) => self.answer(shard, &job).await,
            (JobKind::Deliver { .. }, Some(o), None) => self.deliver(shard, &job, *o).await,
            (JobKind::Deliver { outbound_id }, None, None) => {
                let why = format!("outbound message {outbound_id} is missing");
                self.failed(shard, &job, Failure::Permanent(why), self.policy())
                    .await
            }
            (JobKind::Reminder { .. }, _, None) => self.remind(shard, &job).await,
        };
        match result {
            Ok(step) => {
                tracing::debug!(job = id, ?step, "job step");
            }
            Err(e) => {
                // The store failed mid-step: the lease brings the job back.
                tracing::warn!(job = id, "job step failed, retried after its lease: {e}");
            }
        }
        true
    }

    /// Ends a failed attempt: retried with backoff while attempts remain,
    /// else given up onto the hand-off inbox.
    async fn failed(
        &self,
        shard: u32,
        job: &Job,
        failure: Failure,
        policy: Policy,
    ) -> Result<Step, DbError> {
        let (error, delay) = match failure {
            Failure::Transient(e) => {
                let delay = policy.retry_delay(job.attempts);
                (e, delay)
            }
            Failure::Permanent(e) => (e, None),
        };
        let step = self
            .app
            .db
            .fail(shard, job, &error, delay, self.app.clock.now_ms())
            .await?;
        match step {
            Step::GaveUp => {
                tracing::warn!(attempts = job.attempts, "gave up: {}", summary(&error))
            }
            _ => {
                tracing::info!(
                    attempts = job.attempts,
                    ?step,
                    "attempt failed: {}",
                    summary(&error)
                )
            }
        }
        Ok(step)
    }

    async fn answer(&self, shard: u32, job: &Job) -> Result<Step, DbError> {
        let graph = &self.app.db;
        // The built-in agent looks back this far; a webhook agent gets its
        // configured share of it.
        let history = self.app.config.agent.history.max(AGENT_LOOKBACK);
        let input = match graph.agent_input(job, history).await {
            Ok(input) => input,
            Err(DbError::Store(e)) => return Err(DbError::Store(e)),
            Err(e) => {
                return self
                    .failed(
                        shard,
                        job,
                        Failure::Permanent(e.to_string()),
                        self.agent_policy(),
                    )
                    .await;
            }
        };
        // Only agents with I/O get here (the built-in one answers inline).
        let answer = if input.handed_off {
            Answer::default()
        } else {
            match self.call_agent(&input).await {
                Ok(a) => a,
                Err(f) => {
                    self.app
                        .metrics
                        .inc("gateway_agent_calls_total", &[("outcome", "failed")]);
                    return self.failed(shard, job, f, self.agent_policy()).await;
                }
            }
        };
        let step = graph
            .finish_agent(shard, job, &answer, self.app.clock.now_ms())
            .await?;
        if step == Step::Done {
            self.answered(input.customer.id.clone()).await;
        }
        Ok(step)
    }

    /// An agent answered: the customer's views change, and the replies'
    /// deliveries are queued — run them now.
    async fn answered(&self, customer_id: String) {
        self.app
            .notifier
            .publish(crate::notify::Change {
                customer_id,
                kind: crate::notify::ChangeKind::Message,
            })
            .await;
        self.wake.notify_one();
    }

    async fn call_agent(
        &self,
        input: &chatcrafter_core::jobs::AgentInput,
    ) -> Result<Answer, Failure> {
        let cfg = &self.app.config.agent;
        let url = cfg.url.as_deref().unwrap_or_default();
        let body = agent::webhook::request_body(input, cfg.history);
        let signature = agent::webhook::sign(
            cfg.secret.as_deref().unwrap_or_default().as_bytes(),
            self.app.clock.now_secs(),
            &body,
        );
        let headers = [
            ("content-type".to_string(), "application/json".to_string()),
            (agent::webhook::SIGNATURE_HEADER.to_string(), signature),
        ];
        let started = std::time::Instant::now();
        let answer = self
            .client
            .call(
                "POST",
                url,
                &headers,
                body,
                Duration::from_millis(cfg.timeout_ms),
            )
            .await;
        self.app
            .metrics
            .observe("gateway_agent_call_seconds", &[], started.elapsed());
        let answer = answer.map_err(|e| Failure::Transient(format!("agent call: {e}")))?;
        if !(200..300).contains(&answer.status) {
            return Err(Failure::Transient(format!(
                "the agent answered {}",
                answer.status
            )));
        }
        self.app
            .metrics
            .inc("gateway_agent_calls_total", &[("outcome", "ok")]);
        // A malformed answer may be a deploy in progress: retried too.
        agent::webhook::parse_answer(&answer.body).map_err(Failure::Transient)
    }

    async fn deliver(&self, shard: u32, job: &Job, o: Outbound) -> Result<Step, DbError> {
        let graph = &self.app.db;
        let Some(route) = o.routes.get(o.route) else {
            return self
                .failed(
                    shard,
                    job,
                    Failure::Permanent("no route to the customer".into()),
                    self.policy(),
                )
                .await;
        };
        let channel = route.identity.channel.as_str();
        let Some(plugin) = self.app.plugins.get(channel) else {
            let why = format!("channel `{channel}` is not configured");
            return graph
                .reroute(shard, job, &why, self.app.clock.now_ms())
                .await;
        };
        // The channel's reply window, templates and limits decide what goes
        // out there: never a send the channel is known to refuse.
        let cfg = self.app.config.channels.get(channel);
        let empty = Default::default();
        let now = self.app.clock.now_secs();
        let purpose = Purpose::of_author(&o.author);
        let last_inbound_at = (route.at > 0).then_some(route.at);
        let situation = delivery::Situation {
            channel,
            manifest: plugin.manifest(),
            templates: cfg.map(|c| &c.templates).unwrap_or(&empty),
            purpose,
            last_inbound_at,
            now,
        };
        let content = match delivery::plan(&situation, &o.content()) {
            delivery::Plan::Send(c) => c,
            delivery::Plan::Elsewhere(why) => {
                self.app.metrics.inc(
                    "gateway_outbound_total",
                    &[("channel", channel), ("outcome", "rerouted")],
                );
                return graph
                    .reroute(shard, job, &why, self.app.clock.now_ms())
                    .await;
            }
        };
        let settings = cfg
            .map(|c| {
                c.settings
                    .iter()
                    .filter(|(k, _)| plugin.manifest().settings.iter().any(|s| &s.name == *k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let message = OutboundMessage {
            message_id: o.id.clone(),
            recipient: route.identity.clone(),
            content,
            reply_handle: route.reply_handle.clone(),
            context: OutboundContext {
                channel: channel.to_string(),
                purpose,
                last_inbound_at,
                now,
                settings,
            },
        };
        let (rendered, _) = crate::plugin::call_bounded(
            &self.app.plugin_calls,
            &plugin,
            "render-outbound",
            async |p| p.render_outbound_async(&message).await,
        )
        .await;
        let request = match rendered {
            Ok(r) => r,
            Err(PluginError::Channel {
                error: ChannelError::InvalidOutbound(why),
                ..
            }) => {
                // Not deliverable there (e.g. Discord without an open
                // interaction): the next route, if any.
                let why = format!("{channel}: {why}");
                return graph
                    .reroute(shard, job, &why, self.app.clock.now_ms())
                    .await;
            }
            Err(e) => {
                return self
                    .failed(shard, job, Failure::Transient(e.to_string()), self.policy())
                    .await;
            }
        };
        let outcome = match request {
            OutboundRequest::Push { .. } => {
                // Push frames reach the customer's open widget sessions
                // through the change notification; the message is on their
                // history either way.
                Ok(None)
            }
            OutboundRequest::Http(call) => self.send(channel, &o.id, &call).await,
        };
        let label = match &outcome {
            Ok(_) => "sent",
            Err(Failure::Transient(_)) => "retry",
            Err(Failure::Permanent(_)) => "refused",
        };
        self.app.metrics.inc(
            "gateway_outbound_total",
            &[("channel", channel), ("outcome", label)],
        );
        match outcome {
            Ok(provider_id) => {
                let step = graph
                    .delivered(shard, job, provider_id.as_deref(), self.app.clock.now_ms())
                    .await?;
                self.app
                    .notifier
                    .publish(crate::notify::Change {
                        customer_id: o.customer_id.clone(),
                        kind: crate::notify::ChangeKind::Message,
                    })
                    .await;
                Ok(step)
            }
            Err(f) => self.failed(shard, job, f, self.policy()).await,
        }
    }

    /// Sends a rendered call: credentials from the channel's secrets, the
    /// destination checked against its `api_base`, the outbound id as the
    /// idempotency key. Returns the channel's id for the sent message.
    async fn send(
        &self,
        channel: &str,
        outbound_id: &str,
        call: &chatcrafter_core::channel::HttpCall,
    ) -> Result<Option<String>, Failure> {
        let cfg =
            self.app.config.channels.get(channel).ok_or_else(|| {
                Failure::Permanent(format!("channel `{channel}` is not configured"))
            })?;
        let prepared = delivery::prepare(channel, call, cfg.api_base.as_deref(), &cfg.secrets)
            .map_err(|e| Failure::Permanent(format!("{channel}: {e}")))?;
        let mut headers = prepared.headers.clone();
        headers.push(("idempotency-key".into(), outbound_id.to_string()));
        // Where it went, without the path: a path can carry data (Discord's
        // interaction token, valid 15 minutes) that must not reach the log
        // or the hand-off inbox.
        let where_to = format!(
            "{}/…",
            cfg.api_base
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
        );
        let answer = self
            .client
            .call(
                &prepared.method,
                &prepared.url,
                &headers,
                prepared.body.clone(),
                Duration::from_millis(self.app.config.delivery.timeout_ms),
            )
            .await
            .map_err(|e| Failure::Transient(format!("{} {where_to}: {e}", prepared.method)))?;
        let excerpt = || {
            let text = String::from_utf8_lossy(&answer.body);
            let cut: String = text.chars().take(200).collect();
            format!(
                "{} {where_to} answered {}: {cut}",
                prepared.method, answer.status
            )
        };
        match delivery::verdict(answer.status) {
            Verdict::Sent => Ok(call
                .sent_id
                .as_deref()
                .and_then(|p| sent_id(&answer.body, p))),
            Verdict::Retry => Err(Failure::Transient(excerpt())),
            Verdict::Refused => Err(Failure::Permanent(excerpt())),
        }
    }

    async fn remind(&self, shard: u32, job: &Job) -> Result<Step, DbError> {
        let d = &self.app.config.delivery;
        let rules = ReminderRules {
            per_day: d.proactive_per_day,
            channel_priority: d.channel_priority.clone(),
        };
        let outcome = self
            .app
            .db
            .run_reminder(
                shard,
                job,
                &rules,
                &agent::builtin::reminder,
                self.app.clock.now_ms(),
            )
            .await?;
        match outcome {
            None => Ok(Step::Lost),
            Some(Ok(o)) => {
                tracing::info!(outbound = %o.id, "reminder queued");
                self.wake.notify_one();
                Ok(Step::Done)
            }
            Some(Err(skip)) => {
                tracing::info!(job = %job.id, reason = skip.as_str(), "reminder skipped");
                self.app.metrics.inc(
                    "gateway_reminders_skipped_total",
                    &[("reason", skip.as_str())],
                );
                Ok(Step::Done)
            }
        }
    }
}

/// Drops keys past their retention (provider message ids after
/// [`chatcrafter_core::inbound::DEDUP_RETENTION_SECONDS`]), at
/// start and every ten minutes, in bounded batches. A no-op on Redis, which
/// expires them itself.
pub async fn sweep(app: Arc<App>) {
    const BATCH: usize = 10_000;
    loop {
        loop {
            match app
                .db
                .backend()
                .sweep_expired(app.clock.now_secs(), BATCH)
                .await
            {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(removed = n, "expired keys swept");
                    }
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("sweeping expired keys failed: {e}");
                    break;
                }
            }
        }
        retention(&app).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

/// One walk of the retention rules (`[privacy]`) over every customer,
/// 200 a page, counted in `gateway_retention_removed_total`.
async fn retention(app: &crate::app::App) {
    let rules = app.config.privacy.retention();
    if let Err(e) = app.db.finish_pending_shredding().await {
        tracing::warn!("finishing an earlier erasure failed: {e}");
    }
    let mut cursor: Option<String> = None;
    loop {
        match app.db.retention_page(&rules, cursor.as_deref(), 200).await {
            Ok((s, next)) => {
                for (kind, n) in [
                    ("timeline_entries", s.entries_removed),
                    ("archived_customers", s.archived),
                    ("erased_customers", s.erased),
                ] {
                    app.metrics
                        .add("gateway_retention_removed_total", &[("kind", kind)], n);
                }
                if s.entries_removed + s.archived + s.erased + s.failed > 0 {
                    tracing::info!(
                        entries = s.entries_removed,
                        archived = s.archived,
                        erased = s.erased,
                        failed = s.failed,
                        "retention"
                    );
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => return,
                }
            }
            Err(e) => {
                tracing::warn!("retention stopped: {e}");
                return;
            }
        }
    }
}

/// The built-in agent's answer, run inline in the claiming unit.
fn builtin_answer(input: &AgentInput) -> Answer {
    let name = input
        .customer
        .attributes
        .get("name")
        .map(|a| a.value.as_str());
    let reply = agent::builtin::respond(name, &input.history, &input.incoming);
    Answer {
        replies: vec![reply.content()],
        handoff: reply.handoff.then(|| "requested".to_string()),
        attributes: Default::default(),
    }
}

/// The sent message's id at JSON pointer `pointer` in a channel's answer
/// (numbers as their decimal text).
fn sent_id(body: &[u8], pointer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sent_ids_are_read_at_their_pointer() {
        let wa = br#"{"messaging_product":"whatsapp","messages":[{"id":"wamid.X"}]}"#;
        assert_eq!(
            super::sent_id(wa, "/messages/0/id").as_deref(),
            Some("wamid.X")
        );
        let tg = br#"{"ok":true,"result":{"message_id":42}}"#;
        assert_eq!(
            super::sent_id(tg, "/result/message_id").as_deref(),
            Some("42")
        );
        assert_eq!(super::sent_id(b"not json", "/id"), None);
        assert_eq!(super::sent_id(br#"{"id":null}"#, "/id"), None);
    }
}
