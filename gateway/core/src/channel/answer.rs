//! Checking what a plugin returns before anything is stored: a guest is
//! never trusted. A plugin may only speak for its own channel, return a
//! bounded number of events, and fill each field within a bounded length;
//! an answer that breaks any rule fails the whole request as the plugin's
//! fault, so nothing of it is stored.
//!
//! Once checked, the answer is *placed*: every identity it names is moved
//! from the plugin's id to the name the operator configured the channel
//! under (`[channels.wa] plugin = "builtin:whatsapp"` records `wa:`
//! identities), and, where the operator does not trust the plugin's
//! verified claims, those claims are demoted to unverified ones — which
//! never link on their own and become suggestions in the review queue.

use super::{ChannelIdentity, Claim, Content, Inbound, InboundEvent};

/// Longest channel id, scope, provider message id or link token, bytes.
/// Real ids are far shorter (a WhatsApp `wamid` is about 60 bytes).
pub const MAX_ID_BYTES: usize = 512;
/// Longest display name or claim value, bytes (an email may be 254).
pub const MAX_NAME_BYTES: usize = 320;
/// Most claims about one sender.
pub const MAX_CLAIMS: usize = 16;
/// Longest reply handle, bytes: Discord's interaction tokens are about
/// 200 bytes; an opaque handle a plugin builds may hold a few of those.
pub const MAX_REPLY_HANDLE_BYTES: usize = 4096;
/// Longest text, caption or payload, bytes: 16 times the longest message
/// the bundled channels accept (WhatsApp's and Telegram's 4096 characters,
/// up to 4 bytes each).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest immediate answer body the plugin asks the host to send, bytes.
pub const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024;
/// Most response headers and diagnostics.
pub const MAX_LIST: usize = 64;

/// Why a plugin's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAnswer {
    /// A message with no content, or too many.
    #[error("event {index} has {count} contents; a message has 1 to {MAX_CONTENTS}")]
    Contents {
        /// The event's index.
        index: usize,
        /// How many it has.
        count: usize,
    },
    /// An event speaks for a channel other than the plugin's own.
    #[error("event {index} names channel `{found}`; this plugin may only speak for `{own}`")]
    ForeignChannel {
        /// The event's index.
        index: usize,
        /// The channel named.
        found: String,
        /// The plugin's id.
        own: String,
    },
    /// More events than `[server] max_events_per_request`.
    #[error(
        "{count} events; at most {max} are accepted per request (server.max_events_per_request)"
    )]
    TooManyEvents {
        /// How many were returned.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A field is longer than its limit.
    #[error("event {index}: {field} is {len} bytes; the limit is {max}")]
    TooLong {
        /// The event's index (or the response, as `usize::MAX`).
        index: usize,
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field that must not be empty is.
    #[error("event {index}: {field} is empty")]
    Empty {
        /// The event's index.
        index: usize,
        /// Which field.
        field: &'static str,
    },
    /// A response field is out of range.
    #[error("response: {0}")]
    Response(String),
    /// A time that is not a plausible Unix time in seconds.
    #[error(
        "event {index}: timestamp {value} is not a Unix time in seconds from 2000 to a day from now{hint}"
    )]
    Timestamp {
        /// The event's index.
        index: usize,
        /// The time given.
        value: u64,
        /// What it looks like instead, if anything (` (milliseconds?)`).
        hint: &'static str,
    },
}

/// Most contents in one inbound message (text and its attachments).
pub const MAX_CONTENTS: usize = 16;

/// 2000-01-01T00:00:00Z: no channel's message is older.
pub const EARLIEST_TIMESTAMP: u64 = 946_684_800;
/// How far ahead of the host's clock a channel's time may be (its clock
/// may run ahead of ours, by far less than this).
pub const MAX_TIMESTAMP_AHEAD_SECONDS: u64 = 86_400;

/// How a channel's plugin answers are checked and placed.
#[derive(Debug, Clone)]
pub struct AnswerRules<'a> {
    /// The plugin's manifest id: the only channel it may name.
    pub plugin_id: &'a str,
    /// The configured channel name its identities are recorded under.
    pub channel: &'a str,
    /// `[server] max_events_per_request`.
    pub max_events: usize,
    /// Whether its verified claims may link on their own.
    pub trust_verified_claims: bool,
    /// Now, Unix seconds by the host's (injected) clock: event times must
    /// lie between [`EARLIEST_TIMESTAMP`] and a day after it.
    pub now: u64,
}

impl AnswerRules<'_> {
    /// Checks `inbound` and places it under the configured channel (see
    /// the module doc). On error nothing of the answer may be used.
    pub fn apply(&self, mut inbound: Inbound) -> Result<Inbound, InvalidAnswer> {
        self.check(&inbound)?;
        // The common case: configured under the plugin's own id, and trusted.
        if self.channel == self.plugin_id && self.trust_verified_claims {
            return Ok(inbound);
        }
        for event in &mut inbound.events {
            match event {
                InboundEvent::Message(m) => {
                    m.sender.channel = self.channel.to_string();
                    if !self.trust_verified_claims {
                        for c in &mut m.claims {
                            c.verified = false;
                        }
                    }
                }
                InboundEvent::Status(s) => {
                    if let Some(r) = &mut s.recipient {
                        r.channel = self.channel.to_string();
                    }
                }
                InboundEvent::Ignored { .. } => {}
            }
        }
        Ok(inbound)
    }

    /// The checks alone.
    pub fn check(&self, inbound: &Inbound) -> Result<(), InvalidAnswer> {
        if inbound.events.len() > self.max_events {
            return Err(InvalidAnswer::TooManyEvents {
                count: inbound.events.len(),
                max: self.max_events,
            });
        }
        for (index, event) in inbound.events.iter().enumerate() {
            let field = Field { index };
            match event {
                InboundEvent::Message(m) => {
                    self.identity(index, &m.sender)?;
                    field.id("provider_message_id", &m.provider_message_id)?;
                    field.max("display_name", m.display_name.as_deref(), MAX_NAME_BYTES)?;
                    claims(index, &m.claims)?;
                    field.max("link_token", m.link_token.as_deref(), MAX_ID_BYTES)?;
                    field.max(
                        "reply_handle",
                        m.reply_handle.as_deref(),
                        MAX_REPLY_HANDLE_BYTES,
                    )?;
                    if m.contents.is_empty() || m.contents.len() > MAX_CONTENTS {
                        return Err(InvalidAnswer::Contents {
                            index,
                            count: m.contents.len(),
                        });
                    }
                    for c in &m.contents {
                        content(index, c)?;
                    }
                    if let Some(r) = &m.referral {
                        field.max("referral.source_type", Some(&r.source_type), MAX_ID_BYTES)?;
                        field.max("referral.source_id", r.source_id.as_deref(), MAX_ID_BYTES)?;
                        field.max("referral.click_id", r.click_id.as_deref(), MAX_NAME_BYTES)?;
                        field.max("referral.ref", r.link_ref.as_deref(), MAX_NAME_BYTES)?;
                        field.max("referral.url", r.url.as_deref(), MAX_TEXT_BYTES)?;
                    }
                    self.timestamp(index, m.timestamp)?;
                }
                InboundEvent::Status(s) => {
                    field.id("provider_message_id", &s.provider_message_id)?;
                    if let Some(r) = &s.recipient {
                        self.identity(index, r)?;
                    }
                    field.max("error", s.error.as_deref(), MAX_TEXT_BYTES)?;
                    self.timestamp(index, s.timestamp)?;
                }
                InboundEvent::Ignored { reason } => {
                    field.max("reason", Some(reason), MAX_NAME_BYTES)?;
                }
            }
        }
        let r = &inbound.response;
        if !(100..=599).contains(&r.status) {
            return Err(InvalidAnswer::Response(format!(
                "status {} is not an HTTP status",
                r.status
            )));
        }
        if r.headers.len() > MAX_LIST || inbound.diagnostics.len() > MAX_LIST {
            return Err(InvalidAnswer::Response(format!(
                "{} headers and {} diagnostics; at most {MAX_LIST} of each",
                r.headers.len(),
                inbound.diagnostics.len()
            )));
        }
        if r.body.len() > MAX_RESPONSE_BODY_BYTES {
            return Err(InvalidAnswer::Response(format!(
                "body is {} bytes; the limit is {MAX_RESPONSE_BODY_BYTES}",
                r.body.len()
            )));
        }
        Ok(())
    }

    /// A plausible Unix time in seconds: milliseconds where seconds are
    /// expected would otherwise be stored as a date thousands of years on.
    fn timestamp(&self, index: usize, value: u64) -> Result<(), InvalidAnswer> {
        let latest = self.now.saturating_add(MAX_TIMESTAMP_AHEAD_SECONDS);
        if (EARLIEST_TIMESTAMP..=latest).contains(&value) {
            return Ok(());
        }
        let hint = match value / 1000 {
            s if (EARLIEST_TIMESTAMP..=latest).contains(&s) => " (it looks like milliseconds)",
            _ => "",
        };
        Err(InvalidAnswer::Timestamp { index, value, hint })
    }

    fn identity(&self, index: usize, who: &ChannelIdentity) -> Result<(), InvalidAnswer> {
        if who.channel != self.plugin_id {
            return Err(InvalidAnswer::ForeignChannel {
                index,
                found: who.channel.clone(),
                own: self.plugin_id.to_string(),
            });
        }
        let field = Field { index };
        field.id("sender.id", &who.id)?;
        field.max("sender.scope", Some(&who.scope), MAX_ID_BYTES)
    }
}

/// Length checks on one event's fields.
struct Field {
    index: usize,
}

impl Field {
    fn max(&self, field: &'static str, v: Option<&str>, max: usize) -> Result<(), InvalidAnswer> {
        match v {
            Some(v) if v.len() > max => Err(InvalidAnswer::TooLong {
                index: self.index,
                field,
                len: v.len(),
                max,
            }),
            _ => Ok(()),
        }
    }

    /// A required id: not empty, at most [`MAX_ID_BYTES`].
    fn id(&self, field: &'static str, v: &str) -> Result<(), InvalidAnswer> {
        if v.is_empty() {
            return Err(InvalidAnswer::Empty {
                index: self.index,
                field,
            });
        }
        self.max(field, Some(v), MAX_ID_BYTES)
    }
}

fn claims(index: usize, claims: &[Claim]) -> Result<(), InvalidAnswer> {
    if claims.len() > MAX_CLAIMS {
        return Err(InvalidAnswer::TooLong {
            index,
            field: "claims (count)",
            len: claims.len(),
            max: MAX_CLAIMS,
        });
    }
    let field = Field { index };
    claims
        .iter()
        .try_for_each(|c| field.max("claim value", Some(&c.value), MAX_NAME_BYTES))
}

fn content(index: usize, c: &Content) -> Result<(), InvalidAnswer> {
    let f = Field { index };
    match c {
        Content::Text { text } => f.max("text", Some(text), MAX_TEXT_BYTES),
        Content::Media {
            reference,
            mime_type,
            caption,
            filename,
            ..
        } => {
            f.max("media reference", Some(reference), MAX_TEXT_BYTES)?;
            f.max("mime_type", mime_type.as_deref(), MAX_ID_BYTES)?;
            f.max("caption", caption.as_deref(), MAX_TEXT_BYTES)?;
            f.max("filename", filename.as_deref(), MAX_NAME_BYTES)
        }
        Content::Location { name, address, .. } => {
            f.max("location name", name.as_deref(), MAX_NAME_BYTES)?;
            f.max("address", address.as_deref(), MAX_TEXT_BYTES)
        }
        Content::Postback { payload, title } => {
            f.max("payload", Some(payload), MAX_TEXT_BYTES)?;
            f.max("title", Some(title), MAX_TEXT_BYTES)
        }
        Content::Reaction { message_id, emoji } => {
            f.max("reaction message_id", Some(message_id), MAX_ID_BYTES)?;
            f.max("emoji", Some(emoji), MAX_ID_BYTES)
        }
        Content::Unsupported { kind } => f.max("unsupported kind", Some(kind), MAX_ID_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ClaimKind, HttpResponse, InboundMessage};

    fn message(channel: &str, claims: Vec<Claim>) -> InboundEvent {
        InboundEvent::Message(InboundMessage {
            provider_message_id: "wamid.1".into(),
            sender: ChannelIdentity {
                channel: channel.into(),
                scope: "pnid".into(),
                id: "15551234567".into(),
            },
            display_name: Some("Sarah".into()),
            claims,
            contents: vec![Content::Text { text: "hi".into() }],
            referral: None,
            link_token: None,
            timestamp: NOW - 5,
            edited: false,
            reply_handle: None,
        })
    }

    fn inbound(events: Vec<InboundEvent>) -> Inbound {
        Inbound {
            events,
            response: HttpResponse {
                status: 200,
                headers: vec![],
                body: vec![],
            },
            diagnostics: vec![],
        }
    }

    fn rules(trust: bool) -> AnswerRules<'static> {
        AnswerRules {
            plugin_id: "whatsapp",
            channel: "wa",
            max_events: 2,
            trust_verified_claims: trust,
            now: NOW,
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn times_must_be_plausible_unix_seconds() {
        let at = |t: u64| {
            let mut m = message("whatsapp", vec![]);
            if let InboundEvent::Message(x) = &mut m {
                x.timestamp = t;
            }
            rules(true).apply(inbound(vec![m]))
        };
        assert!(at(NOW).is_ok());
        assert!(at(NOW + 86_400).is_ok());
        assert!(at(EARLIEST_TIMESTAMP).is_ok());
        let e = at(NOW * 1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event 0: timestamp 1800000000000 is not a Unix time in seconds from 2000 to a day from now (it looks like milliseconds)"
        );
        assert!(matches!(
            at(NOW + 86_401),
            Err(InvalidAnswer::Timestamp { hint: "", .. })
        ));
        assert!(matches!(at(0), Err(InvalidAnswer::Timestamp { .. })));
    }

    fn phone() -> Claim {
        Claim {
            kind: ClaimKind::Phone,
            value: "+15551234567".into(),
            verified: true,
        }
    }

    #[test]
    fn identities_are_recorded_under_the_configured_channel_name() {
        let placed = rules(true)
            .apply(inbound(vec![message("whatsapp", vec![phone()])]))
            .unwrap();
        let InboundEvent::Message(m) = &placed.events[0] else {
            panic!()
        };
        assert_eq!(m.sender.channel, "wa");
        assert!(m.claims[0].verified);
    }

    #[test]
    fn an_untrusted_plugins_verified_claims_are_demoted() {
        let placed = rules(false)
            .apply(inbound(vec![message("whatsapp", vec![phone()])]))
            .unwrap();
        let InboundEvent::Message(m) = &placed.events[0] else {
            panic!()
        };
        assert!(!m.claims[0].verified);
    }

    #[test]
    fn a_plugin_speaking_for_another_channel_is_refused() {
        let e = rules(true)
            .apply(inbound(vec![message("telegram", vec![])]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "event 0 names channel `telegram`; this plugin may only speak for `whatsapp`"
        );
    }

    #[test]
    fn a_message_without_contents_or_with_too_many_is_refused() {
        for n in [0, MAX_CONTENTS + 1] {
            let mut m = message("whatsapp", vec![]);
            if let InboundEvent::Message(m) = &mut m {
                m.contents = vec![Content::Text { text: "x".into() }; n];
            }
            assert_eq!(
                rules(true).apply(inbound(vec![m])).unwrap_err().to_string(),
                format!("event 0 has {n} contents; a message has 1 to {MAX_CONTENTS}")
            );
        }
    }

    #[test]
    fn more_events_than_the_limit_are_refused() {
        let e = rules(true)
            .apply(inbound(vec![message("whatsapp", vec![]); 3]))
            .unwrap_err();
        assert_eq!(e, InvalidAnswer::TooManyEvents { count: 3, max: 2 });
    }

    #[test]
    fn overlong_and_empty_fields_are_refused() {
        let mut long = message("whatsapp", vec![]);
        if let InboundEvent::Message(m) = &mut long {
            m.contents[0] = Content::Text {
                text: "x".repeat(MAX_TEXT_BYTES + 1),
            };
        }
        assert!(matches!(
            rules(true).apply(inbound(vec![long])),
            Err(InvalidAnswer::TooLong { field: "text", .. })
        ));
        let mut empty = message("whatsapp", vec![]);
        if let InboundEvent::Message(m) = &mut empty {
            m.provider_message_id.clear();
        }
        assert_eq!(
            rules(true).apply(inbound(vec![empty])).unwrap_err(),
            InvalidAnswer::Empty {
                index: 0,
                field: "provider_message_id"
            }
        );
        let many = message("whatsapp", vec![phone(); MAX_CLAIMS + 1]);
        assert!(rules(true).apply(inbound(vec![many])).is_err());
    }
}
