//! ChatCrafter Gateway's product logic, sans I/O.
//!
//! Nothing in this crate opens a socket, reads a clock, spawns a task or runs
//! WebAssembly: hosts (the native `gateway` binary, the Spin component) own
//! those and call in with bytes and times. That is what lets the same code run
//! natively and inside a `wasm32-wasip2` component at the edge, and what lets
//! its tests run without sleeping or networking.
//!
//! - [`agent`]: the built-in agent and the webhook agent's signed envelope.
//! - [`config`]: the one `gateway.toml` struct.
//! - [`verify`]: signatures, handshakes and widget JWTs on raw bytes.
//! - [`channel`]: what a channel plugin declares (its manifest) and the
//!   normalized events it produces, independent of any WIT version.
//! - [`store`]: the unit of work every backend implements, and
//!   [`store::keys`], the one table of every key written.
//! - [`db`]: the gateway's data over a backend; each room below adds its
//!   operations to it.
//! - [`identity`]: resolution, customers, merges, link tokens, conflicts,
//!   the CSV import, sealed with [`seal`].
//! - [`inbound`]: one inbound message recorded as one unit.
//! - [`timeline`] and [`conversation`]: the unified timeline and
//!   per-customer conversation state.
//! - [`jobs`]: the durable job queue — agent answers, deliveries,
//!   statuses, reminders; [`inbox`]: hand-offs to people.
//! - [`quarantine`]: malformed payloads kept for inspection.
//! - [`delivery`]: retry policy and the requests the host sends.

pub mod agent;
pub mod channel;
pub mod config;
pub mod conversation;
pub mod db;
pub mod delivery;
pub mod identity;
pub mod inbound;
pub mod inbox;
pub mod jobs;
pub mod quarantine;
pub mod seal;
pub mod store;
pub mod timeline;
pub mod verify;

/// Whose fault a failure is. Every error type of the core says its own
/// (a `fault()` method), once, where it is defined; hosts map a fault to
/// their own answer (an HTTP status) in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller asked for something wrong or impossible: retrying the
    /// same request cannot help.
    Caller,
    /// A channel plugin failed (trap, deadline, memory cap, bad answer).
    Plugin,
    /// A remote service (a channel API, the business's agent) failed.
    Upstream,
    /// The store is unreachable or busy: retrying later may succeed.
    Store,
    /// A bug, or a stored record that is unreadable: ours, not retryable.
    Gateway,
}

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

/// A clock that reads what it was set to: for tests and simulations, so
/// that time moves only when they move it.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock reading `ms` milliseconds since the Unix epoch.
    pub fn at_ms(ms: u64) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(ms))
    }

    /// Sets it to `ms`.
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Formats Unix seconds as RFC 3339 UTC, e.g. `2026-11-25T23:23:46Z`.
pub fn rfc3339(secs: u64) -> String {
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's
    // public-domain description of the algorithm.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_649_026), "2026-11-25T23:23:46Z");
    }
}
