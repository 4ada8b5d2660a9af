//! The customer: its identities, identifiers and attributes, and the reads
//! and writes of a customer record and its lookup keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::channel::ChannelIdentity;
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::identity::identifier::{Identifier, IdentifierKind};
use crate::store::{Backend, Txn, get};

/// The attribute naming a customer's preferred channel.
pub const PREFERRED_CHANNEL: &str = "preferred_channel";

/// The attribute holding marketing consent: `granted` or `denied`.
pub const MARKETING_CONSENT: &str = "consent.marketing";

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
    /// Every consent given or withdrawn, oldest first (the newest
    /// [`CONSENT_HISTORY_KEPT`]); the current state is the
    /// `consent.<purpose>` attributes.
    #[serde(default)]
    pub consent_history: Vec<ConsentChange>,
    /// Values attributes held before their current one, oldest first (the
    /// newest [`ATTRIBUTE_HISTORY_KEPT`]): with `attributes`, every value
    /// each attribute had, when and from where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribute_history: Vec<PastAttribute>,
    /// Set when retention archived the customer for inactivity (Unix
    /// seconds): out of every lookup until an admin restores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<u64>,
    /// When an admin last restored the customer from the archive (counts
    /// as activity: not archived again before `archive_after_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<u64>,
}

/// How many consent changes a customer keeps.
pub const CONSENT_HISTORY_KEPT: usize = 200;

/// How many replaced attribute values a customer keeps.
pub const ATTRIBUTE_HISTORY_KEPT: usize = 200;

/// A value an attribute held before it was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAttribute {
    /// The attribute.
    pub name: String,
    /// The value it held.
    pub value: String,
    /// Where that value came from.
    pub source: String,
    /// When it was set (Unix seconds).
    pub set_at: u64,
    /// When it was replaced (Unix seconds).
    pub replaced_at: u64,
}

/// One consent given or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    /// The purpose (`marketing`, `data_sharing`, `analytics`, …).
    pub purpose: String,
    /// Given (`true`) or withdrawn.
    pub granted: bool,
    /// Unix seconds.
    pub at: u64,
    /// Where it came from (a channel, `admin`, `api`, `csv`, `agent`).
    pub source: String,
}

impl Customer {
    /// Sets an attribute, recording when and from where.
    pub fn set_attribute(&mut self, name: &str, value: &str, source: &str, at: u64) {
        if let Some(purpose) = name.strip_prefix("consent.") {
            self.consent_history.push(ConsentChange {
                purpose: purpose.to_string(),
                granted: value == "granted",
                at,
                source: source.to_string(),
            });
            let excess = self
                .consent_history
                .len()
                .saturating_sub(CONSENT_HISTORY_KEPT);
            self.consent_history.drain(..excess);
        }
        let old = self.attributes.insert(
            name.to_string(),
            Attribute {
                value: value.to_string(),
                updated_at: at,
                source: source.to_string(),
            },
        );
        if let Some(old) = old.filter(|o| o.value != value) {
            self.attribute_history.push(PastAttribute {
                name: name.to_string(),
                value: old.value,
                source: old.source,
                set_at: old.updated_at,
                replaced_at: at,
            });
            let excess = self
                .attribute_history
                .len()
                .saturating_sub(ATTRIBUTE_HISTORY_KEPT);
            self.attribute_history.drain(..excess);
        }
    }
}

impl Ctx<'_> {
    pub(crate) async fn load_customer(
        &self,
        txn: &mut dyn Txn,
        id: &str,
    ) -> Result<Customer, DbError> {
        let key = self.k().customer(id);
        let bytes = get(txn, &key)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("customer {id}")))?;
        self.open(&key, &bytes)
    }

    /// Follows `merged_into` to the customer that stands for `id` now.
    pub(crate) async fn live_customer(
        &self,
        txn: &mut dyn Txn,
        id: &str,
    ) -> Result<Customer, DbError> {
        let mut c = self.load_customer(txn, id).await?;
        for _ in 0..16 {
            match c.merged_into.clone() {
                Some(next) => c = self.load_customer(txn, &next).await?,
                None => return Ok(c),
            }
        }
        Err(DbError::Invalid(format!(
            "merge chain from {id} is too long"
        )))
    }

    /// The customer (as it stands now) a lookup key points to.
    pub(crate) async fn owner_of(
        &self,
        txn: &mut dyn Txn,
        key: &str,
    ) -> Result<Option<String>, DbError> {
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

    /// `c` and every customer merged into it, transitively.
    pub(crate) async fn group_of(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
    ) -> Result<Vec<Customer>, DbError> {
        let mut members = vec![c.clone()];
        let mut pending = c.absorbed.clone();
        while let Some(m) = pending.pop() {
            if members.iter().any(|c| c.id == m) {
                continue;
            }
            let c = self.load_customer(txn, &m).await?;
            pending.extend(c.absorbed.iter().cloned());
            members.push(c);
        }
        Ok(members)
    }

    /// Every lookup key of `c`'s identities and identifiers, each with
    /// what it finds (`channel:id`, `kind:value`).
    pub(crate) fn lookup_keys(&self, c: &Customer) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        for i in &c.identities {
            let identity = crate::channel::ChannelIdentity {
                channel: i.channel.clone(),
                scope: i.scope.clone(),
                id: i.id.clone(),
            };
            let name = format!("{}:{}", i.channel, i.id);
            keys.push((self.k().identity(&identity), name.clone()));
            keys.push((self.k().identity_any(&i.channel, &i.id), name));
        }
        for i in &c.identifiers {
            keys.push((
                self.k().identifier(&i.identifier),
                format!("{}:{}", i.identifier.kind.as_str(), i.identifier.value),
            ));
        }
        keys
    }

    pub(crate) fn save_customer(&self, txn: &mut dyn Txn, c: &Customer) -> Result<(), DbError> {
        let key = self.k().customer(&c.id);
        txn.put(&key, self.seal(&key, c)?);
        Ok(())
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
}

impl<B: Backend> Db<B> {
    /// A customer by id (merged customers are returned as stored, with
    /// `merged_into` set).
    pub async fn customer(&self, id: &str) -> Result<Customer, DbError> {
        self.read_unit(move |ctx, txn| Box::pin(ctx.load_customer(txn, id)))
            .await
    }

    /// The customer an identifier belongs to.
    pub async fn find(&self, identifier: &Identifier) -> Result<Option<String>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move { ctx.owner_of(txn, &ctx.k().identifier(identifier)).await })
        })
        .await
    }

    /// The customer a channel user id belongs to, in any scope.
    pub async fn find_identity(&self, channel: &str, id: &str) -> Result<Option<String>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move { ctx.owner_of(txn, &ctx.k().identity_any(channel, id)).await })
        })
        .await
    }

    /// Sets attributes (most recent wins); `source` is `admin`, `csv` or a
    /// channel.
    pub async fn set_attributes(
        &self,
        id: &str,
        attrs: &BTreeMap<String, String>,
        source: &str,
        at: u64,
    ) -> Result<Customer, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let mut c = ctx.live_customer(txn, id).await?;
                for (k, v) in attrs {
                    c.set_attribute(k, v, source, at);
                }
                ctx.save_customer(txn, &c)?;
                if attrs.contains_key(crate::analytics::CONSENT) {
                    ctx.analytics_consent(txn, &c).await?;
                }
                Ok(c)
            })
        })
        .await
    }
}
