//! The web widget plugin's behaviour, natively: the widget's frames, from
//! a user the host authenticated, in; events out; replies in, push frames
//! out. The host's own handling of the built component (sandbox limits,
//! hostile input) is tested in `gateway/server/tests/plugin_host.rs`.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::{Value, json};
use chatcrafter_plugin_sdk::testing::*;

use crate::WebWidget;

const NOW: u64 = 1_767_225_600;

/// A frame from the user whose JWT the host verified.
fn widget_request(body: &[u8]) -> Request {
    Request::post("/widget/v1/messages", body).user(AuthenticatedUser {
        issuer: "https://shop.example".into(),
        subject: "user-42".into(),
        claims: vec![
            Claim::verified(ClaimKind::Email, "sarah@example.com"),
            Claim::verified(ClaimKind::Name, "Sarah"),
        ],
    })
}

fn parse(req: Request) -> Result<Inbound, ChannelError> {
    WebWidget::parse_inbound(req.build())
}

fn render(content: OutboundContent) -> Result<OutboundRequest, ChannelError> {
    WebWidget::render_outbound(outbound(
        "widget",
        "https://shop.example",
        "user-42",
        content,
        NOW,
    ))
}

// --- Manifest -------------------------------------------------------------

#[test]
fn widget_manifest_declares_text_only_and_no_window() {
    let m = WebWidget::describe();
    assert_eq!(m.id, "widget");
    // The host authenticates widget users with their JWT.
    assert_eq!(m.verification, Verification::None);
    assert_eq!(m.handshake, Handshake::None);
    assert_eq!(
        m.capabilities,
        Capabilities::RECEIVE_MESSAGES | Capabilities::SEND_TEXT
    );
    assert_eq!(m.reply_window_seconds, None);
    assert_eq!(m.person_reply_window_seconds, None);
    assert!(m.deep_links.is_empty());
    assert_eq!(m.outbound_limits, OutboundLimits::text_only(4096));
    assert!(m.secrets.is_empty() && m.settings.is_empty());
}

// --- Inbound --------------------------------------------------------------

#[test]
fn widget_frame_becomes_a_message_from_the_verified_user() {
    let out = parse(widget_request(
        br#"{"type":"message","text":"Do you have the office chair in black?","client_id":"c-1"}"#,
    ))
    .unwrap();
    let m = messages(&out)[0];
    assert_eq!(
        m.sender,
        ChannelIdentity::new("https://shop.example", "user-42")
    );
    assert_eq!(m.provider_message_id, "7:user-42:c-1");
    assert!(m.claims.iter().all(|c| c.verified));
    assert_eq!(m.display_name.as_deref(), Some("Sarah"));
    assert_eq!(out.response.status, 202);
    assert_eq!(
        chatcrafter_plugin_sdk::serde_json::from_slice::<Value>(&out.response.body).unwrap(),
        json!({"id": "7:user-42:c-1"})
    );
}

#[test]
fn widget_frame_without_client_id_uses_the_host_request_id() {
    let req = widget_request(br#"{"text":"hi"}"#).build();
    let request_id = req.context.request_id.clone();
    let out = WebWidget::parse_inbound(req).unwrap();
    assert_eq!(messages(&out)[0].provider_message_id, request_id);
}

#[test]
fn widget_frame_with_empty_text_is_malformed() {
    let err = parse(widget_request(br#"{"text":"  "}"#)).unwrap_err();
    assert_eq!(err, ChannelError::Malformed("body: `text` is empty".into()));
}

#[test]
fn widget_frame_without_an_authenticated_user_is_refused() {
    let err = parse(Request::post("/widget/v1/messages", r#"{"text":"hi"}"#)).unwrap_err();
    assert_eq!(
        err,
        ChannelError::Other("widget frames need a user authenticated by the host".into())
    );
}

// --- Outbound -------------------------------------------------------------

#[test]
fn widget_reply_is_a_push_frame() {
    let msg = OutboundMessage {
        message_id: "out-5".into(),
        ..outbound(
            "widget",
            "https://shop.example",
            "user-42",
            OutboundContent::Text("Yes, in black too.".into()),
            NOW,
        )
    };
    let OutboundRequest::Push(frame) = WebWidget::render_outbound(msg).unwrap() else {
        panic!("expected a push frame");
    };
    let frame: Value = chatcrafter_plugin_sdk::serde_json::from_slice(&frame).unwrap();
    assert_eq!(
        frame,
        json!({"type":"message","id":"out-5","direction":"outbound","text":"Yes, in black too."})
    );
}

#[test]
fn widget_refuses_content_other_than_text() {
    let cases = [
        (
            OutboundContent::Media(OutboundMedia {
                kind: MediaKind::Image,
                source: MediaSource::Url("https://shop.example/chair.jpg".into()),
                caption: None,
                filename: None,
            }),
            "media",
        ),
        (
            OutboundContent::Choices(Choices {
                prompt: "?".into(),
                options: vec![Choice {
                    id: "yes".into(),
                    title: "Yes".into(),
                }],
            }),
            "choices",
        ),
        (
            OutboundContent::Template(Template {
                name: "t".into(),
                language: "en".into(),
                parameters: vec![],
            }),
            "templates",
        ),
    ];
    for (content, what) in cases {
        assert_eq!(
            render(content).unwrap_err(),
            ChannelError::InvalidOutbound(format!(
                "the widget takes text only (the host degrades {what} to text)"
            ))
        );
    }
    // Text over the widget's limit is refused too.
    assert_eq!(
        render(OutboundContent::Text("x".repeat(4097))).unwrap_err(),
        ChannelError::InvalidOutbound(
            "text is 4097 characters; the widget accepts at most 4096".into()
        )
    );
}
