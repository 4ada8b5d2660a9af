//! The Telegram plugin's behaviour, natively: Bot API updates
//! (`tests/fixtures/` at the repository root) in, events out; outbound
//! messages in, exact Bot API bodies out. The host's own handling of the
//! built component (sandbox limits, hostile input) is tested in
//! `gateway/server/tests/plugin_host.rs`.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::{Value, json};
use chatcrafter_plugin_sdk::testing::*;

use crate::Telegram;

const START: &[u8] = include_bytes!("../../../tests/fixtures/telegram_start.json");
const CONTACT: &[u8] = include_bytes!("../../../tests/fixtures/telegram_contact.json");
const OTHER_CONTACT: &[u8] = include_bytes!("../../../tests/fixtures/telegram_other_contact.json");
const BOT_ID: &str = "7012345678";
const NOW: u64 = 1_767_225_600;

/// A webhook update to a channel whose `bot_id` setting is configured.
fn telegram_request(body: &[u8]) -> Request {
    Request::post("/webhooks/telegram", body).setting("bot_id", BOT_ID)
}

fn parse(req: Request) -> Result<Inbound, ChannelError> {
    Telegram::parse_inbound(req.build())
}

fn render(content: OutboundContent) -> Result<OutboundRequest, ChannelError> {
    Telegram::render_outbound(outbound("telegram", BOT_ID, "123456789", content, NOW))
}

/// The Bot API method and body for `content`.
fn call_of(content: OutboundContent) -> (String, Value) {
    json_of(&render(content).unwrap())
}

fn choices(prompt: &str, options: &[(&str, &str)]) -> OutboundContent {
    OutboundContent::Choices(Choices {
        prompt: prompt.into(),
        options: options
            .iter()
            .map(|(id, title)| Choice {
                id: (*id).into(),
                title: (*title).into(),
            })
            .collect(),
    })
}

fn media(
    kind: MediaKind,
    source: MediaSource,
    caption: Option<&str>,
    filename: Option<&str>,
) -> OutboundContent {
    OutboundContent::Media(OutboundMedia {
        kind,
        source,
        caption: caption.map(String::from),
        filename: filename.map(String::from),
    })
}

// --- Manifest -------------------------------------------------------------

#[test]
fn telegram_manifest_declares_the_deep_link_limits_and_capabilities() {
    let m = Telegram::describe();
    assert_eq!(m.id, "telegram");
    assert_eq!(
        m.verification,
        Verification::SharedSecret(SharedSecretScheme {
            header: "x-telegram-bot-api-secret-token".into(),
            secret: "secret_token".into(),
        })
    );
    assert_eq!(m.handshake, Handshake::None);
    assert_eq!(
        m.capabilities,
        Capabilities::RECEIVE_MESSAGES
            | Capabilities::SEND_TEXT
            | Capabilities::SEND_MEDIA
            | Capabilities::SEND_CHOICES
            | Capabilities::LINK_TOKENS
    );
    // No reply window, and no templates to send outside one.
    assert_eq!(m.reply_window_seconds, None);
    assert_eq!(m.person_reply_window_seconds, None);
    assert_eq!(
        m.deep_links,
        ["https://t.me/{setting:bot_username}?start={token}"]
    );
    assert_eq!(
        m.outbound_limits,
        OutboundLimits {
            max_text_chars: 4096,
            max_choices: 20,
            max_choice_title_chars: 64,
            max_caption_chars: 1024,
        }
    );
    let settings: Vec<&str> = m.settings.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(settings, ["bot_id", "bot_username"]);
}

// --- Inbound --------------------------------------------------------------

#[test]
fn telegram_start_with_a_payload_yields_a_link_token() {
    let out = parse(telegram_request(START)).unwrap();
    let m = messages(&out)[0];
    assert_eq!(m.link_token.as_deref(), Some("lt_9fQ2-x7"));
    assert_eq!(m.provider_message_id, "7012345678:413581328");
    assert_eq!(m.sender, ChannelIdentity::new("7012345678", "123456789"));
    assert_eq!(m.display_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(m.timestamp, 1_795_579_704);
}

#[test]
fn telegram_contact_the_user_shared_about_themselves_is_a_verified_phone() {
    let out = parse(telegram_request(CONTACT)).unwrap();
    let m = messages(&out)[0];
    assert!(
        m.claims
            .contains(&Claim::verified(ClaimKind::Phone, "+447700900123"))
    );
    // Telegram's usual form has no `+`: the same international number.
    let without_plus = String::from_utf8(CONTACT.to_vec())
        .unwrap()
        .replace("\"+447700900123\"", "\"447700900123\"");
    let out = parse(telegram_request(without_plus.as_bytes())).unwrap();
    assert!(
        messages(&out)[0]
            .claims
            .contains(&Claim::verified(ClaimKind::Phone, "+447700900123"))
    );
}

#[test]
fn telegram_contact_of_someone_else_says_nothing_about_the_sender() {
    let out = parse(telegram_request(OTHER_CONTACT)).unwrap();
    let m = messages(&out)[0];
    assert!(
        !m.claims.iter().any(|c| c.kind == ClaimKind::Phone),
        "{:?}",
        m.claims
    );
}

#[test]
fn telegram_callback_query_is_answered_in_the_webhook_response() {
    let body = br#"{"update_id":9,"callback_query":{"id":"4382bfdwdsb323b2d9","from":{"id":123456789,"is_bot":false,"first_name":"Ada"},"data":"track-order","chat_instance":"1","message":{"message_id":5,"date":1795579800,"chat":{"id":123456789,"type":"private"}}}}"#;
    let out = parse(Request::post("/webhooks/telegram", body)).unwrap();
    let m = messages(&out)[0];
    assert_eq!(
        m.contents[0],
        Content::Postback(Postback {
            payload: "track-order".into(),
            title: "track-order".into()
        })
    );
    // Without a configured bot id the scope is `default`.
    assert_eq!(m.sender.scope, "default");
    let answer: Value = chatcrafter_plugin_sdk::serde_json::from_slice(&out.response.body).unwrap();
    assert_eq!(
        answer,
        json!({"method":"answerCallbackQuery","callback_query_id":"4382bfdwdsb323b2d9"})
    );
}

#[test]
fn telegram_callback_query_is_titled_with_the_pressed_buttons_text() {
    let body = json!({"update_id": 11, "callback_query": {
        "id": "4382bfdwdsb323b2e0",
        "from": {"id": 123456789, "is_bot": false, "first_name": "Ada"},
        "chat_instance": "1",
        "data": "human",
        "message": {
            "message_id": 6, "date": 1795579900,
            "chat": {"id": 123456789, "type": "private"},
            "text": "How can we help?",
            "reply_markup": {"inline_keyboard": [
                [{"text": "Track order", "callback_data": "track"}],
                [{"text": "Talk to a person", "callback_data": "human"}],
                [{"text": "Our shop", "url": "https://shop.example"}]
            ]}
        }
    }});
    let out = parse(telegram_request(body.to_string().as_bytes())).unwrap();
    let m = messages(&out)[0];
    assert_eq!(
        m.contents,
        [Content::Postback(Postback {
            payload: "human".into(),
            title: "Talk to a person".into()
        })]
    );
    assert_eq!(m.provider_message_id, "7012345678:11");
    assert_eq!(m.sender, ChannelIdentity::new(BOT_ID, "123456789"));
    // The message's date, not the receive time.
    assert_eq!(m.timestamp, 1_795_579_900);
}

#[test]
fn telegram_update_of_an_unhandled_kind_is_ignored_with_its_kind() {
    let body = br#"{"update_id":10,"my_chat_member":{"chat":{"id":1,"type":"private"}}}"#;
    let out = parse(Request::post("/webhooks/telegram", body)).unwrap();
    assert_eq!(
        out.events,
        vec![InboundEvent::ignored(
            "update kind `my_chat_member` is not handled"
        )]
    );
}

// --- Outbound -------------------------------------------------------------

#[test]
fn telegram_reply_puts_the_bot_token_placeholder_in_the_path() {
    let OutboundRequest::Http(call) = render(OutboundContent::Text("Linked! 👋".into())).unwrap()
    else {
        panic!("expected an HTTP call");
    };
    assert_eq!(call.path, "/bot{secret:bot_token}/sendMessage");
    assert_eq!(
        chatcrafter_plugin_sdk::serde_json::from_slice::<Value>(&call.body).unwrap(),
        json!({"chat_id":123456789,"text":"Linked! 👋"})
    );
    assert!(call.credential.is_none());
    assert_eq!(call.sent_id.as_deref(), Some("/result/message_id"));
}

#[test]
fn telegram_choices_are_an_inline_keyboard_one_button_a_row() {
    let (path, body) = call_of(choices(
        "How can we help?",
        &[("track", "Track order"), ("human", "Talk to a person")],
    ));
    assert_eq!(path, "/bot{secret:bot_token}/sendMessage");
    assert_eq!(
        body,
        json!({
            "chat_id": 123456789,
            "text": "How can we help?",
            "reply_markup": {"inline_keyboard": [
                [{"text": "Track order", "callback_data": "track"}],
                [{"text": "Talk to a person", "callback_data": "human"}],
            ]},
        })
    );
}

#[test]
fn telegram_callback_data_over_64_bytes_is_refused() {
    // 64 bytes fit; 65 (or none) do not.
    let fits = "x".repeat(64);
    assert!(render(choices("?", &[(&fits, "OK")])).is_ok());
    for id in ["x".repeat(65), String::new()] {
        let err = render(choices("?", &[("ok", "OK"), (&id, "Too long")])).unwrap_err();
        assert_eq!(
            err,
            ChannelError::InvalidOutbound(format!(
                "choice id is {} bytes; Telegram's callback_data takes 1 to 64",
                id.len()
            ))
        );
    }
}

#[test]
fn telegram_photo_by_url_with_caption_is_send_photo() {
    let (path, body) = call_of(media(
        MediaKind::Image,
        MediaSource::Url("https://shop.example/chair-black.jpg".into()),
        Some("The chair in black"),
        None,
    ));
    assert_eq!(path, "/bot{secret:bot_token}/sendPhoto");
    assert_eq!(
        body,
        json!({
            "chat_id": 123456789,
            "photo": "https://shop.example/chair-black.jpg",
            "caption": "The chair in black",
        })
    );
}

#[test]
fn telegram_document_by_file_id_with_caption_is_send_document() {
    let (path, body) = call_of(media(
        MediaKind::Document,
        MediaSource::MediaId("BQACAgIAAxkBAAIBZ2Y".into()),
        Some("Your invoice"),
        Some("invoice-1042.pdf"),
    ));
    assert_eq!(path, "/bot{secret:bot_token}/sendDocument");
    assert_eq!(
        body,
        json!({
            "chat_id": 123456789,
            "document": "BQACAgIAAxkBAAIBZ2Y",
            "caption": "Your invoice",
        })
    );
    // Audio and video have their own methods; no caption, no field.
    let (path, body) = call_of(media(
        MediaKind::Audio,
        MediaSource::Url("https://shop.example/a.mp3".into()),
        None,
        None,
    ));
    assert_eq!(path, "/bot{secret:bot_token}/sendAudio");
    assert_eq!(
        body,
        json!({"chat_id": 123456789, "audio": "https://shop.example/a.mp3"})
    );
    let (path, _) = call_of(media(
        MediaKind::Video,
        MediaSource::MediaId("v1".into()),
        None,
        None,
    ));
    assert_eq!(path, "/bot{secret:bot_token}/sendVideo");
}

#[test]
fn telegram_template_is_refused() {
    let err = render(OutboundContent::Template(Template {
        name: "order_update".into(),
        language: "en_US".into(),
        parameters: vec![],
    }))
    .unwrap_err();
    assert_eq!(
        err,
        ChannelError::InvalidOutbound("Telegram has no message templates".into())
    );
}

#[test]
fn telegram_recipient_that_is_not_a_chat_id_is_refused() {
    let msg = outbound(
        "telegram",
        BOT_ID,
        "ada",
        OutboundContent::Text("hi".into()),
        NOW,
    );
    assert_eq!(
        Telegram::render_outbound(msg).unwrap_err(),
        ChannelError::InvalidOutbound("recipient id `ada` is not a Telegram chat id".into())
    );
}
