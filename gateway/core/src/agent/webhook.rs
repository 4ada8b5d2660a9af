//! The signed envelope of a call to a business's own agent (`[agent] kind =
//! "webhook"`). The gateway signs `timestamp ‖ "." ‖ body` with
//! HMAC-SHA256 under `[agent] secret`; the business checks the signature and
//! that the timestamp is recent before trusting the call.

use ring::hmac;

use crate::jobs::{AgentInput, Answer};

use crate::verify::{hex_decode, hex_encode};

/// The header carrying the signature: `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-chatcrafter-signature";

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed(timestamp, body));
    format!("t={timestamp},v1={}", hex_encode(tag.as_ref()))
}

/// Checks a signature header as a business would: well formed, within
/// `max_age` seconds of `now`, and matching (constant time).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, max_age: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex_decode(v),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now) > max_age {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signed(t, body), &sig).is_ok()
}

/// The body of a call: the message, the customer's profile and linked
/// channels, and the last `history` entries of the unified timeline
/// (oldest first, the message included).
pub fn request_body(input: &AgentInput, history: usize) -> Vec<u8> {
    let c = &input.customer;
    let attributes: serde_json::Map<String, serde_json::Value> = c
        .attributes
        .iter()
        .map(|(k, a)| (k.clone(), serde_json::Value::String(a.value.clone())))
        .collect();
    let identities: Vec<serde_json::Value> = c
        .identities
        .iter()
        .map(|i| serde_json::json!({"channel": i.channel, "scope": i.scope, "id": i.id, "verified": i.verified}))
        .collect();
    let skip = input.history.len().saturating_sub(history);
    let body = serde_json::json!({
        "message": input.incoming,
        "customer": {
            "id": c.id,
            "attributes": attributes,
            "identities": identities,
        },
        "history": &input.history[skip..],
    });
    serde_json::to_vec(&body).expect("agent request serializes")
}

/// The most replies one answer may carry.
pub const MAX_REPLIES: usize = 10;

/// Parses an agent's answer: `{"replies":["…"|{"text":"…"}|CONTENT],
/// "handoff": true|{"reason":"…"}, "attributes":{"name":"value"}}`, every
/// key optional; CONTENT is any contract 0.2 outbound content
/// (`{"type":"choices","prompt":"…","options":[{"id":"…","title":"…"}]}`,
/// `{"type":"media",…}`, `{"type":"template",…}`), degraded per channel. An answer that does not parse is an error (retried, then
/// handed to a person), never silently nothing.
pub fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ReplyIn {
        Text(String),
        Content(crate::channel::OutboundContent),
        Object { text: String },
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum HandoffIn {
        Flag(bool),
        Reason { reason: String },
    }
    #[derive(serde::Deserialize)]
    struct AnswerIn {
        #[serde(default)]
        replies: Vec<ReplyIn>,
        #[serde(default)]
        handoff: Option<HandoffIn>,
        #[serde(default)]
        attributes: std::collections::BTreeMap<String, String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let a: AnswerIn = serde_path_to_error::deserialize(de).map_err(|e| {
        format!(
            "the agent's answer does not parse at `{}`: {}",
            e.path(),
            e.inner()
        )
    })?;
    if a.replies.len() > MAX_REPLIES {
        return Err(format!(
            "the agent's answer has {} replies; at most {MAX_REPLIES} are sent",
            a.replies.len()
        ));
    }
    Ok(Answer {
        replies: a
            .replies
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                ReplyIn::Text(t) | ReplyIn::Object { text: t } => {
                    Ok(crate::channel::OutboundContent::text(t))
                }
                ReplyIn::Content(c) => c
                    .validate()
                    .map(|()| c)
                    .map_err(|e| format!("the agent's answer: replies[{i}]: {e}")),
            })
            .collect::<Result<_, _>>()?,
        handoff: match a.handoff {
            None | Some(HandoffIn::Flag(false)) => None,
            Some(HandoffIn::Flag(true)) => Some("agent".into()),
            Some(HandoffIn::Reason { reason }) => Some(reason),
        },
        attributes: a.attributes,
    })
}

fn signed(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut msg = timestamp.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_in_their_short_and_long_forms_and_bad_ones_say_where() {
        let a = parse_answer(
            br#"{"replies":["hi",{"text":"there"}],"handoff":{"reason":"vip"},"attributes":{"tier":"gold"}}"#,
        )
        .unwrap();
        assert_eq!(
            a.replies,
            [
                crate::channel::OutboundContent::text("hi"),
                crate::channel::OutboundContent::text("there")
            ]
        );
        assert_eq!(a.handoff.as_deref(), Some("vip"));
        assert_eq!(a.attributes["tier"], "gold");
        assert_eq!(
            parse_answer(br#"{"handoff":true}"#)
                .unwrap()
                .handoff
                .as_deref(),
            Some("agent")
        );
        assert_eq!(parse_answer(b"").unwrap(), Answer::default());
        let a = parse_answer(
            br#"{"replies":[{"type":"choices","prompt":"Which?","options":[{"id":"a","title":"A"}]}]}"#,
        )
        .unwrap();
        assert_eq!(a.replies[0].kind(), "choices");
        let e = parse_answer(br#"{"replies":[{"type":"choices","prompt":"Which?","options":[]}]}"#)
            .unwrap_err();
        assert_eq!(
            e,
            "the agent's answer: replies[0]: choices need 1 to 100 options; got 0"
        );
        let e = parse_answer(br#"{"replies":[{"txt":"x"}]}"#).unwrap_err();
        assert!(e.contains("replies"), "{e}");
        let e = parse_answer(br#"{"attributes":{"tier":3}}"#).unwrap_err();
        assert!(e.contains("attributes.tier"), "{e}");
        let many = format!(r#"{{"replies":[{}]}}"#, ["\"x\""; 11].join(","));
        assert!(
            parse_answer(many.as_bytes())
                .unwrap_err()
                .contains("11 replies")
        );
    }

    #[test]
    fn a_signed_call_verifies_and_its_bad_twins_do_not() {
        let body = br#"{"message":{"text":"hi"}}"#;
        let h = sign(b"agent-secret", 1_795_580_000, body);
        assert!(h.starts_with("t=1795580000,v1="));
        assert!(verify(b"agent-secret", &h, body, 1_795_580_010, 300));
        assert!(
            !verify(b"other-secret", &h, body, 1_795_580_010, 300),
            "wrong secret"
        );
        assert!(
            !verify(
                b"agent-secret",
                &h,
                br#"{"message":{"text":"hj"}}"#,
                1_795_580_010,
                300
            ),
            "tampered body"
        );
        assert!(
            !verify(b"agent-secret", &h, body, 1_795_580_400, 300),
            "stale"
        );
        let moved = h.replace("t=1795580000", "t=1795580001");
        assert!(
            !verify(b"agent-secret", &moved, body, 1_795_580_010, 300),
            "timestamp swapped"
        );
        assert!(!verify(
            b"agent-secret",
            "garbage",
            body,
            1_795_580_010,
            300
        ));
    }
}
