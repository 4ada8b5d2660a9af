//! The Discord interactions channel plugin.
//!
//! Inbound: HTTP interactions. PING (type 1) is answered `{"type":1}` with
//! no event. Application commands (type 2) — from a guild (`member.user`) or
//! from a DM with the bot (`user`) — become messages whose text is the
//! command with its options flattened (`/ask question:Where is my chair?`),
//! answered at once with a deferred response (type 5); the real reply goes
//! out later through the follow-up webhook. Buttons and modals (types 3 and
//! 5) become postbacks, acknowledged with type 6. The sender is `(discord,
//! application_id, user id)`.
//!
//! Free-form DMs never reach an HTTP endpoint: Discord delivers them only
//! over its Gateway websocket, which this plugin does not speak.
//!
//! Verification (declared, applied by the host): Ed25519 over
//! `X-Signature-Timestamp` ‖ raw body, `X-Signature-Ed25519` hex, with a
//! 300-second window. Discord probes endpoints with bad signatures and
//! expects 401, which the host answers before this plugin runs.
//!
//! Outbound: `POST {api_base}/webhooks/{application_id}/{token}` — the
//! follow-up webhook, which needs no bot token and is valid for 15 minutes
//! after the interaction. Choices become buttons (action rows of up to 5,
//! each button's `custom_id` the choice id; a press comes back as a
//! postback titled with the button's label); an image by URL an embed, other
//! media a link.

use chatcrafter_plugin_sdk::prelude::*;
use chatcrafter_plugin_sdk::serde_json::{Value, json};
use serde::Deserialize;

const CHANNEL: &str = "discord";
/// Discord's limit for message content, in characters.
const MAX_TEXT: usize = 2000;
/// Buttons per action row, and rows per message.
const PER_ROW: usize = 5;
const MAX_ROWS: usize = 5;
/// A button label's limit, and a `custom_id`'s.
const MAX_LABEL: u32 = 80;
const MAX_CUSTOM_ID: usize = 100;

struct Discord;

#[derive(Deserialize)]
struct Interaction {
    id: String,
    application_id: String,
    #[serde(rename = "type")]
    kind: u8,
    token: Option<String>,
    data: Option<Data>,
    member: Option<Member>,
    user: Option<User>,
    /// The message a component was on (type 3).
    message: Option<Value>,
}

#[derive(Deserialize)]
struct Member {
    user: User,
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: String,
    global_name: Option<String>,
    #[serde(default)]
    bot: bool,
}

#[derive(Deserialize)]
struct Data {
    name: Option<String>,
    custom_id: Option<String>,
    #[serde(default)]
    options: Vec<CommandOption>,
    #[serde(default)]
    components: Vec<Value>,
}

#[derive(Deserialize)]
struct CommandOption {
    name: String,
    value: Option<Value>,
    #[serde(default)]
    options: Vec<CommandOption>,
}

impl Guest for Discord {
    fn describe() -> Manifest {
        Manifest {
            id: CHANNEL.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "Discord interactions".into(),
            verification: Verification::Ed25519(Ed25519Scheme {
                signature_header: "x-signature-ed25519".into(),
                timestamp_header: "x-signature-timestamp".into(),
                encoding: Encoding::Hex,
                max_age_seconds: 300,
                public_key: "public_key".into(),
            }),
            handshake: Handshake::None,
            secrets: vec![
                SettingSpec::new(
                    "public_key",
                    "the application's public key, hex (Developer Portal → General Information)",
                    true,
                ),
                SettingSpec::new(
                    "bot_token",
                    "the bot token; not needed for follow-up replies",
                    false,
                ),
            ],
            settings: vec![],
            capabilities: Capabilities::RECEIVE_MESSAGES
                | Capabilities::SEND_TEXT
                | Capabilities::SEND_MEDIA
                | Capabilities::SEND_CHOICES
                | Capabilities::DEFERRED_REPLIES,
            reply_window_seconds: None,
            person_reply_window_seconds: None,
            deep_links: vec![],
            outbound_limits: OutboundLimits {
                max_text_chars: MAX_TEXT as u32,
                max_choices: (PER_ROW * MAX_ROWS) as u32,
                max_choice_title_chars: MAX_LABEL,
                max_caption_chars: MAX_TEXT as u32,
            },
        }
    }

    fn parse_inbound(req: InboundRequest) -> Result<Inbound, ChannelError> {
        if req.request.method != Method::Post {
            return Err(ChannelError::Unsupported(
                "Discord interactions are POST requests".into(),
            ));
        }
        let i: Interaction = json_body(&req.request)?;
        let received = req.context.received_at_ms / 1000;
        let (answer, content) = match i.kind {
            1 => {
                return Ok(
                    Inbound::ok(vec![]).with_response(json_response(200, &json!({"type": 1})))
                );
            }
            2 => {
                let data = i.data.as_ref().ok_or_else(|| {
                    ChannelError::Malformed("body: a command has no `data`".into())
                })?;
                let name = data.name.clone().unwrap_or_default();
                (5, Content::Text(flatten_command(&name, &data.options)))
            }
            3 | 5 => {
                let data = i.data.as_ref();
                let custom_id = data.and_then(|d| d.custom_id.clone()).unwrap_or_default();
                let fields = data
                    .map(|d| modal_values(&d.components))
                    .unwrap_or_default();
                let title = if !fields.is_empty() {
                    fields.join("\n")
                } else {
                    i.message
                        .as_ref()
                        .and_then(|m| button_label(m, &custom_id))
                        .unwrap_or_else(|| custom_id.clone())
                };
                (
                    6,
                    Content::Postback(Postback {
                        payload: custom_id,
                        title,
                    }),
                )
            }
            4 => {
                let none = json_response(200, &json!({"type": 8, "data": {"choices": []}}));
                return Ok(
                    Inbound::ok(vec![InboundEvent::ignored("autocomplete is not handled")])
                        .with_response(none),
                );
            }
            other => {
                return Ok(Inbound::ok(vec![InboundEvent::ignored(format!(
                    "interaction type {other} is not handled"
                ))]));
            }
        };
        let user =
            i.member.map(|m| m.user).or(i.user).ok_or_else(|| {
                ChannelError::Malformed("body: the interaction has no user".into())
            })?;
        if user.bot {
            return Ok(Inbound::ok(vec![InboundEvent::ignored(
                "interactions from bots are not forwarded",
            )]));
        }
        let display_name = user
            .global_name
            .clone()
            .unwrap_or_else(|| user.username.clone());
        let token = i.token.ok_or_else(|| {
            ChannelError::Malformed("body: the interaction has no `token`".into())
        })?;
        let event = InboundEvent::Message(InboundMessage {
            provider_message_id: i.id,
            sender: ChannelIdentity::new(i.application_id, user.id),
            display_name: Some(display_name.clone()),
            claims: vec![
                Claim::unverified(ClaimKind::Name, display_name),
                Claim::unverified(ClaimKind::Username, user.username),
            ],
            contents: vec![content],
            referral: None,
            link_token: None,
            timestamp: received,
            edited: false,
            reply_handle: Some(token),
        });
        Ok(Inbound::ok(vec![event]).with_response(json_response(200, &json!({"type": answer}))))
    }

    fn render_outbound(msg: OutboundMessage) -> Result<OutboundRequest, ChannelError> {
        let body = message_body(&msg.content)?;
        let token = msg.reply_handle.as_deref().ok_or_else(|| {
            ChannelError::InvalidOutbound(
                "Discord replies answer an interaction; without one (proactive messages) \
                 a bot must use the Gateway websocket"
                    .into(),
            )
        })?;
        let app = path_segment("the application id", &msg.recipient.scope)?;
        let token = path_segment("the interaction token", token)?;
        Ok(json_call(
            Method::Post,
            format!("/webhooks/{app}/{token}"),
            &body,
            None,
            Some("/id"),
        ))
    }
}

/// The follow-up message for one content.
fn message_body(content: &OutboundContent) -> Result<Value, ChannelError> {
    let mut body = json!({"allowed_mentions": {"parse": []}});
    match content {
        OutboundContent::Text(text) => {
            body["content"] = json!(text_limit(text, MAX_TEXT, "Discord")?);
        }
        OutboundContent::Choices(c) => {
            body["content"] = json!(text_limit(&c.prompt, MAX_TEXT, "Discord")?);
            if c.options.is_empty() || c.options.len() > PER_ROW * MAX_ROWS {
                return Err(ChannelError::InvalidOutbound(format!(
                    "{} options; Discord takes 1 to {}",
                    c.options.len(),
                    PER_ROW * MAX_ROWS
                )));
            }
            let mut rows = Vec::new();
            for chunk in c.options.chunks(PER_ROW) {
                let mut buttons = Vec::new();
                for o in chunk {
                    if o.id.is_empty() || o.id.len() > MAX_CUSTOM_ID {
                        return Err(ChannelError::InvalidOutbound(format!(
                            "choice id is {} bytes; Discord's custom_id takes 1 to {MAX_CUSTOM_ID}",
                            o.id.len()
                        )));
                    }
                    buttons
                        .push(json!({"type": 2, "style": 1, "label": o.title, "custom_id": o.id}));
                }
                rows.push(json!({"type": 1, "components": buttons}));
            }
            body["components"] = json!(rows);
        }
        OutboundContent::Media(m) => {
            let MediaSource::Url(url) = &m.source else {
                return Err(ChannelError::InvalidOutbound(
                    "Discord follow-ups take media by URL only".into(),
                ));
            };
            let caption = m.caption.clone().unwrap_or_default();
            if m.kind == MediaKind::Image {
                body["content"] = json!(caption);
                body["embeds"] = json!([{"image": {"url": url}}]);
            } else {
                let text = if caption.is_empty() {
                    url.clone()
                } else {
                    format!("{caption}\n{url}")
                };
                body["content"] = json!(text_limit(&text, MAX_TEXT, "Discord")?);
            }
        }
        OutboundContent::Template(_) => {
            return Err(ChannelError::InvalidOutbound(
                "Discord has no message templates".into(),
            ));
        }
    }
    Ok(body)
}

/// The label of the button `custom_id` on a message's components.
fn button_label(message: &Value, custom_id: &str) -> Option<String> {
    let rows = message.get("components")?.as_array()?;
    rows.iter()
        .filter_map(|r| r.get("components").and_then(Value::as_array))
        .flatten()
        .find(|b| b.get("custom_id").and_then(Value::as_str) == Some(custom_id))
        .and_then(|b| b.get("label").and_then(Value::as_str))
        .map(String::from)
}

/// `/name opt:value sub opt:value …`, in the order Discord sent them.
fn flatten_command(name: &str, options: &[CommandOption]) -> String {
    let mut out = format!("/{name}");
    fn walk(out: &mut String, options: &[CommandOption]) {
        for o in options {
            match &o.value {
                Some(v) => {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&format!(" {}:{v}", o.name));
                }
                None => {
                    out.push(' ');
                    out.push_str(&o.name);
                    walk(out, &o.options);
                }
            }
        }
    }
    walk(&mut out, options);
    out
}

/// The values typed into a modal's text inputs.
fn modal_values(components: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for row in components {
        let inner = row.get("components").and_then(Value::as_array);
        for c in inner.into_iter().flatten().chain(std::iter::once(row)) {
            if let Some(v) = c.get("value").and_then(Value::as_str) {
                out.push(v.to_string());
            }
        }
    }
    out
}

chatcrafter_plugin_sdk::export_plugin!(Discord);

#[cfg(test)]
mod tests;
