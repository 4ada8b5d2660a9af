//! Identity end to end: the real gateway, real plugins, real signed
//! webhooks, its embedded store or its own Redis, and the admin API.

#[path = "support.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const APP_SECRET: &str = "meta-app-secret-for-tests";
const TG_SECRET: &str = "tg_secret-token_123";
const WIDGET_SECRET: &str = "widget-secret-widget-secret-0123456789";
const ADMIN: &str = "admin-token-for-tests";
const AGENT: &str = "agent-token-for-tests";
const ANALYST: &str = "analyst-token-for-tests";
const AUDITOR: &str = "auditor-token-for-tests";
/// The `[store]` of a gateway on its own embedded store.
const EMBEDDED: &str = "kind = \"embedded\"\npath = \"data\"";

fn config(store: &str) -> String {
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[store]
{store}
[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
[identity.limits]
email = 2
phone = 3
[widget]
algorithms = ["HS256"]
secret = "{WIDGET_SECRET}"
[channels.whatsapp]
plugin = "builtin:whatsapp"
[channels.whatsapp.secrets]
app_secret = "{APP_SECRET}"
verify_token = "v"
access_token = "a"
[channels.whatsapp.settings]
display_phone_number = "+15550783881"
[channels.telegram]
plugin = "builtin:telegram"
[channels.telegram.secrets]
secret_token = "{TG_SECRET}"
bot_token = "7012345678:AAE"
[channels.telegram.settings]
bot_id = "7012345678"
bot_username = "shop_bot"
[[admin.tokens]]
name = "ops"
token_sha256 = "{}"
role = "admin"
[[admin.tokens]]
name = "desk"
token_sha256 = "{}"
role = "agent"
[[admin.tokens]]
name = "bi"
token_sha256 = "{}"
role = "analyst"
[[admin.tokens]]
name = "audit"
token_sha256 = "{}"
role = "auditor"
"#,
        token_sha256(ADMIN),
        token_sha256(AGENT),
        token_sha256(ANALYST),
        token_sha256(AUDITOR)
    )
}

/// The id of the customer an identifier finds (`null` when none does).
fn found_id(gw: &Gateway, identifier: &str) -> serde_json::Value {
    admin(
        gw,
        ADMIN,
        "GET",
        &format!("/admin/v1/customers?identifier={identifier}"),
        b"",
    )
    .json()["id"]
        .clone()
}

/// A one-time link token for customer `id` on `channel` (as an agent), and
/// its deep link.
fn link_token(gw: &Gateway, id: &str, channel: &str) -> (String, serde_json::Value) {
    let r = admin(
        gw,
        AGENT,
        "POST",
        "/v1/link-tokens",
        serde_json::json!({"customer_id": id, "channel": channel})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    (
        body["token"].as_str().unwrap().to_string(),
        body["link"].clone(),
    )
}

fn widget_message(gw: &Gateway, sub: &str, email: &str, phone: &str, text: &str) -> Response {
    let claims = serde_json::json!({"sub": sub, "exp": now() + 600, "email": email,
        "email_verified": true, "phone": phone, "phone_number_verified": true, "name": "Sarah Kim"});
    post_widget(gw, &widget_jwt(WIDGET_SECRET, &claims), text)
}

fn whatsapp_message(gw: &Gateway, wa_id: &str, wamid: &str, text: &str) -> Response {
    post_whatsapp(gw, APP_SECRET, whatsapp_text(wa_id, wamid, text))
}

fn telegram_message(gw: &Gateway, update_id: u64, user: u64, text: &str) -> Response {
    post_telegram(gw, TG_SECRET, update_id, user, text)
}

/// A widget message (sub, email, phone, text) and a WhatsApp one (wa_id,
/// wamid, text), both accepted; the id of the widget user's customer.
fn widget_then_whatsapp(
    gw: &Gateway,
    (sub, email, phone, text): (&str, &str, &str, &str),
    (wa_id, wamid, wa_text): (&str, &str, &str),
) -> String {
    assert_eq!(widget_message(gw, sub, email, phone, text).status, 202);
    assert_eq!(whatsapp_message(gw, wa_id, wamid, wa_text).status, 200);
    found_id(gw, &format!("widget:{sub}"))
        .as_str()
        .unwrap()
        .to_string()
}

fn admin(gw: &Gateway, token: &str, method: &str, path: &str, body: &[u8]) -> Response {
    with_bearer(gw, token, method, path, body)
}

#[test]
fn widget_whatsapp_telegram_and_csv_make_one_customer_through_the_admin_api() {
    let dir = scratch("identity-journey");
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    assert_eq!(
        widget_message(
            &gw,
            "user-42",
            "sarah@example.com",
            "+16505551234",
            "Do you have the office chair in black?"
        )
        .status,
        202
    );
    assert_eq!(
        whatsapp_message(
            &gw,
            "16505551234",
            "wamid.A1",
            "Is the chair still in stock?"
        )
        .status,
        200
    );

    let r = admin(
        &gw,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=phone:%2B16505551234",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    let id = c["id"].as_str().unwrap().to_string();
    let channels: Vec<&str> = c["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["widget", "whatsapp"]);
    assert_eq!(c["identities"][1]["how"], "verified_claim");
    assert_eq!(c["primary_identifier"]["value"], "sarah@example.com");
    assert!(
        c["identities"][0]["linked_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // Lookups by channel id in any scope.
    assert_eq!(
        admin(
            &gw,
            AGENT,
            "GET",
            "/admin/v1/customers?identifier=whatsapp:16505551234",
            b""
        )
        .json()["id"],
        id.as_str()
    );
    assert_eq!(
        admin(
            &gw,
            AGENT,
            "GET",
            "/admin/v1/customers?identifier=widget:user-42",
            b""
        )
        .json()["id"],
        id.as_str()
    );

    // A link token sent through Telegram's /start links Telegram.
    let (token, link) = link_token(&gw, &id, "telegram");
    assert_eq!(link, format!("https://t.me/shop_bot?start={token}"));
    assert_eq!(
        telegram_message(&gw, 1, 123456789, &format!("/start {token}")).status,
        200
    );
    assert_eq!(
        admin(
            &gw,
            ADMIN,
            "GET",
            "/admin/v1/customers?identifier=telegram:123456789",
            b""
        )
        .json()["id"],
        id.as_str()
    );

    // A WhatsApp link token, as the wa.me link prefills it, links a phone
    // no claim would have linked (a second number of Sarah's)…
    let (token, link) = link_token(&gw, &id, "whatsapp");
    assert_eq!(link, format!("https://wa.me/15550783881?text={token}"));
    assert_eq!(
        whatsapp_message(&gw, "4915112345678", "wamid.link-1", &token).status,
        200
    );
    let linked = |identifier: &str| found_id(&gw, identifier);
    assert_eq!(linked("whatsapp:4915112345678"), id.as_str());
    // …and so does the sentence form `… ref:<token>`, once per token.
    let (token, _) = link_token(&gw, &id, "whatsapp");
    let text = format!("Hi! Please link my order ref:{token}");
    assert_eq!(
        whatsapp_message(&gw, "4915112345679", "wamid.link-2", &text).status,
        200
    );
    assert_eq!(linked("whatsapp:4915112345679"), id.as_str());
    assert_eq!(
        whatsapp_message(&gw, "4915112345670", "wamid.link-3", &text).status,
        200
    );
    assert_ne!(
        linked("whatsapp:4915112345670"),
        id.as_str(),
        "a token links once"
    );

    // A CSV row links a Discord id; a bad row is reported by line.
    let csv = "email,discord_user_id,customer_name,attr:tier\nsarah@example.com,80351110224678912,Sarah Kim,gold\nnot-an-email,1,Bob,\n";
    let r = admin(&gw, ADMIN, "POST", "/admin/v1/import", csv.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"rows": 2, "linked": 1, "merged": 0, "conflicts": 0,
        "rejected": [{"line": 3, "reason": "email: `not-an-email` is not an email address"}]})
    );
    // Re-importing the same file changes nothing.
    let again = admin(&gw, ADMIN, "POST", "/admin/v1/import", csv.as_bytes()).json();
    assert_eq!(again["linked"], 0);
    let c = admin(&gw, ADMIN, "GET", &format!("/admin/v1/customers/{id}"), b"").json();
    assert_eq!(c["attributes"]["tier"], "gold");
    assert_eq!(
        admin(
            &gw,
            ADMIN,
            "GET",
            "/admin/v1/customers?identifier=discord:80351110224678912",
            b""
        )
        .json()["id"],
        id.as_str()
    );

    // PATCH attributes.
    let r = admin(
        &gw,
        AGENT,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"city":"Berlin"}}"#,
    );
    assert_eq!(r.json()["attributes"]["city"], "Berlin");
}

#[test]
fn admin_merge_undo_limits_and_roles() {
    let dir = scratch("identity-admin");
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    assert_eq!(
        widget_message(&gw, "u-1", "a@example.com", "+16505550001", "hi").status,
        202
    );
    assert_eq!(
        widget_message(&gw, "u-2", "b@example.com", "+16505550002", "hi").status,
        202
    );
    assert_eq!(
        widget_message(&gw, "u-3", "c@example.com", "+16505550003", "hi").status,
        202
    );
    let id = |e: &str| {
        admin(
            &gw,
            ADMIN,
            "GET",
            &format!("/admin/v1/customers?identifier=email:{e}"),
            b"",
        )
        .json()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b, c) = (
        id("a@example.com"),
        id("b@example.com"),
        id("c@example.com"),
    );
    let before = admin(&gw, ADMIN, "GET", &format!("/admin/v1/customers/{b}"), b"").json();

    let merge = |s: &str, m: &str| {
        admin(
            &gw,
            ADMIN,
            "POST",
            "/admin/v1/customers/merge",
            serde_json::json!({"surviving": s, "merged": m})
                .to_string()
                .as_bytes(),
        )
    };
    let r = merge(&a, &b);
    assert_eq!(r.status, 200, "{}", r.text());
    let merge_id = r.json()["merge_id"].as_str().unwrap().to_string();
    assert_eq!(id("b@example.com"), a);
    // Email limit is 2: merging a third is refused with the reason.
    let r = merge(&a, &c);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["error"]["message"],
        "merging would give the customer 3 email identifiers; the limit is 2"
    );
    // Undo.
    let r = admin(
        &gw,
        ADMIN,
        "POST",
        &format!("/admin/v1/merges/{merge_id}/undo"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(id("b@example.com"), b);
    assert_eq!(
        admin(&gw, ADMIN, "GET", &format!("/admin/v1/customers/{b}"), b"").json(),
        before
    );

    // Roles and errors.
    assert_eq!(gw.get("/admin/v1/conflicts").status, 401);
    assert_eq!(
        admin(&gw, "wrong", "GET", "/admin/v1/conflicts", b"").status,
        401
    );
    assert_eq!(
        admin(&gw, AGENT, "POST", "/admin/v1/customers/merge", b"{}").status,
        403
    );
    assert_eq!(
        admin(
            &gw,
            ANALYST,
            "GET",
            &format!("/admin/v1/customers/{a}"),
            b""
        )
        .status,
        403
    );
    let r = admin(
        &gw,
        ADMIN,
        "POST",
        "/admin/v1/customers/merge",
        br#"{"surviving":"x"}"#,
    );
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `merged`"),
        "{}",
        r.text()
    );
    assert_eq!(
        admin(&gw, ADMIN, "GET", "/admin/v1/customers/c_nope", b"").status,
        404
    );
    assert_eq!(
        admin(
            &gw,
            ADMIN,
            "GET",
            "/admin/v1/customers?identifier=phone:%2B16505559999",
            b""
        )
        .status,
        404
    );
    assert_eq!(
        admin(
            &gw,
            ADMIN,
            "GET",
            "/admin/v1/customers?identifier=fax:123",
            b""
        )
        .status,
        422
    );
}

#[test]
fn the_cli_import_prints_progress_and_a_summary() {
    let dir = scratch("identity-cli-import");
    std::fs::write(dir.join("gateway.toml"), config(EMBEDDED)).unwrap();
    std::fs::write(
        dir.join("customers.csv"),
        "email,phone_number\nann@example.com,+16505550101\nbad,\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["import", "customers.csv", "--config", "gateway.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "customers.csv: 2 rows read, 2 linked, 0 merged, 0 conflicts, 1 rejected\n  line 3: email: `bad` is not an email address\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1/1 rows"));
    // The imported customer is there when the gateway starts on the store.
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    assert_eq!(
        admin(
            &gw,
            ADMIN,
            "GET",
            "/admin/v1/customers?identifier=phone:%2B16505550101",
            b""
        )
        .status,
        200
    );
}

fn redis_server(dir: &std::path::Path) -> (RedisServer, u16) {
    let server = RedisServer::start(dir, 0, None);
    let port = server.port;
    (server, port)
}

#[test]
fn two_gateways_on_one_redis_converge_on_one_customer() {
    let dir = scratch("identity-two-nodes");
    let (_redis, port) = redis_server(&dir);
    let store = format!("kind = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"");
    let a_dir = dir.join("a");
    let b_dir = dir.join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Gateway::start(&a_dir, &config(&store));
    let b = Gateway::start(&b_dir, &config(&store));
    // One person, many identities, each carrying the same verified phone,
    // sent at once to both gateways in an interleaved order.
    let nodes = [a.addr, b.addr];
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let addr = nodes[i % 2];
            std::thread::spawn(move || {
                let gw_like = |method: &str, path: &str, h: &[(&str, &str)], body: &[u8]| {
                    request(addr, method, path, h, body)
                };
                let sub = format!("user-{i}");
                let claims = serde_json::json!({"sub": sub, "exp": now() + 600,
                    "phone": "+16505551234", "phone_number_verified": true});
                let token = widget_jwt(WIDGET_SECRET, &claims);
                let r = gw_like(
                    "POST",
                    "/widget/v1/messages",
                    &[("authorization", &format!("Bearer {token}"))],
                    br#"{"text":"hello"}"#,
                );
                assert_eq!(r.status, 202, "{}", r.text());
            })
        })
        .collect();
    for (n, t) in threads.into_iter().enumerate() {
        if n == 3 {
            assert_eq!(
                whatsapp_message(&a, "16505551234", "wamid.X", "hi").status,
                200
            );
        }
        t.join().unwrap();
    }
    let on_a = admin(
        &a,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=phone:%2B16505551234",
        b"",
    )
    .json();
    let on_b = admin(
        &b,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=phone:%2B16505551234",
        b"",
    )
    .json();
    assert_eq!(on_a, on_b, "both nodes see the same customer");
    assert_eq!(
        on_a["identities"].as_array().unwrap().len(),
        17,
        "no link lost"
    );
    for i in 0..16 {
        let r = admin(
            &b,
            ADMIN,
            "GET",
            &format!("/admin/v1/customers?identifier=widget:user-{i}"),
            b"",
        );
        assert_eq!(r.json()["id"], on_a["id"]);
    }
}

#[test]
fn redis_down_means_503_never_200_and_traffic_resumes_when_it_returns() {
    let dir = scratch("identity-redis-down");
    let (redis, port) = redis_server(&dir);
    let store = format!("kind = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"");
    let gw = Gateway::start(&dir, &config(&store));
    assert_eq!(
        whatsapp_message(&gw, "16505551234", "wamid.U1", "first").status,
        200
    );
    drop(redis);
    let r = whatsapp_message(&gw, "16505551234", "wamid.U2", "while down");
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "store_unavailable"),
        "{}",
        r.text()
    );
    assert_eq!(gw.get("/readyz").status, 503);
    // Redis comes back on the same port; the gateway reconnects by itself.
    let _redis = RedisServer::start(&dir, port, None);
    assert!(
        eventually(Duration::from_secs(15), || whatsapp_message(
            &gw,
            "16505551234",
            "wamid.U3",
            "back"
        )
        .status
            == 200),
        "traffic resumed"
    );
    assert_eq!(gw.get("/readyz").status, 200);
}

#[test]
fn a_gateway_on_redis_over_tls_trusts_the_configured_ca() {
    let dir = scratch("identity-rediss");
    // A private CA and a server certificate it signed.
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=test-ca",
                "-keyout",
                "ca-key.pem",
                "-out",
                "redis-ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "redis-key.pem",
                "-out",
                "req.pem",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "redis-ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "redis-cert.pem",
    ]);
    let redis = RedisServer::start(
        &dir,
        0,
        Some((&dir.join("redis-cert.pem"), &dir.join("redis-key.pem"))),
    );
    let port = redis.port;
    let store = format!(
        "kind = \"redis\"\nurl = \"rediss://127.0.0.1:{port}/0\"\ntls_ca_file = \"redis-ca.pem\""
    );
    let gw = Gateway::start(&dir, &config(&store));
    assert_eq!(
        whatsapp_message(&gw, "16505551234", "wamid.T1", "over TLS").status,
        200
    );
    assert_eq!(
        admin(
            &gw,
            ADMIN,
            "GET",
            "/admin/v1/customers?identifier=whatsapp:16505551234",
            b""
        )
        .status,
        200
    );
}

#[test]
fn a_malformed_payload_is_refused_with_400_and_kept_for_inspection() {
    let dir = scratch("identity-malformed");
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{}}]}]}"#;
    let sig = format!("sha256={}", hmac_hex(APP_SECRET.as_bytes(), body));
    let r = gw.post("/webhooks/whatsapp", &[("x-hub-signature-256", &sig)], body);
    assert_eq!((r.status, r.code().as_str()), (400, "malformed_payload"));
    // The answer names the request, never the plugin's words (which may
    // quote the payload)…
    let card = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":"15551234567","id":"wamid.c","timestamp":"1","type":4111111111111111}]}}]}]}"#;
    let card_sig = format!("sha256={}", hmac_hex(APP_SECRET.as_bytes(), card));
    let r2 = gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &card_sig)],
        card,
    );
    assert_eq!((r2.status, r2.code().as_str()), (400, "malformed_payload"));
    assert!(
        r2.text().contains("kept for inspection as request"),
        "{}",
        r2.text()
    );
    for leaked in ["4111111111111111", "15551234567"] {
        assert!(!r2.text().contains(leaked), "{}", r2.text());
        assert!(!gw.stderr().contains(leaked), "{}", gw.stderr());
    }
    // …which the admin reads, newest first, a page at a time.
    let kept = admin(&gw, ADMIN, "GET", "/admin/v1/malformed?limit=1", b"").json();
    assert!(
        kept["malformed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("4111111111111111"),
        "{kept}"
    );
    let after = kept["next"].as_str().expect("a second page").to_string();
    let kept = admin(
        &gw,
        ADMIN,
        "GET",
        &format!("/admin/v1/malformed?limit=1&after={after}"),
        b"",
    )
    .json();
    assert_eq!(kept["next"], serde_json::Value::Null, "{kept}");
    for bad in ["limit=0", "limit=101", "after=x"] {
        let r = admin(
            &gw,
            ADMIN,
            "GET",
            &format!("/admin/v1/malformed?{bad}"),
            b"",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_query"),
            "{bad}"
        );
    }
    let item = &kept["malformed"][0];
    assert_eq!(item["channel"], "whatsapp");
    assert_eq!(item["body"], String::from_utf8_lossy(body).as_ref());
    assert!(
        item["error"]
            .as_str()
            .unwrap()
            .contains("a change has no `metadata`"),
        "{item}"
    );
    assert_eq!(
        admin(&gw, AGENT, "GET", "/admin/v1/malformed", b"").status,
        403
    );
    // Sealed at rest like everything else.
    let raw = std::fs::read(dir.join("data/gateway.redb")).unwrap();
    assert!(!raw.windows(25).any(|w| w == b"whatsapp_business_account"));
}

#[test]
fn the_timeline_is_one_conversation_across_channels_and_a_retry_is_recorded_once() {
    let dir = scratch("identity-timeline");
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    assert_eq!(
        widget_message(
            &gw,
            "user-42",
            "sarah@example.com",
            "+16505551234",
            "Do you have the office chair in black?"
        )
        .status,
        202
    );
    // The same WhatsApp delivery twice (a provider retry): 200 both times,
    // one timeline entry.
    assert_eq!(
        whatsapp_message(&gw, "16505551234", "wamid.R1", "Is it still in stock?").status,
        200
    );
    assert_eq!(
        whatsapp_message(&gw, "16505551234", "wamid.R1", "Is it still in stock?").status,
        200
    );
    let id = admin(
        &gw,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=email:sarah@example.com",
        b"",
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (token, _) = link_token(&gw, &id, "telegram");
    assert_eq!(
        telegram_message(&gw, 7, 123456789, &format!("/start {token}")).status,
        200
    );
    let t = admin(
        &gw,
        AGENT,
        "GET",
        &format!("/admin/v1/customers/{id}/timeline"),
        b"",
    )
    .json();
    assert_eq!(t["customer_id"], id.as_str());
    // The agent's replies are there too (tests/conversations.rs follows
    // them); this test is about what came in.
    let entries: Vec<&serde_json::Value> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] != "outbound")
        .collect();
    let summary = timeline_summary(entries.iter().copied());
    assert_eq!(
        summary,
        [
            ("widget", "inbound", "text"),
            ("whatsapp", "inbound", "text"),
            ("telegram", "inbound", "link")
        ]
    );
    assert_eq!(entries[1]["text"], "Is it still in stock?");
    assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'));
    assert!(
        gw.get("/metrics")
            .text()
            .contains("gateway_dedup_hits_total{channel=\"whatsapp\"} 1")
    );
    // A business event lands on the same timeline.
    let ev = serde_json::json!({"identifier": {"kind": "phone", "value": "+1 650 555 1234"}, "type": "purchase", "properties": {"sku": "chair-black", "amount": 249}});
    let r = admin(&gw, AGENT, "POST", "/v1/events", ev.to_string().as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["customer_id"], id.as_str());
    let last = admin(
        &gw,
        AGENT,
        "GET",
        &format!("/admin/v1/customers/{id}/timeline"),
        b"",
    )
    .json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["direction"] == "event")
        .unwrap()
        .clone();
    assert_eq!(
        (
            last["direction"].as_str(),
            last["kind"].as_str(),
            last["channel"].as_str()
        ),
        (Some("event"), Some("purchase"), Some("api"))
    );
    assert_eq!(last["properties"]["sku"], "chair-black");
    let bad = serde_json::json!({"identifier": {"kind": "email", "value": "nobody@example.com"}, "type": "purchase"});
    assert_eq!(
        admin(&gw, AGENT, "POST", "/v1/events", bad.to_string().as_bytes()).status,
        404
    );
    let bad = serde_json::json!({"identifier": {"kind": "email", "value": "sarah@example.com"}, "type": "Purchase!"});
    assert_eq!(
        admin(&gw, AGENT, "POST", "/v1/events", bad.to_string().as_bytes()).status,
        422
    );
    assert_eq!(
        admin(
            &gw,
            ANALYST,
            "POST",
            "/v1/events",
            ev.to_string().as_bytes()
        )
        .status,
        403
    );
    // The widget user reads the same history.
    let claims = serde_json::json!({"sub": "user-42", "exp": now() + 600});
    let jwt = widget_jwt(WIDGET_SECRET, &claims);
    let h = gw.request(
        "GET",
        "/widget/v1/history",
        &[("authorization", &format!("Bearer {jwt}"))],
        b"",
    );
    assert_eq!(h.status, 200, "{}", h.text());
    let history = h.json()["entries"].as_array().unwrap().clone();
    let not_replies = history.iter().filter(|e| e["direction"] != "outbound");
    assert_eq!(not_replies.count(), 4);
    assert_eq!(gw.get("/widget/v1/history").status, 401);
}

/// The red-team finding: a widget token carrying a phone the business has
/// not verified must not hand its bearer someone else's conversation.
#[test]
fn an_unverified_widget_phone_is_a_suggestion_not_a_takeover() {
    let dir = scratch("identity-takeover");
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    // Sarah writes on WhatsApp: WhatsApp vouches for her number.
    assert_eq!(
        whatsapp_message(
            &gw,
            "14155552671",
            "wamid.SARAH1",
            "Where is my order #1042?"
        )
        .status,
        200
    );
    let sarah = admin(
        &gw,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=whatsapp:14155552671",
        b"",
    );
    assert_eq!(sarah.status, 200, "{}", sarah.text());
    let sarah = sarah.json();
    // Mallory's token carries Sarah's phone, unverified.
    let mallory = widget_jwt(
        WIDGET_SECRET,
        &serde_json::json!({"sub": "mallory-1", "exp": now() + 600, "phone": "+14155552671", "name": "Mallory"}),
    );
    let r = post_widget(&gw, &mallory, "hi");
    assert_eq!(r.status, 202, "{}", r.text());

    // Mallory sees only her own message (and, if it came already, the
    // agent's answer to it) — nothing of Sarah's.
    let history = with_bearer(&gw, &mallory, "GET", "/widget/v1/history", b"").json();
    let entries = history["entries"].as_array().unwrap();
    let inbound: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 1, "{history}");
    assert_eq!(inbound[0]["text"], "hi");
    assert!(
        entries.iter().all(|e| e["channel"] == "widget"),
        "{history}"
    );
    assert_ne!(history["customer_id"], sarah["id"]);
    // Sarah's profile is as it was: her name, her phone, no widget identity.
    let now_sarah = admin(
        &gw,
        ADMIN,
        "GET",
        &format!("/admin/v1/customers/{}", sarah["id"].as_str().unwrap()),
        b"",
    )
    .json();
    assert_eq!(now_sarah["attributes"], sarah["attributes"]);
    assert_eq!(now_sarah["identities"], sarah["identities"]);
    // The match waits for a person in the review queue.
    let conflicts = admin(&gw, ADMIN, "GET", "/admin/v1/conflicts", b"").json();
    let suggestion = conflicts["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "suggestion")
        .unwrap_or_else(|| panic!("{conflicts}"))
        .clone();
    assert_eq!(suggestion["customer_id"], history["customer_id"]);
    assert_eq!(suggestion["other_customer_id"], sarah["id"]);
}

/// A signed WhatsApp delivery replayed after the dedup retention: its id
/// may be forgotten, so it is refused — 200 so that the channel stops, a
/// metric, nothing stored.
#[test]
fn a_delivery_older_than_the_dedup_retention_is_refused_not_stored() {
    let dir = scratch("identity-replay");
    let gw = Gateway::start(&dir, &config(EMBEDDED));
    let eight_days_ago = (now() - 8 * 86_400).to_string();
    let mut value = whatsapp_text("14155550000", "wamid.REPLAY", "refund me again");
    value["messages"][0]["timestamp"] = serde_json::json!(eight_days_ago);
    let r = post_whatsapp(&gw, APP_SECRET, value);
    assert_eq!(r.status, 200, "{}", r.text());
    let lookup = admin(
        &gw,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=whatsapp:14155550000",
        b"",
    );
    assert_eq!(lookup.status, 404, "{}", lookup.text());
    let metrics = gw.get("/metrics").text();
    assert!(
        metrics.contains("gateway_replays_refused_total{channel=\"whatsapp\"} 1"),
        "{metrics}"
    );
    // The same message, dated now, is stored.
    let r = whatsapp_message(&gw, "14155550000", "wamid.FRESH", "hello");
    assert_eq!(r.status, 200);
    let lookup = admin(
        &gw,
        ADMIN,
        "GET",
        "/admin/v1/customers?identifier=whatsapp:14155550000",
        b"",
    );
    assert_eq!(lookup.status, 200, "{}", lookup.text());
}

#[test]
fn continue_on_the_phone_gives_a_one_time_deep_link_and_its_qr_code() {
    let gw = Gateway::start(&scratch("identity-continue"), &config(EMBEDDED));
    let claims = serde_json::json!({"sub": "user-cont", "exp": now() + 600, "name": "Sarah Kim"});
    let token = widget_jwt(WIDGET_SECRET, &claims);
    let ask = |channel: &str| {
        with_bearer(
            &gw,
            &token,
            "POST",
            "/widget/v1/continue",
            serde_json::json!({"channel": channel})
                .to_string()
                .as_bytes(),
        )
    };
    // Before a first message there is no conversation to continue.
    let r = ask("telegram");
    assert_eq!((r.status, r.code().as_str()), (409, "no_conversation"));
    assert_eq!(post_widget(&gw, &token, "hi").status, 202);
    let r = ask("telegram");
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    let link = body["link"].as_str().unwrap();
    assert!(link.starts_with("https://t.me/shop_bot?start="), "{link}");
    let svg = body["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    // The token links Telegram to the widget user's customer.
    let start = link.split("start=").nth(1).unwrap();
    assert_eq!(
        telegram_message(&gw, 9001, 555000111, &format!("/start {start}")).status,
        200
    );
    let find = |identifier: &str| found_id(&gw, identifier);
    assert_eq!(find("telegram:555000111"), find("widget:user-cont"));
    // A channel without a deep link, or not configured, is named.
    let r = ask("myspace");
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_body"));
    assert!(r.text().contains("myspace"), "{}", r.text());
}

/// The route table of docs/security.md: (method, path pattern, who of
/// admin/agent/analyst/auditor may call it).
fn roles_table() -> Vec<(String, String, [bool; 4])> {
    let doc = std::fs::read_to_string(repo_path("docs/security.md")).unwrap();
    let section = doc
        .split("## Who may call what")
        .nth(1)
        .expect("docs/security.md has the roles table");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let route = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let (method, path) = route.split_once(' ')?;
            let yes = |i: usize| match cells[i] {
                "yes" => true,
                "no" => false,
                other => panic!("`{other}` in the roles table of docs/security.md"),
            };
            Some((
                method.to_string(),
                path.to_string(),
                [yes(2), yes(3), yes(4), yes(5)],
            ))
        })
        .collect()
}

#[test]
fn every_admin_and_business_route_answers_each_role_as_docs_security_md_says() {
    let gw = Gateway::start(&scratch("identity-roles"), &config(EMBEDDED));
    let table = roles_table();
    assert!(table.len() >= 16, "{table:?}");
    for (method, pattern, allowed) in &table {
        let path = pattern.replace("{id}", "c_00000000000000000000000000000000");
        let no_token = gw.request(method, &path, &[], b"{}");
        assert_eq!(no_token.status, 401, "{method} {path} without a token");
        for (token, may) in [ADMIN, AGENT, ANALYST, AUDITOR].iter().zip(allowed) {
            let r = if path == "/admin/v1/changes" {
                // The change feed streams without end: its head answers.
                let bearer = format!("Bearer {token}");
                request_head(gw.addr, method, &path, &[("authorization", &bearer)])
            } else {
                admin(&gw, token, method, &path, b"{}")
            };
            if *may {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{method} {path} as {token}: {} {}",
                    r.status,
                    r.text()
                );
            } else {
                assert_eq!(r.status, 403, "{method} {path} as {token}: {}", r.text());
            }
        }
    }
}

/// One Redis command over a plain connection.
#[test]
fn the_audit_log_records_reads_changes_and_refusals_and_verify_names_a_tampered_entry() {
    let dir = scratch("identity-audit");
    let redis = RedisServer::start(&dir, 0, None);
    let store = format!(
        "kind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\nkey_prefix = \"cc:\"",
        redis.port
    );
    let config_text = config(&store);
    let gw = Gateway::start(&dir, &config_text);
    assert_eq!(
        widget_message(&gw, "user-audit", "audit@example.com", "+15550001234", "hi").status,
        202
    );
    let id = found_id(&gw, "widget:user-audit")
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        admin(&gw, AGENT, "GET", &format!("/admin/v1/customers/{id}"), b"").status,
        200
    );
    let patch = admin(
        &gw,
        ADMIN,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"tier":"gold"}}"#,
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    // Refused: the analyst may not read a profile; no token at all.
    assert_eq!(
        admin(
            &gw,
            ANALYST,
            "GET",
            &format!("/admin/v1/customers/{id}"),
            b""
        )
        .status,
        403
    );
    assert_eq!(gw.get(&format!("/admin/v1/customers/{id}")).status, 401);
    // The agent may not read the log; the auditor may.
    assert_eq!(admin(&gw, AGENT, "GET", "/admin/v1/audit", b"").status, 403);
    let log = admin(
        &gw,
        AUDITOR,
        "GET",
        &format!("/admin/v1/audit?customer_id={id}"),
        b"",
    );
    assert_eq!(log.status, 200, "{}", log.text());
    let entries = log.json()["entries"].as_array().unwrap().clone();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |actor: &str, action: &str, outcome: &str| {
        assert!(
            seen.contains(&(actor.into(), action.into(), outcome.into())),
            "no ({actor}, {action}, {outcome}) in {seen:?}"
        );
    };
    expect("ops", "customer.lookup", "ok");
    expect("desk", "customer.read", "ok");
    expect("ops", "customer.update", "ok");
    expect("bi", "customer.read", "refused");
    expect("-", "customer.read", "unauthenticated");
    // No personal data in the log: not the email, phone, sub or name.
    let raw = log.text();
    for personal in ["audit@example.com", "15550001234", "user-audit", "Sarah"] {
        assert!(!raw.contains(personal), "{personal} in {raw}");
    }
    // The change was recorded once, by the unit that made it.
    let updates = admin(
        &gw,
        AUDITOR,
        "GET",
        "/admin/v1/audit?action=customer.update",
        b"",
    )
    .json();
    assert_eq!(updates["entries"].as_array().unwrap().len(), 1, "{updates}");
    // Filters: by actor and action.
    let refused = admin(
        &gw,
        AUDITOR,
        "GET",
        "/admin/v1/audit?actor=bi&action=customer.read",
        b"",
    )
    .json();
    assert_eq!(refused["entries"].as_array().unwrap().len(), 1, "{refused}");
    assert_eq!(
        admin(&gw, AUDITOR, "GET", "/admin/v1/audit?from=yesterday", b"").status,
        400
    );
    drop(gw);

    // The chain verifies; an edited entry is named.
    let verify = |config: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["audit", "verify", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let config_path = dir.join("gateway.toml");
    let ok = verify(&config_path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("audit log intact:"));
    let redis::Value::BulkString(bytes) = redis_cmd(redis.port, &["GET", "cc:audit:2"]) else {
        panic!("entry 2 is stored")
    };
    let mut entry: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    entry["outcome"] = "refused".into();
    redis_cmd(redis.port, &["SET", "cc:audit:2", &entry.to_string()]);
    let broken = verify(&config_path);
    assert!(!broken.status.success());
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(
        err.contains("audit entry 2 is not as it was written: edited"),
        "{err}"
    );
}

#[test]
fn an_export_holds_everything_in_json_and_csv_and_is_audited() {
    let gw = Gateway::start(&scratch("identity-export"), &config(EMBEDDED));
    let id = widget_then_whatsapp(
        &gw,
        (
            "user-exp",
            "exp@example.com",
            "+15550009876",
            "Where is my order?",
        ),
        ("15550009876", "wamid.EXP1", "Any news?"),
    );
    let patch = admin(
        &gw,
        ADMIN,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"note":"=HYPERLINK(\"http://evil.example\",\"click\")","consent.marketing":"granted"}}"#,
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    // A second value: the first goes to the attribute history.
    let patch = admin(
        &gw,
        ADMIN,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"tier":"silver"}}"#,
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    let patch = admin(
        &gw,
        ADMIN,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"tier":"gold"}}"#,
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    let path = format!("/admin/v1/customers/{id}/export");
    assert_eq!(admin(&gw, AGENT, "GET", &path, b"").status, 403);
    let json = admin(&gw, ADMIN, "GET", &path, b"");
    assert_eq!(json.status, 200, "{}", json.text());
    let history = json.json()["attribute_history"].clone();
    let tiers: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["name"] == "tier")
        .map(|h| (h["value"].as_str().unwrap(), h["source"].as_str().unwrap()))
        .collect();
    assert_eq!(tiers, [("silver", "admin")], "{history}");
    assert!(json.json()["queued"]["outbound"].is_array());
    assert!(
        json.header("content-disposition")
            .unwrap()
            .contains(&format!("customer-{id}.json"))
    );
    let doc = json.json();
    assert_eq!(doc["format"], "chatcrafter-export/1");
    assert_eq!(doc["customer_id"], id.as_str());
    let texts: Vec<&str> = doc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"Where is my order?") && texts.contains(&"Any news?"),
        "{texts:?}"
    );
    let channels: Vec<&str> = doc["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert!(
        channels.contains(&"widget") && channels.contains(&"whatsapp"),
        "{channels:?}"
    );
    assert_eq!(doc["consent"]["marketing"]["granted"], true);
    assert!(doc["identifiers"].to_string().contains("exp@example.com"));
    // CSV: long format, formulas neutralized.
    let csv = admin(&gw, ADMIN, "GET", &format!("{path}?format=csv"), b"");
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    assert!(text.starts_with("section,item,field,value\r\n"), "{text}");
    assert!(
        text.contains("attribute,note,value,\"'=HYPERLINK("),
        "{text}"
    );
    assert!(!text.contains(",=HYPERLINK"), "{text}");
    assert!(text.contains("Where is my order?"), "{text}");
    assert_eq!(
        admin(&gw, ADMIN, "GET", &format!("{path}?format=xml"), b"").status,
        400
    );
    // Audited, without the data.
    let log = admin(
        &gw,
        AUDITOR,
        "GET",
        &format!("/admin/v1/audit?action=customer.export&customer_id={id}"),
        b"",
    )
    .json();
    let outcomes: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["refused", "ok", "ok", "error:invalid_query"],
        "{log}"
    );
}

#[test]
fn a_widget_user_exports_their_own_data_and_asks_to_be_erased() {
    let gw = Gateway::start(&scratch("identity-self-service"), &config(EMBEDDED));
    let claims = serde_json::json!({"sub": "user-self", "exp": now() + 600});
    let token = widget_jwt(WIDGET_SECRET, &claims);
    let me = |method: &str, path: &str| with_bearer(&gw, &token, method, path, b"");
    assert_eq!(me("GET", "/widget/v1/me/export").status, 404);
    assert_eq!(post_widget(&gw, &token, "my question").status, 202);
    let export = me("GET", "/widget/v1/me/export");
    assert_eq!(export.status, 200, "{}", export.text());
    let doc = export.json();
    assert_eq!(doc["format"], "chatcrafter-export/1");
    assert!(doc["timeline"].to_string().contains("my question"));
    // Someone else's token sees only their own (nothing).
    let other = widget_jwt(
        WIDGET_SECRET,
        &serde_json::json!({"sub": "user-other", "exp": now() + 600}),
    );
    assert_eq!(
        with_bearer(&gw, &other, "GET", "/widget/v1/me/export", b"").status,
        404
    );
    assert_eq!(gw.get("/widget/v1/me/export").status, 401);
    // The erasure request waits for an admin, once.
    let asked = me("POST", "/widget/v1/me/erasure-request");
    assert_eq!(asked.status, 202, "{}", asked.text());
    let again = me("POST", "/widget/v1/me/erasure-request");
    assert_eq!(again.json()["request_id"], asked.json()["request_id"]);
    let queue = admin(&gw, ADMIN, "GET", "/admin/v1/conflicts", b"").json();
    let requests: Vec<&serde_json::Value> = queue["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kind"] == "erasure_request")
        .collect();
    assert_eq!(requests.len(), 1, "{queue}");
    assert_eq!(requests[0]["id"], asked.json()["request_id"]);
    // Both in the audit log, as the widget, without the user's id.
    let log = admin(&gw, AUDITOR, "GET", "/admin/v1/audit?actor=widget", b"");
    let entries = log.json()["entries"].as_array().unwrap().clone();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "self.export",
            "self.erasure_request",
            "self.erasure_request"
        ]
    );
    assert!(!log.text().contains("user-self"), "{}", log.text());
}

#[test]
fn consent_is_kept_with_its_history_and_source_and_shown_in_the_export() {
    let gw = Gateway::start(&scratch("identity-consent"), &config(EMBEDDED));
    assert_eq!(
        widget_message(&gw, "user-c", "consent@example.com", "+15550004321", "hi").status,
        202
    );
    let consent = |granted: bool| {
        admin(
            &gw,
            AGENT,
            "POST",
            "/v1/consent",
            serde_json::json!({"identifier": {"kind": "email", "value": "consent@example.com"},
                               "purpose": "marketing", "granted": granted})
            .to_string()
            .as_bytes(),
        )
    };
    let r = consent(true);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["consent"]["marketing"]["granted"], true);
    assert_eq!(r.json()["consent"]["marketing"]["source"], "api");
    assert_eq!(
        consent(false).json()["consent"]["marketing"]["granted"],
        false
    );
    let id = r.json()["customer_id"].as_str().unwrap().to_string();
    let patch = admin(
        &gw,
        ADMIN,
        "PATCH",
        &format!("/admin/v1/customers/{id}"),
        br#"{"attributes":{"consent.analytics":"denied"}}"#,
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    let bad = admin(
        &gw,
        AGENT,
        "POST",
        "/v1/consent",
        br#"{"identifier":{"kind":"email","value":"consent@example.com"},"purpose":"Mark eting","granted":true}"#,
    );
    assert_eq!((bad.status, bad.code().as_str()), (422, "invalid_body"));
    assert!(bad.text().contains("purpose"), "{}", bad.text());
    let doc = admin(
        &gw,
        ADMIN,
        "GET",
        &format!("/admin/v1/customers/{id}/export"),
        b"",
    )
    .json();
    let history: Vec<(String, bool, String)> = doc["consent_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["purpose"].as_str().unwrap().to_string(),
                h["granted"].as_bool().unwrap(),
                h["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("marketing".into(), true, "api".into()),
            ("marketing".into(), false, "api".into()),
            ("analytics".into(), false, "admin".into()),
        ]
    );
    // The change is audited with its customer, found from the body.
    let log = admin(
        &gw,
        AUDITOR,
        "GET",
        &format!("/admin/v1/audit?action=consent.update&customer_id={id}"),
        b"",
    )
    .json();
    assert_eq!(log["entries"].as_array().unwrap().len(), 2, "{log}");
}

#[test]
fn a_rotated_data_key_is_retired_by_gateway_rekey_while_the_gateway_runs() {
    let dir = scratch("identity-rekey");
    for d in ["one", "two", "three"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let redis = RedisServer::start(&dir, 0, None);
    let store = format!(
        "kind = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\nkey_prefix = \"cc:\"",
        redis.port
    );
    const K1: &str = "data_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"";
    const K2: &str = "data_key = \"BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\"";
    let with_keys = |security: &str| config(&store).replace(K1, security);
    let sealed_with_key_1 = || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port)).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("cc:*").query(&mut conn).unwrap();
        keys.into_iter()
            .filter(|k| {
                let v: Vec<u8> = redis::cmd("GET").arg(k).query(&mut conn).unwrap();
                v.len() > 30 && v[0] == 1 && v[1] == 1
            })
            .count()
    };

    // Sealed under key 1.
    let gw = Gateway::start(&dir.join("one"), &with_keys(K1));
    let id = widget_then_whatsapp(
        &gw,
        ("user-rekey", "rekey@example.com", "+15550001111", "first"),
        ("15550002222", "wamid.RK1", "hola"),
    );
    drop(gw);
    // At least the two customers' own keys, wrapped by key 1 (queued
    // jobs and indexes may add more, depending on timing).
    assert!(sealed_with_key_1() >= 2);

    // Key 2 added, key 1 retired: everything reads, new data uses key 2,
    // and `gateway rekey` runs beside the gateway.
    let both = format!(
        "{K2}\ndata_key_id = 2\nretired_data_keys = {{ \"1\" = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\" }}"
    );
    let gw = Gateway::start(&dir.join("two"), &with_keys(&both));
    let r = admin(&gw, ADMIN, "GET", &format!("/admin/v1/customers/{id}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("rekey@example.com"));
    assert_eq!(
        widget_message(
            &gw,
            "user-rekey",
            "rekey@example.com",
            "+15550001111",
            "second"
        )
        .status,
        202
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["rekey", "--batch", "3", "--config"])
        .arg(dir.join("two").join("gateway.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("retired key 1: nothing uses it"),
        "{stdout}"
    );
    assert_eq!(sealed_with_key_1(), 0);
    drop(gw);

    // Key 1 gone from the configuration: everything still reads.
    let gw = Gateway::start(
        &dir.join("three"),
        &with_keys(&format!("{K2}\ndata_key_id = 2")),
    );
    let r = admin(&gw, ADMIN, "GET", &format!("/admin/v1/customers/{id}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("rekey@example.com"));
    let t = admin(
        &gw,
        ADMIN,
        "GET",
        &format!("/admin/v1/customers/{id}/timeline"),
        b"",
    );
    assert_eq!(t.status, 200, "{}", t.text());
    assert!(
        t.text().contains("first") && t.text().contains("second"),
        "{}",
        t.text()
    );
    let wa = found_id(&gw, "whatsapp:15550002222");
    assert!(wa.is_string(), "{wa}");
    let log = admin(&gw, AUDITOR, "GET", "/admin/v1/audit?action=rekey", b"").json();
    assert_eq!(log["entries"].as_array().unwrap().len(), 1, "{log}");
}

/// libfaketime, to run a gateway with its clock moved ahead.
fn libfaketime() -> std::path::PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join("libfaketime.so.1"))
    .find(|p| p.exists())
    .expect("libfaketime is installed (apt-get install faketime)")
}

#[test]
fn retention_runs_in_the_gateway_by_its_clock_trimming_archiving_and_restoring() {
    let dir = scratch("identity-retention");
    let config = format!(
        "{}\n[privacy]\nhistory_days = 30\narchive_after_days = 60\ndelete_archived_after_days = 0\n",
        config(EMBEDDED)
    );
    let gw = Gateway::start(&dir, &config);
    assert_eq!(
        whatsapp_message(&gw, "15550003333", "wamid.RT1", "old news").status,
        200
    );
    let id = found_id(&gw, "whatsapp:15550003333")
        .as_str()
        .unwrap()
        .to_string();
    // The agent has answered before the clock moves (else its late answer
    // would be a new entry).
    let entries = |gw: &Gateway| {
        admin(
            gw,
            ADMIN,
            "GET",
            &format!("/admin/v1/customers/{id}/timeline"),
            b"",
        )
        .json()["entries"]
            .as_array()
            .map(Vec::len)
    };
    assert!(eventually(Duration::from_secs(10), || entries(&gw) == Some(2)));
    drop(gw);
    let lib = libfaketime();
    let ahead = |days: &str| {
        Gateway::start_with_env(
            &dir,
            &config,
            &[("LD_PRELOAD", lib.to_str().unwrap()), ("FAKETIME", days)],
        )
    };
    let timeline_len = |gw: &Gateway| {
        admin(
            gw,
            ADMIN,
            "GET",
            &format!("/admin/v1/customers/{id}/timeline"),
            b"",
        )
        .json()["entries"]
            .as_array()
            .map(Vec::len)
    };

    // 40 days on: the history is past 30 days and goes; the customer stays.
    let gw = ahead("+40d");
    assert!(
        eventually(Duration::from_secs(10), || timeline_len(&gw) == Some(0)),
        "{:?}",
        timeline_len(&gw)
    );
    assert_eq!(found_id(&gw, "whatsapp:15550003333"), id.as_str());
    let metrics = gw.get("/metrics").text();
    assert!(
        metrics.contains("gateway_retention_removed_total{kind=\"timeline_entries\"}"),
        "{metrics}"
    );
    drop(gw);

    // 70 days on: inactive past 60 days, archived — out of the lookups,
    // still there by id — until an admin restores it.
    let gw = ahead("+70d");
    assert!(eventually(Duration::from_secs(10), || found_id(
        &gw,
        "whatsapp:15550003333"
    )
    .is_null()));
    let c = admin(&gw, ADMIN, "GET", &format!("/admin/v1/customers/{id}"), b"").json();
    assert!(c["archived_at"].is_string(), "{c}");
    let r = admin(
        &gw,
        ADMIN,
        "POST",
        &format!("/admin/v1/customers/{id}/restore"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["not_relinked"], serde_json::json!([]));
    assert_eq!(found_id(&gw, "whatsapp:15550003333"), id.as_str());
    let again = admin(
        &gw,
        ADMIN,
        "POST",
        &format!("/admin/v1/customers/{id}/restore"),
        b"",
    );
    assert_eq!(again.status / 100, 4, "{}", again.text());
}
