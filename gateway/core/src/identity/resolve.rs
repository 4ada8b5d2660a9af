//! Resolution: which customer an inbound sender is. Known identity → link
//! token → verified claims (primary identifier first) → new customer;
//! identifier limits and blocked values produce conflicts, never bad
//! merges; unverified matches become suggestions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::link_token::LinkToken;
use super::merge::merge_in;
use crate::channel::{ChannelIdentity, Claim, ClaimKind};
use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::identity::identifier::{Identifier, IdentifierKind};
use crate::identity::*;
use crate::store::{Backend, Txn, get};

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

/// Verified claims as identifiers, primary kind first; invalid values are
/// skipped (a channel's claim is not worth failing a message over).
pub(crate) fn identifiers(
    claims: &[Claim],
    verified: bool,
    primary: IdentifierKind,
) -> Vec<Identifier> {
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

impl<B: Backend> Db<B> {
    /// Resolves an inbound sender to one customer, atomically: known
    /// identity → link token → verified claims (primary identifier first) →
    /// new customer. Identifier limits and blocked values produce conflicts,
    /// never bad merges; unverified matches become suggestions.
    pub async fn resolve(&self, sender: &Sender) -> Result<Resolution, DbError> {
        self.unit(move |ctx, txn| Box::pin(resolve_in(ctx, txn, sender)))
            .await
    }

    /// [`Db::resolve`], only when a verified claim of `sender` already
    /// belongs to a customer (a widget user opening a session, known from
    /// another channel by a verified phone or email): then the sender is
    /// linked as resolution links it; otherwise nothing changes and no
    /// customer is created. `None` when nothing matched.
    pub async fn resolve_if_known(&self, sender: &Sender) -> Result<Option<Resolution>, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let verified = identifiers(&sender.claims, true, ctx.rules.primary);
                let keys: Vec<String> = verified.iter().map(|i| ctx.k().identifier(i)).collect();
                let owners = txn.get_many(&keys).await?;
                let known = verified
                    .iter()
                    .zip(&owners)
                    .any(|(i, o)| o.is_some() && !ctx.rules.blocked.contains(i));
                if !known {
                    return Ok(None);
                }
                resolve_in(ctx, txn, sender).await.map(Some)
            })
        })
        .await
    }
}

pub(crate) async fn resolve_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    s: &Sender,
) -> Result<Resolution, DbError> {
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
        // A link token is one-time whoever presents it: a known identity
        // that carries one uses it up, so no one else can.
        if let (Some(tk), Some(_)) = (&token_key, &token_value) {
            txn.delete(tk);
        }
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
                consent_history: Vec::new(),
                attribute_history: Vec::new(),
                archived_at: None,
                restored_at: None,
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
                ctx.save_customer(txn, &customer)?;
                match merge_in(ctx, txn, &customer.id, &other, How::AutoMerge, s.at).await {
                    Ok(record) => {
                        res.merges.push(record.merge_id);
                        customer = ctx.load_customer(txn, &customer.id).await?;
                    }
                    Err(DbError::Limit { kind, count, limit }) => {
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
        ctx.save_customer(txn, &customer)?;
    }
    res.customer_id = customer.id;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use crate::channel::ClaimKind;
    use crate::db::testing::{T0, claim, db, run, sender};
    use crate::identity::identifier::{BlockedValues, Identifier, IdentifierKind};
    use crate::identity::{How, Rules};

    fn phone(v: &str) -> Identifier {
        Identifier::new(IdentifierKind::Phone, v).unwrap()
    }

    #[test]
    fn a_known_identity_is_the_same_customer_and_a_new_one_is_created() {
        let (db, _) = db(Rules::default());
        let s = sender("whatsapp", "15551234567", vec![], T0);
        let first = run(db.resolve(&s)).unwrap();
        assert!(first.created);
        assert_eq!(first.linked, Some(How::Channel));
        let again = run(db.resolve(&s)).unwrap();
        assert_eq!(
            (again.customer_id, again.created),
            (first.customer_id, false)
        );
    }

    #[test]
    fn a_verified_claim_links_another_channel_and_an_unverified_one_only_suggests() {
        let (db, _) = db(Rules::default());
        let wa = sender(
            "whatsapp",
            "15551234567",
            vec![claim(ClaimKind::Phone, "+15551234567", true)],
            T0,
        );
        let sarah = run(db.resolve(&wa)).unwrap().customer_id;
        let widget = sender(
            "widget",
            "user-42",
            vec![claim(ClaimKind::Phone, "+1 555 123 4567", true)],
            T0 + 1,
        );
        let r = run(db.resolve(&widget)).unwrap();
        assert_eq!(
            (r.customer_id.as_str(), r.linked),
            (sarah.as_str(), Some(How::VerifiedClaim))
        );

        let stranger = sender(
            "telegram",
            "42",
            vec![claim(ClaimKind::Phone, "+15551234567", false)],
            T0 + 2,
        );
        let r = run(db.resolve(&stranger)).unwrap();
        assert_ne!(r.customer_id, sarah);
        let conflicts = run(db.conflicts()).unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].kind, "suggestion");
        assert_eq!(
            conflicts[0].other_customer_id.as_deref(),
            Some(sarah.as_str())
        );
    }

    #[test]
    fn a_blocked_value_never_links_and_says_so_in_the_review_queue() {
        let rules = Rules {
            blocked: BlockedValues::new(["+1 000 000 0000"]),
            ..Rules::default()
        };
        let (db, _) = db(rules);
        let placeholder = |id: &str| {
            sender(
                "widget",
                id,
                vec![claim(ClaimKind::Phone, "+10000000000", true)],
                T0,
            )
        };
        let a = run(db.resolve(&placeholder("a"))).unwrap();
        let b = run(db.resolve(&placeholder("b"))).unwrap();
        assert_ne!(a.customer_id, b.customer_id);
        assert_eq!(run(db.find(&phone("+10000000000"))).unwrap(), None);
        let kinds: Vec<String> = run(db.conflicts())
            .unwrap()
            .into_iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, ["blocked", "blocked"]);
    }

    #[test]
    fn a_link_token_is_used_up_by_whoever_presents_it_even_a_known_identity() {
        let (db, _) = db(Rules::default());
        let tg = sender("telegram", "42", vec![], T0);
        let sarah = run(db.resolve(&tg)).unwrap().customer_id;
        let token = run(db.create_link_token(&sarah, "telegram", 900, T0)).unwrap();
        // Sarah's own, known Telegram identity sends the token.
        let mut again = sender("telegram", "42", vec![], T0 + 1);
        again.link_token = Some(token.clone());
        assert_eq!(run(db.resolve(&again)).unwrap().customer_id, sarah);
        // Spent: a stranger presenting it next links to no one.
        let mut stranger = sender("telegram", "666", vec![], T0 + 2);
        stranger.link_token = Some(token);
        let r = run(db.resolve(&stranger)).unwrap();
        assert_ne!(r.customer_id, sarah);
        assert!(r.created);
    }

    #[test]
    fn a_verified_claim_past_the_limit_is_a_conflict_not_a_link() {
        let rules = Rules {
            limits: [(IdentifierKind::Phone, 1)].into(),
            ..Rules::default()
        };
        let (db, _) = db(rules);
        let one = sender(
            "widget",
            "u",
            vec![claim(ClaimKind::Phone, "+15551230001", true)],
            T0,
        );
        let id = run(db.resolve(&one)).unwrap().customer_id;
        let two = sender(
            "widget",
            "u",
            vec![claim(ClaimKind::Phone, "+15551230002", true)],
            T0 + 1,
        );
        let r = run(db.resolve(&two)).unwrap();
        assert_eq!(r.customer_id, id);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(run(db.find(&phone("+15551230002"))).unwrap(), None);
    }
}
