//! A channel the gateway has never heard of, signed Slack-style: its
//! manifest alone tells the host how to verify it (HMAC-SHA256 over
//! `v0:{timestamp}:{body}` with a 5-minute replay window).
//!
//! It is also the host's **0.1 plugin**: built against the frozen
//! `chatcrafter:channel@0.1.0` (`wit/0.1/`) with wit-bindgen directly, not
//! the SDK (which follows the current version), so the tests prove an
//! old plugin keeps loading, parsing and rendering through the adapter.
#![allow(
    unsafe_code,
    reason = "wit-bindgen's bindings and export for the canonical ABI (the SDK hides them)"
)]

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/0.1",
        world: "channel-plugin",
        generate_all,
    });
}

use bindings::exports::chatcrafter::channel::plugin::*;
use serde::Deserialize;

struct SlackStyle;

#[derive(Deserialize)]
struct Event {
    id: String,
    user: String,
    text: String,
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

impl Guest for SlackStyle {
    fn describe() -> Manifest {
        Manifest {
            id: "slack-style".into(),
            version: "0.0.1".into(),
            display_name: "A Slack-style channel".into(),
            verification: Verification::HmacSha256(HmacSha256Scheme {
                header: "x-slack-signature".into(),
                prefix: "v0=".into(),
                encoding: Encoding::Hex,
                signed_template: "v0:{header:x-slack-request-timestamp}:{body}".into(),
                timestamp_header: Some("x-slack-request-timestamp".into()),
                max_age_seconds: Some(300),
                secret: "signing_secret".into(),
            }),
            handshake: Handshake::None,
            secrets: vec![
                SettingSpec {
                    name: "signing_secret".into(),
                    description: "the app's signing secret".into(),
                    required: true,
                },
                SettingSpec {
                    name: "bot_token".into(),
                    description: "sends replies".into(),
                    required: false,
                },
            ],
            settings: vec![],
            capabilities: Capabilities::RECEIVE_MESSAGES | Capabilities::SEND_TEXT,
        }
    }

    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        let e: Event = serde_json::from_slice(&req.request.body)
            .map_err(|e| ChannelError::Malformed(format!("body: {e}")))?;
        Ok(Inbound {
            events: vec![InboundEvent::Message(InboundMessage {
                provider_message_id: e.id,
                sender: ChannelIdentity {
                    channel: "slack-style".into(),
                    scope: "workspace".into(),
                    id: e.user,
                },
                display_name: None,
                claims: vec![],
                content: Content::Text(e.text),
                link_token: None,
                timestamp: req.context.received_at_ms / 1000,
                edited: false,
                reply_handle: None,
            })],
            response: HttpResponse {
                status: 200,
                headers: vec![],
                body: vec![],
            },
            diagnostics: vec![],
        })
    }

    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        let OutboundContent::Text(text) = msg.content;
        let body = serde_json::json!({"channel": msg.recipient.id, "text": text});
        Ok(OutboundRequest::Http(HttpCall {
            method: Method::Post,
            path: "/chat.postMessage".into(),
            headers: vec![header("content-type", "application/json")],
            body: serde_json::to_vec(&body).unwrap_or_default(),
            credential: Some(CredentialHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
                secret: "bot_token".into(),
            }),
            sent_id: Some("/ts".into()),
        }))
    }
}

bindings::export!(SlackStyle with_types_in bindings);
