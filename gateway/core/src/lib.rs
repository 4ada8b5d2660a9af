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
//! - [`audit`]: the hash-chained audit log of reads and changes.
//! - [`quarantine`]: malformed payloads kept for inspection.
//! - [`delivery`]: retry policy and the requests the host sends.

pub mod agent;
pub mod analytics;
pub mod audit;
pub mod change;
pub mod channel;
pub mod config;
pub mod conversation;
pub mod db;
pub mod delivery;
pub mod erasure;
pub mod identity;
pub mod inbound;
pub mod inbox;
pub mod jobs;
pub mod quarantine;
pub mod receipt;
pub mod rekey;
pub mod retention;
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

/// Unix seconds of an RFC 3339 time (`2026-11-30T12:00:00Z`, with an
/// optional fraction, `Z` or a `±HH:MM` offset); `None` for anything else
/// or a time before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian), after Howard Hinnant's
    // public-domain description of the algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn rfc3339_parses_what_it_formats_and_offsets() {
        for t in [0u64, 951_782_400, 1_764_460_800, 4_102_444_799] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(t)), Some(t));
        }
        assert_eq!(
            super::parse_rfc3339("2026-11-30T13:00:00+01:00"),
            super::parse_rfc3339("2026-11-30T12:00:00Z")
        );
        assert_eq!(
            super::parse_rfc3339("2026-11-30T12:00:00.250Z"),
            super::parse_rfc3339("2026-11-30T12:00:00Z")
        );
        for bad in [
            "2026-11-30",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-30T12:00:00",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_649_026), "2026-11-25T23:23:46Z");
    }
}
