//! Change notifications: "customer X has something new". Every host that
//! records a change announces it — the native gateway to its widget
//! sessions on every node, the Spin edge to the native nodes (whose queue
//! workers it also wakes) — on one Redis pub/sub channel, in this one
//! format. A notification names a customer and what changed, never the
//! data: subscribers read the store to see what it is.

use serde::{Deserialize, Serialize};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A message arrived or was sent (an arrival may have queued a job).
    Message,
    /// Attributes or identities changed.
    Profile,
    /// The customer was merged, or a merge undone.
    Merge,
    /// Notifications may have been missed (the Redis subscription was
    /// lost): every subscriber reads the store again. Never published.
    Resync,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The customer.
    pub customer_id: String,
    /// What changed.
    pub kind: ChangeKind,
}

impl Change {
    /// The notification as published (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a change serializes")
    }
}

/// The Redis pub/sub channel changes are published on, for the store's
/// key `prefix`.
pub fn pubsub_channel(prefix: &str) -> String {
    format!("{prefix}changes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_stable() {
        let c = Change {
            customer_id: "cus_1".into(),
            kind: ChangeKind::Message,
        };
        assert_eq!(c.to_json(), r#"{"customer_id":"cus_1","kind":"message"}"#);
        assert_eq!(pubsub_channel("cc:"), "cc:changes");
    }
}
