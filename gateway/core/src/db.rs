//! [`Db`]: the gateway's data over one store backend. It is only a
//! handle; each room adds its own operations to it, in its own file:
//!
//! - [`crate::identity`]: resolution, customers, merges and undo, link
//!   tokens, conflicts, the CSV import;
//! - [`crate::inbound`]: recording one inbound message;
//! - [`crate::timeline`]: the unified timeline;
//! - [`crate::jobs`]: the durable queue — agent turns, deliveries and their
//!   statuses, reminders;
//! - [`crate::inbox`]: hand-offs to people;
//! - [`crate::quarantine`]: malformed payloads kept for inspection.
//!
//! Every operation is one atomic unit of work (see [`crate::store::unit`])
//! whose keys are those of [`crate::store::keys`].

use ring::rand::SecureRandom;

use crate::identity::*;
use crate::seal::{Keyring, SealError};
use crate::store::unit::Ctx;
use crate::store::{Backend, StoreError};
use crate::{Clock, Fault};
use std::sync::Arc;

/// Why a graph operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sealed value did not open.
    #[error("sealed value at `{key}` does not open")]
    Seal {
        /// Where it is stored.
        key: String,
        /// Why it does not open.
        #[source]
        source: SealError,
    },
    /// A queued job's own record does not open or decode: it can never run.
    #[error("job {id} cannot be read")]
    UnreadableJob {
        /// The job.
        id: String,
        /// Why.
        #[source]
        source: Box<DbError>,
    },
    /// No such customer, merge or conflict.
    #[error("{0} not found")]
    NotFound(String),
    /// The merge would break an identifier limit.
    #[error("merging would give the customer {count} {kind} identifiers; the limit is {limit}")]
    Limit {
        /// Identifier kind.
        kind: &'static str,
        /// Resulting count.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

impl DbError {
    /// Whose fault it is: the one place a store-level error is classified.
    pub fn fault(&self) -> Fault {
        match self {
            DbError::Store(e) => e.fault(),
            DbError::Seal { .. } | DbError::UnreadableJob { .. } => Fault::Gateway,
            DbError::NotFound(_) | DbError::Limit { .. } | DbError::Invalid(_) => Fault::Caller,
        }
    }

    /// Whether trying again later may succeed (the store was unreachable
    /// or busy), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        self.fault() == Fault::Store
    }

    /// Whether a stored record is unreadable (corrupt, not merely sealed
    /// with a key this node lacks): retrying cannot help.
    fn is_corrupt_record(&self) -> bool {
        matches!(
            self,
            DbError::Seal {
                source: SealError::Corrupt,
                ..
            } | DbError::Store(StoreError::Corrupt { .. })
        )
    }

    /// `self`, as a job's own record being unreadable when it is a corrupt
    /// record (see [`DbError::UnreadableJob`]).
    pub(crate) fn for_job(self, id: &str) -> DbError {
        if self.is_corrupt_record() {
            DbError::UnreadableJob {
                id: id.to_string(),
                source: Box::new(self),
            }
        } else {
            self
        }
    }
}

/// The identity graph over a backend.
pub struct Db<B> {
    backend: B,
    clock: Arc<dyn Clock>,
    keys: Arc<Keyring>,
    prefix: String,
    rules: Rules,
    pub(crate) rng: Arc<dyn SecureRandom + Send + Sync>,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Db<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Db<B> {
    /// A graph over `backend`, with keys under `prefix`; retentions are
    /// written relative to `clock`.
    pub fn new(
        backend: B,
        clock: Arc<dyn Clock>,
        keys: Arc<Keyring>,
        prefix: &str,
        rules: Rules,
        rng: Arc<dyn SecureRandom + Send + Sync>,
    ) -> Self {
        Db {
            backend,
            clock,
            keys,
            prefix: prefix.to_string(),
            rules,
            rng,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            clock: &*self.clock,
            keys: &self.keys,
            prefix: &self.prefix,
            rules: &self.rules,
            rng: &*self.rng,
        }
    }
}

/// A [`Db`] on the in-memory backend, for the rooms' unit tests: a fixed
/// keyring, a [`crate::ManualClock`] the test moves, and helpers that run
/// a unit of work to completion (the memory backend never waits).
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::ManualClock;
    use crate::channel::{ChannelIdentity, Claim, ClaimKind, Content, InboundMessage};
    use crate::identity::{Rules, Sender};
    use crate::seal::Keyring;
    use crate::store::memory::Memory;

    use super::Db;

    /// 2026-11-25T00:00:00Z, a fixed instant; nothing compares it with
    /// the wall clock.
    pub(crate) const T0: u64 = 1_795_564_800;

    pub(crate) fn db(rules: Rules) -> (Db<Memory>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at_ms(T0 * 1000));
        let keys = Keyring::new(
            Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="),
            Some("AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="),
        )
        .expect("test keys");
        let db = Db::new(
            Memory::new(),
            clock.clone(),
            Arc::new(keys),
            "t:",
            rules,
            Arc::new(ring::rand::SystemRandom::new()),
        );
        (db, clock)
    }

    /// Runs a future that never waits (every unit on [`Memory`]).
    pub(crate) fn run<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("a unit on the memory backend waited"),
        }
    }

    pub(crate) fn claim(kind: ClaimKind, value: &str, verified: bool) -> Claim {
        Claim {
            kind,
            value: value.into(),
            verified,
        }
    }

    pub(crate) fn sender(channel: &str, id: &str, claims: Vec<Claim>, at: u64) -> Sender {
        Sender {
            identity: ChannelIdentity {
                channel: channel.into(),
                scope: "scope".into(),
                id: id.into(),
            },
            display_name: None,
            claims,
            link_token: None,
            at,
        }
    }

    pub(crate) fn message(s: &Sender, provider_id: &str, text: &str) -> InboundMessage {
        InboundMessage {
            provider_message_id: provider_id.into(),
            sender: s.identity.clone(),
            display_name: s.display_name.clone(),
            claims: s.claims.clone(),
            content: Content::Text { text: text.into() },
            link_token: s.link_token.clone(),
            timestamp: s.at,
            edited: false,
            reply_handle: None,
        }
    }
}
