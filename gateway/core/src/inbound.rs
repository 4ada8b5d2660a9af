//! Recording one inbound message, as one unit: dedup by provider message
//! id → resolve the sender → append to the timeline → queue the agent's
//! turn. Above the identity, timeline and jobs rooms; nothing below calls
//! up into it.

use std::collections::BTreeSet;

use crate::channel::{Content, InboundMessage};
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
    !m.edited && !matches!(m.content, Content::Reaction { .. })
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

impl<B: Backend> Db<B> {
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
