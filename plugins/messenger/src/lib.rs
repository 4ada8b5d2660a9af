//! The Meta Messenger and Instagram messaging channel plugin: one `.wasm`
//! for both, since Meta delivers and sends both through the same Messenger
//! Platform. The operator configures it once per channel
//! (`[channels.messenger]`, `[channels.instagram] plugin =
//! "builtin:messenger"`); the host records identities under that name.
//!
//! Inbound: Meta's webhook notifications, `object: page` (Messenger) or
//! `object: instagram`. Every `entry[]` is visited, and in each both
//! `messaging[]` and `standby[]` (events that arrive while another app
//! controls the thread under the handover protocol: recorded as usual, and
//! counted in an informational diagnostic). The sender is `(entry.id,
//! sender.id)`: the Page id or Instagram professional account id, and the
//! page-scoped (PSID) or Instagram-scoped (IGSID) user id. Meta reports no
//! name or phone, so there are no claims. Meta's `timestamp`s are Unix
//! milliseconds; events carry seconds.
//!
//! - `message`: text first, then each attachment (`image`, `video`,
//!   `audio`, `file` as a document, `sticker` — or an `image` carrying a
//!   `sticker_id` — as a sticker, `location` with coordinates), as ONE
//!   message; other attachment types (`fallback`, `share`, `story_mention`,
//!   `ig_reel`, `template`, …) as unsupported contents by name. A quick
//!   reply tap is a postback (its payload, the tapped title). Echoes of the
//!   page's own messages (`is_echo`) and deleted Instagram messages are
//!   ignored.
//! - `message_edit`: the new text as an edited message.
//! - `postback`: a button, Get Started or ice-breaker tap.
//! - `referral`: an m.me / ig.me link opened or an ad clicked in an
//!   existing thread — a postback `referral` message carrying the referral,
//!   since nothing else would record it. Referrals also ride on a first
//!   message (`message.referral`) and on Get Started and ice-breaker
//!   postbacks (`postback.referral`).
//! - `reaction`: a reaction (an empty emoji when removed).
//! - `delivery`: one `delivered` status per `mids[]`; `read` with a `mid`
//!   (Instagram's `messaging_seen`) is a `read` status, a bare watermark
//!   (Messenger's `message_reads`) names no message and is ignored.
//! - anything else is ignored by its kind's name.
//!
//! Link tokens: a link `ref` of 22 characters of `A-Z a-z 0-9 _ -` (what
//! `https://m.me/{page_id}?ref={token}` and `https://ig.me/m/{username}
//! ?ref={token}`, the manifest's deep links, carry) on a referral from a
//! link — never from an ad — is the message's link token.
//!
//! Verification (declared, applied by the host): `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256(app_secret, raw body)>`, and the `hub.challenge`
//! subscription handshake keyed by `verify_token`.
//!
//! Outbound: `POST {api_base}/me/messages` (the Send API; `me` is the Page
//! the token belongs to, which for Instagram is the Page linked to the
//! professional account) with `Authorization: Bearer {page_access_token}`
//! added by the host: text, quick replies (up to 13, titles up to 20
//! characters), and media by URL or by an uploaded attachment id (no
//! captions: the manifest declares none, so the host sends a captioned
//! media as text). `messaging_type` is `RESPONSE` for the agent's replies
//! and inside the 24-hour standard messaging window; a person's reply after
//! it (up to 7 days) carries the `HUMAN_AGENT` message tag. Meta has no
//! message templates in the WhatsApp sense, and refuses anything else
//! outside the window.
//!
//! Not handled here: media download, generic/button templates outbound,
//! the handover protocol's control events, one-time notification opt-ins.

use std::collections::BTreeMap;

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::{Value, json};
use serde::Deserialize;
use serde::de::IgnoredAny;

const CHANNEL: &str = "messenger";
/// The Send API's limit for a text message, in characters.
const MAX_TEXT: usize = 2000;
/// Quick replies in one message.
const MAX_QUICK_REPLIES: usize = 13;
/// A quick reply title's limit, in characters.
const MAX_TITLE: usize = 20;
/// A quick reply payload's limit, in characters.
const MAX_PAYLOAD: usize = 1000;
/// Meta's standard messaging window.
const WINDOW_SECONDS: u64 = 24 * 3600;
/// How long after the customer's last message the `HUMAN_AGENT` tag
/// allows a person to answer.
const HUMAN_AGENT_SECONDS: u64 = 7 * 24 * 3600;
/// Most contents the host takes in one message.
const MAX_CONTENTS: usize = 16;
/// Longest referral `ref` the host keeps, in bytes (Meta allows 2083).
const MAX_REF_BYTES: usize = 320;
/// Longest name from the payload (an event kind, an attachment type) put
/// into an ignored reason or an unsupported content.
const MAX_KIND_CHARS: usize = 48;

/// The plugin. Public so that the crate's native tests can call it as
/// `<Messenger as Guest>::…`.
struct Messenger;

#[derive(Deserialize)]
struct Notification {
    object: String,
    #[serde(default)]
    entry: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default, deserialize_with = "id")]
    id: Option<String>,
    #[serde(default)]
    messaging: Option<Vec<Event>>,
    #[serde(default)]
    standby: Option<Vec<Event>>,
    /// Feed and comment notifications (`changes[]`), not messaging.
    #[serde(default)]
    changes: Option<Vec<Change>>,
}

#[derive(Deserialize)]
struct Change {
    field: Option<String>,
}

/// One messaging event: who, when, and exactly one of the kinds below.
#[derive(Deserialize)]
struct Event {
    sender: Option<Party>,
    /// Unix milliseconds.
    timestamp: Option<u64>,
    message: Option<Message>,
    message_edit: Option<MessageEdit>,
    postback: Option<PostbackEvent>,
    referral: Option<ReferralObject>,
    reaction: Option<ReactionEvent>,
    delivery: Option<DeliveryEvent>,
    read: Option<ReadEvent>,
    /// Every other key: `recipient`, and the kinds not handled here
    /// (`optin`, `account_linking`, `pass_thread_control`, …).
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct Party {
    #[serde(default, deserialize_with = "id")]
    id: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    mid: Option<String>,
    text: Option<String>,
    is_echo: Option<bool>,
    /// Instagram: the sender deleted the message.
    is_deleted: Option<bool>,
    quick_reply: Option<QuickReply>,
    attachments: Option<Vec<Attachment>>,
    /// A click-to-Messenger / click-to-Instagram ad, or a link, that
    /// started the conversation.
    referral: Option<ReferralObject>,
}

#[derive(Deserialize)]
struct QuickReply {
    payload: Option<String>,
}

#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<AttachmentPayload>,
    /// A location's or a fallback's title.
    title: Option<String>,
}

#[derive(Deserialize)]
struct AttachmentPayload {
    url: Option<String>,
    #[serde(default, deserialize_with = "id")]
    attachment_id: Option<String>,
    /// Set on the `image` Meta sends for a sticker (and the thumbs-up).
    #[serde(default, deserialize_with = "id")]
    sticker_id: Option<String>,
    coordinates: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Coordinates {
    lat: Option<f64>,
    long: Option<f64>,
}

#[derive(Deserialize)]
struct MessageEdit {
    mid: Option<String>,
    text: Option<String>,
    /// An integer; read as any JSON value, as Meta's reference page
    /// quotes it.
    num_edit: Option<Value>,
}

#[derive(Deserialize)]
struct PostbackEvent {
    mid: Option<String>,
    title: Option<String>,
    payload: Option<String>,
    referral: Option<ReferralObject>,
}

#[derive(Deserialize)]
struct ReferralObject {
    #[serde(rename = "ref")]
    link_ref: Option<String>,
    /// `SHORTLINK` (m.me), `SHORTLINKS` (ig.me), `ADS`,
    /// `CUSTOMER_CHAT_PLUGIN`, …
    source: Option<String>,
    #[serde(default, deserialize_with = "id")]
    ad_id: Option<String>,
    referer_uri: Option<String>,
}

#[derive(Deserialize)]
struct ReactionEvent {
    mid: Option<String>,
    /// `react` or `unreact`.
    action: Option<String>,
    emoji: Option<String>,
    /// The reaction's name: `like`, `love`, `smile`, …
    reaction: Option<String>,
}

#[derive(Deserialize)]
struct DeliveryEvent {
    mids: Option<Vec<String>>,
    /// Unix milliseconds: everything sent before it was delivered.
    watermark: Option<u64>,
}

#[derive(Deserialize)]
struct ReadEvent {
    /// Instagram's `messaging_seen` names the message read.
    mid: Option<String>,
}

/// Meta writes ids as strings; a few places (and some test tools) write
/// them as numbers. Either is read as a string.
fn id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    }))
}

impl Guest for Messenger {
    fn describe() -> Manifest {
        Manifest {
            id: CHANNEL.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "Meta Messenger and Instagram".into(),
            verification: Verification::HmacSha256(HmacSha256Scheme {
                header: "x-hub-signature-256".into(),
                prefix: "sha256=".into(),
                encoding: Encoding::Hex,
                signed_template: "{body}".into(),
                timestamp_header: None,
                max_age_seconds: None,
                secret: "app_secret".into(),
            }),
            handshake: Handshake::QueryChallenge(QueryChallenge {
                method: Method::Get,
                mode_param: "hub.mode".into(),
                mode_value: "subscribe".into(),
                token_param: "hub.verify_token".into(),
                token_secret: "verify_token".into(),
                challenge_param: "hub.challenge".into(),
            }),
            secrets: vec![
                SettingSpec::new(
                    "app_secret",
                    "App Secret (App Dashboard → App settings → Basic); keys the webhook signature",
                    true,
                ),
                SettingSpec::new(
                    "verify_token",
                    "the Verify Token typed in the webhook configuration; answers the subscription handshake",
                    true,
                ),
                SettingSpec::new(
                    "page_access_token",
                    "a Page access token with pages_messaging (and instagram_manage_messages for \
                     Instagram: the token of the Page linked to the Instagram professional account); \
                     sends replies",
                    true,
                ),
            ],
            settings: vec![
                SettingSpec::new(
                    "page_id",
                    "the Facebook Page's id or username; used in m.me deep links",
                    false,
                ),
                SettingSpec::new(
                    "instagram_username",
                    "the Instagram professional account's username; used in ig.me deep links",
                    false,
                ),
            ],
            capabilities: Capabilities::RECEIVE_MESSAGES
                | Capabilities::DELIVERY_STATUS
                | Capabilities::SEND_TEXT
                | Capabilities::SEND_MEDIA
                | Capabilities::SEND_CHOICES
                | Capabilities::LINK_TOKENS,
            reply_window_seconds: Some(WINDOW_SECONDS as u32),
            person_reply_window_seconds: Some(HUMAN_AGENT_SECONDS as u32),
            deep_links: vec![
                "https://ig.me/m/{setting:instagram_username}?ref={token}".into(),
                "https://m.me/{setting:page_id}?ref={token}".into(),
            ],
            outbound_limits: OutboundLimits {
                max_text_chars: MAX_TEXT as u32,
                max_choices: MAX_QUICK_REPLIES as u32,
                max_choice_title_chars: MAX_TITLE as u32,
                max_caption_chars: 0,
            },
        }
    }

    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        if req.request.method != Method::Post {
            return Err(ChannelError::Unsupported(
                "Messenger and Instagram notifications are POST requests".into(),
            ));
        }
        let note: Notification = json_body(&req.request)?;
        if note.object != "page" && note.object != "instagram" {
            return Err(ChannelError::Malformed(format!(
                "body: `object` is `{}`, expected `page` (Messenger) or `instagram`",
                short(&note.object)
            )));
        }
        let mut out = Collector {
            received: req.context.received_at_ms / 1000,
            events: Vec::new(),
            diagnostics: Vec::new(),
        };
        let mut standby = 0usize;
        for entry in note.entry.unwrap_or_default() {
            let Some(scope) = entry.id.filter(|s| !s.is_empty()) else {
                return Err(ChannelError::Malformed(
                    "body: an `entry` has no `id` (the Page or Instagram account id)".into(),
                ));
            };
            for event in entry.messaging.unwrap_or_default() {
                out.event(&scope, event);
            }
            for event in entry.standby.unwrap_or_default() {
                standby += 1;
                out.event(&scope, event);
            }
            for change in entry.changes.unwrap_or_default() {
                let field = change.field.unwrap_or_default();
                out.events.push(InboundEvent::ignored(format!(
                    "change field `{}` is not messaging",
                    short(&field)
                )));
            }
        }
        if standby > 0 {
            out.diagnostics.push(Diagnostic {
                level: Level::Info,
                message: format!(
                    "{standby} standby event(s): another app controls these threads \
                     (handover protocol); recorded as usual"
                ),
            });
        }
        let mut inbound = Inbound::ok(out.events);
        inbound.diagnostics = out.diagnostics;
        Ok(inbound)
    }

    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        let name = display_name(&msg.context.channel);
        if msg.recipient.id.is_empty() {
            return Err(ChannelError::InvalidOutbound(format!(
                "recipient needs a {name} user id (PSID or IGSID)"
            )));
        }
        let mut body = json!({
            "recipient": {"id": msg.recipient.id},
            "message": message_body(&msg.content, name)?,
        });
        let (kind, tag) = messaging_type(&msg.context, name)?;
        body["messaging_type"] = json!(kind);
        if let Some(tag) = tag {
            body["tag"] = json!(tag);
        }
        Ok(json_call(
            Method::Post,
            "/me/messages".into(),
            &body,
            Some(CredentialHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
                secret: "page_access_token".into(),
            }),
            Some("/message_id"),
        ))
    }
}

/// "Instagram" for a channel configured under a name with `instagram` in
/// it, "Messenger" otherwise: the name errors use.
fn display_name(channel: &str) -> &'static str {
    if channel.contains("instagram") {
        "Instagram"
    } else {
        "Messenger"
    }
}

/// The `messaging_type` a send needs, and its message tag: `RESPONSE` for
/// a reply within the 24-hour window, `UPDATE` for a proactive message
/// within it, `MESSAGE_TAG` with `HUMAN_AGENT` for a person's reply after
/// it (up to 7 days); an error when Meta would refuse the send.
fn messaging_type(
    ctx: &OutboundContext,
    name: &str,
) -> Result<(&'static str, Option<&'static str>), ChannelError> {
    let since = ctx.last_inbound_at.map(|t| ctx.now.saturating_sub(t));
    let inside = since.is_some_and(|s| s < WINDOW_SECONDS);
    match ctx.purpose {
        Purpose::AgentReply => return Ok(("RESPONSE", None)),
        Purpose::PersonReply if inside => return Ok(("RESPONSE", None)),
        Purpose::Proactive if inside => return Ok(("UPDATE", None)),
        _ => {}
    }
    let when = match since {
        Some(s) => format!("the customer last wrote {} hours ago", s / 3600),
        None => "the customer never wrote".to_string(),
    };
    match ctx.purpose {
        Purpose::PersonReply if since.is_some_and(|s| s < HUMAN_AGENT_SECONDS) => {
            Ok(("MESSAGE_TAG", Some("HUMAN_AGENT")))
        }
        Purpose::PersonReply => Err(ChannelError::InvalidOutbound(format!(
            "{when}; {name} accepts a person's reply (the HUMAN_AGENT tag) only within 7 days \
             of the customer's last message"
        ))),
        _ => Err(ChannelError::InvalidOutbound(format!(
            "{when}; {name} refuses a proactive message outside its 24-hour standard \
             messaging window"
        ))),
    }
}

/// The Send API's `message` object for one content.
fn message_body(content: &OutboundContent, name: &str) -> Result<Value, ChannelError> {
    Ok(match content {
        OutboundContent::Text(text) => json!({"text": text_limit(text, MAX_TEXT, name)?}),
        OutboundContent::Choices(c) => {
            let prompt = text_limit(&c.prompt, MAX_TEXT, name)?;
            if c.options.is_empty() || c.options.len() > MAX_QUICK_REPLIES {
                return Err(ChannelError::InvalidOutbound(format!(
                    "{} options; {name} takes 1 to {MAX_QUICK_REPLIES} quick replies",
                    c.options.len()
                )));
            }
            let mut replies = Vec::with_capacity(c.options.len());
            for (i, o) in c.options.iter().enumerate() {
                let n = o.title.chars().count();
                if o.title.trim().is_empty() || n > MAX_TITLE {
                    return Err(ChannelError::InvalidOutbound(format!(
                        "option {} title is {n} characters; a {name} quick reply title takes \
                         1 to {MAX_TITLE}",
                        i + 1
                    )));
                }
                if o.id.is_empty() || o.id.chars().count() > MAX_PAYLOAD {
                    return Err(ChannelError::InvalidOutbound(format!(
                        "option {} id must be 1 to {MAX_PAYLOAD} characters (the quick reply payload)",
                        i + 1
                    )));
                }
                replies.push(json!({"content_type": "text", "title": o.title, "payload": o.id}));
            }
            json!({"text": prompt, "quick_replies": replies})
        }
        OutboundContent::Media(m) => {
            let kind = match m.kind {
                MediaKind::Image => "image",
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
                MediaKind::Document => "file",
                MediaKind::Sticker => {
                    return Err(ChannelError::InvalidOutbound(
                        "stickers are not sent".into(),
                    ));
                }
            };
            // The manifest declares no captions, so the host sends a
            // captioned media as text; a caption here would be lost.
            if m.caption.as_deref().is_some_and(|c| !c.trim().is_empty()) {
                return Err(ChannelError::InvalidOutbound(format!(
                    "{name} attachments carry no caption"
                )));
            }
            let payload = match &m.source {
                MediaSource::Url(url) if !url.is_empty() => {
                    json!({"url": url, "is_reusable": true})
                }
                MediaSource::MediaId(id) if !id.is_empty() => json!({"attachment_id": id}),
                _ => {
                    return Err(ChannelError::InvalidOutbound(
                        "media has an empty URL or attachment id".into(),
                    ));
                }
            };
            json!({"attachment": {"type": kind, "payload": payload}})
        }
        OutboundContent::Template(_) => {
            return Err(ChannelError::InvalidOutbound(format!(
                "{name} has no WhatsApp-style message templates"
            )));
        }
    })
}

/// Events and notes gathered from one notification.
struct Collector {
    /// The host's receive time, Unix seconds: the time of an event that
    /// carries none.
    received: u64,
    events: Vec<InboundEvent>,
    diagnostics: Vec<Diagnostic>,
}

impl Collector {
    fn ignore(&mut self, reason: impl Into<String>) {
        self.events.push(InboundEvent::ignored(reason));
    }

    fn warn(&mut self, message: String) {
        self.diagnostics.push(Diagnostic {
            level: Level::Warning,
            message,
        });
    }

    /// Unix seconds from Meta's milliseconds (a value below 10^11, which
    /// can only be seconds, is taken as it is).
    fn seconds(&self, ms: Option<u64>) -> u64 {
        match ms {
            Some(t) if t >= 100_000_000_000 => t / 1000,
            Some(t) if t > 0 => t,
            _ => self.received,
        }
    }

    fn event(&mut self, scope: &str, e: Event) {
        let sender = e.sender.and_then(|s| s.id).filter(|s| !s.is_empty());
        let ts_ms = e.timestamp;
        let timestamp = self.seconds(ts_ms);
        // Built ids (for events Meta gives no id) repeat on redelivery.
        let built = |kind: &str, who: &str| format!("{kind}:{who}:{}", ts_ms.unwrap_or(0));
        let kind = if e.message.is_some() {
            "message"
        } else if e.message_edit.is_some() {
            "message_edit"
        } else if e.postback.is_some() {
            "postback"
        } else if e.reaction.is_some() {
            "reaction"
        } else if e.delivery.is_some() {
            "delivery"
        } else if e.read.is_some() {
            "read"
        } else if e.referral.is_some() {
            "referral"
        } else {
            let kinds: Vec<&str> = e
                .other
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "recipient")
                .collect();
            match kinds.first() {
                Some(k) => self.ignore(format!("event kind `{}` is not handled", short(k))),
                None => self.ignore("an event with no kind"),
            }
            return;
        };
        // An echo's sender is the page itself: skip it before asking who.
        if e.message.as_ref().is_some_and(|m| m.is_echo == Some(true)) {
            self.ignore("echo of the page's own message");
            return;
        }
        let Some(sender) = sender else {
            self.ignore(format!(
                "a `{kind}` event without a sender id (chat plugin guests are not handled)"
            ));
            return;
        };
        let identity = ChannelIdentity::new(scope, sender.clone());
        let message = |id: String, contents: Vec<Content>| InboundMessage {
            provider_message_id: id,
            sender: identity.clone(),
            display_name: None,
            claims: Vec::new(),
            contents,
            referral: None,
            link_token: None,
            timestamp,
            edited: false,
            reply_handle: None,
        };

        if let Some(m) = e.message {
            if m.is_deleted == Some(true) {
                self.ignore("a message its sender deleted");
                return;
            }
            let id = m
                .mid
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| built("message", &sender));
            let contents = self.contents(&m);
            let mut msg = message(id, contents);
            if let Some(r) = m.referral.as_ref().or(e.referral.as_ref()) {
                self.refer(&mut msg, r);
            }
            self.events.push(InboundEvent::Message(msg));
        } else if let Some(edit) = e.message_edit {
            let Some(mid) = edit.mid.filter(|s| !s.is_empty()) else {
                self.ignore("a message edit without a message id");
                return;
            };
            let n = match edit.num_edit {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 8 => s,
                _ => ts_ms.unwrap_or(0).to_string(),
            };
            let contents = match edit.text.filter(|t| !t.is_empty()) {
                Some(t) => vec![Content::Text(t)],
                None => vec![Content::Unsupported("message_edit".into())],
            };
            let mut msg = message(format!("{mid}:edit:{n}"), contents);
            msg.edited = true;
            self.events.push(InboundEvent::Message(msg));
        } else if let Some(p) = e.postback {
            let id = p
                .mid
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| built("postback", &sender));
            let payload = p.payload.clone().unwrap_or_default();
            let title = p.title.clone().unwrap_or_default();
            let mut msg = message(id, vec![Content::Postback(Postback { payload, title })]);
            if let Some(r) = p.referral.as_ref().or(e.referral.as_ref()) {
                self.refer(&mut msg, r);
            }
            self.events.push(InboundEvent::Message(msg));
        } else if let Some(r) = e.reaction {
            let Some(mid) = r.mid.filter(|s| !s.is_empty()) else {
                self.ignore("a reaction without a message id");
                return;
            };
            let emoji = if r.action.as_deref() == Some("unreact") {
                String::new()
            } else {
                r.emoji
                    .filter(|e| !e.is_empty())
                    .or_else(|| r.reaction.as_deref().map(emoji_of))
                    .unwrap_or_default()
            };
            let content = Content::Reaction(Reaction {
                message_id: mid,
                emoji,
            });
            let msg = message(built("reaction", &sender), vec![content]);
            self.events.push(InboundEvent::Message(msg));
        } else if let Some(d) = e.delivery {
            let mids = d.mids.unwrap_or_default();
            if mids.is_empty() {
                self.ignore("a delivery watermark without message ids");
                return;
            }
            let at = if ts_ms.is_some() {
                timestamp
            } else {
                self.seconds(d.watermark)
            };
            for mid in mids.into_iter().filter(|m| !m.is_empty()) {
                self.events.push(InboundEvent::Status(DeliveryStatus {
                    provider_message_id: mid,
                    recipient: Some(identity.clone()),
                    state: DeliveryState::Delivered,
                    timestamp: at,
                    error: None,
                }));
            }
        } else if let Some(r) = e.read {
            match r.mid.filter(|s| !s.is_empty()) {
                Some(mid) => self.events.push(InboundEvent::Status(DeliveryStatus {
                    provider_message_id: mid,
                    recipient: Some(identity.clone()),
                    state: DeliveryState::Read,
                    timestamp,
                    error: None,
                })),
                None => self.ignore("a read watermark names no message"),
            }
        } else if let Some(r) = e.referral {
            // A link opened or an ad clicked in an existing thread: nothing
            // else records where the customer came from, or the token.
            let title = if is_ad(&r) {
                "clicked an ad"
            } else {
                "opened a link"
            };
            let content = Content::Postback(Postback {
                payload: "referral".into(),
                title: title.into(),
            });
            let mut msg = message(built("referral", &sender), vec![content]);
            self.refer(&mut msg, &r);
            self.events.push(InboundEvent::Message(msg));
        }
    }

    /// A message's contents in order: its text (or the quick reply tapped)
    /// and then its attachments.
    fn contents(&mut self, m: &Message) -> Vec<Content> {
        let mut contents = Vec::new();
        let text = m.text.clone().filter(|t| !t.is_empty());
        if let Some(q) = &m.quick_reply {
            contents.push(Content::Postback(Postback {
                payload: q.payload.clone().unwrap_or_default(),
                title: text.unwrap_or_default(),
            }));
        } else if let Some(t) = text {
            contents.push(Content::Text(t));
        }
        let attachments = m.attachments.as_deref().unwrap_or_default();
        // While Meta moves stickers to their own type it sends both a
        // `sticker` and the old `image` with a `sticker_id`: keep one.
        let has_sticker = attachments
            .iter()
            .any(|a| a.kind.as_deref() == Some("sticker"));
        for a in attachments {
            let kind = a.kind.as_deref().unwrap_or("attachment");
            let sticker_image =
                kind == "image" && a.payload.as_ref().is_some_and(|p| p.sticker_id.is_some());
            if sticker_image && has_sticker {
                continue;
            }
            let media_kind = match kind {
                "image" if sticker_image => Some(MediaKind::Sticker),
                "image" => Some(MediaKind::Image),
                "sticker" => Some(MediaKind::Sticker),
                "video" => Some(MediaKind::Video),
                "audio" => Some(MediaKind::Audio),
                "file" => Some(MediaKind::Document),
                _ => None,
            };
            let payload = a.payload.as_ref();
            let content = if let Some(media_kind) = media_kind {
                let reference = payload.and_then(|p| {
                    p.url
                        .clone()
                        .filter(|u| !u.is_empty())
                        .or_else(|| p.attachment_id.clone())
                });
                match reference {
                    Some(reference) => Content::Media(Media {
                        kind: media_kind,
                        reference,
                        mime_type: None,
                        caption: None,
                        filename: None,
                    }),
                    None => Content::Unsupported(short(kind)),
                }
            } else if kind == "location" {
                let coordinates = payload
                    .and_then(|p| p.coordinates.as_ref())
                    .and_then(|c| Some((c.lat?, c.long?)));
                match coordinates {
                    Some((latitude, longitude)) => Content::Location(Location {
                        latitude,
                        longitude,
                        name: a.title.clone().filter(|t| !t.is_empty()),
                        address: None,
                    }),
                    None => Content::Unsupported("location".into()),
                }
            } else {
                Content::Unsupported(short(kind))
            };
            contents.push(content);
        }
        if contents.is_empty() {
            contents.push(Content::Unsupported("message".into()));
        }
        if contents.len() > MAX_CONTENTS {
            self.warn(format!(
                "a message had {} contents; the first {MAX_CONTENTS} were kept",
                contents.len()
            ));
            contents.truncate(MAX_CONTENTS);
        }
        contents
    }

    /// Sets a message's referral, and its link token when the referral is
    /// a gateway deep link's.
    fn refer(&mut self, msg: &mut InboundMessage, r: &ReferralObject) {
        let link_ref = r.link_ref.clone().filter(|s| !s.is_empty());
        let link_ref = match link_ref {
            Some(s) if s.len() > MAX_REF_BYTES => {
                self.warn(format!(
                    "a referral `ref` of {} bytes was dropped (the limit is {MAX_REF_BYTES})",
                    s.len()
                ));
                None
            }
            other => other,
        };
        if !is_ad(r) {
            msg.link_token = link_ref
                .as_deref()
                .filter(|s| is_link_token(s))
                .map(String::from);
        }
        msg.referral = Some(Referral {
            source_type: r
                .source
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| short(&s.to_ascii_lowercase()))
                .unwrap_or_else(|| "referral".into()),
            source_id: r.ad_id.clone().filter(|s| !s.is_empty()),
            click_id: None,
            link_ref,
            url: r.referer_uri.clone().filter(|s| !s.is_empty()),
        });
    }
}

fn is_ad(r: &ReferralObject) -> bool {
    r.source
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("ADS"))
        || r.ad_id.is_some()
}

/// A gateway link token: 22 characters of `A-Z a-z 0-9 _ -`.
fn is_link_token(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The emoji for a reaction Meta names without one (its name when there
/// is no such emoji: never empty, which would mean "removed").
fn emoji_of(name: &str) -> String {
    match name {
        "like" => "👍",
        "dislike" => "👎",
        "love" => "❤️",
        "smile" | "laugh" => "😆",
        "wow" => "😮",
        "sad" => "😢",
        "angry" => "😠",
        other => return short(other),
    }
    .to_string()
}

/// A name from the payload, cut short for a reason or a content.
fn short(s: &str) -> String {
    s.chars().take(MAX_KIND_CHARS).collect()
}

// Exported only in the WebAssembly build: natively (the crate's tests) the
// cdylib cannot carry the component's export names, which contain `:`.
chatcrafter_plugin_sdk::export_plugin!(Messenger);

#[cfg(test)]
mod tests;
