//! A customer's conversation state besides its timeline: where they last
//! wrote from on each channel (and the handle a reply needs), an open
//! hand-off to a person, and the proactive messages sent to them (for the
//! frequency cap). Stored sealed, one record per customer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::channel::ChannelIdentity;

/// Where a customer can be answered on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The customer's identity on the channel.
    pub identity: ChannelIdentity,
    /// The plugin's reply handle of their last message there (a Discord
    /// interaction token, …), if it gave one.
    pub reply_handle: Option<String>,
    /// Unix seconds of their last message there.
    pub at: u64,
}

/// A conversation waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// Unix seconds.
    pub opened_at: u64,
    /// `requested` (the customer asked), `agent` (the agent asked),
    /// `agent_unavailable` or `delivery_failed`.
    pub reason: String,
    /// What went wrong, for the two failure reasons (no personal data).
    pub detail: Option<String>,
    /// The channel of the customer's latest message.
    pub channel: String,
    /// Unix seconds of the customer's latest message.
    pub last_message_at: u64,
    /// Messages from the customer since the hand-off opened.
    pub waiting: u32,
}

/// A customer's conversation state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationState {
    /// The latest route per channel.
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    /// The open hand-off, if any; while open, the agent stays silent.
    #[serde(default)]
    pub handoff: Option<Handoff>,
    /// Unix seconds of proactive messages sent, newest last (a day's worth
    /// is kept).
    #[serde(default)]
    pub proactive_sent: Vec<u64>,
    /// Reminder jobs scheduled and not yet run (a purchase cancels them).
    #[serde(default)]
    pub reminders: Vec<String>,
    /// Outbound messages not yet sent, in the order they go out.
    #[serde(default)]
    pub outbox: Vec<String>,
    /// Unix seconds of the last widget session opened with the agent's
    /// turn (at most one a day).
    #[serde(default)]
    pub widget_opened_at: Option<u64>,
    /// This customer's records that no other record of theirs leads to
    /// (link tokens, merge records): what erasure removes with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned: Vec<OwnedKey>,
}

/// A key of the store one customer's erasure must remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedKey {
    /// The key.
    pub key: String,
    /// Unix second after which the record is gone or useless anyway (a
    /// link token's expiry), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl ConversationState {
    /// Records `key` as this customer's, forgetting those past their time.
    pub fn own(&mut self, key: String, until: Option<u64>, now: u64) {
        self.owned
            .retain(|o| o.until.is_none_or(|u| u > now) && o.key != key);
        self.owned.push(OwnedKey { key, until });
    }

    /// Remembers where the customer just wrote from.
    pub fn saw(&mut self, identity: &ChannelIdentity, reply_handle: Option<&str>, at: u64) {
        let newer = self
            .routes
            .get(&identity.channel)
            .is_none_or(|r| r.at <= at);
        if newer {
            self.routes.insert(
                identity.channel.clone(),
                Route {
                    identity: identity.clone(),
                    reply_handle: reply_handle.map(String::from),
                    at,
                },
            );
        }
    }

    /// Opens a hand-off, or — if one is open — counts another message on it.
    pub fn hand_off(&mut self, reason: &str, detail: Option<String>, channel: &str, at: u64) {
        match &mut self.handoff {
            Some(h) => {
                h.channel = channel.to_string();
                h.last_message_at = h.last_message_at.max(at);
                h.waiting += 1;
            }
            None => {
                self.handoff = Some(Handoff {
                    opened_at: at,
                    reason: reason.to_string(),
                    detail,
                    channel: channel.to_string(),
                    last_message_at: at,
                    waiting: 1,
                })
            }
        }
    }

    /// The channels to reach the customer on, best first: `preferred` (if
    /// they have a route there), then the most recently used.
    pub fn reply_routes(&self, preferred: Option<&str>) -> Vec<Route> {
        let mut routes: Vec<Route> = self.routes.values().cloned().collect();
        routes.sort_by_key(|r| {
            (
                Some(r.identity.channel.as_str()) != preferred,
                std::cmp::Reverse(r.at),
            )
        });
        routes
    }

    /// Whether one more proactive message at `now` stays within `per_day`,
    /// counting every channel.
    pub fn may_send_proactive(&self, per_day: u32, now: u64) -> bool {
        let recent = self
            .proactive_sent
            .iter()
            .filter(|t| now.saturating_sub(**t) < 86_400)
            .count();
        (recent as u64) < u64::from(per_day)
    }

    /// Records a proactive message sent at `now`, forgetting those older
    /// than a day.
    pub fn sent_proactive(&mut self, now: u64) {
        self.proactive_sent
            .retain(|t| now.saturating_sub(*t) < 86_400);
        self.proactive_sent.push(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(channel: &str) -> ChannelIdentity {
        ChannelIdentity {
            channel: channel.into(),
            scope: "s".into(),
            id: "u".into(),
        }
    }

    #[test]
    fn routes_come_preferred_first_then_most_recent() {
        let mut s = ConversationState::default();
        s.saw(&ident("widget"), None, 10);
        s.saw(&ident("whatsapp"), None, 20);
        s.saw(&ident("telegram"), Some("h"), 15);
        // An older message (a late retry) does not replace a newer route.
        s.saw(&ident("whatsapp"), Some("old"), 5);
        let order = |p| {
            s.reply_routes(p)
                .into_iter()
                .map(|r| r.identity.channel)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(None), ["whatsapp", "telegram", "widget"]);
        assert_eq!(order(Some("widget")), ["widget", "whatsapp", "telegram"]);
        assert_eq!(order(Some("discord")), ["whatsapp", "telegram", "widget"]);
        assert_eq!(s.routes["whatsapp"].reply_handle, None);
        assert_eq!(s.routes["telegram"].reply_handle.as_deref(), Some("h"));
    }

    #[test]
    fn the_frequency_cap_counts_a_rolling_day_across_channels() {
        let mut s = ConversationState::default();
        assert!(s.may_send_proactive(1, 1_000));
        s.sent_proactive(1_000);
        assert!(!s.may_send_proactive(1, 1_000 + 86_399));
        assert!(s.may_send_proactive(2, 1_000 + 86_399));
        assert!(s.may_send_proactive(1, 1_000 + 86_400));
        assert!(!s.may_send_proactive(0, 0));
        s.sent_proactive(1_000 + 86_400);
        assert_eq!(s.proactive_sent, [87_400]);
    }

    #[test]
    fn a_second_message_during_a_handoff_keeps_it_open_and_counts() {
        let mut s = ConversationState::default();
        s.hand_off("requested", None, "widget", 5);
        s.hand_off("agent", None, "whatsapp", 9);
        let h = s.handoff.unwrap();
        assert_eq!(
            (
                h.reason.as_str(),
                h.channel.as_str(),
                h.opened_at,
                h.waiting
            ),
            ("requested", "whatsapp", 5, 2)
        );
    }
}
