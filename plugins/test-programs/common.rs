// Shared by the hostile test programs: a valid manifest, so the host loads
// them, and a harmless `render-outbound`.
use chatcrafter_plugin_sdk::prelude::*;

pub fn manifest(id: &str) -> Manifest {
    Manifest {
        id: id.into(),
        version: "0.0.1".into(),
        display_name: format!("test program {id}"),
        verification: Verification::None,
        handshake: Handshake::None,
        secrets: vec![],
        settings: vec![],
        capabilities: Capabilities::RECEIVE_MESSAGES,
        reply_window_seconds: None,
        person_reply_window_seconds: None,
        deep_links: vec![],
        outbound_limits: OutboundLimits::text_only(4096),
    }
}

pub fn render(_msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
    Ok(OutboundRequest::Push(b"ok".to_vec()))
}
