//! A plugin that remembers: each result carries, as its display name, the
//! sender of the *previous* call this instance served. On fresh instances
//! that is always nothing; on a reused instance it would leak one person's
//! id into another's message — the host's reuse rule must prevent it.
use std::sync::Mutex;

use chatcrafter_plugin_sdk::prelude::*;
use serde::Deserialize;

#[path = "../../common.rs"]
mod common;

static PREVIOUS: Mutex<Option<String>> = Mutex::new(None);

#[derive(Deserialize)]
struct Body {
    id: String,
    user: String,
}

struct Leaky;

impl Guest for Leaky {
    fn describe() -> Manifest {
        common::manifest("leaky")
    }
    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        let body: Body = json_body(&req.request)?;
        let previous = PREVIOUS
            .lock()
            .map(|mut p| p.replace(body.user.clone()))
            .unwrap_or(None);
        Ok(Inbound::ok(vec![InboundEvent::Message(InboundMessage {
            provider_message_id: body.id,
            sender: ChannelIdentity::new("s", body.user),
            display_name: previous,
            claims: vec![],
            contents: vec![Content::Text("hi".into())],
            referral: None,
            link_token: None,
            timestamp: 0,
            edited: false,
            reply_handle: None,
        })]))
    }
    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        common::render(msg)
    }
}

chatcrafter_plugin_sdk::export_plugin!(Leaky);
