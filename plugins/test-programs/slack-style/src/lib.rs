//! A channel the gateway has never heard of, signed Slack-style: its
//! manifest alone tells the host how to verify it (HMAC-SHA256 over
//! `v0:{timestamp}:{body}` with a 5-minute replay window).
use chatcrafter_plugin_sdk::prelude::*;
use serde::Deserialize;

struct SlackStyle;

#[derive(Deserialize)]
struct Event {
    id: String,
    user: String,
    text: String,
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
            secrets: vec![SettingSpec::new(
                "signing_secret",
                "the app's signing secret",
                true,
            )],
            settings: vec![],
            capabilities: Capabilities::RECEIVE_MESSAGES,
        }
    }
    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        let e: Event = json_body(&req.request)?;
        Ok(Inbound::ok(vec![InboundEvent::Message(InboundMessage {
            provider_message_id: e.id,
            sender: ChannelIdentity::new("slack-style", "workspace", e.user),
            display_name: None,
            claims: vec![],
            content: Content::Text(e.text),
            link_token: None,
            timestamp: req.context.received_at_ms / 1000,
            edited: false,
            reply_handle: None,
        })]))
    }
    fn render_outbound(_msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        Err(ChannelError::Other("not used".into()))
    }
}

chatcrafter_plugin_sdk::export_plugin!(SlackStyle);
