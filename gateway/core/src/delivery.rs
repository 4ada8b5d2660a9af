//! Outbound delivery policy: the durable job queue's records, retries with
//! exponential backoff, and turning a plugin's rendered call into the exact
//! request the host sends — credentials filled in, and refused if it would
//! leave the channel's `api_base`.
//!
//! The queue itself lives in the store (see [`crate::jobs`]); the host
//! owns the clock, the HTTP client and the plugin runtime.

mod plan;

use std::collections::BTreeMap;

pub use plan::{Plan, Situation, fit, plan};
use serde::{Deserialize, Serialize};

use crate::channel::HttpCall;
use crate::conversation::state::Route;

/// Jobs are spread over this many queue shards, by customer (a customer's
/// jobs are all in one shard).
pub const SHARDS: u32 = 64;

/// The shard of a customer's jobs.
pub fn shard_of(customer_id: &str) -> u32 {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in customer_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

/// A job in a shard's index: its id and when it is next due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// The job id, `j_` + 32 hex digits.
    pub id: String,
    /// Unix milliseconds; a claimed job is pushed to the end of its lease.
    pub due_ms: u64,
    /// Where the entry was found: its FIFO slot (`None`: the later list).
    /// Filled in by reads, not stored.
    #[serde(skip)]
    pub slot: Option<u64>,
}

impl JobKind {
    /// Its name in logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobKind::Agent { .. } => "agent",
            JobKind::Deliver { .. } => "deliver",
            JobKind::Reminder { .. } => "reminder",
        }
    }

    /// The customer it is about, where the job itself says.
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            JobKind::Agent { customer_id, .. } | JobKind::Reminder { customer_id, .. } => {
                Some(customer_id)
            }
            JobKind::Deliver { .. } => None,
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Ask the agent to answer an inbound timeline entry.
    Agent {
        /// The customer the message was recorded for.
        customer_id: String,
        /// The inbound entry.
        entry_id: String,
        /// Where to answer: the sender's identity and reply handle.
        route: Route,
    },
    /// Deliver a stored outbound message.
    Deliver {
        /// The outbound message.
        outbound_id: String,
    },
    /// Remind about an abandoned cart, unless a purchase came since.
    Reminder {
        /// The customer.
        customer_id: String,
        /// When the cart was abandoned (Unix seconds).
        abandoned_at: u64,
    },
}

/// A queued job, as stored (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `j_` + 32 hex digits.
    pub id: String,
    /// What to do.
    pub kind: JobKind,
    /// Attempts started so far (each claim is one).
    pub attempts: u32,
    /// Unix milliseconds when enqueued.
    pub created_ms: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Its FIFO slot in the shard; `None` while in the shard's later list.
    #[serde(default)]
    pub slot: Option<u64>,
}

/// Where an outbound message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundState {
    /// Waiting to be sent (or to be retried).
    Queued,
    /// Accepted by the channel API.
    Sent,
    /// The channel reports it delivered.
    Delivered,
    /// The channel reports it read.
    Read,
    /// Given up on, or refused by the channel.
    Failed,
}

impl OutboundState {
    /// The name used in timelines and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundState::Queued => "queued",
            OutboundState::Sent => "sent",
            OutboundState::Delivered => "delivered",
            OutboundState::Read => "read",
            OutboundState::Failed => "failed",
        }
    }

    /// The state after a channel's status report: reports move forward
    /// only (a late `delivered` never undoes `read`), and `failed` wins.
    pub fn advance(self, reported: OutboundState) -> OutboundState {
        if reported == OutboundState::Failed || self == OutboundState::Failed {
            return OutboundState::Failed;
        }
        self.max(reported)
    }
}

/// An outbound message, as stored (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// `o_` + 32 hex digits; also the idempotency key of every attempt.
    pub id: String,
    /// The customer it is for.
    pub customer_id: String,
    /// The text, as a person reads it (rich content's numbered or
    /// captioned form).
    pub text: String,
    /// The content when it is more than text (choices, media, a
    /// template); `None`: [`Outbound::text`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::channel::OutboundContent>,
    /// `agent`, `human` or `reminder`.
    pub author: String,
    /// Where it may go, best first: a route the plugin cannot render for
    /// (a Discord user without an open interaction, …) falls through to
    /// the next.
    pub routes: Vec<Route>,
    /// The route in use.
    pub route: usize,
    /// Its timeline entry's storage key (its status is kept there too).
    pub entry_key: String,
    /// State.
    pub state: OutboundState,
    /// The channel's id for it, once sent.
    pub provider_message_id: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
}

impl Outbound {
    /// What to send: the rich content, or the text.
    pub fn content(&self) -> crate::channel::OutboundContent {
        self.content
            .clone()
            .unwrap_or_else(|| crate::channel::OutboundContent::text(&self.text))
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Delay before the first retry, doubled each time.
    pub base_delay_ms: u64,
    /// Longest delay between attempts.
    pub max_delay_ms: u64,
    /// How long a claimed job is left to its claimer before another worker
    /// (or this one, restarted) takes it again.
    pub lease_ms: u64,
}

impl Policy {
    /// The delay before attempt `attempts + 1`, or `None` once `attempts`
    /// reached the maximum.
    pub fn retry_delay(&self, attempts: u32) -> Option<u64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(32);
        Some(
            self.base_delay_ms
                .saturating_mul(1u64 << exp)
                .min(self.max_delay_ms),
        )
    }
}

/// What a channel API's answer means for the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Sent,
    /// Worth retrying: 408, 425, 429 and 5xx (and transport errors).
    Retry,
    /// Refused for good (other 4xx): retrying would change nothing.
    Refused,
}

/// Classifies an HTTP status from a channel API.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Sent,
        408 | 425 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Refused,
    }
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Method.
    pub method: String,
    /// Absolute URL, under the channel's `api_base`.
    pub url: String,
    /// Headers, the credential included.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Why a rendered call cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The channel has no `api_base`.
    #[error("channel `{0}` has no api_base to send to")]
    NoApiBase(String),
    /// The path would leave `api_base`, or is not a plain path.
    #[error("refused destination: {0}")]
    Destination(String),
    /// The call names a secret the channel does not have.
    #[error("the channel has no secret `{0}`")]
    MissingSecret(String),
    /// A header the plugin may not set.
    #[error("header `{0}` may not be set by a plugin")]
    Header(String),
}

/// Builds the request for `call`: `api_base` ‖ path with `{secret:NAME}`
/// filled in, and the credential header added. Refuses anything that would
/// send the request (or a secret) anywhere but under `api_base`.
pub fn prepare(
    channel: &str,
    call: &HttpCall,
    api_base: Option<&str>,
    secrets: &BTreeMap<String, String>,
) -> Result<Prepared, PrepareError> {
    let base = api_base
        .map(|b| b.trim_end_matches('/'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| PrepareError::NoApiBase(channel.to_string()))?;
    let path = &call.path;
    let bad = |why: &str| PrepareError::Destination(format!("{why} in path `{path}`"));
    if !path.starts_with('/') || path.contains("//") {
        return Err(bad("not a path under api_base"));
    }
    // No query: a `?` that data brought into a segment would turn the rest
    // of the path into a query (`/{id}/messages` with an id `1/x?`).
    if path.contains('?') {
        return Err(bad("a query"));
    }
    if escapes(path) {
        return Err(bad("a dot segment, backslash or percent-escape"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '#' | '@'))
    {
        return Err(bad("a character a path may not hold"));
    }
    // Secrets go in only after the checks, and must not be able to change
    // where the request goes.
    let mut filled = String::with_capacity(path.len() + 64);
    let mut rest = path.as_str();
    while let Some(start) = rest.find("{secret:") {
        filled.push_str(&rest[..start]);
        let after = &rest[start + "{secret:".len()..];
        let end = after
            .find('}')
            .ok_or_else(|| bad("an unterminated secret placeholder"))?;
        let name = &after[..end];
        let value = secrets
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PrepareError::MissingSecret(name.to_string()))?;
        if value
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '~')))
            || value.chars().all(|c| c == '.')
        {
            return Err(PrepareError::Destination(format!(
                "secret `{name}` has characters that cannot go in a URL path"
            )));
        }
        filled.push_str(value);
        rest = &after[end + 1..];
    }
    filled.push_str(rest);
    // And once more with the secrets in, however they combine.
    if escapes(&filled) || filled.contains("//") {
        return Err(PrepareError::Destination(
            "the path with its secrets filled in leaves api_base".into(),
        ));
    }
    let mut headers = Vec::with_capacity(call.headers.len() + 1);
    let reserved = |name: &str| {
        matches!(
            name.to_ascii_lowercase().as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "idempotency-key"
        )
    };
    for h in &call.headers {
        if reserved(&h.name) || h.name.eq_ignore_ascii_case("authorization") {
            return Err(PrepareError::Header(h.name.clone()));
        }
        headers.push((h.name.clone(), h.value.clone()));
    }
    if let Some(c) = &call.credential {
        if reserved(&c.name) {
            return Err(PrepareError::Header(c.name.clone()));
        }
        let value = secrets
            .get(&c.secret)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PrepareError::MissingSecret(c.secret.clone()))?;
        headers.push((c.name.clone(), format!("{}{value}", c.prefix)));
    }
    Ok(Prepared {
        method: call.method.clone(),
        url: format!("{base}{filled}"),
        headers,
        body: call.body.clone(),
    })
}

/// Whether a path could resolve outside the prefix it is appended to: a
/// `.`/`..` segment, a backslash, or a percent-escape (which a server may
/// decode into either).
fn escapes(route: &str) -> bool {
    route.contains('%')
        || route
            .split('/')
            .any(|seg| seg == ".." || seg == "." || seg.contains('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{CredentialHeader, Header};

    fn call(path: &str) -> HttpCall {
        HttpCall {
            method: "POST".into(),
            path: path.into(),
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: b"{}".to_vec(),
            credential: None,
            sent_id: None,
        }
    }

    fn secrets() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("bot_token".to_string(), "123:ABC-def".to_string()),
            ("access_token".to_string(), "EAAG".to_string()),
            ("evil".to_string(), "x/../../y".to_string()),
            ("dots".to_string(), "..".to_string()),
        ])
    }

    #[test]
    fn secrets_fill_the_path_and_the_credential_header() {
        let mut c = call("/bot{secret:bot_token}/sendMessage");
        let p = prepare(
            "telegram",
            &c,
            Some("https://api.telegram.org/"),
            &secrets(),
        )
        .unwrap();
        assert_eq!(p.url, "https://api.telegram.org/bot123:ABC-def/sendMessage");
        c.path = "/1234/messages".into();
        c.credential = Some(CredentialHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
            secret: "access_token".into(),
        });
        let p = prepare("whatsapp", &c, Some("http://127.0.0.1:9/v21.0"), &secrets()).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:9/v21.0/1234/messages");
        assert!(
            p.headers
                .contains(&("authorization".into(), "Bearer EAAG".into()))
        );
    }

    #[test]
    fn nothing_leaves_api_base() {
        let base = Some("https://graph.facebook.com/v21.0");
        for path in [
            "https://evil.example/x",
            "//evil.example/x",
            "/../v1.0/me",
            "/a/./b",
            "/a\\b",
            "/x@evil.example",
            "/a b",
            "/a#frag",
            "relative",
            "/%2e%2e/v1.0/me",
            "/a%2fb",
            "/bot{secret:dots}/x",
        ] {
            let e = prepare("whatsapp", &call(path), base, &secrets()).unwrap_err();
            assert!(matches!(e, PrepareError::Destination(_)), "{path}: {e}");
        }
        let e = prepare("telegram", &call("/bot{secret:evil}/x"), base, &secrets()).unwrap_err();
        assert!(e.to_string().contains("secret `evil`"), "{e}");
        let e = prepare("whatsapp", &call("/x"), None, &secrets()).unwrap_err();
        assert_eq!(e, PrepareError::NoApiBase("whatsapp".into()));
        let e = prepare("telegram", &call("/bot{secret:nope}/x"), base, &secrets()).unwrap_err();
        assert_eq!(e, PrepareError::MissingSecret("nope".into()));
        let mut c = call("/x");
        c.headers.push(Header {
            name: "Host".into(),
            value: "evil.example".into(),
        });
        assert_eq!(
            prepare("whatsapp", &c, base, &secrets()).unwrap_err(),
            PrepareError::Header("Host".into())
        );
        let mut c = call("/x");
        c.credential = Some(CredentialHeader {
            name: "Host".into(),
            prefix: String::new(),
            secret: "access_token".into(),
        });
        assert_eq!(
            prepare("whatsapp", &c, base, &secrets()).unwrap_err(),
            PrepareError::Header("Host".into())
        );
        // A query, or an empty segment, is refused: data in a segment could
        // otherwise cut the path short (`1/x?` as a phone_number_id).
        for path in ["/1/x?/messages", "/1/messages?x=1", "/1//messages"] {
            assert!(
                matches!(
                    prepare("whatsapp", &call(path), base, &secrets()),
                    Err(PrepareError::Destination(_))
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling_then_gives_up() {
        let p = Policy {
            max_attempts: 5,
            base_delay_ms: 100,
            max_delay_ms: 500,
            lease_ms: 1_000,
        };
        let delays: Vec<_> = (1..=5).map(|a| p.retry_delay(a)).collect();
        assert_eq!(delays, [Some(100), Some(200), Some(400), Some(500), None]);
    }

    #[test]
    fn statuses_only_move_forward_and_failure_wins() {
        use OutboundState::*;
        assert_eq!(Read.advance(Delivered), Read);
        assert_eq!(Sent.advance(Read), Read);
        assert_eq!(Read.advance(Failed), Failed);
        assert_eq!(Failed.advance(Read), Failed);
        assert_eq!(verdict(201), Verdict::Sent);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        assert_eq!(verdict(400), Verdict::Refused);
        assert_eq!(verdict(401), Verdict::Refused);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("c_0"), shard_of("c_0"));
        let used: std::collections::BTreeSet<u32> =
            (0..200).map(|i| shard_of(&format!("c_{i:032x}"))).collect();
        assert!(used.len() > SHARDS as usize / 2);
        assert!(used.iter().all(|s| *s < SHARDS));
    }
}
