//! The identity graph: channel identity → customer, identifier (blind
//! index) → customer, customer → sealed profile. Resolution, merges and
//! their exact undo, link tokens and the conflict queue, written once
//! against [`Txn`] so every backend runs the same rules atomically.
//!
//! Nothing personal is stored in the clear: keys are blind indexes or
//! random ids, and every value is sealed with AES-256-GCM bound to its key.

use std::collections::BTreeMap;
use std::sync::Arc;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::identifier::{BlockedValues, Identifier, IdentifierKind};
use crate::channel::{ChannelIdentity, Claim, ClaimKind, InboundMessage};
use crate::conversation::Entry;
use crate::seal::{Keyring, SealError};
use crate::store::{Backend, BoxFuture, Expiry, Keys, StoreError, Txn, get};
use crate::{Clock, Fault};

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// First seen on this channel identity.
    Channel,
    /// A verified claim matched.
    VerifiedClaim,
    /// A one-time link token.
    LinkToken,
    /// A CSV import row.
    Csv,
    /// An admin merged two customers.
    AdminMerge,
    /// Verified claims showed two customers were one person.
    AutoMerge,
}

/// A channel identity linked to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    /// Channel.
    pub channel: String,
    /// Business-side scope.
    pub scope: String,
    /// The person's id on the channel.
    pub id: String,
    /// Whether the identity was linked on verified evidence.
    pub verified: bool,
    /// Unix seconds.
    pub linked_at: u64,
    /// How.
    pub how: How,
}

/// An identifier linked to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentifier {
    /// Kind and normalized value.
    #[serde(flatten)]
    pub identifier: Identifier,
    /// Unix seconds.
    pub linked_at: u64,
    /// How.
    pub how: How,
}

/// A profile attribute with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// The value.
    pub value: String,
    /// When it was set, Unix seconds.
    pub updated_at: u64,
    /// Where it was set (a channel, `admin`, `csv`).
    pub source: String,
}

/// A customer profile, as stored (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Random id, `c_` + 32 hex digits.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Linked channel identities.
    pub identities: Vec<LinkedIdentity>,
    /// Linked identifiers.
    pub identifiers: Vec<LinkedIdentifier>,
    /// Attributes by name.
    pub attributes: BTreeMap<String, Attribute>,
    /// Set when this customer was merged into another.
    pub merged_into: Option<String>,
    /// Customers merged into this one (their timelines are part of its).
    #[serde(default)]
    pub absorbed: Vec<String>,
}

impl Customer {
    /// Sets an attribute, recording when and from where.
    pub fn set_attribute(&mut self, name: &str, value: &str, source: &str, at: u64) {
        self.attributes.insert(
            name.to_string(),
            Attribute {
                value: value.to_string(),
                updated_at: at,
                source: source.to_string(),
            },
        );
    }
}

/// What a merge moved, so that undo is exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// Random id, `m_` + 32 hex digits.
    pub merge_id: String,
    /// The customer that remains.
    pub surviving: String,
    /// The customer folded into it.
    pub merged: String,
    /// Unix seconds.
    pub at: u64,
    /// Admin or automatic.
    pub how: How,
    /// The surviving customer exactly as it was before.
    pub surviving_before: Customer,
    /// The merged customer exactly as it was before.
    pub merged_before: Customer,
    /// Attribute values the merge dropped (the older of two differing
    /// values); undo brings them back with both customers.
    pub dropped: Vec<DroppedValue>,
    /// Set once undone.
    pub undone_at: Option<u64>,
}

/// A value a merge dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedValue {
    /// The customer that held it.
    pub customer_id: String,
    /// The attribute.
    pub attribute: String,
    /// The value that lost to a more recent one.
    pub value: String,
}

/// An item in the review queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Random id, `k_` + 32 hex digits.
    pub id: String,
    /// Unix seconds.
    pub at: u64,
    /// `limit`, `blocked`, `suggestion` or `attribute`.
    pub kind: String,
    /// The customer the event went to.
    pub customer_id: String,
    /// The other customer involved, if any.
    pub other_customer_id: Option<String>,
    /// What happened, without personal data.
    pub detail: String,
    /// Set once an admin resolved it.
    pub resolved_at: Option<u64>,
}

/// A one-time link token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LinkToken {
    customer_id: String,
    channel: String,
    expires_at: u64,
}

/// What recording an inbound message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The provider id was recorded before: nothing changed.
    Duplicate,
    /// Resolved and appended.
    Stored {
        /// The resolution.
        resolution: Resolution,
        /// The new timeline entry's id.
        entry_id: String,
    },
}

/// How long a provider message id is remembered to drop redeliveries: 7
/// days, the longest retry window the channels document (WhatsApp retries
/// for up to 7 days). An id seen longer ago counts as new.
pub const DEDUP_RETENTION_SECONDS: u64 = 7 * 86_400;

/// How many malformed requests are kept for inspection: the newest 100.
pub const MALFORMED_KEPT: usize = 100;

/// A verified request its plugin refused as malformed, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformed {
    /// The host's request id.
    pub request_id: String,
    /// The channel.
    pub channel: String,
    /// Unix seconds.
    pub at: u64,
    /// The plugin's error.
    pub error: String,
    /// The raw body, as received.
    pub body: Vec<u8>,
}

/// Limits and blocks from `[identity]`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Tried first when linking by claims.
    pub primary: IdentifierKind,
    /// Values never linked.
    pub blocked: BlockedValues,
    /// Max distinct values per kind per customer.
    pub limits: BTreeMap<IdentifierKind, usize>,
    /// Cross-channel attribute overwrites inside this window are flagged, s.
    pub conflict_window: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            primary: IdentifierKind::Email,
            blocked: BlockedValues::default(),
            limits: BTreeMap::from([(IdentifierKind::Email, 3), (IdentifierKind::Phone, 3)]),
            conflict_window: 86_400,
        }
    }
}

/// An inbound sender to resolve.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Who, on which channel.
    pub identity: ChannelIdentity,
    /// Display name, if the channel gave one.
    pub display_name: Option<String>,
    /// What the channel reports about them.
    pub claims: Vec<Claim>,
    /// A link token the message carries.
    pub link_token: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// What resolution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The customer the sender is.
    pub customer_id: String,
    /// Whether a new customer was created.
    pub created: bool,
    /// How the identity was linked this time, if it was new.
    pub linked: Option<How>,
    /// Merges performed.
    pub merges: Vec<String>,
    /// Conflicts recorded.
    pub conflicts: Vec<String>,
}

/// Why a graph operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
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
        source: Box<GraphError>,
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

impl GraphError {
    /// Whose fault it is: the one place a graph error is classified.
    pub fn fault(&self) -> Fault {
        match self {
            GraphError::Store(StoreError::Unavailable(_) | StoreError::Contention(_)) => {
                Fault::Store
            }
            GraphError::Store(StoreError::Corrupt { .. })
            | GraphError::Seal { .. }
            | GraphError::UnreadableJob { .. } => Fault::Gateway,
            GraphError::NotFound(_) | GraphError::Limit { .. } | GraphError::Invalid(_) => {
                Fault::Caller
            }
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
            GraphError::Seal {
                source: SealError::Corrupt,
                ..
            } | GraphError::Store(StoreError::Corrupt { .. })
        )
    }

    /// `self`, as a job's own record being unreadable when it is a corrupt
    /// record (see [`GraphError::UnreadableJob`]).
    pub(crate) fn for_job(self, id: &str) -> GraphError {
        if self.is_corrupt_record() {
            GraphError::UnreadableJob {
                id: id.to_string(),
                source: Box::new(self),
            }
        } else {
            self
        }
    }
}

/// The identity graph over a backend.
pub struct Graph<B> {
    pub(crate) backend: B,
    clock: Arc<dyn Clock>,
    keys: Arc<Keyring>,
    prefix: String,
    rules: Rules,
    rng: Arc<dyn SecureRandom + Send + Sync>,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Graph<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
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

    /// Appends an entry to a customer's own timeline.
    pub(crate) async fn append(
        &self,
        txn: &mut dyn Txn,
        customer: &str,
        mut entry: Entry,
    ) -> Result<(Entry, String), GraphError> {
        entry.id = self.random_id("e");
        let seq_key = self.k().timeline_seq(customer);
        let n: u64 = match get(txn, &seq_key).await? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        let key = self.k().timeline_entry(customer, n);
        txn.put(&key, self.seal(&key, &entry));
        txn.put(&seq_key, (n + 1).to_string().into_bytes());
        Ok((entry, key))
    }

    pub(crate) fn seal<T: Serialize>(&self, key: &str, value: &T) -> Vec<u8> {
        let json = serde_json::to_vec(value).expect("graph records serialize");
        self.keys
            .seal(self.rng, &json, key.as_bytes())
            .expect("the system random number generator failed")
    }

    pub(crate) fn open<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, GraphError> {
        let plain = self
            .keys
            .open(bytes, key.as_bytes())
            .map_err(|source| GraphError::Seal {
                key: key.to_string(),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| {
            GraphError::Store(StoreError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })
        })
    }

    /// The sealed value at `key`, or the type's default when there is none
    /// (an index or list not written yet).
    pub(crate) async fn open_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        txn: &mut dyn Txn,
        key: &str,
    ) -> Result<T, GraphError> {
        match get(txn, key).await? {
            Some(b) => self.open(key, &b),
            None => Ok(T::default()),
        }
    }

    /// A customer id stored under a lookup key. Ids are random, not
    /// personal data, so they are stored as they are: that lets a known
    /// identity and its profile be read in one round trip.
    pub(crate) fn open_id(&self, key: &str, bytes: &[u8]) -> Result<String, GraphError> {
        let id = std::str::from_utf8(bytes)
            .ok()
            .filter(|id| id.starts_with("c_") && id.len() == 34);
        id.map(String::from).ok_or_else(|| {
            GraphError::Store(StoreError::Corrupt {
                key: key.to_string(),
                reason: "not a customer id".into(),
            })
        })
    }

    pub(crate) async fn load_customer(
        &self,
        txn: &mut dyn Txn,
        id: &str,
    ) -> Result<Customer, GraphError> {
        let key = self.k().customer(id);
        let bytes = get(txn, &key)
            .await?
            .ok_or_else(|| GraphError::NotFound(format!("customer {id}")))?;
        self.open(&key, &bytes)
    }

    /// Follows `merged_into` to the customer that stands for `id` now.
    pub(crate) async fn live_customer(
        &self,
        txn: &mut dyn Txn,
        id: &str,
    ) -> Result<Customer, GraphError> {
        let mut c = self.load_customer(txn, id).await?;
        for _ in 0..16 {
            match c.merged_into.clone() {
                Some(next) => c = self.load_customer(txn, &next).await?,
                None => return Ok(c),
            }
        }
        Err(GraphError::Invalid(format!(
            "merge chain from {id} is too long"
        )))
    }

    /// The customer (as it stands now) a lookup key points to.
    pub(crate) async fn owner_of(
        &self,
        txn: &mut dyn Txn,
        key: &str,
    ) -> Result<Option<String>, GraphError> {
        match get(txn, key).await? {
            Some(b) => Ok(Some(
                self.live_customer(txn, &self.open_id(key, &b)?).await?.id,
            )),
            None => Ok(None),
        }
    }

    /// Points every lookup key of `c`'s identities and identifiers at
    /// customer `owner`.
    pub(crate) fn point_links_at(&self, txn: &mut dyn Txn, c: &Customer, owner: &str) {
        for i in &c.identities {
            let identity = ChannelIdentity {
                channel: i.channel.clone(),
                scope: i.scope.clone(),
                id: i.id.clone(),
            };
            self.put_id(txn, &self.k().identity(&identity), owner);
            self.put_id(txn, &self.k().identity_any(&i.channel, &i.id), owner);
        }
        for i in &c.identifiers {
            self.put_id(txn, &self.k().identifier(&i.identifier), owner);
        }
    }

    pub(crate) fn save_customer(&self, txn: &mut dyn Txn, c: &Customer) {
        let key = self.k().customer(&c.id);
        txn.put(&key, self.seal(&key, c));
    }

    pub(crate) fn put_id(&self, txn: &mut dyn Txn, key: &str, id: &str) {
        txn.put(key, id.as_bytes().to_vec());
    }

    pub(crate) fn count(&self, c: &Customer, kind: IdentifierKind) -> usize {
        c.identifiers
            .iter()
            .filter(|i| i.identifier.kind == kind)
            .count()
    }

    pub(crate) fn limit(&self, kind: IdentifierKind) -> usize {
        self.rules.limits.get(&kind).copied().unwrap_or(usize::MAX)
    }

    /// `c`'s unified timeline (its entries and, transitively, those of
    /// every customer merged into it), oldest first.
    pub(crate) async fn timeline_of(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
    ) -> Result<Vec<Entry>, GraphError> {
        self.timeline_tail(txn, c, usize::MAX).await
    }

    /// The last `limit` entries of `c`'s unified timeline, oldest first,
    /// reading no more than `limit` entries per customer merged into it.
    pub(crate) async fn timeline_tail(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
        limit: usize,
    ) -> Result<Vec<Entry>, GraphError> {
        let mut owners = vec![c.id.clone()];
        let mut pending = c.absorbed.clone();
        while let Some(id) = pending.pop() {
            pending.extend(self.load_customer(txn, &id).await?.absorbed);
            owners.push(id);
        }
        let seq_keys: Vec<String> = owners.iter().map(|o| self.k().timeline_seq(o)).collect();
        let counts = txn.get_many(&seq_keys).await?;
        let mut keys = Vec::new();
        for (owner, count) in owners.iter().zip(counts) {
            let n: u64 = count
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                .unwrap_or(0);
            let from = n.saturating_sub(limit as u64);
            keys.extend((from..n).map(|k| self.k().timeline_entry(owner, k)));
        }
        let values = txn.get_many(&keys).await?;
        let mut entries = Vec::new();
        for (k, v) in keys.iter().zip(values) {
            if let Some(v) = v {
                entries.push(self.open::<Entry>(k, &v)?);
            }
        }
        // Stable: entries at the same second keep their stored order.
        entries.sort_by_key(|e| e.at);
        let excess = entries.len().saturating_sub(limit);
        entries.drain(..excess);
        Ok(entries)
    }

    pub(crate) async fn record_conflict(
        &self,
        txn: &mut dyn Txn,
        kind: &str,
        customer: &str,
        other: Option<&str>,
        detail: String,
        at: u64,
    ) -> Result<String, GraphError> {
        let id = self.random_id("k");
        let conflict = Conflict {
            id: id.clone(),
            at,
            kind: kind.to_string(),
            customer_id: customer.to_string(),
            other_customer_id: other.map(String::from),
            detail,
            resolved_at: None,
        };
        let key = self.k().conflict(&id);
        txn.put(&key, self.seal(&key, &conflict));
        let index_key = self.k().conflicts();
        let mut index: Vec<String> = self.open_or_default(txn, &index_key).await?;
        index.push(id.clone());
        txn.put(&index_key, self.seal(&index_key, &index));
        Ok(id)
    }
}

/// Verified claims as identifiers, primary kind first; invalid values are
/// skipped (a channel's claim is not worth failing a message over).
fn identifiers(claims: &[Claim], verified: bool, primary: IdentifierKind) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = claims
        .iter()
        .filter(|c| c.verified == verified)
        .filter_map(|c| {
            let kind = match &c.kind {
                ClaimKind::Email => IdentifierKind::Email,
                ClaimKind::Phone => IdentifierKind::Phone,
                ClaimKind::UserId => IdentifierKind::UserId,
                _ => return None,
            };
            Identifier::new(kind, &c.value).ok()
        })
        .collect();
    out.sort_by_key(|i| (i.kind != primary, i.kind));
    out.dedup();
    out
}

/// Runs `$body` (an expression using `$ctx: &Ctx` and `$txn: &mut dyn Txn`)
/// as one atomic unit of work. Domain errors abort the unit without writing
/// and travel out on the `Ok` side, so the backend never retries them.
///
/// `unit!(read graph, …)` runs a unit that only reads, on a snapshot of
/// what is committed, where the backend can do that without taking part in
/// writes (it fails if the unit writes).
macro_rules! unit {
    (read $graph:expr, |$ctx:ident, $txn:ident| $body:expr) => {
        unit!(@run read, $graph, |$ctx, $txn| $body)
    };
    ($graph:expr, |$ctx:ident, $txn:ident| $body:expr) => {
        unit!(@run transact, $graph, |$ctx, $txn| $body)
    };
    (@run $method:ident, $graph:expr, |$ctx:ident, $txn:ident| $body:expr) => {{
        let ctx_owned = $graph.ctx();
        let ctx_ref = &ctx_owned;
        let work = move |mut boxed: Box<dyn Txn>| -> BoxFuture<
            '_,
            (Box<dyn Txn>, Result<Result<_, GraphError>, StoreError>),
        > {
            Box::pin(async move {
                let result = {
                    let $ctx: &Ctx<'_> = ctx_ref;
                    let $txn: &mut dyn Txn = &mut *boxed;
                    $body.await
                };
                let result = match result {
                    Err(GraphError::Store(e)) => Err(e),
                    Err(e) => {
                        // A domain error: nothing the unit wrote stays.
                        boxed.discard();
                        Ok(Err(e))
                    }
                    ok => Ok(ok),
                };
                (boxed, result)
            })
        };
        $graph.backend.$method(&work).await?
    }};
}

pub(crate) use unit;

impl<B: Backend> Graph<B> {
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
        Graph {
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

    /// Resolves an inbound sender to one customer, atomically: known
    /// identity → link token → verified claims (primary identifier first) →
    /// new customer. Identifier limits and blocked values produce conflicts,
    /// never bad merges; unverified matches become suggestions.
    pub async fn resolve(&self, sender: &Sender) -> Result<Resolution, GraphError> {
        unit!(self, |ctx, txn| resolve_in(ctx, txn, sender))
    }

    /// Merges `merged` into `surviving` (admin or automatic), recording what
    /// moved. Fails with [`GraphError::Limit`] rather than break a limit.
    pub async fn merge(
        &self,
        surviving: &str,
        merged: &str,
        how: How,
        at: u64,
    ) -> Result<MergeRecord, GraphError> {
        if surviving == merged {
            return Err(GraphError::Invalid(
                "a customer cannot be merged into itself".into(),
            ));
        }
        unit!(self, |ctx, txn| merge_in(
            ctx, txn, surviving, merged, how, at
        ))
    }

    /// Reverses a merge exactly: both customers as they were, every moved
    /// identity and identifier pointing back at its owner.
    pub async fn undo(&self, merge_id: &str, at: u64) -> Result<MergeRecord, GraphError> {
        unit!(self, |ctx, txn| undo_in(ctx, txn, merge_id, at))
    }

    /// A customer by id (merged customers are returned as stored, with
    /// `merged_into` set).
    pub async fn customer(&self, id: &str) -> Result<Customer, GraphError> {
        unit!(read self, |ctx, txn| ctx.load_customer(txn, id))
    }

    /// The customer an identifier belongs to.
    pub async fn find(&self, identifier: &Identifier) -> Result<Option<String>, GraphError> {
        unit!(read self, |ctx, txn| ctx
            .owner_of(txn, &ctx.k().identifier(identifier)))
    }

    /// The customer a channel user id belongs to, in any scope.
    pub async fn find_identity(
        &self,
        channel: &str,
        id: &str,
    ) -> Result<Option<String>, GraphError> {
        unit!(read self, |ctx, txn| ctx
            .owner_of(txn, &ctx.k().identity_any(channel, id)))
    }

    /// Issues a one-time link token for `customer_id` on `channel`, valid
    /// for `ttl` seconds. Returns the token (URL-safe, 22 characters).
    pub async fn create_link_token(
        &self,
        customer_id: &str,
        channel: &str,
        ttl: u64,
        at: u64,
    ) -> Result<String, GraphError> {
        let mut raw = [0u8; 16];
        self.rng
            .fill(&mut raw)
            .map_err(|_| GraphError::Invalid("no randomness".into()))?;
        use base64::Engine as _;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let token_ref = &token;
        unit!(self, |ctx, txn| async move {
            let c = ctx.live_customer(txn, customer_id).await?;
            let key = ctx.k().link_token(token_ref);
            let record = LinkToken {
                customer_id: c.id,
                channel: channel.to_string(),
                expires_at: at + ttl,
            };
            txn.put(&key, ctx.seal(&key, &record));
            Ok(())
        })?;
        Ok(token)
    }

    /// Applies one CSV row ("these identifiers are one person"),
    /// atomically. Re-applying a row changes nothing.
    pub async fn import_row(&self, row: &ImportRow, at: u64) -> Result<ImportOutcome, GraphError> {
        unit!(self, |ctx, txn| import_in(ctx, txn, row, at))
    }

    /// Sets attributes (most recent wins); `source` is `admin`, `csv` or a
    /// channel.
    pub async fn set_attributes(
        &self,
        id: &str,
        attrs: &BTreeMap<String, String>,
        source: &str,
        at: u64,
    ) -> Result<Customer, GraphError> {
        unit!(self, |ctx, txn| async move {
            let mut c = ctx.live_customer(txn, id).await?;
            for (k, v) in attrs {
                c.set_attribute(k, v, source, at);
            }
            ctx.save_customer(txn, &c);
            Ok(c)
        })
    }

    /// Records one inbound message atomically: drops it if its provider id
    /// was already recorded (a channel's retry), else resolves the sender
    /// and appends it to the customer's timeline — all or nothing.
    pub async fn record_inbound(&self, message: &InboundMessage) -> Result<Recorded, GraphError> {
        let sender = Sender {
            identity: message.sender.clone(),
            display_name: message.display_name.clone(),
            claims: message.claims.clone(),
            link_token: message.link_token.clone(),
            at: message.timestamp,
        };
        let sender = &sender;
        unit!(self, |ctx, txn| async move {
            let dk = ctx
                .k()
                .dedup(&message.sender.channel, &message.provider_message_id);
            let seen_at = get(txn, &dk)
                .await?
                .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
            if seen_at
                .is_some_and(|t| message.timestamp.saturating_sub(t) < DEDUP_RETENTION_SECONDS)
            {
                return Ok(Recorded::Duplicate);
            }
            let resolution = resolve_in(ctx, txn, sender).await?;
            ctx.prefetch_for_inbound(txn, &resolution.customer_id)
                .await?;
            let entry = Entry::inbound(message, resolution.linked == Some(How::LinkToken));
            let (entry, _) = ctx.append(txn, &resolution.customer_id, entry).await?;
            ctx.after_inbound(txn, &resolution.customer_id, &entry, message)
                .await?;
            txn.put_expiring(
                &dk,
                message.timestamp.to_string().into_bytes(),
                Expiry::until(
                    message.timestamp.saturating_add(DEDUP_RETENTION_SECONDS),
                    ctx.clock.now_secs(),
                ),
            );
            Ok(Recorded::Stored {
                resolution,
                entry_id: entry.id,
            })
        })
    }

    /// A customer's unified timeline — its own entries and those of every
    /// customer merged into it — oldest first.
    pub async fn timeline(&self, customer_id: &str) -> Result<Vec<Entry>, GraphError> {
        unit!(read self, |ctx, txn| async move {
            let c = ctx.live_customer(txn, customer_id).await?;
            ctx.timeline_of(txn, &c).await
        })
    }

    /// Keeps a verified request its plugin could not parse, for an operator
    /// to inspect (sealed like everything else); the newest
    /// [`MALFORMED_KEPT`] are kept.
    pub async fn keep_malformed(&self, item: &Malformed) -> Result<(), GraphError> {
        unit!(self, |ctx, txn| async move {
            let key = ctx.k().malformed();
            let mut list: Vec<Malformed> = ctx.open_or_default(txn, &key).await?;
            list.push(item.clone());
            let excess = list.len().saturating_sub(MALFORMED_KEPT);
            list.drain(..excess);
            txn.put(&key, ctx.seal(&key, &list));
            Ok(())
        })
    }

    /// The kept malformed requests, oldest first.
    pub async fn malformed(&self) -> Result<Vec<Malformed>, GraphError> {
        unit!(read self, |ctx, txn| async move {
            ctx.open_or_default(txn, &ctx.k().malformed()).await
        })
    }

    /// The review queue, oldest first.
    pub async fn conflicts(&self) -> Result<Vec<Conflict>, GraphError> {
        unit!(read self, |ctx, txn| async move {
            let index_key = ctx.k().conflicts();
            let ids: Vec<String> = ctx.open_or_default(txn, &index_key).await?;
            let keys: Vec<String> = ids.iter().map(|id| ctx.k().conflict(id)).collect();
            let values = txn.get_many(&keys).await?;
            let mut out = Vec::new();
            for (k, v) in keys.iter().zip(values) {
                if let Some(v) = v {
                    out.push(ctx.open::<Conflict>(k, &v)?);
                }
            }
            Ok(out)
        })
    }

    /// Marks a conflict resolved.
    pub async fn resolve_conflict(&self, id: &str, at: u64) -> Result<Conflict, GraphError> {
        unit!(self, |ctx, txn| async move {
            let key = ctx.k().conflict(id);
            let bytes = get(txn, &key)
                .await?
                .ok_or_else(|| GraphError::NotFound(format!("conflict {id}")))?;
            let mut c: Conflict = ctx.open(&key, &bytes)?;
            c.resolved_at.get_or_insert(at);
            txn.put(&key, ctx.seal(&key, &c));
            Ok(c)
        })
    }
}

async fn resolve_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    s: &Sender,
) -> Result<Resolution, GraphError> {
    let verified = identifiers(&s.claims, true, ctx.rules.primary);
    let unverified = identifiers(&s.claims, false, ctx.rules.primary);
    let ident_key = ctx.k().identity(&s.identity);
    // One read for everything this decision may need first.
    let mut keys = vec![ident_key.clone()];
    keys.extend(verified.iter().map(|i| ctx.k().identifier(i)));
    keys.extend(unverified.iter().map(|i| ctx.k().identifier(i)));
    let token_key = s.link_token.as_deref().map(|t| ctx.k().link_token(t));
    keys.extend(token_key.clone());
    let any_key = ctx.k().identity_any(&s.identity.channel, &s.identity.id);
    // The identity's customer record comes with the same read.
    let cust_prefix = ctx.k().customer_prefix();
    let (values, _) = txn.get_many_following(&keys, 0, &cust_prefix, "}").await?;
    let mut owners: Vec<Option<String>> = Vec::with_capacity(values.len());
    for (k, v) in keys.iter().zip(&values) {
        owners.push(match v {
            Some(b) if Some(k) != token_key.as_ref() => Some(ctx.open_id(k, b)?),
            _ => None,
        });
    }
    let verified_owners = &owners[1..1 + verified.len()];
    let unverified_owners = &owners[1 + verified.len()..1 + verified.len() + unverified.len()];
    let token_value = token_key.as_ref().and(values.last().cloned().flatten());

    let mut res = Resolution {
        customer_id: String::new(),
        created: false,
        linked: None,
        merges: vec![],
        conflicts: vec![],
    };
    let mut customer: Customer;
    // The record as read; it is written back only if the event changed it.
    let mut original: Option<Customer> = None;
    if let Some(known) = &owners[0] {
        customer = ctx.live_customer(txn, known).await?;
        original = Some(customer.clone());
    } else {
        // A link token the message carries, if valid for this channel.
        let mut by_token = None;
        if let (Some(tk), Some(bytes)) = (&token_key, &token_value) {
            let t: LinkToken = ctx.open(tk, bytes)?;
            if t.channel == s.identity.channel && s.at <= t.expires_at {
                by_token = Some(t.customer_id);
            }
            // One-time: consumed whether or not it could be used.
            txn.delete(tk);
        }
        // The same channel user seen in another scope, or linked by a CSV
        // row before they ever wrote: channel user ids are global.
        let pre_linked = match get(txn, &any_key).await? {
            Some(b) => Some(ctx.open_id(&any_key, &b)?),
            None => None,
        };
        if let Some(id) = by_token {
            customer = ctx.live_customer(txn, &id).await?;
            res.linked = Some(How::LinkToken);
        } else if let Some(id) = pre_linked {
            customer = ctx.live_customer(txn, &id).await?;
            res.linked = Some(How::Csv);
        } else if let Some(id) = verified
            .iter()
            .zip(verified_owners)
            .find(|(i, o)| o.is_some() && !ctx.rules.blocked.contains(i))
            .and_then(|(_, o)| o.clone())
        {
            customer = ctx.live_customer(txn, &id).await?;
            res.linked = Some(How::VerifiedClaim);
        } else {
            customer = Customer {
                id: ctx.random_id("c"),
                created_at: s.at,
                identities: vec![],
                identifiers: vec![],
                attributes: BTreeMap::new(),
                merged_into: None,
                absorbed: Vec::new(),
            };
            res.created = true;
            res.linked = Some(How::Channel);
        }
        customer.identities.push(LinkedIdentity {
            channel: s.identity.channel.clone(),
            scope: s.identity.scope.clone(),
            id: s.identity.id.clone(),
            verified: !matches!(res.linked, Some(How::Channel)) || !verified.is_empty(),
            linked_at: s.at,
            how: res.linked.unwrap_or(How::Channel),
        });
        ctx.put_id(txn, &ident_key, &customer.id);
        ctx.put_id(txn, &any_key, &customer.id);
    }

    // Verified claims: link what is new, merge what belongs to another
    // customer, and record what limits or blocks refuse.
    for (ident, owner) in verified.iter().zip(verified_owners) {
        if ctx.rules.blocked.contains(ident) {
            let id = ctx
                .record_conflict(
                    txn,
                    "blocked",
                    &customer.id,
                    None,
                    format!("a blocked {} value was not linked", ident.kind.as_str()),
                    s.at,
                )
                .await?;
            res.conflicts.push(id);
            continue;
        }
        let owner = match owner {
            Some(o) => Some(ctx.live_customer(txn, o).await?.id),
            None => None,
        };
        match owner {
            Some(o) if o == customer.id => {}
            Some(other) => {
                ctx.save_customer(txn, &customer);
                match merge_in(ctx, txn, &customer.id, &other, How::AutoMerge, s.at).await {
                    Ok(record) => {
                        res.merges.push(record.merge_id);
                        customer = ctx.load_customer(txn, &customer.id).await?;
                    }
                    Err(GraphError::Limit { kind, count, limit }) => {
                        let id = ctx
                            .record_conflict(
                                txn,
                                "limit",
                                &customer.id,
                                Some(&other),
                                format!("a verified {} matches another customer; merging would give {count} {kind} identifiers (limit {limit})", ident.kind.as_str()),
                                s.at,
                            )
                            .await?;
                        res.conflicts.push(id);
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                if ctx.count(&customer, ident.kind) >= ctx.limit(ident.kind) {
                    let id = ctx
                        .record_conflict(
                            txn,
                            "limit",
                            &customer.id,
                            None,
                            format!("a new verified {} was not linked: the customer has the maximum of {}", ident.kind.as_str(), ctx.limit(ident.kind)),
                            s.at,
                        )
                        .await?;
                    res.conflicts.push(id);
                    continue;
                }
                customer.identifiers.push(LinkedIdentifier {
                    identifier: ident.clone(),
                    linked_at: s.at,
                    how: How::VerifiedClaim,
                });
                ctx.put_id(txn, &ctx.k().identifier(ident), &customer.id);
            }
        }
    }

    // Unverified matches never link; they become suggestions.
    for (ident, owner) in unverified.iter().zip(unverified_owners) {
        if let Some(o) = owner {
            let other = ctx.live_customer(txn, o).await?.id;
            if other != customer.id {
                let id = ctx
                    .record_conflict(
                        txn,
                        "suggestion",
                        &customer.id,
                        Some(&other),
                        format!(
                            "an unverified {} matches another customer",
                            ident.kind.as_str()
                        ),
                        s.at,
                    )
                    .await?;
                res.conflicts.push(id);
            }
        }
    }

    if let Some(name) = s.display_name.as_ref().filter(|n| !n.trim().is_empty()) {
        let source = s.identity.channel.as_str();
        let prior = customer.attributes.get("name").cloned();
        let newer = prior
            .as_ref()
            .is_none_or(|a| a.value != *name && a.updated_at <= s.at);
        if newer {
            // Another channel overwriting it moments after it was set.
            if let Some(a) = prior.filter(|a| {
                a.source != source && s.at.saturating_sub(a.updated_at) < ctx.rules.conflict_window
            }) {
                let id = ctx
                    .record_conflict(
                        txn,
                        "attribute",
                        &customer.id,
                        None,
                        format!(
                            "name changed on {source} shortly after it was set on {}",
                            a.source
                        ),
                        s.at,
                    )
                    .await?;
                res.conflicts.push(id);
            }
            customer.set_attribute("name", name, source, s.at);
        }
    }
    if original.as_ref() != Some(&customer) {
        ctx.save_customer(txn, &customer);
    }
    res.customer_id = customer.id;
    Ok(res)
}

async fn merge_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    surviving: &str,
    merged: &str,
    how: How,
    at: u64,
) -> Result<MergeRecord, GraphError> {
    let s = ctx.live_customer(txn, surviving).await?;
    let m = ctx.live_customer(txn, merged).await?;
    if s.id == m.id {
        return Err(GraphError::Invalid(format!(
            "{merged} is already part of {}",
            s.id
        )));
    }
    for kind in [
        IdentifierKind::Email,
        IdentifierKind::Phone,
        IdentifierKind::UserId,
    ] {
        let mut values: Vec<&Identifier> = s
            .identifiers
            .iter()
            .chain(&m.identifiers)
            .map(|i| &i.identifier)
            .filter(|i| i.kind == kind)
            .collect();
        values.sort();
        values.dedup();
        let limit = ctx.limit(kind);
        if values.len() > limit {
            return Err(GraphError::Limit {
                kind: kind.as_str(),
                count: values.len(),
                limit,
            });
        }
    }
    let mut record = MergeRecord {
        merge_id: ctx.random_id("m"),
        surviving: s.id.clone(),
        merged: m.id.clone(),
        at,
        how,
        surviving_before: s.clone(),
        merged_before: m.clone(),
        dropped: Vec::new(),
        undone_at: None,
    };
    let mut s2 = s.clone();
    ctx.point_links_at(txn, &m, &s2.id);
    s2.identities.extend(m.identities.iter().cloned());
    for i in &m.identifiers {
        if !s2.identifiers.iter().any(|x| x.identifier == i.identifier) {
            s2.identifiers.push(i.clone());
        }
    }
    // Attributes: the most recent value wins; the other is recorded.
    for (name, a) in &m.attributes {
        let dropped = match s2.attributes.get(name) {
            Some(cur) if cur.value == a.value => None,
            Some(cur) if cur.updated_at >= a.updated_at => Some((m.id.clone(), a.value.clone())),
            Some(cur) => {
                let lost = (s2.id.clone(), cur.value.clone());
                s2.attributes.insert(name.clone(), a.clone());
                Some(lost)
            }
            None => {
                s2.attributes.insert(name.clone(), a.clone());
                None
            }
        };
        if let Some((customer_id, value)) = dropped {
            record.dropped.push(DroppedValue {
                customer_id,
                attribute: name.clone(),
                value,
            });
        }
    }
    let mut m2 = m.clone();
    m2.merged_into = Some(s2.id.clone());
    s2.absorbed.push(m2.id.clone());
    ctx.save_customer(txn, &s2);
    ctx.save_customer(txn, &m2);
    let key = ctx.k().merge(&record.merge_id);
    txn.put(&key, ctx.seal(&key, &record));
    Ok(record)
}

async fn undo_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    merge_id: &str,
    at: u64,
) -> Result<MergeRecord, GraphError> {
    let key = ctx.k().merge(merge_id);
    let bytes = get(txn, &key)
        .await?
        .ok_or_else(|| GraphError::NotFound(format!("merge {merge_id}")))?;
    let mut record: MergeRecord = ctx.open(&key, &bytes)?;
    if record.undone_at.is_some() {
        return Err(GraphError::Invalid(format!(
            "merge {merge_id} was already undone"
        )));
    }
    let current = ctx.load_customer(txn, &record.surviving).await?;
    if current.merged_into.is_some() {
        return Err(GraphError::Invalid(format!(
            "{} was merged again since; undo that merge first",
            record.surviving
        )));
    }
    // The survivor keeps what it gained since the merge, minus what the
    // merge brought; the merged customer comes back exactly as it was.
    let moved_identities = &record.merged_before.identities;
    let moved_identifiers: Vec<&Identifier> = record
        .merged_before
        .identifiers
        .iter()
        .map(|i| &i.identifier)
        .filter(|i| {
            !record
                .surviving_before
                .identifiers
                .iter()
                .any(|x| &x.identifier == *i)
        })
        .collect();
    let mut s = current.clone();
    s.absorbed.retain(|id| *id != record.merged);
    s.identities.retain(|i| !moved_identities.contains(i));
    s.identifiers
        .retain(|i| !moved_identifiers.contains(&&i.identifier));
    for (name, before) in &record.surviving_before.attributes {
        if let Some(now) = s.attributes.get(name)
            && now.updated_at <= record.at
            && now != before
        {
            s.attributes.insert(name.clone(), before.clone());
        }
    }
    s.attributes.retain(|name, a| {
        record.surviving_before.attributes.contains_key(name) || a.updated_at > record.at
    });
    let m = record.merged_before.clone();
    ctx.point_links_at(txn, &m, &m.id);
    // Identifiers both had before the merge stay with the survivor.
    for i in &record.surviving_before.identifiers {
        ctx.put_id(txn, &ctx.k().identifier(&i.identifier), &s.id);
    }
    ctx.save_customer(txn, &s);
    ctx.save_customer(txn, &m);
    record.undone_at = Some(at);
    txn.put(&key, ctx.seal(&key, &record));
    Ok(record)
}

/// One CSV row, normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRow {
    /// Identifiers (email, phone, user id).
    pub identifiers: Vec<Identifier>,
    /// Channel user ids as `(channel, id)`, linked in any scope.
    pub channel_ids: Vec<(String, String)>,
    /// `customer_name` and `attr:*` columns.
    pub attributes: BTreeMap<String, String>,
}

/// What one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// New links written (identifiers or channel ids).
    pub linked: usize,
    /// Customers merged because the row joined them.
    pub merged: usize,
    /// Conflicts recorded instead of a bad merge.
    pub conflicts: usize,
}

async fn import_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    row: &ImportRow,
    at: u64,
) -> Result<ImportOutcome, GraphError> {
    let mut out = ImportOutcome::default();
    let idx_keys: Vec<String> = row
        .identifiers
        .iter()
        .map(|i| ctx.k().identifier(i))
        .collect();
    let any_keys: Vec<String> = row
        .channel_ids
        .iter()
        .map(|(c, i)| ctx.k().identity_any(c, i))
        .collect();
    let all: Vec<String> = idx_keys.iter().chain(&any_keys).cloned().collect();
    let values = txn.get_many(&all).await?;
    let mut owners: Vec<String> = Vec::new();
    for (k, v) in all.iter().zip(&values) {
        if let Some(b) = v {
            let id = ctx.live_customer(txn, &ctx.open_id(k, b)?).await?.id;
            if !owners.contains(&id) {
                owners.push(id);
            }
        }
    }
    let mut customer = match owners.first() {
        Some(id) => ctx.live_customer(txn, id).await?,
        None => Customer {
            id: ctx.random_id("c"),
            created_at: at,
            identities: vec![],
            identifiers: vec![],
            attributes: BTreeMap::new(),
            merged_into: None,
            absorbed: Vec::new(),
        },
    };
    for other in owners.iter().skip(1) {
        ctx.save_customer(txn, &customer);
        match merge_in(ctx, txn, &customer.id, other, How::Csv, at).await {
            Ok(_) => {
                out.merged += 1;
                customer = ctx.load_customer(txn, &customer.id).await?;
            }
            Err(GraphError::Limit { kind, count, limit }) => {
                ctx.record_conflict(txn, "limit", &customer.id, Some(other), format!("a CSV row joins two customers; merging would give {count} {kind} identifiers (limit {limit})"), at).await?;
                out.conflicts += 1;
            }
            Err(e) => return Err(e),
        }
    }
    for (ident, key) in row.identifiers.iter().zip(&idx_keys) {
        if ctx.rules.blocked.contains(ident) {
            continue;
        }
        if customer.identifiers.iter().any(|i| &i.identifier == ident) {
            continue;
        }
        match get(txn, key).await? {
            Some(_) => continue, // owned by a customer a refused merge kept apart
            None if ctx.count(&customer, ident.kind) >= ctx.limit(ident.kind) => {
                ctx.record_conflict(
                    txn,
                    "limit",
                    &customer.id,
                    None,
                    format!(
                        "a CSV {} was not linked: the customer has the maximum of {}",
                        ident.kind.as_str(),
                        ctx.limit(ident.kind)
                    ),
                    at,
                )
                .await?;
                out.conflicts += 1;
            }
            None => {
                customer.identifiers.push(LinkedIdentifier {
                    identifier: ident.clone(),
                    linked_at: at,
                    how: How::Csv,
                });
                ctx.put_id(txn, key, &customer.id);
                out.linked += 1;
            }
        }
    }
    for ((channel, id), key) in row.channel_ids.iter().zip(&any_keys) {
        if get(txn, key).await?.is_none() {
            ctx.put_id(txn, key, &customer.id);
            customer.identities.push(LinkedIdentity {
                channel: channel.clone(),
                scope: "*".into(),
                id: id.clone(),
                verified: true,
                linked_at: at,
                how: How::Csv,
            });
            out.linked += 1;
        }
    }
    let mut changed = out.linked > 0 || out.merged > 0 || owners.is_empty();
    for (k, v) in &row.attributes {
        if customer.attributes.get(k).map(|a| &a.value) != Some(v) {
            customer.set_attribute(k, v, "csv", at);
            changed = true;
        }
    }
    if changed {
        ctx.save_customer(txn, &customer);
    }
    Ok(out)
}
