//! The one configuration struct (`gateway.toml`, `version = 1`).
//!
//! Longer than the other rooms on purpose: every section's struct, its
//! defaults and the validation across sections stay in one file, so the
//! whole of `gateway.toml` reads in one place (and its tests beside it).
//!
//! Parsing is sans-I/O: [`Config::parse`] takes the file's text, and
//! [`Config::apply_env`] takes a lookup function, so the host decides where
//! text and environment come from. Unknown keys are rejected with their full
//! path (`server.lisen`), and every secret can come from a
//! `GATEWAY_<SECTION>_<KEY>` environment variable instead of the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Must be 1.
    pub version: u32,
    /// Listener, TLS and limits.
    #[serde(default)]
    pub server: Server,
    /// Where state lives.
    #[serde(default)]
    pub store: Store,
    /// At-rest keys.
    #[serde(default)]
    pub security: Security,
    /// Identity resolution rules.
    #[serde(default)]
    pub identity: Identity,
    /// Widget authentication; absent = widget routes answer 404.
    pub widget: Option<Widget>,
    /// Channel name → channel.
    #[serde(default)]
    pub channels: BTreeMap<String, Channel>,
    /// Who answers customers.
    #[serde(default)]
    pub agent: Agent,
    /// Outbound delivery, reminders and frequency caps.
    #[serde(default)]
    pub delivery: Delivery,
    /// Admin API access.
    #[serde(default)]
    pub admin: Admin,
    /// Erasure receipts, retention.
    #[serde(default)]
    pub privacy: Privacy,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address to listen on.
    pub listen: String,
    /// PEM certificate chain; with `tls_key`, serves TLS 1.3 only.
    pub tls_cert: Option<String>,
    /// PEM private key.
    pub tls_key: Option<String>,
    /// Largest accepted body for webhooks, widget and business routes.
    pub max_body_bytes: u64,
    /// Largest accepted CSV import body.
    pub max_import_bytes: u64,
    /// Time allowed for a client to send the request headers, ms.
    pub header_timeout_ms: u64,
    /// Time a new connection may stay silent before its first byte, ms;
    /// a connection that sends nothing is closed.
    pub first_byte_timeout_ms: u64,
    /// Most connections open at once. Over it a new connection is answered
    /// 503 `overloaded` with `Retry-After` (a connection still silent is
    /// closed first to make room), never a failed `accept`. Lowered at
    /// start-up to what the process's file-descriptor limit allows.
    pub max_connections: u32,
    /// Bytes of request bodies held at once before verification, all
    /// connections together; a body that would pass it is answered 503
    /// `overloaded` with `Retry-After`.
    pub max_inflight_body_bytes: u64,
    /// Time allowed for a client to send the request body, ms.
    pub body_timeout_ms: u64,
    /// Time in-flight requests get to finish on shutdown, ms.
    pub shutdown_grace_ms: u64,
    /// Most events a plugin may return for one request; a plugin answer
    /// with more is refused as the plugin's fault (502 `plugin_failed`).
    pub max_events_per_request: u32,
    /// Serves the `/demo` pages, which mint widget tokens for anyone with
    /// `[widget] secret` and sign channel requests with the channels'
    /// secrets: for a developer's machine only, so it is refused on any
    /// address but loopback. Dev mode turns it on.
    pub demo: bool,
}

/// `line N, column M: ` for a span of `text`, or nothing without one.
fn at_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: ")
}

/// A type error without the value that caused it (`invalid type: string
/// "…", expected u64` → `invalid type: string, expected u64`): the value
/// may be a secret written under the wrong key.
fn without_value(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead) {
            let kind = rest.split([' ', ',']).next().unwrap_or_default();
            let expected = rest.find(", expected").map_or("", |i| &rest[i..]);
            return format!("{lead}{kind}{expected}");
        }
    }
    message.to_string()
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 1 << 20,
            max_import_bytes: 64 << 20,
            header_timeout_ms: 10_000,
            first_byte_timeout_ms: 5_000,
            // Room for the widget's 10,000 live sessions and as many
            // webhook and API connections again.
            max_connections: 20_000,
            max_inflight_body_bytes: 256 << 20,
            body_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            // WhatsApp batches at most 1000 updates a call, the largest
            // batch the bundled channels document.
            max_events_per_request: 1000,
            demo: false,
        }
    }
}

/// Which store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// redb file under `path`, single node.
    #[default]
    Embedded,
    /// Redis at `url`, several nodes.
    Redis,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// Backend.
    pub kind: StoreKind,
    /// Directory of the embedded store.
    pub path: String,
    /// Redis URL (`redis://` or `rediss://`).
    pub url: Option<String>,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// PEM file of the CA that signed the Redis server's certificate
    /// (`rediss://`); without it, the system's trust store.
    pub tls_ca_file: Option<String>,
    /// Directory of an embedded store of its own for customers' keys (the
    /// key vault); without it they are kept in the data store.
    pub key_vault_path: Option<String>,
    /// URL of a Redis of its own for customers' keys (the key vault);
    /// without it they are kept in the data store.
    pub key_vault_url: Option<String>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            kind: StoreKind::Embedded,
            path: "./data".into(),
            url: None,
            key_prefix: "cc:".into(),
            tls_ca_file: None,
            key_vault_path: None,
            key_vault_url: None,
        }
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// 32-byte base64 key sealing personal data (AES-256-GCM).
    pub data_key: Option<String>,
    /// 32-byte base64 key of the blind index (HMAC-SHA256).
    pub index_key: Option<String>,
    /// The id (1–255) new envelopes are sealed under with `data_key`.
    pub data_key_id: Option<u8>,
    /// Earlier data keys by id, still able to open what they sealed.
    pub retired_data_keys: BTreeMap<String, String>,
}

/// The identifier that links customers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryIdentifier {
    /// Email address.
    #[default]
    Email,
    /// Phone number.
    Phone,
    /// The business's user id.
    UserId,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Identifier tried first when linking by claims.
    pub primary_identifier: PrimaryIdentifier,
    /// Values never linked (shared test accounts, placeholders).
    pub blocked_values: Vec<String>,
    /// Max distinct values of each kind per customer.
    pub limits: BTreeMap<String, u32>,
    /// Window in which a cross-channel overwrite of an attribute is flagged, s.
    pub conflict_window_seconds: u64,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            primary_identifier: PrimaryIdentifier::Email,
            blocked_values: Vec::new(),
            limits: BTreeMap::from([("email".into(), 3), ("phone".into(), 3)]),
            conflict_window_seconds: 86_400,
        }
    }
}

/// `[widget]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    /// Allowed JWT algorithms (`none` is never accepted).
    pub algorithms: Vec<String>,
    /// HMAC secret for HS* tokens.
    pub secret: Option<String>,
    /// PEM public key for RS*/ES*/EdDSA tokens.
    pub public_key_pem: Option<String>,
    /// Path of a JWKS file; keys are selected by `kid`.
    pub jwks_file: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Origins allowed to call the widget routes from a browser.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Claims (`email`, `phone`) this business always verifies before it
    /// signs a token, so they link without `email_verified` /
    /// `phone_number_verified`.
    #[serde(default)]
    pub verified_claims: Vec<String>,
    /// Longest token lifetime accepted: `exp − iat`, or `exp − now` when
    /// `iat` is absent, seconds.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime_seconds: u64,
}

fn default_max_token_lifetime() -> u64 {
    crate::verify::jwt::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
}

fn default_leeway() -> u64 {
    60
}

/// `[channels.NAME]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// `builtin:NAME` or a path to a `.wasm` component.
    pub plugin: String,
    /// Base URL of the channel's API; outbound calls may go nowhere else.
    pub api_base: Option<String>,
    /// Secrets the plugin's manifest names.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Non-secret settings the plugin's manifest names.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Serve a plugin whose manifest declares no verification.
    #[serde(default)]
    pub allow_unverified: bool,
    /// Trust the plugin enough to reuse warm instances for one sender's
    /// messages (never across senders); off: a fresh instance per call.
    #[serde(default)]
    pub reuse_instances: bool,
    /// Whether the plugin's *verified* claims (a phone WhatsApp vouches
    /// for) may link a sender to an existing customer on their own. Unset:
    /// yes for a bundled plugin (`builtin:…`), no for a plugin loaded from
    /// a file, whose claims then become suggestions in the review queue.
    #[serde(default)]
    pub trust_verified_claims: Option<bool>,
    /// Templates by outbound purpose (`proactive`, `person-reply`,
    /// `agent-reply`): what is sent instead of free text outside the
    /// channel's reply window.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateRef>,
}

/// `[channels.NAME.templates] PURPOSE = { name, language, parameters }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    /// The template's approved name.
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// Values for its placeholders, in order, sent as written.
    #[serde(default)]
    pub parameters: Vec<String>,
}

impl Channel {
    /// [`Channel::trust_verified_claims`], with its default applied.
    pub fn trusts_verified_claims(&self) -> bool {
        self.trust_verified_claims
            .unwrap_or_else(|| self.plugin.starts_with("builtin:"))
    }
}

/// Which agent answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// The built-in context-aware agent.
    #[default]
    Builtin,
    /// The business's own HTTP endpoint.
    Webhook,
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Builtin or webhook.
    pub kind: AgentKind,
    /// Webhook URL.
    pub url: Option<String>,
    /// Secret signing calls to the webhook.
    pub secret: Option<String>,
    /// How long one webhook call may take, ms.
    pub timeout_ms: u64,
    /// Calls before a message is handed to a person instead.
    pub max_attempts: u32,
    /// Timeline entries sent with each call (the most recent).
    pub history: usize,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            kind: AgentKind::Builtin,
            url: None,
            secret: None,
            timeout_ms: 10_000,
            max_attempts: 5,
            history: 20,
        }
    }
}

/// `[delivery]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Attempts per outbound message before it fails onto the hand-off
    /// inbox.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt, ms.
    pub backoff_base_ms: u64,
    /// Longest retry delay, ms.
    pub backoff_max_ms: u64,
    /// How long one channel API call may take, ms.
    pub timeout_ms: u64,
    /// How long a claimed job is left to its worker before another (or
    /// this one, restarted) takes it again, ms.
    pub lease_ms: u64,
    /// How often the queue is checked for due jobs, ms (new jobs on this
    /// node start at once).
    pub poll_ms: u64,
    /// Delay from a `cart_abandoned` event to its reminder, seconds.
    pub reminder_delay_seconds: u64,
    /// Proactive messages (reminders) per customer per rolling day, across
    /// every channel.
    pub proactive_per_day: u32,
    /// Channels to try for proactive messages, best first, after the
    /// customer's `preferred_channel` attribute.
    pub channel_priority: Vec<String>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            timeout_ms: 10_000,
            lease_ms: 30_000,
            poll_ms: 250,
            reminder_delay_seconds: 86_400,
            proactive_per_day: 1,
            channel_priority: vec!["whatsapp".into(), "telegram".into(), "widget".into()],
        }
    }
}

/// `[privacy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Ed25519 seed (32 bytes, base64) that signs erasure receipts;
    /// without it a key derived from `security.data_key` signs.
    pub receipt_key: Option<String>,
    /// The id receipts name their signing key by.
    pub receipt_key_id: Option<String>,
    /// Conversation history older than this many days is removed (30 or
    /// more; 0 keeps it forever).
    pub history_days: u64,
    /// Customers inactive this many days are archived (0: never).
    pub archive_after_days: u64,
    /// Archived customers are erased after this many days (0: never).
    pub delete_archived_after_days: u64,
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy {
            receipt_key: None,
            receipt_key_id: None,
            history_days: 730,
            archive_after_days: 365,
            delete_archived_after_days: 365,
        }
    }
}

impl Privacy {
    /// The retention rules.
    pub fn retention(&self) -> crate::retention::Retention {
        crate::retention::Retention {
            history_days: self.history_days,
            archive_after_days: self.archive_after_days,
            delete_archived_after_days: self.delete_archived_after_days,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Bearer tokens, stored as SHA-256 hashes.
    pub tokens: Vec<AdminToken>,
}

/// An admin role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Customers, timelines, hand-offs, replies, link tokens, events.
    Agent,
    /// Analytics only.
    Analyst,
    /// The audit log only.
    Auditor,
}

/// `[[admin.tokens]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it (shown in the audit log).
    pub name: String,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// What it may do.
    pub role: Role,
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or a key or value that does not fit.
    #[error("{path}: {message}")]
    Invalid {
        /// Dotted key path, or `(root)`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn at(path: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// The environment variable that overrides the secret at `parts`:
/// `GATEWAY_` and the parts upper-cased, `-` as `_`
/// (`["channels", "wa-2", "app_secret"]` → `GATEWAY_CHANNELS_WA_2_APP_SECRET`).
pub fn env_var(parts: &[&str]) -> String {
    std::iter::once("GATEWAY")
        .chain(parts.iter().copied())
        .map(|p| p.replace('-', "_").to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("_")
}

/// The environment variable of channel `channel`'s secret `secret`.
pub fn channel_secret_env(channel: &str, secret: &str) -> String {
    env_var(&["channels", channel, secret])
}

impl Config {
    /// Parses and checks `gateway.toml` text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_unchecked(text)?;
        config.check()?;
        Ok(config)
    }

    /// Parses `gateway.toml` text without checking it: for a host that
    /// applies its secrets ([`Config::apply_env`]) before [`Config::check`].
    pub fn parse_unchecked(text: &str) -> Result<Config, ConfigError> {
        // Errors name the line and the key, never the text around them:
        // toml's rendering quotes the offending line, which may hold a
        // secret.
        let de = toml::Deserializer::parse(text).map_err(|e| {
            ConfigError::at(
                "(file)",
                format!("{}{}", at_line(text, e.span()), e.message().trim()),
            )
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "(root)".to_string()
            } else {
                path
            };
            let inner = e.into_inner();
            let line = at_line(text, inner.span());
            let message = without_value(inner.message().trim());
            match line.strip_suffix(": ") {
                Some(line) => ConfigError::at(&path, format!("{message} ({line})")),
                None => ConfigError::at(&path, message),
            }
        })?;
        Ok(config)
    }

    /// Overrides secrets from `GATEWAY_<SECTION>_<KEY>` variables:
    /// `GATEWAY_SECURITY_DATA_KEY`, `GATEWAY_WIDGET_SECRET`,
    /// `GATEWAY_AGENT_SECRET`, and `GATEWAY_CHANNELS_<NAME>_<SECRET>` for each
    /// name in `secret_names(channel)` (the plugin's declared secrets).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
        secret_names: impl Fn(&str) -> Vec<String>,
    ) {
        let var = |parts: &[&str]| lookup(&env_var(parts));
        if let Some(v) = var(&["security", "data_key"]) {
            self.security.data_key = Some(v);
        }
        if let Some(v) = var(&["security", "index_key"]) {
            self.security.index_key = Some(v);
        }
        if let Some(w) = &mut self.widget
            && let Some(v) = var(&["widget", "secret"])
        {
            w.secret = Some(v);
        }
        if let Some(v) = var(&["agent", "secret"]) {
            self.agent.secret = Some(v);
        }
        for (name, channel) in &mut self.channels {
            for secret in secret_names(name) {
                if let Some(v) = var(&["channels", name, &secret]) {
                    channel.secrets.insert(secret, v);
                }
            }
        }
    }

    /// Checks what the types cannot say (every error names its key).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.version != 1 {
            return Err(ConfigError::at(
                "version",
                format!(
                    "version {} is not supported; this gateway reads version = 1",
                    self.version
                ),
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(ConfigError::at(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::at(
                "server.max_body_bytes",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            (
                "server.first_byte_timeout_ms",
                self.server.first_byte_timeout_ms,
            ),
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            (
                "server.max_connections",
                u64::from(self.server.max_connections),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::at(field, "must be at least 1"));
            }
        }
        if self.server.max_inflight_body_bytes < self.server.max_body_bytes {
            return Err(ConfigError::at(
                "server.max_inflight_body_bytes",
                format!(
                    "{} is less than server.max_body_bytes ({}): a body of the largest allowed size could never be read",
                    self.server.max_inflight_body_bytes, self.server.max_body_bytes
                ),
            ));
        }
        if self.server.demo {
            let host = self
                .server
                .listen
                .rsplit_once(':')
                .map_or(self.server.listen.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(ConfigError::at(
                    "server.demo",
                    format!(
                        "the demo mints widget tokens for anyone: it serves only on a loopback address, not `{}`",
                        self.server.listen
                    ),
                ));
            }
        }
        if self.server.max_events_per_request == 0 {
            return Err(ConfigError::at(
                "server.max_events_per_request",
                "must be at least 1",
            ));
        }
        if self.privacy.history_days != 0 && self.privacy.history_days < 30 {
            return Err(ConfigError::at(
                "privacy.history_days",
                "must be 30 or more (0 keeps history forever)",
            ));
        }
        if self.store.key_vault_path.is_some() && self.store.kind != StoreKind::Embedded {
            return Err(ConfigError::at(
                "store.key_vault_path",
                "is for an embedded store; a redis store takes key_vault_url",
            ));
        }
        if let Some(url) = &self.store.key_vault_url {
            if self.store.kind != StoreKind::Redis {
                return Err(ConfigError::at(
                    "store.key_vault_url",
                    "is for a redis store; an embedded store takes key_vault_path",
                ));
            }
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::at(
                    "store.key_vault_url",
                    format!("`{url}` must start with redis:// or rediss://"),
                ));
            }
        }
        if self.store.kind == StoreKind::Redis && self.store.url.is_none() {
            return Err(ConfigError::at("store.url", "a redis store needs a url"));
        }
        if let Some(url) = &self.store.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::at(
                "store.url",
                format!("`{url}` must start with redis:// or rediss://"),
            ));
        }
        for (name, ch) in &self.channels {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ConfigError::at(
                    &format!("channels.{name}"),
                    "channel names are lower case a-z, 0-9 and `-` (they appear in /webhooks/{channel})",
                ));
            }
            if let Some(base) = &ch.api_base
                && !(base.starts_with("https://") || base.starts_with("http://"))
            {
                return Err(ConfigError::at(
                    &format!("channels.{name}.api_base"),
                    format!("`{base}` must be an http:// or https:// URL"),
                ));
            }
            for (purpose, t) in &ch.templates {
                let at = format!("channels.{name}.templates.{purpose}");
                if !["proactive", "person-reply", "agent-reply"].contains(&purpose.as_str()) {
                    return Err(ConfigError::at(
                        &at,
                        "unknown purpose; templates are keyed by proactive, person-reply or agent-reply",
                    ));
                }
                if t.name.trim().is_empty() || t.language.trim().is_empty() {
                    return Err(ConfigError::at(
                        &at,
                        "a template needs a non-empty name and language",
                    ));
                }
            }
        }
        if let Some(w) = &self.widget {
            if w.algorithms.is_empty() {
                return Err(ConfigError::at(
                    "widget.algorithms",
                    "list at least one algorithm",
                ));
            }
            if w.secret.is_none() && w.public_key_pem.is_none() && w.jwks_file.is_none() {
                return Err(ConfigError::at(
                    "widget",
                    "set one of secret, public_key_pem or jwks_file to verify widget tokens",
                ));
            }
        }
        if self.agent.kind == AgentKind::Webhook && self.agent.url.is_none() {
            return Err(ConfigError::at("agent.url", "a webhook agent needs a url"));
        }
        if let Some(url) = &self.agent.url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::at(
                "agent.url",
                format!("`{url}` must be an http:// or https:// URL"),
            ));
        }
        if self.agent.kind == AgentKind::Webhook && self.agent.secret.is_none() {
            return Err(ConfigError::at(
                "agent.secret",
                "a webhook agent needs a secret to sign its calls with",
            ));
        }
        for (key, value) in [
            ("agent.max_attempts", self.agent.max_attempts),
            ("delivery.max_attempts", self.delivery.max_attempts),
        ] {
            if value == 0 {
                return Err(ConfigError::at(key, "must be at least 1"));
            }
        }
        for (key, value) in [
            ("agent.timeout_ms", self.agent.timeout_ms),
            ("delivery.timeout_ms", self.delivery.timeout_ms),
            ("delivery.lease_ms", self.delivery.lease_ms),
            ("delivery.poll_ms", self.delivery.poll_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::at(key, "must be more than 0"));
            }
        }
        if self.delivery.lease_ms <= self.delivery.timeout_ms.max(self.agent.timeout_ms) {
            return Err(ConfigError::at(
                "delivery.lease_ms",
                "must be longer than delivery.timeout_ms and agent.timeout_ms, or a slow call's job would be taken over while it runs",
            ));
        }
        for (i, t) in self.admin.tokens.iter().enumerate() {
            let ok =
                t.token_sha256.len() == 64 && t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(ConfigError::at(
                    &format!("admin.tokens[{i}].token_sha256"),
                    "must be 64 hex digits (the SHA-256 of the token)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_is_refused_off_loopback() {
        let on = |listen: &str| {
            Config::parse(&format!(
                "version = 1\n[server]\nlisten = \"{listen}\"\ndemo = true\n"
            ))
        };
        assert!(on("127.0.0.1:8080").is_ok());
        assert!(on("[::1]:8080").is_ok());
        assert!(on("localhost:8080").is_ok());
        let err = on("0.0.0.0:8080").unwrap_err().to_string();
        assert!(
            err.starts_with("server.demo: the demo mints widget tokens"),
            "{err}"
        );
        assert!(on("10.0.0.5:8080").is_err());
    }

    #[test]
    fn config_errors_name_the_line_and_key_but_never_quote_a_value() {
        let secret = "EAAG-super-secret-token";
        // A syntax error on a secret's line (an unclosed string)…
        let text = format!(
            "version = 1\n[channels.whatsapp]\nplugin = \"builtin:whatsapp\"\n[channels.whatsapp.secrets]\naccess_token = \"{secret}\n"
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("(file): line 5, column"), "{err}");
        assert!(!err.contains(secret), "{err}");
        // …and a secret pasted under a key that wants a number.
        let text = format!("version = 1\n[server]\nmax_connections = \"{secret}\"\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("server.max_connections: invalid type: string"),
            "{err}"
        );
        assert!(!err.contains(secret), "{err}");
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_path() {
        let err = Config::parse("version = 1\n[server]\nlisen = \"0.0.0.0:80\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("server.lisen: unknown field `lisen`, expected one of"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_key_inside_a_channel_names_the_channel() {
        let err = Config::parse(
            "version = 1\n[channels.whatsapp]\nplugin = \"builtin:whatsapp\"\napi_bse = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("channels.whatsapp.api_bse: unknown field `api_bse`"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_version_is_named() {
        let err = Config::parse("[server]\n").unwrap_err();
        assert!(err.to_string().contains("missing field `version`"), "{err}");
    }

    #[test]
    fn version_2_is_refused() {
        assert_eq!(
            Config::parse("version = 2").unwrap_err().to_string(),
            "version: version 2 is not supported; this gateway reads version = 1"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = Config::parse("version = 1\n[server]\nmax_body_bytes = \"big\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "server.max_body_bytes: invalid type: string, expected u64 (line 3, column 18)"
        );
        assert!(
            err.to_string()
                .starts_with("server.max_body_bytes: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let mut c = Config::parse(
            "version = 1\n[channels.whatsapp]\nplugin = \"builtin:whatsapp\"\n[channels.whatsapp.secrets]\napp_secret = \"file\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "GATEWAY_CHANNELS_WHATSAPP_APP_SECRET" => Some("env".to_string()),
            "GATEWAY_SECURITY_DATA_KEY" => Some("k".to_string()),
            _ => None,
        };
        c.apply_env(env, |_| vec!["app_secret".into(), "verify_token".into()]);
        assert_eq!(c.channels["whatsapp"].secrets["app_secret"], "env");
        assert!(!c.channels["whatsapp"].secrets.contains_key("verify_token"));
        assert_eq!(c.security.data_key.as_deref(), Some("k"));
    }
}

#[cfg(test)]
mod documented {
    use super::*;

    #[test]
    fn documented_example_loads() {
        let doc = include_str!("../../../docs/config.md");
        let example = doc
            .split("## Example")
            .nth(1)
            .and_then(|s| s.split("```toml\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("docs/config.md has a ```toml example under ## Example");
        let c = Config::parse(example).unwrap_or_else(|e| panic!("docs/config.md example: {e}"));
        assert_eq!(c.store.kind, StoreKind::Redis);
        assert_eq!(c.channels.len(), 3);
        assert_eq!(c.channels["telegram"].settings["bot_id"], "7012345678");
        assert_eq!(c.admin.tokens[0].role, Role::Admin);
        assert_eq!(
            c.server.max_import_bytes,
            64 << 20,
            "defaults fill what the example omits"
        );
    }
}
