//! The built-in agent: deterministic and aware of the whole cross-channel
//! conversation. It greets a returning customer by name, recalls on a new
//! channel what they last asked on another one, and hands off to a person
//! when asked.

use crate::conversation::{Direction, Entry};

/// What the agent decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message to send back on the channel the customer wrote on.
    pub text: String,
    /// Whether the conversation goes to the hand-off inbox.
    pub handoff: bool,
    /// Whether to offer a "Talk to a person" choice with the text (its
    /// postback, or the words, hand the conversation off).
    pub offer_person: bool,
}

/// The id of the "Talk to a person" choice.
pub const PERSON_CHOICE: &str = "talk_to_a_person";

impl Reply {
    /// What to send: the text, with the "Talk to a person" choice when
    /// offered (a channel without choices gets it as numbered text).
    pub fn content(&self) -> crate::channel::OutboundContent {
        if self.offer_person {
            crate::channel::OutboundContent::Choices {
                prompt: self.text.clone(),
                options: vec![crate::channel::Choice {
                    id: PERSON_CHOICE.into(),
                    title: "Talk to a person".into(),
                }],
            }
        } else {
            crate::channel::OutboundContent::text(&self.text)
        }
    }
}

/// Longest quote of an earlier question, in characters.
const QUOTE_MAX: usize = 80;

/// Words that mean "let me talk to a person".
const HUMAN_WORDS: &[&str] = &[
    "human",
    "agent",
    "person",
    "representative",
    "someone real",
    "real person",
    "operator",
];

/// How a channel is named to a customer.
pub fn channel_name(channel: &str) -> &str {
    match channel {
        "widget" => "the web chat",
        "whatsapp" => "WhatsApp",
        "telegram" => "Telegram",
        "discord" => "Discord",
        other => other,
    }
}

fn quote(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() <= QUOTE_MAX {
        return t.to_string();
    }
    let cut: String = t.chars().take(QUOTE_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

fn first_name(name: Option<&str>) -> Option<&str> {
    name.and_then(|n| n.split_whitespace().next())
        .filter(|n| !n.is_empty())
}

/// Answers `incoming`, given the customer's name and their unified
/// `history` (oldest first; it may or may not contain `incoming` itself).
pub fn respond(name: Option<&str>, history: &[Entry], incoming: &Entry) -> Reply {
    let first = first_name(name);
    if incoming.kind == "session_opened" {
        return Reply {
            text: on_open(first, history).unwrap_or_default(),
            handoff: false,
            offer_person: false,
        };
    }
    let text = incoming.text.as_deref().unwrap_or("").to_lowercase();
    let picked_person = incoming
        .contents
        .iter()
        .filter_map(|c| c.as_array())
        .flatten()
        .any(|c| c["type"] == "postback" && c["payload"] == PERSON_CHOICE);
    if picked_person || HUMAN_WORDS.iter().any(|w| text.contains(w)) {
        return Reply {
            text: match first {
                Some(n) => format!(
                    "Of course, {n} — I'm bringing in someone from our team. They'll reply right here."
                ),
                None => {
                    "Of course — I'm bringing in someone from our team. They'll reply right here."
                        .into()
                }
            },
            handoff: true,
            offer_person: false,
        };
    }
    let earlier: Vec<&Entry> = history
        .iter()
        .filter(|e| e.id != incoming.id && e.direction == Direction::Inbound && e.kind != "link")
        .collect();
    let used_here = earlier.iter().any(|e| e.channel == incoming.channel);
    let elsewhere = earlier.iter().rev().find(|e| {
        e.channel != incoming.channel
            && e.kind == "text"
            && e.text.as_deref().is_some_and(|t| !t.trim().is_empty())
    });
    let acknowledged = elsewhere.is_none_or(|_| used_here) && !earlier.is_empty();
    let text = match (elsewhere, used_here, first) {
        (Some(e), false, name) => {
            let greeting = name
                .map(|n| format!("Welcome back, {n}!"))
                .unwrap_or_else(|| "Welcome back!".into());
            format!(
                "{greeting} Earlier on {} you asked about “{}”. How can I help with that?",
                channel_name(&e.channel),
                quote(e.text.as_deref().unwrap_or_default())
            )
        }
        _ if !earlier.is_empty() => match first {
            Some(n) => format!("Thanks, {n}! Got it — we'll follow up right here."),
            None => "Thanks! Got it — we'll follow up right here.".into(),
        },
        _ => match first {
            Some(n) => format!("Hi {n}! Thanks for reaching out — how can we help?"),
            None => "Hi! Thanks for reaching out — how can we help?".into(),
        },
    };
    Reply {
        text,
        handoff: false,
        // Acknowledged but not answered: a person is one tap away.
        offer_person: acknowledged,
    }
}

/// The greeting when a widget session opens (`session_opened`): when the
/// customer last wrote on another channel, it recalls what they asked
/// there; otherwise nothing is said (an empty reply sends nothing).
fn on_open(first: Option<&str>, history: &[Entry]) -> Option<String> {
    let last = history.iter().rev().find(|e| {
        e.direction == Direction::Inbound
            && e.kind == "text"
            && e.text.as_deref().is_some_and(|t| !t.trim().is_empty())
    })?;
    if last.channel == "widget" {
        return None;
    }
    let greeting = first
        .map(|n| format!("Welcome back, {n}!"))
        .unwrap_or_else(|| "Welcome back!".into());
    Some(format!(
        "{greeting} Earlier on {} you asked about “{}”. How can I help with that?",
        channel_name(&last.channel),
        quote(last.text.as_deref().unwrap_or_default())
    ))
}

/// The abandoned-cart reminder, by first name when known.
pub fn reminder(name: Option<&str>) -> String {
    match first_name(name) {
        Some(n) => format!(
            "Hi {n}, you left something in your cart. It's saved for you — reply here if you have any questions."
        ),
        None => "Hi, you left something in your cart. It's saved for you — reply here if you have any questions.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: u64, channel: &str, kind: &str, text: &str) -> Entry {
        Entry {
            id: id.into(),
            at,
            channel: channel.into(),
            direction: Direction::Inbound,
            kind: kind.into(),
            text: Some(text.into()),
            properties: None,
            status: None,
            author: None,
            message_ref: None,
            contents: None,
            referral: None,
        }
    }

    #[test]
    fn an_acknowledgment_offers_a_person_and_picking_it_hands_off() {
        let history = vec![
            entry("e1", 1, "whatsapp", "text", "hi"),
            entry("e2", 2, "whatsapp", "text", "and the desk?"),
        ];
        let r = respond(None, &history, &history[1]);
        assert!(r.offer_person);
        assert_eq!(
            r.content(),
            crate::channel::OutboundContent::Choices {
                prompt: "Thanks! Got it — we'll follow up right here.".into(),
                options: vec![crate::channel::Choice {
                    id: PERSON_CHOICE.into(),
                    title: "Talk to a person".into()
                }]
            }
        );
        let mut pick = entry("e3", 3, "whatsapp", "postback", "Yes please");
        pick.contents = Some(serde_json::json!([
            {"type": "postback", "payload": PERSON_CHOICE, "title": "Yes please"}
        ]));
        assert!(respond(None, &history, &pick).handoff);
    }

    #[test]
    fn a_new_customer_is_greeted() {
        let e = entry("e1", 1, "widget", "text", "hello");
        assert_eq!(
            respond(None, std::slice::from_ref(&e), &e).text,
            "Hi! Thanks for reaching out — how can we help?"
        );
        assert_eq!(
            respond(Some("Sarah Kim"), &[], &e).text,
            "Hi Sarah! Thanks for reaching out — how can we help?"
        );
    }

    #[test]
    fn on_a_new_channel_the_last_question_elsewhere_is_recalled() {
        let history = vec![
            entry(
                "e1",
                1,
                "widget",
                "text",
                "Do you have the ergonomic office chair in black?",
            ),
            entry("e2", 2, "telegram", "link", ""),
        ];
        let now = entry("e3", 3, "whatsapp", "text", "hi");
        let r = respond(Some("Sarah Kim"), &history, &now);
        assert_eq!(
            r.text,
            "Welcome back, Sarah! Earlier on the web chat you asked about “Do you have the ergonomic office chair in black?”. How can I help with that?"
        );
        assert!(!r.handoff);
    }

    #[test]
    fn on_a_channel_already_used_it_just_acknowledges() {
        let history = vec![
            entry("e1", 1, "widget", "text", "chair?"),
            entry("e2", 2, "whatsapp", "text", "hi"),
        ];
        let now = entry("e3", 3, "whatsapp", "text", "and the desk?");
        assert_eq!(
            respond(Some("Sarah"), &history, &now).text,
            "Thanks, Sarah! Got it — we'll follow up right here."
        );
    }

    #[test]
    fn asking_for_a_human_starts_a_hand_off() {
        let now = entry(
            "e1",
            1,
            "discord",
            "text",
            "Can I talk to a real PERSON please",
        );
        let r = respond(Some("Ada"), &[], &now);
        assert!(r.handoff);
        assert!(r.text.starts_with("Of course, Ada"), "{}", r.text);
    }

    #[test]
    fn long_questions_are_quoted_short() {
        let long = "a".repeat(200);
        let history = vec![entry("e1", 1, "telegram", "text", &long)];
        let r = respond(None, &history, &entry("e2", 2, "widget", "text", "hi"));
        assert!(
            r.text
                .contains(&format!("“{}…”", "a".repeat(QUOTE_MAX - 1))),
            "{}",
            r.text
        );
    }

    #[test]
    fn a_session_opening_recalls_only_what_was_said_elsewhere() {
        let opened = Entry {
            direction: Direction::Event,
            kind: "session_opened".into(),
            text: None,
            ..entry("e9", 9, "api", "session_opened", "")
        };
        let asked = entry("e1", 1, "whatsapp", "text", "Is the chair in stock?");
        assert_eq!(
            respond(Some("Sarah Kim"), &[asked.clone(), opened.clone()], &opened).text,
            "Welcome back, Sarah! Earlier on WhatsApp you asked about “Is the chair in stock?”. How can I help with that?"
        );
        // Last heard on the web chat itself: nothing to recall, nothing said.
        let here = entry("e2", 2, "widget", "text", "thanks");
        assert_eq!(
            respond(Some("Sarah"), &[asked, here, opened.clone()], &opened).text,
            ""
        );
    }
}
