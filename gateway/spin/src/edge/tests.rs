//! The edge's logic on the host, with fakes of what Spin provides: its
//! variables, the composed plugin, and its outbound Redis — a fake that
//! applies the core's commit and follow scripts to a map and, like Spin's
//! host, answers nested replies flattened. (The real thing, Spin with the
//! real plugins and a real Redis, is `tests/edge.rs`.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chatcrafter_core::ManualClock;
use chatcrafter_core::channel::{
    ChannelError, ChannelIdentity, Content, Encoding, Handshake, HttpResponse, Inbound,
    InboundEvent, InboundMessage, InboundRequest, Manifest, SettingSpec, Verification,
};
use chatcrafter_core::store::redis::{COMMIT, FOLLOW, Link, Reply};
use chatcrafter_core::store::{BoxFuture, StoreError};

use super::*;

const T0: u64 = 1_800_000_000;
const APP_SECRET: &str = "app-secret-for-tests";
const WIDGET_SECRET: &str = "widget-secret-for-tests-32-bytes!!";

/// Spin's variables, as a map.
struct Vars(BTreeMap<String, String>);

impl Variables for Vars {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(std::future::ready(Ok(self.0.get(name).cloned())))
    }
}

fn config(channel_section: &str) -> String {
    format!(
        r#"version = 1
[store]
kind = "redis"
url = "redis://placeholder:6379"
[widget]
algorithms = ["HS256"]
allowed_origins = ["https://shop.example"]
{channel_section}
"#
    )
}

fn vars(channel: &str) -> Vars {
    let key = |b: u8| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    };
    let mut m = BTreeMap::new();
    m.insert(
        "gateway_toml".into(),
        config("[channels.shop]\nplugin = \"builtin:shop\""),
    );
    m.insert("channel".into(), channel.into());
    m.insert("security_data_key".into(), key(1));
    m.insert("security_index_key".into(), key(2));
    m.insert("channels_shop_app_secret".into(), APP_SECRET.into());
    m.insert("channels_shop_verify_token".into(), "verify-me".into());
    m.insert("widget_secret".into(), WIDGET_SECRET.into());
    Vars(m)
}

/// A plugin whose id is `.0`: HMAC-signed JSON `{"id", "from", "text"}`
/// (`"channel"` to speak for another channel), malformed otherwise; a
/// widget user's message when the request names one.
struct Fake(&'static str);

/// The plugin of channel `shop`.
const SHOP: Fake = Fake("shop");

impl Plugin for Fake {
    fn describe(&self) -> Manifest {
        Manifest {
            id: self.0.into(),
            version: "1.0.0".into(),
            display_name: "Shop".into(),
            verification: Verification::HmacSha256 {
                header: "x-signature".into(),
                prefix: "sha256=".into(),
                encoding: Encoding::Hex,
                signed_template: "{body}".into(),
                timestamp_header: None,
                max_age_seconds: None,
                secret: "app_secret".into(),
            },
            handshake: Handshake::QueryChallenge {
                method: "GET".into(),
                mode_param: "mode".into(),
                mode_value: "subscribe".into(),
                token_param: "token".into(),
                token_secret: "verify_token".into(),
                challenge_param: "challenge".into(),
            },
            secrets: vec![
                SettingSpec {
                    name: "app_secret".into(),
                    description: "signs webhooks".into(),
                    required: true,
                },
                SettingSpec {
                    name: "verify_token".into(),
                    description: "the handshake".into(),
                    required: true,
                },
                SettingSpec {
                    name: "api_token".into(),
                    description: "sends replies (not the edge's)".into(),
                    required: true,
                },
            ],
            settings: vec![],
            capabilities: vec![],
            reply_window_seconds: None,
            person_reply_window_seconds: None,
            deep_links: vec![],
            outbound_limits: Default::default(),
        }
    }

    fn parse_inbound(
        &self,
        request: InboundRequest,
        _plugin_id: &str,
    ) -> Result<Inbound, ChannelError> {
        assert!(
            !request.headers.iter().any(|h| h.name == "authorization"),
            "credential headers never reach a plugin"
        );
        if request.body == b"unsupported" {
            return Err(ChannelError::Unsupported(
                "not a kind of update this plugin takes".into(),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&request.body)
            .map_err(|e| ChannelError::Malformed(format!("not JSON: {e}")))?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let (channel, id) = match &request.context.user {
            Some(u) => ("widget".to_string(), u.subject.clone()),
            None => (
                v["channel"].as_str().unwrap_or("shop").to_string(),
                s("from"),
            ),
        };
        Ok(Inbound {
            events: vec![InboundEvent::Message(InboundMessage {
                provider_message_id: s("id"),
                sender: ChannelIdentity {
                    channel,
                    scope: String::new(),
                    id,
                },
                display_name: None,
                claims: vec![],
                contents: vec![Content::Text { text: s("text") }],
                referral: None,
                link_token: None,
                timestamp: request.context.received_at_ms / 1000,
                edited: false,
                reply_handle: None,
            })],
            response: HttpResponse {
                status: 200,
                headers: vec![],
                body: b"ok".to_vec(),
            },
            diagnostics: vec![],
        })
    }
}

/// Spin's outbound Redis, faked: the core's two scripts applied to a map
/// (by their source, as Redis would run them), replies flattened as
/// Spin's host flattens them, and every `PUBLISH` kept.
#[derive(Debug, Default, Clone)]
struct FakeRedis {
    data: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
    published: Arc<Mutex<Vec<(String, String)>>>,
    down: Arc<Mutex<bool>>,
}

fn value(v: Option<&Vec<u8>>) -> Reply {
    v.map_or(Reply::Nil, |v| Reply::Bytes(v.clone()))
}

impl Link for FakeRedis {
    fn call(&self, args: Vec<Vec<u8>>) -> BoxFuture<'_, Result<Reply, StoreError>> {
        if *self.down.lock().unwrap() {
            return Box::pin(std::future::ready(Err(StoreError::Unavailable(
                "redis: connection refused".into(),
            ))));
        }
        let mut data = self.data.lock().unwrap();
        let reply = match args[0].as_slice() {
            b"MGET" => Reply::List(args[1..].iter().map(|k| value(data.get(k))).collect()),
            b"PUBLISH" => {
                self.published.lock().unwrap().push((
                    String::from_utf8(args[1].clone()).unwrap(),
                    String::from_utf8(args[2].clone()).unwrap(),
                ));
                Reply::Int(0)
            }
            b"EVAL" => {
                let source = std::str::from_utf8(&args[1]).unwrap();
                let n: usize = std::str::from_utf8(&args[2]).unwrap().parse().unwrap();
                let keys = &args[3..3 + n];
                let argv = &args[3 + n..];
                if source == FOLLOW.source {
                    let mut out: Vec<Reply> = keys.iter().map(|k| value(data.get(k))).collect();
                    let follow: usize = std::str::from_utf8(&argv[0]).unwrap().parse().unwrap();
                    let target = match data.get(&keys[follow - 1]) {
                        Some(v) => {
                            let key = [argv[1].as_slice(), v, argv[2].as_slice()].concat();
                            value(data.get(&key))
                        }
                        None => Reply::Nil,
                    };
                    out.push(target);
                    Reply::List(out)
                } else if source == COMMIT.source {
                    let reads: usize = std::str::from_utf8(&argv[0]).unwrap().parse().unwrap();
                    let fresh = (0..reads).all(|i| {
                        let want = &argv[1 + i];
                        match want[0] {
                            0 => !data.contains_key(&keys[i]),
                            _ => data.get(&keys[i]).map(Vec::as_slice) == Some(&want[1..]),
                        }
                    });
                    if fresh {
                        for j in reads..keys.len() {
                            let op = &argv[1 + j];
                            match op[0] {
                                0 => {
                                    data.remove(&keys[j]);
                                }
                                2 => {
                                    data.insert(keys[j].clone(), op[21..].to_vec());
                                }
                                3 => {
                                    let delta = serde_json::from_slice(&op[1..]).unwrap();
                                    let now = chatcrafter_core::store::add_counters(
                                        data.get(&keys[j]).map(Vec::as_slice),
                                        &delta,
                                    );
                                    data.insert(keys[j].clone(), now);
                                }
                                _ => {
                                    data.insert(keys[j].clone(), op[1..].to_vec());
                                }
                            }
                        }
                    }
                    Reply::List(vec![Reply::Int(i64::from(fresh))])
                } else {
                    panic!("an unknown script")
                }
            }
            other => panic!("the edge sent {}", String::from_utf8_lossy(other)),
        };
        Box::pin(std::future::ready(Ok(reply)))
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

fn edge(channel: &str, redis: &FakeRedis) -> Edge<FakeRedis> {
    edge_with(&vars(channel), redis).expect("the edge loads")
}

fn edge_with(vars: &Vars, redis: &FakeRedis) -> Result<Edge<FakeRedis>, SetupError> {
    let redis = redis.clone();
    let plugin = match vars.0.get("channel").map(String::as_str) {
        Some(WIDGET) => Fake(WIDGET),
        _ => SHOP,
    };
    run(Edge::load(
        vars,
        &plugin,
        move |_| redis.clone(),
        Arc::new(ManualClock::at_ms(T0 * 1000)),
    ))
}

fn signed(body: &str) -> Request {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, APP_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Request {
        method: "POST".into(),
        path: "/webhooks/shop".into(),
        query: String::new(),
        headers: vec![
            Header {
                name: "x-signature".into(),
                value: format!("sha256={hex}"),
            },
            Header {
                name: "authorization".into(),
                value: "Bearer not-for-plugins".into(),
            },
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn error_code(r: &Response) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["error"]["code"].as_str().unwrap().to_string()
}

#[test]
fn a_verified_message_is_stored_once_and_announced() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let body = r#"{"id":"m1","from":"15550001","text":"hello"}"#;
    let r = run(e.handle(&SHOP, signed(body)));
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    let customer = run(e.db().find_identity("shop", "15550001"))
        .unwrap()
        .expect("the sender is a customer");
    let timeline = run(e.db().timeline(&customer)).unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0].text.as_deref(), Some("hello"));
    // The native workers are woken by the change notification.
    let published = redis.published.lock().unwrap().clone();
    assert_eq!(
        published,
        vec![(
            "cc:changes".to_string(),
            format!(r#"{{"customer_id":"{customer}","kind":"message"}}"#)
        )]
    );
    // A redelivery is answered alike, stored and announced no more.
    let r = run(e.handle(&SHOP, signed(body)));
    assert_eq!(r.status, 200);
    assert_eq!(run(e.db().timeline(&customer)).unwrap().len(), 1);
    assert_eq!(redis.published.lock().unwrap().len(), 1);
    // Nothing of the message is in the store in the clear.
    let data = redis.data.lock().unwrap();
    assert!(!data.is_empty());
    for (k, v) in data.iter() {
        for secret in ["hello", "15550001"] {
            assert!(
                !String::from_utf8_lossy(k).contains(secret)
                    && !String::from_utf8_lossy(v).contains(secret),
                "`{secret}` in the clear at {}",
                String::from_utf8_lossy(k)
            );
        }
    }
}

#[test]
fn a_bad_signature_is_refused_before_the_plugin_and_stores_nothing() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let mut req = signed(r#"{"id":"m1","from":"1","text":"x"}"#);
    req.body = br#"{"id":"m1","from":"2","text":"x"}"#.to_vec();
    let r = run(e.handle(&SHOP, req));
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "bad_signature");
    assert!(redis.data.lock().unwrap().is_empty());
}

#[test]
fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let get = |query: &str| Request {
        method: "GET".into(),
        path: "/webhooks/shop".into(),
        query: query.into(),
        ..Request::default()
    };
    let r = run(e.handle(&SHOP, get("mode=subscribe&token=verify-me&challenge=42")));
    assert_eq!((r.status, r.body.as_slice()), (200, b"42".as_slice()));
    let r = run(e.handle(&SHOP, get("mode=subscribe&token=wrong&challenge=42")));
    assert_eq!(r.status, 403);
    let r = run(e.handle(&SHOP, get("")));
    assert_eq!(r.status, 403);
    let mut put = signed("{}");
    put.method = "PUT".into();
    let r = run(e.handle(&SHOP, put));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn a_malformed_payload_is_kept_sealed_and_answered_400() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let r = run(e.handle(&SHOP, signed("card 4111 1111 1111 1111")));
    assert_eq!(r.status, 400);
    assert_eq!(error_code(&r), "malformed_payload");
    assert!(!String::from_utf8_lossy(&r.body).contains("4111"));
    let page = run(e.db().malformed_page(None, 10)).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].1.body, b"card 4111 1111 1111 1111");
}

#[test]
fn a_plugin_speaking_for_another_channel_is_refused_as_its_fault() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let r = run(e.handle(
        &SHOP,
        signed(r#"{"id":"m1","from":"1","text":"x","channel":"whatsapp"}"#),
    ));
    assert_eq!(r.status, 502);
    assert_eq!(error_code(&r), "plugin_failed");
    assert!(
        run(e.db().find_identity("whatsapp", "1"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_store_that_is_down_is_answered_503_so_the_channel_retries() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    *redis.down.lock().unwrap() = true;
    let r = run(e.handle(&SHOP, signed(r#"{"id":"m1","from":"1","text":"x"}"#)));
    assert_eq!(r.status, 503);
    assert_eq!(error_code(&r), "store_unavailable");
}

#[test]
fn unknown_routes_and_channels_are_404() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let mut req = signed("{}");
    req.path = "/webhooks/other".into();
    let r = run(e.handle(&SHOP, req));
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "unknown_channel")
    );
}

#[test]
fn setup_errors_name_the_variable_or_key_to_fix() {
    let redis = FakeRedis::default();
    let err = |vars: &Vars| edge_with(vars, &redis).unwrap_err().0;

    let mut v = vars("shop");
    v.0.remove("gateway_toml");
    assert!(err(&v).contains("`gateway_toml` is not set"), "{}", err(&v));

    let mut v = vars("shop");
    v.0.remove("channels_shop_app_secret");
    let e = err(&v);
    assert!(
        e.contains("channels.shop.secrets.app_secret") && e.contains("channels_shop_app_secret"),
        "{e}"
    );

    let mut v = vars("shop");
    v.0.insert(
        "gateway_toml".into(),
        "version = 1\n[channels.shop]\nplugin = \"builtin:shop\"".into(),
    );
    assert!(err(&v).starts_with("store.kind"), "{}", err(&v));

    let v = vars("telegram");
    assert!(err(&v).starts_with("channels.telegram"), "{}", err(&v));

    // The sending token (`api_token`, required by the plugin) is not the
    // edge's: it loads without it.
    assert!(edge_with(&vars("shop"), &redis).is_ok());
}

fn widget_request(method: &str, path: &str, token: Option<&str>, body: &str) -> Request {
    let mut headers = vec![Header {
        name: "origin".into(),
        value: "https://shop.example".into(),
    }];
    if let Some(t) = token {
        headers.push(Header {
            name: "authorization".into(),
            value: format!("Bearer {t}"),
        });
    }
    Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn the_widget_posts_with_a_token_and_reads_its_history() {
    let redis = FakeRedis::default();
    let e = edge(WIDGET, &redis);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "user-7", "iss": "shop", "iat": T0, "exp": T0 + 600}),
        &jsonwebtoken::EncodingKey::from_secret(WIDGET_SECRET.as_bytes()),
    )
    .unwrap();
    let r = run(e.handle(
        &Fake(WIDGET),
        widget_request(
            "POST",
            "/widget/v1/messages",
            Some(&token),
            r#"{"id":"w1","text":"hi from the web"}"#,
        ),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let r = run(e.handle(
        &Fake(WIDGET),
        widget_request("GET", "/widget/v1/history", Some(&token), ""),
    ));
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["entries"][0]["text"], "hi from the web");
    assert_eq!(v["entries"][0]["channel"], "widget");

    let r = run(e.handle(
        &Fake(WIDGET),
        widget_request("GET", "/widget/v1/history", Some("nope"), ""),
    ));
    assert_eq!((r.status, error_code(&r).as_str()), (401, "invalid_token"));
    let mut req = widget_request("GET", "/widget/v1/history", Some(&token), "");
    req.headers[0].value = "https://evil.example".into();
    let r = run(e.handle(&Fake(WIDGET), req));
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (403, "origin_not_allowed")
    );
    let r = run(e.handle(
        &Fake(WIDGET),
        widget_request("OPTIONS", "/widget/v1/messages", None, ""),
    ));
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
}

#[test]
fn an_unsupported_payload_is_the_callers_like_a_malformed_one() {
    let redis = FakeRedis::default();
    let e = edge("shop", &redis);
    let r = run(e.handle(&SHOP, signed("unsupported")));
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "malformed_payload")
    );
    assert_eq!(run(e.db().malformed_page(None, 10)).unwrap().items.len(), 1);
}

#[test]
fn only_the_callers_headers_reach_the_edge() {
    let pairs = [
        (
            "Spin-Full-Url",
            b"https://edge.example/webhooks/shop".as_slice(),
        ),
        ("spin-client-addr", b"203.0.113.9:4711".as_slice()),
        ("X-Signature", b"sha256=ab".as_slice()),
        ("x-binary", b"\xff\xfe".as_slice()),
    ];
    let headers = caller_headers(pairs.into_iter());
    let names: Vec<&str> = headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["x-signature"]);
}

#[test]
fn what_the_edge_does_not_run_is_not_required_and_what_it_cannot_do_is_refused() {
    let redis = FakeRedis::default();
    // A webhook agent's secret is the workers' business.
    let mut v = vars("shop");
    v.0.insert(
        "gateway_toml".into(),
        config("[channels.shop]\nplugin = \"builtin:shop\"\n[agent]\nkind = \"webhook\"\nurl = \"https://bot.example/agent\""),
    );
    assert!(edge_with(&v, &redis).is_ok());
    // No files at the edge.
    let mut v = vars("shop");
    v.0.insert(
        "gateway_toml".into(),
        config("[channels.shop]\nplugin = \"builtin:shop\"").replace(
            "url = \"redis://placeholder:6379\"",
            "url = \"rediss://placeholder:6380\"\ntls_ca_file = \"ca.pem\"",
        ),
    );
    let err = edge_with(&v, &redis).unwrap_err().0;
    assert!(err.starts_with("store.tls_ca_file"), "{err}");
}
