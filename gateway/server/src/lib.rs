//! ChatCrafter Gateway's native host: the `gateway` binary's library.
//!
//! - [`plugin`]: the sandboxed WebAssembly plugin host and registry.
//! - [`cli`]: the command-line commands.

pub mod cli;
pub mod plugin;
