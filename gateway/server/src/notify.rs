//! Real-time change notifications per customer: a profile change or a new
//! message is announced to every subscriber on every node — through Redis
//! pub/sub when the store is Redis, an in-process broadcast otherwise. A
//! notification carries a customer id and what changed, never the data:
//! subscribers read the store (with its access checks) to see what it is.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How many notifications a slow subscriber may fall behind before it
/// starts missing some (and is told so by `RecvError::Lagged`).
const BACKLOG: usize = 1024;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A message arrived or was sent.
    Message,
    /// Attributes or identities changed.
    Profile,
    /// The customer was merged, or a merge undone.
    Merge,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The customer.
    pub customer_id: String,
    /// What changed.
    pub kind: ChangeKind,
}

/// Publishes and delivers changes.
#[derive(Debug)]
pub struct Notifier {
    local: broadcast::Sender<Change>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl Notifier {
    /// In-process only (the embedded store: one node).
    pub fn local() -> Self {
        Notifier {
            local: broadcast::channel(BACKLOG).0,
            redis: None,
        }
    }

    /// Through Redis pub/sub on channel `{prefix}changes`. A background task
    /// keeps a subscription open, reconnecting with backoff, and hands every
    /// notification to this node's subscribers.
    pub async fn redis(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        Self::redis_with(redis::Client::open(url)?, prefix).await
    }

    /// The same, with a prepared client (e.g. one trusting a private CA).
    pub async fn redis_with(client: redis::Client, prefix: &str) -> redis::RedisResult<Self> {
        let conn = client.get_connection_manager().await?;
        let channel = format!("{prefix}changes");
        let (local, _) = broadcast::channel(BACKLOG);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(subscribe_loop(
            client,
            channel.clone(),
            local.downgrade(),
            ready_tx,
        ));
        // Wait for the first subscription, so nothing published after this
        // returns is missed.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
        Ok(Notifier {
            local,
            redis: Some((conn, channel)),
        })
    }

    /// A receiver of every change from now on (filter by customer).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.local.subscribe()
    }

    /// Announces a change to every node. Best effort: a lost notification
    /// costs a subscriber a refresh, never data.
    pub async fn publish(&self, change: Change) {
        match &self.redis {
            None => {
                let _ = self.local.send(change);
            }
            Some((conn, channel)) => {
                let payload = serde_json::to_string(&change).unwrap_or_default();
                let mut conn = conn.clone();
                let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(customer_id = %change.customer_id, "change notification not published: {e}");
                }
            }
        }
    }
}

/// Runs until the notifier is dropped (the weak sender no longer upgrades).
async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    local: broadcast::WeakSender<Change>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    use futures_util::StreamExt as _;
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        let Some(local) = local.upgrade() else { return };
                        if let Ok(change) = serde_json::from_str::<Change>(&payload) {
                            let _ = local.send(change);
                        }
                    }
                }
                tracing::warn!("change subscription lost; reconnecting");
            }
            Err(e) => tracing::warn!(
                "change subscription: {e}; retrying in {} ms",
                backoff.as_millis()
            ),
        }
        if local.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
