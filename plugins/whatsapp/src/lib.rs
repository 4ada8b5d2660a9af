//! The WhatsApp Cloud API channel plugin.
//!
//! Inbound: Meta's webhook notifications (`object: whatsapp_business_account`).
//! Every `entry[]`, every `changes[]`, every `messages[]` and `statuses[]` is
//! visited — never just the first. The sender is `(whatsapp,
//! metadata.phone_number_id, id)` where `id` is the business-scoped user id
//! when Meta sends one and the `wa_id` otherwise; the `wa_id` is a phone number
//! WhatsApp has verified, so it becomes a verified phone claim.
//!
//! Verification (declared, applied by the host): `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256(app_secret, raw body)>` over the bytes exactly as
//! received — Meta signs its escaped ASCII form — and the `hub.challenge`
//! subscription handshake keyed by `verify_token`.
//!
//! Outbound: `POST {api_base}/{phone_number_id}/messages` with
//! `Authorization: Bearer {access_token}` added by the host: text; media
//! (image, document, audio, video by link or media id, with caption);
//! choices as interactive reply buttons (up to 3) or an interactive list
//! (up to 10 rows); templates (name, language, body parameters) — the only
//! messages WhatsApp accepts outside its 24-hour customer-service window,
//! which the manifest declares so that the host never sends free text
//! outside it.
//!
//! Inbound click-to-WhatsApp ads carry a `referral` (ad id, `ctwa_clid`),
//! reported as the message's referral.
//!
//! Link tokens: a text that is a one-time link token, or ends with
//! `ref:<token>`, carries it (see [`link_token`]).
//!
//! Not handled here: media download, template header and button
//! parameters.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::json;
use serde::Deserialize;

const CHANNEL: &str = "whatsapp";
/// WhatsApp's limit for a text message body, in characters.
const MAX_TEXT: usize = 4096;
/// Reply buttons in one interactive message.
const MAX_BUTTONS: usize = 3;
/// Rows in one interactive list (one section).
const MAX_ROWS: usize = 10;
/// A button title's limit (list rows take 24; the smaller is declared).
const MAX_TITLE: u32 = 20;
/// An interactive message body's limit; a longer prompt goes as text.
const MAX_INTERACTIVE_BODY: usize = 1024;
/// A media caption's limit.
const MAX_CAPTION: u32 = 1024;

struct WhatsApp;

#[derive(Deserialize)]
struct Notification {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: String,
    value: ChangeValue,
}

#[derive(Deserialize)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    statuses: Vec<Status>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Contact {
    wa_id: Option<String>,
    /// Business-scoped user id (2026): present for users with usernames, who
    /// may have no `wa_id` at all.
    user_id: Option<String>,
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    id: String,
    from: Option<String>,
    from_user_id: Option<String>,
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
    image: Option<MediaObject>,
    video: Option<MediaObject>,
    audio: Option<MediaObject>,
    document: Option<MediaObject>,
    sticker: Option<MediaObject>,
    location: Option<LocationObject>,
    interactive: Option<Interactive>,
    button: Option<Button>,
    reaction: Option<ReactionObject>,
    referral: Option<AdReferral>,
}

/// A click-to-WhatsApp ad's referral on the first message.
#[derive(Deserialize)]
struct AdReferral {
    source_url: Option<String>,
    source_id: Option<String>,
    source_type: Option<String>,
    ctwa_clid: Option<String>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct MediaObject {
    id: String,
    mime_type: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
}

#[derive(Deserialize)]
struct LocationObject {
    latitude: f64,
    longitude: f64,
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct Interactive {
    button_reply: Option<Reply>,
    list_reply: Option<Reply>,
}

#[derive(Deserialize)]
struct Reply {
    id: String,
    title: String,
}

#[derive(Deserialize)]
struct Button {
    payload: Option<String>,
    text: String,
}

#[derive(Deserialize)]
struct ReactionObject {
    message_id: String,
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    timestamp: Option<String>,
    recipient_id: Option<String>,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Deserialize)]
struct StatusError {
    code: Option<i64>,
    title: Option<String>,
    message: Option<String>,
}

impl Guest for WhatsApp {
    fn describe() -> Manifest {
        Manifest {
            id: CHANNEL.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "WhatsApp Cloud API".into(),
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
                    "access_token",
                    "a system-user access token with whatsapp_business_messaging; sends replies",
                    true,
                ),
            ],
            settings: vec![SettingSpec::new(
                "display_phone_number",
                "the business number in international form; used in wa.me deep links",
                false,
            )],
            capabilities: Capabilities::RECEIVE_MESSAGES
                | Capabilities::DELIVERY_STATUS
                | Capabilities::SEND_TEXT
                | Capabilities::SEND_MEDIA
                | Capabilities::SEND_CHOICES
                | Capabilities::SEND_TEMPLATES
                | Capabilities::LINK_TOKENS,
            reply_window_seconds: Some(24 * 3600),
            person_reply_window_seconds: None,
            deep_links: vec!["https://wa.me/{setting:display_phone_number}?text={token}".into()],
            outbound_limits: OutboundLimits {
                max_text_chars: MAX_TEXT as u32,
                max_choices: MAX_ROWS as u32,
                max_choice_title_chars: MAX_TITLE,
                max_caption_chars: MAX_CAPTION,
            },
        }
    }

    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        if req.request.method != Method::Post {
            return Err(ChannelError::Unsupported(
                "WhatsApp notifications are POST requests".into(),
            ));
        }
        let note: Notification = json_body(&req.request)?;
        if note.object != "whatsapp_business_account" {
            return Err(ChannelError::Malformed(format!(
                "body: `object` is `{}`, expected `whatsapp_business_account`",
                note.object
            )));
        }
        let received = req.context.received_at_ms / 1000;
        let mut events = Vec::new();
        for entry in note.entry {
            for change in entry.changes {
                if change.field != "messages" {
                    events.push(InboundEvent::ignored(format!(
                        "change field `{}` is not handled",
                        change.field
                    )));
                    continue;
                }
                collect(change.value, received, &mut events)?;
            }
        }
        Ok(Inbound::ok(events))
    }

    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        if msg.recipient.scope.is_empty() || msg.recipient.id.is_empty() {
            return Err(ChannelError::InvalidOutbound(
                "recipient needs a phone_number_id scope and a WhatsApp id".into(),
            ));
        }
        // The phone_number_id becomes a path segment: Meta's ids are digits,
        // and anything else could move the call within api_base.
        if !msg.recipient.scope.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::InvalidOutbound(
                "the phone_number_id scope must be digits".into(),
            ));
        }
        let mut body = message_body(&msg.content)?;
        body["messaging_product"] = json!("whatsapp");
        body["recipient_type"] = json!("individual");
        body["to"] = json!(msg.recipient.id);
        Ok(json_call(
            Method::Post,
            format!("/{}/messages", msg.recipient.scope),
            &body,
            Some(CredentialHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
                secret: "access_token".into(),
            }),
            Some("/messages/0/id"),
        ))
    }
}

/// The message object of the Cloud API for one content (without the
/// recipient fields).
fn message_body(
    content: &OutboundContent,
) -> Result<chatcrafter_plugin_sdk::serde_json::Value, ChannelError> {
    Ok(match content {
        OutboundContent::Text(text) => {
            let text = text_limit(text, MAX_TEXT, "WhatsApp")?;
            json!({"type": "text", "text": {"preview_url": false, "body": text}})
        }
        OutboundContent::Media(m) => {
            let kind = match m.kind {
                MediaKind::Image => "image",
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
                MediaKind::Document => "document",
                MediaKind::Sticker => {
                    return Err(ChannelError::InvalidOutbound(
                        "stickers are not sent".into(),
                    ));
                }
            };
            let mut media = match &m.source {
                MediaSource::Url(url) => json!({"link": url}),
                MediaSource::MediaId(id) => json!({"id": id}),
            };
            // Audio takes no caption on WhatsApp.
            if let Some(c) = m.caption.as_ref().filter(|_| kind != "audio") {
                media["caption"] = json!(c);
            }
            if let Some(f) = m.filename.as_ref().filter(|_| kind == "document") {
                media["filename"] = json!(f);
            }
            json!({"type": kind, kind: media})
        }
        OutboundContent::Choices(c) => {
            if c.options.is_empty() || c.options.len() > MAX_ROWS {
                return Err(ChannelError::InvalidOutbound(format!(
                    "{} options; WhatsApp takes 1 to {MAX_ROWS}",
                    c.options.len()
                )));
            }
            if c.prompt.chars().count() > MAX_INTERACTIVE_BODY {
                // Too long for an interactive body: numbered text.
                let mut text = c.prompt.clone();
                for (i, o) in c.options.iter().enumerate() {
                    text.push_str(&format!("\n{}. {}", i + 1, o.title));
                }
                return message_body(&OutboundContent::Text(text));
            }
            if c.options.len() <= MAX_BUTTONS {
                let buttons: Vec<_> = c
                    .options
                    .iter()
                    .map(|o| json!({"type": "reply", "reply": {"id": o.id, "title": o.title}}))
                    .collect();
                json!({"type": "interactive", "interactive": {
                    "type": "button",
                    "body": {"text": c.prompt},
                    "action": {"buttons": buttons},
                }})
            } else {
                let rows: Vec<_> = c
                    .options
                    .iter()
                    .map(|o| json!({"id": o.id, "title": o.title}))
                    .collect();
                json!({"type": "interactive", "interactive": {
                    "type": "list",
                    "body": {"text": c.prompt},
                    "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]},
                }})
            }
        }
        OutboundContent::Template(t) => {
            let mut template = json!({"name": t.name, "language": {"code": t.language}});
            if !t.parameters.is_empty() {
                let params: Vec<_> = t
                    .parameters
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                template["components"] = json!([{"type": "body", "parameters": params}]);
            }
            json!({"type": "template", "template": template})
        }
    })
}

fn collect(
    value: ChangeValue,
    received: u64,
    events: &mut Vec<InboundEvent>,
) -> Result<(), ChannelError> {
    let scope = value
        .metadata
        .map(|m| m.phone_number_id)
        .ok_or_else(|| ChannelError::Malformed("body: a change has no `metadata`".into()))?;
    for m in value.messages {
        let wa_id = m.from.clone();
        let bsuid = m.from_user_id.clone();
        let contact = value.contacts.iter().find(|c| {
            (wa_id.is_some() && c.wa_id == wa_id) || (bsuid.is_some() && c.user_id == bsuid)
        });
        let bsuid = bsuid.or_else(|| contact.and_then(|c| c.user_id.clone()));
        let wa_id = wa_id.or_else(|| contact.and_then(|c| c.wa_id.clone()));
        let Some(id) = bsuid.clone().or_else(|| wa_id.clone()) else {
            return Err(ChannelError::Malformed(format!(
                "body: message `{}` has neither `from` nor a business-scoped user id",
                m.id
            )));
        };
        let profile = contact.and_then(|c| c.profile.as_ref());
        let display_name = profile.and_then(|p| p.name.clone());
        let mut claims = Vec::new();
        if let Some(wa_id) = &wa_id {
            claims.push(Claim::verified(ClaimKind::Phone, format!("+{wa_id}")));
        }
        if let Some(name) = &display_name {
            claims.push(Claim::unverified(ClaimKind::Name, name.clone()));
        }
        if let Some(username) = profile.and_then(|p| p.username.clone()) {
            claims.push(Claim::unverified(ClaimKind::Username, username));
        }
        let timestamp = seconds(m.timestamp.as_deref(), received);
        let content = content(&m);
        let link_token = match &content {
            Content::Text(t) => link_token(t),
            _ => None,
        };
        let referral = m.referral.as_ref().map(|r| Referral {
            source_type: r.source_type.clone().unwrap_or_else(|| "ad".into()),
            source_id: r.source_id.clone(),
            click_id: r.ctwa_clid.clone(),
            link_ref: None,
            url: r.source_url.clone(),
        });
        events.push(InboundEvent::Message(InboundMessage {
            provider_message_id: m.id,
            sender: ChannelIdentity::new(scope.clone(), id),
            display_name,
            claims,
            contents: vec![content],
            referral,
            link_token,
            timestamp,
            edited: false,
            reply_handle: None,
        }));
    }
    for s in value.statuses {
        let state = match s.status.as_str() {
            "sent" => DeliveryState::Sent,
            "delivered" => DeliveryState::Delivered,
            "read" => DeliveryState::Read,
            "failed" => DeliveryState::Failed,
            other => {
                events.push(InboundEvent::ignored(format!(
                    "status `{other}` is not handled"
                )));
                continue;
            }
        };
        let error = s.errors.first().map(|e| {
            let code = e.code.map(|c| format!("{c} ")).unwrap_or_default();
            let text = e.message.as_deref().or(e.title.as_deref()).unwrap_or("");
            format!("{code}{text}").trim().to_string()
        });
        events.push(InboundEvent::Status(DeliveryStatus {
            provider_message_id: s.id,
            recipient: s
                .recipient_id
                .map(|r| ChannelIdentity::new(scope.clone(), r)),
            state,
            timestamp: seconds(s.timestamp.as_deref(), received),
            error,
        }));
    }
    Ok(())
}

/// WhatsApp sends Unix seconds as a string; the receive time stands in when
/// it is missing or unreadable.
fn seconds(ts: Option<&str>, received: u64) -> u64 {
    ts.and_then(|t| t.parse().ok()).unwrap_or(received)
}

fn media(kind: MediaKind, m: &MediaObject) -> Content {
    Content::Media(Media {
        kind,
        reference: m.id.clone(),
        mime_type: m.mime_type.clone(),
        caption: m.caption.clone(),
        filename: m.filename.clone(),
    })
}

/// The one-time link token a text carries, in one of two documented forms:
/// the whole text is the token (what `https://wa.me/<number>?text=<token>`,
/// as `POST /v1/link-tokens` returns it, prefills), or the text's last word
/// is `ref:<token>` (for a business that prefills a sentence). A token is
/// 22 characters of `A-Z a-z 0-9 _ -`.
fn link_token(text: &str) -> Option<String> {
    let text = text.trim();
    let candidate = match text.rsplit_once(char::is_whitespace) {
        None => text.strip_prefix("ref:").unwrap_or(text),
        Some((_, last)) => last.strip_prefix("ref:")?,
    };
    let shaped = candidate.len() == 22
        && candidate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    shaped.then(|| candidate.to_string())
}

fn content(m: &Message) -> Content {
    let unsupported = || Content::Unsupported(m.kind.clone());
    match m.kind.as_str() {
        "text" => m
            .text
            .as_ref()
            .map(|t| Content::Text(t.body.clone()))
            .unwrap_or_else(unsupported),
        "image" => m
            .image
            .as_ref()
            .map(|x| media(MediaKind::Image, x))
            .unwrap_or_else(unsupported),
        "video" => m
            .video
            .as_ref()
            .map(|x| media(MediaKind::Video, x))
            .unwrap_or_else(unsupported),
        "audio" => m
            .audio
            .as_ref()
            .map(|x| media(MediaKind::Audio, x))
            .unwrap_or_else(unsupported),
        "document" => m
            .document
            .as_ref()
            .map(|x| media(MediaKind::Document, x))
            .unwrap_or_else(unsupported),
        "sticker" => m
            .sticker
            .as_ref()
            .map(|x| media(MediaKind::Sticker, x))
            .unwrap_or_else(unsupported),
        "location" => m
            .location
            .as_ref()
            .map(|l| {
                Content::Location(Location {
                    latitude: l.latitude,
                    longitude: l.longitude,
                    name: l.name.clone(),
                    address: l.address.clone(),
                })
            })
            .unwrap_or_else(unsupported),
        "interactive" => m
            .interactive
            .as_ref()
            .and_then(|i| i.button_reply.as_ref().or(i.list_reply.as_ref()))
            .map(|r| {
                Content::Postback(Postback {
                    payload: r.id.clone(),
                    title: r.title.clone(),
                })
            })
            .unwrap_or_else(unsupported),
        "button" => m
            .button
            .as_ref()
            .map(|b| {
                Content::Postback(Postback {
                    payload: b.payload.clone().unwrap_or_else(|| b.text.clone()),
                    title: b.text.clone(),
                })
            })
            .unwrap_or_else(unsupported),
        "reaction" => m
            .reaction
            .as_ref()
            .map(|r| {
                Content::Reaction(Reaction {
                    message_id: r.message_id.clone(),
                    emoji: r.emoji.clone().unwrap_or_default(),
                })
            })
            .unwrap_or_else(unsupported),
        _ => unsupported(),
    }
}

chatcrafter_plugin_sdk::export_plugin!(WhatsApp);

#[cfg(test)]
mod tests;
