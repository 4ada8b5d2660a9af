//! The normalized events a plugin produces from a webhook request, and the
//! outbound requests it renders.

use serde::{Deserialize, Serialize};

/// A person on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelIdentity {
    /// Channel name (the plugin id).
    pub channel: String,
    /// Business-side account: WhatsApp phone_number_id, Telegram bot id, …
    pub scope: String,
    /// The person's id on the channel.
    pub id: String,
}

/// What kind of identifier a claim states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// Email address.
    Email,
    /// Phone number, as reported.
    Phone,
    /// Display name.
    Name,
    /// Channel handle.
    Username,
    /// The business's own user id.
    UserId,
    /// Anything else.
    Other(String),
}

/// Something a channel reports about a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// What it is.
    pub kind: ClaimKind,
    /// The value.
    pub value: String,
    /// Whether the channel vouches for it.
    pub verified: bool,
}

/// Kind of media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Picture.
    Image,
    /// Video.
    Video,
    /// Audio or voice note.
    Audio,
    /// File.
    Document,
    /// Sticker.
    Sticker,
}

/// The content of an inbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A media reference.
    Media {
        /// Kind.
        kind: MediaKind,
        /// Channel id or URL of the media.
        reference: String,
        /// MIME type.
        mime_type: Option<String>,
        /// Caption.
        caption: Option<String>,
        /// File name.
        filename: Option<String>,
    },
    /// A location.
    Location {
        /// Degrees.
        latitude: f64,
        /// Degrees.
        longitude: f64,
        /// Place name.
        name: Option<String>,
        /// Address.
        address: Option<String>,
    },
    /// Structured input: button, list reply, command.
    Postback {
        /// Machine-readable payload.
        payload: String,
        /// Human-readable text.
        title: String,
    },
    /// A reaction to an earlier message.
    Reaction {
        /// Provider id of the message reacted to.
        message_id: String,
        /// Emoji, empty when removed.
        emoji: String,
    },
    /// A message type the plugin does not normalize.
    Unsupported {
        /// The channel's name for the type.
        kind: String,
    },
}

/// Where a conversation came from (a click-to-WhatsApp ad, an `m.me`
/// link's `ref`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// `ad`, `post`, `link`, …, as the channel names it.
    pub source_type: String,
    /// The source's id (ad id, post id).
    #[serde(default)]
    pub source_id: Option<String>,
    /// The ad click id (`ctwa_clid`).
    #[serde(default)]
    pub click_id: Option<String>,
    /// A link's `ref` parameter.
    #[serde(default, rename = "ref")]
    pub link_ref: Option<String>,
    /// The source URL.
    #[serde(default)]
    pub url: Option<String>,
}

impl InboundMessage {
    /// The message's text, its parts joined by a newline: text contents,
    /// media captions, a postback's title, a location's name.
    pub fn text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .contents
            .iter()
            .filter_map(|c| match c {
                Content::Text { text } => Some(text.as_str()),
                Content::Media { caption, .. } => caption.as_deref(),
                Content::Postback { title, .. } => Some(title.as_str()),
                Content::Location { name, address, .. } => name.as_deref().or(address.as_deref()),
                Content::Reaction { emoji, .. } => Some(emoji.as_str()),
                Content::Unsupported { .. } => None,
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n"))
    }

    /// The message's kind: `text` when it is all text, else the kind of
    /// its first other content (`media`, `location`, `postback`, …).
    pub fn kind(&self) -> &'static str {
        self.contents
            .iter()
            .map(Content::kind)
            .find(|k| *k != "text")
            .unwrap_or("text")
    }
}

impl Content {
    /// Its name on the timeline.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Media { .. } => "media",
            Content::Location { .. } => "location",
            Content::Postback { .. } => "postback",
            Content::Reaction { .. } => "reaction",
            Content::Unsupported { .. } => "unsupported",
        }
    }
}

/// A message a person sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The channel's id for the message, for dedup.
    pub provider_message_id: String,
    /// Who sent it.
    pub sender: ChannelIdentity,
    /// Display name, if given.
    pub display_name: Option<String>,
    /// What the channel reports about the sender.
    pub claims: Vec<Claim>,
    /// What was sent, in order: text and its attachments are one message.
    pub contents: Vec<Content>,
    /// Where the conversation came from, when the channel says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<Referral>,
    /// A link token carried by the message.
    pub link_token: Option<String>,
    /// Unix seconds.
    pub timestamp: u64,
    /// Whether it edits an earlier message.
    pub edited: bool,
    /// Opaque handle passed back when replying.
    pub reply_handle: Option<String>,
}

/// Where an outbound message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Accepted by the channel.
    Sent,
    /// On the device.
    Delivered,
    /// Read.
    Read,
    /// Failed.
    Failed,
}

/// A status update for an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// Provider id of the outbound message.
    pub provider_message_id: String,
    /// Recipient, if given.
    pub recipient: Option<ChannelIdentity>,
    /// New state.
    pub state: DeliveryState,
    /// Unix seconds.
    pub timestamp: u64,
    /// Channel error text when failed.
    pub error: Option<String>,
}

/// One normalized event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[allow(
    clippy::large_enum_variant,
    reason = "messages are nearly every event; boxing them would add an allocation to each"
)]
pub enum InboundEvent {
    /// A person sent a message.
    Message(InboundMessage),
    /// An outbound message changed state.
    Status(DeliveryStatus),
    /// Skipped on purpose.
    Ignored {
        /// Why.
        reason: String,
    },
}

/// An HTTP header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Lower-case name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// The immediate answer a channel expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<Header>,
    /// Body, as text when it is UTF-8 (the JSON output shows it so).
    #[serde(with = "body_text")]
    pub body: Vec<u8>,
}

/// A plugin diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// `info` or `warning`.
    pub level: String,
    /// The note.
    pub message: String,
}

/// What a plugin made of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// Events in payload order.
    pub events: Vec<InboundEvent>,
    /// The answer the channel expects, sent once events are stored.
    pub response: HttpResponse,
    /// Notes for the operator.
    pub diagnostics: Vec<Diagnostic>,
}

/// Where the host puts a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialHeader {
    /// Header name.
    pub name: String,
    /// Text before the secret.
    pub prefix: String,
    /// Secret name.
    pub secret: String,
}

/// A channel API call, without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCall {
    /// Method, upper case.
    pub method: String,
    /// Path relative to `api_base`, with `{secret:NAME}` placeholders.
    pub path: String,
    /// Headers.
    pub headers: Vec<Header>,
    /// Body.
    #[serde(with = "body_text")]
    pub body: Vec<u8>,
    /// Credential the host adds.
    pub credential: Option<CredentialHeader>,
    /// JSON pointer to the sent message's id in a successful answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_id: Option<String>,
}

/// How an outbound message is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum OutboundRequest {
    /// An HTTP call to the channel API.
    Http(HttpCall),
    /// A frame pushed to the recipient's open sessions.
    Push {
        /// The frame.
        #[serde(with = "body_text")]
        frame: Vec<u8>,
    },
}

/// Where outbound media comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// A public `https://` URL.
    Url(String),
    /// An id the channel already holds.
    MediaId(String),
}

/// One reply option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// Returned as a postback payload when picked.
    pub id: String,
    /// What the person sees.
    pub title: String,
}

/// What the gateway wants to say (0.2's `outbound-content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum OutboundContent {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A media attachment.
    Media {
        /// Kind (not `sticker`).
        kind: MediaKind,
        /// Where it comes from.
        source: MediaSource,
        /// Caption.
        #[serde(default)]
        caption: Option<String>,
        /// File name of a document.
        #[serde(default)]
        filename: Option<String>,
    },
    /// A prompt with reply options.
    Choices {
        /// The question.
        prompt: String,
        /// The options.
        options: Vec<Choice>,
    },
    /// A pre-approved template.
    Template {
        /// Its name.
        name: String,
        /// Its language code.
        language: String,
        /// Values for its placeholders, in order.
        #[serde(default)]
        parameters: Vec<String>,
    },
}

impl From<&str> for OutboundContent {
    fn from(t: &str) -> Self {
        OutboundContent::text(t)
    }
}

impl OutboundContent {
    /// Plain text.
    pub fn text(t: impl Into<String>) -> Self {
        OutboundContent::Text { text: t.into() }
    }

    /// What a person reads of it, for the timeline and for channels that
    /// take text only: choices become a numbered list, media its caption
    /// and link, a template its name.
    pub fn as_text(&self) -> String {
        match self {
            OutboundContent::Text { text } => text.clone(),
            OutboundContent::Choices { prompt, options } => {
                let mut t = prompt.clone();
                for (i, o) in options.iter().enumerate() {
                    t.push_str(&format!("\n{}. {}", i + 1, o.title));
                }
                t
            }
            OutboundContent::Media {
                source, caption, ..
            } => {
                let link = match source {
                    MediaSource::Url(u) => u.clone(),
                    MediaSource::MediaId(_) => String::new(),
                };
                match caption.as_deref().filter(|c| !c.is_empty()) {
                    Some(c) if !link.is_empty() => format!("{c}\n{link}"),
                    Some(c) => c.to_string(),
                    None => link,
                }
            }
            OutboundContent::Template { name, .. } => format!("[template {name}]"),
        }
    }

    /// Checks what every channel needs, whatever it can take: non-empty
    /// text, 1 to 100 choices with unique non-empty ids (at most 200
    /// bytes) and titles, media from an `https://` URL or a channel id,
    /// a template with a name and a language.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            OutboundContent::Text { text } if text.trim().is_empty() => {
                Err("the text is empty".into())
            }
            OutboundContent::Text { .. } => Ok(()),
            OutboundContent::Choices { prompt, options } => {
                if prompt.trim().is_empty() {
                    return Err("choices need a prompt".into());
                }
                if options.is_empty() || options.len() > 100 {
                    return Err(format!(
                        "choices need 1 to 100 options; got {}",
                        options.len()
                    ));
                }
                for (i, o) in options.iter().enumerate() {
                    if o.id.is_empty() || o.id.len() > 200 || o.title.trim().is_empty() {
                        return Err(format!(
                            "option {i} needs an id of 1 to 200 bytes and a title"
                        ));
                    }
                    if options[..i].iter().any(|p| p.id == o.id) {
                        return Err(format!("option id `{}` is used twice", o.id));
                    }
                }
                Ok(())
            }
            OutboundContent::Media { source, kind, .. } => {
                if *kind == MediaKind::Sticker {
                    return Err("stickers are not sent".into());
                }
                match source {
                    MediaSource::Url(u) if !u.starts_with("https://") => {
                        Err(format!("media url `{u}` must be https://"))
                    }
                    MediaSource::MediaId(id) if id.is_empty() => Err("media id is empty".into()),
                    _ => Ok(()),
                }
            }
            OutboundContent::Template { name, language, .. } => {
                if name.trim().is_empty() || language.trim().is_empty() {
                    Err("a template needs a name and a language".into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Its kind: `text`, `media`, `choices` or `template`.
    pub fn kind(&self) -> &'static str {
        match self {
            OutboundContent::Text { .. } => "text",
            OutboundContent::Media { .. } => "media",
            OutboundContent::Choices { .. } => "choices",
            OutboundContent::Template { .. } => "template",
        }
    }
}

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// The automated agent answering.
    AgentReply,
    /// A person replying from the inbox.
    PersonReply,
    /// Unasked (a reminder).
    Proactive,
}

impl Purpose {
    /// The purpose of a message by its author (`agent`, `human`,
    /// `reminder`).
    pub fn of_author(author: &str) -> Purpose {
        match author {
            "human" => Purpose::PersonReply,
            "reminder" => Purpose::Proactive,
            _ => Purpose::AgentReply,
        }
    }

    /// Its name in configuration (`[channels.X.templates]`) and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::AgentReply => "agent-reply",
            Purpose::PersonReply => "person-reply",
            Purpose::Proactive => "proactive",
        }
    }
}

/// What the host knows about an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundContext {
    /// The configured channel name it goes out on.
    #[serde(default)]
    pub channel: String,
    /// Why it is sent.
    #[serde(default = "agent_reply")]
    pub purpose: Purpose,
    /// The customer's last message on the channel, Unix seconds.
    #[serde(default)]
    pub last_inbound_at: Option<u64>,
    /// The host's clock, Unix seconds.
    #[serde(default)]
    pub now: u64,
    /// The channel's configured settings: name → value.
    #[serde(default)]
    pub settings: Vec<(String, String)>,
}

fn agent_reply() -> Purpose {
    Purpose::AgentReply
}

impl Default for OutboundContext {
    fn default() -> Self {
        OutboundContext {
            channel: String::new(),
            purpose: Purpose::AgentReply,
            last_inbound_at: None,
            now: 0,
            settings: vec![],
        }
    }
}

/// A reply to deliver. This is also the `--outbound` file format of
/// `gateway plugin run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundMessage {
    /// Gateway id, stable across retries.
    pub message_id: String,
    /// Recipient.
    pub recipient: ChannelIdentity,
    /// What to say.
    pub content: OutboundContent,
    /// Reply handle of the message answered.
    #[serde(default)]
    pub reply_handle: Option<String>,
    /// What the host knows.
    #[serde(default)]
    pub context: OutboundContext,
}

/// Bodies serialize as a UTF-8 string when they are one, else as an array
/// of bytes; both forms deserialize.
mod body_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(body),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Body {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Body::deserialize(d)? {
            Body::Text(t) => t.into_bytes(),
            Body::Bytes(b) => b,
        })
    }
}

/// Why a plugin refused its input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum ChannelError {
    /// Not what the channel sends → 400 `malformed_payload`.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// Well formed, but not handled by this plugin.
    #[error("unsupported request: {0}")]
    Unsupported(String),
    /// An outbound message the channel cannot take.
    #[error("invalid outbound message: {0}")]
    InvalidOutbound(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A user the host authenticated (the widget's verified JWT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticatedUser {
    /// Token issuer.
    pub issuer: String,
    /// Token subject.
    pub subject: String,
    /// Verified claims from the token.
    #[serde(default)]
    pub claims: Vec<Claim>,
}

/// What the host adds to a request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestContext {
    /// Receive time, Unix milliseconds.
    pub received_at_ms: u64,
    /// Unique request id.
    pub request_id: String,
    /// Authenticated user, if any.
    pub user: Option<AuthenticatedUser>,
    /// The channel's configured settings: name → value.
    pub settings: Vec<(String, String)>,
}

/// A verified inbound request, as handed to `parse-inbound`. This is also
/// the `--request` file format of `gateway plugin run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundRequest {
    /// Method, upper case.
    #[serde(default = "post")]
    pub method: String,
    /// Path.
    #[serde(default)]
    pub path: String,
    /// Raw query without `?`.
    #[serde(default)]
    pub query: String,
    /// Headers, lower-case names, in order.
    #[serde(default, with = "header_list")]
    pub headers: Vec<Header>,
    /// Raw body.
    #[serde(default, with = "body_text")]
    pub body: Vec<u8>,
    /// Host context.
    #[serde(default)]
    pub context: RequestContext,
}

/// Headers a plugin never sees: they carry credentials.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

impl InboundRequest {
    /// The request as a plugin sees it, from its parts `(method, path,
    /// query)`: every header but those carrying credentials
    /// ([`CREDENTIAL_HEADERS`], and the channel's own secret header, if its
    /// verification uses one). The one place every host builds a plugin's
    /// request, for webhooks and the widget alike.
    pub fn for_plugin(
        (method, path, query): (&str, &str, &str),
        headers: Vec<Header>,
        secret_header: Option<&str>,
        body: &[u8],
        context: RequestContext,
    ) -> InboundRequest {
        InboundRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: headers
                .into_iter()
                .filter(|h| {
                    !CREDENTIAL_HEADERS.contains(&h.name.as_str())
                        && Some(h.name.as_str()) != secret_header
                })
                .collect(),
            body: body.to_vec(),
            context,
        }
    }
}

fn post() -> String {
    "POST".into()
}

/// Headers as a list of `{name, value}` or as an object `{name: value}`.
mod header_list {
    use super::Header;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub(super) fn serialize<S: Serializer>(h: &[Header], s: S) -> Result<S::Ok, S::Error> {
        h.serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Headers {
        List(Vec<Header>),
        Map(BTreeMap<String, String>),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Header>, D::Error> {
        let list = match Headers::deserialize(d)? {
            Headers::List(l) => l,
            Headers::Map(m) => m
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
        };
        Ok(list
            .into_iter()
            .map(|h| Header {
                name: h.name.to_ascii_lowercase(),
                value: h.value,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_request_reads_headers_as_a_map_and_the_body_as_text() {
        let req: InboundRequest = serde_json::from_str(
            r#"{"headers":{"X-Hub-Signature-256":"sha256=00"},"body":"{\"a\":1}"}"#,
        )
        .unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.headers[0].name, "x-hub-signature-256");
        assert_eq!(req.body, br#"{"a":1}"#);
    }

    #[test]
    fn a_recorded_request_with_an_unknown_key_names_it() {
        let err = serde_json::from_str::<InboundRequest>(r#"{"bdy":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `bdy`"), "{err}");
        // Inside the context too: a misspelt `settings` is not silently
        // dropped.
        let err =
            serde_json::from_str::<InboundRequest>(r#"{"context":{"setting":[]}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `setting`"), "{err}");
    }

    #[test]
    fn a_binary_body_round_trips_as_bytes() {
        let call = HttpCall {
            method: "POST".into(),
            path: "/x".into(),
            headers: vec![],
            body: vec![0xff, 0x00],
            credential: None,
            sent_id: None,
        };
        let json = serde_json::to_string(&call).unwrap();
        assert!(json.contains("[255,0]"), "{json}");
        assert_eq!(serde_json::from_str::<HttpCall>(&json).unwrap(), call);
    }
}
