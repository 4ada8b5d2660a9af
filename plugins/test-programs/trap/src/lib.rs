//! `parse-inbound` executes `unreachable`: the host must fail that call only.
use chatcrafter_plugin_sdk::prelude::*;

#[path = "../../common.rs"]
mod common;

struct Trap;

impl Guest for Trap {
    fn describe() -> Manifest {
        common::manifest("trap")
    }
    fn parse_inbound(_req: InboundRequest) -> Result<Inbound, ChannelError> {
        core::arch::wasm32::unreachable()
    }
    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        common::render(msg)
    }
}

chatcrafter_plugin_sdk::export_plugin!(Trap);
