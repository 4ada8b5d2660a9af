//! The Telegram Bot API channel plugin.
//!
//! Inbound: webhook `Update`s — `message`, `edited_message` and
//! `callback_query`; anything else is `ignored` with its kind. The sender is
//! `(telegram, bot_id, from.id)`; the bot id comes from the `bot_id` setting
//! (the digits before `:` in the bot token), because Telegram's updates do
//! not carry it. `/start <payload>` yields the payload as a link token. A
//! shared contact whose `user_id` is the sender's own id is a verified phone
//! claim; someone else's contact is not a claim about the sender at all.
//!
//! Dedup: the provider message id is `{bot_id}:{update_id}`. Telegram's
//! update ids jump to a random value after a quiet week, so the host dedups
//! by set membership, never by "greater than the last one".
//!
//! Verification (declared, applied by the host): the
//! `X-Telegram-Bot-Api-Secret-Token` header equals `secret_token`. That is a
//! shared secret, not a signature: no body integrity, no replay protection.
//!
//! Outbound: `POST {api_base}/bot{bot_token}/sendMessage` (text, and choices
//! as an inline keyboard whose buttons send their id as `callback_data`),
//! `sendPhoto`, `sendDocument`, `sendAudio`, `sendVideo` (media by URL or
//! `file_id`, with caption); the host fills in the token. A callback query is acknowledged in the webhook answer itself
//! (`answerCallbackQuery`), so the user's button stops spinning at once.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::json;
use serde::Deserialize;

const CHANNEL: &str = "telegram";
/// Telegram's limit for a message text, in characters (after entity parsing).
const MAX_TEXT: usize = 4096;
/// Caption limit, in characters.
const MAX_CAPTION: u32 = 1024;
/// Inline buttons offered in one message (Telegram allows 100; more than
/// this is not a question a person answers).
const MAX_CHOICES: u32 = 20;
/// `callback_data` is 1 to 64 bytes.
const MAX_CALLBACK_DATA: usize = 64;
/// Scope used when the operator has not set `bot_id`.
const DEFAULT_SCOPE: &str = "default";

struct Telegram;

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Option<Message>,
    edited_message: Option<Message>,
    callback_query: Option<CallbackQuery>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    first_name: String,
    last_name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PhotoSize {
    file_id: String,
}

#[derive(Deserialize)]
struct File {
    file_id: String,
    mime_type: Option<String>,
    file_name: Option<String>,
}

#[derive(Deserialize)]
struct SharedContact {
    phone_number: String,
    user_id: Option<i64>,
}

#[derive(Deserialize)]
struct TgLocation {
    latitude: f64,
    longitude: f64,
}

#[derive(Deserialize)]
struct Venue {
    location: TgLocation,
    title: String,
    address: String,
}

#[derive(Deserialize)]
struct Message {
    from: Option<User>,
    chat: Chat,
    date: u64,
    edit_date: Option<u64>,
    text: Option<String>,
    caption: Option<String>,
    contact: Option<SharedContact>,
    location: Option<TgLocation>,
    venue: Option<Venue>,
    photo: Option<Vec<PhotoSize>>,
    document: Option<File>,
    audio: Option<File>,
    voice: Option<File>,
    video: Option<File>,
    sticker: Option<File>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    id: String,
    from: User,
    data: Option<String>,
    message: Option<CallbackMessage>,
}

#[derive(Deserialize)]
struct CallbackMessage {
    date: Option<u64>,
    reply_markup: Option<Markup>,
}

#[derive(Deserialize)]
struct Markup {
    #[serde(default)]
    inline_keyboard: Vec<Vec<InlineButton>>,
}

#[derive(Deserialize)]
struct InlineButton {
    text: String,
    callback_data: Option<String>,
}

impl Guest for Telegram {
    fn describe() -> Manifest {
        Manifest {
            id: CHANNEL.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "Telegram Bot API".into(),
            verification: Verification::SharedSecret(SharedSecretScheme {
                header: "x-telegram-bot-api-secret-token".into(),
                secret: "secret_token".into(),
            }),
            handshake: Handshake::None,
            secrets: vec![
                SettingSpec::new(
                    "secret_token",
                    "the secret_token passed to setWebhook (1-256 of A-Z a-z 0-9 _ -)",
                    true,
                ),
                SettingSpec::new(
                    "bot_token",
                    "the bot token from @BotFather; sends replies",
                    true,
                ),
            ],
            settings: vec![
                SettingSpec::new(
                    "bot_id",
                    "the bot's numeric id (the digits before `:` in the bot token); scopes identities",
                    false,
                ),
                SettingSpec::new(
                    "bot_username",
                    "the bot's @username without `@`; used in t.me deep links",
                    false,
                ),
            ],
            capabilities: Capabilities::RECEIVE_MESSAGES
                | Capabilities::SEND_TEXT
                | Capabilities::SEND_MEDIA
                | Capabilities::SEND_CHOICES
                | Capabilities::LINK_TOKENS,
            reply_window_seconds: None,
            person_reply_window_seconds: None,
            deep_links: vec!["https://t.me/{setting:bot_username}?start={token}".into()],
            outbound_limits: OutboundLimits {
                max_text_chars: MAX_TEXT as u32,
                max_choices: MAX_CHOICES,
                max_choice_title_chars: 64,
                max_caption_chars: MAX_CAPTION,
            },
        }
    }

    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        if req.request.method != Method::Post {
            return Err(ChannelError::Unsupported(
                "Telegram webhook updates are POST requests".into(),
            ));
        }
        let update: Update = json_body(&req.request)?;
        let scope = setting(&req.context, "bot_id")
            .unwrap_or(DEFAULT_SCOPE)
            .to_string();
        let id = format!("{scope}:{}", update.update_id);
        let event = if let Some(m) = update.message {
            message(id, &scope, m, false)
        } else if let Some(m) = update.edited_message {
            message(id, &scope, m, true)
        } else if let Some(q) = update.callback_query {
            let answer = json_response(
                200,
                &json!({"method": "answerCallbackQuery", "callback_query_id": q.id}),
            );
            let event = callback(id, &scope, q, req.context.received_at_ms / 1000);
            return Ok(Inbound::ok(vec![event]).with_response(answer));
        } else {
            let kind = update
                .other
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "empty".into());
            InboundEvent::ignored(format!("update kind `{kind}` is not handled"))
        };
        Ok(Inbound::ok(vec![event]))
    }

    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        let chat_id: i64 = msg.recipient.id.parse().map_err(|_| {
            ChannelError::InvalidOutbound(format!(
                "recipient id `{}` is not a Telegram chat id",
                msg.recipient.id
            ))
        })?;
        let (method, mut body) = match &msg.content {
            OutboundContent::Text(text) => {
                let text = text_limit(text, MAX_TEXT, "Telegram")?;
                ("sendMessage", json!({"text": text}))
            }
            OutboundContent::Choices(c) => {
                let text = text_limit(&c.prompt, MAX_TEXT, "Telegram")?;
                let mut rows = Vec::new();
                for o in &c.options {
                    if o.id.is_empty() || o.id.len() > MAX_CALLBACK_DATA {
                        return Err(ChannelError::InvalidOutbound(format!(
                            "choice id is {} bytes; Telegram's callback_data takes 1 to {MAX_CALLBACK_DATA}",
                            o.id.len()
                        )));
                    }
                    rows.push(json!([{"text": o.title, "callback_data": o.id}]));
                }
                (
                    "sendMessage",
                    json!({"text": text, "reply_markup": {"inline_keyboard": rows}}),
                )
            }
            OutboundContent::Media(m) => {
                let (method, field) = match m.kind {
                    MediaKind::Image => ("sendPhoto", "photo"),
                    MediaKind::Document => ("sendDocument", "document"),
                    MediaKind::Audio => ("sendAudio", "audio"),
                    MediaKind::Video => ("sendVideo", "video"),
                    MediaKind::Sticker => ("sendSticker", "sticker"),
                };
                let source = match &m.source {
                    MediaSource::Url(u) | MediaSource::MediaId(u) => u.clone(),
                };
                let mut body = json!({ field: source });
                if let Some(c) = &m.caption {
                    body["caption"] = json!(c);
                }
                (method, body)
            }
            OutboundContent::Template(_) => {
                return Err(ChannelError::InvalidOutbound(
                    "Telegram has no message templates".into(),
                ));
            }
        };
        body["chat_id"] = json!(chat_id);
        Ok(json_call(
            Method::Post,
            format!("/bot{{secret:bot_token}}/{method}"),
            &body,
            None,
            Some("/result/message_id"),
        ))
    }
}

fn sender(scope: &str, user: &User) -> (ChannelIdentity, Option<String>, Vec<Claim>) {
    let name = match &user.last_name {
        Some(last) => format!("{} {last}", user.first_name),
        None => user.first_name.clone(),
    };
    let mut claims = vec![Claim::unverified(ClaimKind::Name, name.clone())];
    if let Some(u) = &user.username {
        claims.push(Claim::unverified(ClaimKind::Username, u.clone()));
    }
    (
        ChannelIdentity::new(scope, user.id.to_string()),
        Some(name),
        claims,
    )
}

fn message(id: String, scope: &str, m: Message, edited: bool) -> InboundEvent {
    let Some(from) = &m.from else {
        return InboundEvent::ignored("a channel post has no sender");
    };
    if from.is_bot {
        return InboundEvent::ignored("messages from bots are not forwarded");
    }
    if m.chat.kind != "private" {
        return InboundEvent::ignored(format!("{} chats are not handled", m.chat.kind));
    }
    let (identity, display_name, mut claims) = sender(scope, from);
    let mut link_token = None;
    let content = if let Some(text) = &m.text {
        link_token = start_payload(text);
        Content::Text(text.clone())
    } else if let Some(c) = &m.contact {
        // Only a contact the user shared about themselves says anything
        // about the sender; Telegram vouches for the number it carries.
        if c.user_id == Some(from.id) {
            // Telegram usually sends the number without its `+`; it is
            // always international.
            let phone = c.phone_number.trim();
            let phone = if phone.starts_with('+') {
                phone.to_string()
            } else {
                format!("+{phone}")
            };
            claims.push(Claim::verified(ClaimKind::Phone, phone));
        }
        Content::Postback(Postback {
            payload: "contact".into(),
            title: if c.user_id == Some(from.id) {
                "shared their phone number".into()
            } else {
                "shared a contact".into()
            },
        })
    } else if let Some(v) = &m.venue {
        Content::Location(Location {
            latitude: v.location.latitude,
            longitude: v.location.longitude,
            name: Some(v.title.clone()),
            address: Some(v.address.clone()),
        })
    } else if let Some(l) = &m.location {
        Content::Location(Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: None,
            address: None,
        })
    } else if let Some(p) = m.photo.as_ref().and_then(|p| p.last()) {
        media(MediaKind::Image, p.file_id.clone(), None, None, &m.caption)
    } else if let Some((kind, f)) = [
        (MediaKind::Document, &m.document),
        (MediaKind::Audio, &m.audio),
        (MediaKind::Audio, &m.voice),
        (MediaKind::Video, &m.video),
        (MediaKind::Sticker, &m.sticker),
    ]
    .into_iter()
    .find_map(|(k, f)| f.as_ref().map(|f| (k, f)))
    {
        media(
            kind,
            f.file_id.clone(),
            f.mime_type.clone(),
            f.file_name.clone(),
            &m.caption,
        )
    } else {
        Content::Unsupported("message".into())
    };
    InboundEvent::Message(InboundMessage {
        provider_message_id: id,
        sender: identity,
        display_name,
        claims,
        contents: vec![content],
        referral: None,
        link_token,
        timestamp: if edited {
            m.edit_date.unwrap_or(m.date)
        } else {
            m.date
        },
        edited,
        reply_handle: None,
    })
}

fn media(
    kind: MediaKind,
    reference: String,
    mime_type: Option<String>,
    filename: Option<String>,
    caption: &Option<String>,
) -> Content {
    Content::Media(Media {
        kind,
        reference,
        mime_type,
        caption: caption.clone(),
        filename,
    })
}

fn callback(id: String, scope: &str, q: CallbackQuery, received: u64) -> InboundEvent {
    if q.from.is_bot {
        return InboundEvent::ignored("callbacks from bots are not forwarded");
    }
    let (identity, display_name, claims) = sender(scope, &q.from);
    let data = q.data.unwrap_or_default();
    // The title is the pressed button's text, from the message's keyboard.
    let title = q
        .message
        .as_ref()
        .and_then(|m| m.reply_markup.as_ref())
        .and_then(|k| {
            k.inline_keyboard
                .iter()
                .flatten()
                .find(|b| b.callback_data.as_deref() == Some(data.as_str()))
        })
        .map(|b| b.text.clone())
        .unwrap_or_else(|| data.clone());
    InboundEvent::Message(InboundMessage {
        provider_message_id: id,
        sender: identity,
        display_name,
        claims,
        contents: vec![Content::Postback(Postback {
            payload: data,
            title,
        })],
        referral: None,
        link_token: None,
        timestamp: q.message.and_then(|m| m.date).unwrap_or(received),
        edited: false,
        reply_handle: None,
    })
}

/// The payload of `/start <payload>` (also `/start@bot <payload>`), which a
/// `t.me/<bot>?start=<payload>` deep link sends. Telegram allows
/// `A-Z a-z 0-9 _ -`, up to 64 characters.
fn start_payload(text: &str) -> Option<String> {
    let rest = text.strip_prefix("/start")?;
    let rest = match rest.strip_prefix('@') {
        Some(r) => r.split_once(' ').map(|(_, p)| p).unwrap_or(""),
        None => rest.strip_prefix(' ')?,
    };
    let payload = rest.trim();
    let valid = !payload.is_empty()
        && payload.len() <= 64
        && payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then(|| payload.to_string())
}

chatcrafter_plugin_sdk::export_plugin!(Telegram);

#[cfg(test)]
mod tests;
