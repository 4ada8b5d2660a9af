//! The gateway's HTTP surface, end to end: the real binary, the real
//! plugins, real signatures and their bad twins over real sockets.

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chatcrafter_gateway::plugin::bundled::test_programs;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use support::*;

const APP_SECRET: &str = "meta-app-secret-for-tests";
const VERIFY_TOKEN: &str = "meatyhamhock";
const TG_SECRET: &str = "tg_secret-token_123";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const WIDGET_SECRET: &str = "widget-secret-widget-secret-0123456789";

struct Setup {
    gw: Gateway,
    discord: Ed25519KeyPair,
}

fn config(discord_public: &str, extra: &str) -> String {
    format!(
        r#"version = 1

[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
header_timeout_ms = 500
body_timeout_ms = 2000
shutdown_grace_ms = 5000

[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="

[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "http://127.0.0.1:9/whatsapp"
[channels.whatsapp.secrets]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
access_token = "wa-access"

[channels.telegram]
plugin = "builtin:telegram"
[channels.telegram.secrets]
secret_token = "{TG_SECRET}"
bot_token = "7012345678:AAE"
[channels.telegram.settings]
bot_id = "7012345678"

[channels.discord]
plugin = "builtin:discord"
[channels.discord.secrets]
public_key = "{discord_public}"

[channels.acme]
plugin = "{slack}"
[channels.acme.secrets]
signing_secret = "{SLACK_SECRET}"

[channels.broken]
plugin = "{trap}"
allow_unverified = true

[channels.impostor]
plugin = "{impostor}"
allow_unverified = true

[channels.sleepy]
plugin = "{sleeper}"
allow_unverified = true

[widget]
algorithms = ["HS256", "RS256"]
secret = "{WIDGET_SECRET}"
public_key_pem = """
{rsa}"""
issuer = "https://shop.example"
audience = "chatcrafter-widget"
allowed_origins = ["https://shop.example"]
{extra}
"#,
        slack = test_programs::SLACK_STYLE,
        trap = test_programs::TRAP,
        impostor = test_programs::IMPOSTOR,
        sleeper = test_programs::SLEEPER,
        rsa = std::fs::read_to_string(repo_path("tests/fixtures/keys/rsa_public.pem")).unwrap(),
    )
}

fn setup(name: &str) -> Setup {
    setup_with(name, |config| config)
}

/// [`setup`] with the configuration edited by `edit` first.
fn setup_with(name: &str, edit: impl FnOnce(String) -> String) -> Setup {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let discord = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let dir = scratch(name);
    let gw = Gateway::start(&dir, &edit(config(&hex(discord.public_key().as_ref()), "")));
    Setup { gw, discord }
}

fn wa_sig(body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(APP_SECRET.as_bytes(), body))
}

// --- WhatsApp -------------------------------------------------------------

#[test]
fn whatsapp_good_wrong_tampered_missing_and_sha1_only() {
    let s = setup("wa");
    let body = fixture("whatsapp_multi.json");
    let ok = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &wa_sig(&body))],
        &body,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());

    let wrong = format!("sha256={}", hmac_hex(b"not-the-secret", &body));
    let r = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &wrong)],
        &body,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));

    let mut tampered = body.clone();
    let i = tampered.windows(5).position(|w| w == b"chair").unwrap();
    tampered[i] = b'C';
    let r = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &wa_sig(&body))],
        &tampered,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));

    let r = s.gw.post("/webhooks/whatsapp", &[], &body);
    assert_eq!((r.status, r.code().as_str()), (401, "missing_signature"));
    assert_eq!(
        r.json()["error"]["message"],
        "missing `x-hub-signature-256` header"
    );

    let sha1 = ring::hmac::sign(
        &ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            APP_SECRET.as_bytes(),
        ),
        &body,
    );
    let r = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature", &format!("sha1={}", hex(sha1.as_ref())))],
        &body,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "missing_signature"));

    let metrics = s.gw.get("/metrics").text();
    assert!(
        metrics.contains(
            "gateway_verification_failures_total{channel=\"whatsapp\",reason=\"bad_signature\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_inbound_events_total{channel=\"whatsapp\",kind=\"message\"} 5"),
        "{metrics}"
    );
}

#[test]
fn whatsapp_body_with_unicode_escapes_verifies_as_received() {
    let s = setup("wa-escapes");
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"J\u00f6rg \u00c5str\u00f6m"},"wa_id":"4915112345678"}],"messages":[{"from":"4915112345678","id":"wamid.ESC","timestamp":"1739321024","type":"text","text":{"body":"\u00e4\u00f6\u00e5 \ud83d\ude00 https:\/\/shop.example\/chair"}}]}}]}]}"#;
    let r = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &wa_sig(body))],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The same content re-serialized as UTF-8 no longer matches the signature.
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(body).unwrap()).unwrap();
    let r = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &wa_sig(body))],
        &reserialized,
    );
    assert_eq!(r.status, 401);
}

#[test]
fn whatsapp_handshake_echoes_the_challenge_only_for_the_right_token() {
    let s = setup("wa-handshake");
    let r = s.gw.get(&format!("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "1158201444");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = s.gw.get(
        "/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong",
    );
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("1158201444"));
}

#[test]
fn a_verified_body_the_plugin_cannot_parse_is_400_malformed_payload() {
    let s = setup("wa-malformed");
    let body = b"{\"object\": \"whatsapp_business_account\", \"entry\": [";
    let r = s.gw.post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &wa_sig(body))],
        body,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "malformed_payload"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plugin whatsapp@0.1.0"),
        "{}",
        r.text()
    );
}

#[test]
fn a_time_in_milliseconds_is_refused_as_the_plugins_fault_and_nothing_is_stored() {
    let s = setup("wa-millis");
    let mut value = whatsapp_text("15550009999", "wamid.millis", "hello");
    value["messages"][0]["timestamp"] = serde_json::json!((now() * 1000).to_string());
    let r = post_whatsapp(&s.gw, APP_SECRET, value);
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "plugin_failed"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("it looks like milliseconds"),
        "{}",
        r.text()
    );
    // The same message with its time in seconds is stored as new: nothing
    // of the refused one was (its id is no redelivery).
    let r = post_whatsapp(
        &s.gw,
        APP_SECRET,
        whatsapp_text("15550009999", "wamid.millis", "hello"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = s.gw.get("/metrics").text();
    assert!(
        metrics.contains("gateway_inbound_events_total{channel=\"whatsapp\",kind=\"message\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("gateway_dedup_hits_total{channel=\"whatsapp\"}"),
        "{metrics}"
    );
}

// --- Telegram -------------------------------------------------------------

#[test]
fn telegram_good_wrong_and_missing_token() {
    let s = setup("tg");
    let body = fixture("telegram_start.json");
    let r = s.gw.post(
        "/webhooks/telegram",
        &[("x-telegram-bot-api-secret-token", TG_SECRET)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.gw.post(
        "/webhooks/telegram",
        &[("x-telegram-bot-api-secret-token", "tg_secret-token_12")],
        &body,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));
    let r = s.gw.post("/webhooks/telegram", &[], &body);
    assert_eq!((r.status, r.code().as_str()), (401, "missing_signature"));
}

// --- Discord --------------------------------------------------------------

fn discord_headers(pair: &Ed25519KeyPair, ts: &str, body: &[u8]) -> (String, String) {
    let msg: Vec<u8> = ts.as_bytes().iter().chain(body).copied().collect();
    (hex(pair.sign(&msg).as_ref()), ts.to_string())
}

#[test]
fn discord_ping_command_and_every_bad_twin() {
    let s = setup("discord");
    let ping = fixture("discord_ping.json");
    let ts = now().to_string();
    let (sig, ts) = discord_headers(&s.discord, &ts, &ping);
    let h = [
        ("x-signature-ed25519", sig.as_str()),
        ("x-signature-timestamp", ts.as_str()),
    ];
    let r = s.gw.post("/webhooks/discord", &h, &ping);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"type": 1}));

    let cmd = fixture("discord_guild_command.json");
    let (csig, _) = discord_headers(&s.discord, &ts, &cmd);
    let r = s.gw.post(
        "/webhooks/discord",
        &[
            ("x-signature-ed25519", &csig),
            ("x-signature-timestamp", &ts),
        ],
        &cmd,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"type": 5}));

    // Discord's probe: a PING with a bad signature must get 401.
    let mut bad = sig.clone().into_bytes();
    bad[10] = if bad[10] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    let r = s.gw.post(
        "/webhooks/discord",
        &[
            ("x-signature-ed25519", &bad),
            ("x-signature-timestamp", &ts),
        ],
        &ping,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));
    // Tampered body.
    let r = s.gw.post("/webhooks/discord", &h, &cmd);
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));
    // Timestamp header swapped for another one.
    let other = (now() - 5).to_string();
    let r = s.gw.post(
        "/webhooks/discord",
        &[
            ("x-signature-ed25519", &sig),
            ("x-signature-timestamp", &other),
        ],
        &ping,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));
    // Correctly signed, but stale.
    let old = (now() - 600).to_string();
    let (osig, _) = discord_headers(&s.discord, &old, &ping);
    let r = s.gw.post(
        "/webhooks/discord",
        &[
            ("x-signature-ed25519", &osig),
            ("x-signature-timestamp", &old),
        ],
        &ping,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"));
}

// --- A channel the gateway has never heard of ----------------------------

#[test]
fn a_slack_style_plugin_is_verified_from_its_manifest_alone() {
    let s = setup("slack");
    let body = br#"{"id":"Ev1","user":"U123","text":"hello"}"#;
    let ts = now().to_string();
    let signed: Vec<u8> = format!("v0:{ts}:")
        .into_bytes()
        .into_iter()
        .chain(body.iter().copied())
        .collect();
    let sig = format!("v0={}", hmac_hex(SLACK_SECRET.as_bytes(), &signed));
    let r = s.gw.post(
        "/webhooks/acme",
        &[
            ("x-slack-signature", &sig),
            ("x-slack-request-timestamp", &ts),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let old = (now() - 301).to_string();
    let signed: Vec<u8> = format!("v0:{old}:")
        .into_bytes()
        .into_iter()
        .chain(body.iter().copied())
        .collect();
    let sig = format!("v0={}", hmac_hex(SLACK_SECRET.as_bytes(), &signed));
    let r = s.gw.post(
        "/webhooks/acme",
        &[
            ("x-slack-signature", &sig),
            ("x-slack-request-timestamp", &old),
        ],
        body,
    );
    assert_eq!((r.status, r.code().as_str()), (401, "stale_timestamp"));
}

#[test]
fn a_trapping_plugin_answers_502_and_the_gateway_keeps_serving() {
    let s = setup("trap");
    let r = s.gw.post("/webhooks/broken", &[], b"{}");
    assert_eq!((r.status, r.code().as_str()), (502, "plugin_failed"));
    assert_eq!(
        r.json()["error"]["message"],
        "plugin trap@0.0.1: `parse-inbound` trapped: wasm `unreachable` instruction executed"
    );
    assert_eq!(s.gw.get("/healthz").status, 200);
    let body = fixture("whatsapp_text.json");
    assert_eq!(
        s.gw.post(
            "/webhooks/whatsapp",
            &[("x-hub-signature-256", &wa_sig(&body))],
            &body
        )
        .status,
        200
    );
    assert!(
        s.gw.get("/metrics")
            .text()
            .contains("gateway_plugin_failures_total{plugin=\"trap\",kind=\"trap\"} 1")
    );
}

// --- Widget JWT -----------------------------------------------------------

fn jwt(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    claims: serde_json::Value,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).unwrap()
}

fn claims(exp_offset: i64) -> serde_json::Value {
    serde_json::json!({"sub": "user-42", "exp": (now() as i64 + exp_offset), "iss": "https://shop.example",
                       "aud": "chatcrafter-widget", "email": "sarah@example.com", "name": "Sarah"})
}

fn widget_post(gw: &Gateway, token: Option<&str>, body: &[u8]) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a));
    }
    gw.post("/widget/v1/messages", &h, body)
}

#[test]
fn a_widget_retry_key_names_one_user_and_one_client_id_unambiguously() {
    let s = setup("widget-dedup");
    let hs = jsonwebtoken::EncodingKey::from_secret(WIDGET_SECRET.as_bytes());
    let token = |sub: &str| {
        let mut c = claims(600);
        c["sub"] = sub.into();
        jwt(jsonwebtoken::Algorithm::HS256, &hs, c)
    };
    // Before, both were `acme:1:x`: the second was dropped as a retry.
    for (sub, client_id) in [("acme", "1:x"), ("acme:1", "x")] {
        let body = serde_json::json!({"text": format!("from {sub}"), "client_id": client_id});
        let r = widget_post(&s.gw, Some(&token(sub)), body.to_string().as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
        let h = s.gw.request(
            "GET",
            "/widget/v1/history",
            &[("authorization", &format!("Bearer {}", token(sub)))],
            b"",
        );
        // (The agent's reply may be there too.)
        let inbound: Vec<serde_json::Value> = h.json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["direction"] == "inbound")
            .cloned()
            .collect();
        assert_eq!(inbound.len(), 1, "{sub}: {}", h.text());
        assert_eq!(inbound[0]["text"], format!("from {sub}"));
    }
}

#[test]
fn widget_tokens_good_and_every_bad_twin() {
    let s = setup("widget");
    let hs = jsonwebtoken::EncodingKey::from_secret(WIDGET_SECRET.as_bytes());
    let body =
        br#"{"type":"message","text":"Do you have the office chair in black?","client_id":"c-1"}"#;
    let r = widget_post(
        &s.gw,
        Some(&jwt(jsonwebtoken::Algorithm::HS256, &hs, claims(600))),
        body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["id"], "7:user-42:c-1");
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(&fixture("keys/rsa_private.pem")).unwrap();
    let r = widget_post(
        &s.gw,
        Some(&jwt(jsonwebtoken::Algorithm::RS256, &rsa, claims(600))),
        body,
    );
    assert_eq!(r.status, 202, "{}", r.text());

    let reason = |r: Response| {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.code(), "invalid_token");
        r.json()["error"]["reason"].as_str().unwrap().to_string()
    };
    assert_eq!(reason(widget_post(&s.gw, None, body)), "missing");
    assert_eq!(
        reason(widget_post(&s.gw, Some("garbage"), body)),
        "malformed"
    );
    // Well signed, but each refused for one claim.
    let claim = |key: &str, value: serde_json::Value| {
        let mut c = claims(600);
        c[key] = value;
        c
    };
    for (c, why) in [
        (claims(-120), "expired"),
        (claim("aud", "someone-else".into()), "audience"),
        (claim("iss", "https://evil.example".into()), "issuer"),
        (claim("nbf", (now() + 3600).into()), "not_yet_valid"),
        // No token lives forever (finding 10): over 24 h, or issued later
        // than now.
        (claim("exp", u64::MAX.into()), "lifetime"),
        (claims(2 * 86_400), "lifetime"),
        (claim("iat", (now() + 3600).into()), "issued_in_future"),
    ] {
        let t = jwt(jsonwebtoken::Algorithm::HS256, &hs, c);
        assert_eq!(reason(widget_post(&s.gw, Some(&t), body)), why);
    }
    // HS256 signed with the RSA public key: the public key never keys an HMAC.
    let pubkey = jsonwebtoken::EncodingKey::from_secret(&fixture("keys/rsa_public.pem"));
    assert_eq!(
        reason(widget_post(
            &s.gw,
            Some(&jwt(jsonwebtoken::Algorithm::HS256, &pubkey, claims(600))),
            body
        )),
        "bad_signature"
    );
    // alg: none.
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none"})),
        b64(claims(600))
    );
    assert_eq!(reason(widget_post(&s.gw, Some(&none), body)), "algorithm");
    // ES256 is not on this gateway's allow-list.
    let ec = jsonwebtoken::EncodingKey::from_ec_pem(&fixture("keys/ec_private.pem")).unwrap();
    assert_eq!(
        reason(widget_post(
            &s.gw,
            Some(&jwt(jsonwebtoken::Algorithm::ES256, &ec, claims(600))),
            body
        )),
        "algorithm"
    );
}

#[test]
fn widget_cors_allows_only_configured_origins() {
    let s = setup("cors");
    let r = s.gw.request(
        "OPTIONS",
        "/widget/v1/messages",
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let r = s.gw.request(
        "OPTIONS",
        "/widget/v1/messages",
        &[("origin", "https://evil.example")],
        b"",
    );
    assert_eq!((r.status, r.code().as_str()), (403, "origin_not_allowed"));
    // History answers its preflight too, and its answer carries the origin.
    let r = s.gw.request(
        "OPTIONS",
        "/widget/v1/history",
        &[("origin", "https://shop.example")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, OPTIONS")
    );
    let hs = jsonwebtoken::EncodingKey::from_secret(WIDGET_SECRET.as_bytes());
    let token = jwt(jsonwebtoken::Algorithm::HS256, &hs, claims(600));
    let r = s.gw.request(
        "GET",
        "/widget/v1/history",
        &[
            ("origin", "https://shop.example"),
            ("authorization", &format!("Bearer {token}")),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(r.json()["entries"], serde_json::json!([]));
}

// --- Limits, routing, shutdown -------------------------------------------

#[test]
fn a_body_over_the_limit_is_refused_with_413_before_it_is_read() {
    let s = setup("limit");
    // Declared too large: answered without sending the body at all.
    let mut c = TcpStream::connect(s.gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let r = read_response(&mut c);
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    assert!(start.elapsed() < Duration::from_secs(2));
    // Streamed with no declared length: cut off once past the limit.
    let mut c = TcpStream::connect(s.gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = vec![b'a'; 16 * 1024];
    for _ in 0..5 {
        let _ = c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = c.write_all(&chunk);
        let _ = c.write_all(b"\r\n");
    }
    let r = read_response(&mut c);
    assert_eq!(r.status, 413);
}

#[test]
fn a_client_that_sends_headers_slowly_is_cut_off() {
    let s = setup("slowloris");
    let mut c = TcpStream::connect(s.gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let n = c.read_to_end(&mut buf).unwrap_or(0);
    // The server closes the connection once header_timeout_ms (500) passes.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "held for {:?}",
        start.elapsed()
    );
    assert!(
        n == 0 || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(s.gw.get("/healthz").status, 200);
}

#[test]
fn unknown_routes_methods_and_channels() {
    let s = setup("routes");
    let r = s.gw.get("/nope");
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = s.gw.post("/healthz", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    assert_eq!(r.header("allow"), Some("GET"));
    let r = s.gw.post("/webhooks/myspace", &[], b"{}");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_channel"));
    let r = s.gw.request("PUT", "/webhooks/myspace", &[], b"{}");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_channel"));
    let r = s.gw.request("PUT", "/webhooks/telegram", &[], b"{}");
    assert_eq!(r.status, 405);
    let r = s.gw.get("/readyz");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["channels"],
        serde_json::json!([
            "acme", "broken", "discord", "impostor", "sleepy", "telegram", "whatsapp", "widget"
        ])
    );
}

/// Every route of INTERFACE §3, with the methods it serves.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/webhooks/telegram", &["GET", "POST"]),
    ("/widget/v1/messages", &["OPTIONS", "POST"]),
    ("/widget/v1/history", &["GET", "OPTIONS"]),
    ("/widget/v1/ws", &["GET"]),
    ("/widget/v1/widget.js", &["GET"]),
    ("/widget/v1/continue", &["OPTIONS", "POST"]),
    ("/demo", &["GET"]),
    ("/demo/token", &["POST"]),
    ("/admin/v1/customers", &["GET"]),
    ("/admin/v1/customers/merge", &["POST"]),
    ("/admin/v1/customers/c_1", &["DELETE", "GET", "PATCH"]),
    ("/admin/v1/customers/c_1/timeline", &["GET"]),
    ("/admin/v1/customers/c_1/restore", &["POST"]),
    ("/admin/v1/merges/m_1/undo", &["POST"]),
    ("/admin/v1/conflicts", &["GET"]),
    ("/admin/v1/conflicts/k_1/resolve", &["POST"]),
    ("/admin/v1/malformed", &["GET"]),
    ("/admin/v1/import", &["POST"]),
    ("/admin/v1/handoffs", &["GET"]),
    ("/admin/v1/conversations/c_1/reply", &["POST"]),
    ("/admin/v1/conversations/c_1/close", &["POST"]),
    ("/v1/events", &["POST"]),
    ("/v1/link-tokens", &["POST"]),
];

#[test]
fn every_known_path_with_a_method_it_does_not_serve_is_405_with_allow() {
    let s = setup("methods");
    for (path, served) in ROUTES {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            // GET, PATCH and DELETE /admin/v1/customers/merge are about the
            // customer whose id is `merge`.
            let customer_named_merge = *path == "/admin/v1/customers/merge"
                && matches!(method, "GET" | "PATCH" | "DELETE");
            if served.contains(&method) || customer_named_merge {
                continue;
            }
            let r = s.gw.request(method, path, &[], b"");
            assert_eq!(
                (r.status, r.code().as_str()),
                (405, "method_not_allowed"),
                "{method} {path}: {}",
                r.text()
            );
            assert_eq!(
                r.header("allow"),
                Some(served.join(", ").as_str()),
                "{method} {path}"
            );
        }
    }
}

fn impostor(gw: &Gateway, ask: serde_json::Value) -> Response {
    gw.post("/webhooks/impostor", &[], ask.to_string().as_bytes())
}

#[test]
fn a_plugin_answer_that_breaks_the_rules_is_502_and_stores_nothing() {
    let admin = "admin-token-for-tests";
    let extra = format!(
        "[[admin.tokens]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n",
        token_sha256(admin)
    );
    let gw = setup_with("guest-answers", |config| {
        config.replace(
            "shutdown_grace_ms = 5000",
            "shutdown_grace_ms = 5000\nmax_events_per_request = 3",
        ) + &extra
    })
    .gw;
    let lookup = |identifier: &str| {
        with_bearer(
            &gw,
            admin,
            "GET",
            &format!("/admin/v1/customers?identifier={identifier}"),
            b"",
        )
    };

    // Refused whole, and nothing stored: more events than
    // `max_events_per_request`. (Speaking for another channel's users is no
    // longer expressible since contract 0.2 — identities carry no channel;
    // the core's answer checks still refuse it from a 0.1 plugin.)
    let r = impostor(
        &gw,
        serde_json::json!({"channel": "impostor", "user": "7", "count": 4}),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "plugin_failed"),
        "{}",
        r.text()
    );
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.ends_with(
            "4 events; at most 3 are accepted per request (server.max_events_per_request)"
        ),
        "{message}"
    );
    assert_eq!(lookup("impostor:7").status, 404);
    let r = impostor(
        &gw,
        serde_json::json!({"channel": "impostor", "user": "7", "count": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(lookup("impostor:7").status, 200);

    // A plugin loaded from a file is not trusted to link by its "verified"
    // claims: the phone of an existing customer becomes a suggestion.
    // Sarah's phone is known from WhatsApp (a bundled plugin, trusted).
    let r = post_whatsapp(
        &gw,
        APP_SECRET,
        whatsapp_text("15551230001", "wamid.S1", "hi"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let a = lookup("phone:%2B15551230001").json()["id"].clone();
    let r = impostor(
        &gw,
        serde_json::json!({"channel": "impostor", "user": "b", "count": 1, "phone": "+15551230001"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let b = lookup("impostor:b").json()["id"].clone();
    assert_ne!(a, b);
    assert_eq!(lookup("phone:%2B15551230001").json()["id"], a);
    let conflicts = with_bearer(&gw, admin, "GET", "/admin/v1/conflicts", b"").json();
    let suggestions: Vec<&serde_json::Value> = conflicts["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "suggestion")
        .collect();
    assert_eq!(suggestions.len(), 1, "{conflicts}");
    assert_eq!(suggestions[0]["customer_id"], b);
    assert_eq!(suggestions[0]["other_customer_id"], a);
}

#[test]
fn a_plugin_that_waits_is_stopped_at_the_deadline_and_the_gateway_keeps_serving() {
    let s = setup("sleeper");
    let started = Instant::now();
    let slow = std::thread::spawn({
        let addr = s.gw.addr;
        move || request(addr, "POST", "/webhooks/sleepy", &[], b"{}")
    });
    // Served meanwhile: the waiting call holds no server thread.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(s.gw.get("/healthz").status, 200);
    let r = slow.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (502, "plugin_failed"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("exceeded its 100 ms deadline"),
        "{}",
        r.text()
    );
}

#[test]
fn sigterm_drains_an_in_flight_request_then_exits() {
    let mut s = setup("drain");
    let body = fixture("whatsapp_text.json");
    let sig = wa_sig(&body);
    let mut c = TcpStream::connect(s.gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\nx-hub-signature-256: {sig}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = s.gw.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(200));
    c.write_all(&body[10..]).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            s.gw.child.try_wait(),
            Ok(Some(_))
        )),
        "still running"
    );
    assert!(s.gw.child.wait().unwrap().success());
    // No new connections after shutdown.
    assert!(TcpStream::connect(s.gw.addr).is_err());
}

// --- Configuration --------------------------------------------------------

fn start_failure(name: &str, config: &str, env: &[(&str, &str)]) -> String {
    let dir = scratch(name);
    std::fs::write(dir.join("gateway.toml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--config"])
        .arg(dir.join("gateway.toml"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_config_key_is_named_with_its_path() {
    let err = start_failure(
        "badkey",
        "version = 1\n[security]\ndata_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nindex_key = \"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\"\n[server]\nlisten = \"127.0.0.1:0\"\nmax_body = 5\n",
        &[],
    );
    assert!(
        err.contains(
            "gateway.toml: invalid configuration: server.max_body: unknown field `max_body`"
        ),
        "{err}"
    );
}

#[test]
fn a_missing_required_secret_names_the_key_and_its_variable() {
    let cfg = "version = 1\n[security]\ndata_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nindex_key = \"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\"\n[server]\nlisten = \"127.0.0.1:0\"\n[channels.telegram]\nplugin = \"builtin:telegram\"\n[channels.telegram.secrets]\nsecret_token = \"x\"\n";
    let err = start_failure("nosecret", cfg, &[]);
    assert!(
        err.contains("channels.telegram.secrets.bot_token: required by plugin telegram@0.1.0"),
        "{err}"
    );
    assert!(err.contains("GATEWAY_CHANNELS_TELEGRAM_BOT_TOKEN"), "{err}");
    let err = start_failure(
        "typo",
        &format!("{cfg}bot_token = \"y\"\nbot_tokn = \"z\"\n"),
        &[],
    );
    assert!(err.contains("channels.telegram.secrets.bot_tokn: plugin telegram@0.1.0 declares no secret `bot_tokn`"), "{err}");
    // A template for a channel that has none is named, not ignored.
    let err = start_failure(
        "notemplates",
        &format!(
            "{cfg}bot_token = \"y\"\n[channels.telegram.templates]\nproactive = {{ name = \"cart\", language = \"en\" }}\n"
        ),
        &[],
    );
    assert!(
        err.contains(
            "channels.telegram.templates.proactive: plugin telegram@0.1.0 sends no templates"
        ),
        "{err}"
    );
    // An unknown purpose too.
    let err = start_failure(
        "badpurpose",
        &format!(
            "{cfg}bot_token = \"y\"\n[channels.telegram.templates]\nmarketing = {{ name = \"cart\", language = \"en\" }}\n"
        ),
        &[],
    );
    assert!(
        err.contains("channels.telegram.templates.marketing: unknown purpose"),
        "{err}"
    );
}

#[test]
fn secrets_can_come_from_the_environment() {
    let dir = scratch("envsecret");
    let cfg = "version = 1\n[security]\ndata_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nindex_key = \"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\"\n[server]\nlisten = \"127.0.0.1:0\"\n[channels.telegram]\nplugin = \"builtin:telegram\"\n[channels.telegram.secrets]\nsecret_token = \"from-file\"\n";
    let gw = Gateway::start_with_env(
        &dir,
        cfg,
        &[
            ("GATEWAY_CHANNELS_TELEGRAM_SECRET_TOKEN", "from-env"),
            ("GATEWAY_CHANNELS_TELEGRAM_BOT_TOKEN", "1:x"),
        ],
    );
    let body = fixture("telegram_start.json");
    assert_eq!(
        gw.post(
            "/webhooks/telegram",
            &[("x-telegram-bot-api-secret-token", "from-env")],
            &body
        )
        .status,
        200
    );
    assert_eq!(
        gw.post(
            "/webhooks/telegram",
            &[("x-telegram-bot-api-secret-token", "from-file")],
            &body
        )
        .status,
        401
    );
}

#[test]
fn tls_serves_tls13_and_refuses_tls12() {
    let dir = scratch("tls");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let gw = Gateway::start(
        &dir,
        "version = 1\n[security]\ndata_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nindex_key = \"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\"\n[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    );
    let s_client = |version: &str| {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &gw.addr.to_string(),
                version,
                "-CAfile",
            ])
            .arg(dir.join("cert.pem"))
            .args(["-servername", "localhost", "-quiet", "-verify_return_error"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = s_client("-tls1_3");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s_client("-tls1_2");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("HTTP/1.1"),
        "TLS 1.2 must be refused"
    );
}

// --- Connections and bodies under attack (issue 10, findings 2 and 3) ------

/// A gateway with one WhatsApp channel, `server` added to its `[server]`
/// table, under `ulimit -n nofile` when given.
fn limited_gateway(name: &str, server: &str, nofile: Option<u32>) -> Gateway {
    let config = format!(
        r#"version = 1

[server]
listen = "127.0.0.1:0"
{server}

[security]
data_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
index_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="

[channels.whatsapp]
plugin = "builtin:whatsapp"
api_base = "http://127.0.0.1:9/whatsapp"
[channels.whatsapp.secrets]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
access_token = "wa-access"
"#
    );
    Gateway::start_with(&scratch(name), &config, &[], nofile)
}

/// Whether the server closed `c` (EOF or reset) within `within`.
fn closed_by_server(c: &mut TcpStream, within: Duration) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn silent_connections_are_closed_and_healthz_answers_under_a_low_fd_limit() {
    let gw = limited_gateway("idle-flood", "first_byte_timeout_ms = 1500", Some(256));
    assert!(
        eventually(Duration::from_secs(5), || gw
            .stderr()
            .contains("server.max_connections lowered from 20000 to 168")),
        "{}",
        gw.stderr()
    );
    // More silent sockets than the process may open files.
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    // Health checks keep answering while the flood is on: each new
    // connection closes the oldest silent one if it must.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        let r = gw.get("/healthz");
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every silent socket is closed by first_byte_timeout_ms at the latest.
    for c in &mut idle {
        assert!(closed_by_server(c, Duration::from_secs(5)));
    }
    // …and a second wave is served the same way.
    let _again: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    assert_eq!(gw.get("/healthz").status, 200);
    let log = gw.stderr();
    // The limit keeps room for every descriptor: accept never failed.
    assert!(!log.contains("accept failed"), "{log}");
}

#[test]
fn over_the_connection_limit_a_client_hears_503_overloaded_with_retry_after() {
    let gw = limited_gateway(
        "conn-limit",
        "max_connections = 4\nheader_timeout_ms = 10000",
        None,
    );
    // Four kept-alive connections that have made a request (so none is
    // silent: a connection still sending its first request is, and would
    // be closed to make room).
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(gw.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            c
        })
        .collect();
    let r = gw.get("/healthz");
    assert_eq!((r.status, r.code().as_str()), (503, "overloaded"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // The busy ones are still served.
    busy[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let done = read_response(&mut busy[0]);
    assert_eq!(done.status, 200);
    drop(busy);
    assert!(eventually(Duration::from_secs(5), || gw
        .get("/healthz")
        .status
        == 200));
}

#[test]
fn a_connection_that_starts_an_http2_preface_and_stops_is_closed() {
    let gw = limited_gateway("half-preface", "header_timeout_ms = 1000", None);
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let t0 = Instant::now();
    assert!(closed_by_server(&mut c, Duration::from_secs(5)));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn stalled_bodies_stay_within_the_body_budget_and_memory_stays_bounded() {
    const MIB: usize = 1 << 20;
    let gw = limited_gateway(
        "body-budget",
        "max_body_bytes = 1048576\nmax_inflight_body_bytes = 8388608\nbody_timeout_ms = 30000",
        Some(256),
    );
    let before = gw.rss_bytes();
    // 100 unsigned bodies that announce 1 MiB, send half and stall.
    let half = vec![b'x'; MIB / 2];
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut c = TcpStream::connect(gw.addr).unwrap();
            let head = format!(
                "POST /webhooks/whatsapp HTTP/1.1\r\nhost: x\r\ncontent-length: {MIB}\r\n\r\n"
            );
            c.write_all(head.as_bytes()).unwrap();
            c.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let _ = c.write_all(&half);
            c
        })
        .collect();
    // The budget holds 8 of them; the rest are told to come back.
    let mut overloaded = 0;
    for c in &mut stalled {
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = c.read(&mut buf)
            && n > 0
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            assert!(text.contains("overloaded"), "{text}");
            assert!(
                text.to_ascii_lowercase().contains("retry-after: 1"),
                "{text}"
            );
            overloaded += 1;
        }
    }
    assert!(overloaded >= 90, "only {overloaded} of 100 were refused");
    assert_eq!(gw.get("/healthz").status, 200);
    let grown = gw.rss_bytes().saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, grew by {} KiB",
        before >> 20,
        grown >> 10
    );
    assert!(
        grown < 32 * MIB as u64,
        "RSS grew by {} MiB under an 8 MiB body budget",
        grown / MIB as u64
    );
    let metrics = gw.get("/metrics").text();
    assert!(
        metrics.contains("gateway_overloaded_total{limit=\"inflight_body_bytes\"}"),
        "{metrics}"
    );
}

// --- The widget's live session (issue 11) ---------------------------------

use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _};

type WsClient = tungstenite::WebSocket<TcpStream>;

/// Opens `/widget/v1/ws` with `origin`; the HTTP status when refused.
fn ws_open(gw: &Gateway, origin: &str) -> Result<WsClient, u16> {
    let stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("ws://{}/widget/v1/ws", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn ws_send(ws: &mut WsClient, frame: serde_json::Value) {
    ws.send(Message::text(frame.to_string())).unwrap();
}

/// The next JSON frame (pings skipped); panics on a close.
fn ws_next(ws: &mut WsClient) -> serde_json::Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next frame of `kind`, skipping others.
fn ws_next_of(ws: &mut WsClient, kind: &str) -> serde_json::Value {
    loop {
        let f = ws_next(ws);
        if f["type"] == kind {
            return f;
        }
    }
}

/// Reads until the server closes; its code and reason.
fn ws_closed(ws: &mut WsClient) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(c))) => return (c.code.into(), c.reason.to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

fn hs_token(c: serde_json::Value) -> String {
    let hs = jsonwebtoken::EncodingKey::from_secret(WIDGET_SECRET.as_bytes());
    jwt(jsonwebtoken::Algorithm::HS256, &hs, c)
}

const SHOP: &str = "https://shop.example";

#[test]
fn a_live_session_sends_history_acks_messages_and_streams_the_reply() {
    let s = setup("ws-live");
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "auth", "token": hs_token(claims(600))}),
    );
    let session = ws_next(&mut ws);
    assert_eq!(session["type"], "session", "{session}");
    assert_eq!(session["customer_id"], serde_json::Value::Null);
    ws_send(
        &mut ws,
        serde_json::json!({"type": "message", "text": "Do you have the office chair in black?", "client_id": "c-1"}),
    );
    let ack = ws_next_of(&mut ws, "ack");
    assert_eq!(ack["client_id"], "c-1");
    assert_eq!(ack["id"], "7:user-42:c-1");
    // The message itself, then the agent's reply, without asking.
    let mine = ws_next_of(&mut ws, "message");
    assert_eq!(
        (mine["direction"].as_str(), mine["text"].as_str()),
        (
            Some("inbound"),
            Some("Do you have the office chair in black?")
        )
    );
    let reply = ws_next_of(&mut ws, "message");
    assert_eq!(reply["direction"], "outbound", "{reply}");
    assert_eq!(reply["channel"], "widget");
    // A resend of the same client_id is acknowledged, never doubled.
    ws_send(
        &mut ws,
        serde_json::json!({"type": "message", "text": "Do you have the office chair in black?", "client_id": "c-1"}),
    );
    assert_eq!(ws_next_of(&mut ws, "ack")["client_id"], "c-1");
    // Resuming after the inbound entry brings only what followed it.
    let mut again = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut again,
        serde_json::json!({"type": "auth", "token": hs_token(claims(600)), "after": mine["id"]}),
    );
    assert_eq!(ws_next(&mut again)["type"], "session");
    let history = ws_next(&mut again);
    assert_eq!(history["type"], "history", "{history}");
    assert_eq!(
        history["entries"][0]["id"], reply["id"],
        "only what followed `after`: {history}"
    );
    // The REST history holds the message once.
    let h = s.gw.request(
        "GET",
        "/widget/v1/history",
        &[(
            "authorization",
            &format!("Bearer {}", hs_token(claims(600))),
        )],
        b"",
    );
    let inbound = h.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "inbound")
        .count();
    assert_eq!(inbound, 1, "{}", h.text());
}

#[test]
fn a_session_without_auth_or_with_a_bad_token_is_closed_with_its_code() {
    let s = setup("ws-auth");
    // Wrong origin: refused before the upgrade.
    assert_eq!(ws_open(&s.gw, "https://evil.example").err(), Some(403));
    // A plain GET is told to upgrade.
    assert_eq!(s.gw.get("/widget/v1/ws").status, 426);
    // Something else first.
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "message", "text": "hi"}),
    );
    assert_eq!(ws_closed(&mut ws).0, 4001);
    // Bad, expired and alg:none tokens, each with its reason.
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none"})),
        b64(claims(600))
    );
    let wrong_key = jwt(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-widget-secret"),
        claims(600),
    );
    for (token, reason) in [
        (wrong_key, "bad_signature"),
        (hs_token(claims(-120)), "expired"),
        (none, "algorithm"),
    ] {
        let mut ws = ws_open(&s.gw, SHOP).unwrap();
        ws_send(&mut ws, serde_json::json!({"type": "auth", "token": token}));
        let (code, why) = ws_closed(&mut ws);
        assert_eq!(code, 4003);
        assert!(why.starts_with(reason), "{why}");
    }
    // Nothing at all: closed after 5 s.
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    let t0 = Instant::now();
    assert_eq!(ws_closed(&mut ws).0, 4001);
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn oversized_frames_are_closed_and_a_flood_is_slowed_but_survives() {
    let s = setup("ws-limits");
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "auth", "token": hs_token(claims(600))}),
    );
    assert_eq!(ws_next(&mut ws)["type"], "session");
    // 40 messages at once: the burst goes through, the rest are paced,
    // the client is told once, and every one is acknowledged.
    for n in 0..40 {
        ws_send(
            &mut ws,
            serde_json::json!({"type": "message", "text": format!("flood {n}"), "client_id": format!("f-{n}")}),
        );
    }
    let mut acks = 0;
    let mut told = 0;
    while acks < 40 {
        let f = ws_next(&mut ws);
        match f["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") if f["code"] == "rate_limited" => told += 1,
            _ => {}
        }
    }
    assert_eq!(told, 1);
    // A frame over 16 KiB closes the session with 4009.
    let big = "x".repeat(20_000);
    ws_send(&mut ws, serde_json::json!({"type": "message", "text": big}));
    assert_eq!(ws_closed(&mut ws).0, 4009);
}

#[test]
fn a_session_ends_when_its_token_expires_unless_refreshed() {
    let s = setup_with("ws-expiry", |c| {
        c.replace(
            "allowed_origins = [\"https://shop.example\"]",
            "allowed_origins = [\"https://shop.example\"]\nleeway_seconds = 0",
        )
    });
    // Not refreshed: closed at `exp`.
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "auth", "token": hs_token(claims(2))}),
    );
    assert_eq!(ws_next(&mut ws)["type"], "session");
    let (code, why) = ws_closed(&mut ws);
    assert_eq!(code, 4003);
    assert!(why.starts_with("expired"), "{why}");
    // Refreshed in time: it goes on; a refresh for someone else ends it.
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "auth", "token": hs_token(claims(2))}),
    );
    assert_eq!(ws_next(&mut ws)["type"], "session");
    ws_send(
        &mut ws,
        serde_json::json!({"type": "refresh", "token": hs_token(claims(600))}),
    );
    assert_eq!(ws_next_of(&mut ws, "refreshed")["type"], "refreshed");
    std::thread::sleep(Duration::from_secs(3));
    ws_send(
        &mut ws,
        serde_json::json!({"type": "message", "text": "still here", "client_id": "r-1"}),
    );
    assert_eq!(ws_next_of(&mut ws, "ack")["client_id"], "r-1");
    let mut other = claims(600);
    other["sub"] = "someone-else".into();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "refresh", "token": hs_token(other)}),
    );
    assert_eq!(ws_closed(&mut ws).0, 4003);
}

#[test]
fn a_customer_known_from_whatsapp_is_greeted_with_that_context_once_a_day() {
    let s = setup("ws-greeting");
    let r = post_whatsapp(
        &s.gw,
        APP_SECRET,
        whatsapp_text("16505551234", "wamid.GREET1", "Is the chair in stock?"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut c = claims(600);
    c["sub"] = "user-sarah".into();
    c["phone"] = "+16505551234".into();
    c["phone_number_verified"] = true.into();
    let token = hs_token(c);
    // The first visit: linked by the verified phone, and greeted.
    let mut ws = ws_open(&s.gw, SHOP).unwrap();
    ws_send(&mut ws, serde_json::json!({"type": "auth", "token": token}));
    let session = ws_next_of(&mut ws, "session");
    assert!(session["customer_id"].is_string(), "{session}");
    // The greeting comes as soon as the agent has answered: in the history,
    // or live just after it.
    let greeting = 'found: loop {
        let f = ws_next(&mut ws);
        let entries = match f["type"].as_str() {
            Some("history") => f["entries"].as_array().unwrap().clone(),
            Some("message") => vec![f.clone()],
            _ => continue,
        };
        for m in entries {
            if m["direction"] == "outbound" && m["channel"] == "widget" {
                break 'found m;
            }
        }
    };
    assert!(
        greeting["text"]
            .as_str()
            .unwrap()
            .contains("Earlier on WhatsApp you asked about “Is the chair in stock?”"),
        "{greeting}"
    );
    // Opening again the same day: the history, no second greeting.
    let mut again = ws_open(&s.gw, SHOP).unwrap();
    ws_send(
        &mut again,
        serde_json::json!({"type": "auth", "token": hs_token({
            let mut c = claims(600);
            c["sub"] = "user-sarah".into();
            c
        })}),
    );
    ws_next_of(&mut again, "session");
    again
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut outbound = 0;
    while let Ok(m) = again.read() {
        if let Message::Text(t) = m {
            let f: serde_json::Value = serde_json::from_str(&t).unwrap();
            let entries = match f["type"].as_str() {
                Some("history") => f["entries"].as_array().unwrap().clone(),
                Some("message") => vec![f],
                _ => vec![],
            };
            outbound += entries
                .iter()
                .filter(|m| m["direction"] == "outbound" && m["channel"] == "widget")
                .count();
        }
    }
    assert_eq!(outbound, 1, "the one greeting, from the history");
}

#[test]
fn the_widget_script_is_served_with_a_content_hash_etag_and_a_long_cache() {
    let s = setup("widget-js");
    let r = s.gw.get("/widget/v1/widget.js");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(r.text().contains("window.ChatCrafter"));
    let etag = r.header("etag").unwrap().to_string();
    assert!(r.header("cache-control").unwrap().contains("max-age=86400"));
    let again = s.gw.request(
        "GET",
        "/widget/v1/widget.js",
        &[("if-none-match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // The demo is off without [server] demo.
    assert_eq!(s.gw.get("/demo").status, 404);
}
