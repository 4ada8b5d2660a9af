//! The `bindgen!` sites, one per contract version the host serves: the
//! current `chatcrafter:channel@0.2.0` (`wit/`) and the frozen `@0.1.0`
//! (`wit/0.1/`). Each converts into the core's types (`convert`); nothing
//! past the conversion knows which version a plugin speaks.

/// `chatcrafter:channel@0.2.0`, the current version.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "channel-plugin",
        // Calls run on a fiber, so that one running long yields to the
        // server at each epoch tick (see `limits::CALL_DEADLINE_TICKS`).
        exports: { default: async },
    });

    pub(crate) use exports::chatcrafter::channel::plugin as wit;
}

/// `chatcrafter:channel@0.1.0`, frozen: served through its converter.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/0.1",
        world: "channel-plugin",
        exports: { default: async },
    });

    pub(crate) use exports::chatcrafter::channel::plugin as wit;
}
