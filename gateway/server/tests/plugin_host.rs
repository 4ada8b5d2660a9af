//! The bundled plugins and the hostile test programs, run through the real
//! wasmtime host on realistic payloads.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use chatcrafter_core::channel::{
    AuthenticatedUser, ChannelError, ChannelIdentity, Claim, ClaimKind, Content, DeliveryState,
    Header, InboundEvent, InboundMessage, InboundRequest, OutboundContent, OutboundMessage, OutboundRequest,
    RequestContext,
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

fn text(m: &InboundMessage) -> &str {
    match &m.contents[0] {
        Content::Text { text } => text,
        other => panic!("not text: {other:?}"),
    }
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

// --- WhatsApp -------------------------------------------------------------

#[test]
fn whatsapp_notification_with_several_entries_and_changes_yields_every_message() {
    let out = bundled_plugin("whatsapp")
        .parse_inbound(&post(fixture("whatsapp_multi.json")))
        .unwrap();
    let msgs = messages(&out.events);
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
            "wamid.SECOND",
            "wamid.THIRD",
            "wamid.FOURTH",
            "wamid.FIFTH"
        ]
    );
    // Each message is scoped to the business number that received it.
    assert_eq!(
        msgs[0].sender,
        ChannelIdentity {
            channel: "whatsapp".into(),
            scope: "106540352242922".into(),
            id: "16505551234".into()
        }
    );
    assert_eq!(msgs[3].sender.scope, "206540352242922");
    assert_eq!(msgs[0].timestamp, 1_739_321_024);
    // wa_id is a phone WhatsApp verified; the profile name is not verified.
    assert!(msgs[0].claims.contains(&Claim {
        kind: ClaimKind::Phone,
        value: "+16505551234".into(),
        verified: true
    }));
    assert!(msgs[0].claims.contains(&Claim {
        kind: ClaimKind::Name,
        value: "José Müller".into(),
        verified: false
    }));
    assert!(
        matches!(&msgs[1].contents[0], Content::Media { reference, caption: Some(c), .. } if reference == "1479537139650973" && c == "this one")
    );
    assert!(
        matches!(&msgs[2].contents[0], Content::Postback { payload, title } if payload == "track-order" && title == "Track order")
    );
    assert!(
        matches!(&msgs[3].contents[0], Content::Location { latitude, name: Some(n), .. } if *latitude == 52.52 && n == "Alexanderplatz")
    );
    // The other change field is skipped on purpose, and said so.
    assert!(out.events.iter().any(|e| matches!(e, InboundEvent::Ignored { reason } if reason.contains("account_review_update"))));
    assert_eq!(out.response.status, 200);
}

#[test]
fn whatsapp_text_sent_as_unicode_escapes_decodes_to_the_original_text() {
    let out = bundled_plugin("whatsapp")
        .parse_inbound(&post(fixture("whatsapp_multi.json")))
        .unwrap();
    let msgs = messages(&out.events);
    assert_eq!(
        text(msgs[0]),
        "Is the office chair still à 49€? See https://shop.example/chair 😀"
    );
    assert_eq!(msgs[0].display_name.as_deref(), Some("José Müller"));
}

#[test]
fn whatsapp_message_of_an_unknown_type_is_unsupported_not_an_error() {
    let out = bundled_plugin("whatsapp")
        .parse_inbound(&post(fixture("whatsapp_multi.json")))
        .unwrap();
    let msgs = messages(&out.events);
    assert_eq!(
        msgs[4].contents[0],
        Content::Unsupported {
            kind: "poll".into()
        }
    );
}

#[test]
fn whatsapp_status_notification_yields_statuses_and_no_messages() {
    let out = bundled_plugin("whatsapp")
        .parse_inbound(&post(fixture("whatsapp_status.json")))
        .unwrap();
    assert!(messages(&out.events).is_empty());
    let statuses: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            InboundEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].provider_message_id, "wamid.OUT1");
    assert_eq!(statuses[0].state, DeliveryState::Delivered);
    assert_eq!(statuses[1].state, DeliveryState::Failed);
    assert_eq!(
        statuses[1].error.as_deref(),
        Some("131047 Re-engagement message")
    );
    assert_eq!(statuses[1].recipient.as_ref().unwrap().id, "16505551234");
}

#[test]
fn whatsapp_business_scoped_user_id_is_the_identity_when_present() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Kim","username":"kim.s"},"user_id":"US.13491208655302741918"}],"messages":[{"from_user_id":"US.13491208655302741918","id":"wamid.B1","timestamp":"1739321024","type":"text","text":{"body":"hi"}}]}}]}]}"#;
    let out = bundled_plugin("whatsapp")
        .parse_inbound(&post(body.to_vec()))
        .unwrap();
    let m = messages(&out.events)[0];
    assert_eq!(m.sender.id, "US.13491208655302741918");
    // No wa_id, so no phone claim at all.
    assert!(!m.claims.iter().any(|c| c.kind == ClaimKind::Phone));
    assert!(m.claims.contains(&Claim {
        kind: ClaimKind::Username,
        value: "kim.s".into(),
        verified: false
    }));
}

#[test]
fn whatsapp_renders_a_text_reply_without_credentials() {
    let msg = OutboundMessage {
        message_id: "out-1".into(),
        recipient: ChannelIdentity {
            channel: "whatsapp".into(),
            scope: "106540352242922".into(),
            id: "16505551234".into(),
        },
        content: OutboundContent::text("Welcome back, José!"),
        reply_handle: None,
        context: Default::default(),
    };
    let OutboundRequest::Http(call) = bundled_plugin("whatsapp").render_outbound(&msg).unwrap()
    else {
        panic!("expected an HTTP call");
    };
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/106540352242922/messages");
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["to"], "16505551234");
    assert_eq!(body["text"]["body"], "Welcome back, José!");
    assert_eq!(body["messaging_product"], "whatsapp");
    let cred = call.credential.unwrap();
    assert_eq!(
        (
            cred.name.as_str(),
            cred.prefix.as_str(),
            cred.secret.as_str()
        ),
        ("authorization", "Bearer ", "access_token")
    );
}

#[test]
fn whatsapp_refuses_a_phone_number_id_that_is_not_digits() {
    let msg = OutboundMessage {
        message_id: "out-3".into(),
        recipient: ChannelIdentity {
            channel: "whatsapp".into(),
            scope: "123/other/endpoint?".into(),
            id: "16505551234".into(),
        },
        content: OutboundContent::text("hi"),
        reply_handle: None,
        context: Default::default(),
    };
    let err = bundled_plugin("whatsapp")
        .render_outbound(&msg)
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("invalid outbound message: the phone_number_id scope must be digits"),
        "{err}"
    );
}

#[test]
fn whatsapp_refuses_a_reply_over_its_length_limit() {
    let msg = OutboundMessage {
        message_id: "out-2".into(),
        recipient: ChannelIdentity {
            channel: "whatsapp".into(),
            scope: "1".into(),
            id: "2".into(),
        },
        content: OutboundContent::text("x".repeat(4097)),
        reply_handle: None,
        context: Default::default(),
    };
    let err = bundled_plugin("whatsapp")
        .render_outbound(&msg)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin whatsapp@0.1.0: `render-outbound` returned an error: invalid outbound message: text is 4097 characters; WhatsApp accepts at most 4096"
    );
}

// --- Telegram -------------------------------------------------------------

fn telegram_request(name: &str) -> InboundRequest {
    let mut req = post(fixture(name));
    req.context.settings = vec![("bot_id".into(), "7012345678".into())];
    req
}

#[test]
fn telegram_start_with_a_payload_yields_a_link_token() {
    let out = bundled_plugin("telegram")
        .parse_inbound(&telegram_request("telegram_start.json"))
        .unwrap();
    let m = messages(&out.events)[0];
    assert_eq!(m.link_token.as_deref(), Some("lt_9fQ2-x7"));
    assert_eq!(m.provider_message_id, "7012345678:413581328");
    assert_eq!(
        m.sender,
        ChannelIdentity {
            channel: "telegram".into(),
            scope: "7012345678".into(),
            id: "123456789".into()
        }
    );
    assert_eq!(m.display_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(m.timestamp, 1_795_579_704);
}

#[test]
fn telegram_contact_the_user_shared_about_themselves_is_a_verified_phone() {
    let out = bundled_plugin("telegram")
        .parse_inbound(&telegram_request("telegram_contact.json"))
        .unwrap();
    let m = messages(&out.events)[0];
    assert!(m.claims.contains(&Claim {
        kind: ClaimKind::Phone,
        value: "+447700900123".into(),
        verified: true
    }));
    // Telegram's usual form has no `+`: the same international number.
    let without_plus = String::from_utf8(fixture("telegram_contact.json"))
        .unwrap()
        .replace("\"+447700900123\"", "\"447700900123\"");
    let out = bundled_plugin("telegram")
        .parse_inbound(&{
            let mut r = telegram_request("telegram_contact.json");
            r.body = without_plus.into_bytes();
            r
        })
        .unwrap();
    assert!(messages(&out.events)[0].claims.contains(&Claim {
        kind: ClaimKind::Phone,
        value: "+447700900123".into(),
        verified: true
    }));
}

#[test]
fn telegram_contact_of_someone_else_says_nothing_about_the_sender() {
    let out = bundled_plugin("telegram")
        .parse_inbound(&telegram_request("telegram_other_contact.json"))
        .unwrap();
    let m = messages(&out.events)[0];
    assert!(
        !m.claims.iter().any(|c| c.kind == ClaimKind::Phone),
        "{:?}",
        m.claims
    );
}

#[test]
fn telegram_callback_query_is_answered_in_the_webhook_response() {
    let body = br#"{"update_id":9,"callback_query":{"id":"4382bfdwdsb323b2d9","from":{"id":123456789,"is_bot":false,"first_name":"Ada"},"data":"track-order","chat_instance":"1","message":{"message_id":5,"date":1795579800,"chat":{"id":123456789,"type":"private"}}}}"#;
    let out = bundled_plugin("telegram")
        .parse_inbound(&post(body.to_vec()))
        .unwrap();
    let m = messages(&out.events)[0];
    assert_eq!(
        m.contents[0],
        Content::Postback {
            payload: "track-order".into(),
            title: "track-order".into()
        }
    );
    // Without a configured bot id the scope is `default`.
    assert_eq!(m.sender.scope, "default");
    let answer: serde_json::Value = serde_json::from_slice(&out.response.body).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"method":"answerCallbackQuery","callback_query_id":"4382bfdwdsb323b2d9"})
    );
}

#[test]
fn telegram_update_of_an_unhandled_kind_is_ignored_with_its_kind() {
    let body = br#"{"update_id":10,"my_chat_member":{"chat":{"id":1,"type":"private"}}}"#;
    let out = bundled_plugin("telegram")
        .parse_inbound(&post(body.to_vec()))
        .unwrap();
    assert_eq!(
        out.events,
        vec![InboundEvent::Ignored {
            reason: "update kind `my_chat_member` is not handled".into()
        }]
    );
}

#[test]
fn telegram_reply_puts_the_bot_token_placeholder_in_the_path() {
    let msg = OutboundMessage {
        message_id: "out-3".into(),
        recipient: ChannelIdentity {
            channel: "telegram".into(),
            scope: "7012345678".into(),
            id: "123456789".into(),
        },
        content: OutboundContent::text("Linked! 👋"),
        reply_handle: None,
        context: Default::default(),
    };
    let OutboundRequest::Http(call) = bundled_plugin("telegram").render_outbound(&msg).unwrap()
    else {
        panic!("expected an HTTP call");
    };
    assert_eq!(call.path, "/bot{secret:bot_token}/sendMessage");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&call.body).unwrap(),
        serde_json::json!({"chat_id":123456789,"text":"Linked! 👋"})
    );
    assert!(call.credential.is_none());
}

// --- Discord --------------------------------------------------------------

#[test]
fn discord_ping_is_answered_pong_with_no_event() {
    let out = bundled_plugin("discord")
        .parse_inbound(&post(fixture("discord_ping.json")))
        .unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.response.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.response.body).unwrap(),
        serde_json::json!({"type":1})
    );
}

#[test]
fn discord_guild_command_is_flattened_and_deferred() {
    let out = bundled_plugin("discord")
        .parse_inbound(&post(fixture("discord_guild_command.json")))
        .unwrap();
    let m = messages(&out.events)[0];
    assert_eq!(
        text(m),
        "/ask question:Is my office chair shipped? urgent:true"
    );
    assert_eq!(
        m.sender,
        ChannelIdentity {
            channel: "discord".into(),
            scope: "1289391923891234567".into(),
            id: "80351110224678912".into()
        }
    );
    assert_eq!(m.display_name.as_deref(), Some("Sarah K"));
    assert_eq!(m.provider_message_id, "1300000000000000002");
    assert_eq!(
        m.reply_handle.as_deref(),
        Some("aW50ZXJhY3Rpb246MTMwMDAwMDAwMDAwMDAwMDAwMjp0b2tlbg")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.response.body).unwrap(),
        serde_json::json!({"type":5})
    );
}

#[test]
fn discord_dm_command_takes_the_top_level_user_and_flattens_subcommands() {
    let out = bundled_plugin("discord")
        .parse_inbound(&post(fixture("discord_dm_command.json")))
        .unwrap();
    let m = messages(&out.events)[0];
    assert_eq!(text(m), "/order status number:1042");
    assert_eq!(m.sender.id, "80351110224678912");
    assert_eq!(m.display_name.as_deref(), Some("sarahk"));
}

#[test]
fn discord_reply_goes_to_the_follow_up_webhook() {
    let msg = OutboundMessage {
        message_id: "out-4".into(),
        recipient: ChannelIdentity {
            channel: "discord".into(),
            scope: "1289391923891234567".into(),
            id: "80351110224678912".into(),
        },
        content: OutboundContent::text("Your chair shipped yesterday."),
        reply_handle: Some("aW50ZXJhY3Rpb24".into()),
        context: Default::default(),
    };
    let OutboundRequest::Http(call) = bundled_plugin("discord").render_outbound(&msg).unwrap()
    else {
        panic!("expected an HTTP call");
    };
    assert_eq!(call.path, "/webhooks/1289391923891234567/aW50ZXJhY3Rpb24");
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["content"], "Your chair shipped yesterday.");
    assert!(
        call.credential.is_none(),
        "follow-up webhooks need no bot token"
    );
    // A handle that would move the call elsewhere in the API is refused,
    // by name, before the host's own check.
    for handle in ["..", "tok/../../channels/1", "tok?x=1", ""] {
        let bad = OutboundMessage {
            reply_handle: Some(handle.into()),
            ..msg.clone()
        };
        let err = bundled_plugin("discord")
            .render_outbound(&bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "the interaction token is not a single URL path segment (A-Z a-z 0-9 - . _ ~)"
            ),
            "{handle}: {err}"
        );
    }
    let without = OutboundMessage {
        reply_handle: None,
        ..msg
    };
    assert!(
        bundled_plugin("discord")
            .render_outbound(&without)
            .unwrap_err()
            .to_string()
            .contains("Gateway websocket")
    );
}

// --- Web widget -----------------------------------------------------------

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

#[test]
fn widget_frame_becomes_a_message_from_the_verified_user() {
    let out = bundled_plugin("widget")
        .parse_inbound(&widget_request(br#"{"type":"message","text":"Do you have the office chair in black?","client_id":"c-1"}"#))
        .unwrap();
    let m = messages(&out.events)[0];
    assert_eq!(
        m.sender,
        ChannelIdentity {
            channel: "widget".into(),
            scope: "https://shop.example".into(),
            id: "user-42".into()
        }
    );
    assert_eq!(m.provider_message_id, "7:user-42:c-1");
    assert!(m.claims.iter().all(|c| c.verified));
    assert_eq!(m.display_name.as_deref(), Some("Sarah"));
    assert_eq!(out.response.status, 202);
}

#[test]
fn widget_frame_without_client_id_uses_the_host_request_id() {
    let out = bundled_plugin("widget")
        .parse_inbound(&widget_request(br#"{"text":"hi"}"#))
        .unwrap();
    assert_eq!(messages(&out.events)[0].provider_message_id, "req-1");
}

#[test]
fn widget_frame_with_empty_text_is_malformed() {
    let err = bundled_plugin("widget")
        .parse_inbound(&widget_request(br#"{"text":"  "}"#))
        .unwrap_err();
    assert_eq!(malformed(err), "body: `text` is empty");
}

#[test]
fn widget_reply_is_a_push_frame() {
    let msg = OutboundMessage {
        message_id: "out-5".into(),
        recipient: ChannelIdentity {
            channel: "widget".into(),
            scope: "https://shop.example".into(),
            id: "user-42".into(),
        },
        content: OutboundContent::text("Yes, in black too."),
        reply_handle: None,
        context: Default::default(),
    };
    let OutboundRequest::Push { frame } = bundled_plugin("widget").render_outbound(&msg).unwrap()
    else {
        panic!("expected a push frame");
    };
    let frame: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    assert_eq!(
        frame,
        serde_json::json!({"type":"message","id":"out-5","direction":"outbound","text":"Yes, in black too."})
    );
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
