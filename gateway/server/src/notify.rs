//! Real-time change notifications per customer: a profile change or a new
//! message is announced to every subscriber on every node — through Redis
//! pub/sub when the store is Redis, an in-process broadcast otherwise. A
//! notification carries a customer id and what changed, never the data:
//! subscribers read the store (with its access checks) to see what it is.
//!
//! Each subscriber follows one customer: a change wakes only the
//! subscribers of its customer (ten thousand open widget sessions cost a
//! message nothing), while merges — which move customers — and a lost
//! Redis subscription (`Resync`) reach every subscriber. The operator
//! dashboard's feed is the one follower of every customer
//! ([`Notifier::subscribe_all`]), and costs nothing while none is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use std::time::Duration;

use tokio::sync::broadcast;

/// How many notifications a slow subscriber may fall behind before it
/// starts missing some (and is told so by `RecvError::Lagged`).
const BACKLOG: usize = 1024;

pub use chatcrafter_core::change::{Change, ChangeKind};

/// Hands each change to the subscribers it concerns, on this node.
#[derive(Debug)]
struct Router {
    /// Merges and resyncs: every subscriber.
    everyone: broadcast::Sender<Change>,
    /// Per followed customer.
    customers: Mutex<HashMap<String, broadcast::Sender<Change>>>,
    /// Every change of every customer: the operator dashboard's feed
    /// (`GET /admin/v1/changes`). Sent to only while someone follows it.
    all: broadcast::Sender<Change>,
    /// Woken by every new message (and merge, and resync), in `gateway
    /// worker` mode: its queue's jobs are queued by other nodes — the Spin
    /// edge, which has no worker — and are answered at once. (A serving
    /// node wakes its own worker as it queues, and finds other nodes'
    /// jobs by polling.)
    arrivals: Mutex<Option<Arc<tokio::sync::Notify>>>,
}

impl Router {
    fn new() -> Arc<Router> {
        Arc::new(Router {
            everyone: broadcast::channel(BACKLOG).0,
            customers: Mutex::new(HashMap::new()),
            all: broadcast::channel(BACKLOG).0,
            arrivals: Mutex::new(None),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Change>>> {
        self.customers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(&self, change: Change) {
        if change.kind != ChangeKind::Profile
            && let Some(wake) = &*self.arrivals.lock().unwrap_or_else(|p| p.into_inner())
        {
            wake.notify_one();
        }
        if matches!(change.kind, ChangeKind::Merge | ChangeKind::Resync) {
            let _ = self.everyone.send(change.clone());
        }
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(change.clone());
        }
        if let Some(tx) = self.map().get(&change.customer_id) {
            let _ = tx.send(change);
        }
    }
}

/// One subscriber: every merge and resync, and the changes of the
/// customer it follows.
#[derive(Debug)]
pub struct Subscription {
    router: Arc<Router>,
    everyone: broadcast::Receiver<Change>,
    customer: Option<(String, broadcast::Receiver<Change>)>,
}

impl Subscription {
    /// Follows `customer` from now on (none: only merges and resyncs).
    pub fn follow(&mut self, customer: Option<&str>) {
        if self.customer.as_ref().map(|(c, _)| c.as_str()) == customer {
            return;
        }
        self.unfollow();
        self.customer = customer.map(|c| {
            let rx = self
                .router
                .map()
                .entry(c.to_string())
                .or_insert_with(|| broadcast::channel(BACKLOG / 16).0)
                .subscribe();
            (c.to_string(), rx)
        });
    }

    fn unfollow(&mut self) {
        if let Some((c, rx)) = self.customer.take() {
            drop(rx);
            let mut map = self.router.map();
            if map.get(&c).is_some_and(|tx| tx.receiver_count() == 0) {
                map.remove(&c);
            }
        }
    }

    /// The next change for this subscriber.
    pub async fn recv(&mut self) -> Result<Change, broadcast::error::RecvError> {
        let Subscription {
            everyone, customer, ..
        } = self;
        match customer {
            Some((_, rx)) => tokio::select! {
                r = everyone.recv() => r,
                r = rx.recv() => r,
            },
            None => everyone.recv().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unfollow();
    }
}

/// Publishes and delivers changes.
#[derive(Debug)]
pub struct Notifier {
    router: Arc<Router>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl Notifier {
    /// In-process only (the embedded store: one node).
    pub fn local() -> Self {
        Notifier {
            router: Router::new(),
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
        let channel = chatcrafter_core::change::pubsub_channel(prefix);
        let router = Router::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(subscribe_loop(
            client,
            channel.clone(),
            Arc::downgrade(&router),
            ready_tx,
        ));
        // Wait for the first subscription, so nothing published after this
        // returns is missed.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
        Ok(Notifier {
            router,
            redis: Some((conn, channel)),
        })
    }

    /// Wakes `wake` whenever a change announces a new message, a merge or a
    /// resync, from this node or another (the queue worker's wake-up).
    pub fn wake_on_arrivals(&self, wake: Arc<tokio::sync::Notify>) {
        *self
            .router
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(wake);
    }

    /// A subscriber of merges and resyncs; [`Subscription::follow`] a
    /// customer for their changes.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            router: self.router.clone(),
            everyone: self.router.everyone.subscribe(),
            customer: None,
        }
    }

    /// Every change of every customer, from now on (the operator
    /// dashboard's feed). A follower that falls [`BACKLOG`] changes behind
    /// is told so by `RecvError::Lagged`, and should read the store again.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Change> {
        self.router.all.subscribe()
    }

    /// Announces a change to every node. Best effort: a lost notification
    /// costs a subscriber a refresh, never data.
    pub async fn publish(&self, change: Change) {
        match &self.redis {
            None => self.router.dispatch(change),
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
    router: Weak<Router>,
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
                        let Some(router) = router.upgrade() else {
                            return;
                        };
                        if let Ok(change) = serde_json::from_str::<Change>(&payload)
                            && change.kind != ChangeKind::Resync
                        {
                            router.dispatch(change);
                        }
                    }
                }
                tracing::warn!("change subscription lost; reconnecting");
                // What was published meanwhile is lost: everyone re-reads.
                if let Some(router) = router.upgrade() {
                    router.dispatch(Change {
                        customer_id: String::new(),
                        kind: ChangeKind::Resync,
                    });
                }
            }
            Err(e) => tracing::warn!(
                "change subscription: {e}; retrying in {} ms",
                backoff.as_millis()
            ),
        }
        if router.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
