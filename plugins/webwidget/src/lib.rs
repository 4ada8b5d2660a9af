//! The web chat widget channel plugin.
//!
//! Inbound: the widget's message frames, `{"type":"message","text":"…",
//! "client_id":"…"}` (INTERFACE §3.3), over REST or WebSocket. The host has
//! already verified the widget's JWT and passes the user in the request
//! context; the sender is `(widget, issuer, sub)` and the token's claims are
//! verified claims. `client_id` makes a retried send idempotent: the provider
//! message id is `{len(sub)}:{sub}:{client_id}` (the length keeps the pair
//! unambiguous: user `acme` with `1:x` is not user `acme:1` with `x`), else
//! the host's request id.
//!
//! Verification: none declared — the host authenticates widget users with
//! their JWT before this plugin runs.
//!
//! Outbound: a frame pushed to the customer's open widget sessions. Text
//! only: the host sends choices as numbered text and media as its caption
//! and link.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::json;
use serde::Deserialize;

const CHANNEL: &str = "widget";
/// Longest message a widget user may send, in characters.
const MAX_TEXT: usize = 4096;
/// Longest `client_id`, in bytes.
const MAX_CLIENT_ID: usize = 128;

struct WebWidget;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    client_id: Option<String>,
}

impl Guest for WebWidget {
    fn describe() -> Manifest {
        Manifest {
            id: CHANNEL.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "Web chat widget".into(),
            verification: Verification::None,
            handshake: Handshake::None,
            secrets: vec![],
            settings: vec![],
            capabilities: Capabilities::RECEIVE_MESSAGES | Capabilities::SEND_TEXT,
            reply_window_seconds: None,
            person_reply_window_seconds: None,
            deep_links: vec![],
            outbound_limits: OutboundLimits::text_only(MAX_TEXT as u32),
        }
    }

    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        let user = req.context.user.as_ref().ok_or_else(|| {
            ChannelError::Other("widget frames need a user authenticated by the host".into())
        })?;
        let frame: Frame = json_body(&req.request)?;
        if let Some(kind) = frame.kind.as_deref().filter(|k| *k != "message") {
            return Err(ChannelError::Malformed(format!(
                "body: `type` is `{kind}`, expected `message`"
            )));
        }
        let text = frame
            .text
            .ok_or_else(|| ChannelError::Malformed("body: `text` is missing".into()))?;
        if text.trim().is_empty() {
            return Err(ChannelError::Malformed("body: `text` is empty".into()));
        }
        let n = text.chars().count();
        if n > MAX_TEXT {
            return Err(ChannelError::Malformed(format!(
                "body: `text` is {n} characters, over the {MAX_TEXT} limit"
            )));
        }
        let provider_message_id = match frame.client_id {
            Some(c) if c.is_empty() || c.len() > MAX_CLIENT_ID => {
                return Err(ChannelError::Malformed(format!(
                    "body: `client_id` must be 1 to {MAX_CLIENT_ID} bytes"
                )));
            }
            Some(c) => format!("{}:{}:{c}", user.subject.len(), user.subject),
            None => req.context.request_id.clone(),
        };
        let display_name = user
            .claims
            .iter()
            .find(|c| c.kind == ClaimKind::Name)
            .map(|c| c.value.clone());
        let event = InboundEvent::Message(InboundMessage {
            provider_message_id: provider_message_id.clone(),
            sender: ChannelIdentity::new(user.issuer.clone(), user.subject.clone()),
            display_name,
            claims: user.claims.clone(),
            contents: vec![Content::Text(text)],
            referral: None,
            link_token: None,
            timestamp: req.context.received_at_ms / 1000,
            edited: false,
            reply_handle: None,
        });
        let accepted = json_response(202, &json!({"id": provider_message_id}));
        Ok(Inbound::ok(vec![event]).with_response(accepted))
    }

    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        let OutboundContent::Text(text) = &msg.content else {
            return Err(ChannelError::InvalidOutbound(format!(
                "the widget takes text only (the host degrades {} to text)",
                match msg.content {
                    OutboundContent::Media(_) => "media",
                    OutboundContent::Choices(_) => "choices",
                    _ => "templates",
                }
            )));
        };
        let text = text_limit(text, MAX_TEXT, "the widget")?;
        let frame =
            json!({"type": "message", "id": msg.message_id, "direction": "outbound", "text": text});
        Ok(OutboundRequest::Push(
            chatcrafter_plugin_sdk::serde_json::to_vec(&frame).unwrap_or_default(),
        ))
    }
}

chatcrafter_plugin_sdk::export_plugin!(WebWidget);

#[cfg(test)]
mod tests;
