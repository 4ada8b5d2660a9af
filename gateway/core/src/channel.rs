//! Channel plugins as the rest of the product sees them.
//!
//! These types mirror `chatcrafter:channel@0.1.0` (the WIT contract in
//! `wit/`), but they belong to the core: the host converts whatever WIT
//! version a plugin speaks into them, so the pipeline never depends on a
//! plugin ABI. Every type serializes to the JSON that `gateway plugin run`
//! prints.

mod answer;
mod event;
mod manifest;
mod wit_convert;

pub use answer::*;

pub use event::*;
pub use manifest::*;
