//! The Discord plugin's behaviour, natively: interaction bodies
//! (`tests/fixtures/` at the repository root) in, events out; outbound
//! messages in, exact follow-up webhook bodies out. The host's own handling
//! of the built component (sandbox limits, hostile input) is tested in
//! `gateway/server/tests/plugin_host.rs`.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::{Value, json};
use chatcrafter_plugin_sdk::testing::*;

use crate::Discord;

const PING: &[u8] = include_bytes!("../../../tests/fixtures/discord_ping.json");
const GUILD_COMMAND: &[u8] = include_bytes!("../../../tests/fixtures/discord_guild_command.json");
const DM_COMMAND: &[u8] = include_bytes!("../../../tests/fixtures/discord_dm_command.json");
const APP_ID: &str = "1289391923891234567";
const USER_ID: &str = "80351110224678912";
const NOW: u64 = 1_767_225_600;

fn parse(body: &[u8]) -> Result<Inbound, ChannelError> {
    Discord::parse_inbound(Request::post("/webhooks/discord", body).build())
}

fn text(m: &InboundMessage) -> &str {
    match &m.contents[0] {
        Content::Text(text) => text,
        other => panic!("not text: {other:?}"),
    }
}

fn response_json(out: &Inbound) -> Value {
    chatcrafter_plugin_sdk::serde_json::from_slice(&out.response.body).unwrap()
}

/// A reply to the interaction whose token is `aW50ZXJhY3Rpb24`.
fn reply(content: OutboundContent) -> OutboundMessage {
    OutboundMessage {
        reply_handle: Some("aW50ZXJhY3Rpb24".into()),
        ..outbound("discord", APP_ID, USER_ID, content, NOW)
    }
}

fn render(content: OutboundContent) -> Result<OutboundRequest, ChannelError> {
    Discord::render_outbound(reply(content))
}

/// The follow-up body for `content`, checking the path.
fn body_of(content: OutboundContent) -> Value {
    let (path, body) = json_of(&render(content).unwrap());
    assert_eq!(path, "/webhooks/1289391923891234567/aW50ZXJhY3Rpb24");
    body
}

fn choices(prompt: &str, options: &[(String, String)]) -> OutboundContent {
    OutboundContent::Choices(Choices {
        prompt: prompt.into(),
        options: options
            .iter()
            .map(|(id, title)| Choice {
                id: id.clone(),
                title: title.clone(),
            })
            .collect(),
    })
}

/// `n` options `o1`…`on` titled `Option 1`….
fn numbered(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| (format!("o{i}"), format!("Option {i}")))
        .collect()
}

fn media(kind: MediaKind, source: MediaSource, caption: Option<&str>) -> OutboundContent {
    OutboundContent::Media(OutboundMedia {
        kind,
        source,
        caption: caption.map(String::from),
        filename: None,
    })
}

// --- Manifest -------------------------------------------------------------

#[test]
fn discord_manifest_declares_ed25519_limits_and_capabilities() {
    let m = Discord::describe();
    assert_eq!(m.id, "discord");
    assert_eq!(
        m.verification,
        Verification::Ed25519(Ed25519Scheme {
            signature_header: "x-signature-ed25519".into(),
            timestamp_header: "x-signature-timestamp".into(),
            encoding: Encoding::Hex,
            max_age_seconds: 300,
            public_key: "public_key".into(),
        })
    );
    assert_eq!(
        m.capabilities,
        Capabilities::RECEIVE_MESSAGES
            | Capabilities::SEND_TEXT
            | Capabilities::SEND_MEDIA
            | Capabilities::SEND_CHOICES
            | Capabilities::DEFERRED_REPLIES
    );
    assert_eq!(m.reply_window_seconds, None);
    assert_eq!(m.person_reply_window_seconds, None);
    assert!(m.deep_links.is_empty());
    assert_eq!(
        m.outbound_limits,
        OutboundLimits {
            max_text_chars: 2000,
            max_choices: 25,
            max_choice_title_chars: 80,
            max_caption_chars: 2000,
        }
    );
}

// --- Inbound --------------------------------------------------------------

#[test]
fn discord_ping_is_answered_pong_with_no_event() {
    let out = parse(PING).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.response.status, 200);
    assert_eq!(response_json(&out), json!({"type":1}));
}

#[test]
fn discord_guild_command_is_flattened_and_deferred() {
    let out = parse(GUILD_COMMAND).unwrap();
    let m = messages(&out)[0];
    assert_eq!(
        text(m),
        "/ask question:Is my office chair shipped? urgent:true"
    );
    assert_eq!(m.sender, ChannelIdentity::new(APP_ID, USER_ID));
    assert_eq!(m.display_name.as_deref(), Some("Sarah K"));
    assert_eq!(m.provider_message_id, "1300000000000000002");
    assert_eq!(
        m.reply_handle.as_deref(),
        Some("aW50ZXJhY3Rpb246MTMwMDAwMDAwMDAwMDAwMDAwMjp0b2tlbg")
    );
    assert_eq!(response_json(&out), json!({"type":5}));
}

#[test]
fn discord_dm_command_takes_the_top_level_user_and_flattens_subcommands() {
    let out = parse(DM_COMMAND).unwrap();
    let m = messages(&out)[0];
    assert_eq!(text(m), "/order status number:1042");
    assert_eq!(m.sender.id, "80351110224678912");
    assert_eq!(m.display_name.as_deref(), Some("sarahk"));
}

#[test]
fn discord_button_press_is_a_postback_titled_with_the_buttons_label() {
    let body = json!({
        "id": "1300000000000000004",
        "application_id": APP_ID,
        "type": 3,
        "token": "aW50ZXJhY3Rpb246NA",
        "member": {"user": {"id": USER_ID, "username": "sarahk", "global_name": "Sarah K"}},
        "data": {"custom_id": "human", "component_type": 2},
        "message": {
            "id": "1300000000000000010",
            "content": "How can we help?",
            "components": [{"type": 1, "components": [
                {"type": 2, "style": 1, "label": "Track order", "custom_id": "track"},
                {"type": 2, "style": 1, "label": "Talk to a person", "custom_id": "human"}
            ]}]
        }
    });
    let out = parse(body.to_string().as_bytes()).unwrap();
    let m = messages(&out)[0];
    assert_eq!(
        m.contents,
        [Content::Postback(Postback {
            payload: "human".into(),
            title: "Talk to a person".into()
        })]
    );
    assert_eq!(m.sender, ChannelIdentity::new(APP_ID, USER_ID));
    assert_eq!(m.reply_handle.as_deref(), Some("aW50ZXJhY3Rpb246NA"));
    // Acknowledged without a visible answer; the reply follows up.
    assert_eq!(response_json(&out), json!({"type":6}));

    // Without the message's components the title is the custom_id.
    let mut bare = body;
    bare.as_object_mut().unwrap().remove("message");
    let out = parse(bare.to_string().as_bytes()).unwrap();
    assert_eq!(
        messages(&out)[0].contents,
        [Content::Postback(Postback {
            payload: "human".into(),
            title: "human".into()
        })]
    );
}

#[test]
fn discord_modal_submission_is_a_postback_of_the_typed_values() {
    let body = json!({
        "id": "1300000000000000005",
        "application_id": APP_ID,
        "type": 5,
        "token": "aW50ZXJhY3Rpb246NQ",
        "user": {"id": USER_ID, "username": "sarahk"},
        "data": {"custom_id": "address", "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "street", "value": "1 Main St"}]},
            {"type": 1, "components": [{"type": 4, "custom_id": "city", "value": "Berlin"}]}
        ]}
    });
    let out = parse(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        messages(&out)[0].contents,
        [Content::Postback(Postback {
            payload: "address".into(),
            title: "1 Main St\nBerlin".into()
        })]
    );
    assert_eq!(response_json(&out), json!({"type":6}));
}

// --- Outbound -------------------------------------------------------------

#[test]
fn discord_reply_goes_to_the_follow_up_webhook() {
    let msg = reply(OutboundContent::Text(
        "Your chair shipped yesterday.".into(),
    ));
    let OutboundRequest::Http(call) = Discord::render_outbound(msg.clone()).unwrap() else {
        panic!("expected an HTTP call");
    };
    assert_eq!(call.path, "/webhooks/1289391923891234567/aW50ZXJhY3Rpb24");
    let body: Value = chatcrafter_plugin_sdk::serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["content"], "Your chair shipped yesterday.");
    // Nobody is pinged by what the agent writes.
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
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
        assert_eq!(
            Discord::render_outbound(bad).unwrap_err(),
            ChannelError::InvalidOutbound(
                "the interaction token is not a single URL path segment (A-Z a-z 0-9 - . _ ~)"
                    .into()
            ),
            "{handle}"
        );
    }
    let without = OutboundMessage {
        reply_handle: None,
        ..msg
    };
    let err = Discord::render_outbound(without).unwrap_err();
    assert!(
        matches!(&err, ChannelError::InvalidOutbound(why) if why.contains("Gateway websocket")),
        "{err:?}"
    );
}

#[test]
fn discord_choices_are_buttons_in_action_rows_of_five() {
    let body = body_of(choices("Pick one", &numbered(7)));
    let button = |i: usize| json!({"type": 2, "style": 1, "label": format!("Option {i}"), "custom_id": format!("o{i}")});
    assert_eq!(
        body,
        json!({
            "allowed_mentions": {"parse": []},
            "content": "Pick one",
            "components": [
                {"type": 1, "components": (1..=5).map(button).collect::<Vec<_>>()},
                {"type": 1, "components": (6..=7).map(button).collect::<Vec<_>>()},
            ],
        })
    );
    // Twenty-five fill five rows; more, or none, are refused.
    let rows = body_of(choices("?", &numbered(25)))["components"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 5);
    for n in [0, 26] {
        assert_eq!(
            render(choices("?", &numbered(n))).unwrap_err(),
            ChannelError::InvalidOutbound(format!("{n} options; Discord takes 1 to 25"))
        );
    }
    // A custom_id is at most 100 bytes.
    let long = vec![("x".repeat(101), "Long".to_string())];
    assert_eq!(
        render(choices("?", &long)).unwrap_err(),
        ChannelError::InvalidOutbound(
            "choice id is 101 bytes; Discord's custom_id takes 1 to 100".into()
        )
    );
}

#[test]
fn discord_image_by_url_is_an_embed() {
    let body = body_of(media(
        MediaKind::Image,
        MediaSource::Url("https://shop.example/chair-black.jpg".into()),
        Some("The chair in black"),
    ));
    assert_eq!(
        body,
        json!({
            "allowed_mentions": {"parse": []},
            "content": "The chair in black",
            "embeds": [{"image": {"url": "https://shop.example/chair-black.jpg"}}],
        })
    );
}

#[test]
fn discord_other_media_is_a_link_in_the_content() {
    let body = body_of(media(
        MediaKind::Document,
        MediaSource::Url("https://shop.example/invoice-1042.pdf".into()),
        Some("Your invoice"),
    ));
    assert_eq!(
        body,
        json!({
            "allowed_mentions": {"parse": []},
            "content": "Your invoice\nhttps://shop.example/invoice-1042.pdf",
        })
    );
    let body = body_of(media(
        MediaKind::Video,
        MediaSource::Url("https://shop.example/assembly.mp4".into()),
        None,
    ));
    assert_eq!(body["content"], "https://shop.example/assembly.mp4");
}

#[test]
fn discord_media_by_id_is_refused() {
    let err = render(media(
        MediaKind::Image,
        MediaSource::MediaId("1479537139650973".into()),
        None,
    ))
    .unwrap_err();
    assert_eq!(
        err,
        ChannelError::InvalidOutbound("Discord follow-ups take media by URL only".into())
    );
}

#[test]
fn discord_template_is_refused() {
    let err = render(OutboundContent::Template(Template {
        name: "order_update".into(),
        language: "en_US".into(),
        parameters: vec![],
    }))
    .unwrap_err();
    assert_eq!(
        err,
        ChannelError::InvalidOutbound("Discord has no message templates".into())
    );
}
