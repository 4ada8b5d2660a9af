//! `analytics`: report latency over a large store, embedded (redb) beside
//! Redis, in one run.
//!
//! Fills each backend with `ANALYTICS_CUSTOMERS` customers (default
//! 100,000) of `ANALYTICS_MESSAGES` inbound messages each (default 10:
//! 1,000,000 timeline entries) over five channels, a third of them with a
//! purchase, through the real inbound units (so the counters are kept as
//! in production), then times:
//!
//! - `report_unfiltered`: the `channels` report from the counter shards;
//! - `report_filtered`: the same with `from` (every summary read);
//! - `timeline_scan`: a baseline — only *listing* every timeline entry, the
//!   least a report computed from the timeline would do (nothing
//!   decrypted).
//!
//! Redis runs as a private `redis-server` on a free port (never 6379).
//! Run: `cargo bench -p chatcrafter-gateway --bench analytics`

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcrafter_core::analytics::{self, Filter};
use chatcrafter_core::channel::{ChannelIdentity, Claim, ClaimKind, Content, InboundMessage};
use chatcrafter_core::conversation::Entry;
use chatcrafter_core::db::Db;
use chatcrafter_core::store::Backend;
use chatcrafter_gateway::store::AnyBackend;
use chatcrafter_gateway::store::embedded::Embedded;

#[path = "../../../tests/support.rs"]
mod support;

const CHANNELS: [&str; 5] = ["widget", "whatsapp", "telegram", "discord", "messenger"];

#[path = "common/db.rs"]
mod db;
use db::graph;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(i: u64, n: u64, now: u64) -> InboundMessage {
    let ch = CHANNELS[((i * 7 + n * 3) % 5) as usize];
    InboundMessage {
        provider_message_id: format!("m-{i}-{n}"),
        sender: ChannelIdentity {
            channel: ch.into(),
            scope: "s".into(),
            id: format!("u{i}"),
        },
        display_name: None,
        claims: vec![Claim {
            kind: ClaimKind::Phone,
            value: format!("+1555{:07}", i),
            verified: true,
        }],
        contents: vec![Content::Text {
            text: "Is the chair in stock?".into(),
        }],
        referral: None,
        link_token: None,
        timestamp: now - 5 * 86_400 + i % 86_400 + n * 3_600,
        edited: false,
        reply_handle: None,
    }
}

async fn fill(db: &Arc<Db<Arc<AnyBackend>>>, customers: u64, messages: u64) -> Duration {
    let now = chatcrafter_core::Clock::now_secs(&chatcrafter_gateway::ids::SystemClock);
    let started = Instant::now();
    let workers = 64;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < customers {
                let mut id = None;
                for n in 0..messages {
                    let r = db.record_inbound(&message(i, n, now)).await.unwrap();
                    if let chatcrafter_core::inbound::Recorded::Stored { resolution, .. } = r {
                        id.get_or_insert(resolution.customer_id);
                    }
                }
                if i % 3 == 0
                    && let Some(id) = id
                {
                    let at = now - 86_400;
                    let e = Entry::event("purchase", serde_json::json!({}), at);
                    db.record_event(&id, &e, 0, at * 1000).await.unwrap();
                }
                i += workers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(name: &str, db: Arc<Db<Arc<AnyBackend>>>, customers: u64, messages: u64) {
    let filled = fill(&db, customers, messages).await;
    let mut unfiltered = Vec::new();
    let mut figure = serde_json::Value::Null;
    for _ in 0..25 {
        let t = Instant::now();
        let c = db.analytics_counters().await.unwrap();
        figure = analytics::channels_report(&c);
        unfiltered.push(t.elapsed());
    }
    assert_eq!(figure["customers"], customers, "{figure}");
    let now = chatcrafter_core::Clock::now_secs(&chatcrafter_gateway::ids::SystemClock);
    let filter = Filter {
        from: Some(now - 3 * 86_400),
        to: None,
        channel: None,
    };
    let mut filtered = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let c = db.analytics_filtered(&filter).await.unwrap();
        std::hint::black_box(analytics::channels_report(&c));
        filtered.push(t.elapsed());
    }
    let mut scan = Vec::new();
    let mut entries = 0;
    for _ in 0..3 {
        let t = Instant::now();
        entries = 0;
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = db
                .backend()
                .scan("cc:tl:", cursor.as_deref(), 5_000)
                .await
                .unwrap();
            entries += page.len();
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        scan.push(t.elapsed());
    }
    let (u, f, s) = (median(unfiltered), median(filtered), median(scan));
    println!(
        "| {name} | {customers} | {entries} | {:.1} s | {:.2} ms | {:.0} ms | {:.0} ms | {:.0}× |",
        filled.as_secs_f64(),
        u.as_secs_f64() * 1e3,
        f.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        s.as_secs_f64() / u.as_secs_f64()
    );
}

fn main() {
    let customers = env("ANALYTICS_CUSTOMERS", 100_000);
    let messages = env("ANALYTICS_MESSAGES", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| backend | customers | timeline entries | fill | report (counters) | report with `from` (summaries) | baseline: list the timeline | baseline ÷ report |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("cc-analytics-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let embedded = Arc::new(graph(AnyBackend::Embedded(
            Embedded::open(&dir.join("embedded")).unwrap(),
        )));
        measure("embedded", embedded, customers, messages).await;
        std::fs::create_dir_all(dir.join("redis")).unwrap();
        let server = support::RedisServer::start(&dir.join("redis"), 0, None);
        let url = format!("redis://127.0.0.1:{}/0", server.port);
        let redis = chatcrafter_gateway::store::redis::connect(&url, "cc:")
            .await
            .unwrap();
        let redis = Arc::new(graph(AnyBackend::Redis(redis)));
        measure("redis", redis, customers, messages).await;
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
