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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use ring::rand::SecureRandom;
use serde::Serialize;

use crate::identity::identifier::Rules;
use crate::seal::{CustomerKey, Keyring, SealError, Sealer, sealer};
use crate::store::{Backend, BoxFuture, Keys, Scope, StoreError, Txn, Work, get};
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
    /// A unit needs a customer's own key that this node has not loaded:
    /// [`Db`] loads (or, for `create`, makes) it and runs the unit again.
    /// It never leaves [`Db`].
    #[error("the key of customer {customer} is not loaded")]
    CustomerKeyNeeded {
        /// Whose key.
        customer: String,
        /// Whether a key may be made when the customer has none (to seal).
        create: bool,
    },
}

impl DbError {
    /// Whose fault it is: the one place a store-level error is classified.
    pub fn fault(&self) -> Fault {
        match self {
            DbError::Store(e) => e.fault(),
            DbError::Seal { .. }
            | DbError::UnreadableJob { .. }
            | DbError::CustomerKeyNeeded { .. } => Fault::Gateway,
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
                source: SealError::Corrupt | SealError::Shredded(_),
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
    customer_keys: Arc<KeyCache>,
    vault: Option<B>,
}

/// How many customers' unwrapped keys a node keeps in memory.
const KEY_CACHE_ENTRIES: usize = 16_384;

/// Customers' own keys, unwrapped, most recently used kept (every unit
/// of one node shares it; a miss costs one read of the key vault).
struct KeyCache(Mutex<lru::LruCache<String, Arc<CustomerKey>>>);

impl KeyCache {
    fn new() -> Self {
        KeyCache(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(KEY_CACHE_ENTRIES).expect("nonzero"),
        )))
    }

    fn get(&self, id: &str) -> Option<Arc<CustomerKey>> {
        self.0.lock().expect("key cache").get(id).cloned()
    }

    fn put(&self, id: &str, key: Arc<CustomerKey>) {
        self.0.lock().expect("key cache").put(id.to_string(), key);
    }

    fn forget(&self, id: &str) {
        self.0.lock().expect("key cache").pop(id);
    }
}

/// A key made in this call: the key, and its wrapped bytes to store.
type FreshKey = (Arc<CustomerKey>, Vec<u8>);

/// What one call of a unit keeps across its attempts: the customer keys it
/// made (written with its commit when the vault is the store itself) and
/// the random ids it drew, drawn again in the same order on a retry, so a
/// retried unit names the customer it made the same way.
#[derive(Default)]
pub(crate) struct Run {
    fresh: Mutex<HashMap<String, FreshKey>>,
    used_fresh: Mutex<BTreeSet<String>>,
    ids: Mutex<(Vec<String>, usize)>,
    /// The key this attempt missed (whatever the unit made of the error).
    needed: Mutex<Option<(String, bool)>>,
    /// Customers whose key is gone (erased): their records do not open.
    shredded: Mutex<BTreeSet<String>>,
}

impl Run {
    fn new_attempt(&self) {
        self.used_fresh.lock().expect("run").clear();
        self.ids.lock().expect("run").1 = 0;
        *self.needed.lock().expect("run") = None;
    }
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
            customer_keys: Arc::new(KeyCache::new()),
            vault: None,
        }
    }

    /// Keeps customers' keys in `vault` (another store of the same kind)
    /// instead of beside their data: a copy of the data store — an AOF or
    /// RDB file, a backup — then holds nothing that opens an erased
    /// customer's records, even with the configured data key.
    pub fn with_vault(mut self, vault: B) -> Self {
        self.vault = Some(vault);
        self
    }

    /// Where customers' keys are kept: the vault, or the data store.
    pub(crate) fn vault(&self) -> &B {
        self.vault.as_ref().unwrap_or(&self.backend)
    }

    /// Whether customers' keys are kept in a store of their own.
    pub fn has_separate_vault(&self) -> bool {
        self.vault.is_some()
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

    /// The data keys and the index key.
    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// What every key starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Now, by the injected clock (Unix seconds).
    pub(crate) fn now_secs(&self) -> u64 {
        self.clock.now_secs()
    }

    pub(crate) fn ctx(&self, run: Arc<Run>) -> Ctx<'_> {
        Ctx {
            clock: &*self.clock,
            keys: &self.keys,
            prefix: &self.prefix,
            rules: &self.rules,
            rng: &*self.rng,
            customer_keys: &self.customer_keys,
            run,
        }
    }

    /// Loads `customer`'s key into this node's cache from the vault, or
    /// makes one when there is none and `create` (a unit about to seal for
    /// a new customer): kept with the unit's commit when the vault is the
    /// store itself, else written to the vault first. A key that is gone
    /// without `create` is a shredded customer's.
    async fn load_customer_key(
        &self,
        customer: &str,
        create: bool,
        run: &Run,
    ) -> Result<(), DbError> {
        let k = Keys::new(&self.prefix, &self.keys);
        let vkey = k.customer_key(customer);
        let found = read_plain(self.vault(), &vkey).await?;
        let key = match found {
            Some(wrapped) => unwrap_key(&self.keys, &vkey, &wrapped)?,
            None if !create => {
                // Gone: the unit runs again and sees its records as
                // shredded (a job of theirs is then dropped, not retried).
                run.shredded
                    .lock()
                    .expect("run")
                    .insert(customer.to_string());
                return Ok(());
            }
            None => {
                let (key, raw) =
                    CustomerKey::generate(&*self.rng).map_err(|source| DbError::Seal {
                        key: vkey.clone(),
                        source,
                    })?;
                let wrapped =
                    self.keys
                        .seal(&*self.rng, &raw, vkey.as_bytes())
                        .map_err(|source| DbError::Seal {
                            key: vkey.clone(),
                            source,
                        })?;
                match &self.vault {
                    Some(vault) => {
                        // Put if absent: another node may have made it.
                        let stored = put_if_absent(vault, &vkey, wrapped).await?;
                        unwrap_key(&self.keys, &vkey, &stored)?
                    }
                    None => {
                        let key = Arc::new(key);
                        run.fresh
                            .lock()
                            .expect("run")
                            .insert(customer.to_string(), (key, wrapped));
                        return Ok(());
                    }
                }
            }
        };
        self.customer_keys.put(customer, Arc::new(key));
        Ok(())
    }

    /// Loads the keys of `customers` this node lacks into its cache in one
    /// read of the key vault (a scan over many customers' records, which
    /// would otherwise run once per key it misses). Customers without a
    /// key (erased) are skipped: their records no longer open.
    pub(crate) async fn warm_customer_keys(&self, customers: &[&str]) -> Result<(), DbError> {
        let k = Keys::new(&self.prefix, &self.keys);
        let missing: Vec<&str> = customers
            .iter()
            .copied()
            .filter(|c| self.customer_keys.get(c).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let vkeys: Vec<String> = missing.iter().map(|c| k.customer_key(c)).collect();
        let vkeys = &vkeys;
        let work: &Work<'_, Vec<Option<Vec<u8>>>> =
            &move |txn, _: Scope<'_, '_>| Box::pin(txn.get_many(vkeys));
        let found = self.vault().read(work).await?;
        for ((customer, vkey), wrapped) in missing.iter().zip(vkeys).zip(found) {
            if let Some(wrapped) = wrapped {
                let key = unwrap_key(&self.keys, vkey, &wrapped)?;
                self.customer_keys.put(customer, Arc::new(key));
            }
        }
        Ok(())
    }

    /// Destroys the keys of `customers` in the vault and this node's
    /// cache: whatever is still sealed under them, anywhere, no longer
    /// opens. Returns how many keys there were.
    pub(crate) async fn shred_keys(&self, customers: &[String]) -> Result<usize, DbError> {
        let k = Keys::new(&self.prefix, &self.keys);
        let keys: Vec<String> = customers.iter().map(|c| k.customer_key(c)).collect();
        let keys = &keys;
        let work: &Work<'_, usize> = &move |txn, _| {
            Box::pin(async move {
                let found = txn.get_many(keys).await?;
                for key in keys {
                    txn.delete(key);
                }
                Ok(found.iter().filter(|v| v.is_some()).count())
            })
        };
        let n = self.vault().transact(work).await?;
        for c in customers {
            self.customer_keys.forget(c);
        }
        Ok(n)
    }
}

fn unwrap_key(keys: &Keyring, vkey: &str, wrapped: &[u8]) -> Result<CustomerKey, DbError> {
    keys.open(wrapped, vkey.as_bytes())
        .and_then(|raw| CustomerKey::from_bytes(&raw))
        .map_err(|source| DbError::Seal {
            key: vkey.to_string(),
            source,
        })
}

async fn read_plain<B: Backend>(backend: &B, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let work: &Work<'_, Option<Vec<u8>>> = &move |txn, _: Scope<'_, '_>| Box::pin(get(txn, key));
    backend.read(work).await
}

async fn put_if_absent<B: Backend>(
    backend: &B,
    key: &str,
    value: Vec<u8>,
) -> Result<Vec<u8>, StoreError> {
    let value = &value;
    let work: &Work<'_, Vec<u8>> = &move |txn, _| {
        Box::pin(async move {
            match get(txn, key).await? {
                Some(v) => Ok(v),
                None => {
                    txn.put(key, value.clone());
                    Ok(value.clone())
                }
            }
        })
    };
    backend.transact(work).await
}

/// Everything a unit of work needs besides the transaction.
pub(crate) struct Ctx<'a> {
    /// The injected clock: retentions are written relative to it.
    pub(crate) clock: &'a dyn Clock,
    pub(crate) keys: &'a Keyring,
    pub(crate) prefix: &'a str,
    pub(crate) rules: &'a Rules,
    pub(crate) rng: &'a (dyn SecureRandom + Send + Sync),
    customer_keys: &'a KeyCache,
    run: Arc<Run>,
}

/// The customer whose own key seals the record at `key`: the id in its
/// `{c:ID}` hash tag (the key table's per-customer keys).
pub(crate) fn owner_of_key(key: &str) -> Option<&str> {
    let start = key.find("{c:")? + 3;
    let len = key[start..].find('}')?;
    Some(&key[start..start + len])
}

impl Ctx<'_> {
    /// A random id, `tag_` + 32 hex digits. The n-th id a unit draws is
    /// the same on every attempt of one call (see [`Run`]).
    pub(crate) fn random_id(&self, tag: &str) -> String {
        let mut ids = self.run.ids.lock().expect("run");
        let (drawn, next) = &mut *ids;
        let prefix = format!("{tag}_");
        if let Some(id) = drawn.get(*next).filter(|id| id.starts_with(&prefix)) {
            let id = id.clone();
            *next += 1;
            return id;
        }
        let mut b = [0u8; 16];
        self.rng
            .fill(&mut b)
            .expect("the system random number generator failed");
        let id = format!("{prefix}{}", crate::verify::hex_encode(&b));
        drawn.truncate(*next);
        drawn.push(id.clone());
        *next += 1;
        id
    }

    /// `customer`'s own key, if this node has it (or made it in this
    /// call); otherwise the error that has [`Db`] load it and run again.
    fn customer_key(&self, customer: &str, create: bool) -> Result<Arc<CustomerKey>, DbError> {
        if let Some(k) = self.customer_keys.get(customer) {
            return Ok(k);
        }
        if self.run.shredded.lock().expect("run").contains(customer) {
            return Err(DbError::Seal {
                key: self.k().customer_key(customer),
                source: SealError::Shredded(customer.to_string()),
            });
        }
        if let Some((k, _)) = self.run.fresh.lock().expect("run").get(customer) {
            self.run
                .used_fresh
                .lock()
                .expect("run")
                .insert(customer.to_string());
            return Ok(k.clone());
        }
        *self.run.needed.lock().expect("run") = Some((customer.to_string(), create));
        Err(DbError::CustomerKeyNeeded {
            customer: customer.to_string(),
            create,
        })
    }

    /// Writes, with this attempt's commit, the customer keys it made and
    /// used (when the vault is the store itself). A key another unit made
    /// meanwhile wins: this attempt loads it and runs again.
    async fn keep_fresh_keys(&self, txn: &mut dyn Txn) -> Result<(), DbError> {
        let used: Vec<String> = self
            .run
            .used_fresh
            .lock()
            .expect("run")
            .iter()
            .cloned()
            .collect();
        for customer in used {
            let vkey = self.k().customer_key(&customer);
            if get(txn, &vkey).await?.is_some() {
                self.run.fresh.lock().expect("run").remove(&customer);
                return Err(DbError::CustomerKeyNeeded {
                    customer,
                    create: true,
                });
            }
            let wrapped = self.run.fresh.lock().expect("run")[&customer].1.clone();
            txn.put(&vkey, wrapped);
        }
        Ok(())
    }

    /// The key table (see [`crate::store::keys`]).
    pub(crate) fn k(&self) -> Keys<'_> {
        Keys::new(self.prefix, self.keys)
    }

    /// Seals `value` for `key`: under its customer's own key when the key
    /// is one of a customer's (`{c:ID}`), else under the data key.
    pub(crate) fn seal<T: Serialize>(&self, key: &str, value: &T) -> Result<Vec<u8>, DbError> {
        match owner_of_key(key) {
            Some(customer) => self.seal_for(customer, key, value),
            None => {
                let json = serde_json::to_vec(value).expect("stored records serialize");
                Ok(self
                    .keys
                    .seal(self.rng, &json, key.as_bytes())
                    .expect("the system random number generator failed"))
            }
        }
    }

    /// Seals `value` for `key` under `customer`'s own key (a record of
    /// theirs whose key does not name them: an outbound message, a job, a
    /// link token, a merge record).
    pub(crate) fn seal_for<T: Serialize>(
        &self,
        customer: &str,
        key: &str,
        value: &T,
    ) -> Result<Vec<u8>, DbError> {
        let ck = self.customer_key(customer, true)?;
        let json = serde_json::to_vec(value).expect("stored records serialize");
        Ok(ck
            .seal(self.rng, customer, &json, key.as_bytes())
            .expect("the system random number generator failed"))
    }

    /// Opens the record at `key`, with the key its envelope names.
    pub(crate) fn open<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, DbError> {
        let opened = match sealer(bytes) {
            Some(Sealer::Customer(customer)) => self
                .customer_key(customer, false)?
                .open(bytes, key.as_bytes()),
            _ => self.keys.open(bytes, key.as_bytes()),
        };
        let plain = opened.map_err(|source| DbError::Seal {
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
        let run = Arc::new(Run::default());
        let ctx = self.ctx(run.clone());
        // A change carries the audit entry of the request it serves.
        let audit = match read_only {
            true => None,
            false => self.audit_hook.as_ref().and_then(|h| h.pending()),
        };
        let (ctx, f, audit) = (&ctx, &f, &audit);
        let work: &Work<'_, Result<T, DbError>> = &move |txn, _| {
            Box::pin(async move {
                ctx.run.new_attempt();
                let out = match f(ctx, txn).await {
                    Ok(v) => ctx.keep_fresh_keys(txn).await.map(|()| v),
                    e => e,
                };
                // A missed key ends the attempt, even where the unit took
                // the error for something else.
                let needed = ctx.run.needed.lock().expect("run").take();
                let out = match needed {
                    Some((customer, create)) => {
                        txn.discard();
                        return Ok(Err(DbError::CustomerKeyNeeded { customer, create }));
                    }
                    None => out,
                };
                match out {
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
        // A unit that needs a customer's key this node lacks ends without
        // writing; the key is loaded (or made) and the unit runs again.
        // Each customer is loaded at most twice per call (again only when
        // another node made their key first), so this ends; a unit that
        // touches many uncached customers (an inbox listing after a
        // restart) runs once per customer loaded.
        let mut loaded: HashMap<String, u8> = HashMap::new();
        let out = loop {
            let out = if read_only {
                self.backend().read(work).await
            } else {
                self.backend().transact(work).await
            };
            match out {
                Ok(Err(DbError::CustomerKeyNeeded { customer, create }))
                    if loaded.len() < KEY_CACHE_ENTRIES / 2 && {
                        let n = loaded.entry(customer.clone()).or_default();
                        *n += 1;
                        *n <= 2
                    } =>
                {
                    self.load_customer_key(&customer, create && !read_only, &run)
                        .await?;
                }
                out => break out,
            }
        };
        if matches!(out, Ok(Ok(_))) {
            // Only the keys the committed attempt wrote: one made for an
            // attempt that did not commit exists nowhere else.
            let written = run.used_fresh.lock().expect("run").clone();
            for (customer, (key, _)) in run.fresh.lock().expect("run").drain() {
                if written.contains(&customer) {
                    self.customer_keys.put(&customer, key);
                }
            }
        }
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
            contents: vec![Content::Text { text: text.into() }],
            referral: None,
            link_token: s.link_token.clone(),
            timestamp: s.at,
            edited: false,
            reply_handle: None,
        }
    }
}
