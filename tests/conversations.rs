//! Conversations end to end: the real gateway with its real plugins, on its
//! embedded store and on its own Redis, answering through local mock
//! WhatsApp, Telegram and Discord APIs (and a mock business agent).

#[path = "support.rs"]
mod support;

use std::time::Duration;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use support::*;

const APP_SECRET: &str = "meta-app-secret-for-tests";
const WA_TOKEN: &str = "EAAG-wa-access-token";
const TG_SECRET: &str = "tg_secret-token_123";
const TG_BOT: &str = "7012345678:AAE-bot-token";
const WIDGET_SECRET: &str = "widget-secret-widget-secret-0123456789";
const ADMIN: &str = "admin-token-for-tests";
const AGENT_SECRET: &str = "agent-signing-secret";
const EMBEDDED: &str = "kind = \"embedded\"\npath = \"data\"";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// The Discord user and interaction of tests/fixtures/discord_guild_command.json.
const DISCORD_USER: &str = "80351110224678912";
const DISCORD_APP: &str = "1289391923891234567";
const DISCORD_TOKEN: &str = "aW50ZXJhY3Rpb246MTMwMDAwMDAwMDAwMDAwMDAwMjp0b2tlbg";
const WAIT: Duration = Duration::from_secs(10);

/// Mock channel APIs under one server: WhatsApp under `/wa`, Telegram under
/// `/tg`, Discord under `/discord`, each answering as the real one does on
/// success. WhatsApp's message id is derived from the idempotency key, so a
/// test can name it.
fn channel_apis() -> MockApi {
    MockApi::start(|r, n| {
        let key = r.header("idempotency-key").unwrap_or("none");
        if r.path.starts_with("/wa/") {
            (200, json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.{key}")}]}).to_string())
        } else if r.path.starts_with("/tg/") {
            (
                200,
                json!({"ok": true, "result": {"message_id": n}}).to_string(),
            )
        } else if r.path.starts_with("/discord/") {
            (200, json!({"id": format!("{}", 1_000 + n)}).to_string())
        } else {
            (404, "{}".into())
        }
    })
}

struct Setup {
    gw: Gateway,
    discord: Ed25519KeyPair,
}

fn config(store: &str, apis: &MockApi, discord_public: &str, extra: &str) -> String {
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[store]
{store}
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[widget]
algorithms = ["HS256"]
secret = "{WIDGET_SECRET}"
[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "{wa}"
[channels.whatsapp.secrets]
app_secret = "{APP_SECRET}"
verify_token = "v"
access_token = "{WA_TOKEN}"
[channels.telegram]
plugin = "builtin:telegram"
api_base = "{tg}"
[channels.telegram.secrets]
secret_token = "{TG_SECRET}"
bot_token = "{TG_BOT}"
[channels.telegram.settings]
bot_id = "7012345678"
bot_username = "shop_bot"
[channels.discord]
plugin = "builtin:discord"
api_base = "{dc}"
[channels.discord.secrets]
public_key = "{discord_public}"
[[admin.tokens]]
name = "ops"
token_sha256 = "{admin}"
role = "admin"
{extra}
"#,
        wa = apis.url("/wa/v21.0"),
        tg = apis.url("/tg"),
        dc = apis.url("/discord/api/v10"),
        admin = token_sha256(ADMIN),
    )
}

/// Quick retries and a short lease, so that failure paths finish in a test.
const FAST: &str = r#"[delivery]
backoff_base_ms = 50
backoff_max_ms = 200
lease_ms = 1500
timeout_ms = 1000
poll_ms = 50
[agent]
timeout_ms = 1000
"#;

fn setup(name: &str, store: &str, apis: &MockApi, extra: &str) -> Setup {
    let dir = scratch(name);
    let discord = discord_key();
    let config = config(store, apis, &hex(discord.public_key().as_ref()), extra);
    Setup {
        // Our own crates at debug: the log must hold no personal data or
        // secret even there (the journey checks).
        gw: Gateway::start_with_env(
            &dir,
            &config,
            &[(
                "GATEWAY_LOG",
                "info,chatcrafter_gateway=debug,chatcrafter_core=debug",
            )],
        ),
        discord,
    }
}

fn discord_key() -> Ed25519KeyPair {
    // A fixed key, so that a restarted gateway verifies the same way.
    Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap()
}

fn widget_message(gw: &Gateway, text: &str) -> Response {
    let claims = json!({"sub": "user-42", "exp": now() + 600, "email": "sarah@example.com",
                        "email_verified": true, "phone": "+16505551234",
                        "phone_number_verified": true, "name": "Sarah Kim"});
    post_widget(gw, &widget_jwt(WIDGET_SECRET, &claims), text)
}

fn whatsapp_message(gw: &Gateway, wamid: &str, text: &str) -> Response {
    post_whatsapp(gw, APP_SECRET, whatsapp_text("16505551234", wamid, text))
}

fn whatsapp_status(gw: &Gateway, wamid: &str, status: &str) -> Response {
    post_whatsapp(
        gw,
        APP_SECRET,
        json!({"messaging_product": "whatsapp",
               "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
               "statuses": [{"id": wamid, "status": status, "timestamp": now().to_string(),
                             "recipient_id": "16505551234"}]}),
    )
}

fn telegram_message(gw: &Gateway, update_id: u64, text: &str) -> Response {
    post_telegram(gw, TG_SECRET, update_id, 123456789, text)
}

fn discord_command(s: &Setup) -> Response {
    let body = fixture("discord_guild_command.json");
    let ts = now().to_string();
    let msg: Vec<u8> = ts.as_bytes().iter().chain(&body).copied().collect();
    let sig = hex(s.discord.sign(&msg).as_ref());
    s.gw.post(
        "/webhooks/discord",
        &[
            ("x-signature-ed25519", &sig),
            ("x-signature-timestamp", &ts),
        ],
        &body,
    )
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &[u8]) -> Response {
    with_bearer(gw, ADMIN, method, path, body)
}

fn customer_id(gw: &Gateway, identifier: &str) -> String {
    let r = admin(
        gw,
        "GET",
        &format!("/admin/v1/customers?identifier={identifier}"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn timeline(gw: &Gateway, id: &str) -> Vec<Value> {
    let r = admin(
        gw,
        "GET",
        &format!("/admin/v1/customers/{id}/timeline"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["entries"].as_array().unwrap().clone()
}

fn outbound(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["direction"] == "outbound")
        .collect()
}

/// Waits until `apis` has received `n` requests under `prefix`, then
/// returns them.
fn wait_for(apis: &MockApi, prefix: &str, n: usize, gw: &Gateway) -> Vec<Received> {
    let ok = eventually(WAIT, || apis.to(prefix).len() >= n);
    assert!(
        ok,
        "expected {n} requests under {prefix}, got {:?}\n--- gateway stderr ---\n{}",
        apis.to(prefix),
        gw.stderr()
    );
    apis.to(prefix)
}

/// Every key of a Redis and its value (every key the gateway writes is a
/// string: anything else fails the test).
fn redis_dump(port: u16) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.into_iter()
        .map(|k| {
            let kind: String = redis::cmd("TYPE").arg(&k).query(&mut conn).unwrap();
            assert_eq!(kind, "string", "{k}");
            let v: Vec<u8> = redis::cmd("GET").arg(&k).query(&mut conn).unwrap();
            (k, v)
        })
        .collect()
}

/// The directory a Redis keeps its RDB file in.
fn redis_dir(port: u16) -> std::path::PathBuf {
    let redis::Value::Array(v) = redis_cmd(port, &["CONFIG", "GET", "dir"]) else {
        panic!("CONFIG GET dir")
    };
    let redis::Value::BulkString(dir) = &v[1] else {
        panic!("CONFIG GET dir")
    };
    std::path::PathBuf::from(String::from_utf8(dir.clone()).unwrap())
}

/// Every key and value of an embedded store no gateway holds open.
fn embedded_dump(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    use chatcrafter_core::store::Backend as _;
    let store = chatcrafter_gateway::store::embedded::Embedded::open(dir).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.dump())
        .unwrap()
}

/// Where the journey's store is, for the erasure's scan of it.
enum Store {
    Embedded,
    /// The data Redis's port, and the key vault Redis's.
    Redis {
        data: u16,
        vault: u16,
    },
}

impl Store {
    fn config(&self) -> String {
        match self {
            Store::Embedded => EMBEDDED.to_string(),
            Store::Redis { data, vault } => format!(
                "kind = \"redis\"\nurl = \"redis://127.0.0.1:{data}\"\nkey_prefix = \"cc:\"\nkey_vault_url = \"redis://127.0.0.1:{vault}\""
            ),
        }
    }
}

fn the_journey(store: &Store, name: &str) {
    let apis = channel_apis();
    let s = setup(name, &store.config(), &apis, FAST);
    let gw = &s.gw;

    // 1. A logged-in widget user asks about an office chair.
    let r = widget_message(gw, "Do you have the office chair in black?");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = customer_id(gw, "email:sarah@example.com");
    assert!(eventually(WAIT, || outbound(&timeline(gw, &id)).len() == 1));

    // 2. The same person on WhatsApp, from the phone in their token: one
    // customer, and the reply recalls the widget question. The provider
    // delivers it twice: one entry, one reply.
    assert_eq!(
        whatsapp_message(gw, "wamid.IN1", "Is it still in stock?").status,
        200
    );
    assert_eq!(
        whatsapp_message(gw, "wamid.IN1", "Is it still in stock?").status,
        200
    );
    assert_eq!(customer_id(gw, "whatsapp:16505551234"), id);
    let wa = wait_for(&apis, "/wa/", 1, gw);
    let sent = &wa[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("/wa/v21.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {WA_TOKEN}").as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    let key = sent.header("idempotency-key").unwrap().to_string();
    assert!(key.starts_with("o_"), "{key}");
    let body = sent.json();
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["to"], "16505551234");
    assert_eq!(body["type"], "text");
    assert_eq!(
        body["text"]["body"],
        "Welcome back, Sarah! Earlier on the web chat you asked about “Do you have the office chair in black?”. How can I help with that?"
    );

    // WhatsApp reports the reply delivered, then read (once the gateway
    // has recorded the send).
    assert!(eventually(WAIT, || outbound(&timeline(gw, &id))
        .iter()
        .any(|e| e["channel"] == "whatsapp" && e["status"] == "sent")));
    assert_eq!(
        whatsapp_status(gw, &format!("wamid.{key}"), "delivered").status,
        200
    );
    assert_eq!(
        whatsapp_status(gw, &format!("wamid.{key}"), "read").status,
        200
    );

    // 3. A link token sent through Telegram's /start links Telegram.
    let r = admin(
        gw,
        "POST",
        "/v1/link-tokens",
        json!({"customer_id": id, "channel": "telegram"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        telegram_message(gw, 501, &format!("/start {token}")).status,
        200
    );
    let tg = wait_for(&apis, "/tg/", 1, gw);
    assert_eq!(tg[0].path, format!("/tg/bot{TG_BOT}/sendMessage"));
    assert_eq!(tg[0].header("authorization"), None);
    assert_eq!(tg[0].json()["chat_id"], 123456789);
    assert_eq!(
        tg[0].json()["text"],
        "Welcome back, Sarah! Earlier on WhatsApp you asked about “Is it still in stock?”. How can I help with that?"
    );
    assert_eq!(customer_id(gw, "telegram:123456789"), id);

    // 4. A CSV row links their Discord id; a slash command there is
    // deferred at once and answered through the follow-up webhook with
    // their history in mind.
    let csv = format!("email,discord_user_id\nsarah@example.com,{DISCORD_USER}\n");
    let r = admin(gw, "POST", "/admin/v1/import", csv.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let r = discord_command(&s);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], 5);
    let dc = wait_for(&apis, "/discord/", 1, gw);
    assert_eq!(
        dc[0].path,
        format!("/discord/api/v10/webhooks/{DISCORD_APP}/{DISCORD_TOKEN}")
    );
    assert_eq!(dc[0].header("authorization"), None);
    assert_eq!(
        dc[0].json()["content"],
        "Welcome back, Sarah! Earlier on WhatsApp you asked about “Is it still in stock?”. How can I help with that?"
    );
    assert_eq!(dc[0].json()["allowed_mentions"], json!({"parse": []}));

    // 5. The admin timeline: all of it, in order, each with its channel.
    let ok = eventually(WAIT, || {
        outbound(&timeline(gw, &id))
            .iter()
            .all(|e| e["status"] != "queued")
    });
    assert!(ok, "{:?}", timeline(gw, &id));
    let entries = timeline(gw, &id);
    let summary = timeline_summary(&entries);
    assert_eq!(
        summary,
        [
            ("widget", "inbound", "text"),
            ("widget", "outbound", "text"),
            ("whatsapp", "inbound", "text"),
            ("whatsapp", "outbound", "text"),
            ("telegram", "inbound", "link"),
            ("telegram", "outbound", "text"),
            ("discord", "inbound", "text"),
            ("discord", "outbound", "text"),
        ],
        "{entries:#?}"
    );
    let statuses: Vec<&str> = outbound(&entries)
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["sent", "read", "sent", "sent"]);
    assert_eq!(
        entries[1]["text"],
        "Hi Sarah! Thanks for reaching out — how can we help?"
    );
    assert_eq!(
        entries[6]["text"],
        "/ask question:Is my office chair shipped? urgent:true"
    );
    // The widget reply is on the widget's own history too.
    let claims = json!({"sub": "user-42", "exp": now() + 600});
    let jwt = widget_jwt(WIDGET_SECRET, &claims);
    let h = gw.request(
        "GET",
        "/widget/v1/history",
        &[("authorization", &format!("Bearer {jwt}"))],
        b"",
    );
    assert_eq!(h.status, 200, "{}", h.text());
    assert!(h.text().contains("Thanks for reaching out"), "{}", h.text());

    // The retried WhatsApp delivery never produced a second reply.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(apis.to("/wa/").len(), 1);
    assert_eq!(apis.received().len(), 3, "{:?}", apis.received());

    // 6. Nothing personal and no secret in the log, at debug level: ids
    // only (issue 10, finding 6).
    let log = gw.stderr();
    assert!(log.contains("inbound message"), "the log is empty? {log}");
    let never = [
        APP_SECRET,
        WA_TOKEN,
        TG_SECRET,
        TG_BOT,
        WIDGET_SECRET,
        ADMIN,
        DISCORD_TOKEN,
        &token,
        &jwt,
        "sarah@example.com",
        "6505551234",
        "Sarah",
        "office chair",
        "still in stock",
        "shipped",
        "user-42",
        "123456789",
        DISCORD_USER,
    ];
    for value in never {
        assert!(!log.contains(value), "the log holds `{value}`:\n{log}");
    }

    // 7. Forgotten: the customer, linked on four channels, is erased.
    let mut personal: Vec<&str> = never[8..].to_vec();
    personal.push(&token);
    erase_the_journey(s, &apis, store, &id, &personal);
}

/// Step 7 of the journey: a second customer merged in, a reminder queued,
/// a link token unused; then `DELETE` erases them all, the receipt
/// verifies, nothing of them is left in the store, every lookup is 404,
/// and the same phone starts a new customer. On Redis, a copy of the
/// store made before no longer opens their records.
fn erase_the_journey(s: Setup, apis: &MockApi, store: &Store, id: &str, personal: &[&str]) {
    let gw = &s.gw;
    assert_eq!(
        whatsapp_message_from(gw, "16505559876", "wamid.OTHER1", "second phone here").status,
        200
    );
    let other = customer_id(gw, "whatsapp:16505559876");
    let r = admin(
        gw,
        "POST",
        "/admin/v1/customers/merge",
        json!({"surviving": id, "merged": other})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(
        gw,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"consent.marketing":"granted"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(gw, "POST", "/v1/events",
        json!({"identifier": {"kind": "phone", "value": "+16505551234"}, "type": "cart_abandoned", "properties": {"cart": "chair"}})
            .to_string()
            .as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    let r = admin(
        gw,
        "POST",
        "/v1/link-tokens",
        json!({"customer_id": id, "channel": "telegram"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for(apis, "/wa/", 2, gw);
    let messages = timeline(gw, id).len();
    // The export shows the reminder still to go out.
    let export = admin(gw, "GET", &format!("/admin/v1/customers/{id}/export"), b"");
    assert_eq!(export.status, 200, "{}", export.text());
    let reminders = export.json()["queued"]["reminders"].clone();
    assert_eq!(reminders.as_array().unwrap().len(), 1, "{reminders}");

    // Copies made before: the data Redis's append-only file, and apart, an
    // RDB snapshot of the key vault.
    let backup = scratch(&format!(
        "{}-backup",
        gw.dir.file_name().unwrap().to_string_lossy()
    ));
    if let Store::Redis { data, vault } = store {
        // Everything written so far in the AOF's base file.
        redis_cmd(*data, &["BGREWRITEAOF"]);
        assert!(eventually(WAIT, || {
            let redis::Value::BulkString(info) = redis_cmd(*data, &["INFO", "persistence"]) else {
                return false;
            };
            let info = String::from_utf8_lossy(&info).to_string();
            info.contains("aof_enabled:1")
                && info.contains("aof_rewrite_in_progress:0")
                && info.contains("aof_rewrite_scheduled:0")
        }));
        let aof = redis_dir(*data).join("appendonlydir");
        let copy = backup.join("data").join("appendonlydir");
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(&aof).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
        redis_cmd(*vault, &["SAVE"]);
        std::fs::create_dir_all(backup.join("vault")).unwrap();
        std::fs::copy(
            redis_dir(*vault).join("dump.rdb"),
            backup.join("vault").join("dump.rdb"),
        )
        .unwrap();
    }

    let r = admin(gw, "DELETE", &format!("/admin/v1/customers/{id}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let receipt = r.json();
    assert_eq!(receipt["customer_id"], id);
    assert_eq!(
        receipt["customers"].as_array().unwrap().len(),
        2,
        "{receipt}"
    );
    let removed = &receipt["removed"];
    assert_eq!(removed["customers"], 2, "{receipt}");
    assert_eq!(removed["customer_keys"], 2, "{receipt}");
    let entries = removed["messages"].as_u64().unwrap() + removed["events"].as_u64().unwrap();
    assert!(entries >= messages as u64, "{messages} entries: {receipt}");
    assert!(removed["identities"].as_u64().unwrap() >= 5, "{receipt}");
    // The one used in step 3 went when it was used.
    assert_eq!(removed["link_tokens"], 1, "{receipt}");
    assert_eq!(removed["merges"], 1, "{receipt}");
    assert!(removed["jobs"].as_u64().unwrap() >= 1, "{receipt}");
    assert!(
        removed["channel_message_ids"].as_u64().unwrap() >= 4,
        "{receipt}"
    );
    assert!(receipt["key_id"].as_str().unwrap().starts_with("derived-"));

    // The receipt verifies with the gateway's key; altered, it does not.
    let file = gw.dir.join("receipt.json");
    std::fs::write(&file, r.text()).unwrap();
    let verify = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["receipt", "verify"])
            .arg(file)
            .arg("--config")
            .arg(gw.dir.join("gateway.toml"))
            .output()
            .unwrap()
    };
    let ok = verify(&file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut altered = receipt.clone();
    altered["removed"]["messages"] = json!(0);
    std::fs::write(&file, altered.to_string()).unwrap();
    let bad = verify(&file);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Every lookup by an old identifier finds no one; a second erasure is 404.
    for identifier in [
        "email:sarah@example.com",
        "phone:%2B16505551234",
        "whatsapp:16505551234",
        "whatsapp:16505559876",
        "telegram:123456789",
        &format!("discord:{DISCORD_USER}"),
    ] {
        let r = admin(
            gw,
            "GET",
            &format!("/admin/v1/customers?identifier={identifier}"),
            b"",
        );
        assert_eq!(r.status, 404, "{identifier}: {}", r.text());
    }
    assert_eq!(
        admin(gw, "GET", &format!("/admin/v1/customers/{id}"), b"").status,
        404
    );
    assert_eq!(
        admin(gw, "DELETE", &format!("/admin/v1/customers/{id}"), b"").status,
        404
    );

    // The erasure is in the audit log, without the erased data.
    let log = admin(gw, "GET", "/admin/v1/audit?action=customer.erase", b"");
    assert_eq!(log.status, 200, "{}", log.text());
    let entries = log.json()["entries"].as_array().unwrap().clone();
    let outcomes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["customer_id"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [(id, "ok"), (id, "error:not_found")],
        "{entries:?}"
    );

    // Nothing of them in the store, key by key and value by value: only
    // the store's own bookkeeping is left (queue counters, the audit log,
    // empty indexes), and no value holds anything they wrote or were.
    let ids = [id.to_string(), other.clone()];
    let check = |all: &[(String, Vec<u8>)]| {
        const BOOKKEEPING: &[&str] = &[
            "cc:audit",
            "cc:qseq:",
            "cc:qhead:",
            "cc:qlater:",
            "cc:q:",
            "cc:conflicts",
            "cc:handoffs",
            "cc:malformed",
            // The analytics counters: counts by channel name, theirs
            // taken out.
            "cc:ancount:",
        ];
        assert!(!all.is_empty());
        for (key, value) in all {
            assert!(
                BOOKKEEPING.iter().any(|b| key.starts_with(b)),
                "`{key}` is left after the erasure"
            );
            let text = String::from_utf8_lossy(value);
            for p in personal {
                assert!(!text.contains(p), "`{key}` holds `{p}`");
            }
            if !key.starts_with("cc:audit") {
                for c in &ids {
                    assert!(!text.contains(c.as_str()), "`{key}` names {c}");
                }
            }
        }
    };
    let Setup { gw, discord } = s;
    let gw = match store {
        Store::Redis { data, vault } => {
            let mut all = redis_dump(*data);
            all.extend(redis_dump(*vault));
            check(&all);
            gw
        }
        Store::Embedded => {
            // The redb file, once the gateway has let go of it: every key
            // and value, and its raw bytes (free pages too) for anything
            // they wrote or were.
            let dir = gw.dir.clone();
            let config_text = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
            drop(gw);
            check(&embedded_dump(&dir.join("data")));
            let raw = std::fs::read(dir.join("data").join("gateway.redb")).unwrap();
            let raw = String::from_utf8_lossy(&raw);
            for p in personal {
                assert!(!raw.contains(p), "the redb file holds `{p}`");
            }
            Gateway::start(&dir, &config_text)
        }
    };
    let gw = &gw;

    // The same phone writes again: a brand-new customer.
    assert_eq!(
        whatsapp_message(gw, "wamid.AFTER1", "hello again").status,
        200
    );
    let fresh = customer_id(gw, "whatsapp:16505551234");
    assert!(!ids.contains(&fresh), "{fresh}");
    assert_eq!(timeline(gw, &fresh)[0]["text"], "hello again");

    if let Store::Redis { vault, .. } = store {
        // The AOF copied before the erasure, loaded by a Redis of its own
        // beside the live key vault: the records are there and no longer
        // open with the configured keys. Beside the vault's own earlier
        // snapshot they still do (all the data is there: only the key is
        // gone).
        let restored = RedisServer::start_persisting(&backup.join("data"), 0, None, true);
        let old_vault = RedisServer::start(&backup.join("vault"), 0, None);
        for (vault, opens) in [(*vault, false), (old_vault.port, true)] {
            let store = Store::Redis {
                data: restored.port,
                vault,
            };
            let dir = scratch(&format!("journey-restored-{opens}"));
            let config = config(
                &store.config(),
                apis,
                &hex(discord.public_key().as_ref()),
                FAST,
            );
            let gw = Gateway::start(&dir, &config);
            let r = admin(&gw, "GET", &format!("/admin/v1/customers/{id}"), b"");
            if opens {
                assert_eq!(r.status, 200, "{}", r.text());
                assert!(r.text().contains("sarah@example.com"), "{}", r.text());
            } else {
                assert_eq!(r.status, 500, "{}", r.text());
                assert!(r.text().contains("erased"), "{}", r.text());
                for p in personal {
                    assert!(!r.text().contains(p), "{}", r.text());
                }
            }
        }
    }
}

#[test]
fn the_journey_on_the_embedded_store() {
    the_journey(&Store::Embedded, "journey-embedded");
}

#[test]
fn the_journey_on_redis() {
    let dir = scratch("journey-redis-server");
    for d in ["data", "vault"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // The data Redis keeps an append-only file, as a deployment would.
    let redis = RedisServer::start_persisting(&dir.join("data"), 0, None, true);
    let vault = RedisServer::start(&dir.join("vault"), 0, None);
    the_journey(
        &Store::Redis {
            data: redis.port,
            vault: vault.port,
        },
        "journey-redis",
    );
}

#[test]
fn a_gateway_killed_right_after_its_200_still_replies_once_after_a_restart() {
    let apis = channel_apis();
    let dir = scratch("sigkill");
    let config = config(
        EMBEDDED,
        &apis,
        &hex(discord_key().public_key().as_ref()),
        FAST,
    );
    let mut gw = Gateway::start(&dir, &config);
    let r = whatsapp_message(&gw, "wamid.KILL1", "Where is my order?");
    assert_eq!(r.status, 200);
    // SIGKILL, no chance to finish anything after the answer.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let before = apis.to("/wa/").len();
    let gw = Gateway::start(&dir, &config);
    let sent = wait_for(&apis, "/wa/", 1, &gw);
    assert_eq!(
        sent[0].json()["text"]["body"],
        "Hi Sarah! Thanks for reaching out — how can we help?"
    );
    // Past another lease: still exactly one.
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(
        apis.to("/wa/").len(),
        1,
        "sent before the kill: {before}; {:?}",
        apis.received()
    );
    let id = customer_id(&gw, "whatsapp:16505551234");
    let entries = timeline(&gw, &id);
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[1]["status"], "sent");
}

#[test]
fn failed_deliveries_are_retried_with_the_same_idempotency_key_then_handed_off() {
    // WhatsApp answers 503 twice, then accepts; Telegram refuses with 400.
    let apis = MockApi::start(|r, _| {
        if r.path.starts_with("/wa/") {
            let key = r.header("idempotency-key").unwrap_or("none").to_string();
            (
                200,
                json!({"messages": [{"id": format!("wamid.{key}")}]}).to_string(),
            )
        } else {
            (
                400,
                json!({"ok": false, "description": "Bad Request: chat not found"}).to_string(),
            )
        }
    });
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flaky_apis = {
        let flaky = flaky.clone();
        MockApi::start(move |r, _| {
            if flaky.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                (503, "{\"error\":\"try later\"}".into())
            } else {
                let key = r.header("idempotency-key").unwrap_or("none").to_string();
                (
                    200,
                    json!({"messages": [{"id": format!("wamid.{key}")}]}).to_string(),
                )
            }
        })
    };
    let dir = scratch("retries");
    let mut config = config(
        EMBEDDED,
        &apis,
        &hex(discord_key().public_key().as_ref()),
        FAST,
    );
    config = config.replace(&apis.url("/wa/v21.0"), &flaky_apis.url("/wa/v21.0"));
    let gw = Gateway::start(&dir, &config);

    assert_eq!(whatsapp_message(&gw, "wamid.R1", "hello").status, 200);
    let attempts = wait_for(&flaky_apis, "/wa/", 3, &gw);
    let keys: Vec<&str> = attempts
        .iter()
        .map(|a| a.header("idempotency-key").unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let id = customer_id(&gw, "whatsapp:16505551234");
    assert!(eventually(
        WAIT,
        || outbound(&timeline(&gw, &id))[0]["status"] == "sent"
    ));

    // Telegram refuses for good: no retry, the message fails onto the inbox.
    assert_eq!(telegram_message(&gw, 9, "hi there").status, 200);
    let tid = customer_id(&gw, "telegram:123456789");
    assert!(eventually(WAIT, || {
        admin(&gw, "GET", "/admin/v1/handoffs", b"").json()["handoffs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["customer_id"] == tid.as_str())
    }));
    let inbox = admin(&gw, "GET", "/admin/v1/handoffs", b"").json();
    let h = &inbox["handoffs"][0];
    assert_eq!(h["reason"], "delivery_failed");
    assert_eq!(h["channel"], "telegram");
    let detail = h["detail"].as_str().unwrap();
    assert!(
        detail.contains("answered 400") && detail.contains("chat not found"),
        "{detail}"
    );
    assert!(
        !detail.contains(TG_BOT),
        "the bot token must not leak: {detail}"
    );
    // Nor any of the path: it can carry data (Discord's interaction token).
    assert!(!detail.contains("sendMessage"), "{detail}");
    assert_eq!(apis.to("/tg/").len(), 1);
    assert_eq!(outbound(&timeline(&gw, &tid))[0]["status"], "failed");
    assert!(
        gw.get("/metrics")
            .text()
            .contains("gateway_outbound_total{channel=\"telegram\",outcome=\"refused\"} 1")
    );
}

#[test]
fn a_customer_asking_for_a_person_reaches_the_inbox_and_a_reply_goes_out_on_their_preferred_channel()
 {
    let apis = channel_apis();
    let s = setup("handoff", EMBEDDED, &apis, FAST);
    let gw = &s.gw;
    assert_eq!(telegram_message(gw, 1, "hello").status, 200);
    let id = customer_id(gw, "telegram:123456789");
    wait_for(&apis, "/tg/", 1, gw);
    assert_eq!(whatsapp_message(gw, "wamid.H0", "hi").status, 200);
    // WhatsApp's phone is a new customer here; link them by merging.
    let wid = customer_id(gw, "whatsapp:16505551234");
    let r = admin(
        gw,
        "POST",
        "/admin/v1/customers/merge",
        json!({"surviving": id, "merged": wid})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(&apis, "/wa/", 1, gw);

    assert_eq!(
        whatsapp_message(gw, "wamid.H1", "Can I talk to a real person please?").status,
        200
    );
    let wa = wait_for(&apis, "/wa/", 2, gw);
    assert_eq!(
        wa[1].json()["text"]["body"],
        "Of course, Sarah — I'm bringing in someone from our team. They'll reply right here."
    );
    let inbox = admin(gw, "GET", "/admin/v1/handoffs", b"").json();
    assert_eq!(inbox["handoffs"].as_array().unwrap().len(), 1, "{inbox}");
    assert_eq!(inbox["handoffs"][0]["conversation_id"], id.as_str());
    assert_eq!(inbox["handoffs"][0]["reason"], "requested");
    assert_eq!(inbox["handoffs"][0]["channel"], "whatsapp");

    // While a person has it, the agent stays silent.
    assert_eq!(whatsapp_message(gw, "wamid.H2", "hello?").status, 200);
    assert!(eventually(WAIT, || {
        admin(gw, "GET", "/admin/v1/handoffs", b"").json()["handoffs"][0]["waiting"] == 2
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(apis.to("/wa/").len(), 2);

    // The person replies: on the preferred channel when there is one.
    let r = admin(
        gw,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        json!({"attributes": {"preferred_channel": "telegram"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(
        gw,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        json!({"attributes": {"preferred_channel": "fax"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains("preferred_channel"), "{}", r.text());
    let r = admin(
        gw,
        "POST",
        &format!("/admin/v1/conversations/{id}/reply"),
        json!({"text": "Hi Sarah, Tom here. Your chair ships tomorrow."})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["channel"], "telegram");
    let tg = wait_for(&apis, "/tg/", 2, gw);
    assert_eq!(
        tg[1].json()["text"],
        "Hi Sarah, Tom here. Your chair ships tomorrow."
    );
    let r = admin(
        gw,
        "POST",
        &format!("/admin/v1/conversations/{id}/reply"),
        br#"{"text":"  "}"#,
    );
    assert_eq!(r.status, 422);
    let r = admin(
        gw,
        "POST",
        "/admin/v1/conversations/c_00000000000000000000000000000000/reply",
        br#"{"text":"hi"}"#,
    );
    assert_eq!(r.status, 404);

    // Closed: back to the agent.
    let r = admin(
        gw,
        "POST",
        &format!("/admin/v1/conversations/{id}/close"),
        b"",
    );
    assert_eq!((r.status, r.json()["closed"].clone()), (200, json!(true)));
    assert_eq!(
        admin(gw, "GET", "/admin/v1/handoffs", b"").json()["handoffs"],
        json!([])
    );
    assert_eq!(whatsapp_message(gw, "wamid.H3", "thanks!").status, 200);
    let wa = wait_for(&apis, "/wa/", 3, gw);
    // An acknowledgment offers a person, as a WhatsApp reply button.
    assert_eq!(
        wa[2].json()["interactive"],
        json!({"type": "button", "body": {"text": "Thanks, Sarah! Got it — we'll follow up right here."},
               "action": {"buttons": [{"type": "reply",
                   "reply": {"id": "talk_to_a_person", "title": "Talk to a person"}}]}})
    );
    let human: Vec<Value> = outbound(&timeline(gw, &id))
        .into_iter()
        .filter(|e| e["author"] == "human")
        .cloned()
        .collect();
    assert_eq!(human.len(), 1);
    assert_eq!(human[0]["channel"], "telegram");

    // Pressing the offered button hands the conversation to a person.
    let press = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Sarah"}, "wa_id": "16505551234"}],
        "messages": [{"from": "16505551234", "id": "wamid.H4", "timestamp": now().to_string(),
            "type": "interactive", "interactive": {"type": "button_reply",
            "button_reply": {"id": "talk_to_a_person", "title": "Talk to a person"}}}]});
    assert_eq!(post_whatsapp(gw, APP_SECRET, press).status, 200);
    assert!(
        eventually(WAIT, || {
            admin(gw, "GET", "/admin/v1/handoffs", b"").json()["handoffs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["customer_id"] == id.as_str() && h["reason"] == "requested")
        }),
        "{}",
        admin(gw, "GET", "/admin/v1/handoffs", b"").text()
    );
}

#[test]
fn the_webhook_agent_gets_signed_context_and_its_failures_reach_the_inbox() {
    let apis = channel_apis();
    // The business's agent: answers with a reply and an attribute, unless
    // the message says "crash".
    let agent = MockApi::start(|r, _| {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if body["message"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("crash")
        {
            (500, "{}".into())
        } else {
            (200, json!({"replies": [{"text": format!("You said: {}", body["message"]["text"].as_str().unwrap_or(""))}],
                         "attributes": {"tier": "gold"}}).to_string())
        }
    });
    let extra = format!(
        "[delivery]\nbackoff_base_ms = 50\nbackoff_max_ms = 100\nlease_ms = 1500\ntimeout_ms = 1000\npoll_ms = 50\n[agent]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{AGENT_SECRET}\"\ntimeout_ms = 1000\nmax_attempts = 3\n",
        agent.url("/agent")
    );
    let s = setup("webhook-agent", EMBEDDED, &apis, &extra);
    let gw = &s.gw;
    assert_eq!(widget_message(gw, "Do you ship to Canada?").status, 202);
    assert_eq!(
        whatsapp_message(gw, "wamid.A1", "And to Mexico?").status,
        200
    );
    let wa = wait_for(&apis, "/wa/", 1, gw);
    assert_eq!(wa[0].json()["text"]["body"], "You said: And to Mexico?");
    let calls = agent.received();
    let call = calls
        .iter()
        .find(|c| c.json()["message"]["channel"] == "whatsapp")
        .unwrap();
    // Signed over timestamp ‖ "." ‖ body.
    let sig = call.header("x-chatcrafter-signature").unwrap();
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let signed: Vec<u8> = [t.as_bytes(), b".", &call.body].concat();
    assert_eq!(v1, hmac_hex(AGENT_SECRET.as_bytes(), &signed));
    assert!(now().abs_diff(t.parse().unwrap()) < 60);
    // With the profile, linked channels and cross-channel history.
    let body = call.json();
    let channels: Vec<&str> = body["customer"]["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["widget", "whatsapp"]);
    let history: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(history.contains(&"Do you ship to Canada?"), "{history:?}");
    let id = customer_id(gw, "whatsapp:16505551234");
    let c = admin(gw, "GET", &format!("/admin/v1/customers/{id}"), b"").json();
    assert_eq!(c["attributes"]["tier"], "gold");

    // The agent fails: retried, then handed to a person — never dropped.
    assert_eq!(whatsapp_message(gw, "wamid.A2", "crash please").status, 200);
    assert!(eventually(WAIT, || {
        admin(gw, "GET", "/admin/v1/handoffs", b"").json()["handoffs"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    }));
    let inbox = admin(gw, "GET", "/admin/v1/handoffs", b"").json();
    assert_eq!(inbox["handoffs"][0]["reason"], "agent_unavailable");
    assert!(
        inbox["handoffs"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("answered 500"),
        "{inbox}"
    );
    let crash_calls = agent
        .received()
        .iter()
        .filter(|c| c.json()["message"]["text"] == "crash please")
        .count();
    assert_eq!(crash_calls, 3);
    assert_eq!(apis.to("/wa/").len(), 1);
}

#[test]
fn an_abandoned_cart_is_reminded_once_with_consent_and_a_purchase_cancels_it() {
    let apis = channel_apis();
    let extra = FAST.replace("[delivery]\n", "[delivery]\nreminder_delay_seconds = 1\n");
    let s = setup("reminders", EMBEDDED, &apis, &extra);
    let gw = &s.gw;
    assert_eq!(whatsapp_message(gw, "wamid.C1", "hi").status, 200);
    wait_for(&apis, "/wa/", 1, gw);
    let id = customer_id(gw, "whatsapp:16505551234");
    let event = |kind: &str| {
        let r = admin(gw, "POST", "/v1/events",
            json!({"identifier": {"kind": "phone", "value": "+16505551234"}, "type": kind, "properties": {"cart": "chair"}})
                .to_string()
                .as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
    };
    let skipped = |reason: &str| {
        timeline(gw, &id)
            .iter()
            .filter(|e| e["kind"] == "reminder_skipped" && e["properties"]["reason"] == reason)
            .count()
    };

    // No marketing consent: no reminder, and the timeline says why.
    event("cart_abandoned");
    assert!(
        eventually(WAIT, || skipped("no_consent") == 1),
        "{:#?}",
        timeline(gw, &id)
    );

    // Consent granted: the reminder goes out after the delay.
    let r = admin(
        gw,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        json!({"attributes": {"consent.marketing": "granted"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["consent"]["marketing"]["granted"], true);
    let r = admin(
        gw,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        json!({"attributes": {"consent.marketing": "yes"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 422);
    event("cart_abandoned");
    let wa = wait_for(&apis, "/wa/", 2, gw);
    assert_eq!(
        wa[1].json()["text"]["body"],
        "Hi Sarah, you left something in your cart. It's saved for you — reply here if you have any questions."
    );

    // A second one the same day: the cap holds it back.
    event("cart_abandoned");
    assert!(eventually(WAIT, || skipped("frequency_cap") == 1));

    // A purchase before the delay runs out cancels the reminder.
    event("cart_abandoned");
    event("purchase");
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        skipped("purchased") + skipped("frequency_cap"),
        1,
        "{:#?}",
        timeline(gw, &id)
    );
    assert_eq!(apis.to("/wa/").len(), 2);
    let reminders: Vec<Value> = outbound(&timeline(gw, &id))
        .into_iter()
        .filter(|e| e["author"] == "reminder")
        .cloned()
        .collect();
    assert_eq!(reminders.len(), 1);
}

#[test]
fn with_redis_down_webhooks_get_503_and_replies_resume_when_it_is_back() {
    let apis = channel_apis();
    let dir = scratch("redis-down-replies");
    let redis = RedisServer::start(&dir, 0, None);
    let port = redis.port;
    let store =
        format!("kind = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"cc:\"");
    let s = setup("redis-down-gateway", &store, &apis, FAST);
    let gw = &s.gw;
    assert_eq!(whatsapp_message(gw, "wamid.D1", "first").status, 200);
    wait_for(&apis, "/wa/", 1, gw);
    drop(redis);
    // Nothing unstored is ever acknowledged.
    let r = whatsapp_message(gw, "wamid.D2", "while down");
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "store_unavailable"),
        "{}",
        r.text()
    );
    // Back on the same port (empty: it kept nothing): no restart needed.
    let _redis = RedisServer::start(&dir, port, None);
    assert!(eventually(Duration::from_secs(15), || {
        whatsapp_message(gw, "wamid.D3", "back").status == 200
    }));
    let wa = wait_for(&apis, "/wa/", 2, gw);
    assert_eq!(wa[1].json()["to"], "16505551234");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(apis.to("/wa/").len(), 2, "{:?}", apis.received());
}

/// The seed's journey with numbers libphonenumber's metadata does not
/// assign (+1 555) and in Mexico's legacy mobile form (`521…`, as WhatsApp
/// still reports it), through a WhatsApp channel configured under another
/// name than its plugin's id: the phone a signed widget token vouches for
/// and the one WhatsApp vouches for are one customer, the WhatsApp reply
/// recalls the widget question and goes out through `[channels.wa]`, and a
/// blocked placeholder phone links no one.
#[test]
fn phones_a_channel_vouches_for_always_link_and_replies_go_out_through_a_renamed_channel() {
    let apis = channel_apis();
    // The journey's configuration, plus WhatsApp again under the name `wa`
    // and a blocked placeholder.
    let extra = format!(
        r#"{FAST}
[identity]
blocked_values = ["+10000000000", "test@example.com"]
[channels.wa]
plugin = "builtin:whatsapp"
api_base = "{wa}"
[channels.wa.secrets]
app_secret = "{APP_SECRET}"
verify_token = "v"
access_token = "{WA_TOKEN}"
"#,
        wa = apis.url("/wa/v21.0"),
    );
    let config = config(
        EMBEDDED,
        &apis,
        &hex(discord_key().public_key().as_ref()),
        &extra,
    );
    let gw = &Gateway::start_with_env(
        &scratch("phones-link"),
        &config,
        &[("GATEWAY_LOG", "info,chatcrafter_gateway=debug")],
    );
    let widget = |sub: &str, phone: &str, text: &str| {
        let claims = json!({"sub": sub, "exp": now() + 600, "phone": phone,
                            "phone_number_verified": true, "name": "Sarah Kim"});
        post_widget(gw, &widget_jwt(WIDGET_SECRET, &claims), text)
    };
    let cases = [
        ("user-555", "+15551234567", "15551234567"),
        ("user-mx", "+525512345678", "5215512345678"),
    ];
    for (n, (sub, jwt_phone, wa_id)) in cases.into_iter().enumerate() {
        let question = format!("Do you have the office chair in black? ({sub})");
        assert_eq!(widget(sub, jwt_phone, &question).status, 202);
        let id = customer_id(gw, &format!("phone:{}", jwt_phone.replace('+', "%2B")));
        assert!(eventually(WAIT, || outbound(&timeline(gw, &id)).len() == 1));
        let r = post_whatsapp_to(
            gw,
            "wa",
            APP_SECRET,
            whatsapp_text(wa_id, &format!("wamid.{sub}"), "Still in stock?"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(customer_id(gw, &format!("wa:{wa_id}")), id);
        let sent = wait_for(&apis, "/wa/", n + 1, gw);
        assert_eq!(sent[n].json()["to"], wa_id);
        assert_eq!(
            sent[n].json()["text"]["body"],
            format!(
                "Welcome back, Sarah! Earlier on the web chat you asked about “{question}”. How can I help with that?"
            )
        );
        assert!(eventually(WAIT, || outbound(&timeline(gw, &id))
            .iter()
            .any(|e| e["channel"] == "wa" && e["status"] == "sent")));
    }
    // A well-formed phone that matches no one is 404, not 422.
    let r = admin(
        gw,
        "GET",
        "/admin/v1/customers?identifier=phone:%2B15550001111",
        b"",
    );
    assert_eq!((r.status, r.code()), (404, "not_found".to_string()));
    let r = admin(
        gw,
        "GET",
        "/admin/v1/customers?identifier=phone:banana",
        b"",
    );
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_identifier".to_string())
    );

    // The blocked placeholder: two people whose tokens carry it stay two
    // customers, and each has a `blocked` conflict instead of a link.
    assert_eq!(widget("placeholder-1", "+1 000 000 0000", "hi").status, 202);
    assert_eq!(widget("placeholder-2", "+10000000000", "hi").status, 202);
    let a = customer_id(gw, "widget:placeholder-1");
    let b = customer_id(gw, "widget:placeholder-2");
    assert_ne!(a, b);
    let r = admin(
        gw,
        "GET",
        "/admin/v1/customers?identifier=phone:%2B10000000000",
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let conflicts = admin(gw, "GET", "/admin/v1/conflicts", b"").json();
    let blocked: Vec<&Value> = conflicts["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "blocked")
        .collect();
    assert_eq!(blocked.len(), 2, "{conflicts}");

    // Its log: spans name the channel, plugin, request and customer; no
    // phone, no message text, no name.
    let log = gw.stderr();
    assert!(log.contains("inbound{channel=wa plugin=whatsapp@"), "{log}");
    assert!(log.contains("customer_id=c_"), "{log}");
    assert!(
        log.contains("job{job=j_") && log.contains("kind=agent"),
        "{log}"
    );
    for secret in [
        "5551234567",
        "5512345678",
        "office chair",
        "Still in stock",
        "Sarah",
    ] {
        assert!(!log.contains(secret), "`{secret}` in the log:\n{log}");
    }
}

#[test]
fn a_batch_of_messages_is_answered_once_per_customer() {
    let apis = channel_apis();
    let s = setup("batch-once", EMBEDDED, &apis, FAST);
    // One signed delivery: five messages from Sarah, two from Ana, and a
    // reaction from Sarah last (reactions get no answer of their own).
    let msg = |from: &str, n: usize, text: &str| {
        json!({"from": from, "id": format!("wamid.batch.{from}.{n}"), "timestamp": now().to_string(),
               "type": "text", "text": {"body": text}})
    };
    let mut messages: Vec<Value> = (0..5)
        .map(|n| msg("16505551234", n, &format!("question {n}")))
        .collect();
    messages.push(msg("15551112222", 0, "hola"));
    messages.push(msg("15551112222", 1, "¿tienen sillas?"));
    messages.push(
        json!({"from": "16505551234", "id": "wamid.batch.reaction", "timestamp": now().to_string(),
                         "type": "reaction", "reaction": {"message_id": "wamid.x", "emoji": "👍"}}),
    );
    let value = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Sarah"}, "wa_id": "16505551234"},
                     {"profile": {"name": "Ana"}, "wa_id": "15551112222"}],
        "messages": messages});
    let r = post_whatsapp(&s.gw, APP_SECRET, value);
    assert_eq!(r.status, 200, "{}", r.text());
    let sarah = customer_id(&s.gw, "whatsapp:16505551234");
    let ana = customer_id(&s.gw, "whatsapp:15551112222");
    let inbound = |id: &str| {
        timeline(&s.gw, id)
            .iter()
            .filter(|e| e["direction"] == "inbound")
            .count()
    };
    assert_eq!(inbound(&sarah), 6);
    assert_eq!(inbound(&ana), 2);
    let sent = wait_for(&apis, "/wa/", 2, &s.gw);
    let mut to: Vec<String> = sent
        .iter()
        .map(|r| r.json()["to"].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["15551112222", "16505551234"]);
    // Each answered once, after the last of its messages; nothing more
    // comes.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(apis.to("/wa/").len(), 2);
    assert_eq!(outbound(&timeline(&s.gw, &sarah)).len(), 1);
    assert_eq!(outbound(&timeline(&s.gw, &ana)).len(), 1);
}

// --- The widget in a real browser (issue 11) -------------------------------

/// A free port on loopback, for a node that must come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `chromedriver` on a free port, stopped on drop.
struct Chromedriver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let port = free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is needed for the browser tests: apt-get install chromium chromium-driver");
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "chromedriver did not start"
        );
        Chromedriver { child, port }
    }
}

/// A headless Chromium session through `driver`, its window `size`
/// (`"W,H"`).
async fn browser(driver: &Chromedriver, size: &str) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        format!("--window-size={size}")]}),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a headless Chromium session")
}

/// Polls `script` (which returns a boolean) in the page until it is true.
async fn until(c: &fantoccini::Client, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if v == Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = c
                .execute("const l = document.querySelector('.cc-log'); return l ? l.innerText : '(no chat)';", vec![])
                .await
                .unwrap();
            panic!("waited 15 s for {what}; the chat shows: {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &fantoccini::Client, dir: &std::path::Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

/// How many messages in the chat hold `text` (an exact count, so a
/// doubled message shows).
fn count_of(text: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('.cc-log .cc-text')).filter(e => e.textContent === {}).length",
        Value::String(text.into())
    )
}

#[test]
fn the_widget_in_a_real_browser_across_two_nodes_a_cut_network_and_a_new_user() {
    let apis = channel_apis();
    let dir = scratch("browser");
    let shots = repo_path("target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let redis = RedisServer::start(&dir, 0, None);
    let store = format!(
        "kind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\nkey_prefix = \"cc:\"",
        redis.port
    );
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let base = config(
        &store,
        &apis,
        &hex(discord_key().public_key().as_ref()),
        FAST,
    )
    .replace(
        &format!("secret = \"{WIDGET_SECRET}\""),
        &format!("secret = \"{WIDGET_SECRET}\"\nallowed_origins = [\"{origin}\"]"),
    );
    // Node A serves the shop and the widget's session; node B gets the
    // customer's WhatsApp webhook. One Redis between them.
    let config_a = base.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\"\ndemo = true"),
    );
    let dir_a = scratch("browser-node-a");
    let mut node_a = Some(Gateway::start(&dir_a, &config_a));
    let node_b = Gateway::start(&scratch("browser-node-b"), &base);
    let driver = Chromedriver::start();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver, "1200,900").await;
        use fantoccini::Locator;

        // 1. Log in on the demo shop as Sarah, write, see the agent's reply.
        c.goto(&format!("{origin}/demo")).await.unwrap();
        c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
        until(&c, "the chat to open", "const p = document.querySelector('.cc-panel'); return !!p && !p.hidden;").await;
        let question = "Do you have the office chair in black?";
        c.find(Locator::Css(".cc-input")).await.unwrap().send_keys(question).await.unwrap();
        c.find(Locator::Css(".cc-send")).await.unwrap().click().await.unwrap();
        until(&c, "the agent's greeting", "return document.querySelector('.cc-log').innerText.includes('Thanks for reaching out');").await;
        screenshot(&c, &shots, "1-widget-reply.png").await;

        // 2. Sarah writes on WhatsApp; node B takes the webhook. The open
        // chat on node A shows it and the reply, without a reload.
        let r = whatsapp_message_from(&node_b, "14155552671", "wamid.BROWSER1", "Is it still in stock?");
        assert_eq!(r.status, 200, "{}", r.text());
        until(&c, "the WhatsApp message", &format!("return {} === 1;", count_of("Is it still in stock?"))).await;
        until(&c, "the reply that recalls the web chat", "return document.querySelector('.cc-log').innerText.includes('Welcome back, Sarah! Earlier on the web chat');").await;
        let meta: String = c
            .execute("return Array.from(document.querySelectorAll('.cc-meta')).map(e => e.textContent).join('|');", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(meta.contains("On WhatsApp"), "{meta}");
        screenshot(&c, &shots, "2-whatsapp-on-another-node.png").await;

        // 3. The network is cut while a message is being sent: node A dies
        // as the message leaves, and comes back on the same port.
        let resend = "Can I pick it up at the store?";
        c.find(Locator::Css(".cc-input")).await.unwrap().send_keys(resend).await.unwrap();
        c.find(Locator::Css(".cc-send")).await.unwrap().click().await.unwrap();
        if let Some(mut a) = node_a.take() {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        node_a = Some(Gateway::start(&dir_a, &config_a));
        // Stored and back from the timeline: its bubble carries the entry id.
        until(
            &c,
            "the resent message on the timeline",
            &format!(
                "return Array.from(document.querySelectorAll('.cc-log .cc-msg[data-id]')).some(n => n.querySelector('.cc-text').textContent === {});",
                Value::String(resend.into())
            ),
        )
        .await;
        // …exactly once, in the browser and in the store.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(c.execute(&format!("return {};", count_of(resend)), vec![]).await.unwrap(), json!(1));
        let id = customer_id(&node_b, "phone:%2B14155552671");
        let stored = timeline(&node_b, &id)
            .iter()
            .filter(|e| e["text"] == resend)
            .count();
        assert_eq!(stored, 1);
        screenshot(&c, &shots, "3-after-reconnect.png").await;

        // 4. Another user logs in: nothing of Sarah's stays on the page.
        // (The open chat covers the form: close it first, as a person would.)
        c.find(Locator::Css(".cc-x")).await.unwrap().click().await.unwrap();
        c.find(Locator::Id("logout")).await.unwrap().click().await.unwrap();
        for (field, value) in [("login-sub", "user-77"), ("login-name", "Bob"), ("login-email", "bob@example.com"), ("login-phone", "")] {
            let e = c.find(Locator::Id(field)).await.unwrap();
            e.clear().await.unwrap();
            if !value.is_empty() {
                e.send_keys(value).await.unwrap();
            }
        }
        c.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
        until(&c, "Bob's chat", "return document.querySelectorAll('[data-chatcrafter]').length === 1 && !document.querySelector('.cc-panel').hidden;").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let text: String = c
            .execute("return document.querySelector('[data-chatcrafter]').innerText;", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        for sarahs in ["office chair", "still in stock", "Sarah", "pick it up"] {
            assert!(!text.contains(sarahs), "Bob sees `{sarahs}`: {text}");
        }
        screenshot(&c, &shots, "4-another-user.png").await;
        c.close().await.unwrap();
    });
    drop(node_a);
}

/// A WhatsApp text from `wa_id`, to `gw`.
fn whatsapp_message_from(gw: &Gateway, wa_id: &str, wamid: &str, text: &str) -> Response {
    post_whatsapp(gw, APP_SECRET, whatsapp_text(wa_id, wamid, text))
}

// --- Contract 0.2: rich replies, reply windows, templates ----------------

/// A business agent that answers each message with the content its text
/// names (any other message gets no reply).
fn rich_agent() -> MockApi {
    MockApi::start(|r, _| {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let said = body["message"]["text"].as_str().unwrap_or("").to_string();
        let reply = match said.as_str() {
            s if s == "buttons" || s.starts_with("/ask") => json!({"type": "choices",
                "prompt": "Which colour?",
                "options": [{"id": "black", "title": "Black"}, {"id": "grey", "title": "Grey"}]}),
            "list" => json!({"type": "choices", "prompt": "Which size?",
                "options": (1..=5).map(|i| json!({"id": format!("s{i}"), "title": format!("Size {i}")})).collect::<Vec<_>>()}),
            "photo" => json!({"type": "media", "kind": "image",
                "source": {"url": "https://cdn.example.com/chair.jpg"}, "caption": "The chair in black"}),
            "template" => json!({"type": "template", "name": "order_update", "language": "en_US",
                "parameters": ["A-1001"]}),
            _ => return (200, "{}".into()),
        };
        (200, json!({"replies": [reply]}).to_string())
    })
}

fn rich_agent_config(agent: &MockApi) -> String {
    format!(
        "{FAST}kind = \"webhook\"\nurl = \"{}\"\nsecret = \"{AGENT_SECRET}\"\n",
        agent.url("/agent")
    )
}

#[test]
fn rich_replies_reach_each_channel_api_in_its_own_form_and_degrade_where_a_channel_has_none() {
    let apis = channel_apis();
    let agent = rich_agent();
    let slack =
        MockApi::start(|_, n| (200, json!({"ok": true, "ts": format!("{n}.0")}).to_string()));
    let extra = format!(
        r#"{agent_cfg}
[channels.acme]
plugin = "{plugin}"
api_base = "{api}"
[channels.acme.secrets]
signing_secret = "acme-signing-secret"
bot_token = "xoxb-acme"
"#,
        agent_cfg = rich_agent_config(&agent),
        plugin = chatcrafter_gateway::plugin::bundled::test_programs::SLACK_STYLE,
        api = slack.url("/slack/api"),
    );
    let s = setup("rich-replies", EMBEDDED, &apis, &extra);
    let gw = &s.gw;

    // WhatsApp: reply buttons (up to 3), a list (more), media, a template.
    let to = |body: Value| {
        let mut b = json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                           "to": "16505551234"});
        b.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        b
    };
    let expected = [
        to(
            json!({"type": "interactive", "interactive": {"type": "button",
            "body": {"text": "Which colour?"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "black", "title": "Black"}},
                                   {"type": "reply", "reply": {"id": "grey", "title": "Grey"}}]}}}),
        ),
        to(
            json!({"type": "interactive", "interactive": {"type": "list",
            "body": {"text": "Which size?"},
            "action": {"button": "Choose", "sections": [{"title": "Options", "rows":
                (1..=5).map(|i| json!({"id": format!("s{i}"), "title": format!("Size {i}")})).collect::<Vec<_>>()}]}}}),
        ),
        to(
            json!({"type": "image", "image": {"link": "https://cdn.example.com/chair.jpg",
            "caption": "The chair in black"}}),
        ),
        to(
            json!({"type": "template", "template": {"name": "order_update",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1001"}]}]}}),
        ),
    ];
    for (n, (said, want)) in ["buttons", "list", "photo", "template"]
        .into_iter()
        .zip(expected)
        .enumerate()
    {
        assert_eq!(
            whatsapp_message(gw, &format!("wamid.R{n}"), said).status,
            200
        );
        let sent = wait_for(&apis, "/wa/", n + 1, gw);
        assert_eq!(
            sent[n].path,
            format!("/wa/v21.0/{PHONE_NUMBER_ID}/messages")
        );
        assert_eq!(sent[n].json(), want, "{said}");
    }
    // A button press comes back as a postback titled with the button.
    let press = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Sarah"}, "wa_id": "16505551234"}],
        "messages": [{"from": "16505551234", "id": "wamid.P1", "timestamp": now().to_string(),
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "grey", "title": "Grey"}}}]});
    assert_eq!(post_whatsapp(gw, APP_SECRET, press).status, 200);
    let id = customer_id(gw, "whatsapp:16505551234");
    assert!(eventually(WAIT, || timeline(gw, &id)
        .iter()
        .any(|e| e["kind"] == "postback" && e["text"] == "Grey")));

    // Telegram: an inline keyboard; the press is acknowledged in the
    // webhook answer and recorded with the button's title.
    assert_eq!(telegram_message(gw, 900, "buttons").status, 200);
    let tg = wait_for(&apis, "/tg/", 1, gw);
    assert_eq!(tg[0].path, format!("/tg/bot{TG_BOT}/sendMessage"));
    assert_eq!(
        tg[0].json(),
        json!({"chat_id": 123456789, "text": "Which colour?", "reply_markup": {"inline_keyboard": [
            [{"text": "Black", "callback_data": "black"}], [{"text": "Grey", "callback_data": "grey"}]]}})
    );
    let callback = json!({"update_id": 901, "callback_query": {"id": "4382bfdwdsb323b2d9",
        "from": {"id": 123456789, "is_bot": false, "first_name": "Sarah"}, "data": "black",
        "message": {"message_id": 77, "date": now(), "chat": {"id": 123456789, "type": "private"},
            "reply_markup": tg[0].json()["reply_markup"].clone()}}});
    let r = gw.post(
        "/webhooks/telegram",
        &[("x-telegram-bot-api-secret-token", TG_SECRET)],
        callback.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2d9"})
    );
    let tg_id = customer_id(gw, "telegram:123456789");
    assert!(eventually(WAIT, || timeline(gw, &tg_id)
        .iter()
        .any(|e| e["kind"] == "postback" && e["text"] == "Black")));
    assert_eq!(telegram_message(gw, 902, "photo").status, 200);
    let tg = wait_for(&apis, "/tg/", 2, gw);
    assert_eq!(tg[1].path, format!("/tg/bot{TG_BOT}/sendPhoto"));
    assert_eq!(
        tg[1].json(),
        json!({"chat_id": 123456789, "photo": "https://cdn.example.com/chair.jpg",
               "caption": "The chair in black"})
    );

    // Discord: buttons in an action row on the follow-up.
    assert_eq!(discord_command(&s).status, 200);
    let dc = wait_for(&apis, "/discord/", 1, gw);
    assert_eq!(
        dc[0].json(),
        json!({"allowed_mentions": {"parse": []}, "content": "Which colour?",
               "components": [{"type": 1, "components": [
                   {"type": 2, "style": 1, "label": "Black", "custom_id": "black"},
                   {"type": 2, "style": 1, "label": "Grey", "custom_id": "grey"}]}]})
    );

    // A 0.1 plugin (text only) gets the choices as numbered text, and a
    // template it cannot send goes nowhere it would be refused: the inbox.
    let post_acme = |id: &str, text: &str| {
        let body = json!({"id": id, "user": "U123", "text": text}).to_string();
        let ts = now().to_string();
        let sig = format!(
            "v0={}",
            hmac_hex(b"acme-signing-secret", format!("v0:{ts}:{body}").as_bytes())
        );
        gw.post(
            "/webhooks/acme",
            &[
                ("x-slack-signature", &sig),
                ("x-slack-request-timestamp", &ts),
            ],
            body.as_bytes(),
        )
    };
    assert_eq!(post_acme("Ev1", "buttons").status, 200);
    assert!(eventually(WAIT, || slack.to("/slack/").len() == 1));
    let sent = slack.to("/slack/");
    assert_eq!(sent[0].path, "/slack/api/chat.postMessage");
    assert_eq!(sent[0].header("authorization"), Some("Bearer xoxb-acme"));
    assert_eq!(
        sent[0].json(),
        json!({"channel": "U123", "text": "Which colour?\n1. Black\n2. Grey"})
    );
    assert_eq!(post_acme("Ev2", "template").status, 200);
    let acme_id = customer_id(gw, "acme:U123");
    assert!(
        eventually(WAIT, || admin(gw, "GET", "/admin/v1/handoffs", b"").json()
            ["handoffs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["customer_id"] == acme_id
                && h["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("sends no templates"))),
        "{}",
        admin(gw, "GET", "/admin/v1/handoffs", b"").text()
    );
    assert_eq!(slack.to("/slack/").len(), 1);
}

/// The seed's abandoned-cart reminder on a real WhatsApp: outside the
/// 24-hour window it goes out as the configured template, inside as text.
#[test]
fn a_reminder_outside_whatsapps_window_goes_out_as_its_template_and_inside_as_text() {
    let apis = channel_apis();
    // An agent that never replies: only reminders go out.
    let agent = MockApi::start(|_, _| (200, "{}".into()));
    let extra = format!(
        "{agent_cfg}\n[channels.whatsapp.templates]\nproactive = {{ name = \"cart_reminder\", language = \"en_US\", parameters = [\"your chair\"] }}\n",
        agent_cfg = rich_agent_config(&agent).replace(
            "[delivery]\n",
            "[delivery]\nreminder_delay_seconds = 1\nproactive_per_day = 5\n"
        ),
    );
    let s = setup("reminder-window", EMBEDDED, &apis, &extra);
    let gw = &s.gw;
    // Sarah used WhatsApp 30 hours ago, then the widget (same verified
    // phone: one customer), where she leaves her cart.
    let mut old = whatsapp_text("16505551234", "wamid.OLD", "hi");
    old["messages"][0]["timestamp"] = json!((now() - 30 * 3600).to_string());
    assert_eq!(post_whatsapp(gw, APP_SECRET, old).status, 200);
    assert_eq!(widget_message(gw, "Is the chair in stock?").status, 202);
    let id = customer_id(gw, "whatsapp:16505551234");
    assert_eq!(customer_id(gw, "widget:user-42"), id);
    let r = admin(
        gw,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes": {"consent.marketing": "granted"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let abandon = || {
        let r = admin(gw, "POST", "/v1/events",
            json!({"identifier": {"kind": "phone", "value": "+16505551234"}, "type": "cart_abandoned",
                   "properties": {"cart": "chair"}}).to_string().as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
    };
    abandon();
    let wa = wait_for(&apis, "/wa/", 1, gw);
    assert_eq!(
        wa[0].json(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234",
               "type": "template", "template": {"name": "cart_reminder", "language": {"code": "en_US"},
               "components": [{"type": "body", "parameters": [{"type": "text", "text": "your chair"}]}]}})
    );
    // Within the window (she just wrote on WhatsApp): as text.
    assert_eq!(whatsapp_message(gw, "wamid.NEW", "thanks").status, 200);
    abandon();
    let wa = wait_for(&apis, "/wa/", 2, gw);
    assert_eq!(wa[1].json()["type"], "text");
    assert_eq!(
        wa[1].json()["text"]["body"],
        "Hi Sarah, you left something in your cart. It's saved for you — reply here if you have any questions."
    );
}

/// One plugin file, two channels: `[channels.messenger]` and
/// `[channels.instagram]` both load `builtin:messenger`, each with its own
/// secrets, settings and API base.
#[test]
fn messenger_and_instagram_from_one_plugin_file_side_by_side() {
    let graph = MockApi::start(|r, n| {
        let to = r.json()["recipient"]["id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (
            200,
            json!({"recipient_id": to, "message_id": format!("m_sent{n}")}).to_string(),
        )
    });
    let extra = format!(
        r#"{FAST}
[channels.messenger]
plugin = "builtin:messenger"
api_base = "{fb}"
[channels.messenger.secrets]
app_secret = "fb-app-secret"
verify_token = "fb-verify"
page_access_token = "EAA-page-token"
[channels.messenger.settings]
page_id = "104738912345678"
[channels.instagram]
plugin = "builtin:messenger"
api_base = "{ig}"
[channels.instagram.secrets]
app_secret = "ig-app-secret"
verify_token = "ig-verify"
page_access_token = "EAA-ig-page-token"
[channels.instagram.settings]
instagram_username = "acme.shop"
"#,
        fb = graph.url("/fb/v21.0"),
        ig = graph.url("/ig/v21.0"),
    );
    let apis = channel_apis();
    let s = setup("messenger-instagram", EMBEDDED, &apis, &extra);
    let gw = &s.gw;
    let post_meta = |channel: &str, secret: &str, body: Value| {
        let body = body.to_string();
        let sig = format!("sha256={}", hmac_hex(secret.as_bytes(), body.as_bytes()));
        gw.post(
            &format!("/webhooks/{channel}"),
            &[("x-hub-signature-256", &sig)],
            body.as_bytes(),
        )
    };
    let ms = now() * 1000;
    let event = |object: &str, account: &str, user: &str, inner: Value| {
        let mut e = json!({"sender": {"id": user}, "recipient": {"id": account}, "timestamp": ms});
        e.as_object_mut()
            .unwrap()
            .extend(inner.as_object().unwrap().clone());
        json!({"object": object, "entry": [{"id": account, "time": ms, "messaging": [e]}]})
    };

    // The handshake answers with each channel's own token only.
    let r = gw
        .get("/webhooks/instagram?hub.mode=subscribe&hub.verify_token=ig-verify&hub.challenge=42");
    assert_eq!((r.status, r.text()), (200, "42".to_string()));
    let r = gw
        .get("/webhooks/instagram?hub.mode=subscribe&hub.verify_token=fb-verify&hub.challenge=42");
    assert_eq!(r.status, 403);

    // A Messenger message, signed with Messenger's app secret (Instagram's
    // does not verify it): answered through Messenger's API base with
    // Messenger's token.
    let fb_msg = event(
        "page",
        "104738912345678",
        "6723498123456789",
        json!({"message": {"mid": "m_fb1", "text": "Has my order shipped?"}}),
    );
    assert_eq!(
        post_meta("messenger", "ig-app-secret", fb_msg.clone()).status,
        401
    );
    assert_eq!(post_meta("messenger", "fb-app-secret", fb_msg).status, 200);
    assert!(eventually(WAIT, || graph.to("/fb/").len() == 1));
    let sent = &graph.to("/fb/")[0];
    assert_eq!(sent.path, "/fb/v21.0/me/messages");
    assert_eq!(sent.header("authorization"), Some("Bearer EAA-page-token"));
    assert_eq!(
        sent.json(),
        json!({"recipient": {"id": "6723498123456789"}, "messaging_type": "RESPONSE",
               "message": {"text": "Hi! Thanks for reaching out — how can we help?"}})
    );
    let fb_id = customer_id(gw, "messenger:6723498123456789");
    // Her next message is acknowledged with a person one tap away: a
    // Messenger quick reply.
    let again = event(
        "page",
        "104738912345678",
        "6723498123456789",
        json!({"message": {"mid": "m_fb2", "text": "It is order 4821"}}),
    );
    assert_eq!(post_meta("messenger", "fb-app-secret", again).status, 200);
    assert!(eventually(WAIT, || graph.to("/fb/").len() == 2));
    assert_eq!(
        graph.to("/fb/")[1].json(),
        json!({"recipient": {"id": "6723498123456789"}, "messaging_type": "RESPONSE",
               "message": {"text": "Thanks! Got it — we'll follow up right here.",
                           "quick_replies": [{"content_type": "text", "title": "Talk to a person",
                                              "payload": "talk_to_a_person"}]}})
    );

    // Deep links from the plugin's templates, per channel's settings.
    let link = |channel: &str| {
        let r = admin(
            gw,
            "POST",
            "/v1/link-tokens",
            json!({"customer_id": fb_id, "channel": channel})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    };
    let m = link("messenger");
    let token = m["token"].as_str().unwrap().to_string();
    assert_eq!(
        m["link"],
        format!("https://m.me/104738912345678?ref={token}")
    );
    let i = link("instagram");
    let ig_token = i["token"].as_str().unwrap().to_string();
    assert_eq!(
        i["link"],
        format!("https://ig.me/m/acme.shop?ref={ig_token}")
    );

    // Opening the ig.me link sends its ref: the Instagram identity joins
    // the Messenger customer.
    let opened = event(
        "instagram",
        "17841400000000001",
        "1234567890123456",
        json!({"postback": {"title": "Get started", "payload": "start", "mid": "aWdfpb1",
                            "referral": {"ref": ig_token, "source": "SHORTLINKS", "type": "OPEN_THREAD"}}}),
    );
    assert_eq!(post_meta("instagram", "ig-app-secret", opened).status, 200);
    assert_eq!(customer_id(gw, "instagram:1234567890123456"), fb_id);

    // An Instagram message: its own channel, token and API base, and the
    // agent knows the customer from Messenger.
    let ig_msg = event(
        "instagram",
        "17841400000000001",
        "1234567890123456",
        json!({"message": {"mid": "aWdfig1", "text": "Do you ship to Canada?"}}),
    );
    assert_eq!(
        post_meta("instagram", "fb-app-secret", ig_msg.clone()).status,
        401
    );
    assert_eq!(post_meta("instagram", "ig-app-secret", ig_msg).status, 200);
    assert!(eventually(WAIT, || !graph.to("/ig/").is_empty()));
    let sent = graph.to("/ig/");
    let last = sent.last().unwrap();
    assert_eq!(last.path, "/ig/v21.0/me/messages");
    assert_eq!(
        last.header("authorization"),
        Some("Bearer EAA-ig-page-token")
    );
    assert_eq!(last.json()["recipient"]["id"], "1234567890123456");
    assert_eq!(
        graph.to("/fb/").len(),
        2,
        "nothing for Instagram went to Messenger"
    );
    let entries = timeline(gw, &fb_id);
    let channels: Vec<&str> = entries
        .iter()
        .filter(|e| e["direction"] == "inbound")
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert!(
        channels.contains(&"messenger") && channels.contains(&"instagram"),
        "{channels:?}"
    );
}

// --- The operator dashboard in a real browser (issue 16) -------------------

const ANALYST: &str = "analyst-token-for-tests";
const AGENT: &str = "agent-token-for-tests";
const AUDITOR: &str = "auditor-token-for-tests";

/// A token for each other role, beside `ops` (admin).
fn dashboard_tokens() -> String {
    [
        ("numbers", ANALYST, "analyst"),
        ("desk", AGENT, "agent"),
        ("books", AUDITOR, "auditor"),
    ]
    .iter()
    .map(|(name, token, role)| {
        format!(
            "[[admin.tokens]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nrole = \"{role}\"\n",
            token_sha256(token)
        )
    })
    .collect()
}

/// Polls `script` (which returns a boolean) in the page until it is true;
/// on timeout, fails with what the page shows.
async fn on_page(c: &fantoccini::Client, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if c.execute(script, vec![]).await.unwrap() == Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let shown = js_text(c, "document.body.innerText").await;
            panic!("waited 15 s for {what}; the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a JavaScript expression, as a string.
async fn js_text(c: &fantoccini::Client, expr: &str) -> String {
    let v = c
        .execute(&format!("return String({expr});"), vec![])
        .await
        .unwrap();
    v.as_str().unwrap().to_string()
}

/// Finds `css` and does `act` to it, again while the element is missing
/// or was replaced meanwhile (a live view redraws itself), for up to 15 s.
async fn with_element<F>(c: &fantoccini::Client, css: &str, act: F)
where
    F: AsyncFn(fantoccini::elements::Element) -> Result<(), fantoccini::error::CmdError>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let tried = match c.find(fantoccini::Locator::Css(css)).await {
            Ok(e) => act(e).await,
            Err(e) => Err(e),
        };
        match tried {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => panic!("`{css}`: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn click(c: &fantoccini::Client, css: &str) {
    with_element(c, css, async |e| e.click().await).await;
}

async fn type_into(c: &fantoccini::Client, css: &str, text: &str) {
    with_element(c, css, async |e| {
        e.clear().await?;
        e.send_keys(text).await
    })
    .await;
}

async fn sign_in(c: &fantoccini::Client, token: &str) {
    type_into(c, "#token", token).await;
    click(c, "#sign-in-button").await;
    on_page(
        c,
        "the navigation of a signed-in operator",
        "return !!document.querySelector('#nav a');",
    )
    .await;
}

async fn sign_out(c: &fantoccini::Client) {
    click(c, "#sign-out").await;
    on_page(
        c,
        "the sign-in form, and nothing else",
        "return !document.getElementById('sign-in').hidden && document.getElementById('view').childElementCount === 0 && !document.querySelector('#nav a');",
    )
    .await;
}

/// The labels of the navigation, in order.
async fn nav(c: &fantoccini::Client) -> Vec<String> {
    let v = c
        .execute(
            "return Array.from(document.querySelectorAll('#nav a')).map(a => a.textContent);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Whether the open timeline (`scope`, a CSS selector) has an entry on
/// `channel` whose text is `text`, with the channel's mark.
fn has_entry(scope: &str, channel: &str, text: &str) -> String {
    format!(
        "return Array.from(document.querySelectorAll('{scope} .entry')).some(e => e.dataset.channel === {ch} && e.querySelector('.mark').textContent === {ch} && (e.querySelector('.text') || {{}}).textContent === {text});",
        ch = Value::String(channel.into()),
        text = Value::String(text.into()),
    )
}

/// Everything the page holds as text: its nodes (shown or hidden, SVG
/// titles included) and the values of its fields.
async fn everything_on_the_page(c: &fantoccini::Client) -> String {
    js_text(
        c,
        "document.documentElement.textContent + '\\n' + Array.from(document.querySelectorAll('input, textarea, select')).map(e => e.value).join('\\n')",
    )
    .await
}

#[test]
fn the_dashboard_in_a_real_browser_search_timeline_merge_inbox_analytics_and_roles() {
    let apis = channel_apis();
    let dir = scratch("dashboard");
    let discord = hex(discord_key().public_key().as_ref());
    let config = config(
        EMBEDDED,
        &apis,
        &discord,
        &format!("{FAST}{}", dashboard_tokens()),
    );
    let gw = &Gateway::start(&dir, &config);
    let origin = format!("http://{}", gw.addr);

    // The files: no data, no auth, a strict policy, revalidated.
    let page = gw.get("/admin");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    let script = gw.get("/admin/ui/app.js");
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = script.header("etag").unwrap().to_string();
    let again = gw.request("GET", "/admin/ui/app.js", &[("if-none-match", &etag)], b"");
    assert_eq!(again.status, 304);
    assert_eq!(gw.get("/admin/ui/nothing.js").status, 404);
    // The identity routes of the page: any role may ask who it is; the
    // change feed is for admins and agents.
    let me = with_bearer(gw, ANALYST, "GET", "/admin/v1/me", b"");
    assert_eq!(me.json(), json!({"name": "numbers", "role": "analyst"}));
    assert_eq!(gw.get("/admin/v1/me").status, 401);
    assert_eq!(
        with_bearer(gw, ANALYST, "GET", "/admin/v1/changes", b"").status,
        403
    );

    // Sarah on the widget and on WhatsApp (one customer: both vouch for
    // her phone); someone on Telegram (another customer, for now).
    let question = "Do you have the office chair in black?";
    assert_eq!(widget_message(gw, question).status, 202);
    let stock = "Is it still in stock?";
    assert_eq!(whatsapp_message(gw, "wamid.D1", stock).status, 200);
    // Markup in a message is text on the page, never markup.
    let telegram_hello = "<b>hello</b> from telegram";
    assert_eq!(telegram_message(gw, 1, telegram_hello).status, 200);
    let id = customer_id(gw, "phone:%2B16505551234");
    assert_eq!(customer_id(gw, "whatsapp:16505551234"), id);
    let tg = customer_id(gw, "telegram:123456789");
    assert_ne!(tg, id);
    wait_for(&apis, "/wa/", 1, gw);

    let driver = Chromedriver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver, "1400,1000").await;

        c.goto(&format!("{origin}/admin")).await.unwrap();
        on_page(&c, "the sign-in form", "return !!document.getElementById('token');").await;
        // Policy violations and script errors, counted from here on; and a
        // mark that is gone if the page ever reloads.
        c.execute(
            "window.__problems = []; document.addEventListener('securitypolicyviolation', e => window.__problems.push(e.violatedDirective + ' ' + e.blockedURI)); window.addEventListener('error', e => window.__problems.push('error: ' + e.message)); window.addEventListener('unhandledrejection', e => window.__problems.push('rejection: ' + e.reason)); window.__never_reloaded = true; return true;",
            vec![],
        )
        .await
        .unwrap();

        // 1. A wrong token is refused with the API's words.
        type_into(&c, "#token", "not-a-token").await;
        click(&c, "#sign-in-button").await;
        on_page(&c, "the refusal", "return document.getElementById('sign-in-error').textContent.includes('401 unauthorized');").await;

        // 2. Signed in as an admin: every view.
        sign_in(&c, ADMIN).await;
        assert_eq!(nav(&c).await, ["Customers", "Inbox", "Conflicts", "Analytics", "Audit log"]);
        assert_eq!(js_text(&c, "document.getElementById('who').textContent").await, "ops · admin");
        on_page(&c, "the live feed", "return document.getElementById('live').dataset.state === 'live';").await;

        // 3. Find Sarah by phone: her profile, and one timeline with both
        // channels' messages, each with its mark, and the replies' delivery
        // states.
        type_into(&c, "#search-value", "+16505551234").await;
        click(&c, "#search button[type=submit]").await;
        on_page(&c, "Sarah's profile", &format!("const p = document.getElementById('profile'); return !!p && p.dataset.customer === {};", Value::String(id.clone()))).await;
        on_page(&c, "the widget question on the timeline", &has_entry("#timeline", "widget", question)).await;
        on_page(&c, "the WhatsApp message on the timeline", &has_entry("#timeline", "whatsapp", stock)).await;
        on_page(&c, "delivery states of the replies", "return Array.from(document.querySelectorAll('#timeline .entry[data-direction=outbound] .status')).length >= 2;").await;
        let identities = js_text(&c, "Array.from(document.querySelectorAll('#profile table.identities tbody tr')).map(r => r.querySelector('.mark').textContent).sort().join(',')").await;
        assert_eq!(identities, "whatsapp,widget");
        assert!(js_text(&c, "document.getElementById('profile').textContent").await.contains("Sarah"));
        screenshot(&c, &dir, "dashboard-1-profile-and-timeline.png").await;

        // 4. Live: a new WhatsApp message shows on the open timeline, with
        // no reload.
        let live = "Could it be delivered on Friday?";
        assert_eq!(whatsapp_message(gw, "wamid.D2", live).status, 200);
        on_page(&c, "the new message, live", &has_entry("#timeline", "whatsapp", live)).await;
        assert_eq!(js_text(&c, "window.__never_reloaded").await, "true");

        // 5. Merge the Telegram customer into Sarah, then undo it.
        type_into(&c, "#merge-other", "telegram:123456789").await;
        click(&c, "#merge-find").await;
        on_page(&c, "the merge preview", "return !!document.getElementById('merge-confirm');").await;
        click(&c, "#merge-confirm").await;
        on_page(&c, "the merge's confirmation", "return document.getElementById('merge-messages').textContent.includes('Merged');").await;
        on_page(&c, "the Telegram history on Sarah's timeline", &has_entry("#timeline", "telegram", telegram_hello)).await;
        assert_eq!(customer_id(gw, "telegram:123456789"), id);
        assert_eq!(js_text(&c, "document.querySelectorAll('#timeline .text b').length").await, "0");
        screenshot(&c, &dir, "dashboard-2-merged.png").await;
        click(&c, "#merges button.undo").await;
        on_page(&c, "the undo's confirmation", "return document.getElementById('merge-messages').textContent.includes('undone');").await;
        on_page(&c, "Sarah's timeline without the Telegram history", "return !Array.from(document.querySelectorAll('#timeline .entry')).some(e => e.dataset.channel === 'telegram');").await;
        assert_eq!(customer_id(gw, "telegram:123456789"), tg);
        screenshot(&c, &dir, "dashboard-3-undone.png").await;

        // 6. The inbox, live: Sarah asks for a person; her conversation
        // appears; a reply from the page reaches WhatsApp's API.
        click(&c, "#nav a[data-view=inbox]").await;
        on_page(&c, "the inbox", "return !!document.querySelector('#handoffs h2');").await;
        assert_eq!(
            whatsapp_message(gw, "wamid.D3", "Can I talk to a real person please?").status,
            200
        );
        let open = format!("[data-conversation={}]", Value::String(id.clone()));
        on_page(&c, "Sarah's hand-off, live", &format!("return !!document.querySelector('{open}');")).await;
        click(&c, &open).await;
        on_page(&c, "the reply form", "return !!document.getElementById('reply-text');").await;
        let reply = "Hi Sarah, Tom here: yes, Friday works.";
        type_into(&c, "#reply-text", reply).await;
        click(&c, "#reply-send").await;
        on_page(&c, "the reply's acknowledgment", "return !!document.querySelector('#reply-messages .ok');").await;
        assert!(
            eventually(WAIT, || apis.to("/wa/").iter().any(|r| r.json()["text"]["body"] == reply)),
            "the reply never reached WhatsApp's API: {:?}",
            apis.to("/wa/")
        );
        on_page(
            &c,
            "the reply on the conversation, past `queued`",
            &format!("return Array.from(document.querySelectorAll('#conversation-entries .entry[data-direction=outbound]')).some(e => e.querySelector('.text').textContent === {} && e.querySelector('.status').textContent !== 'queued');", Value::String(reply.into())),
        )
        .await;
        screenshot(&c, &dir, "dashboard-4-inbox-reply.png").await;

        // 7. Analytics: a purchase, then figures read off the page agree
        // with the API's JSON.
        let purchase = json!({"identifier": {"kind": "phone", "value": "+16505551234"}, "type": "purchase", "properties": {"order": "o-1"}});
        assert_eq!(admin(gw, "POST", "/v1/events", purchase.to_string().as_bytes()).status, 202);
        let report = admin(gw, "GET", "/admin/v1/analytics/channels", b"");
        let analytics_served = report.status != 404;
        if analytics_served {
            assert_eq!(report.status, 200, "{}", report.text());
            click(&c, "#nav a[data-view=analytics]").await;
            on_page(&c, "the channels report", "return document.querySelector('#report[data-report=channels][data-loaded=true] [data-figure=customers]') !== null;").await;
            let api = admin(gw, "GET", "/admin/v1/analytics/channels", b"").json();
            assert_eq!(js_text(&c, "document.querySelector('[data-figure=customers]').textContent").await, api["customers"].to_string());
            assert_eq!(
                js_text(&c, "document.querySelector('[data-channel=whatsapp][data-column=active]').textContent").await,
                api["active"]["whatsapp"].to_string()
            );
            screenshot(&c, &dir, "dashboard-5-analytics-channels.png").await;
            click(&c, ".tabs a[href='#/analytics/switches']").await;
            on_page(&c, "the switch matrix", "return document.querySelector('#report[data-report=switches][data-loaded=true] #switch-matrix') !== null;").await;
            screenshot(&c, &dir, "dashboard-6-analytics-switches.png").await;
            click(&c, ".tabs a[href='#/analytics/attribution']").await;
            on_page(&c, "the attribution models", "return document.querySelector('#report[data-report=attribution][data-loaded=true] #attribution') !== null;").await;
            for model in ["first", "last", "linear", "position", "time_decay"] {
                let api = admin(gw, "GET", &format!("/admin/v1/analytics/attribution?model={model}"), b"").json();
                assert_eq!(
                    js_text(&c, &format!("document.querySelector('[data-model={model}][data-column=conversions]').textContent")).await,
                    api["conversions"].to_string(),
                    "{model}"
                );
            }
            screenshot(&c, &dir, "dashboard-7-analytics-attribution.png").await;
            click(&c, ".tabs a[href='#/analytics/journeys']").await;
            on_page(&c, "the journeys", "return document.querySelector('#report[data-report=journeys][data-loaded=true]') !== null;").await;
            screenshot(&c, &dir, "dashboard-8-analytics-journeys.png").await;
        } else {
            eprintln!("GET /admin/v1/analytics/channels is 404: the dashboard's analytics checks did not run");
        }
        let problems = js_text(&c, "window.__problems.join('; ')").await;
        assert_eq!(problems, "", "the policy refused something, or a script failed");

        // 8. An agent: customers and the inbox, no merge.
        sign_out(&c).await;
        sign_in(&c, AGENT).await;
        assert_eq!(nav(&c).await, ["Customers", "Inbox"]);
        c.execute(&format!("location.hash = {}; return true;", Value::String(format!("#/customer/{id}"))), vec![]).await.unwrap();
        on_page(&c, "the profile, for an agent", "return !!document.getElementById('profile');").await;
        assert_eq!(js_text(&c, "!!document.getElementById('merge-other')").await, "false");

        // 9. An auditor: the audit log only, filtered.
        sign_out(&c).await;
        sign_in(&c, AUDITOR).await;
        assert_eq!(nav(&c).await, ["Audit log"]);
        type_into(&c, "#audit-action", "merge.undo").await;
        click(&c, "#audit-filters button[type=submit]").await;
        on_page(&c, "the undo in the audit log", "const rows = Array.from(document.querySelectorAll('#audit-entries tbody tr')); return rows.length >= 1 && rows.every(r => r.children[3].textContent === 'merge.undo');").await;
        screenshot(&c, &dir, "dashboard-9-audit.png").await;

        // 10. An analyst: reports only, and no personal data anywhere on
        // the page — not even after asking for a customer's page.
        sign_out(&c).await;
        sign_in(&c, ANALYST).await;
        assert_eq!(nav(&c).await, ["Analytics"]);
        let personal = ["Sarah", "Kim", "sarah@example.com", "16505551234", "6505551234", question, stock, live, reply, telegram_hello];
        let mut pages = vec!["#/customers".to_string(), format!("#/customer/{id}"), "#/inbox".into(), "#/audit".into()];
        if analytics_served {
            pages.extend(["#/analytics/channels", "#/analytics/switches", "#/analytics/attribution", "#/analytics/journeys"].map(String::from));
        }
        for hash in &pages {
            // The old report goes first, so the wait is for the new one.
            c.execute(&format!("const r = document.getElementById('report'); if (r) r.remove(); location.hash = {}; return true;", Value::String(hash.clone())), vec![]).await.unwrap();
            on_page(&c, &format!("a report (or its error) for the analyst at {hash}"), "const r = document.getElementById('report'); return !!r && (r.dataset.loaded === 'true' || !!r.querySelector('.error'));").await;
            assert_eq!(js_text(&c, "document.getElementById('view').dataset.view").await, "analytics", "{hash}");
            let text = everything_on_the_page(&c).await;
            for p in personal {
                assert!(!text.contains(p), "the analyst sees `{p}` at {hash}:\n{text}");
            }
        }
        if analytics_served {
            // One customer's touchpoints, by id: channels and kinds only.
            type_into(&c, "#journey-customer", &id).await;
            click(&c, "#journey-show").await;
            on_page(&c, "Sarah's touchpoints", "return !!document.querySelector('#touchpoints table');").await;
            let text = everything_on_the_page(&c).await;
            for p in personal {
                assert!(!text.contains(p), "the analyst sees `{p}` among touchpoints:\n{text}");
            }
        }
        screenshot(&c, &dir, "dashboard-10-analyst.png").await;
        assert_eq!(js_text(&c, "window.__problems.join('; ')").await, "");
        assert_eq!(js_text(&c, "window.__never_reloaded").await, "true");
        c.close().await.unwrap();
    });
    eprintln!("dashboard screenshots: {}", dir.display());
}
