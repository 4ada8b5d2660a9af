//! Where verified, parsed events go: dedup → identity → timeline, with the
//! agent's job queued in the same unit (see [`crate::worker`] for the rest).
//! The gateway answers the channel only after `accept` returns `Ok`, so
//! nothing is acknowledged that was not stored.

use std::future::Future;
use std::pin::Pin;

use std::collections::BTreeSet;

use chatcrafter_core::channel::{Inbound, InboundEvent, InboundMessage};
use chatcrafter_core::db::DbError;
use chatcrafter_core::inbound::{Recorded, Turn, turns_for_batch};

/// A boxed future, as the sink returns. Its error says whose fault the
/// failure is (a store that is down: 503, and the channel retries).
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DbError>> + Send + 'a>>;

/// Takes the events of one verified request.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Accepts `inbound` from `channel`; `Ok` means it is safely taken.
    fn accept<'a>(&'a self, channel: &'a str, inbound: &'a Inbound) -> SinkFuture<'a>;
}

/// Records every message in the store in one atomic unit: drops a
/// redelivery by its provider id, resolves the sender to a customer,
/// appends the message to the customer's timeline and queues the agent's
/// turn. Delivery statuses update the outbound messages they are about.
/// The channel hears 2xx only once all of that is stored.
#[derive(Debug)]
pub struct StoreSink {
    /// The identity graph.
    pub db: std::sync::Arc<crate::store::GatewayDb>,
    /// Announces each customer's new messages.
    pub notifier: std::sync::Arc<crate::notify::Notifier>,
    /// Counts redeliveries dropped.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Wakes the queue worker: a stored message has an agent job.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

impl Sink for StoreSink {
    fn accept<'a>(&'a self, channel: &'a str, inbound: &'a Inbound) -> SinkFuture<'a> {
        Box::pin(async move {
            // One agent turn per customer per request: a batch is answered
            // once, after its last message, with all of it in the timeline.
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
                let turn = if gets_turn {
                    Turn::Answer {
                        answered: &answered,
                    }
                } else {
                    Turn::Quiet
                };
                let recorded = self.db.record_inbound_with(m, turn).await?;
                if recorded == Recorded::Stale {
                    self.metrics
                        .inc("gateway_replays_refused_total", &[("channel", channel)]);
                    tracing::info!("message older than the dedup retention refused");
                    continue;
                }
                let Recorded::Stored {
                    resolution: r,
                    entry_id,
                } = recorded
                else {
                    self.metrics
                        .inc("gateway_dedup_hits_total", &[("channel", channel)]);
                    // Provider ids are not logged: WhatsApp's encode the
                    // sender's phone number.
                    tracing::info!("redelivery dropped");
                    continue;
                };
                tracing::Span::current()
                    .record("customer_id", tracing::field::display(&r.customer_id));
                if gets_turn {
                    answered.insert(r.customer_id.clone());
                }
                let kind = if r.merges.is_empty() {
                    crate::notify::ChangeKind::Message
                } else {
                    crate::notify::ChangeKind::Merge
                };
                self.notifier
                    .publish(crate::notify::Change {
                        customer_id: r.customer_id.clone(),
                        kind,
                    })
                    .await;
                tracing::info!(
                    entry_id = %entry_id,
                    created = r.created,
                    "inbound message"
                );
            }
            self.wake.notify_one();
            for event in &inbound.events {
                match event {
                    InboundEvent::Status(s) => {
                        let known = self.db.record_status(channel, s).await?;
                        tracing::info!(
                            state = ?s.state,
                            known,
                            "delivery status"
                        );
                    }
                    InboundEvent::Ignored { reason } => tracing::debug!(reason, "ignored"),
                    InboundEvent::Message(_) => {}
                }
            }
            for d in &inbound.diagnostics {
                tracing::warn!(level = %d.level, "plugin diagnostic: {}", d.message);
            }
            Ok(())
        })
    }
}
