//! `plugin_parse`: what the sandbox costs per webhook.
//!
//! In one run: native `serde_json` parsing of a WhatsApp text notification
//! into typed structs (what a hand-written Rust handler would do), beside the
//! bundled WhatsApp plugin's `parse-inbound` on the same bytes — a fresh
//! instance from the cached `InstancePre`, the call, and dropping the store —
//! and `describe` on a fresh instance, which isolates the instantiation cost.
//!
//! With `PLUGIN_PARSE_0_1=<path to a .wasm>` it also runs the same calls on
//! that plugin — the WhatsApp plugin as it was under contract 0.1, built by
//! `scripts/bench-contract-versions.sh` from the last 0.1 commit — so the
//! two contract versions (and the 0.1 adapter) are measured in one run.
//!
//! Run: `cargo bench -p chatcrafter-gateway --bench plugin_parse`

use std::hint::black_box;

use chatcrafter_core::channel::{InboundRequest, RequestContext};
use chatcrafter_gateway::plugin::{PluginHost, bundled};
use criterion::{Criterion, criterion_group, criterion_main};

const BODY: &[u8] = include_bytes!("../../../tests/fixtures/whatsapp_text.json");

#[path = "common/native_whatsapp.rs"]
mod native_whatsapp;
use native_whatsapp::Notification;

fn plugin_parse(c: &mut Criterion) {
    let host = PluginHost::new().unwrap();
    let wasm = bundled::PLUGINS
        .iter()
        .find(|(n, _)| *n == "whatsapp")
        .unwrap()
        .1;
    let plugin = host.load("builtin:whatsapp", wasm).unwrap();
    let request = InboundRequest {
        method: "POST".into(),
        path: "/webhooks/whatsapp".into(),
        query: String::new(),
        headers: vec![],
        body: BODY.to_vec(),
        context: RequestContext {
            received_at_ms: 1_739_321_025_000,
            request_id: "bench".into(),
            user: None,
            settings: vec![],
        },
    };
    assert_eq!(plugin.parse_inbound(&request).unwrap().events.len(), 1);

    let mut g = c.benchmark_group("plugin_parse");
    g.bench_function("native_serde_json", |b| {
        b.iter(|| {
            let n: Notification = serde_json::from_slice(black_box(BODY)).unwrap();
            black_box(n)
        })
    });
    g.bench_function("wasm_instantiate_and_parse_inbound", |b| {
        b.iter(|| black_box(plugin.parse_inbound(black_box(&request)).unwrap()))
    });
    let mut reusing = host.load("builtin:whatsapp", wasm).unwrap();
    reusing.set_instance_reuse(true);
    g.bench_function("wasm_reused_instance_parse_inbound_one_sender", |b| {
        b.iter(|| black_box(reusing.parse_inbound(black_box(&request)).unwrap()))
    });
    g.bench_function("wasm_instantiate_and_describe", |b| {
        b.iter(|| black_box(plugin.describe_fresh().unwrap()))
    });
    if let Some(path) = std::env::var_os("PLUGIN_PARSE_0_1") {
        let old = host.load_file(std::path::Path::new(&path)).unwrap();
        assert_eq!(old.contract_version(), "0.1.0", "{}", old.source());
        assert_eq!(
            old.parse_inbound(&request).unwrap().events,
            plugin.parse_inbound(&request).unwrap().events,
            "the 0.1 build must parse the fixture to the same events"
        );
        g.bench_function("wasm_0_1_instantiate_and_parse_inbound", |b| {
            b.iter(|| black_box(old.parse_inbound(black_box(&request)).unwrap()))
        });
        g.bench_function("wasm_0_1_instantiate_and_describe", |b| {
            b.iter(|| black_box(old.describe_fresh().unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, plugin_parse);
criterion_main!(benches);
