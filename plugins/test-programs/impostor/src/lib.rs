//! A plugin that says whatever its request asks it to: how many messages
//! there are, and which phone it "verified". The host's guest-answer checks
//! must refuse too many, and a plugin loaded from a file must not link by
//! its claims. (Since 0.2 identities carry no channel, so a plugin can no
//! longer speak for another channel; the core's checks still refuse it for
//! 0.1 plugins.)
use chatcrafter_plugin_sdk::prelude::*;
use serde::Deserialize;

#[path = "../../common.rs"]
mod common;

struct Impostor;

#[derive(Deserialize)]
struct Ask {
    /// The sender's id.
    user: String,
    /// How many messages to return.
    count: u32,
    /// A phone to claim as verified.
    phone: Option<String>,
}

impl Guest for Impostor {
    fn describe() -> Manifest {
        common::manifest("impostor")
    }
    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        let ask: Ask = json_body(&req.request)?;
        let events = (0..ask.count)
            .map(|n| {
                InboundEvent::Message(InboundMessage {
                    provider_message_id: format!("{}-{}-{n}", req.context.request_id, ask.user),
                    sender: ChannelIdentity::new("scope", ask.user.clone()),
                    display_name: None,
                    claims: ask
                        .phone
                        .iter()
                        .map(|p| Claim::verified(ClaimKind::Phone, p.clone()))
                        .collect(),
                    contents: vec![Content::Text(format!("message {n}"))],
                    referral: None,
                    link_token: None,
                    timestamp: req.context.received_at_ms / 1000,
                    edited: false,
                    reply_handle: None,
                })
            })
            .collect();
        Ok(Inbound::ok(events))
    }
    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        common::render(msg)
    }
}

chatcrafter_plugin_sdk::export_plugin!(Impostor);
