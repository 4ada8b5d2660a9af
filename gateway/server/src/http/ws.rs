//! `GET /widget/v1/ws`: a widget's live session (docs/widget.md has every
//! frame and close code).
//!
//! The browser opens the socket (its `Origin` must be in
//! `[widget] allowed_origins`), then has [`AUTH_TIMEOUT`] to send
//! `{"type":"auth","token":"<JWT>","after":"<entry id>"?}`. The session
//! answers with the customer's history (only what follows `after`, when the
//! client resumes), then streams every new entry and delivery status of
//! that customer as the store's change notifications announce them (on
//! every node: Redis pub/sub, or in-process for the embedded store) —
//! always read back from the timeline, so a missed notification costs a
//! refresh, never a message. Messages sent up are recorded exactly as
//! `POST /widget/v1/messages` records them (same plugin, same dedup by
//! `client_id`) and acknowledged only once stored. The session ends when
//! its token expires unless a `refresh` frame brings a new one for the same
//! user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcrafter_core::channel::{AuthenticatedUser, Header, RequestContext};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument as _;

use super::{ApiError, Params, Req, Resp};
use crate::app::App;
use crate::notify::ChangeKind;

/// Time a new socket has to send its `auth` frame.
pub(crate) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame (and message) accepted; larger closes with 4009.
pub(crate) const MAX_FRAME_BYTES: usize = 16 << 10;
/// Messages a client may send in a burst…
pub(crate) const RATE_BURST: u32 = 20;
/// …and per second after it; faster, it is told so and slowed down.
pub(crate) const RATE_PER_SECOND: u32 = 10;
/// A client still flooding after this long of being slowed is closed (4008).
pub(crate) const FLOOD_CLOSE_AFTER: Duration = Duration::from_secs(30);
/// How often the server pings.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(30);
/// A session that has not been heard from (frames or pongs) for this long
/// is closed.
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(75);
/// Entries sent on `auth` (the newest), and read to catch up.
pub(crate) const HISTORY: usize = 100;
/// Entries read first to catch up after a change.
const RECENT: usize = 16;

/// Close codes (docs/widget.md).
pub(crate) mod close {
    /// No `auth` frame in time, or the first frame was something else.
    pub(crate) const AUTH_MISSING: u16 = 4001;
    /// The token was refused, has expired, or a refresh named someone else.
    pub(crate) const TOKEN_REFUSED: u16 = 4003;
    /// The client kept flooding after being slowed down.
    pub(crate) const RATE_LIMIT: u16 = 4008;
    /// A frame over [`super::MAX_FRAME_BYTES`].
    pub(crate) const FRAME_TOO_LARGE: u16 = 4009;
}

/// Frames a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Up {
    Auth {
        token: String,
        #[serde(default)]
        after: Option<String>,
    },
    Message {},
    Refresh {
        token: String,
    },
}

/// The connection's place under `server.max_connections`, carried by the
/// request so a live session keeps it after hyper lets the socket go.
#[derive(Debug, Clone)]
pub(crate) struct ConnSlot(
    #[allow(dead_code, reason = "held for its Drop")] pub(crate) Arc<super::conn::Slot>,
);

/// `GET /widget/v1/ws`: checks the origin and the upgrade, answers 101, and
/// runs the session on the upgraded socket.
pub(super) async fn upgrade(
    app: &Arc<App>,
    req: &mut Req,
    _: Params<'_>,
) -> Result<Resp, ApiError> {
    let Some(config) = &app.config.widget else {
        return Err(super::widget::not_configured());
    };
    super::widget::allowed_origin(config, req)?;
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        let mut e = ApiError::caller(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "this route speaks WebSocket: send `Connection: Upgrade` and `Upgrade: websocket`",
        );
        e.headers.push((header::UPGRADE, "websocket".into()));
        return Err(e);
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut e = ApiError::caller(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_version",
            "only WebSocket version 13 is spoken",
        );
        e.headers.push((header::SEC_WEBSOCKET_VERSION, "13".into()));
        return Err(e);
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::caller(
            StatusCode::BAD_REQUEST,
            "websocket_key",
            "Sec-WebSocket-Key is missing",
        ));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let slot = req.extensions_mut().remove::<ConnSlot>();
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let app = app.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("websocket upgrade failed: {e}"),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4 << 10)
            .write_buffer_size(0)
            .max_write_buffer_size(256 << 10)
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        app.metrics.inc("gateway_widget_sessions_total", &[]);
        run(app, ws).await;
        drop(slot);
    });
    let resp = hyper::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("valid response");
    Ok(resp)
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a session ended (already told to the client when it could be).
#[derive(Debug)]
struct Ended;

/// How long one frame may take to leave: a client that stops reading
/// ends its session rather than holding it for ever.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `frame`; a failed or stuck send ends the session.
async fn send(ws: &mut Ws, frame: Value) -> Result<(), Ended> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::text(frame.to_string()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Ended),
    }
}

/// Closes with `code` and `reason` (at most 123 bytes, as the protocol
/// allows), and ends the session.
async fn close(ws: &mut Ws, code: u16, reason: &str) -> Ended {
    let mut reason = reason.to_string();
    if reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, ws.close(Some(frame))).await;
    Ended
}

/// A live session, once authenticated.
struct Live {
    app: Arc<App>,
    user: AuthenticatedUser,
    /// The last second the current token is accepted.
    until: u64,
    customer: Option<String>,
    /// Entries the client has, with the status it was last told.
    seen: Seen,
    bucket: Bucket,
}

async fn run(app: Arc<App>, mut ws: Ws) {
    let Ok(mut live) = authenticate(&app, &mut ws).await else {
        return;
    };
    // Subscribe before reading the history, so nothing falls in between.
    let mut changes = app.notifier.subscribe();
    changes.follow(live.customer.as_deref());
    if live.history(&mut ws).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = Instant::now();
    loop {
        // `until` is the last second the token is accepted.
        let left = (live.until + 1).saturating_sub(app.clock.now_secs());
        let outcome = tokio::select! {
            frame = ws.next() => {
                heard = Instant::now();
                live.on_frame(&mut ws, frame).await
            }
            change = changes.recv() => match change {
                // A merge (anyone's) may have moved this user; a resync
                // means notifications were lost.
                Ok(c) if matches!(c.kind, ChangeKind::Merge | ChangeKind::Resync) => {
                    live.resolve().await;
                    live.catch_up(&mut ws).await
                }
                // Only the followed customer's changes come here.
                Ok(_) => live.catch_up(&mut ws).await,
                // Fell behind: the timeline says what was missed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    live.resolve().await;
                    live.catch_up(&mut ws).await
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => Err(Ended),
            },
            _ = ping.tick() => {
                if heard.elapsed() > IDLE_CLOSE {
                    Err(close(&mut ws, 1001, "no frame or pong for 75 s").await)
                } else if tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Ping(Default::default()))).await.is_ok_and(|r| r.is_ok()) {
                    // A user with no customer yet may have become one
                    // elsewhere (another tab, another node): found now, and
                    // caught up. Known customers hear of every change.
                    if live.customer.is_none() {
                        live.resolve().await;
                        live.catch_up(&mut ws).await
                    } else {
                        Ok(())
                    }
                } else {
                    Err(Ended)
                }
            }
            () = tokio::time::sleep(Duration::from_secs(left)) => {
                Err(close(&mut ws, close::TOKEN_REFUSED, "expired: send a refresh frame before the token expires").await)
            }
        };
        if outcome.is_err() {
            return;
        }
        // The customer may have been found, or moved by a merge.
        changes.follow(live.customer.as_deref());
    }
}

/// Waits for the `auth` frame and checks its token; on failure the socket
/// is closed with the code that says why.
async fn authenticate(app: &Arc<App>, ws: &mut Ws) -> Result<Live, Ended> {
    let first = match tokio::time::timeout(AUTH_TIMEOUT, ws.next()).await {
        Err(_) => {
            return Err(close(ws, close::AUTH_MISSING, "no auth frame within 5 s").await);
        }
        Ok(None) | Ok(Some(Err(_))) => return Err(Ended),
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) => {
            return Err(close(
                ws,
                close::AUTH_MISSING,
                "the first frame must be a text auth frame",
            )
            .await);
        }
    };
    let Ok(Up::Auth { token, after }) = serde_json::from_str::<Up>(&first) else {
        return Err(close(
            ws,
            close::AUTH_MISSING,
            r#"the first frame must be {"type":"auth","token":"<JWT>"}"#,
        )
        .await);
    };
    let (user, until) = match verify(app, &token) {
        Ok(v) => v,
        Err(reason) => return Err(close(ws, close::TOKEN_REFUSED, &reason).await),
    };
    let mut live = Live {
        app: app.clone(),
        user,
        until,
        customer: None,
        seen: Seen::default(),
        bucket: Bucket::new(),
    };
    live.resolve().await;
    let identity = chatcrafter_core::channel::ChannelIdentity {
        channel: "widget".into(),
        scope: live.user.issuer.clone(),
        id: live.user.subject.clone(),
    };
    // A first visit by someone known from another channel by a verified
    // phone or email: linked now, as their first message would link them.
    if live.customer.is_none() {
        let sender = chatcrafter_core::identity::Sender {
            identity: identity.clone(),
            display_name: None,
            claims: live.user.claims.clone(),
            link_token: None,
            at: app.clock.now_secs(),
        };
        match app.db.resolve_if_known(&sender).await {
            Ok(Some(r)) => live.customer = Some(r.customer_id),
            Ok(None) => {}
            Err(e) => tracing::warn!("resolving a widget session failed: {e}"),
        }
    }
    // A customer known from another channel: the agent may greet with what
    // was said there (at most once a day).
    if let Some(c) = &live.customer {
        match app
            .db
            .widget_session_opened(c, &identity, app.clock.now_ms())
            .await
        {
            Ok(true) => app.wake.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::warn!(customer_id = %c, "session_opened not recorded: {e}"),
        }
    }
    // Resuming: the client already has `after` and what came before it.
    if let (Some(after), Some(c)) = (&after, &live.customer)
        && let Ok(entries) = app.db.timeline_tail(c, HISTORY).await
        && let Some(i) = entries.iter().position(|e| &e.id == after)
    {
        for e in &entries[..=i] {
            live.seen.insert(e.id.clone(), e.status.clone());
        }
    }
    send(
        ws,
        json!({"type": "session", "customer_id": live.customer, "expires_at": until, "now": app.clock.now_secs()}),
    )
    .await?;
    Ok(live)
}

/// Verifies a widget token; the close reason when it is refused.
fn verify(app: &App, token: &str) -> Result<(AuthenticatedUser, u64), String> {
    let auth = app.widget.as_ref().ok_or("the widget is not configured")?;
    auth.verify_until(Some(token), app.clock.now_secs())
        .map_err(|e| {
            app.metrics.inc(
                "gateway_verification_failures_total",
                &[("channel", "widget"), ("reason", e.reason())],
            );
            format!("{}: {e}", e.reason())
        })
}

impl Live {
    /// Finds the customer this widget user is (after a first message, or a
    /// merge that moved them).
    async fn resolve(&mut self) {
        if let Ok(found) = self
            .app
            .db
            .find_identity("widget", &self.user.subject)
            .await
        {
            self.customer = found;
        }
    }

    /// The `history` frame that opens a session: the newest entries (or
    /// those after the client's `after`), oldest first — `[]` for a user
    /// with no conversation yet.
    async fn history(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        let entries = match &self.customer {
            None => Vec::new(),
            Some(c) => match self.app.db.timeline_tail(c, HISTORY).await {
                Ok(e) => e,
                Err(e) => {
                    let e = ApiError::from(e);
                    send(ws, json!({"type": "error", "code": e.code, "message": "the history could not be read; it will be sent when the store answers"})).await?;
                    Vec::new()
                }
            },
        };
        let mut frames = Vec::new();
        for e in &entries {
            if !self.seen.contains_key(&e.id) {
                frames.push(super::admin::entry_json(e));
                self.seen.insert(e.id.clone(), e.status.clone());
            }
        }
        send(
            ws,
            json!({"type": "history", "customer_id": self.customer, "entries": frames}),
        )
        .await
    }

    /// Sends what the client does not have yet: new entries as `message`
    /// frames, changed delivery states as `status` frames.
    async fn catch_up(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        let Some(c) = self.customer.clone() else {
            return Ok(());
        };
        // A change usually adds an entry or two: read a short tail, and the
        // long one only when all of the short one is new.
        let mut entries = Vec::new();
        for limit in [RECENT, HISTORY] {
            entries = match self.app.db.timeline_tail(&c, limit).await {
                Ok(e) => e,
                Err(e) => {
                    let e = ApiError::from(e);
                    return send(ws, json!({"type": "error", "code": e.code, "message": "the history could not be read; it will be sent when the store answers"})).await;
                }
            };
            let all_new = entries.iter().all(|e| !self.seen.contains_key(&e.id));
            if entries.len() < limit || !all_new {
                break;
            }
        }
        for e in &entries {
            match self.seen.get(&e.id) {
                None => {
                    let mut frame = super::admin::entry_json(e);
                    frame["type"] = json!("message");
                    send(ws, frame).await?;
                    self.seen.insert(e.id.clone(), e.status.clone());
                }
                Some(s) if *s != e.status => {
                    send(
                        ws,
                        json!({"type": "status", "id": e.id, "status": e.status}),
                    )
                    .await?;
                    self.seen.insert(e.id.clone(), e.status.clone());
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn on_frame(
        &mut self,
        ws: &mut Ws,
        frame: Option<Result<Message, WsError>>,
    ) -> Result<(), Ended> {
        let text = match frame {
            None => return Err(Ended),
            Some(Err(WsError::Capacity(_))) => {
                return Err(
                    close(ws, close::FRAME_TOO_LARGE, "frames are at most 16384 bytes").await,
                );
            }
            Some(Err(_)) => return Err(Ended),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => {
                // Answer the close (tungstenite queued the reply).
                let _ = tokio::time::timeout(SEND_TIMEOUT, ws.close(None)).await;
                return Err(Ended);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(()),
            Some(Ok(Message::Binary(_))) => {
                return send(ws, json!({"type": "error", "code": "bad_frame", "message": "frames are JSON text"})).await;
            }
        };
        if self.app.clock.now_secs() > self.until {
            return Err(close(
                ws,
                close::TOKEN_REFUSED,
                "expired: send a refresh frame before the token expires",
            )
            .await);
        }
        // Every frame counts against the rate, not only messages.
        self.pace(ws).await?;
        let up = match serde_json::from_str::<Up>(&text) {
            Ok(up) => up,
            Err(e) => {
                let what = format!(
                    "not a frame this server knows ({:?} error at column {}): send auth, message or refresh",
                    e.classify(),
                    e.column()
                );
                return send(
                    ws,
                    json!({"type": "error", "code": "bad_frame", "message": what}),
                )
                .await;
            }
        };
        match up {
            Up::Auth { .. } => {
                send(ws, json!({"type": "error", "code": "bad_frame", "message": "already authenticated; send refresh to change the token"})).await
            }
            Up::Refresh { token } => match verify(&self.app, &token) {
                Ok((user, until))
                    if user.subject == self.user.subject && user.issuer == self.user.issuer =>
                {
                    self.user = user;
                    self.until = until;
                    send(ws, json!({"type": "refreshed", "expires_at": until, "now": self.app.clock.now_secs()})).await
                }
                Ok(_) => Err(close(ws, close::TOKEN_REFUSED, "a refresh must name the same user; open a new session for another").await),
                Err(reason) => Err(close(ws, close::TOKEN_REFUSED, &reason).await),
            },
            Up::Message {} => self.message(ws, text.as_bytes()).await,
        }
    }

    /// Applies the rate limit: a client over it is told once and slowed
    /// down (its next frame is read only when allowed); one that keeps
    /// flooding for [`FLOOD_CLOSE_AFTER`] is closed.
    async fn pace(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        match self.bucket.take(Instant::now()) {
            Pace::Go => Ok(()),
            Pace::Wait { wait, tell } => {
                if self.bucket.limited_for(Instant::now()) > FLOOD_CLOSE_AFTER {
                    return Err(close(
                        ws,
                        close::RATE_LIMIT,
                        "still flooding after 30 s of being slowed down",
                    )
                    .await);
                }
                if tell {
                    send(ws, json!({"type": "error", "code": "rate_limited",
                        "message": format!("slow down: at most {RATE_PER_SECOND} messages a second; the rest wait their turn")})).await?;
                }
                tokio::time::sleep(wait).await;
                Ok(())
            }
        }
    }

    /// Records a message sent up, then acknowledges it (and sends what it
    /// changed).
    async fn message(&mut self, ws: &mut Ws, body: &[u8]) -> Result<(), Ended> {
        let client_id = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("client_id").cloned())
            .unwrap_or(Value::Null);
        let Some(plugin) = self.app.plugins.get("widget") else {
            return send(ws, json!({"type": "error", "code": "not_found", "message": "the widget plugin is not loaded", "client_id": client_id})).await;
        };
        let request_id = crate::ids::request_id();
        let span = super::webhook::inbound_span("widget", &plugin, &request_id);
        let request = chatcrafter_core::channel::InboundRequest::for_plugin(
            ("POST", "/widget/v1/messages", ""),
            vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            None,
            body,
            RequestContext {
                received_at_ms: self.app.clock.now_ms(),
                request_id,
                user: Some(self.user.clone()),
                settings: vec![],
            },
        );
        let taken = super::widget::take(&self.app, &plugin, request)
            .instrument(span)
            .await;
        match taken {
            Ok(inbound) => {
                let id = serde_json::from_slice::<Value>(&inbound.response.body)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                send(ws, json!({"type": "ack", "client_id": client_id, "id": id})).await?;
                if self.customer.is_none() {
                    self.resolve().await;
                }
                self.catch_up(ws).await
            }
            Err(e) => {
                send(ws, json!({"type": "error", "code": e.code, "message": e.message, "client_id": client_id})).await
            }
        }
    }
}

/// The entries a client has, with the status it was last told: the newest
/// `2 × HISTORY`, by when they were first sent.
#[derive(Debug, Default)]
struct Seen {
    status: HashMap<String, Option<String>>,
    order: std::collections::VecDeque<String>,
}

impl Seen {
    fn get(&self, id: &str) -> Option<&Option<String>> {
        self.status.get(id)
    }

    fn contains_key(&self, id: &str) -> bool {
        self.status.contains_key(id)
    }

    fn insert(&mut self, id: String, status: Option<String>) {
        if self.status.insert(id.clone(), status).is_none() {
            self.order.push_back(id);
            while self.order.len() > 2 * HISTORY {
                if let Some(old) = self.order.pop_front() {
                    self.status.remove(&old);
                }
            }
        }
    }
}

/// What the rate limit says about one more message.
#[derive(Debug, PartialEq)]
enum Pace {
    Go,
    /// Wait this long first; `tell` the first time in a row.
    Wait {
        wait: Duration,
        tell: bool,
    },
}

/// A token bucket of [`RATE_BURST`] messages refilled at
/// [`RATE_PER_SECOND`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
    limited_since: Option<Instant>,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            tokens: f64::from(RATE_BURST),
            at: None,
            limited_since: None,
        }
    }

    fn take(&mut self, now: Instant) -> Pace {
        if let Some(at) = self.at {
            let refill = now.duration_since(at).as_secs_f64() * f64::from(RATE_PER_SECOND);
            self.tokens = (self.tokens + refill).min(f64::from(RATE_BURST));
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.limited_since = None;
            return Pace::Go;
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / f64::from(RATE_PER_SECOND));
        // The wait pays for this message.
        self.tokens -= 1.0;
        let tell = self.limited_since.is_none();
        self.limited_since.get_or_insert(now);
        Pace::Wait { wait, tell }
    }

    fn limited_for(&self, now: Instant) -> Duration {
        self.limited_since
            .map_or(Duration::ZERO, |t| now.duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_paces_and_tells_once() {
        let mut b = Bucket::new();
        let t0 = Instant::now();
        for _ in 0..RATE_BURST {
            assert_eq!(b.take(t0), Pace::Go);
        }
        let Pace::Wait { wait, tell: true } = b.take(t0) else {
            panic!("over the burst")
        };
        assert_eq!(wait, Duration::from_millis(100));
        let Pace::Wait { tell: false, .. } = b.take(t0) else {
            panic!("told once")
        };
        // A second later the bucket has refilled ten.
        let later = t0 + Duration::from_secs(1);
        let mut going = 0;
        let stopped = loop {
            match b.take(later) {
                Pace::Go => going += 1,
                wait => break wait,
            }
        };
        assert_eq!(going, 8, "ten refilled, two already owed");
        assert!(
            matches!(stopped, Pace::Wait { tell: true, .. }),
            "told again, after going"
        );
    }
}
