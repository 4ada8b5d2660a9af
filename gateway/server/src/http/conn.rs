//! Admission of connections: how many may be open, how long a new one may
//! stay silent, and what a connection over the limit hears.
//!
//! - A connection must send its first byte within
//!   `server.first_byte_timeout_ms`, and its first request within
//!   `server.header_timeout_ms` after that (hyper's own header timeout does
//!   not cover the wait for an HTTP/2 preface), else it is closed. Until its
//!   first request it counts as silent.
//! - At most `server.max_connections` are open, lowered at start-up to what
//!   the file-descriptor limit leaves room for. A connection arriving at the
//!   limit first closes the oldest one that has not sent a byte yet; if none
//!   is silent, it is answered 503 `overloaded` with `Retry-After` (a few
//!   descriptors are kept for that), and closed. `accept` itself never
//!   fails for want of descriptors, so the listener is never stuck in an
//!   error loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

/// Descriptors kept back from connections: the store, Redis, outbound
/// HTTP, the log, plugin files.
const RESERVED_FDS: u64 = 64;

/// Connections over the limit answered at once, at most (more are closed
/// without an answer).
const MAX_OVERFLOW: usize = 256;

/// How long an over-limit connection has to send its request and read the
/// 503.
pub(super) const OVERFLOW_DEADLINE: Duration = Duration::from_secs(2);

/// How long a new connection waits for an evicted one to be gone.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Seconds a refused client is told to wait.
pub(super) const RETRY_AFTER_SECONDS: u64 = 1;

/// The limits as they apply to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Connections served at once.
    pub(super) open: usize,
    /// Over-limit connections answered 503 at once.
    pub(super) overflow: usize,
}

impl Limits {
    /// `configured` connections, within what `nofile` descriptors allow
    /// (`None`: unlimited).
    pub(super) fn within(configured: u32, nofile: Option<u64>) -> Limits {
        let configured = configured as usize;
        let Some(nofile) = nofile else {
            return Limits {
                open: configured,
                overflow: MAX_OVERFLOW,
            };
        };
        let usable = nofile.saturating_sub(RESERVED_FDS).max(2) as usize;
        let overflow = (usable / 8).clamp(1, MAX_OVERFLOW);
        Limits {
            open: configured.min(usable - overflow).max(1),
            overflow,
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one (as Go's runtime
/// does) and returns the soft limit now in force; `None` when unlimited.
pub(super) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            lim = raised;
        }
    }
    lim.current
}

/// What a new connection gets.
#[derive(Debug)]
pub(super) enum Admission {
    /// Served; the slot is given back when dropped.
    Open(Slot),
    /// Answered 503 and closed; the slot is given back when dropped.
    Overflow(OverflowSlot),
    /// Closed at once: even the over-limit answers are all in use.
    Refused,
}

/// Counts open connections and knows the silent ones.
#[derive(Debug)]
pub(super) struct Gate {
    limits: Limits,
    open: AtomicUsize,
    overflow: AtomicUsize,
    next_id: AtomicU64,
    /// Connections that have not sent a byte yet, oldest first.
    silent: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    /// Told whenever an admitted connection is gone.
    closed: Notify,
}

impl Gate {
    pub(super) fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            open: AtomicUsize::new(0),
            overflow: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            silent: Mutex::new(BTreeMap::new()),
            closed: Notify::new(),
        })
    }

    /// Connections open now (served, not over the limit).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a new connection. At the limit it closes the oldest silent
    /// connection and waits (briefly) for it to be gone, so that the
    /// descriptors in use never pass the limit.
    pub(super) async fn admit(self: &Arc<Self>) -> Admission {
        loop {
            let open = self.open.load(Ordering::Acquire);
            if open < self.limits.open {
                if self
                    .open
                    .compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Admission::Open(Slot {
                        gate: self.clone(),
                        id: self.next_id.fetch_add(1, Ordering::Relaxed),
                        spoken: std::sync::atomic::AtomicBool::new(false),
                    });
                }
                continue;
            }
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if !self.evict_oldest_silent() {
                break;
            }
            let _ = tokio::time::timeout(EVICTION_WAIT, closed).await;
        }
        let over = self.overflow.fetch_add(1, Ordering::AcqRel);
        if over < self.limits.overflow {
            return Admission::Overflow(OverflowSlot { gate: self.clone() });
        }
        self.overflow.fetch_sub(1, Ordering::AcqRel);
        Admission::Refused
    }

    /// Tells the oldest silent connection that is still waiting to close;
    /// false when none is.
    fn evict_oldest_silent(&self) -> bool {
        let mut silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, evict)) = silent.pop_first() {
            if evict.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

/// An admitted connection's place.
#[derive(Debug)]
pub(super) struct Slot {
    gate: Arc<Gate>,
    id: u64,
    spoken: std::sync::atomic::AtomicBool,
}

/// Why a connection was closed before its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Silent {
    /// Nothing within `first_byte_timeout_ms`.
    TimedOut,
    /// Closed by the client.
    Closed,
    /// Closed to make room for a newer connection.
    Evicted,
}

impl Slot {
    /// Counts the connection as silent (evictable) until [`Slot::spoke`];
    /// the receiver resolves `Ok` when a newer connection evicts it, and
    /// fails once it has spoken.
    pub(super) fn watch_silent(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if !self.has_spoken() {
            self.silent().insert(self.id, tx);
        }
        rx
    }

    /// The connection's first request reached the service: it is no
    /// longer silent.
    pub(super) fn spoke(&self) {
        if !self.spoken.swap(true, Ordering::AcqRel) {
            self.silent().remove(&self.id);
        }
    }

    /// Whether a request has reached the service.
    pub(super) fn has_spoken(&self) -> bool {
        self.spoken.load(Ordering::Acquire)
    }

    /// Waits for the connection's first byte (without reading it), at
    /// most `timeout`, unless `evicted` says a newer connection needs the
    /// place.
    pub(super) async fn first_byte(
        &self,
        stream: &TcpStream,
        timeout: Duration,
        evicted: &mut oneshot::Receiver<()>,
    ) -> Result<(), Silent> {
        let mut byte = [0u8; 1];
        tokio::select! {
            peeked = tokio::time::timeout(timeout, stream.peek(&mut byte)) => match peeked {
                Ok(Ok(n)) if n > 0 => Ok(()),
                Ok(_) => Err(Silent::Closed),
                Err(_) => Err(Silent::TimedOut),
            },
            _ = evicted => Err(Silent::Evicted),
        }
    }

    fn silent(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        self.gate.silent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.silent().remove(&self.id);
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        self.gate.closed.notify_waiters();
    }
}

/// An over-limit connection's place.
#[derive(Debug)]
pub(super) struct OverflowSlot {
    gate: Arc<Gate>,
}

impl Drop for OverflowSlot {
    fn drop(&mut self) {
        self.gate.overflow.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Logs failed `accept`s at most once per interval, with how many there
/// were, instead of once per failure.
#[derive(Debug)]
pub(super) struct AcceptErrors {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    pub(super) fn new(every: Duration) -> Self {
        AcceptErrors {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// Records one failure; returns how many to report now, if it is time.
    pub(super) fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every);
        due.then(|| {
            self.last = Some(now);
            std::mem::take(&mut self.unlogged)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_room_for_the_reserve_and_the_overflow_answers() {
        assert_eq!(
            Limits::within(20_000, Some(256)),
            Limits {
                open: 168,
                overflow: 24
            }
        );
        assert_eq!(
            Limits::within(20_000, Some(1_048_576)),
            Limits {
                open: 20_000,
                overflow: 256
            }
        );
        assert_eq!(Limits::within(100, None).open, 100);
        // A limit too small for the reserve still serves one connection.
        assert_eq!(Limits::within(100, Some(10)).open, 1);
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_silent_connection_makes_room() {
        let gate = Gate::new(Limits {
            open: 2,
            overflow: 1,
        });
        let Admission::Open(a) = gate.admit().await else {
            panic!("under the limit")
        };
        let Admission::Open(_b) = gate.admit().await else {
            panic!("under the limit")
        };
        // `a` waits silently (and closes when told); `b` has spoken.
        let rx = a.watch_silent();
        _b.spoke();
        let closer = tokio::spawn(async move {
            let _ = rx.await;
            drop(a);
        });
        let Admission::Open(_c) = gate.admit().await else {
            panic!("the silent connection makes room")
        };
        closer.await.unwrap();
        assert_eq!(gate.open(), 2, "never more open than the limit");
        // Nobody silent now: over the limit is answered, then refused.
        let Admission::Overflow(o) = gate.admit().await else {
            panic!("over the limit is answered 503")
        };
        assert!(matches!(gate.admit().await, Admission::Refused));
        drop(o);
        assert!(matches!(gate.admit().await, Admission::Overflow(_)));
        assert_eq!(gate.open(), 2);
    }

    #[test]
    fn accept_failures_are_logged_once_per_interval_with_their_count() {
        let mut errors = AcceptErrors::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(errors.failed(t0), Some(1));
        assert_eq!(errors.failed(t0 + Duration::from_secs(1)), None);
        assert_eq!(errors.failed(t0 + Duration::from_secs(2)), None);
        assert_eq!(errors.failed(t0 + Duration::from_secs(10)), Some(3));
    }
}
