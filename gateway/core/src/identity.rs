//! Identity: the rules that tie channel identities and identifiers to one
//! customer profile.
//!
//! - [`identifier`]: identifier kinds and their normalization (emails
//!   lower-cased, phones to E.164 with libphonenumber's rules).

pub mod csv;
pub mod graph;
pub mod identifier;
