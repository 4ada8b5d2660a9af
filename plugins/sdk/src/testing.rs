//! Native test helpers for plugin crates (feature `testing`, as a
//! dev-dependency): build a request — from code or from a recorded-request
//! file, the format `gateway plugin run --request` reads
//! (`docs/schemas/recorded-request.schema.json`) — sign it the way the
//! channel does, and read the events back.
//!
//! ```ignore
//! use chatcrafter_plugin_sdk::testing::*;
//!
//! #[test]
//! fn a_text_message_is_one_event() {
//!     let req = Request::post("/webhooks/acme", r#"{"id":"m1","text":"hi"}"#)
//!         .setting("bot_id", "42");
//!     let inbound = MyPlugin::parse_inbound(req.build()).unwrap();
//!     assert_eq!(texts(&inbound), ["hi"]);
//! }
//! ```
//!
//! The host verifies signatures before a plugin runs, so a plugin's own
//! tests rarely need one; [`Request::sign_hmac_sha256`] exists for recorded
//! requests that `gateway plugin run --secret` then verifies as the host
//! would.

use std::collections::BTreeMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::Deserialize;

use crate::wit::*;

/// A request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path: String,
    query: String,
    headers: Vec<Header>,
    body: Vec<u8>,
    received_at_ms: u64,
    request_id: String,
    settings: Vec<Setting>,
    user: Option<AuthenticatedUser>,
}

/// 2026-01-01T00:00:00Z, the default receive time of a built request.
pub const DEFAULT_RECEIVED_AT_MS: u64 = 1_767_225_600_000;

impl Request {
    /// A `POST` to `path` with `body`, received at
    /// [`DEFAULT_RECEIVED_AT_MS`].
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Request {
            method: Method::Post,
            path: path.to_string(),
            query: String::new(),
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.into(),
            received_at_ms: DEFAULT_RECEIVED_AT_MS,
            request_id: "req-test".into(),
            settings: Vec::new(),
            user: None,
        }
    }

    /// A `GET` to `path` with the raw query `query` (without `?`).
    pub fn get(path: &str, query: &str) -> Self {
        Request {
            method: Method::Get,
            query: query.to_string(),
            headers: Vec::new(),
            ..Request::post(path, Vec::new())
        }
    }

    /// Reads a recorded-request file (JSON: `method`, `path`, `query`,
    /// `headers` as a list or an object, `body` as text or an array of
    /// bytes, `context` with `received_at_ms`, `request_id`, `settings` as
    /// `[[name, value]]` and `user`) — the format of
    /// `docs/schemas/recorded-request.schema.json`.
    /// Panics, naming the file and the problem, when it cannot.
    pub fn from_fixture(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
        Self::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// [`Request::from_fixture`] from the file's text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let r: Recorded = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let headers = match r.headers {
            Headers::List(l) => l,
            Headers::Map(m) => m
                .into_iter()
                .map(|(name, value)| RecordedHeader { name, value })
                .collect(),
        };
        Ok(Request {
            method: method(&r.method),
            path: r.path,
            query: r.query,
            headers: headers
                .into_iter()
                .map(|h| Header {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value,
                })
                .collect(),
            body: match r.body {
                Body::Text(t) => t.into_bytes(),
                Body::Bytes(b) => b,
            },
            received_at_ms: r.context.received_at_ms.unwrap_or(DEFAULT_RECEIVED_AT_MS),
            request_id: r.context.request_id.unwrap_or_else(|| "req-test".into()),
            settings: r
                .context
                .settings
                .into_iter()
                .map(|(name, value)| Setting { name, value })
                .collect(),
            user: r.context.user.map(|u| AuthenticatedUser {
                issuer: u.issuer,
                subject: u.subject,
                claims: u
                    .claims
                    .into_iter()
                    .map(|c| Claim {
                        kind: match c.kind {
                            RecordedKind::Named(k) => match k.as_str() {
                                "email" => ClaimKind::Email,
                                "phone" => ClaimKind::Phone,
                                "name" => ClaimKind::Name,
                                "username" => ClaimKind::Username,
                                "user_id" => ClaimKind::UserId,
                                other => ClaimKind::Other(other.to_string()),
                            },
                            RecordedKind::Other { other } => ClaimKind::Other(other),
                        },
                        value: c.value,
                        verified: c.verified,
                    })
                    .collect(),
            }),
        })
    }

    /// Adds a header (its name lower-cased, as the host passes it).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.to_string(),
        });
        self
    }

    /// Adds a channel setting to the context.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push(Setting {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Sets the host's receive time, Unix milliseconds.
    pub fn received_at_ms(mut self, ms: u64) -> Self {
        self.received_at_ms = ms;
        self
    }

    /// Sets the user the host authenticated (the widget's JWT).
    pub fn user(mut self, user: AuthenticatedUser) -> Self {
        self.user = Some(user);
        self
    }

    /// Signs the body as an `hmac-sha256` scheme with template `{body}`
    /// does (WhatsApp, Messenger): `header: prefix + hex(HMAC(secret,
    /// body))`.
    pub fn sign_hmac_sha256(self, header: &str, prefix: &str, secret: &str) -> Self {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(&self.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let value = format!("{prefix}{hex}");
        self.header(header, &value)
    }

    /// The request as the host hands it to `parse-inbound`: headers that
    /// carry credentials (`authorization`, `cookie`) removed, as the host
    /// removes them.
    pub fn build(self) -> InboundRequest {
        InboundRequest {
            request: HttpRequest {
                method: self.method,
                path: self.path,
                query: self.query,
                headers: self
                    .headers
                    .into_iter()
                    .filter(|h| !matches!(h.name.as_str(), "authorization" | "cookie"))
                    .collect(),
                body: self.body,
            },
            context: RequestContext {
                received_at_ms: self.received_at_ms,
                request_id: self.request_id,
                user: self.user,
                settings: self.settings,
            },
        }
    }
}

fn method(m: &str) -> Method {
    match m.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recorded {
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: Body,
    #[serde(default)]
    context: RecordedContext,
}

/// A body as text, or as an array of bytes (a body that is not UTF-8).
#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Text(String),
    Bytes(Vec<u8>),
}

impl Default for Body {
    fn default() -> Self {
        Body::Text(String::new())
    }
}

fn post() -> String {
    "POST".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Headers {
    List(Vec<RecordedHeader>),
    Map(BTreeMap<String, String>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::List(Vec::new())
    }
}

#[derive(Deserialize)]
struct RecordedHeader {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RecordedContext {
    received_at_ms: Option<u64>,
    request_id: Option<String>,
    settings: Vec<(String, String)>,
    user: Option<RecordedUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedUser {
    issuer: String,
    subject: String,
    #[serde(default)]
    claims: Vec<RecordedClaim>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedClaim {
    kind: RecordedKind,
    value: String,
    verified: bool,
}

/// `"email"`, …, or `{"other": "loyalty"}`, as the recorded-request schema
/// writes a claim's kind.
#[derive(Deserialize)]
#[serde(untagged)]
enum RecordedKind {
    Named(String),
    Other { other: String },
}

/// The messages of an answer, in order.
pub fn messages(inbound: &Inbound) -> Vec<&InboundMessage> {
    inbound
        .events
        .iter()
        .filter_map(|e| match e {
            InboundEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The text contents of every message, in order.
pub fn texts(inbound: &Inbound) -> Vec<&str> {
    messages(inbound)
        .into_iter()
        .flat_map(|m| &m.contents)
        .filter_map(|c| match c {
            Content::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The delivery statuses of an answer, in order.
pub fn statuses(inbound: &Inbound) -> Vec<&DeliveryStatus> {
    inbound
        .events
        .iter()
        .filter_map(|e| match e {
            InboundEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// An outbound message of `content` to `id` in `scope`, as the host sends
/// it for an agent's reply now (`now` Unix seconds) to a customer who last
/// wrote a minute ago on channel `channel`.
pub fn outbound(
    channel: &str,
    scope: &str,
    id: &str,
    content: OutboundContent,
    now: u64,
) -> OutboundMessage {
    OutboundMessage {
        message_id: "o_test".into(),
        recipient: ChannelIdentity::new(scope, id),
        content,
        reply_handle: None,
        context: OutboundContext {
            channel: channel.to_string(),
            purpose: Purpose::AgentReply,
            last_inbound_at: Some(now.saturating_sub(60)),
            now,
            settings: Vec::new(),
        },
    }
}

/// The JSON body of a rendered HTTP call, and its path; panics (naming
/// what it got) when the request is not an HTTP call with a JSON body.
pub fn json_of(request: &OutboundRequest) -> (String, serde_json::Value) {
    match request {
        OutboundRequest::Http(call) => {
            let body = serde_json::from_slice(&call.body).unwrap_or_else(|e| {
                panic!(
                    "body of {} is not JSON ({e}): {}",
                    call.path,
                    String::from_utf8_lossy(&call.body)
                )
            });
            (call.path.clone(), body)
        }
        OutboundRequest::Push(frame) => panic!(
            "expected an HTTP call, got a push frame: {}",
            String::from_utf8_lossy(frame)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_request_reads_every_field_the_schema_allows() {
        let r = Request::from_json(
            r#"{"method": "GET", "path": "/webhooks/x", "query": "a=1",
                "headers": {"X-Token": "t", "Authorization": "Bearer s"}, "body": [0, 255],
                "context": {"received_at_ms": 5000, "request_id": "r-9",
                    "settings": [["bot_id", "42"]],
                    "user": {"issuer": "shop", "subject": "u-1",
                        "claims": [{"kind": "email", "value": "a@example.com", "verified": true},
                                   {"kind": {"other": "tier"}, "value": "gold", "verified": false}]}}}"#,
        )
        .unwrap()
        .build();
        assert_eq!(r.request.method, Method::Get);
        assert_eq!(r.request.query, "a=1");
        assert_eq!(r.request.body, [0, 255]);
        // Credential headers never reach a plugin, here as in the host.
        assert_eq!(
            r.request.headers,
            [Header {
                name: "x-token".into(),
                value: "t".into()
            }]
        );
        assert_eq!(r.context.received_at_ms, 5000);
        assert_eq!(r.context.settings[0].value, "42");
        let user = r.context.user.unwrap();
        assert_eq!(user.claims[0].kind, ClaimKind::Email);
        assert_eq!(user.claims[1].kind, ClaimKind::Other("tier".into()));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = Request::from_json(r#"{"bdy": "x"}"#).unwrap_err();
        assert!(e.contains("unknown field `bdy`"), "{e}");
    }

    #[test]
    fn a_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        let r = Request::post("/", "what do ya want for nothing?")
            .sign_hmac_sha256("x-sig", "sha256=", "Jefe")
            .build();
        let sig = r.request.headers.iter().find(|h| h.name == "x-sig").unwrap();
        assert_eq!(
            sig.value,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
