//! THE key table: every key the gateway writes, built here and nowhere
//! else. Erasure walks this table to forget a customer, and every backend
//! (redb, Redis, Spin's outbound Redis) writes exactly these keys, so a key
//! missing from it is a bug.
//!
//! `P` is `[store] key_prefix`. `H(kind, v)` is the blind index: a keyed
//! HMAC-SHA256 of `kind ‖ v` under `[security] index_key`, hex, so a lookup
//! key reveals nothing of the value it indexes. `{c:ID}` is a Redis hash
//! tag: every key of one customer's own data lands in one cluster slot.
//! Values are sealed (AES-256-GCM, bound to their key) unless the table
//! says otherwise.
//!
//! | key | what it holds | whose | kept |
//! | --- | --- | --- | --- |
//! | `P cust:{c:ID}` | the customer: identities, identifiers, attributes, merge links | customer ID | until erased |
//! | `P ident:H(identity, channel␀scope␀id)` | the customer id (plain: a random id) | that customer | until erased or moved by a merge/undo |
//! | `P identany:H(identity-any, channel␀id)` | the same, for a lookup in any scope | that customer | as above |
//! | `P idx:H(KIND, value)` | the customer id an email/phone/user id belongs to | that customer | as above |
//! | `P ckey:{c:ID}` | the customer's own data key, wrapped by the data key; erasure destroys it (in the key vault when one is configured, else here) | customer ID | until erased |
//! | `P tlseq:{c:ID}` | how many timeline entries ID has (plain number) | customer ID | until erased |
//! | `P tlfirst:{c:ID}` | `N:AT`: the first timeline entry retention has not removed, and when the newest removed one was (plain) | customer ID | until erased |
//! | `P tl:{c:ID}:N` | timeline entry N: a message, event or reply | customer ID | until erased |
//! | `P conv:{c:ID}` | conversation state: reply routes, hand-off, outbox, proactive count | customer ID | until erased |
//! | `P an:{c:ID}` | the analytics summary: touch times and channels, purchase times, first-touch source, refusal, merge group | customer ID | until erased |
//! | `P ancount:S` | analytics counter shard S (of 16): report counters, a JSON object of numbers, only ever incremented (plain: channel names and counts, no personal data) | — | always |
//! | `P merge:ID` | a merge record: both customers as they were, what was dropped | both customers | until erased |
//! | `P conflict:ID` | a review-queue item (no personal data in `detail`) | its customers | until erased |
//! | `P conflicts` | the ids of every conflict | — | always |
//! | `P token:H(link-token, token)` | a one-time link token: customer, channel, expiry | that customer | until used (expiry checked on read) |
//! | `P seen:H(dedup, channel␀provider_id)` | when a provider message id was recorded (plain second) | — | 7 days (expiring key) |
//! | `P out:ID` | an outbound message: text, routes, state, attempts | its customer | until erased |
//! | `P sent:H(provider-id, channel␀provider_id)` | the outbound id the channel's message id belongs to (plain) | its customer | 7 days from the send (expiring key) |
//! | `P early:H(early-status, channel␀provider_id)` | a delivery status that arrived before its send was recorded | its customer | 1 day (expiring key) |
//! | `P handoffs` | the customers with an open hand-off | — | always |
//! | `P job:ID` | a queued job: agent turn, delivery or reminder | its customer | until done |
//! | `P qseq:S`, `P qhead:S` | queue shard S's next slot and first live slot (plain) | — | always |
//! | `P q:S:N` | slot N of shard S: a job reference and its due time, moved to a lease's end when claimed (plain) | — | until the job is removed or postponed |
//! | `P qlater:S` | shard S's jobs due later (plain references) | — | always |
//! | `P shredding` | customers erased whose keys are still to be destroyed (plain JSON ids) | — | until their keys are gone |
//! | `P auditseq` | how many audit entries there are (plain number) | — | always |
//! | `P audit:N` | audit entry N: at, actor, action, route, customer id, outcome, hash chain (plain JSON, no personal data) | — | always |
//! | `P malformed` | the index of kept malformed payloads: sequence numbers and sizes | — | always |
//! | `P malformed:N` | malformed payload N: channel, plugin error, raw body as received | — | the newest 100, 16 MiB of bodies at most |

use crate::channel::ChannelIdentity;
use crate::identity::identifier::Identifier;
use crate::seal::Keyring;

/// Builds every key of the table above.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    prefix: &'a str,
    index: &'a Keyring,
}

impl<'a> Keys<'a> {
    /// Keys under `prefix`, blind-indexed with `index`'s index key.
    pub fn new(prefix: &'a str, index: &'a Keyring) -> Self {
        Keys { prefix, index }
    }

    /// `P name:H(kind, value)`.
    fn blind(&self, name: &str, kind: &str, value: &str) -> String {
        format!(
            "{}{name}:{}",
            self.prefix,
            self.index.blind_index(kind, value)
        )
    }

    /// `P cust:{c:ID}`.
    pub fn customer(&self, id: &str) -> String {
        format!("{}{}{id}}}", self.prefix, CUSTOMER_PREFIX)
    }

    /// What precedes a customer id in [`Keys::customer`] (for a read that
    /// follows a lookup key to its customer in one round trip).
    pub fn customer_prefix(&self) -> String {
        format!("{}{CUSTOMER_PREFIX}", self.prefix)
    }

    /// `P ident:…`: one channel identity, in its scope.
    pub fn identity(&self, i: &ChannelIdentity) -> String {
        self.blind(
            "ident",
            "identity",
            &format!("{}\0{}\0{}", i.channel, i.scope, i.id),
        )
    }

    /// `P identany:…`: a channel user id in any scope.
    pub fn identity_any(&self, channel: &str, id: &str) -> String {
        self.blind("identany", "identity-any", &format!("{channel}\0{id}"))
    }

    /// `P idx:…`: an identifier.
    pub fn identifier(&self, i: &Identifier) -> String {
        self.blind("idx", i.kind.as_str(), &i.value)
    }

    /// `P ckey:{c:ID}`: a customer's own key, wrapped.
    pub fn customer_key(&self, customer: &str) -> String {
        format!("{}ckey:{{c:{customer}}}", self.prefix)
    }

    /// `P tlseq:{c:ID}`.
    pub fn timeline_seq(&self, customer: &str) -> String {
        format!("{}tlseq:{{c:{customer}}}", self.prefix)
    }

    /// `P tlfirst:{c:ID}`.
    pub fn timeline_first(&self, customer: &str) -> String {
        format!("{}tlfirst:{{c:{customer}}}", self.prefix)
    }

    /// `P tl:{c:ID}:N`.
    pub fn timeline_entry(&self, customer: &str, n: u64) -> String {
        format!("{}tl:{{c:{customer}}}:{n}", self.prefix)
    }

    /// `P conv:{c:ID}`.
    pub fn conversation(&self, customer: &str) -> String {
        format!("{}conv:{{c:{customer}}}", self.prefix)
    }

    /// `P an:{c:ID}`.
    pub fn analytics(&self, customer: &str) -> String {
        format!("{}an:{{c:{customer}}}", self.prefix)
    }

    /// The prefix of every `P an:` key (a scan of the summaries).
    pub fn analytics_prefix(&self) -> String {
        format!("{}an:", self.prefix)
    }

    /// `P ancount:S`.
    pub fn analytics_counters(&self, shard: u32) -> String {
        format!("{}ancount:{shard}", self.prefix)
    }

    /// `P merge:ID`.
    pub fn merge(&self, id: &str) -> String {
        format!("{}merge:{id}", self.prefix)
    }

    /// `P conflict:ID`.
    pub fn conflict(&self, id: &str) -> String {
        format!("{}conflict:{id}", self.prefix)
    }

    /// `P conflicts`.
    pub fn conflicts(&self) -> String {
        format!("{}conflicts", self.prefix)
    }

    /// `P token:…`.
    pub fn link_token(&self, token: &str) -> String {
        self.blind("token", "link-token", token)
    }

    /// `P seen:…`.
    pub fn dedup(&self, channel: &str, provider_id: &str) -> String {
        self.blind("seen", "dedup", &format!("{channel}\0{provider_id}"))
    }

    /// `P out:ID`.
    pub fn outbound(&self, id: &str) -> String {
        format!("{}out:{id}", self.prefix)
    }

    /// `P sent:…`.
    pub fn provider_id(&self, channel: &str, provider_id: &str) -> String {
        self.blind("sent", "provider-id", &format!("{channel}\0{provider_id}"))
    }

    /// `P early:…`.
    pub fn early_status(&self, channel: &str, provider_id: &str) -> String {
        self.blind(
            "early",
            "early-status",
            &format!("{channel}\0{provider_id}"),
        )
    }

    /// `P handoffs`.
    pub fn handoffs(&self) -> String {
        format!("{}handoffs", self.prefix)
    }

    /// `P job:ID`.
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// `P qseq:S`.
    pub fn queue_seq(&self, shard: u32) -> String {
        format!("{}qseq:{shard}", self.prefix)
    }

    /// `P qhead:S`.
    pub fn queue_head(&self, shard: u32) -> String {
        format!("{}qhead:{shard}", self.prefix)
    }

    /// `P q:S:N`.
    pub fn queue_slot(&self, shard: u32, n: u64) -> String {
        format!("{}q:{shard}:{n}", self.prefix)
    }

    /// `P qlater:S`.
    pub fn queue_later(&self, shard: u32) -> String {
        format!("{}qlater:{shard}", self.prefix)
    }

    /// `P malformed`.
    pub fn malformed(&self) -> String {
        format!("{}malformed", self.prefix)
    }

    /// `P shredding`.
    pub fn shredding(&self) -> String {
        format!("{}shredding", self.prefix)
    }

    /// `P auditseq`.
    pub fn audit_seq(&self) -> String {
        format!("{}auditseq", self.prefix)
    }

    /// `P audit:N`.
    pub fn audit_entry(&self, seq: u64) -> String {
        format!("{}audit:{seq}", self.prefix)
    }

    /// `P malformed:N`.
    pub fn malformed_item(&self, seq: u64) -> String {
        format!("{}malformed:{seq}", self.prefix)
    }
}

const CUSTOMER_PREFIX: &str = "cust:{c:";

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::new(
            Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="),
            Some("AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="),
        )
        .unwrap()
    }

    #[test]
    fn a_customers_own_keys_share_its_hash_tag() {
        let ring = keyring();
        let k = Keys::new("cc:", &ring);
        for key in [
            k.customer("c_1"),
            k.timeline_seq("c_1"),
            k.timeline_entry("c_1", 7),
            k.conversation("c_1"),
        ] {
            assert!(key.starts_with("cc:"), "{key}");
            assert!(key.contains("{c:c_1}"), "{key}");
        }
        assert_eq!(k.customer("c_1"), format!("{}c_1}}", k.customer_prefix()));
    }

    #[test]
    fn lookup_keys_reveal_nothing_of_what_they_index() {
        let ring = keyring();
        let k = Keys::new("cc:", &ring);
        let phone = Identifier {
            kind: crate::identity::identifier::IdentifierKind::Phone,
            value: "+15551234567".into(),
        };
        for key in [k.identifier(&phone), k.dedup("whatsapp", "wamid.1")] {
            assert!(
                !key.contains("5551234567") && !key.contains("wamid"),
                "{key}"
            );
        }
    }
}
