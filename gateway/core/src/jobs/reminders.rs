//! Business events on the timeline and the abandoned-cart reminders they
//! start, under consent and a frequency cap.

use super::*;
use crate::conversation::state::Route;
use crate::conversation::{Direction, Entry};
use crate::db::{Db, DbError};
use crate::delivery::{Job, JobKind, Outbound, shard_of};
use crate::store::Backend;

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

pub(crate) fn consent_granted(c: &Customer) -> bool {
    c.attributes
        .get(MARKETING_CONSENT)
        .is_some_and(|a| a.value == "granted")
}

impl<B: Backend> Db<B> {
    /// Records a business event on the customer's timeline. A
    /// `cart_abandoned` schedules a reminder `reminder_after_ms` later; a
    /// `purchase` cancels the reminders pending.
    pub async fn record_event(
        &self,
        customer_id: &str,
        entry: &Entry,
        reminder_after_ms: u64,
        now_ms: u64,
    ) -> Result<Entry, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
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
                        ctx.save_state(txn, &c.id, &state)?;
                    }
                    "purchase" => {
                        ctx.analytics_update(txn, &c, |s| s.purchase(entry.at))
                            .await?;
                        let mut state = ctx.load_state(txn, &c.id).await?;
                        for job in std::mem::take(&mut state.reminders) {
                            ctx.remove_job(txn, shard_of(&c.id), &job).await?;
                        }
                        ctx.save_state(txn, &c.id, &state)?;
                    }
                    _ => {}
                }
                Ok(stored)
            })
        })
        .await
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
    ) -> Result<Option<Result<Outbound, Skip>>, DbError> {
        let JobKind::Reminder {
            customer_id,
            abandoned_at,
        } = &job.kind
        else {
            return Err(DbError::Invalid(format!("{} is not a reminder", job.id)));
        };
        self.unit(move |ctx, txn| {
            Box::pin(async move {
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
                    ctx.save_state(txn, &c.id, &state)?;
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
                        &crate::channel::OutboundContent::text(text(name)),
                        "reminder",
                        routes,
                        now_ms,
                    )
                    .await?;
                state.sent_proactive(at);
                ctx.save_state(txn, &c.id, &state)?;
                Ok(Some(Ok(o)))
            })
        })
        .await
    }
}
