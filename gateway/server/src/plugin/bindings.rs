//! The one `bindgen!` site for `chatcrafter:channel@0.1.0`.
//!
//! When 0.2 ships, 0.1 gets a frozen copy of its WIT and a thin adapter that
//! converts into the core types; the logic is never copied.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "channel-plugin",
    // Calls run on a fiber, so that one running long yields to the server
    // at each epoch tick (see `limits::CALL_DEADLINE_TICKS`).
    exports: { default: async },
});

pub(crate) use exports::chatcrafter::channel::plugin as wit;
