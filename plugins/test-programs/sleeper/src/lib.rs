//! `parse-inbound` waits ten seconds on a WASI timer: a guest that waits
//! instead of computing. The host must stop it at the call deadline all the
//! same, and keep serving meanwhile.
use chatcrafter_plugin_sdk::prelude::*;

#[path = "../../common.rs"]
mod common;

struct Sleeper;

impl Guest for Sleeper {
    fn describe() -> Manifest {
        common::manifest("sleeper")
    }
    fn parse_inbound(_req: InboundRequest) -> Result<Inbound, ChannelError> {
        std::thread::sleep(std::time::Duration::from_secs(10));
        Ok(Inbound::ok(vec![]))
    }
    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        common::render(msg)
    }
}

chatcrafter_plugin_sdk::export_plugin!(Sleeper);
