//! The WhatsApp plugin's behaviour, natively: Meta's webhook bodies
//! (`tests/fixtures/` at the repository root) in, events out; outbound
//! messages in, exact Cloud API bodies out. The host's own handling of the
//! built component (sandbox limits, hostile input) is tested in
//! `gateway/server/tests/plugin_host.rs`.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::{Value, json};
use chatcrafter_plugin_sdk::testing::*;

use crate::WhatsApp;

const MULTI: &[u8] = include_bytes!("../../../tests/fixtures/whatsapp_multi.json");
const STATUS: &[u8] = include_bytes!("../../../tests/fixtures/whatsapp_status.json");
const PHONE_NUMBER_ID: &str = "106540352242922";
const WA_ID: &str = "16505551234";
const NOW: u64 = 1_767_225_600;

fn parse(body: &[u8]) -> Result<Inbound, ChannelError> {
    WhatsApp::parse_inbound(Request::post("/webhooks/whatsapp", body).build())
}

fn text(m: &InboundMessage) -> &str {
    match &m.contents[0] {
        Content::Text(text) => text,
        other => panic!("not text: {other:?}"),
    }
}

fn render(content: OutboundContent) -> Result<OutboundRequest, ChannelError> {
    WhatsApp::render_outbound(outbound("whatsapp", PHONE_NUMBER_ID, WA_ID, content, NOW))
}

/// The body of the Cloud API call for `content`, checking the path.
fn body_of(content: OutboundContent) -> Value {
    let (path, body) = json_of(&render(content).unwrap());
    assert_eq!(path, "/106540352242922/messages");
    body
}

/// `message` with the recipient fields every Cloud API message carries.
fn to_customer(message: Value) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
    });
    for (k, v) in message.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
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
fn whatsapp_manifest_declares_the_window_deep_link_limits_and_capabilities() {
    let m = WhatsApp::describe();
    assert_eq!(m.id, "whatsapp");
    assert!(matches!(
        &m.verification,
        Verification::HmacSha256(s) if s.header == "x-hub-signature-256"
            && s.prefix == "sha256="
            && s.signed_template == "{body}"
            && s.secret == "app_secret"
    ));
    assert!(matches!(
        &m.handshake,
        Handshake::QueryChallenge(q) if q.token_secret == "verify_token"
            && q.challenge_param == "hub.challenge"
    ));
    assert_eq!(
        m.capabilities,
        Capabilities::RECEIVE_MESSAGES
            | Capabilities::DELIVERY_STATUS
            | Capabilities::SEND_TEXT
            | Capabilities::SEND_MEDIA
            | Capabilities::SEND_CHOICES
            | Capabilities::SEND_TEMPLATES
            | Capabilities::LINK_TOKENS
    );
    assert_eq!(m.reply_window_seconds, Some(86_400));
    assert_eq!(m.person_reply_window_seconds, None);
    assert_eq!(
        m.deep_links,
        ["https://wa.me/{setting:display_phone_number}?text={token}"]
    );
    assert_eq!(
        m.outbound_limits,
        OutboundLimits {
            max_text_chars: 4096,
            max_choices: 10,
            max_choice_title_chars: 20,
            max_caption_chars: 1024,
        }
    );
    assert!(m.settings.iter().any(|s| s.name == "display_phone_number"));
}

// --- Inbound --------------------------------------------------------------

#[test]
fn whatsapp_notification_with_several_entries_and_changes_yields_every_message() {
    let out = parse(MULTI).unwrap();
    let msgs = messages(&out);
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
    assert_eq!(msgs[0].sender, ChannelIdentity::new(PHONE_NUMBER_ID, WA_ID));
    assert_eq!(msgs[3].sender.scope, "206540352242922");
    assert_eq!(msgs[0].timestamp, 1_739_321_024);
    // wa_id is a phone WhatsApp verified; the profile name is not verified.
    assert!(
        msgs[0]
            .claims
            .contains(&Claim::verified(ClaimKind::Phone, "+16505551234"))
    );
    assert!(
        msgs[0]
            .claims
            .contains(&Claim::unverified(ClaimKind::Name, "José Müller"))
    );
    assert!(
        matches!(&msgs[1].contents[0], Content::Media(Media { reference, caption: Some(c), .. }) if reference == "1479537139650973" && c == "this one")
    );
    assert!(
        matches!(&msgs[2].contents[0], Content::Postback(Postback { payload, title }) if payload == "track-order" && title == "Track order")
    );
    assert!(
        matches!(&msgs[3].contents[0], Content::Location(Location { latitude, name: Some(n), .. }) if *latitude == 52.52 && n == "Alexanderplatz")
    );
    // The other change field is skipped on purpose, and said so.
    assert!(out.events.iter().any(
        |e| matches!(e, InboundEvent::Ignored(Ignored { reason }) if reason.contains("account_review_update"))
    ));
    assert_eq!(out.response.status, 200);
}

#[test]
fn whatsapp_text_sent_as_unicode_escapes_decodes_to_the_original_text() {
    let out = parse(MULTI).unwrap();
    let msgs = messages(&out);
    assert_eq!(
        text(msgs[0]),
        "Is the office chair still à 49€? See https://shop.example/chair 😀"
    );
    assert_eq!(msgs[0].display_name.as_deref(), Some("José Müller"));
}

#[test]
fn whatsapp_message_of_an_unknown_type_is_unsupported_not_an_error() {
    let out = parse(MULTI).unwrap();
    let msgs = messages(&out);
    assert_eq!(msgs[4].contents[0], Content::Unsupported("poll".into()));
}

#[test]
fn whatsapp_status_notification_yields_statuses_and_no_messages() {
    let out = parse(STATUS).unwrap();
    assert!(messages(&out).is_empty());
    let statuses = statuses(&out);
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
    let out = parse(body).unwrap();
    let m = messages(&out)[0];
    assert_eq!(m.sender.id, "US.13491208655302741918");
    // No wa_id, so no phone claim at all.
    assert!(!m.claims.iter().any(|c| c.kind == ClaimKind::Phone));
    assert!(
        m.claims
            .contains(&Claim::unverified(ClaimKind::Username, "kim.s"))
    );
}

#[test]
fn whatsapp_click_to_whatsapp_ad_is_the_messages_referral() {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages",
        "value": {
            "metadata": {"phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Sarah"}, "wa_id": WA_ID}],
            "messages": [{
                "from": WA_ID, "id": "wamid.AD1", "timestamp": "1739321024", "type": "text",
                "text": {"body": "Is this chair still available?"},
                "referral": {
                    "source_url": "https://fb.me/3cr4Wqqkv",
                    "source_id": "120210987654321098",
                    "source_type": "ad",
                    "headline": "Office chairs, 30% off",
                    "body": "Only this week",
                    "media_type": "image",
                    "image_url": "https://scontent.xx.fbcdn.net/chair.jpg",
                    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-GABDLOPaOdRMv-_zfUQ2a"
                }
            }]
        }
    }]}]});
    let out = parse(body.to_string().as_bytes()).unwrap();
    let m = messages(&out)[0];
    assert_eq!(texts(&out), ["Is this chair still available?"]);
    assert_eq!(
        m.referral,
        Some(Referral {
            source_type: "ad".into(),
            source_id: Some("120210987654321098".into()),
            click_id: Some(
                "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-GABDLOPaOdRMv-_zfUQ2a"
                    .into()
            ),
            link_ref: None,
            url: Some("https://fb.me/3cr4Wqqkv".into()),
        })
    );
    // A message without one has none; a referral without a source type is
    // an ad's.
    assert_eq!(messages(&parse(MULTI).unwrap())[0].referral, None);
    let bare = body.to_string().replace(r#""source_type":"ad","#, "");
    let out = parse(bare.as_bytes()).unwrap();
    assert_eq!(
        messages(&out)[0].referral.as_ref().unwrap().source_type,
        "ad"
    );
}

#[test]
fn whatsapp_text_that_is_or_ends_with_a_link_token_carries_it() {
    let with_text = |t: &str| {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{
            "field": "messages",
            "value": {"metadata": {"phone_number_id": PHONE_NUMBER_ID},
                      "messages": [{"from": WA_ID, "id": "wamid.L", "type": "text", "text": {"body": t}}]}
        }]}]});
        let out = parse(body.to_string().as_bytes()).unwrap();
        messages(&out)[0].link_token.clone()
    };
    let token = "Q2hhdENyYWZ0ZXJUb2tlbg";
    assert_eq!(with_text(token).as_deref(), Some(token));
    assert_eq!(
        with_text(&format!("Hi, continuing my chat ref:{token}")).as_deref(),
        Some(token)
    );
    assert_eq!(with_text(&format!("my code is {token}")), None);
    assert_eq!(with_text("ref:short"), None);
}

// --- Outbound -------------------------------------------------------------

#[test]
fn whatsapp_renders_a_text_reply_without_credentials() {
    let msg = OutboundMessage {
        message_id: "out-1".into(),
        ..outbound(
            "whatsapp",
            PHONE_NUMBER_ID,
            WA_ID,
            OutboundContent::Text("Welcome back, José!".into()),
            NOW,
        )
    };
    let OutboundRequest::Http(call) = WhatsApp::render_outbound(msg).unwrap() else {
        panic!("expected an HTTP call");
    };
    assert_eq!(call.method, Method::Post);
    assert_eq!(call.path, "/106540352242922/messages");
    let body: Value = chatcrafter_plugin_sdk::serde_json::from_slice(&call.body).unwrap();
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
    assert_eq!(call.sent_id.as_deref(), Some("/messages/0/id"));
    assert_eq!(
        body,
        to_customer(
            json!({"type": "text", "text": {"preview_url": false, "body": "Welcome back, José!"}})
        )
    );
}

#[test]
fn whatsapp_refuses_a_phone_number_id_that_is_not_digits() {
    let msg = outbound(
        "whatsapp",
        "123/other/endpoint?",
        WA_ID,
        OutboundContent::Text("hi".into()),
        NOW,
    );
    assert_eq!(
        WhatsApp::render_outbound(msg).unwrap_err(),
        ChannelError::InvalidOutbound("the phone_number_id scope must be digits".into())
    );
}

#[test]
fn whatsapp_refuses_a_reply_over_its_length_limit() {
    let msg = outbound(
        "whatsapp",
        "1",
        "2",
        OutboundContent::Text("x".repeat(4097)),
        NOW,
    );
    assert_eq!(
        WhatsApp::render_outbound(msg).unwrap_err(),
        ChannelError::InvalidOutbound(
            "text is 4097 characters; WhatsApp accepts at most 4096".into()
        )
    );
}

#[test]
fn whatsapp_up_to_three_choices_are_reply_buttons() {
    let body = body_of(choices(
        "How can we help?",
        &[
            ("track", "Track order"),
            ("return", "Return an item"),
            ("human", "Talk to a person"),
        ],
    ));
    assert_eq!(
        body,
        to_customer(json!({"type": "interactive", "interactive": {
            "type": "button",
            "body": {"text": "How can we help?"},
            "action": {"buttons": [
                {"type": "reply", "reply": {"id": "track", "title": "Track order"}},
                {"type": "reply", "reply": {"id": "return", "title": "Return an item"}},
                {"type": "reply", "reply": {"id": "human", "title": "Talk to a person"}},
            ]},
        }}))
    );
}

#[test]
fn whatsapp_four_to_ten_choices_are_a_list() {
    let options: Vec<(String, String)> = (1..=4)
        .map(|i| (format!("size-{i}"), format!("Size {i}")))
        .collect();
    let refs: Vec<(&str, &str)> = options
        .iter()
        .map(|(i, t)| (i.as_str(), t.as_str()))
        .collect();
    let body = body_of(choices("Which size?", &refs));
    assert_eq!(
        body,
        to_customer(json!({"type": "interactive", "interactive": {
            "type": "list",
            "body": {"text": "Which size?"},
            "action": {"button": "Choose", "sections": [{"title": "Options", "rows": [
                {"id": "size-1", "title": "Size 1"},
                {"id": "size-2", "title": "Size 2"},
                {"id": "size-3", "title": "Size 3"},
                {"id": "size-4", "title": "Size 4"},
            ]}]},
        }}))
    );
    // Ten rows still fit one list; none or eleven do not.
    let ten: Vec<(&str, &str)> = vec![("a", "A"); 10];
    assert_eq!(
        body_of(choices("?", &ten))["interactive"]["action"]["sections"][0]["rows"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    for n in [0, 11] {
        let options = vec![("a", "A"); n];
        assert_eq!(
            render(choices("?", &options)).unwrap_err(),
            ChannelError::InvalidOutbound(format!("{n} options; WhatsApp takes 1 to 10"))
        );
    }
}

#[test]
fn whatsapp_prompt_too_long_for_an_interactive_body_falls_back_to_numbered_text() {
    let prompt = "x".repeat(1025);
    let body = body_of(choices(&prompt, &[("yes", "Yes"), ("no", "No")]));
    assert_eq!(
        body,
        to_customer(json!({"type": "text", "text": {
            "preview_url": false,
            "body": format!("{prompt}\n1. Yes\n2. No"),
        }}))
    );
    // At the limit it is still buttons.
    let body = body_of(choices(&"x".repeat(1024), &[("yes", "Yes")]));
    assert_eq!(body["type"], "interactive");
}

#[test]
fn whatsapp_image_by_link_with_caption() {
    let body = body_of(media(
        MediaKind::Image,
        MediaSource::Url("https://shop.example/chair-black.jpg".into()),
        Some("The chair in black"),
        Some("ignored.jpg"),
    ));
    assert_eq!(
        body,
        to_customer(json!({"type": "image", "image": {
            "link": "https://shop.example/chair-black.jpg",
            "caption": "The chair in black",
        }}))
    );
}

#[test]
fn whatsapp_document_by_media_id_with_filename() {
    let body = body_of(media(
        MediaKind::Document,
        MediaSource::MediaId("1479537139650973".into()),
        Some("Your invoice"),
        Some("invoice-1042.pdf"),
    ));
    assert_eq!(
        body,
        to_customer(json!({"type": "document", "document": {
            "id": "1479537139650973",
            "caption": "Your invoice",
            "filename": "invoice-1042.pdf",
        }}))
    );
}

#[test]
fn whatsapp_audio_goes_without_caption() {
    let body = body_of(media(
        MediaKind::Audio,
        MediaSource::Url("https://shop.example/welcome.ogg".into()),
        Some("WhatsApp takes no caption on audio"),
        None,
    ));
    assert_eq!(
        body,
        to_customer(
            json!({"type": "audio", "audio": {"link": "https://shop.example/welcome.ogg"}})
        )
    );
    let video = body_of(media(
        MediaKind::Video,
        MediaSource::MediaId("42".into()),
        None,
        None,
    ));
    assert_eq!(
        video,
        to_customer(json!({"type": "video", "video": {"id": "42"}}))
    );
}

#[test]
fn whatsapp_sticker_is_refused() {
    let err = render(media(
        MediaKind::Sticker,
        MediaSource::MediaId("42".into()),
        None,
        None,
    ))
    .unwrap_err();
    assert_eq!(
        err,
        ChannelError::InvalidOutbound("stickers are not sent".into())
    );
}

#[test]
fn whatsapp_template_with_body_parameters() {
    let body = body_of(OutboundContent::Template(Template {
        name: "order_update".into(),
        language: "en_US".into(),
        parameters: vec!["José".into(), "#1042".into()],
    }));
    assert_eq!(
        body,
        to_customer(json!({"type": "template", "template": {
            "name": "order_update",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "José"},
                {"type": "text", "text": "#1042"},
            ]}],
        }}))
    );
    // Without parameters there are no components.
    let body = body_of(OutboundContent::Template(Template {
        name: "hello_world".into(),
        language: "en_US".into(),
        parameters: vec![],
    }));
    assert_eq!(
        body,
        to_customer(json!({"type": "template", "template": {
            "name": "hello_world",
            "language": {"code": "en_US"},
        }}))
    );
}
