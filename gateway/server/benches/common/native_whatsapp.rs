//! The bench-only native baseline: what a hand-written Rust handler would
//! parse out of a WhatsApp text notification, typed with serde. Shared by
//! the `plugin_parse` bench and the `bench_server` example.

use serde::Deserialize;

#[derive(Deserialize)]
#[allow(
    dead_code,
    reason = "fields are parsed to cost what the plugin's parse costs"
)]
pub(crate) struct Notification {
    pub(crate) object: String,
    pub(crate) entry: Vec<Entry>,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Entry {
    pub(crate) changes: Vec<Change>,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Change {
    pub(crate) field: String,
    pub(crate) value: Value,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Value {
    pub(crate) metadata: Metadata,
    #[serde(default)]
    pub(crate) contacts: Vec<Contact>,
    #[serde(default)]
    pub(crate) messages: Vec<Message>,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Metadata {
    pub(crate) phone_number_id: String,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Contact {
    pub(crate) wa_id: Option<String>,
    pub(crate) profile: Option<Profile>,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Profile {
    pub(crate) name: Option<String>,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) from: Option<String>,
    pub(crate) timestamp: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) text: Option<Text>,
}
#[derive(Deserialize)]
#[allow(dead_code, reason = "parsed, not read")]
pub(crate) struct Text {
    pub(crate) body: String,
}
