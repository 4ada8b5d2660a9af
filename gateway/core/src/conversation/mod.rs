//! The unified timeline: every message and event of a customer, across
//! channels, in time order, each with its channel. Entries are stored
//! sealed, one key each, by the identity graph's store (see
//! [`crate::db::Db::record_inbound`]). [`state`] holds what
//! the conversation needs besides its entries: where the customer can be
//! reached, an open hand-off, the proactive messages sent.

pub mod state;

use serde::{Deserialize, Serialize};

use crate::channel::InboundMessage;

/// Which way an entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the customer.
    Inbound,
    /// To the customer.
    Outbound,
    /// A business event (purchase, …) or a link.
    Event,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Random id, `e_` + 32 hex digits.
    pub id: String,
    /// Unix seconds.
    pub at: u64,
    /// The channel it came or went on.
    pub channel: String,
    /// Which way.
    pub direction: Direction,
    /// `text`, `media`, `location`, `postback`, `reaction`, `unsupported`,
    /// `link`, or a business event type.
    pub kind: String,
    /// What a person would read, when there is something to read.
    pub text: Option<String>,
    /// A business event's properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
    /// An outbound message's delivery state: `queued`, `sent`,
    /// `delivered`, `read` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Who wrote an outbound message: `agent`, `human` or `reminder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The channel's id of an inbound message, or the id of an outbound
    /// one (`o_…`): what erasure and retention follow to the message's
    /// other records (its dedup entry, its outbound record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_ref: Option<String>,
    /// An inbound message's contents, when there is more than its text
    /// (attachments, a location): the plugin's normalized list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<serde_json::Value>,
    /// Where the conversation came from, when the channel said (an ad
    /// click): the first touch's source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<crate::channel::Referral>,
}

impl Entry {
    /// The entry an inbound message makes (its id is set when stored).
    pub fn inbound(m: &InboundMessage, linked_by_token: bool) -> Entry {
        let (kind, text) = if linked_by_token {
            ("link", None)
        } else {
            (m.kind(), m.text())
        };
        // Text with attachments is one entry; the attachments are listed
        // when there is more than the text.
        let contents = (m.contents.len() > 1 || kind != "text")
            .then(|| serde_json::to_value(&m.contents).ok())
            .flatten()
            .filter(|_| !linked_by_token);
        Entry {
            id: String::new(),
            at: m.timestamp,
            channel: m.sender.channel.clone(),
            direction: Direction::Inbound,
            kind: kind.to_string(),
            text,
            properties: None,
            status: None,
            author: None,
            message_ref: Some(m.provider_message_id.clone()),
            contents,
            referral: m.referral.clone(),
        }
    }

    /// A business event (`POST /v1/events`): `purchase`, `cart_abandoned`, …
    pub fn event(kind: &str, properties: serde_json::Value, at: u64) -> Entry {
        Entry {
            id: String::new(),
            at,
            channel: "api".into(),
            direction: Direction::Event,
            kind: kind.to_string(),
            text: None,
            properties: Some(properties),
            status: None,
            author: None,
            message_ref: None,
            contents: None,
            referral: None,
        }
    }

    /// Outbound message `id`, queued for delivery on `channel`.
    pub fn outbound(id: &str, channel: &str, text: &str, author: &str, at: u64) -> Entry {
        Entry {
            id: String::new(),
            at,
            channel: channel.to_string(),
            direction: Direction::Outbound,
            kind: "text".into(),
            text: Some(text.to_string()),
            properties: None,
            status: Some("queued".into()),
            author: Some(author.to_string()),
            message_ref: Some(id.to_string()),
            contents: None,
            referral: None,
        }
    }
}

/// The timeline object of INTERFACE §3.6, oldest first.
pub fn timeline_json(customer_id: &str, entries: &[Entry]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = entries.iter().map(entry_json).collect();
    serde_json::json!({"customer_id": customer_id, "entries": entries})
}

/// One timeline entry as the APIs show it.
pub fn entry_json(e: &Entry) -> serde_json::Value {
    let mut v = serde_json::json!({"id": e.id, "at": crate::rfc3339(e.at), "channel": e.channel, "direction": e.direction, "kind": e.kind});
    if let Some(t) = &e.text {
        v["text"] = serde_json::json!(t);
    }
    if let Some(p) = &e.properties {
        v["properties"] = p.clone();
    }
    if let Some(s) = &e.status {
        v["status"] = serde_json::json!(s);
    }
    if let Some(a) = &e.author {
        v["author"] = serde_json::json!(a);
    }
    if let Some(c) = &e.contents {
        v["contents"] = c.clone();
    }
    if let Some(r) = &e.referral {
        v["referral"] = serde_json::json!(r);
    }
    v
}
