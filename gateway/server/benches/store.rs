//! `store`: identity operations per second, embedded (redb) beside Redis,
//! in one run.
//!
//! - `resolve_known`: an inbound message from a known identity whose claims
//!   are already linked (the hot path: one read, no write).
//! - `link_new`: a new identity that links to an existing customer by a
//!   verified phone (reads, then an atomic write of the link and profile).
//!
//! Redis runs as a private `redis-server` on a free port (never 6379).
//! Run: `cargo bench -p chatcrafter-gateway --bench store`

use std::sync::atomic::{AtomicU64, Ordering};

use chatcrafter_core::channel::{ChannelIdentity, Claim, ClaimKind};
use chatcrafter_core::identity::Sender;
use chatcrafter_gateway::store::AnyBackend;
use chatcrafter_gateway::store::embedded::Embedded;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../../../tests/support.rs"]
mod support;

fn sender(id: &str, phone: &str) -> Sender {
    Sender {
        identity: ChannelIdentity {
            channel: "whatsapp".into(),
            scope: "106540352242922".into(),
            id: id.into(),
        },
        display_name: Some("Sarah".into()),
        claims: vec![Claim {
            kind: ClaimKind::Phone,
            value: phone.into(),
            verified: true,
        }],
        link_token: None,
        at: 1_795_580_000,
    }
}

#[path = "common/db.rs"]
mod db;
use db::graph;

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("chatcrafter-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let redis = support::RedisServer::start(&dir, 0, None);
    let port = redis.port;
    let backends = vec![
        (
            "embedded",
            rt.block_on(async { AnyBackend::Embedded(Embedded::open(&dir.join("redb")).unwrap()) }),
        ),
        (
            "redis",
            rt.block_on(async {
                AnyBackend::Redis(
                    chatcrafter_gateway::store::redis::connect(
                        &format!("redis://127.0.0.1:{port}/0"),
                        "cc:",
                    )
                    .await
                    .unwrap(),
                )
            }),
        ),
    ];
    for (name, backend) in backends {
        let g = graph(backend);
        rt.block_on(g.resolve(&sender("16505551234", "+16505551234")))
            .unwrap();
        // Customers that new identities link to, round robin, so no profile
        // grows without bound during the run.
        const POOL: u64 = 500;
        for p in 0..POOL {
            rt.block_on(g.resolve(&sender(
                &format!("pool-{p}"),
                &format!("+1650555{:04}", 2000 + p),
            )))
            .unwrap();
        }
        let mut group = c.benchmark_group(format!("store_{name}"));
        group.bench_function("resolve_known", |b| {
            b.iter(|| {
                rt.block_on(g.resolve(&sender("16505551234", "+16505551234")))
                    .unwrap()
            })
        });
        let n = AtomicU64::new(0);
        group.bench_function("link_new", |b| {
            b.iter(|| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                let phone = format!("+1650555{:04}", 2000 + i % POOL);
                rt.block_on(g.resolve(&sender(&format!("bench-{i}"), &phone)))
                    .unwrap()
            })
        });
        group.finish();
    }
    drop(redis);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = store
}
criterion_main!(benches);
