//! Where verified, parsed events go: dedup → identity → timeline, with the
//! agent's job queued in the same unit (see [`crate::worker`] for the rest).
//! The gateway answers the channel only after `accept` returns `Ok`, so
//! nothing is acknowledged that was not stored.

use std::future::Future;
use std::pin::Pin;

use chatcrafter_core::channel::{Inbound, InboundEvent};
use chatcrafter_core::db::DbError;
use chatcrafter_core::inbound::Recorded;

/// A boxed future, as the sink returns. Its error says whose fault the
/// failure is (a store that is down: 503, and the channel retries).
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DbError>> + Send + 'a>>;

/// Takes the events of one verified request.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Accepts `inbound` from `channel`; `Ok` means it is safely taken.
    fn accept<'a>(&'a self, channel: &'a str, inbound: &'a Inbound) -> SinkFuture<'a>;
}

/// Records the request with the core's [`record_request`]: each message in
/// one atomic unit (a redelivery dropped by its provider id, the sender
/// resolved, the message appended and the agent's turn queued), delivery
/// statuses applied to the messages they are about; then announces what
/// changed and wakes the worker. The channel hears 2xx only once all of
/// that is stored.
///
/// [`record_request`]: chatcrafter_core::db::Db::record_request
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
            let record = self.db.record_request(channel, inbound).await;
            for r in &record.messages {
                match r {
                    Recorded::Stale => {
                        self.metrics
                            .inc("gateway_replays_refused_total", &[("channel", channel)]);
                        tracing::info!("message older than the dedup retention refused");
                    }
                    Recorded::Duplicate => {
                        self.metrics
                            .inc("gateway_dedup_hits_total", &[("channel", channel)]);
                        // Provider ids are not logged: WhatsApp's encode the
                        // sender's phone number.
                        tracing::info!("redelivery dropped");
                    }
                    Recorded::Stored {
                        resolution: r,
                        entry_id,
                    } => {
                        tracing::Span::current()
                            .record("customer_id", tracing::field::display(&r.customer_id));
                        tracing::info!(entry_id = %entry_id, created = r.created, "inbound message");
                    }
                }
            }
            // What was stored is announced even if a later event failed.
            for change in record.changes() {
                self.notifier.publish(change).await;
            }
            if record.stored_any() {
                self.wake.notify_one();
            }
            for (state, known) in &record.statuses {
                tracing::info!(state = ?state, known, "delivery status");
            }
            if let Some(e) = record.error {
                return Err(e);
            }
            for event in &inbound.events {
                if let InboundEvent::Ignored { reason } = event {
                    tracing::debug!(reason, "ignored");
                }
            }
            for d in &inbound.diagnostics {
                tracing::warn!(level = %d.level, "plugin diagnostic: {}", d.message);
            }
            Ok(())
        })
    }
}
