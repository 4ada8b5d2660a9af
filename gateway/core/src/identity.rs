//! Identity: the rules that tie channel identities and identifiers to one
//! customer profile, as operations on [`crate::db::Db`].
//!
//! - [`identifier`]: identifier kinds and their normalization (emails
//!   lower-cased, phones to E.164 by their form); blocked values.
//! - [`customer`]: the customer record and its lookup keys.
//! - [`resolve`]: which customer an inbound sender is.
//! - [`merge`]: merges and their exact undo.
//! - [`link_token`]: one-time link tokens.
//! - [`conflicts`]: the review queue.
//! - [`import`] and [`csv`]: the CSV identity import.

pub mod conflicts;
pub mod csv;
pub mod customer;
pub mod identifier;
pub mod import;
pub mod link_token;
pub mod merge;
pub mod resolve;

pub use conflicts::Conflict;
pub use customer::{
    Attribute, Customer, How, LinkedIdentifier, LinkedIdentity, MARKETING_CONSENT,
    PREFERRED_CHANNEL,
};
pub use identifier::Rules;
pub use import::{ImportOutcome, ImportRow};
pub use merge::{DroppedValue, MergeRecord};
pub use resolve::{Resolution, Sender};
