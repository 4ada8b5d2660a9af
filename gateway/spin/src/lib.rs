//! ChatCrafter Gateway at the edge: the core as a Spin HTTP component.
//!
//! One component binary serves every route of `spin.toml`: each route's
//! `[component.*]` composes one channel's plugin into it (the import
//! `chatcrafter:channel/plugin`) and names its channel in the `channel`
//! variable. A webhook is verified, parsed by the plugin and recorded in
//! the Redis the native gateway shares — the complete inbound unit, and
//! 2xx only once it is stored — and the native workers are woken through
//! Redis pub/sub to send the replies (docs/edge.md).
//!
//! [`edge`] is the logic, over small traits; `component` (built only for
//! wasm32) binds those traits to Spin.

pub mod edge;

#[cfg(target_arch = "wasm32")]
mod component;
