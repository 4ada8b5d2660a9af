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
//! Every operation is one atomic unit of work, run by [`Db::unit`] or
//! [`Db::read_unit`] with a [`Ctx`] (what a unit needs besides its
//! transaction: the key table, sealing, random ids, the injected clock,
//! the identity rules); its keys are those of [`crate::store::keys`]. The
//! closure a unit is borrows the transaction for one attempt (an optimistic
//! backend calls it again on conflict); [`crate::store::Scope`] is what lets
//! its future borrow both that transaction and the unit's inputs.

use std::sync::Arc;

use ring::rand::SecureRandom;
use serde::Serialize;

use crate::identity::identifier::Rules;
use crate::seal::{Keyring, SealError};
use crate::store::{Backend, BoxFuture, Keys, StoreError, Txn, Work, get};
use crate::{Clock, Fault};

/// Why an operation on the store failed.
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

/// The gateway's data over a backend (see the module doc).
pub struct Db<B> {
    backend: B,
    clock: Arc<dyn Clock>,
    keys: Arc<Keyring>,
    prefix: String,
    rules: Rules,
    pub(crate) rng: Arc<dyn SecureRandom + Send + Sync>,
    audit_hook: Option<Arc<dyn AuditHook>>,
}

/// Where a change's audit entry comes from: the host says, for the unit
/// about to commit, which entry records it (the admin request it serves),
/// so the entry is written in the same unit as the change, or not at all.
pub trait AuditHook: Send + Sync + std::fmt::Debug {
    /// The entry the next committing write unit must carry, if any.
    fn pending(&self) -> Option<crate::audit::AuditDraft>;
    /// The unit that carried it committed: no other unit carries it.
    fn committed(&self);
}

impl<B: std::fmt::Debug> std::fmt::Debug for Db<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Db<B> {
    /// The data over `backend`, with keys under `prefix`; retentions are
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
            audit_hook: None,
        }
    }

    /// Writes each change's audit entry, as `hook` names it, in the change's
    /// own unit (see [`AuditHook`]).
    pub fn with_audit_hook(mut self, hook: Arc<dyn AuditHook>) -> Self {
        self.audit_hook = Some(hook);
        self
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

/// Everything a unit of work needs besides the transaction.
pub(crate) struct Ctx<'a> {
    /// The injected clock: retentions are written relative to it.
    pub(crate) clock: &'a dyn Clock,
    pub(crate) keys: &'a Keyring,
    pub(crate) prefix: &'a str,
    pub(crate) rules: &'a Rules,
    pub(crate) rng: &'a (dyn SecureRandom + Send + Sync),
}

impl Ctx<'_> {
    pub(crate) fn random_id(&self, tag: &str) -> String {
        let mut b = [0u8; 16];
        self.rng
            .fill(&mut b)
            .expect("the system random number generator failed");
        format!("{tag}_{}", crate::verify::hex_encode(&b))
    }

    /// The key table (see [`crate::store::keys`]).
    pub(crate) fn k(&self) -> Keys<'_> {
        Keys::new(self.prefix, self.keys)
    }

    pub(crate) fn seal<T: Serialize>(&self, key: &str, value: &T) -> Vec<u8> {
        let json = serde_json::to_vec(value).expect("stored records serialize");
        self.keys
            .seal(self.rng, &json, key.as_bytes())
            .expect("the system random number generator failed")
    }

    pub(crate) fn open<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, DbError> {
        let plain = self
            .keys
            .open(bytes, key.as_bytes())
            .map_err(|source| DbError::Seal {
                key: key.to_string(),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| {
            // Not serde's message: it quotes the decrypted value.
            DbError::Store(StoreError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "does not decode ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            })
        })
    }

    /// The sealed value at `key`, or the type's default when there is none
    /// (an index or list not written yet).
    pub(crate) async fn open_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        txn: &mut dyn Txn,
        key: &str,
    ) -> Result<T, DbError> {
        match get(txn, key).await? {
            Some(b) => self.open(key, &b),
            None => Ok(T::default()),
        }
    }

    /// A customer id stored under a lookup key. Ids are random, not
    /// personal data, so they are stored as they are: that lets a known
    /// identity and its profile be read in one round trip.
    pub(crate) fn open_id(&self, key: &str, bytes: &[u8]) -> Result<String, DbError> {
        let id = std::str::from_utf8(bytes)
            .ok()
            .filter(|id| id.starts_with("c_") && id.len() == 34);
        id.map(String::from).ok_or_else(|| {
            DbError::Store(StoreError::Corrupt {
                key: key.to_string(),
                reason: "not a customer id".into(),
            })
        })
    }
}

impl<B: Backend> Db<B> {
    /// Runs `f` as one atomic unit of work, retried by the backend on
    /// conflict (so `f` may run more than once and must only read, decide
    /// and buffer writes). A domain error (anything but the store's own)
    /// ends the unit without writing and is not retried.
    pub(crate) async fn unit<'a, T, F>(&'a self, f: F) -> Result<T, DbError>
    where
        T: Send + 'a,
        F: for<'t> Fn(&'t Ctx<'a>, &'t mut dyn Txn) -> BoxFuture<'t, Result<T, DbError>>
            + Send
            + Sync
            + 'a,
    {
        self.run(f, false).await
    }

    /// [`Db::unit`] for a unit that only reads: on a snapshot of what is
    /// committed, where the backend can do that without taking part in
    /// writes (see [`Backend::read`]).
    pub(crate) async fn read_unit<'a, T, F>(&'a self, f: F) -> Result<T, DbError>
    where
        T: Send + 'a,
        F: for<'t> Fn(&'t Ctx<'a>, &'t mut dyn Txn) -> BoxFuture<'t, Result<T, DbError>>
            + Send
            + Sync
            + 'a,
    {
        self.run(f, true).await
    }

    async fn run<'a, T, F>(&'a self, f: F, read_only: bool) -> Result<T, DbError>
    where
        T: Send + 'a,
        F: for<'t> Fn(&'t Ctx<'a>, &'t mut dyn Txn) -> BoxFuture<'t, Result<T, DbError>>
            + Send
            + Sync
            + 'a,
    {
        let ctx = self.ctx();
        // A change carries the audit entry of the request it serves.
        let audit = match read_only {
            true => None,
            false => self.audit_hook.as_ref().and_then(|h| h.pending()),
        };
        let (ctx, f, audit) = (&ctx, &f, &audit);
        let work: &Work<'_, Result<T, DbError>> = &move |txn, _| {
            Box::pin(async move {
                match f(ctx, txn).await {
                    // The store's own failure: the backend's to retry or report.
                    Err(DbError::Store(e)) => Err(e),
                    Err(e) => {
                        // A domain error: nothing the unit wrote stays.
                        txn.discard();
                        Ok(Err(e))
                    }
                    Ok(v) => {
                        if let Some(draft) = audit {
                            match ctx.append_audit(txn, draft).await {
                                Err(DbError::Store(e)) => return Err(e),
                                Err(e) => {
                                    txn.discard();
                                    return Ok(Err(e));
                                }
                                Ok(_) => {}
                            }
                        }
                        Ok(Ok(v))
                    }
                }
            })
        };
        let out = if read_only {
            self.backend().read(work).await
        } else {
            self.backend().transact(work).await
        };
        if audit.is_some()
            && matches!(out, Ok(Ok(_)))
            && let Some(h) = &self.audit_hook
        {
            h.committed();
        }
        out?
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
