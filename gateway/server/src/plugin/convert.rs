//! Conversions between the wasmtime bindings of `chatcrafter:channel@0.1.0`
//! and the core's own types: the core's one converter (shared with the Spin
//! edge), expanded over this host's bindings.

use super::bindings::wit;

chatcrafter_core::plugin_conversions_0_1!();
