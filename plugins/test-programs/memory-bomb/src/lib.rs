//! `parse-inbound` allocates without end: the host's memory cap must refuse it.
use chatcrafter_plugin_sdk::prelude::*;

#[path = "../../common.rs"]
mod common;

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn describe() -> Manifest {
        common::manifest("memory-bomb")
    }
    fn parse_inbound(_req: InboundRequest) -> Result<Inbound, ChannelError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // 8 MiB at a time, reserved but not zeroed (so the cap, not
            // the time spent filling memory, is what stops it), and
            // touched so nothing is optimised away.
            let mut block: Vec<u8> = Vec::with_capacity(8 << 20);
            block.push(1);
            hoard.push(std::hint::black_box(block));
        }
    }
    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        common::render(msg)
    }
}

chatcrafter_plugin_sdk::export_plugin!(MemoryBomb);
