//! The store conformance suite: every behaviour of the identity graph, run
//! against the embedded (redb) backend and against Redis by the same tests.
//! Redis tests start their own `redis-server` on a free port with a scratch
//! directory, never the shared one on 6379.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatcrafter_core::ManualClock;
use chatcrafter_core::channel::{ChannelIdentity, Claim, ClaimKind};
use chatcrafter_core::db::{Db, DbError};
use chatcrafter_core::identity::identifier::{BlockedValues, Identifier, IdentifierKind};
use chatcrafter_core::identity::{How, Rules, Sender};
use chatcrafter_core::seal::Keyring;
use chatcrafter_core::store::Backend;
use chatcrafter_gateway::store::AnyBackend;
use chatcrafter_gateway::store::embedded::Embedded;

const DATA_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const INDEX_KEY: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
const T0: u64 = 1_795_580_000;

#[path = "../../../tests/support.rs"]
mod support;

use support::RedisServer;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chatcrafter-store-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn redis_server(name: &str) -> RedisServer {
    RedisServer::start(&scratch(name), 0, None)
}

fn keys() -> Arc<Keyring> {
    Arc::new(Keyring::new(Some(DATA_KEY), Some(INDEX_KEY)).unwrap())
}

fn rules() -> Rules {
    Rules::default()
}

/// A backend under test and whatever keeps it alive.
struct Fixture {
    backend: Arc<AnyBackend>,
    redis: Option<RedisServer>,
    url: Option<String>,
    /// The raw file the backend persists to.
    file: PathBuf,
}

async fn fixture(kind: &str, name: &str) -> Fixture {
    match kind {
        "embedded" => {
            let dir = scratch(name);
            Fixture {
                backend: Arc::new(AnyBackend::Embedded(Embedded::open(&dir).unwrap())),
                redis: None,
                url: None,
                file: dir.join("gateway.redb"),
            }
        }
        _ => {
            let server = redis_server(name);
            let url = format!("redis://127.0.0.1:{}/0", server.port);
            let r = chatcrafter_gateway::store::redis::connect(&url, "cc:")
                .await
                .unwrap();
            let file = server.dir.join("dump.rdb");
            Fixture {
                backend: Arc::new(AnyBackend::Redis(r)),
                redis: Some(server),
                url: Some(url),
                file,
            }
        }
    }
}

/// The tests' clock: always `T0`, whatever the wall clock says (Redis
/// judges expiry by its own, real clock: the skew the code must survive).
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_ms(T0 * 1000))
}

fn graph(f: &Fixture, rules: Rules) -> Db<Arc<AnyBackend>> {
    Db::new(
        f.backend.clone(),
        clock(),
        keys(),
        "cc:",
        rules,
        Arc::new(ring::rand::SystemRandom::new()),
    )
}

fn id(channel: &str, scope: &str, id: &str) -> ChannelIdentity {
    ChannelIdentity {
        channel: channel.into(),
        scope: scope.into(),
        id: id.into(),
    }
}

fn claim(kind: ClaimKind, value: &str, verified: bool) -> Claim {
    Claim {
        kind,
        value: value.into(),
        verified,
    }
}

fn sender(identity: ChannelIdentity, claims: Vec<Claim>, at: u64) -> Sender {
    Sender {
        identity,
        display_name: None,
        claims,
        link_token: None,
        at,
    }
}

fn widget_sarah(at: u64) -> Sender {
    let mut s = sender(
        id("widget", "https://shop.example", "user-42"),
        vec![
            claim(ClaimKind::Email, "Sarah@Example.com", true),
            claim(ClaimKind::Phone, "+1 650 555 1234", true),
        ],
        at,
    );
    s.display_name = Some("Sarah Kim".into());
    s
}

fn whatsapp_sarah(at: u64) -> Sender {
    let mut s = sender(
        id("whatsapp", "106540352242922", "16505551234"),
        vec![claim(ClaimKind::Phone, "+16505551234", true)],
        at,
    );
    s.display_name = Some("Sarah".into());
    s
}

fn phone(v: &str) -> Identifier {
    Identifier::new(IdentifierKind::Phone, v).unwrap()
}

fn email(v: &str) -> Identifier {
    Identifier::new(IdentifierKind::Email, v).unwrap()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("embedded").await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("redis").await
                }
            )*
        }
    };
}

conformance!(
    a_new_sender_becomes_a_customer_and_a_replay_changes_nothing,
    the_same_person_on_two_channels_is_one_customer_by_verified_phone,
    an_unverified_match_is_a_suggestion_not_a_link,
    a_link_token_links_once_and_only_on_its_channel_before_it_expires,
    merge_then_undo_restores_the_exact_prior_state,
    a_merge_that_would_break_a_limit_is_refused_and_resolution_records_a_conflict,
    a_blocked_value_never_links,
    a_scan_of_the_store_finds_no_personal_data_in_plaintext,
    concurrent_events_for_one_person_end_as_exactly_one_customer,
    a_csv_import_links_good_rows_reports_bad_ones_and_is_idempotent,
    a_redelivered_message_is_recorded_once_and_the_timeline_follows_merges,
    a_stored_message_queues_its_answer_and_a_lapsed_lease_brings_it_back,
    reminders_follow_the_injected_clock_consent_and_the_cap,
    a_backlog_is_seen_a_window_at_a_time_and_drains_in_any_order,
    provider_ids_are_remembered_for_their_retention_and_then_dropped,
    a_customers_messages_go_out_in_order_even_when_one_is_retried,
    analytics_reports_match_an_independent_count_of_a_generated_population,
);

fn message(
    sender: &Sender,
    provider_id: &str,
    text: &str,
) -> chatcrafter_core::channel::InboundMessage {
    chatcrafter_core::channel::InboundMessage {
        provider_message_id: provider_id.into(),
        sender: sender.identity.clone(),
        display_name: sender.display_name.clone(),
        claims: sender.claims.clone(),
        contents: vec![chatcrafter_core::channel::Content::Text { text: text.into() }],
        referral: None,
        link_token: sender.link_token.clone(),
        timestamp: sender.at,
        edited: false,
        reply_handle: None,
    }
}

async fn a_redelivered_message_is_recorded_once_and_the_timeline_follows_merges(kind: &str) {
    use chatcrafter_core::inbound::Recorded;
    let f = fixture(kind, "timeline").await;
    let g = graph(&f, rules());
    let w = widget_sarah(T0);
    let first = g
        .record_inbound(&message(
            &w,
            "c-1",
            "Do you have the office chair in black?",
        ))
        .await
        .unwrap();
    let Recorded::Stored { resolution, .. } = first else {
        panic!("stored")
    };
    let sarah = resolution.customer_id;
    // The channel retries the same delivery: nothing changes.
    let dump = f.backend.dump().await.unwrap();
    assert_eq!(
        g.record_inbound(&message(
            &w,
            "c-1",
            "Do you have the office chair in black?"
        ))
        .await
        .unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(f.backend.dump().await.unwrap(), dump);
    // Another person on Telegram, merged into Sarah later: their timelines join.
    let tg = sender(id("telegram", "7012345678", "123456789"), vec![], T0 + 20);
    let Recorded::Stored { resolution: r2, .. } = g
        .record_inbound(&message(&tg, "7012345678:1", "hello from telegram"))
        .await
        .unwrap()
    else {
        panic!("stored")
    };
    let wa = whatsapp_sarah(T0 + 40);
    g.record_inbound(&message(&wa, "wamid.1", "still in stock?"))
        .await
        .unwrap();
    let texts = |t: &[chatcrafter_core::conversation::Entry]| {
        t.iter()
            .map(|e| (e.channel.clone(), e.text.clone().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(&g.timeline(&sarah).await.unwrap()),
        vec![
            (
                "widget".to_string(),
                "Do you have the office chair in black?".to_string()
            ),
            ("whatsapp".to_string(), "still in stock?".to_string()),
        ]
    );
    let record = g
        .merge(&sarah, &r2.customer_id, How::AdminMerge, T0 + 50)
        .await
        .unwrap();
    assert_eq!(
        texts(&g.timeline(&sarah).await.unwrap()),
        vec![
            (
                "widget".to_string(),
                "Do you have the office chair in black?".to_string()
            ),
            ("telegram".to_string(), "hello from telegram".to_string()),
            ("whatsapp".to_string(), "still in stock?".to_string()),
        ]
    );
    g.undo(&record.merge_id, T0 + 60).await.unwrap();
    assert_eq!(g.timeline(&sarah).await.unwrap().len(), 2);
    assert_eq!(
        texts(&g.timeline(&r2.customer_id).await.unwrap()),
        vec![("telegram".to_string(), "hello from telegram".to_string())]
    );
    // Past the retention window the same provider id counts as new.
    let mut late = message(&w, "c-1", "Do you have the office chair in black?");
    late.timestamp = T0 + chatcrafter_core::inbound::DEDUP_RETENTION_SECONDS + 1;
    assert!(matches!(
        g.record_inbound(&late).await.unwrap(),
        Recorded::Stored { .. }
    ));
    assert_eq!(g.timeline(&sarah).await.unwrap().len(), 3);
}

async fn a_csv_import_links_good_rows_reports_bad_ones_and_is_idempotent(kind: &str) {
    let f = fixture(kind, "csv").await;
    let g = graph(&f, rules());
    let w = g.resolve(&widget_sarah(T0)).await.unwrap().customer_id;
    let csv = "email,phone_number,telegram_user_id,discord_user_id,customer_name,attr:tier\n\
               sarah@example.com,,123456789,80351110224678912,Sarah Kim,gold\n\
               ann@example.com,+447911123456,,,Ann,\n\
               broken,,,,,\n";
    let (rows, rejected) = chatcrafter_core::identity::csv::parse(csv.as_bytes()).unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].line, 4);
    let mut linked = 0;
    for (_, row) in &rows {
        linked += g.import_row(row, T0 + 5).await.unwrap().linked;
    }
    assert_eq!(
        linked, 4,
        "telegram + discord for Sarah; email + phone for Ann"
    );
    let c = g.customer(&w).await.unwrap();
    assert_eq!(c.attributes["tier"].value, "gold");
    assert_eq!(
        g.find_identity("discord", "80351110224678912")
            .await
            .unwrap()
            .as_deref(),
        Some(w.as_str())
    );
    // A later Telegram message from that user lands on Sarah (any scope).
    let r = g
        .resolve(&sender(
            id("telegram", "7012345678", "123456789"),
            vec![],
            T0 + 9,
        ))
        .await
        .unwrap();
    assert_eq!(r.customer_id, w);
    // Re-importing changes nothing.
    let dump = f.backend.dump().await.unwrap();
    for (_, row) in &rows {
        assert_eq!(g.import_row(row, T0 + 10).await.unwrap().linked, 0);
    }
    assert_eq!(f.backend.dump().await.unwrap(), dump);
}

async fn a_new_sender_becomes_a_customer_and_a_replay_changes_nothing(kind: &str) {
    let f = fixture(kind, "replay").await;
    let g = graph(&f, rules());
    let first = g.resolve(&widget_sarah(T0)).await.unwrap();
    assert!(first.created);
    assert_eq!(first.linked, Some(How::Channel));
    let before = g.customer(&first.customer_id).await.unwrap();
    let dump_before = f.backend.dump().await.unwrap().len();
    let again = g.resolve(&widget_sarah(T0)).await.unwrap();
    assert_eq!(again.customer_id, first.customer_id);
    assert!(!again.created);
    assert_eq!(again.linked, None);
    assert_eq!(g.customer(&first.customer_id).await.unwrap(), before);
    assert_eq!(f.backend.dump().await.unwrap().len(), dump_before);
    let c = before;
    assert_eq!(c.identities.len(), 1);
    assert_eq!(c.identifiers.len(), 2);
    assert_eq!(c.attributes["name"].value, "Sarah Kim");
    assert_eq!(
        g.find(&email("sarah@example.com"))
            .await
            .unwrap()
            .as_deref(),
        Some(c.id.as_str())
    );
    assert_eq!(
        g.find_identity("widget", "user-42")
            .await
            .unwrap()
            .as_deref(),
        Some(c.id.as_str())
    );
}

async fn the_same_person_on_two_channels_is_one_customer_by_verified_phone(kind: &str) {
    let f = fixture(kind, "two-channels").await;
    let g = graph(&f, rules());
    let w = g.resolve(&widget_sarah(T0)).await.unwrap();
    let wa = g.resolve(&whatsapp_sarah(T0 + 60)).await.unwrap();
    assert_eq!(wa.customer_id, w.customer_id);
    assert_eq!(wa.linked, Some(How::VerifiedClaim));
    let c = g.customer(&w.customer_id).await.unwrap();
    assert_eq!(
        c.identities
            .iter()
            .map(|i| i.channel.as_str())
            .collect::<Vec<_>>(),
        ["widget", "whatsapp"]
    );
    // The WhatsApp name came later from another channel within the window:
    // it wins, and the overwrite is flagged for review.
    assert_eq!(c.attributes["name"].value, "Sarah");
    assert_eq!(c.attributes["name"].source, "whatsapp");
    assert_eq!(wa.conflicts.len(), 1);
    assert_eq!(g.conflicts().await.unwrap()[0].kind, "attribute");
    assert_eq!(
        g.find_identity("whatsapp", "16505551234").await.unwrap(),
        Some(w.customer_id)
    );
}

async fn an_unverified_match_is_a_suggestion_not_a_link(kind: &str) {
    let f = fixture(kind, "suggestion").await;
    let g = graph(&f, rules());
    let w = g.resolve(&widget_sarah(T0)).await.unwrap();
    // Someone types Sarah's email into a Telegram chat: not proof.
    let t = g
        .resolve(&sender(
            id("telegram", "7012345678", "99"),
            vec![claim(ClaimKind::Email, "sarah@example.com", false)],
            T0 + 5,
        ))
        .await
        .unwrap();
    assert_ne!(t.customer_id, w.customer_id);
    assert!(t.created);
    let conflicts = g.conflicts().await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].kind, "suggestion");
    assert_eq!(
        conflicts[0].other_customer_id.as_deref(),
        Some(w.customer_id.as_str())
    );
    assert!(
        !conflicts[0].detail.contains("sarah"),
        "no personal data in conflict details"
    );
    let resolved = g.resolve_conflict(&conflicts[0].id, T0 + 10).await.unwrap();
    assert_eq!(resolved.resolved_at, Some(T0 + 10));
}

async fn a_link_token_links_once_and_only_on_its_channel_before_it_expires(kind: &str) {
    let f = fixture(kind, "token").await;
    let g = graph(&f, rules());
    let w = g.resolve(&widget_sarah(T0)).await.unwrap();
    let token = g
        .create_link_token(&w.customer_id, "telegram", 900, T0)
        .await
        .unwrap();
    let mut tg = sender(id("telegram", "7012345678", "123456789"), vec![], T0 + 30);
    tg.link_token = Some(token.clone());
    let r = g.resolve(&tg).await.unwrap();
    assert_eq!(r.customer_id, w.customer_id);
    assert_eq!(r.linked, Some(How::LinkToken));
    // One-time: a second Telegram user with the same token gets nothing.
    let mut other = sender(id("telegram", "7012345678", "555"), vec![], T0 + 40);
    other.link_token = Some(token);
    assert_ne!(g.resolve(&other).await.unwrap().customer_id, w.customer_id);
    // Expired, or for another channel: no link (and consumed all the same).
    let expired = g
        .create_link_token(&w.customer_id, "telegram", 60, T0)
        .await
        .unwrap();
    let mut late = sender(id("telegram", "7012345678", "777"), vec![], T0 + 61);
    late.link_token = Some(expired);
    assert_ne!(g.resolve(&late).await.unwrap().customer_id, w.customer_id);
    let discord_token = g
        .create_link_token(&w.customer_id, "discord", 900, T0)
        .await
        .unwrap();
    let mut wrong = sender(id("telegram", "7012345678", "888"), vec![], T0 + 1);
    wrong.link_token = Some(discord_token);
    assert_ne!(g.resolve(&wrong).await.unwrap().customer_id, w.customer_id);
}

async fn merge_then_undo_restores_the_exact_prior_state(kind: &str) {
    let f = fixture(kind, "undo").await;
    let g = graph(&f, rules());
    let a = g.resolve(&widget_sarah(T0)).await.unwrap().customer_id;
    let mut tg = sender(
        id("telegram", "7012345678", "123456789"),
        vec![claim(ClaimKind::Phone, "+447911123456", true)],
        T0 + 10,
    );
    tg.display_name = Some("Sarah K".into());
    let b = g.resolve(&tg).await.unwrap().customer_id;
    assert_ne!(a, b);
    let a_before = g.customer(&a).await.unwrap();
    let b_before = g.customer(&b).await.unwrap();
    let record = g.merge(&a, &b, How::AdminMerge, T0 + 20).await.unwrap();
    assert_eq!(
        (record.surviving.as_str(), record.merged.as_str()),
        (a.as_str(), b.as_str())
    );
    // Telegram's newer name won; Sarah's older one is on the record.
    assert_eq!(
        record.dropped,
        vec![chatcrafter_core::identity::DroppedValue {
            customer_id: a.clone(),
            attribute: "name".into(),
            value: "Sarah Kim".into()
        }]
    );
    let merged = g.customer(&a).await.unwrap();
    assert_eq!(merged.identities.len(), 2);
    assert_eq!(merged.identifiers.len(), 3);
    assert_eq!(
        g.find(&phone("+447911123456")).await.unwrap().as_deref(),
        Some(a.as_str())
    );
    assert_eq!(
        g.find_identity("telegram", "123456789")
            .await
            .unwrap()
            .as_deref(),
        Some(a.as_str())
    );
    // A later event from the merged identity lands on the survivor.
    assert_eq!(g.resolve(&tg).await.unwrap().customer_id, a);

    g.undo(&record.merge_id, T0 + 30).await.unwrap();
    assert_eq!(g.customer(&a).await.unwrap(), a_before);
    assert_eq!(g.customer(&b).await.unwrap(), b_before);
    assert_eq!(
        g.find(&phone("+447911123456")).await.unwrap().as_deref(),
        Some(b.as_str())
    );
    assert_eq!(
        g.find(&phone("+16505551234")).await.unwrap().as_deref(),
        Some(a.as_str())
    );
    assert_eq!(
        g.find_identity("telegram", "123456789")
            .await
            .unwrap()
            .as_deref(),
        Some(b.as_str())
    );
    assert!(matches!(
        g.undo(&record.merge_id, T0 + 40).await,
        Err(DbError::Invalid(_))
    ));
    assert!(matches!(
        g.undo("m_nope", T0 + 40).await,
        Err(DbError::NotFound(_))
    ));
}

async fn a_merge_that_would_break_a_limit_is_refused_and_resolution_records_a_conflict(kind: &str) {
    let f = fixture(kind, "limits").await;
    let mut r = rules();
    r.limits = BTreeMap::from([(IdentifierKind::Email, 1), (IdentifierKind::Phone, 3)]);
    let g = graph(&f, r);
    let a = g
        .resolve(&sender(
            id("widget", "s", "a"),
            vec![claim(ClaimKind::Email, "a@example.com", true)],
            T0,
        ))
        .await
        .unwrap()
        .customer_id;
    let b = g
        .resolve(&sender(
            id("widget", "s", "b"),
            vec![claim(ClaimKind::Email, "b@example.com", true)],
            T0,
        ))
        .await
        .unwrap()
        .customer_id;
    let err = g.merge(&a, &b, How::AdminMerge, T0 + 1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "merging would give the customer 2 email identifiers; the limit is 1"
    );
    // An event whose verified claims span both: a conflict, not a merge.
    let both = sender(
        id("whatsapp", "p", "1"),
        vec![
            claim(ClaimKind::Email, "a@example.com", true),
            claim(ClaimKind::Email, "b@example.com", true),
        ],
        T0 + 2,
    );
    let res = g.resolve(&both).await.unwrap();
    assert_eq!(res.customer_id, a);
    assert!(res.merges.is_empty());
    assert_eq!(res.conflicts.len(), 1);
    assert_eq!(
        g.find(&email("b@example.com")).await.unwrap().as_deref(),
        Some(b.as_str())
    );
    let conflicts = g.conflicts().await.unwrap();
    assert_eq!(conflicts[0].kind, "limit");
    assert_eq!(conflicts[0].other_customer_id.as_deref(), Some(b.as_str()));
}

async fn a_blocked_value_never_links(kind: &str) {
    let f = fixture(kind, "blocked").await;
    let mut r = rules();
    r.blocked = BlockedValues::new(["test@example.com"]);
    let g = graph(&f, r);
    let a = g
        .resolve(&sender(
            id("widget", "s", "tester-1"),
            vec![claim(ClaimKind::Email, "test@example.com", true)],
            T0,
        ))
        .await
        .unwrap();
    let b = g
        .resolve(&sender(
            id("widget", "s", "tester-2"),
            vec![claim(ClaimKind::Email, "TEST@example.com", true)],
            T0,
        ))
        .await
        .unwrap();
    assert_ne!(a.customer_id, b.customer_id);
    assert_eq!(g.find(&email("test@example.com")).await.unwrap(), None);
    assert_eq!(a.conflicts.len(), 1);
    assert_eq!(g.conflicts().await.unwrap()[0].kind, "blocked");
}

async fn a_scan_of_the_store_finds_no_personal_data_in_plaintext(kind: &str) {
    let f = fixture(kind, "leak").await;
    let g = graph(&f, rules());
    let w = g.resolve(&widget_sarah(T0)).await.unwrap();
    g.resolve(&whatsapp_sarah(T0 + 1)).await.unwrap();
    let token = g
        .create_link_token(&w.customer_id, "telegram", 900, T0)
        .await
        .unwrap();
    let mut tg = sender(
        id("telegram", "7012345678", "123456789"),
        vec![claim(ClaimKind::Phone, "+447911123456", true)],
        T0 + 2,
    );
    tg.link_token = Some(token);
    tg.display_name = Some("Ada Lovelace".into());
    g.resolve(&tg).await.unwrap();
    let dump = f.backend.dump().await.unwrap();
    assert!(dump.len() > 5);
    let needles: [&[u8]; 10] = [
        b"Sarah",
        b"sarah@example.com",
        b"example.com",
        b"16505551234",
        b"6505551234",
        b"447911123456",
        b"Lovelace",
        b"user-42",
        b"123456789",
        b"shop.example",
    ];
    for (k, v) in &dump {
        for n in needles {
            let hit = |hay: &[u8]| hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
            assert!(
                !hit(k.as_bytes()),
                "key {k} contains {}",
                String::from_utf8_lossy(n)
            );
            assert!(
                !hit(v),
                "value of {k} contains {}",
                String::from_utf8_lossy(n)
            );
        }
    }
    // The raw bytes on disk: the redb file, or Redis's RDB snapshot.
    if f.redis.is_some() {
        let mut conn = ::redis::Client::open(f.url.clone().unwrap())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = ::redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    }
    let raw = std::fs::read(&f.file).unwrap_or_else(|e| panic!("{}: {e}", f.file.display()));
    assert!(raw.len() > 1000, "{} holds the data", f.file.display());
    for n in needles {
        assert!(
            !raw.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n)),
            "{} contains {}",
            f.file.display(),
            String::from_utf8_lossy(n)
        );
    }
}

async fn concurrent_events_for_one_person_end_as_exactly_one_customer(kind: &str) {
    let f = fixture(kind, "race").await;
    // Two graph instances over one store stand for two gateway nodes (for
    // Redis, two independent connections).
    let node_a = Arc::new(graph(&f, rules()));
    let node_b = Arc::new(match &f.url {
        Some(url) => Db::new(
            Arc::new(AnyBackend::Redis(
                chatcrafter_gateway::store::redis::connect(url, "cc:")
                    .await
                    .unwrap(),
            )),
            clock(),
            keys(),
            "cc:",
            rules(),
            Arc::new(ring::rand::SystemRandom::new()),
        ),
        None => graph(&f, rules()),
    });
    // Twelve identities of one person on different channels, each carrying
    // the same verified phone, fired at once in a shuffled order on both.
    let senders: Vec<Sender> = (0..12)
        .map(|i| {
            let channel = ["widget", "whatsapp", "telegram", "discord"][i % 4];
            sender(
                id(channel, "scope", &format!("user-{i}")),
                vec![claim(ClaimKind::Phone, "+16505551234", true)],
                T0 + i as u64,
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..senders.len() * 2).collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..order.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let tasks: Vec<_> = order
        .into_iter()
        .map(|n| {
            let s = senders[n % senders.len()].clone();
            let node = if n % 2 == 0 {
                node_a.clone()
            } else {
                node_b.clone()
            };
            tokio::spawn(async move {
                // A small, varying delay so the events interleave.
                tokio::time::sleep(Duration::from_micros((n as u64 * 7919) % 3000)).await;
                node.resolve(&s).await.unwrap().customer_id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let owner = node_a.find(&phone("+16505551234")).await.unwrap().unwrap();
    let live: std::collections::BTreeSet<String> = {
        let mut set = std::collections::BTreeSet::new();
        for s in &senders {
            set.insert(
                node_a
                    .find_identity(&s.identity.channel, &s.identity.id)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        set
    };
    assert_eq!(live.len(), 1, "every identity resolves to one customer");
    assert_eq!(live.into_iter().next().unwrap(), owner);
    let c = node_a.customer(&owner).await.unwrap();
    assert_eq!(c.identities.len(), 12, "no link lost: {:?}", c.identities);
    assert!(
        ids.iter().all(|i| *i == owner),
        "every resolution answered the same customer"
    );
}

/// Calls per command, from `INFO commandstats` (commands a script runs
/// count too).
async fn command_calls(conn: &mut ::redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resolves_a_known_identity_in_one_round_trip() {
    let f = fixture("redis", "round-trips").await;
    let url = f.url.clone().unwrap();
    let g = graph(&f, rules());
    g.resolve(&whatsapp_sarah(T0)).await.unwrap();
    g.resolve(&whatsapp_sarah(T0)).await.unwrap(); // scripts now cached
    let mut conn = ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before = command_calls(&mut conn).await;
    let r = g.resolve(&whatsapp_sarah(T0 + 1)).await.unwrap();
    let after = command_calls(&mut conn).await;
    assert!(!r.created);
    let delta: BTreeMap<&str, u64> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0 && k != "info").then_some((k.as_str(), d))
        })
        .collect();
    // One EVALSHA — the lookup and the profile it names, read inside one
    // script — and nothing else: no commit, since nothing changed.
    assert_eq!(
        delta,
        BTreeMap::from([("evalsha", 1), ("get", 1), ("mget", 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_subscribers_on_every_node() {
    use chatcrafter_gateway::notify::{Change, ChangeKind, Notifier};
    let change = Change {
        customer_id: "c_0123456789abcdef0123456789abcdef".into(),
        kind: ChangeKind::Profile,
    };
    // Embedded: one node, in process. A change reaches the subscribers
    // that follow its customer, and no one else; a merge reaches everyone.
    let local = Notifier::local();
    let mut rx = local.subscribe();
    rx.follow(Some(&change.customer_id));
    let mut other = local.subscribe();
    other.follow(Some("c_someone_else"));
    local.publish(change.clone()).await;
    assert_eq!(rx.recv().await.unwrap(), change);
    let merge = Change {
        customer_id: "c_survivor".into(),
        kind: ChangeKind::Merge,
    };
    local.publish(merge.clone()).await;
    assert_eq!(other.recv().await.unwrap(), merge, "only the merge");
    assert_eq!(rx.recv().await.unwrap(), merge);
    // Redis: a change published on node B reaches node A's subscribers.
    let server = redis_server("pubsub");
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let a = Notifier::redis(&url, "cc:").await.unwrap();
    let b = Notifier::redis(&url, "cc:").await.unwrap();
    let mut on_a = a.subscribe();
    on_a.follow(Some(&change.customer_id));
    let mut on_b = b.subscribe();
    on_b.follow(Some(&change.customer_id));
    b.publish(change.clone()).await;
    let got = tokio::time::timeout(Duration::from_secs(5), on_a.recv())
        .await
        .expect("delivered in time")
        .unwrap();
    assert_eq!(got, change);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), on_b.recv())
            .await
            .unwrap()
            .unwrap(),
        change
    );
}

/// A claimed job's index entry, as `due_jobs` would find it.
fn as_found(job: &chatcrafter_core::delivery::Job) -> chatcrafter_core::delivery::JobRef {
    chatcrafter_core::delivery::JobRef {
        id: job.id.clone(),
        due_ms: 0,
        slot: job.slot,
    }
}

/// The one job due at `now_ms`, claimed.
async fn claim_due(
    g: &Db<Arc<AnyBackend>>,
    now_ms: u64,
    lease_ms: u64,
) -> (u32, chatcrafter_core::delivery::Job) {
    let due = g.due_jobs(now_ms).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    let (shard, r) = &due[0];
    let job = g.claim(*shard, r, now_ms, lease_ms).await.unwrap().unwrap();
    (*shard, job)
}

async fn a_stored_message_queues_its_answer_and_a_lapsed_lease_brings_it_back(kind: &str) {
    use chatcrafter_core::channel::{DeliveryState, DeliveryStatus};
    use chatcrafter_core::delivery::JobKind;
    use chatcrafter_core::jobs::{Answer, Step};
    let f = fixture(kind, "queue").await;
    let g = graph(&f, rules());
    let now = T0 * 1000;
    let wa = whatsapp_sarah(T0);
    g.record_inbound(&message(&wa, "wamid.Q1", "is the chair in stock?"))
        .await
        .unwrap();
    // The answer is queued with the message, due at once.
    let (shard, first) = claim_due(&g, now, 1_000).await;
    assert!(matches!(first.kind, JobKind::Agent { .. }));
    assert_eq!(first.attempts, 1);
    // Leased: nobody else sees or takes it…
    assert!(g.due_jobs(now + 999).await.unwrap().is_empty());
    assert_eq!(
        g.claim(shard, &as_found(&first), now + 999, 1_000)
            .await
            .unwrap(),
        None
    );
    // …until the lease lapses (its claimer died): it comes back.
    let (_, second) = claim_due(&g, now + 1_000, 1_000).await;
    assert_eq!(
        (second.id.as_str(), second.attempts),
        (first.id.as_str(), 2)
    );
    // The first claimer, late, can no longer act on it: nothing written.
    let answer = Answer {
        replies: vec!["Yes, in black and grey.".into()],
        ..Answer::default()
    };
    let dump = f.backend.dump().await.unwrap();
    assert_eq!(
        g.finish_agent(shard, &first, &answer, now + 1_100)
            .await
            .unwrap(),
        Step::Lost
    );
    assert_eq!(f.backend.dump().await.unwrap(), dump);
    assert_eq!(
        g.finish_agent(shard, &second, &answer, now + 1_100)
            .await
            .unwrap(),
        Step::Done
    );
    // The reply is on the timeline, queued, and its delivery is a job.
    let sarah = g
        .find_identity("whatsapp", "16505551234")
        .await
        .unwrap()
        .unwrap();
    let entries = g.timeline(&sarah).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].text.as_deref(), Some("Yes, in black and grey."));
    assert_eq!(entries[1].status.as_deref(), Some("queued"));
    let (dshard, delivery) = claim_due(&g, now + 1_200, 1_000).await;
    let JobKind::Deliver { outbound_id } = &delivery.kind else {
        panic!("{delivery:?}")
    };
    let o = g.outbound(outbound_id).await.unwrap();
    assert_eq!(o.routes[0].identity, wa.identity);
    let report = |state, id: &str| DeliveryStatus {
        provider_message_id: id.into(),
        recipient: None,
        state,
        timestamp: T0 + 5,
        error: None,
    };
    // The channel reports it delivered before the send is recorded: kept,
    // and applied when it is.
    assert!(
        !g.record_status("whatsapp", &report(DeliveryState::Delivered, "wamid.OUT1"))
            .await
            .unwrap()
    );
    assert_eq!(
        g.delivered(dshard, &delivery, Some("wamid.OUT1"), now + 1_300)
            .await
            .unwrap(),
        Step::Done
    );
    assert!(g.due_jobs(u64::MAX).await.unwrap().is_empty());
    assert_eq!(
        g.timeline(&sarah).await.unwrap()[1].status.as_deref(),
        Some("delivered")
    );
    // Statuses move it forward only; unknown ids are not ours.
    for state in [DeliveryState::Read, DeliveryState::Delivered] {
        assert!(
            g.record_status("whatsapp", &report(state, "wamid.OUT1"))
                .await
                .unwrap()
        );
    }
    assert!(
        !g.record_status("whatsapp", &report(DeliveryState::Read, "wamid.other"))
            .await
            .unwrap()
    );
    assert!(
        !g.record_status("telegram", &report(DeliveryState::Read, "wamid.OUT1"))
            .await
            .unwrap()
    );
    let entries = g.timeline(&sarah).await.unwrap();
    assert_eq!(entries[1].status.as_deref(), Some("read"));

    // An answer that cannot be had is retried, then handed to a person.
    g.record_inbound(&message(&wa, "wamid.Q2", "hello?"))
        .await
        .unwrap();
    let (shard, job) = claim_due(&g, now + 2_000, 1_000).await;
    assert_eq!(
        g.fail(shard, &job, "agent answered 500", Some(500), now + 2_000)
            .await
            .unwrap(),
        Step::Retry(now + 2_500)
    );
    assert!(g.due_jobs(now + 2_499).await.unwrap().is_empty());
    let (shard, job) = claim_due(&g, now + 2_500, 1_000).await;
    assert_eq!(job.last_error.as_deref(), Some("agent answered 500"));
    assert_eq!(
        g.fail(shard, &job, "agent answered 500", None, now + 2_600)
            .await
            .unwrap(),
        Step::GaveUp
    );
    let inbox = g.handoffs().await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].customer_id, sarah);
    assert_eq!(inbox[0].handoff.reason, "agent_unavailable");
    assert!(g.due_jobs(u64::MAX).await.unwrap().is_empty());
    assert!(g.close_handoff(&sarah).await.unwrap());
    assert!(g.handoffs().await.unwrap().is_empty());
}

async fn reminders_follow_the_injected_clock_consent_and_the_cap(kind: &str) {
    use chatcrafter_core::conversation::Entry;
    use chatcrafter_core::jobs::{Answer, ReminderRules, Skip};
    let f = fixture(kind, "reminders").await;
    let g = graph(&f, rules());
    let hour = 3_600_000;
    let t0 = T0 * 1000;
    let wa = whatsapp_sarah(T0);
    g.record_inbound(&message(&wa, "wamid.C1", "hi"))
        .await
        .unwrap();
    let (shard, job) = claim_due(&g, t0, 1_000).await;
    g.finish_agent(shard, &job, &Answer::default(), t0)
        .await
        .unwrap();
    let sarah = g
        .find_identity("whatsapp", "16505551234")
        .await
        .unwrap()
        .unwrap();
    let rules = ReminderRules {
        per_day: 1,
        channel_priority: vec!["telegram".into(), "whatsapp".into()],
    };
    let text = |name: Option<&str>| format!("{} left a cart", name.unwrap_or("someone"));
    let abandon = |at_ms: u64| {
        let g = &g;
        let sarah = &sarah;
        async move {
            let e = Entry::event("cart_abandoned", serde_json::json!({}), at_ms / 1000);
            g.record_event(sarah, &e, hour, at_ms).await.unwrap();
        }
    };
    let run = |at_ms: u64| {
        let (g, rules, text) = (&g, &rules, &text);
        async move {
            let (shard, job) = claim_due(g, at_ms, 1_000).await;
            g.run_reminder(shard, &job, rules, text, at_ms)
                .await
                .unwrap()
                .unwrap()
        }
    };

    // Not before its time; then skipped without consent.
    abandon(t0).await;
    assert!(g.due_jobs(t0 + hour - 1).await.unwrap().is_empty());
    assert_eq!(run(t0 + hour).await.unwrap_err(), Skip::NoConsent);

    // With consent: sent on the only channel they have, by priority.
    let consent = BTreeMap::from([("consent.marketing".to_string(), "granted".to_string())]);
    g.set_attributes(&sarah, &consent, "admin", T0)
        .await
        .unwrap();
    abandon(t0 + hour).await;
    let o = run(t0 + 2 * hour).await.unwrap();
    assert_eq!(o.text, "Sarah left a cart");
    assert_eq!(o.author, "reminder");
    assert_eq!(o.routes[0].identity.channel, "whatsapp");
    assert_eq!(o.routes[0].reply_handle, None);

    // A second within the rolling day: capped. A day later: allowed.
    abandon(t0 + 3 * hour).await;
    // (the first reminder's delivery job is due too; take it out of the way)
    let due = g.due_jobs(t0 + 4 * hour).await.unwrap();
    assert_eq!(due.len(), 2);
    for (shard, r) in &due {
        let job = g
            .claim(*shard, r, t0 + 4 * hour, 1_000)
            .await
            .unwrap()
            .unwrap();
        if matches!(
            job.kind,
            chatcrafter_core::delivery::JobKind::Deliver { .. }
        ) {
            g.delivered(*shard, &job, None, t0 + 4 * hour)
                .await
                .unwrap();
        } else {
            assert_eq!(
                g.run_reminder(*shard, &job, &rules, &text, t0 + 4 * hour)
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap_err(),
                Skip::FrequencyCap
            );
        }
    }
    abandon(t0 + 26 * hour).await;
    assert!(run(t0 + 27 * hour).await.is_ok());

    // A purchase in between cancels the reminder outright.
    let (shard, job) = claim_due(&g, t0 + 27 * hour, 1_000).await;
    g.delivered(shard, &job, None, t0 + 27 * hour)
        .await
        .unwrap();
    abandon(t0 + 28 * hour).await;
    let p = Entry::event("purchase", serde_json::json!({}), T0 + 28 * 3600 + 60);
    g.record_event(&sarah, &p, hour, t0 + 28 * hour + 60_000)
        .await
        .unwrap();
    assert!(g.queued_jobs().await.unwrap().is_empty());
    let skipped: Vec<String> = g
        .timeline(&sarah)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "reminder_skipped")
        .map(|e| {
            e.properties.as_ref().unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(skipped, ["no_consent", "frequency_cap"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_units_on_the_embedded_store_share_commits_and_all_survive_a_reopen() {
    use chatcrafter_core::inbound::Recorded;
    let dir = scratch("group-commit");
    let embedded = Embedded::open(&dir).unwrap();
    let f = Fixture {
        backend: Arc::new(AnyBackend::Embedded(embedded.clone())),
        redis: None,
        url: None,
        file: dir.join("gateway.redb"),
    };
    let g = Arc::new(graph(&f, rules()));
    let before = embedded.commits();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let g = g.clone();
            tokio::spawn(async move {
                let s = sender(
                    id("telegram", "7012345678", &format!("{}", 1000 + i % 20)),
                    vec![],
                    T0 + i,
                );
                g.record_inbound(&message(&s, &format!("7012345678:{i}"), "hi"))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), Recorded::Stored { .. }));
    }
    let commits = embedded.commits() - before;
    assert!(
        commits < 200,
        "{commits} commits for 200 units: no batching"
    );
    drop((g, f, embedded));
    // Everything acknowledged is on disk.
    let reopened = Embedded::open(&dir).unwrap();
    let f = Fixture {
        backend: Arc::new(AnyBackend::Embedded(reopened)),
        redis: None,
        url: None,
        file: dir.join("gateway.redb"),
    };
    let g = graph(&f, rules());
    let mut total = 0;
    for u in 0..20 {
        let c = g
            .find_identity("telegram", &format!("{}", 1000 + u))
            .await
            .unwrap()
            .unwrap();
        total += g.timeline(&c).await.unwrap().len();
    }
    assert_eq!(total, 200);
    println!("200 units in {commits} commits");
}

async fn a_backlog_is_seen_a_window_at_a_time_and_drains_in_any_order(kind: &str) {
    use chatcrafter_core::jobs::{Answer, Step, WINDOW};
    let f = fixture(kind, "backlog").await;
    let g = graph(&f, rules());
    let now = T0 * 1000;
    // 80 messages from one customer: one shard, a backlog past the window.
    let wa = whatsapp_sarah(T0);
    for i in 0..80 {
        g.record_inbound(&message(&wa, &format!("wamid.B{i}"), "hi"))
            .await
            .unwrap();
    }
    let mut done = 0;
    let mut round = 0;
    loop {
        let due = g.due_jobs(now).await.unwrap();
        if due.is_empty() {
            break;
        }
        assert!(due.len() as u64 <= WINDOW, "{} due", due.len());
        round += 1;
        // Finish them out of order: last first.
        for (shard, r) in due.iter().rev() {
            let job = g.claim(*shard, r, now, 60_000).await.unwrap().unwrap();
            assert_eq!(
                g.finish_agent(*shard, &job, &Answer::default(), now)
                    .await
                    .unwrap(),
                Step::Done
            );
            done += 1;
        }
    }
    assert_eq!(done, 80);
    assert_eq!(round, 80usize.div_ceil(WINDOW as usize));
    // Nothing of the queue is left but its two counters, equal.
    let dump = f.backend.dump().await.unwrap();
    let queue: Vec<&(String, Vec<u8>)> = dump
        .iter()
        .filter(|(k, _)| k.starts_with("cc:q") || k.starts_with("cc:job:"))
        .collect();
    assert_eq!(
        queue.len(),
        2,
        "{:?}",
        queue.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    assert_eq!(queue[0].1, queue[1].1);
    assert_eq!(queue[0].1, b"80");
}

async fn provider_ids_are_remembered_for_their_retention_and_then_dropped(kind: &str) {
    use chatcrafter_core::inbound::{DEDUP_RETENTION_SECONDS, Recorded};
    let f = fixture(kind, "retention").await;
    let g = graph(&f, rules());
    let now = T0;
    let seen_keys = || async {
        f.backend
            .dump()
            .await
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with("cc:seen:"))
            .count()
    };
    let old = whatsapp_sarah(now - DEDUP_RETENTION_SECONDS - 3_600);
    let fresh = whatsapp_sarah(now - 60);
    let m_old = message(&old, "wamid.OLD", "a week ago");
    let m_fresh = message(&fresh, "wamid.NEW", "a minute ago");
    // Older than the retention: its id may be forgotten already, so it
    // cannot be told from a replay — refused, nothing stored.
    assert_eq!(g.record_inbound(&m_old).await.unwrap(), Recorded::Stale);
    assert_eq!(seen_keys().await, 0);
    assert!(
        f.backend
            .dump()
            .await
            .unwrap()
            .iter()
            .all(|(k, _)| !k.starts_with("cc:cust:"))
    );
    assert!(matches!(
        g.record_inbound(&m_fresh).await.unwrap(),
        Recorded::Stored { .. }
    ));
    assert_eq!(
        g.record_inbound(&m_fresh).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(seen_keys().await, 1);
    // Until its retention ends the id is kept; then the embedded store's
    // sweep drops it (Redis expires it itself, a TTL from the injected
    // clock), and a redelivery is refused as stale rather than stored.
    assert_eq!(f.backend.sweep_expired(now, 1_000).await.unwrap(), 0);
    let later = now + DEDUP_RETENTION_SECONDS;
    let swept = f.backend.sweep_expired(later, 1_000).await.unwrap();
    assert_eq!(swept, usize::from(kind == "embedded"));
    let g_later = Db::new(
        f.backend.clone(),
        Arc::new(ManualClock::at_ms(later * 1000)),
        keys(),
        "cc:",
        rules(),
        Arc::new(ring::rand::SystemRandom::new()),
    );
    assert_eq!(
        g_later.record_inbound(&m_fresh).await.unwrap(),
        Recorded::Stale
    );
}

async fn a_customers_messages_go_out_in_order_even_when_one_is_retried(kind: &str) {
    use chatcrafter_core::jobs::{Answer, ClaimMode, Claimed, ORDER_RECHECK_MS, Step};
    let f = fixture(kind, "order").await;
    let g = graph(&f, rules());
    let now = T0 * 1000;
    let wa = whatsapp_sarah(T0);
    g.record_inbound(&message(&wa, "wamid.O1", "hi"))
        .await
        .unwrap();
    let (shard, job) = claim_due(&g, now, 1_000).await;
    let answer = Answer {
        replies: vec!["first".into(), "second".into()],
        ..Answer::default()
    };
    assert_eq!(
        g.finish_agent(shard, &job, &answer, now).await.unwrap(),
        Step::Done
    );
    let claim = |at: u64| {
        let g = &g;
        async move {
            let mut out = Vec::new();
            for (shard, r) in g.due_jobs(at).await.unwrap() {
                if let Some(Claimed::Job { job, outbound }) = g
                    .claim_for_worker(shard, &r, at, 1_000, 50, ClaimMode::Normal)
                    .await
                    .unwrap()
                {
                    out.push((shard, job, outbound.unwrap().text));
                }
            }
            out
        }
    };
    // Only the first may go; it fails and waits out a backoff…
    let got = claim(now + 10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, "first");
    let (s1, j1, _) = &got[0];
    g.fail(*s1, j1, "503", Some(5_000), now + 20).await.unwrap();
    // …and the second still waits for it.
    assert!(claim(now + 30).await.is_empty());
    let got = claim(now + 5_020).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, "first");
    let (s1, j1, _) = &got[0];
    g.delivered(*s1, j1, None, now + 5_030).await.unwrap();
    // The second, set aside while it waited, comes back by itself.
    let got = claim(now + 5_020 + ORDER_RECHECK_MS).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, "second");
}

// --- Analytics over a generated population -------------------------------

const CHANNELS: [&str; 5] = ["widget", "whatsapp", "telegram", "discord", "messenger"];

/// One generated person: their touches (time, channel) and purchases.
#[derive(Clone, Default)]
struct Person {
    touches: Vec<(u64, &'static str)>,
    purchases: Vec<u64>,
    refused: bool,
}

/// The reports' figures computed straight from the generated journeys
/// (nothing of the core's analytics code): `(from, to)` selects touches
/// and purchases.
fn expected(people: &[Person], range: (u64, u64)) -> serde_json::Value {
    use std::collections::BTreeMap as M;
    let inr = |t: u64| t >= range.0 && t <= range.1;
    let (mut customers, mut multi, mut used) = (0u64, 0u64, 0u64);
    let mut first: M<&str, u64> = M::new();
    let mut active: M<&str, u64> = M::new();
    let mut conv: M<&str, u64> = M::new();
    let mut switches: M<String, u64> = M::new();
    let mut paths: M<Vec<&str>, (u64, u64)> = M::new();
    let mut linear: M<&str, f64> = M::new();
    let mut position: M<&str, f64> = M::new();
    let mut purchases = 0u64;
    for p in people.iter().filter(|p| !p.refused) {
        let mut t: Vec<(u64, &str)> = p.touches.iter().copied().filter(|x| inr(x.0)).collect();
        t.sort();
        let mut buys: Vec<u64> = p.purchases.iter().copied().filter(|x| inr(*x)).collect();
        buys.sort();
        for &b in &buys {
            purchases += 1;
            let mut all: Vec<(u64, &str)> =
                p.touches.iter().copied().filter(|x| inr(x.0)).collect();
            all.sort();
            let w: Vec<&str> = all
                .iter()
                .filter(|x| x.0 <= b && b - x.0 <= 30 * 86_400)
                .map(|x| x.1)
                .collect();
            let n = w.len();
            if n == 0 {
                *linear.entry("none").or_default() += 1.0;
                *position.entry("none").or_default() += 1.0;
            }
            for (i, ch) in w.iter().enumerate() {
                *linear.entry(ch).or_default() += 1.0 / n as f64;
                let pw = match n {
                    1 => 1.0,
                    2 => 0.5,
                    _ if i == 0 || i == n - 1 => 0.4,
                    _ => 0.2 / (n - 2) as f64,
                };
                *position.entry(ch).or_default() += pw;
            }
        }
        if t.is_empty() {
            continue;
        }
        customers += 1;
        *first.entry(t[0].1).or_default() += 1;
        let mut path: Vec<&str> = Vec::new();
        for x in &t {
            if !path.contains(&x.1) {
                path.push(x.1);
            }
        }
        for ch in &path {
            *active.entry(ch).or_default() += 1;
        }
        used += path.len() as u64;
        multi += u64::from(path.len() > 1);
        for w in t.windows(2) {
            if w[0].1 != w[1].1 {
                *switches
                    .entry(format!("{}>{}", w[0].1, w[1].1))
                    .or_default() += 1;
            }
        }
        let e = paths.entry(path).or_default();
        e.0 += 1;
        if let Some(&b) = buys.first() {
            let ch = t
                .iter()
                .rev()
                .find(|x| x.0 <= b)
                .map(|x| x.1)
                .unwrap_or("none");
            *conv.entry(ch).or_default() += 1;
            e.1 += 1;
        }
    }
    let round = |x: f64| (x * 1e6).round() / 1e6;
    let credit = |m: &M<&str, f64>| -> M<String, f64> {
        m.iter().map(|(k, v)| (k.to_string(), round(*v))).collect()
    };
    serde_json::json!({
        "customers": customers, "first_touch": first, "active": active, "conversions": conv,
        "multi_channel_customers": multi,
        "avg_channels_per_customer": round(used as f64 / customers.max(1) as f64),
        "switches": switches, "purchases": purchases,
        "linear": credit(&linear), "position": credit(&position),
        "paths": paths.into_iter().map(|(p, (n, c))| (p.join(">"), (n, c))).collect::<M<_, _>>(),
    })
}

/// What the reports say, in the shape of [`expected`].
fn reported(c: &chatcrafter_core::analytics::Counters) -> serde_json::Value {
    use chatcrafter_core::analytics as a;
    let ch = a::channels_report(c);
    let sw = a::switches_report(c);
    let mut switches = BTreeMap::new();
    for (from, tos) in sw["matrix"].as_object().unwrap() {
        for (to, n) in tos.as_object().unwrap() {
            switches.insert(format!("{from}>{to}"), n.as_u64().unwrap());
        }
    }
    let mut paths = BTreeMap::new();
    for p in a::journeys_report(c)["paths"].as_array().unwrap() {
        let path: Vec<&str> = p["path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        paths.insert(
            path.join(">"),
            (
                p["customers"].as_u64().unwrap(),
                p["conversions"].as_u64().unwrap(),
            ),
        );
    }
    serde_json::json!({
        "customers": ch["customers"], "first_touch": ch["first_touch"], "active": ch["active"],
        "conversions": ch["conversions"], "multi_channel_customers": ch["multi_channel_customers"],
        "avg_channels_per_customer": ch["avg_channels_per_customer"],
        "switches": switches, "purchases": a::attribution_report(c, "linear")["conversions"],
        "linear": a::attribution_report(c, "linear")["credit"],
        "position": a::attribution_report(c, "position")["credit"],
        "paths": paths,
    })
}

async fn analytics_reports_match_an_independent_count_of_a_generated_population(kind: &str) {
    use chatcrafter_core::analytics::Filter;
    let f = fixture(kind, "analytics").await;
    let g = graph(&f, rules());
    const N: u64 = 2_000;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    // Journeys over the last six days (inside the dedup window).
    let start = T0 - 6 * 86_400;
    let mut people: Vec<Person> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for i in 0..N {
        let phone = format!("+1555{:07}", 1_000_000 + i);
        let mut p = Person::default();
        let touches = 1 + next(4);
        let mut at = start + next(86_400);
        let mut id = String::new();
        for t in 0..touches {
            let ch = CHANNELS[next(5) as usize];
            at += 1 + next(40_000);
            let s = sender(
                id_of(ch, i),
                vec![claim(ClaimKind::Phone, &phone, true)],
                at,
            );
            g.record_inbound(&message(&s, &format!("m-{i}-{t}"), "hi"))
                .await
                .unwrap();
            p.touches.push((at, ch));
            if id.is_empty() {
                id = g
                    .find_identity(ch, &format!("u{i}"))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        if next(3) == 0 {
            let b = at + next(3_600);
            let e =
                chatcrafter_core::conversation::Entry::event("purchase", serde_json::json!({}), b);
            g.record_event(&id, &e, 0, b * 1000).await.unwrap();
            p.purchases.push(b);
        }
        people.push(p);
        ids.push(id);
    }
    // Some refuse analytics (none of them merged below).
    for i in (7..N).step_by(17) {
        let mut a = BTreeMap::new();
        a.insert("consent.analytics".to_string(), "refused".to_string());
        g.set_attributes(&ids[i as usize], &a, "admin", T0)
            .await
            .unwrap();
        people[i as usize].refused = true;
    }
    // Merges of pairs (i, i + 1) for i a multiple of 50, and one undone.
    let mut undo = None;
    for i in (0..N - 1).step_by(50) {
        let (a, b) = (i as usize, i as usize + 1);
        let m = g
            .merge(&ids[a], &ids[b], How::AdminMerge, T0)
            .await
            .unwrap();
        if i == 100 {
            undo = Some(m.merge_id);
        }
    }
    g.undo(&undo.unwrap(), T0).await.unwrap();
    let mut resolved: Vec<Person> = Vec::new();
    let mut i = 0;
    while i < N as usize {
        if i % 50 == 0 && i + 1 < N as usize && i != 100 {
            let mut p = people[i].clone();
            p.touches.extend(people[i + 1].touches.iter().copied());
            p.purchases.extend(people[i + 1].purchases.iter().copied());
            // A merge keeps the merged customer's refusal when the
            // survivor has no answer of its own (551 into 550 here).
            p.refused |= people[i + 1].refused;
            resolved.push(p);
            i += 2;
        } else {
            resolved.push(people[i].clone());
            i += 1;
        }
    }

    let kept = g.analytics_counters().await.unwrap();
    let all = (0, u64::MAX);
    assert_eq!(
        reported(&kept),
        expected(&resolved, all),
        "{kind}: kept counters"
    );
    // The filtered path (summaries) agrees with the same count over a range.
    let from = T0 - 3 * 86_400;
    let range = Filter {
        from: Some(from),
        to: Some(T0),
        channel: None,
    };
    let filtered = g.analytics_filtered(&range).await.unwrap();
    assert_eq!(
        reported(&filtered),
        expected(&resolved, (from, T0)),
        "{kind}: from..to"
    );
    let everything = g.analytics_filtered(&Filter::default()).await.unwrap();
    assert_eq!(reported(&everything), reported(&kept), "{kind}: recount");
}

fn id_of(channel: &str, i: u64) -> ChannelIdentity {
    id(channel, "s", &format!("u{i}"))
}
