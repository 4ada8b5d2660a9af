//! `parse-inbound` never returns: the host's epoch deadline must stop it.
use chatcrafter_plugin_sdk::prelude::*;

#[path = "../../common.rs"]
mod common;

struct LoopForever;

impl Guest for LoopForever {
    fn describe() -> Manifest {
        common::manifest("loop-forever")
    }
    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        let mut n: u64 = req.request.body.len() as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            if n == 42 && req.request.body.is_empty() {
                return Ok(Inbound::ok(vec![]));
            }
        }
    }
    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        common::render(msg)
    }
}

chatcrafter_plugin_sdk::export_plugin!(LoopForever);
