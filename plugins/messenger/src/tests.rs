//! The Messenger / Instagram plugin's behaviour, natively: recorded
//! webhook requests (`tests/fixtures/`, Meta's payload shapes) in, events
//! out; outbound messages in, exact Send API bodies out.

use super::Messenger;
use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::json;
use chatcrafter_plugin_sdk::testing::*;

const PAGE: &str = "104738912345678";
const PSID: &str = "6723498123456789";
const IGID: &str = "17841400000000001";
const IGSID: &str = "1234567890123456";
/// The fixtures' event time, 1767225590123 ms, in seconds.
const T: u64 = 1_767_225_590;

fn parse(req: Request) -> Result<Inbound, ChannelError> {
    <Messenger as Guest>::parse_inbound(req.build())
}

fn fixture(name: &str) -> Inbound {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    parse(Request::from_fixture(path)).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn post(body: &str) -> Result<Inbound, ChannelError> {
    parse(Request::post("/webhooks/messenger", body))
}

fn only_message(inbound: &Inbound) -> &InboundMessage {
    let [InboundEvent::Message(m)] = inbound.events.as_slice() else {
        panic!("expected one message, got {:?}", inbound.events)
    };
    m
}

fn ignored(reason: &str) -> InboundEvent {
    InboundEvent::ignored(reason)
}

fn image(url: &str) -> Content {
    media(MediaKind::Image, url)
}

fn media(kind: MediaKind, reference: &str) -> Content {
    Content::Media(Media {
        kind,
        reference: reference.into(),
        mime_type: None,
        caption: None,
        filename: None,
    })
}

fn postback(payload: &str, title: &str) -> Content {
    Content::Postback(Postback {
        payload: payload.into(),
        title: title.into(),
    })
}

// ----------------------------------------------------------------------
// Manifest
// ----------------------------------------------------------------------

#[test]
fn the_manifest_declares_meta_signatures_the_handshake_and_the_window() {
    let m = <Messenger as Guest>::describe();
    assert_eq!(m.id, "messenger");
    assert_eq!(
        m.verification,
        Verification::HmacSha256(HmacSha256Scheme {
            header: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
            signed_template: "{body}".into(),
            timestamp_header: None,
            max_age_seconds: None,
            secret: "app_secret".into(),
        })
    );
    assert_eq!(
        m.handshake,
        Handshake::QueryChallenge(QueryChallenge {
            method: Method::Get,
            mode_param: "hub.mode".into(),
            mode_value: "subscribe".into(),
            token_param: "hub.verify_token".into(),
            token_secret: "verify_token".into(),
            challenge_param: "hub.challenge".into(),
        })
    );
    let names = |l: &[SettingSpec]| {
        l.iter()
            .map(|s| (s.name.clone(), s.required))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&m.secrets),
        [
            ("app_secret".to_string(), true),
            ("verify_token".to_string(), true),
            ("page_access_token".to_string(), true)
        ]
    );
    assert_eq!(
        names(&m.settings),
        [
            ("page_id".to_string(), false),
            ("instagram_username".to_string(), false)
        ]
    );
    assert_eq!(
        m.capabilities,
        Capabilities::RECEIVE_MESSAGES
            | Capabilities::DELIVERY_STATUS
            | Capabilities::SEND_TEXT
            | Capabilities::SEND_MEDIA
            | Capabilities::SEND_CHOICES
            | Capabilities::LINK_TOKENS
    );
    assert_eq!(m.reply_window_seconds, Some(86_400));
    assert_eq!(
        m.deep_links,
        [
            "https://ig.me/m/{setting:instagram_username}?ref={token}",
            "https://m.me/{setting:page_id}?ref={token}"
        ]
    );
    assert_eq!(
        m.outbound_limits,
        OutboundLimits {
            max_text_chars: 2000,
            max_choices: 13,
            max_choice_title_chars: 20,
            max_caption_chars: 0,
        }
    );
}

// ----------------------------------------------------------------------
// Inbound
// ----------------------------------------------------------------------

#[test]
fn a_messenger_text_is_one_message_from_the_page_scoped_user() {
    let inbound = fixture("messenger_text");
    let m = only_message(&inbound);
    assert_eq!(
        m.provider_message_id,
        "m_6jmO8Wz2hVUqZbYj1gJc9x3vS0kXq1nYpFdT4Lr7aE2wKiN5"
    );
    assert_eq!(m.sender, ChannelIdentity::new(PAGE, PSID));
    assert_eq!(
        m.contents,
        [Content::Text("Hi! Has my order #4821 shipped yet?".into())]
    );
    assert_eq!(m.referral, None);
    assert_eq!(m.link_token, None);
    assert!(!m.edited);
    assert_eq!(m.reply_handle, None);
    assert!(m.claims.is_empty());
    assert_eq!(inbound.response.status, 200);
    assert!(inbound.response.body.is_empty());
    assert!(inbound.diagnostics.is_empty());
}

#[test]
fn meta_milliseconds_become_unix_seconds() {
    let inbound = fixture("messenger_text");
    // 1767225590123 ms in the payload.
    assert_eq!(only_message(&inbound).timestamp, T);
    // Without a timestamp, the host's receive time stands in.
    let body = json!({"object": "page", "entry": [{"id": PAGE, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "message": {"mid": "m_1", "text": "hi"}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    assert_eq!(only_message(&inbound).timestamp, 1_767_225_600);
}

#[test]
fn text_and_two_images_are_one_message_with_three_contents() {
    let inbound = fixture("messenger_text_and_images");
    let m = only_message(&inbound);
    assert_eq!(m.provider_message_id, "m_AqP0sWnB7cH2jLm4oR6tV8xZ1dF3gK5");
    assert_eq!(
        m.contents,
        [
            Content::Text("Here are the two photos of the damaged box".into()),
            image(
                "https://scontent.xx.fbcdn.net/v/t1.15752-9/471234567_1_n.jpg?_nc_cat=1&oh=00_AbC&oe=677A1B2C"
            ),
            image(
                "https://scontent.xx.fbcdn.net/v/t1.15752-9/471234568_2_n.jpg?_nc_cat=1&oh=00_DeF&oe=677A1B2D"
            ),
        ]
    );
}

#[test]
fn an_instagram_message_is_scoped_by_the_instagram_account() {
    let inbound = fixture("instagram_text");
    let m = only_message(&inbound);
    assert_eq!(m.sender, ChannelIdentity::new(IGID, IGSID));
    assert_eq!(texts(&inbound), ["Do you ship to Canada?"]);
    assert_eq!(m.timestamp, T);
    assert!(
        m.provider_message_id
            .starts_with("aWdfZAG1faXRlbToxOklHTWVzc2FnZAUl")
    );
}

#[test]
fn a_quick_reply_is_a_postback_titled_with_its_text() {
    let inbound = fixture("messenger_quick_reply");
    let m = only_message(&inbound);
    assert_eq!(m.provider_message_id, "m_Qr7Hk2Lp9Zx4Vb1Nm8Cd5Fg3");
    assert_eq!(m.contents, [postback("TRACK_ORDER", "Track my order")]);
}

#[test]
fn a_postback_event_is_a_postback() {
    let inbound = fixture("messenger_postback");
    let m = only_message(&inbound);
    assert_eq!(m.provider_message_id, "m_Pb3Xy7Wq1Rt5Uv9Io2As4Df6");
    assert_eq!(m.sender, ChannelIdentity::new(PAGE, PSID));
    assert_eq!(m.contents, [postback("HANDOFF", "Talk to a person")]);
    assert_eq!(m.timestamp, T);
}

#[test]
fn a_postback_without_a_mid_gets_an_id_from_sender_and_time() {
    let body = json!({"object": "page", "entry": [{"id": PAGE, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1767225590123u64,
         "postback": {"title": "Get Started", "payload": "GET_STARTED"}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    let m = only_message(&inbound);
    assert_eq!(
        m.provider_message_id,
        format!("postback:{PSID}:1767225590123")
    );
    assert_eq!(m.contents, [postback("GET_STARTED", "Get Started")]);
}

#[test]
fn an_m_me_link_with_a_link_token_carries_the_token_and_the_referral() {
    let inbound = fixture("messenger_referral_link");
    let m = only_message(&inbound);
    assert_eq!(
        m.provider_message_id,
        format!("referral:{PSID}:1767225590123")
    );
    assert_eq!(m.sender, ChannelIdentity::new(PAGE, PSID));
    assert_eq!(m.contents, [postback("referral", "opened a link")]);
    assert_eq!(m.link_token.as_deref(), Some("Q2hhdENyYWZ0ZXJUb2tlbg"));
    assert_eq!(
        m.referral,
        Some(Referral {
            source_type: "shortlink".into(),
            source_id: None,
            click_id: None,
            link_ref: Some("Q2hhdENyYWZ0ZXJUb2tlbg".into()),
            url: None,
        })
    );
    assert_eq!(m.timestamp, T);
}

#[test]
fn a_link_ref_that_is_no_token_is_kept_as_the_referral_only() {
    let body = json!({"object": "page", "entry": [{"id": PAGE, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1767225590123u64,
         "referral": {"ref": "qr-store-berlin", "source": "SHORTLINK", "type": "OPEN_THREAD"}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    let m = only_message(&inbound);
    assert_eq!(m.link_token, None);
    assert_eq!(
        m.referral.as_ref().and_then(|r| r.link_ref.as_deref()),
        Some("qr-store-berlin")
    );
}

#[test]
fn an_ice_breaker_from_an_ig_me_link_carries_the_token() {
    let inbound = fixture("instagram_icebreaker_link");
    let m = only_message(&inbound);
    assert_eq!(m.sender, ChannelIdentity::new(IGID, IGSID));
    assert_eq!(
        m.contents,
        [postback("HOURS", "What are your opening hours?")]
    );
    assert_eq!(m.link_token.as_deref(), Some("Zm9yLXRoZS1nYXRld2F5Xz"));
    assert_eq!(
        m.referral,
        Some(Referral {
            source_type: "shortlinks".into(),
            source_id: None,
            click_id: None,
            link_ref: Some("Zm9yLXRoZS1nYXRld2F5Xz".into()),
            url: None,
        })
    );
}

#[test]
fn an_ad_referral_on_a_message_is_its_referral() {
    let inbound = fixture("messenger_ad_referral");
    let m = only_message(&inbound);
    assert_eq!(
        m.contents,
        [Content::Text("Is this still available?".into())]
    );
    assert_eq!(
        m.referral,
        Some(Referral {
            source_type: "ads".into(),
            source_id: Some("120210987654321098".into()),
            click_id: None,
            link_ref: Some("spring_sale_2026".into()),
            url: None,
        })
    );
    assert_eq!(m.link_token, None);
}

#[test]
fn an_ad_ref_shaped_like_a_token_is_never_a_link_token() {
    let body = json!({"object": "page", "entry": [{"id": PAGE, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1767225590123u64,
         "referral": {"ref": "Q2hhdENyYWZ0ZXJUb2tlbg", "ad_id": "1202", "source": "ADS",
                      "type": "OPEN_THREAD"}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    let m = only_message(&inbound);
    assert_eq!(m.link_token, None);
    assert_eq!(m.contents, [postback("referral", "clicked an ad")]);
    assert_eq!(
        m.referral.as_ref().unwrap().source_id.as_deref(),
        Some("1202")
    );
}

#[test]
fn an_echo_of_the_page_is_ignored() {
    let inbound = fixture("messenger_echo");
    assert_eq!(inbound.events, [ignored("echo of the page's own message")]);
}

#[test]
fn standby_events_are_recorded_and_noted() {
    let inbound = fixture("messenger_standby");
    assert_eq!(inbound.events.len(), 2);
    let m = &messages(&inbound)[0];
    assert_eq!(m.provider_message_id, "m_Sb1Yx2Wv3Ut4Sr5Qp6On7Ml8");
    assert_eq!(m.sender, ChannelIdentity::new(PAGE, PSID));
    assert_eq!(texts(&inbound), ["hello? anyone there?"]);
    assert_eq!(inbound.events[1], ignored("echo of the page's own message"));
    let [d] = inbound.diagnostics.as_slice() else {
        panic!("one diagnostic: {:?}", inbound.diagnostics)
    };
    assert_eq!(d.level, Level::Info);
    assert!(d.message.contains("2 standby event(s)"), "{}", d.message);
    assert!(!d.message.contains(PSID) && !d.message.contains("hello"));
}

#[test]
fn deliveries_are_statuses_and_a_read_watermark_is_ignored() {
    let inbound = fixture("messenger_delivery");
    let statuses = statuses(&inbound);
    let expected = |id: &str| DeliveryStatus {
        provider_message_id: id.into(),
        recipient: Some(ChannelIdentity::new(PAGE, PSID)),
        state: DeliveryState::Delivered,
        timestamp: T,
        error: None,
    };
    assert_eq!(
        statuses,
        [
            &expected("m_Out1aaaaaaaaaaaaaaaaaaaa"),
            &expected("m_Out2bbbbbbbbbbbbbbbbbbbb")
        ]
    );
    assert_eq!(
        inbound.events[2],
        ignored("a read watermark names no message")
    );
}

#[test]
fn an_instagram_read_names_its_message() {
    let body = json!({"object": "instagram", "entry": [{"id": IGID, "messaging": [
        {"sender": {"id": IGSID}, "recipient": {"id": IGID}, "timestamp": 1767225590123u64,
         "read": {"mid": "aWdfZAG1faXRlbToxOk91dA"}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    assert_eq!(
        statuses(&inbound),
        [&DeliveryStatus {
            provider_message_id: "aWdfZAG1faXRlbToxOk91dA".into(),
            recipient: Some(ChannelIdentity::new(IGID, IGSID)),
            state: DeliveryState::Read,
            timestamp: T,
            error: None,
        }]
    );
}

#[test]
fn every_entry_and_every_event_is_visited_in_order() {
    let inbound = fixture("messenger_batch");
    assert_eq!(inbound.events.len(), 4);
    let InboundEvent::Message(first) = &inbound.events[0] else {
        panic!("{:?}", inbound.events[0])
    };
    assert_eq!(first.contents, [Content::Text("first".into())]);
    assert_eq!(first.timestamp, 1_767_225_580);
    let InboundEvent::Message(reaction) = &inbound.events[1] else {
        panic!("{:?}", inbound.events[1])
    };
    assert_eq!(
        reaction.contents,
        [Content::Reaction(Reaction {
            message_id: "m_Out1aaaaaaaaaaaaaaaaaaaa".into(),
            emoji: "\u{2764}\u{fe0f}".into(),
        })]
    );
    assert_eq!(
        reaction.provider_message_id,
        format!("reaction:{PSID}:1767225581000")
    );
    assert_eq!(
        inbound.events[2],
        ignored("event kind `optin` is not handled")
    );
    let InboundEvent::Message(edit) = &inbound.events[3] else {
        panic!("{:?}", inbound.events[3])
    };
    assert_eq!(
        edit.sender,
        ChannelIdentity::new("998877665544332", "5550001112223334")
    );
    assert_eq!(
        edit.provider_message_id,
        "m_Bt2bbbbbbbbbbbbbbbbbbbbbb:edit:1"
    );
    assert_eq!(edit.contents, [Content::Text("second, edited".into())]);
    assert!(edit.edited);
}

#[test]
fn a_removed_reaction_has_no_emoji() {
    let body = json!({"object": "instagram", "entry": [{"id": IGID, "messaging": [
        {"sender": {"id": IGSID}, "recipient": {"id": IGID}, "timestamp": 1767225590123u64,
         "reaction": {"mid": "aWdfZAG1faXRlbToxOk91dA", "action": "unreact"}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    assert_eq!(
        only_message(&inbound).contents,
        [Content::Reaction(Reaction {
            message_id: "aWdfZAG1faXRlbToxOk91dA".into(),
            emoji: String::new(),
        })]
    );
}

#[test]
fn stickers_locations_files_and_shares_are_normalized() {
    let inbound = fixture("messenger_attachments");
    let m = only_message(&inbound);
    assert_eq!(
        m.contents,
        [
            // Sent twice during Meta's sticker transition: kept once.
            media(
                MediaKind::Sticker,
                "https://scontent.xx.fbcdn.net/v/t39.1997-6/sticker.png"
            ),
            Content::Location(Location {
                latitude: 52.520008,
                longitude: 13.404954,
                name: Some("Pinned Location".into()),
                address: None,
            }),
            media(
                MediaKind::Document,
                "https://cdn.fbsbx.com/v/t59.2708-21/invoice_4821.pdf"
            ),
            Content::Unsupported("fallback".into()),
        ]
    );
}

#[test]
fn a_message_with_nothing_normalizable_is_unsupported_and_a_deleted_one_ignored() {
    let body = json!({"object": "instagram", "entry": [{"id": IGID, "messaging": [
        {"sender": {"id": IGSID}, "recipient": {"id": IGID}, "timestamp": 1767225590123u64,
         "message": {"mid": "ig_1", "is_unsupported": true}},
        {"sender": {"id": IGSID}, "recipient": {"id": IGID}, "timestamp": 1767225590124u64,
         "message": {"mid": "ig_2", "attachments": [{"type": "story_mention",
                     "payload": {"url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"}}]}},
        {"sender": {"id": IGSID}, "recipient": {"id": IGID}, "timestamp": 1767225590125u64,
         "message": {"mid": "ig_3", "is_deleted": true}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    let ms = messages(&inbound);
    assert_eq!(ms[0].contents, [Content::Unsupported("message".into())]);
    assert_eq!(
        ms[1].contents,
        [Content::Unsupported("story_mention".into())]
    );
    assert_eq!(inbound.events[2], ignored("a message its sender deleted"));
}

#[test]
fn a_location_without_coordinates_is_unsupported() {
    let body = json!({"object": "page", "entry": [{"id": PAGE, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1767225590123u64,
         "message": {"mid": "m_loc", "attachments": [
             {"type": "location", "title": "Somewhere", "payload": {"coordinates": {"lat": 1.5}}},
             {"type": "location", "payload": null}
         ]}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    assert_eq!(
        only_message(&inbound).contents,
        [
            Content::Unsupported("location".into()),
            Content::Unsupported("location".into())
        ]
    );
}

#[test]
fn more_than_sixteen_attachments_keep_the_first_sixteen_with_a_warning() {
    let attachments: Vec<_> = (0..20)
        .map(|i| json!({"type": "image", "payload": {"url": format!("https://cdn.example/{i}.jpg")}}))
        .collect();
    let body = json!({"object": "page", "entry": [{"id": PAGE, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1767225590123u64,
         "message": {"mid": "m_many", "text": "all the photos", "attachments": attachments}}
    ]}]});
    let inbound = post(&body.to_string()).unwrap();
    let m = only_message(&inbound);
    assert_eq!(m.contents.len(), 16);
    assert_eq!(m.contents[0], Content::Text("all the photos".into()));
    assert_eq!(inbound.diagnostics.len(), 1);
    assert_eq!(inbound.diagnostics[0].level, Level::Warning);
}

#[test]
fn feed_changes_and_events_without_a_sender_are_ignored() {
    let body = json!({"object": "page", "entry": [
        {"id": PAGE, "time": 1767225591000u64, "changes": [{"field": "feed", "value": {"item": "comment"}}]},
        {"id": PAGE, "messaging": [
            {"sender": {"user_ref": "guest-1"}, "recipient": {"id": PAGE}, "timestamp": 1767225590123u64,
             "message": {"mid": "m_guest", "text": "hi from the website"}}
        ]}
    ]});
    let inbound = post(&body.to_string()).unwrap();
    assert_eq!(
        inbound.events,
        [
            ignored("change field `feed` is not messaging"),
            ignored("a `message` event without a sender id (chat plugin guests are not handled)"),
        ]
    );
}

#[test]
fn another_object_is_malformed_and_named() {
    let err = post(r#"{"object":"whatsapp_business_account","entry":[]}"#).unwrap_err();
    assert_eq!(
        err,
        ChannelError::Malformed(
            "body: `object` is `whatsapp_business_account`, expected `page` (Messenger) or `instagram`"
                .into()
        )
    );
}

#[test]
fn bad_json_and_entries_without_ids_are_malformed() {
    assert!(matches!(post("{not json"), Err(ChannelError::Malformed(_))));
    let err = post(r#"{"object":"page","entry":[{"messaging":[]}]}"#).unwrap_err();
    assert!(
        matches!(&err, ChannelError::Malformed(m) if m.contains("`entry` has no `id`")),
        "{err:?}"
    );
}

#[test]
fn only_post_is_handled() {
    let err = parse(Request::get("/webhooks/messenger", "hub.mode=subscribe")).unwrap_err();
    assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
}

#[test]
fn an_empty_notification_is_answered_with_no_events() {
    let inbound = post(r#"{"object":"instagram","entry":[]}"#).unwrap();
    assert!(inbound.events.is_empty());
    assert_eq!(inbound.response.status, 200);
}

// ----------------------------------------------------------------------
// Outbound
// ----------------------------------------------------------------------

const NOW: u64 = 1_767_225_600;

fn render(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
    <Messenger as Guest>::render_outbound(msg)
}

fn text(t: &str) -> OutboundContent {
    OutboundContent::Text(t.into())
}

fn to_messenger(content: OutboundContent) -> OutboundMessage {
    outbound("messenger", PAGE, PSID, content, NOW)
}

fn invalid(r: Result<OutboundRequest, ChannelError>) -> String {
    match r {
        Err(ChannelError::InvalidOutbound(m)) => m,
        other => panic!("expected InvalidOutbound, got {other:?}"),
    }
}

#[test]
fn a_text_reply_is_a_send_api_response() {
    let req = render(to_messenger(text("It shipped this morning."))).unwrap();
    let OutboundRequest::Http(call) = &req else {
        panic!("{req:?}")
    };
    assert_eq!(call.method, Method::Post);
    assert_eq!(call.path, "/me/messages");
    assert_eq!(
        call.credential,
        Some(CredentialHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
            secret: "page_access_token".into(),
        })
    );
    assert_eq!(call.sent_id.as_deref(), Some("/message_id"));
    assert_eq!(
        json_of(&req),
        (
            "/me/messages".to_string(),
            json!({
                "recipient": {"id": PSID},
                "messaging_type": "RESPONSE",
                "message": {"text": "It shipped this morning."}
            })
        )
    );
}

#[test]
fn a_persons_reply_after_the_window_carries_the_human_agent_tag() {
    let mut msg = to_messenger(text("Sorry for the wait — I checked with the warehouse."));
    msg.context.purpose = Purpose::PersonReply;
    msg.context.last_inbound_at = Some(NOW - 30 * 3600);
    assert_eq!(
        json_of(&render(msg).unwrap()).1,
        json!({
            "recipient": {"id": PSID},
            "messaging_type": "MESSAGE_TAG",
            "tag": "HUMAN_AGENT",
            "message": {"text": "Sorry for the wait — I checked with the warehouse."}
        })
    );
}

#[test]
fn a_persons_reply_inside_the_window_is_a_plain_response() {
    let mut msg = to_messenger(text("Hi, Anna here."));
    msg.context.purpose = Purpose::PersonReply;
    msg.context.last_inbound_at = Some(NOW - 23 * 3600);
    assert_eq!(
        json_of(&render(msg).unwrap()).1["messaging_type"],
        "RESPONSE"
    );
}

#[test]
fn a_persons_reply_after_seven_days_is_refused() {
    let mut msg = to_messenger(text("Still there?"));
    msg.context.purpose = Purpose::PersonReply;
    msg.context.last_inbound_at = Some(NOW - 8 * 24 * 3600);
    let why = invalid(render(msg));
    assert!(why.contains("7 days"), "{why}");
}

#[test]
fn a_proactive_message_outside_the_window_is_refused() {
    let mut msg = to_messenger(text("Your appointment is tomorrow."));
    msg.context.purpose = Purpose::Proactive;
    msg.context.last_inbound_at = Some(NOW - 25 * 3600);
    let why = invalid(render(msg));
    assert!(
        why.contains("24-hour") && why.contains("Messenger"),
        "{why}"
    );

    let mut never = to_messenger(text("Hello!"));
    never.context.purpose = Purpose::Proactive;
    never.context.last_inbound_at = None;
    assert!(invalid(render(never)).contains("never wrote"));
}

#[test]
fn a_proactive_message_inside_the_window_is_an_update() {
    let mut msg = to_messenger(text("Your appointment is tomorrow."));
    msg.context.purpose = Purpose::Proactive;
    msg.context.last_inbound_at = Some(NOW - 3600);
    assert_eq!(
        json_of(&render(msg).unwrap()).1["messaging_type"],
        "UPDATE"
    );
}

#[test]
fn the_manifest_takes_a_persons_reply_for_seven_days() {
    let m = Messenger::describe();
    assert_eq!(m.reply_window_seconds, Some(86_400));
    assert_eq!(m.person_reply_window_seconds, Some(7 * 86_400));
}

#[test]
fn choices_are_quick_replies() {
    let content = OutboundContent::Choices(Choices {
        prompt: "How can we help?".into(),
        options: vec![
            Choice {
                id: "track".into(),
                title: "Track my order".into(),
            },
            Choice {
                id: "return".into(),
                title: "Start a return".into(),
            },
            Choice {
                id: "human".into(),
                title: "Talk to a person".into(),
            },
        ],
    });
    assert_eq!(
        json_of(&render(to_messenger(content)).unwrap()).1,
        json!({
            "recipient": {"id": PSID},
            "messaging_type": "RESPONSE",
            "message": {
                "text": "How can we help?",
                "quick_replies": [
                    {"content_type": "text", "title": "Track my order", "payload": "track"},
                    {"content_type": "text", "title": "Start a return", "payload": "return"},
                    {"content_type": "text", "title": "Talk to a person", "payload": "human"}
                ]
            }
        })
    );
}

#[test]
fn a_quick_reply_title_over_twenty_characters_is_refused() {
    let content = OutboundContent::Choices(Choices {
        prompt: "Pick one".into(),
        options: vec![Choice {
            id: "a".into(),
            title: "A title far too long to fit".into(),
        }],
    });
    let why = invalid(render(to_messenger(content)));
    assert!(why.contains("20"), "{why}");
}

#[test]
fn more_than_thirteen_quick_replies_are_refused() {
    let content = OutboundContent::Choices(Choices {
        prompt: "Pick one".into(),
        options: (1..=14)
            .map(|i| Choice {
                id: format!("c{i}"),
                title: format!("Option {i}"),
            })
            .collect(),
    });
    let why = invalid(render(to_messenger(content)));
    assert!(why.contains("13"), "{why}");
}

#[test]
fn media_goes_by_url_or_by_attachment_id() {
    let by_url = OutboundContent::Media(OutboundMedia {
        kind: MediaKind::Image,
        source: MediaSource::Url("https://cdn.example.com/receipt.png".into()),
        caption: None,
        filename: None,
    });
    assert_eq!(
        json_of(&render(to_messenger(by_url)).unwrap()).1,
        json!({
            "recipient": {"id": PSID},
            "messaging_type": "RESPONSE",
            "message": {"attachment": {"type": "image", "payload": {
                "url": "https://cdn.example.com/receipt.png", "is_reusable": true
            }}}
        })
    );
    let by_id = OutboundContent::Media(OutboundMedia {
        kind: MediaKind::Document,
        source: MediaSource::MediaId("1857777774821032".into()),
        caption: None,
        filename: Some("invoice.pdf".into()),
    });
    assert_eq!(
        json_of(&render(to_messenger(by_id)).unwrap()).1,
        json!({
            "recipient": {"id": PSID},
            "messaging_type": "RESPONSE",
            "message": {"attachment": {"type": "file", "payload": {
                "attachment_id": "1857777774821032"
            }}}
        })
    );
}

#[test]
fn stickers_and_captions_are_not_sent() {
    let sticker = OutboundContent::Media(OutboundMedia {
        kind: MediaKind::Sticker,
        source: MediaSource::MediaId("1".into()),
        caption: None,
        filename: None,
    });
    invalid(render(to_messenger(sticker)));
    let captioned = OutboundContent::Media(OutboundMedia {
        kind: MediaKind::Video,
        source: MediaSource::Url("https://cdn.example.com/clip.mp4".into()),
        caption: Some("How to fold it".into()),
        filename: None,
    });
    assert!(invalid(render(to_messenger(captioned))).contains("no caption"));
}

#[test]
fn a_template_is_refused() {
    let content = OutboundContent::Template(Template {
        name: "order_update".into(),
        language: "en_US".into(),
        parameters: vec!["4821".into()],
    });
    assert_eq!(
        invalid(render(to_messenger(content))),
        "Messenger has no WhatsApp-style message templates"
    );
}

#[test]
fn limits_and_the_recipient_are_checked_and_name_the_channel() {
    let long = "x".repeat(2001);
    let why = invalid(render(outbound("instagram", IGID, IGSID, text(&long), NOW)));
    assert!(why.contains("Instagram") && why.contains("2000"), "{why}");
    let fits = "x".repeat(2000);
    assert!(render(outbound("instagram", IGID, IGSID, text(&fits), NOW)).is_ok());
    invalid(render(outbound("messenger", PAGE, "", text("hi"), NOW)));
    invalid(render(to_messenger(text("   "))));
}

#[test]
fn an_instagram_reply_goes_to_the_same_send_api() {
    let req = render(outbound("instagram", IGID, IGSID, text("Yes, we do!"), NOW)).unwrap();
    assert_eq!(
        json_of(&req),
        (
            "/me/messages".to_string(),
            json!({
                "recipient": {"id": IGSID},
                "messaging_type": "RESPONSE",
                "message": {"text": "Yes, we do!"}
            })
        )
    );
}
