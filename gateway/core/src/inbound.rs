//! Recording one inbound message, as one unit: dedup by provider message
//! id → resolve the sender → append to the timeline → queue the agent's
//! turn. Above the identity, timeline and jobs rooms; nothing below calls
//! up into it.

use std::collections::BTreeSet;

use crate::change::{Change, ChangeKind};
use crate::channel::{Content, Inbound, InboundEvent, InboundMessage};
use crate::conversation::Entry;
use crate::db::{Db, DbError};
use crate::identity::resolve::resolve_in;
use crate::identity::*;
use crate::store::{Backend, Expiry, get};

/// What recording an inbound message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The provider id was recorded before: nothing changed.
    Duplicate,
    /// The message is older than [`DEDUP_RETENTION_SECONDS`] by the
    /// injected clock: its id may have been forgotten, so it cannot be told
    /// from a replay. Nothing changed (the channel is answered as if it
    /// were stored, so that it stops retrying).
    Stale,
    /// Resolved and appended.
    Stored {
        /// The resolution.
        resolution: Resolution,
        /// The new timeline entry's id.
        entry_id: String,
    },
}

/// How long a provider message id is remembered to drop redeliveries: 7
/// days, the longest retry window the channels document (WhatsApp retries
/// for up to 7 days). An id seen longer ago counts as new.
pub const DEDUP_RETENTION_SECONDS: u64 = 7 * 86_400;

/// Whether recording a message gives the agent a turn.
#[derive(Debug, Clone, Copy)]
pub enum Turn<'a> {
    /// Queue the agent's turn — unless the message is a reaction or an
    /// edit, or its customer is in `answered` (customers already given a
    /// turn for the same inbound request).
    Answer {
        /// Customers already answered in this request.
        answered: &'a BTreeSet<String>,
    },
    /// Record only: a later message of the same request gets the turn.
    Quiet,
}

/// Whether `m` is a message the agent answers (not a reaction, not an edit).
pub fn wants_answer(m: &InboundMessage) -> bool {
    !m.edited
        && !m
            .contents
            .iter()
            .all(|c| matches!(c, Content::Reaction { .. }))
}

/// The agent's turns for the messages of one inbound request, in order:
/// only each sender's last answerable message gets one (so a batch is
/// answered once, with all of it in the timeline), and [`Turn::Answer`]
/// also skips a customer already answered under another identity.
pub fn turns_for_batch(messages: &[&InboundMessage]) -> Vec<bool> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            wants_answer(m)
                && !messages[i + 1..]
                    .iter()
                    .any(|n| n.sender == m.sender && wants_answer(n))
        })
        .collect()
}

/// What recording one verified inbound request did. Every host (the native
/// gateway, the Spin edge) records a request this way, then announces
/// [`RequestRecord::changes`] and answers the channel — 2xx only if
/// [`RequestRecord::error`] is `None`.
#[derive(Debug, Default)]
pub struct RequestRecord {
    /// Each message's outcome, in payload order, as far as recording got.
    pub messages: Vec<Recorded>,
    /// Each delivery status: its state, and whether it was about a message
    /// the gateway sent.
    pub statuses: Vec<(crate::channel::DeliveryState, bool)>,
    /// Why recording stopped, if it did: the request is not acknowledged
    /// (the channel retries; what was stored is then dropped as a
    /// redelivery).
    pub error: Option<DbError>,
}

impl RequestRecord {
    /// Whether an agent's turn may have been queued (a message was stored).
    pub fn stored_any(&self) -> bool {
        self.messages
            .iter()
            .any(|m| matches!(m, Recorded::Stored { .. }))
    }

    /// The change notifications the stored messages call for.
    pub fn changes(&self) -> Vec<Change> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                Recorded::Stored { resolution, .. } => Some(Change {
                    customer_id: resolution.customer_id.clone(),
                    kind: if resolution.merges.is_empty() {
                        ChangeKind::Message
                    } else {
                        ChangeKind::Merge
                    },
                }),
                _ => None,
            })
            .collect()
    }
}

impl<B: Backend> Db<B> {
    /// Records the events of one verified request from `channel`: each
    /// message in its own unit (one agent turn per customer per request: a
    /// batch is answered once, after its last message, with all of it in
    /// the timeline), then each delivery status.
    pub async fn record_request(&self, channel: &str, inbound: &Inbound) -> RequestRecord {
        let mut record = RequestRecord::default();
        let messages: Vec<&InboundMessage> = inbound
            .events
            .iter()
            .filter_map(|e| match e {
                InboundEvent::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        let turns = turns_for_batch(&messages);
        let mut answered = BTreeSet::new();
        for (m, gets_turn) in messages.into_iter().zip(turns) {
            let turn = match gets_turn {
                true => Turn::Answer {
                    answered: &answered,
                },
                false => Turn::Quiet,
            };
            match self.record_inbound_with(m, turn).await {
                Ok(r) => {
                    if let (true, Recorded::Stored { resolution, .. }) = (gets_turn, &r) {
                        answered.insert(resolution.customer_id.clone());
                    }
                    record.messages.push(r);
                }
                Err(e) => {
                    record.error = Some(e);
                    return record;
                }
            }
        }
        for event in &inbound.events {
            if let InboundEvent::Status(s) = event {
                match self.record_status(channel, s).await {
                    Ok(known) => record.statuses.push((s.state, known)),
                    Err(e) => {
                        record.error = Some(e);
                        return record;
                    }
                }
            }
        }
        record
    }

    /// Records one inbound message atomically: drops it if its provider id
    /// was already recorded (a channel's retry), else resolves the sender
    /// and appends it to the customer's timeline — all or nothing — and
    /// queues the agent's turn.
    pub async fn record_inbound(&self, message: &InboundMessage) -> Result<Recorded, DbError> {
        self.record_inbound_with(
            message,
            Turn::Answer {
                answered: &BTreeSet::new(),
            },
        )
        .await
    }

    /// [`Db::record_inbound`], the agent's turn taken as `turn` says.
    pub async fn record_inbound_with(
        &self,
        message: &InboundMessage,
        turn: Turn<'_>,
    ) -> Result<Recorded, DbError> {
        let sender = Sender {
            identity: message.sender.clone(),
            display_name: message.display_name.clone(),
            claims: message.claims.clone(),
            link_token: message.link_token.clone(),
            at: message.timestamp,
        };
        let sender = &sender;
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let age = ctx.clock.now_secs().saturating_sub(message.timestamp);
                if age >= DEDUP_RETENTION_SECONDS {
                    return Ok(Recorded::Stale);
                }
                let dk = ctx
                    .k()
                    .dedup(&message.sender.channel, &message.provider_message_id);
                let seen_at = get(txn, &dk)
                    .await?
                    .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
                if seen_at
                    .is_some_and(|t| message.timestamp.saturating_sub(t) < DEDUP_RETENTION_SECONDS)
                {
                    return Ok(Recorded::Duplicate);
                }
                let resolution = resolve_in(ctx, txn, sender).await?;
                ctx.prefetch_for_inbound(txn, &resolution.customer_id)
                    .await?;
                let entry = Entry::inbound(message, resolution.linked == Some(How::LinkToken));
                let (entry, _) = ctx.append(txn, &resolution.customer_id, entry).await?;
                if !message.edited {
                    let customer = ctx.live_customer(txn, &resolution.customer_id).await?;
                    ctx.analytics_update(txn, &customer, |s| {
                        s.touch(
                            message.timestamp,
                            &message.sender.channel,
                            message.referral.as_ref(),
                        )
                    })
                    .await?;
                }
                let answer = match turn {
                    Turn::Answer { answered } => !answered.contains(&resolution.customer_id),
                    Turn::Quiet => false,
                };
                ctx.after_inbound(txn, &resolution.customer_id, &entry, message, answer)
                    .await?;
                txn.put_expiring(
                    &dk,
                    message.timestamp.to_string().into_bytes(),
                    Expiry::until(
                        message.timestamp.saturating_add(DEDUP_RETENTION_SECONDS),
                        ctx.clock.now_secs(),
                    ),
                );
                Ok(Recorded::Stored {
                    resolution,
                    entry_id: entry.id,
                })
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{DEDUP_RETENTION_SECONDS, Recorded};
    use crate::Clock as _;
    use crate::db::testing::{T0, db, message, run, sender};
    use crate::identity::Rules;
    use crate::store::Backend as _;

    #[test]
    fn a_redelivery_is_recorded_once_and_its_id_is_kept_for_the_retention() {
        let (db, clock) = db(Rules::default());
        let s = sender("whatsapp", "15551234567", vec![], T0);
        let m = message(&s, "wamid.1", "hi");
        let Recorded::Stored { resolution, .. } = run(db.record_inbound(&m)).unwrap() else {
            panic!("the first delivery is stored")
        };
        assert_eq!(run(db.record_inbound(&m)).unwrap(), Recorded::Duplicate);
        assert_eq!(run(db.timeline(&resolution.customer_id)).unwrap().len(), 1);
        // The retention is counted from the message, by the injected clock.
        clock.set_ms((T0 + DEDUP_RETENTION_SECONDS - 1) * 1000);
        assert_eq!(
            run(db.backend().sweep_expired(clock.now_secs(), 100)).unwrap(),
            0
        );
        clock.set_ms((T0 + DEDUP_RETENTION_SECONDS) * 1000);
        assert_eq!(
            run(db.backend().sweep_expired(clock.now_secs(), 100)).unwrap(),
            1
        );
        // Its id forgotten, a redelivery cannot be told from a replay.
        assert_eq!(run(db.record_inbound(&m)).unwrap(), Recorded::Stale);
        assert_eq!(run(db.timeline(&resolution.customer_id)).unwrap().len(), 1);
    }
}
