//! The host's handling of every plugin, through the real wasmtime host: the
//! bundled plugins and the hostile test programs.
//!
//! The bundled plugins' own behaviour — what each makes of its channel's
//! payloads, the exact API bodies of its replies (text, media, choices,
//! templates), its manifest — is tested natively in each plugin's crate,
//! `plugins/<name>/src/tests.rs`, with the SDK's test helpers (in
//! `plugins/`: `cargo test --target x86_64-unknown-linux-gnu -p
//! chatcrafter-plugin-<name>`). What stays here is what only the host shows,
//! for every plugin: the sandbox's limits (deadline, memory cap, forbidden
//! imports, the wrong world, bytes that are no component), hostile programs,
//! bad input (malformed JSON, random bytes, deep nesting) that is an error
//! and never a trap for each bundled plugin, registry swaps and instance
//! reuse. The checks on guest answers (the impostor) and the conversion of a
//! 0.1 plugin (slack-style) are exercised end to end in `tests/http.rs`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use chatcrafter_core::channel::{
    AuthenticatedUser, ChannelError, ChannelIdentity, Claim, ClaimKind, Header, InboundEvent,
    InboundMessage, InboundRequest, OutboundContent, OutboundMessage, RequestContext,
};
use chatcrafter_gateway::plugin::{LoadError, Plugin, PluginError, PluginHost, Registry, bundled};

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new().expect("plugin host"))
}

fn bundled_plugin(channel: &str) -> Arc<Plugin> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        let r = Registry::new();
        for (name, bytes) in bundled::PLUGINS {
            r.swap(
                name,
                host().load(&format!("builtin:{name}"), bytes).unwrap(),
            );
        }
        r
    });
    registry.get(channel).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn post(body: Vec<u8>) -> InboundRequest {
    InboundRequest {
        method: "POST".into(),
        path: "/webhooks/test".into(),
        query: String::new(),
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body,
        context: RequestContext {
            received_at_ms: 1_795_580_000_000,
            request_id: "req-1".into(),
            user: None,
            settings: vec![],
        },
    }
}

fn messages(events: &[InboundEvent]) -> Vec<&InboundMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            InboundEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn malformed(err: PluginError) -> String {
    match err {
        PluginError::Channel {
            error: ChannelError::Malformed(why),
            ..
        } => why,
        other => panic!("expected a malformed-payload error, got {other}"),
    }
}

/// A widget frame from a user the host authenticated (the widget plugin
/// refuses frames without one).
fn widget_request(body: &[u8]) -> InboundRequest {
    let mut req = post(body.to_vec());
    req.context.user = Some(AuthenticatedUser {
        issuer: "https://shop.example".into(),
        subject: "user-42".into(),
        claims: vec![
            Claim {
                kind: ClaimKind::Email,
                value: "sarah@example.com".into(),
                verified: true,
            },
            Claim {
                kind: ClaimKind::Name,
                value: "Sarah".into(),
                verified: true,
            },
        ],
    });
    req
}

// --- Bad input is an error, never a trap ----------------------------------

#[test]
fn malformed_json_is_a_malformed_error_for_every_bundled_plugin() {
    for channel in ["whatsapp", "telegram", "discord", "widget"] {
        let req = if channel == "widget" {
            widget_request(b"{\"text\": ")
        } else {
            post(b"{\"object\": ".to_vec())
        };
        let err = bundled_plugin(channel).parse_inbound(&req).unwrap_err();
        assert!(err.is_input_error(), "{channel}: {err}");
        let why = malformed(err);
        assert!(
            why.starts_with("body: EOF while parsing"),
            "{channel}: {why}"
        );
    }
}

#[test]
fn json_of_the_wrong_shape_names_the_missing_field() {
    let err = bundled_plugin("whatsapp")
        .parse_inbound(&post(br#"{"entry":[]}"#.to_vec()))
        .unwrap_err();
    assert_eq!(
        malformed(err),
        "body: missing field `object` at line 1 column 12"
    );
}

#[test]
fn random_bytes_never_trap_a_bundled_plugin() {
    // A fixed-seed xorshift: reproducible garbage, some of it almost JSON.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..200 {
        let len = (round * 7) % 300;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b"{}[]\":,0123456789abcdeftrunl \\"[(seed % 30) as usize]
            })
            .collect();
        for channel in ["whatsapp", "telegram", "discord", "widget"] {
            let req = if channel == "widget" {
                widget_request(&body)
            } else {
                post(body.clone())
            };
            if let Err(e) = bundled_plugin(channel).parse_inbound(&req) {
                assert!(
                    e.is_input_error(),
                    "{channel} on {:?}: {e}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
}

#[test]
fn json_nested_to_serde_json_limit_never_traps_a_bundled_plugin() {
    // Deep nesting inside a field the plugins skip or keep as a JSON value:
    // parsed or refused as malformed (serde_json's limit is 128 levels for
    // values it builds), but never a trap of the 64 KiB guest stack.
    for depth in [127, 200] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let bodies = [
            (
                "whatsapp",
                format!(r#"{{"object":"whatsapp_business_account","entry":[],"extra":{nested}}}"#),
            ),
            ("telegram", format!(r#"{{"update_id":1,"poll":{nested}}}"#)),
            (
                "discord",
                format!(
                    r#"{{"id":"1","application_id":"2","type":3,"token":"t","user":{{"id":"3","username":"u"}},"data":{{"custom_id":"x","components":[{nested}]}}}}"#
                ),
            ),
        ];
        for (channel, body) in bodies {
            if let Err(e) = bundled_plugin(channel).parse_inbound(&post(body.into_bytes())) {
                assert!(e.is_input_error(), "{channel} at depth {depth}: {e}");
            }
        }
    }
}

// --- Hostile plugins ------------------------------------------------------

fn load_program(path: &str) -> Result<Plugin, LoadError> {
    host().load_file(Path::new(path))
}

/// After any hostile call, the same host still serves a normal call.
fn host_still_serves() {
    let out = bundled_plugin("whatsapp")
        .parse_inbound(&post(fixture("whatsapp_multi.json")))
        .unwrap();
    assert_eq!(messages(&out.events).len(), 5);
}

#[test]
fn a_plugin_that_loops_forever_hits_the_deadline() {
    let p = load_program(bundled::test_programs::LOOP_FOREVER).unwrap();
    let err = p.parse_inbound(&post(b"x".to_vec())).unwrap_err();
    assert!(matches!(err, PluginError::Deadline { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin loop-forever@0.0.1: `parse-inbound` exceeded its 100 ms deadline"
    );
    assert!(!err.is_input_error());
    host_still_serves();
}

#[test]
fn a_memory_bomb_is_refused_at_the_cap() {
    let p = load_program(bundled::test_programs::MEMORY_BOMB).unwrap();
    let err = p.parse_inbound(&post(b"x".to_vec())).unwrap_err();
    let PluginError::MemoryCap { requested, cap, .. } = &err else {
        panic!("expected the memory cap, got {err:?}");
    };
    assert_eq!(*cap, 64 << 20);
    assert!(*requested > *cap);
    assert_eq!(
        err.to_string(),
        format!(
            "plugin memory-bomb@0.0.1: `parse-inbound` tried to grow its memory to {requested} bytes, over the 67108864 byte cap"
        )
    );
    host_still_serves();
}

#[test]
fn a_trapping_plugin_fails_that_call_only() {
    let p = load_program(bundled::test_programs::TRAP).unwrap();
    let err = p.parse_inbound(&post(b"x".to_vec())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin trap@0.0.1: `parse-inbound` trapped: wasm `unreachable` instruction executed"
    );
    // The plugin itself is still usable for its other export.
    assert!(
        p.render_outbound(&OutboundMessage {
            message_id: "m".into(),
            recipient: ChannelIdentity {
                channel: "trap".into(),
                scope: "s".into(),
                id: "i".into()
            },
            content: OutboundContent::text("t"),
            reply_handle: None,
            context: Default::default(),
        })
        .is_ok()
    );
    host_still_serves();
}

#[test]
fn a_component_of_the_wrong_world_is_refused_at_load() {
    let err = load_program(bundled::test_programs::WRONG_WORLD).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a chatcrafter:channel plugin: it exports [`acme:chat/handler@1.0.0`], but a channel plugin must export `chatcrafter:channel/plugin@0.2.0` (world chatcrafter:channel/channel-plugin), or the older `chatcrafter:channel/plugin@0.1.0`",
            bundled::test_programs::WRONG_WORLD
        )
    );
    host_still_serves();
}

#[test]
fn a_plugin_that_imports_sockets_is_refused_at_load() {
    let err = load_program(bundled::test_programs::PHONES_HOME).unwrap_err();
    let LoadError::ForbiddenImport { import, .. } = &err else {
        panic!("expected a forbidden import, got {err:?}");
    };
    assert!(import.starts_with("wasi:sockets/"), "{import}");
    host_still_serves();
}

#[test]
fn bytes_that_are_not_a_component_are_refused_with_the_reason() {
    let err = host().load("upload.wasm", b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, LoadError::NotComponent { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("upload.wasm: not a valid WebAssembly component: "),
        "{err}"
    );
}

// --- Registry -------------------------------------------------------------

#[test]
fn a_plugin_swapped_while_calls_are_in_flight_loses_no_call() {
    let registry = Arc::new(Registry::new());
    let whatsapp = bundled::PLUGINS
        .iter()
        .find(|(n, _)| *n == "whatsapp")
        .unwrap()
        .1;
    registry.swap(
        "whatsapp",
        host().load("builtin:whatsapp", whatsapp).unwrap(),
    );
    let first = registry.get("whatsapp").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let registry = registry.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let req = post(fixture("whatsapp_multi.json"));
                let mut calls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || calls == 0 {
                    let plugin = registry.get("whatsapp").unwrap();
                    assert_eq!(
                        messages(&plugin.parse_inbound(&req).unwrap().events).len(),
                        5
                    );
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    for _ in 0..5 {
        registry.swap(
            "whatsapp",
            host().load("builtin:whatsapp", whatsapp).unwrap(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = callers.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total >= 4);
    assert!(
        !Arc::ptr_eq(&first, &registry.get("whatsapp").unwrap()),
        "the swap took effect"
    );
    // The old plugin still works for whoever holds it.
    assert!(
        first
            .parse_inbound(&post(fixture("whatsapp_multi.json")))
            .is_ok()
    );
}

// --- Instance reuse (trusted plugins) -------------------------------------

fn leaky_request(id: &str, user: &str) -> InboundRequest {
    post(format!(r#"{{"id":"{id}","user":"{user}"}}"#).into_bytes())
}

fn display_name(out: &chatcrafter_core::channel::Inbound) -> Option<String> {
    messages(&out.events)[0].display_name.clone()
}

#[test]
fn fresh_instances_remember_nothing() {
    let p = load_program(bundled::test_programs::LEAKY).unwrap();
    for (i, user) in ["ann", "bob", "ann"].into_iter().enumerate() {
        let out = p
            .parse_inbound(&leaky_request(&i.to_string(), user))
            .unwrap();
        assert_eq!(display_name(&out), None);
    }
    assert_eq!(p.reused_calls(), 0);
}

#[test]
fn a_reused_instance_never_carries_one_senders_data_into_anothers_result() {
    let mut p = load_program(bundled::test_programs::LEAKY).unwrap();
    p.set_instance_reuse(true);
    // Ann, then Ann again: the warm instance is reused (it saw only Ann).
    assert_eq!(
        display_name(&p.parse_inbound(&leaky_request("1", "ann")).unwrap()),
        None
    );
    let again = p.parse_inbound(&leaky_request("2", "ann")).unwrap();
    assert_eq!(p.reused_calls(), 1);
    assert_eq!(
        display_name(&again).as_deref(),
        Some("ann"),
        "state persists for one sender: the stated trade-off"
    );
    // Bob: the warm instance's result would carry Ann; it is thrown away and
    // Bob is parsed on a fresh instance.
    let bob = p.parse_inbound(&leaky_request("3", "bob")).unwrap();
    assert_eq!(
        display_name(&bob),
        None,
        "Ann's id must never reach Bob's message"
    );
    assert_eq!(p.reused_calls(), 1);
    // Bob's fresh instance is now warm for Bob.
    let bob2 = p.parse_inbound(&leaky_request("4", "bob")).unwrap();
    assert_eq!(display_name(&bob2).as_deref(), Some("bob"));
    assert_eq!(p.reused_calls(), 2);
}

// --- Both contract versions through one host ------------------------------

/// A 0.1 plugin (frozen WIT, its own bindings) and a 0.2 one load side by
/// side, and the 0.1 adapter hands the pipeline the same core types: one
/// content per message, identities naming the plugin's channel, and rich
/// outbound content as the text 0.1 can carry.
#[test]
fn a_0_1_plugin_is_served_through_its_adapter_beside_0_2_ones() {
    let old = load_program(bundled::test_programs::SLACK_STYLE).unwrap();
    assert_eq!(old.contract_version(), "0.1.0");
    assert_eq!(bundled_plugin("whatsapp").contract_version(), "0.2.0");
    // 0.1 manifests have no window, links or rich limits.
    let m = old.manifest();
    assert_eq!(
        (
            m.reply_window_seconds,
            m.deep_links.len(),
            m.outbound_limits.max_choices
        ),
        (None, 0, 0)
    );

    let out = old
        .parse_inbound(&post(
            br#"{"id":"Ev1","user":"U1","text":"hello"}"#.to_vec(),
        ))
        .unwrap();
    let [InboundEvent::Message(msg)] = out.events.as_slice() else {
        panic!("{:?}", out.events)
    };
    assert_eq!(msg.sender.channel, "slack-style");
    assert_eq!(
        msg.contents,
        [chatcrafter_core::channel::Content::Text {
            text: "hello".into()
        }]
    );
    assert_eq!(msg.referral, None);

    // Handed choices directly (the host's plan would already have
    // degraded them), the adapter sends 0.1 their text.
    let choices = OutboundContent::Choices {
        prompt: "Which colour?".into(),
        options: vec![chatcrafter_core::channel::Choice {
            id: "black".into(),
            title: "Black".into(),
        }],
    };
    let rendered = old
        .render_outbound(&OutboundMessage {
            message_id: "o_1".into(),
            recipient: ChannelIdentity {
                channel: "acme".into(),
                scope: "workspace".into(),
                id: "U1".into(),
            },
            content: choices,
            reply_handle: None,
            context: Default::default(),
        })
        .unwrap();
    let chatcrafter_core::channel::OutboundRequest::Http(call) = rendered else {
        panic!("{rendered:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["text"], "Which colour?\n1. Black");
}
