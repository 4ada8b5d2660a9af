//! ChatCrafter Gateway's product logic, sans I/O.
//!
//! Nothing in this crate opens a socket, reads a clock, spawns a task or runs
//! WebAssembly: hosts (the native `gateway` binary, the Spin component) own
//! those and call in with bytes and times. That is what lets the same code run
//! natively and inside a `wasm32-wasip2` component at the edge, and what lets
//! its tests run without sleeping or networking.
//!
//! - [`config`]: the one `gateway.toml` struct.
//! - [`verify`]: signatures, handshakes and widget JWTs on raw bytes.
//! - [`channel`]: what a channel plugin declares (its manifest) and the
//!   normalized events it produces, independent of any WIT version.

pub mod channel;
pub mod config;
pub mod identity;
pub mod seal;
pub mod store;
pub mod verify;

/// Wall-clock time, injected so that tests of expiry and replay windows need
/// no sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}
