//! The edge's logic, written against small traits so that it runs — and is
//! tested — on the host as well as in Spin: [`Variables`] (Spin's
//! variables), [`Plugin`] (the channel plugin composed into the component)
//! and the core's Redis [`Link`] (Spin's outbound Redis). Everything else
//! is the core's own code: the configuration, the channel's gate
//! (handshake, verification on the raw bytes), the plugin request with its
//! credential headers removed, the answer checks, the inbound unit (dedup,
//! resolve, sealed append, agent job) on the core's Redis backend with the
//! native gateway's key table and scripts, and the change notification
//! that wakes the native workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use chatcrafter_core::change::pubsub_channel;
use chatcrafter_core::channel::{
    AnswerRules, AuthenticatedUser, ChannelError, Header, Inbound, InboundRequest, Manifest,
    RequestContext,
};
use chatcrafter_core::config::{Config, StoreKind, channel_secret_env, env_var};
use chatcrafter_core::db::{Db, DbError};
use chatcrafter_core::identity::Rules;
use chatcrafter_core::quarantine::Malformed;
use chatcrafter_core::seal::Keyring;
use chatcrafter_core::store::BoxFuture;
use chatcrafter_core::store::redis::{Link, OverRedis};
use chatcrafter_core::verify::gate::{ChannelGate, inbound_secrets};
use chatcrafter_core::verify::handshake::Outcome;
use chatcrafter_core::verify::jwt::WidgetAuth;
use chatcrafter_core::{Clock, Fault};

/// The channel name the widget's component serves.
pub const WIDGET: &str = "widget";

/// An HTTP request, as the edge sees it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method, upper case.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query, without `?`.
    pub query: String,
    /// Headers, lower-case names.
    pub headers: Vec<Header>,
    /// Raw body.
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    /// The JSON error of INTERFACE §3: `{"error": {"code", "message"}}`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
        Response::new(status, "application/json", body.to_string().into_bytes())
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The value of header `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Spin's variables: the configuration (`gateway_toml`), the component's
/// channel (`channel`) and the secrets.
pub trait Variables: Send + Sync {
    /// The variable's value; `None` if the component has no such variable.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// The channel plugin composed into the component.
pub trait Plugin: Send + Sync {
    /// Its manifest.
    fn describe(&self) -> Manifest;
    /// Its `parse-inbound`; `plugin_id` (its manifest id) names the channel
    /// of the identities it returns, which contract 0.2 leaves to the host.
    fn parse_inbound(
        &self,
        request: InboundRequest,
        plugin_id: &str,
    ) -> Result<Inbound, ChannelError>;
}

/// The Spin variable that holds what environment variable `name` holds
/// natively: `GATEWAY_CHANNELS_WHATSAPP_APP_SECRET` →
/// `channels_whatsapp_app_secret` (Spin variable names are lower snake
/// case; `SPIN_VARIABLE_CHANNELS_WHATSAPP_APP_SECRET` sets it locally).
pub fn variable_for(env_name: &str) -> Option<String> {
    Some(env_name.strip_prefix("GATEWAY_")?.to_ascii_lowercase())
}

/// Why the edge cannot start: names what is wrong and where to set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn setup(message: impl Into<String>) -> SetupError {
    SetupError(message.into())
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// One component's state: its channel (or the widget), ready to serve.
pub struct Edge<L> {
    channel: String,
    manifest: Manifest,
    config: Config,
    gate: Option<ChannelGate>,
    widget: Option<WidgetAuth>,
    db: Db<OverRedis<L>>,
    changes: String,
    clock: Arc<dyn Clock>,
}

impl<L> std::fmt::Debug for Edge<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("channel", &self.channel)
            .field("plugin", &self.manifest.id)
            .finish_non_exhaustive()
    }
}

impl<L: Link> Edge<L> {
    /// Reads the configuration and secrets from `vars`, prepares the
    /// component's channel for `plugin`, and opens the store through
    /// `connect(url)` (the data store, and the key vault if one is
    /// configured).
    pub async fn load(
        vars: &dyn Variables,
        plugin: &dyn Plugin,
        connect: impl Fn(&str) -> L,
        clock: Arc<dyn Clock>,
    ) -> Result<Edge<L>, SetupError> {
        let var = async |name: &str| {
            vars.get(name)
                .await
                .map_err(|e| setup(format!("Spin variable `{name}`: {e}")))
        };
        let text = var("gateway_toml").await?.ok_or_else(|| {
            setup("Spin variable `gateway_toml` is not set: it holds the gateway's configuration (docs/edge.md)")
        })?;
        let channel = var("channel").await?.ok_or_else(|| {
            setup("Spin variable `channel` is not set: it names the channel this component serves")
        })?;
        let mut config = Config::parse_unchecked(&text)
            .map_err(|e| setup(format!("Spin variable `gateway_toml`: {e}")))?;
        let manifest = plugin.describe();
        manifest.validate().map_err(|e| {
            setup(format!(
                "the plugin composed for channel `{channel}` has an invalid manifest: {e}"
            ))
        })?;
        // Secrets come from Spin variables named like the native
        // environment variables (see [`variable_for`]).
        let mut wanted = vec![
            env_var(&["security", "data_key"]),
            env_var(&["security", "index_key"]),
            env_var(&["widget", "secret"]),
        ];
        let secret_names: Vec<String> = inbound_secrets(&manifest)
            .into_iter()
            .map(String::from)
            .collect();
        for s in &secret_names {
            wanted.push(channel_secret_env(&channel, s));
        }
        let mut values = BTreeMap::new();
        for env in &wanted {
            let name = variable_for(env).expect("GATEWAY_ names");
            // Empty counts as unset (a variable's default may be "").
            if let Some(v) = var(&name).await?.filter(|v| !v.is_empty()) {
                values.insert(env.clone(), v);
            }
        }
        config.apply_env(
            |name| values.get(name).cloned(),
            |c| match c == channel {
                true => secret_names.clone(),
                false => vec![],
            },
        );
        if let Some(url) = var("store_url").await?.filter(|v| !v.is_empty()) {
            config.store.url = Some(url);
        }
        // What the edge does not run is not its to check: the agent (the
        // native workers answer) and, outside the widget's component, the
        // widget (whose secret only that component is given).
        config.agent = Default::default();
        if channel != WIDGET {
            config.widget = None;
        }
        config
            .check()
            .map_err(|e| setup(format!("Spin variable `gateway_toml`: {e}")))?;
        if config.store.kind != StoreKind::Redis {
            return Err(setup(
                "store.kind: the edge keeps its state in Redis (kind = \"redis\"), shared with the native gateway",
            ));
        }
        if config.store.tls_ca_file.is_some() {
            return Err(setup(
                "store.tls_ca_file: the edge has no files; Spin's Redis client trusts the system's certificates for rediss://",
            ));
        }
        if config.store.key_vault_path.is_some() {
            return Err(setup(
                "store.key_vault_path: the edge has no files; keep customers' keys in a Redis vault (store.key_vault_url) or in the store",
            ));
        }
        let url =
            config.store.url.clone().ok_or_else(|| {
                setup("store.url: the Redis the edge and the native gateway share")
            })?;
        let random = random_key()?;
        let (gate, widget) = match channel.as_str() {
            WIDGET => {
                let w = config.widget.as_ref().ok_or_else(|| {
                    setup("widget: the widget component needs a [widget] section")
                })?;
                if w.jwks_file.is_some() {
                    return Err(setup(
                        "widget.jwks_file: the edge has no files; use widget.secret or widget.public_key_pem",
                    ));
                }
                let auth =
                    WidgetAuth::from_config(w, None).map_err(|e| setup(format!("widget: {e}")))?;
                (None, Some(auth))
            }
            name => {
                let c = config.channels.get(name).ok_or_else(|| {
                    setup(format!(
                        "channels.{name}: the component serves channel `{name}` (its `channel` variable), which gateway_toml does not configure"
                    ))
                })?;
                let gate = ChannelGate::new(
                    name,
                    c,
                    &manifest,
                    true,
                    |ch, s| {
                        format!(
                            "the Spin variable `{}`",
                            variable_for(&channel_secret_env(ch, s)).unwrap_or_default()
                        )
                    },
                    &random,
                )
                .map_err(|e| setup(e.to_string()))?;
                (Some(gate), None)
            }
        };
        let keys =
            Keyring::from_config(&config.security).map_err(|e| setup(format!("security: {e}")))?;
        let (rules, _warnings) = Rules::from_config(&config.identity).map_err(setup)?;
        let prefix = config.store.key_prefix.clone();
        let mut db = Db::new(
            OverRedis::new(connect(&url), &prefix),
            clock.clone(),
            Arc::new(keys),
            &prefix,
            rules,
            Arc::new(ring::rand::SystemRandom::new()),
        );
        if let Some(vault) = &config.store.key_vault_url {
            db = db.with_vault(OverRedis::new(connect(vault), &prefix));
        }
        Ok(Edge {
            changes: pubsub_channel(&prefix),
            channel,
            manifest,
            config,
            gate,
            widget,
            db,
            clock,
        })
    }

    /// The channel this component serves (`widget` for the widget).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// `server.max_body_bytes`: the host reads no more of a body.
    pub fn max_body_bytes(&self) -> u64 {
        self.config.server.max_body_bytes
    }

    /// The store, for the host's tests.
    pub fn db(&self) -> &Db<OverRedis<L>> {
        &self.db
    }

    /// Answers one request.
    pub async fn handle(&self, plugin: &dyn Plugin, req: Request) -> Response {
        let result = match (self.channel.as_str(), req.path.as_str()) {
            (WIDGET, "/widget/v1/messages") => self.widget_message(plugin, req).await,
            (WIDGET, "/widget/v1/history") => self.widget_history(req).await,
            (WIDGET, _) => Err(Response::error(404, "not_found", "no such route")),
            (channel, path) if path.strip_prefix("/webhooks/") == Some(channel) => {
                self.webhook(plugin, req).await
            }
            (_, path) => match path.strip_prefix("/webhooks/") {
                Some(other) => Err(Response::error(
                    404,
                    "unknown_channel",
                    format!("no channel `{other}` is configured"),
                )),
                None => Err(Response::error(404, "not_found", "no such route")),
            },
        };
        result.unwrap_or_else(|e| e)
    }

    /// `/webhooks/{channel}`: the handshake, verification on the raw
    /// bytes, the plugin, the inbound unit — and 2xx only once stored.
    async fn webhook(&self, plugin: &dyn Plugin, req: Request) -> Result<Response, Response> {
        let gate = self.gate.as_ref().expect("a channel component has a gate");
        match gate.handshake.respond(&req.method, &req.query) {
            Outcome::Accept(challenge) => {
                return Ok(Response::new(200, "text/plain", challenge.into_bytes()));
            }
            Outcome::Reject => {
                return Err(Response::error(
                    403,
                    "forbidden",
                    "the handshake token does not match",
                ));
            }
            Outcome::NotHandshake => {}
        }
        if req.method != "POST" {
            return Err(method_not_allowed(&req.method, "POST"));
        }
        self.check_size(&req)?;
        let now_ms = self.clock.now_ms();
        gate.verifier
            .verify(&req.headers, &req.body, now_ms / 1000)
            .map_err(|e| Response::error(401, e.code(), e.to_string()))?;
        let request = InboundRequest::for_plugin(
            (&req.method, &req.path, &req.query),
            req.headers,
            gate.verifier.secret_header(),
            &req.body,
            RequestContext {
                received_at_ms: now_ms,
                request_id: request_id(),
                user: None,
                settings: gate.settings.clone(),
            },
        );
        self.take(plugin, request).await
    }

    fn check_size(&self, req: &Request) -> Result<(), Response> {
        let max = self.max_body_bytes();
        match req.body.len() as u64 > max {
            true => Err(too_large(max)),
            false => Ok(()),
        }
    }

    /// Runs the plugin, checks its answer, records the request and
    /// announces what changed (the native workers wake on it).
    async fn take(
        &self,
        plugin: &dyn Plugin,
        request: InboundRequest,
    ) -> Result<Response, Response> {
        let m = &self.manifest;
        let request_id = request.context.request_id.clone();
        let body = request.body.clone();
        let received_at = request.context.received_at_ms / 1000;
        let inbound = match plugin.parse_inbound(request, &m.id) {
            Ok(i) => i,
            Err(ChannelError::Malformed(error) | ChannelError::Unsupported(error)) => {
                // The plugin's words may quote the payload: they go to the
                // sealed quarantine, and the answer names only the request.
                let item = Malformed {
                    request_id: request_id.clone(),
                    channel: self.channel.clone(),
                    at: received_at,
                    error,
                    body,
                    truncated: false,
                };
                let _ = self.db.keep_malformed(&item).await;
                return Err(Response::error(
                    400,
                    "malformed_payload",
                    format!(
                        "plugin {}@{} could not parse the request; it is kept for inspection as request {request_id} (GET /admin/v1/malformed)",
                        m.id, m.version
                    ),
                ));
            }
            Err(e) => {
                return Err(Response::error(
                    502,
                    "plugin_failed",
                    format!(
                        "plugin {}@{}: `parse-inbound` returned an error: {e}",
                        m.id, m.version
                    ),
                ));
            }
        };
        let rules = AnswerRules {
            plugin_id: &m.id,
            channel: &self.channel,
            max_events: self.config.server.max_events_per_request as usize,
            trust_verified_claims: self
                .config
                .channels
                .get(&self.channel)
                .is_none_or(|c| c.trusts_verified_claims()),
            now: self.clock.now_secs(),
        };
        let inbound = rules.apply(inbound).map_err(|e| {
            Response::error(
                502,
                "plugin_failed",
                format!(
                    "plugin {}@{}: `parse-inbound` returned an invalid answer: {e}",
                    m.id, m.version
                ),
            )
        })?;
        let record = self.db.record_request(&self.channel, &inbound).await;
        // Best effort: a lost notification delays a reply until the
        // workers' next poll, and costs no data.
        for change in record.changes() {
            let _ = self
                .db
                .backend()
                .link()
                .call(vec![
                    b"PUBLISH".to_vec(),
                    self.changes.as_bytes().to_vec(),
                    change.to_json().into_bytes(),
                ])
                .await;
        }
        if let Some(e) = record.error {
            return Err(db_error(e));
        }
        let mut resp = Response {
            status: inbound.response.status,
            headers: Vec::new(),
            body: inbound.response.body.clone(),
        };
        for h in &inbound.response.headers {
            resp.headers.push((h.name.clone(), h.value.clone()));
        }
        Ok(resp)
    }

    /// The widget user a request's Bearer JWT names, and its allowed origin;
    /// or the answer: 403 for an origin not allowed, 401 for a bad token,
    /// 204 for a preflight.
    fn widget_caller(
        &self,
        req: &Request,
        methods: &str,
    ) -> Result<(AuthenticatedUser, Option<String>), Response> {
        let w = self
            .config
            .widget
            .as_ref()
            .expect("the widget component has [widget]");
        let origin = req.header("origin").map(String::from);
        if let Some(o) = &origin
            && !w.allowed_origins.iter().any(|a| a == o)
        {
            return Err(Response::error(
                403,
                "origin_not_allowed",
                format!("origin {o} is not in widget.allowed_origins"),
            ));
        }
        let cors = |r: Response| with_cors(r, origin.as_deref());
        if req.method == "OPTIONS" {
            return Err(cors(
                Response::new(204, "text/plain", Vec::new())
                    .with("access-control-allow-methods", methods)
                    .with(
                        "access-control-allow-headers",
                        "authorization, content-type",
                    )
                    .with("access-control-max-age", "600"),
            ));
        }
        let token = req.header("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        let auth = self
            .widget
            .as_ref()
            .expect("the widget component has a verifier");
        let user = auth.verify(token, self.clock.now_secs()).map_err(|e| {
            let mut r = Response::error(401, "invalid_token", e.to_string())
                .with("www-authenticate", "Bearer error=\"invalid_token\"");
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                v["error"]["reason"] = e.reason().into();
                r.body = v.to_string().into_bytes();
            }
            cors(r)
        })?;
        Ok((user, origin))
    }

    /// `POST /widget/v1/messages`.
    async fn widget_message(
        &self,
        plugin: &dyn Plugin,
        req: Request,
    ) -> Result<Response, Response> {
        if !matches!(req.method.as_str(), "POST" | "OPTIONS") {
            return Err(method_not_allowed(&req.method, "POST, OPTIONS"));
        }
        let (user, origin) = self.widget_caller(&req, "POST, OPTIONS")?;
        let cors = |r: Response| with_cors(r, origin.as_deref());
        self.check_size(&req).map_err(cors)?;
        let request = InboundRequest::for_plugin(
            (&req.method, &req.path, &req.query),
            req.headers,
            None,
            &req.body,
            RequestContext {
                received_at_ms: self.clock.now_ms(),
                request_id: request_id(),
                user: Some(user),
                settings: vec![],
            },
        );
        self.take(plugin, request).await.map(cors).map_err(cors)
    }

    /// `GET /widget/v1/history`: the caller's unified timeline.
    async fn widget_history(&self, req: Request) -> Result<Response, Response> {
        if !matches!(req.method.as_str(), "GET" | "OPTIONS") {
            return Err(method_not_allowed(&req.method, "GET, OPTIONS"));
        }
        let (user, origin) = self.widget_caller(&req, "GET, OPTIONS")?;
        let cors = |r: Response| with_cors(r, origin.as_deref());
        let body = match self.db.find_identity(WIDGET, &user.subject).await {
            Ok(Some(id)) => match self.db.timeline(&id).await {
                Ok(entries) => chatcrafter_core::conversation::timeline_json(&id, &entries),
                Err(e) => return Err(cors(read_error(e))),
            },
            Ok(None) => serde_json::json!({"customer_id": null, "entries": []}),
            Err(e) => return Err(cors(read_error(e))),
        };
        Ok(cors(Response::new(
            200,
            "application/json",
            body.to_string().into_bytes(),
        )))
    }
}

fn method_not_allowed(method: &str, allow: &str) -> Response {
    Response::error(
        405,
        "method_not_allowed",
        format!("{method} is not allowed here; use {allow}"),
    )
    .with("allow", allow)
}

fn with_cors(r: Response, origin: Option<&str>) -> Response {
    match origin {
        Some(o) => r
            .with("access-control-allow-origin", o)
            .with("vary", "origin"),
        None => r,
    }
}

/// A store failure, answered as the native gateway does: the store's
/// fault 503 (the channel retries), anything else 500.
fn db_error(e: DbError) -> Response {
    match e.fault() {
        Fault::Store => Response::error(503, "store_unavailable", e.to_string()),
        _ => Response::error(
            500,
            "inbound_failed",
            format!("recording the request failed: {e}"),
        ),
    }
}

/// A failed read, answered as the native gateway does: the store's fault
/// 503; a value that does not open or decode 500, named.
fn read_error(e: DbError) -> Response {
    match (&e, e.fault()) {
        (_, Fault::Store) => Response::error(503, "store_unavailable", e.to_string()),
        (DbError::Seal { .. }, _) => Response::error(500, "sealed_value", e.to_string()),
        _ => Response::error(500, "unreadable_record", e.to_string()),
    }
}

/// 413 for a body over `max` bytes.
pub fn too_large(max: u64) -> Response {
    Response::error(
        413,
        "payload_too_large",
        format!("the body is over server.max_body_bytes ({max} bytes)"),
    )
}

/// The caller's headers, as the edge passes them on: lower-case names,
/// values that are not UTF-8 dropped, and none of the `spin-*` headers the
/// Spin host adds (`spin-full-url`, `spin-client-addr`, …): they are not
/// the caller's, and a plugin is not told the caller's address.
pub fn caller_headers<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<Header> {
    pairs
        .filter(|(n, _)| !n.to_ascii_lowercase().starts_with("spin-"))
        .filter_map(|(n, v)| {
            Some(Header {
                name: n.to_ascii_lowercase(),
                value: std::str::from_utf8(v).ok()?.to_string(),
            })
        })
        .collect()
}

fn random_key() -> Result<[u8; 32], SetupError> {
    use ring::rand::SecureRandom as _;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| setup("no randomness available"))?;
    Ok(key)
}

/// A request id: 16 random hex digits.
fn request_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
