//! The admin API (`/admin/v1/…`) and the business API's link tokens
//! (`/v1/link-tokens`): bearer tokens from `[[admin.tokens]]`, compared by
//! hash in constant time; which role may call which route is the route
//! table's (`super::routes`), checked before any handler here runs.

use std::collections::BTreeMap;
use std::time::Duration;

use chatcrafter_core::config::Role;
use chatcrafter_core::identity::identifier::{Identifier, IdentifierKind};
use chatcrafter_core::identity::{Customer, How};
use chatcrafter_core::rfc3339;
use hyper::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Fault, Params, Req, Resp, body, ops};
use crate::app::{AdminToken, App};
use crate::notify::{Change, ChangeKind};

/// How long a link token lives: 15 minutes, long enough to open a deep link
/// on another device, short enough that a leaked one is soon useless.
pub(super) const LINK_TOKEN_TTL_SECONDS: u64 = 900;

/// The admin token a request carries (`Authorization: Bearer …`).
pub(super) fn authenticate<'a>(app: &'a App, req: &Req) -> Result<&'a AdminToken, ApiError> {
    let unauthorized = |msg: &str| {
        let mut e = ApiError::caller(StatusCode::UNAUTHORIZED, "unauthorized", msg);
        e.headers.push((header::WWW_AUTHENTICATE, "Bearer".into()));
        e
    };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("an admin bearer token is required"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    // Check every token, so timing does not tell which one nearly matched.
    let mut found = None;
    for t in &app.admin_tokens {
        if t.matches(digest.as_ref()) && found.is_none() {
            found = Some(t);
        }
    }
    found.ok_or_else(|| unauthorized("the bearer token is not valid"))
}

/// Whether `token`'s role is among `allowed`.
pub(super) fn require(token: &AdminToken, allowed: &[Role]) -> Result<(), ApiError> {
    if allowed.contains(&token.role) {
        Ok(())
    } else {
        Err(ApiError::caller(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {:?} may not use this route", token.role).to_lowercase(),
        ))
    }
}

pub(super) fn json_resp(status: u16, v: &Value) -> Resp {
    ops::text(status, "application/json", v.to_string())
}

/// The request's JSON body, or 422 `invalid_body` naming the field at fault.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    app: &App,
    req: &mut Req,
) -> Result<T, ApiError> {
    let raw = body::read_capped(app, req).await?;
    let de = &mut serde_json::Deserializer::from_slice(&raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("{path}: {}", e.into_inner()),
        )
    })
}

/// The customer object of INTERFACE §3.6.
pub(crate) fn customer_json(c: &Customer, primary: IdentifierKind) -> Value {
    let attributes: BTreeMap<&str, &str> = c
        .attributes
        .iter()
        .map(|(k, a)| (k.as_str(), a.value.as_str()))
        .collect();
    let identities: Vec<Value> = c
        .identities
        .iter()
        .map(|i| {
            json!({"channel": i.channel, "scope": i.scope, "id": i.id, "verified": i.verified,
                   "linked_at": rfc3339(i.linked_at), "how": i.how})
        })
        .collect();
    let identifiers: Vec<Value> = c
        .identifiers
        .iter()
        .map(|i| json!({"kind": i.identifier.kind, "value": i.identifier.value, "linked_at": rfc3339(i.linked_at), "how": i.how}))
        .collect();
    let primary_identifier = c
        .identifiers
        .iter()
        .find(|i| i.identifier.kind == primary)
        .map(|i| json!({"kind": i.identifier.kind, "value": i.identifier.value}));
    // Consent is kept as `consent.<purpose>` attributes (`granted` or
    // `denied`), so it syncs and merges like any attribute.
    let consent: BTreeMap<&str, Value> = c
        .attributes
        .iter()
        .filter_map(|(k, a)| {
            let purpose = k.strip_prefix("consent.")?;
            Some((purpose, json!({"granted": a.value == "granted", "updated_at": rfc3339(a.updated_at), "source": a.source})))
        })
        .collect();
    let mut v = json!({
        "id": c.id,
        "created_at": rfc3339(c.created_at),
        "attributes": attributes,
        "identities": identities,
        "identifiers": identifiers,
        "consent": consent,
        "primary_identifier": primary_identifier,
    });
    if let Some(m) = &c.merged_into {
        v["merged_into"] = json!(m);
    }
    if let Some(at) = c.archived_at {
        v["archived_at"] = json!(rfc3339(at));
    }
    v
}

pub(crate) use chatcrafter_core::conversation::{entry_json, timeline_json};

const CHANNELS: &[&str] = &["whatsapp", "telegram", "discord", "widget"];

/// Attributes with a meaning to the gateway must hold a value it
/// understands: `consent.<purpose>` is `granted` or `denied`;
/// `preferred_channel` names a configured channel.
fn check_attributes(app: &App, attrs: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let bad = |msg: String| ApiError::caller(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", msg);
    for (k, v) in attrs {
        if k.starts_with("consent.") && v != "granted" && v != "denied" {
            return Err(bad(format!(
                "attributes.{k}: `{v}` must be `granted` or `denied`"
            )));
        }
        if k == chatcrafter_core::identity::PREFERRED_CHANNEL
            && !(app.config.channels.contains_key(v) || (v == "widget" && app.widget.is_some()))
        {
            return Err(bad(format!(
                "attributes.{k}: `{v}` is not a configured channel"
            )));
        }
    }
    Ok(())
}

pub(super) async fn lookup(app: &App, identifier: &str) -> Result<String, ApiError> {
    let bad =
        |msg: String| ApiError::caller(StatusCode::UNPROCESSABLE_ENTITY, "invalid_identifier", msg);
    let (kind, value) = identifier.split_once(':').ok_or_else(|| {
        bad(format!(
            "`{identifier}` must be kind:value, e.g. phone:+15551234567"
        ))
    })?;
    let found = match kind {
        "email" | "phone" | "user_id" => {
            let kind = IdentifierKind::parse(kind).expect("listed");
            let ident = Identifier::new(kind, value).map_err(|e| bad(e.to_string()))?;
            app.db.find(&ident).await
        }
        c if CHANNELS.contains(&c) || app.config.channels.contains_key(c) => {
            app.db.find_identity(c, value).await
        }
        other => {
            return Err(bad(format!(
                "unknown identifier kind `{other}` (email, phone, whatsapp, telegram, discord, widget)"
            )));
        }
    };
    found.map_err(ApiError::from)?.ok_or_else(|| {
        ApiError::caller(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no customer has {kind}:…"),
        )
    })
}

fn query(req: &Req, name: &str) -> Option<String> {
    chatcrafter_core::verify::query_param(req.uri().query().unwrap_or(""), name)
}

/// `GET /admin/v1/customers?identifier=kind:value`.
pub(super) async fn find_customer(
    app: &App,
    req: &mut Req,
    _: Params<'_>,
) -> Result<Resp, ApiError> {
    let identifier = query(req, "identifier").ok_or_else(|| {
        ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "?identifier=kind:value is required",
        )
    })?;
    let id = lookup(app, &identifier).await?;
    let c = app.db.customer(&id).await.map_err(ApiError::from)?;
    super::note_audit_customer(&c.id);
    Ok(json_resp(200, &customer_json(&c, app.primary_identifier)))
}

/// 400 `invalid_query` naming the parameter.
fn bad_query(name: &str, why: &str) -> ApiError {
    ApiError::caller(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("{name}: {why}"),
    )
}

/// A paged list's `?after=<cursor>&limit=<n>` (`limit` 1 to `max`,
/// `default` when absent).
fn page_query(req: &Req, default: usize, max: usize) -> Result<(Option<u64>, usize), ApiError> {
    let after = query(req, "after")
        .map(|a| a.parse::<u64>())
        .transpose()
        .map_err(|_| bad_query("after", "not a cursor from a previous page's `next`"))?;
    let limit = match query(req, "limit") {
        None => default,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| bad_query("limit", &format!("a whole number from 1 to {max}")))?,
    };
    Ok((after, limit))
}

/// `GET /admin/v1/audit?after=&limit=&customer_id=&actor=&action=&from=&to=`:
/// the audit log, oldest first, a page at a time (INTERFACE §3.6).
pub(super) async fn audit_log(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let (after, limit) = page_query(req, 100, 1000)?;
    let bad = bad_query;
    let time = |name: &str| -> Result<Option<u64>, ApiError> {
        query(req, name)
            .map(|t| {
                chatcrafter_core::parse_rfc3339(&t)
                    .ok_or_else(|| bad(name, "an RFC 3339 time, like 2026-11-30T12:00:00Z"))
            })
            .transpose()
    };
    let filter = chatcrafter_core::audit::AuditFilter {
        customer_id: query(req, "customer_id"),
        actor: query(req, "actor"),
        action: query(req, "action"),
        from: time("from")?,
        to: time("to")?,
    };
    let (entries, next) = app
        .db
        .audit_page(after, limit, &filter)
        .await
        .map_err(ApiError::from)?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({"seq": e.seq, "at": rfc3339(e.at), "actor": e.actor, "action": e.action,
                               "route": e.route, "outcome": e.outcome, "prev": e.prev, "hash": e.hash});
            if let Some(c) = &e.customer_id {
                v["customer_id"] = json!(c);
            }
            v
        })
        .collect();
    Ok(json_resp(
        200,
        &json!({"entries": entries, "next": next.map(|n| n.to_string())}),
    ))
}

/// `POST /admin/v1/customers/merge`.
pub(super) async fn merge(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct MergeBody {
        surviving: String,
        merged: String,
    }
    let b: MergeBody = json_body(app, req).await?;
    super::note_audit_customer(&b.surviving);
    let r = app
        .db
        .merge(
            &b.surviving,
            &b.merged,
            How::AdminMerge,
            app.clock.now_secs(),
        )
        .await
        .map_err(ApiError::from)?;
    publish_merge(app, &r.surviving, &r.merged).await;
    let dropped: Vec<Value> = r
        .dropped
        .iter()
        .map(|d| json!({"customer_id": d.customer_id, "attribute": d.attribute}))
        .collect();
    Ok(json_resp(
        200,
        &json!({"merge_id": r.merge_id, "surviving": r.surviving, "merged": r.merged, "dropped": dropped}),
    ))
}

async fn publish_merge(app: &App, surviving: &str, merged: &str) {
    for id in [surviving, merged] {
        app.notifier
            .publish(Change {
                customer_id: id.to_string(),
                kind: ChangeKind::Merge,
            })
            .await;
    }
}

/// `GET /admin/v1/customers/{id}/timeline`.
pub(super) async fn timeline(app: &App, _: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let entries = app.db.timeline(p[0]).await.map_err(ApiError::from)?;
    Ok(json_resp(200, &timeline_json(p[0], &entries)))
}

/// `GET /admin/v1/customers/{id}`.
pub(super) async fn customer(app: &App, _: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let c = app.db.customer(p[0]).await.map_err(ApiError::from)?;
    Ok(json_resp(200, &customer_json(&c, app.primary_identifier)))
}

/// `PATCH /admin/v1/customers/{id}`.
pub(super) async fn patch_customer(
    app: &App,
    req: &mut Req,
    p: Params<'_>,
) -> Result<Resp, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        attributes: BTreeMap<String, String>,
    }
    let patch: Patch = json_body(app, req).await?;
    check_attributes(app, &patch.attributes)?;
    let c = app
        .db
        .set_attributes(p[0], &patch.attributes, "admin", app.clock.now_secs())
        .await
        .map_err(ApiError::from)?;
    app.notifier
        .publish(Change {
            customer_id: c.id.clone(),
            kind: ChangeKind::Profile,
        })
        .await;
    Ok(json_resp(200, &customer_json(&c, app.primary_identifier)))
}

/// `POST /admin/v1/merges/{id}/undo`.
pub(super) async fn undo(app: &App, _: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let r = app
        .db
        .undo(p[0], app.clock.now_secs())
        .await
        .map_err(ApiError::from)?;
    publish_merge(app, &r.surviving, &r.merged).await;
    Ok(json_resp(
        200,
        &json!({"merge_id": r.merge_id, "surviving": r.surviving, "merged": r.merged, "undone_at": r.undone_at.map(rfc3339)}),
    ))
}

/// `GET /admin/v1/conflicts`: the open ones.
pub(super) async fn conflicts(app: &App, _: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let list = app.db.conflicts().await.map_err(ApiError::from)?;
    let open: Vec<Value> = list
        .iter()
        .filter(|c| c.resolved_at.is_none())
        .map(|c| json!({"id": c.id, "at": rfc3339(c.at), "kind": c.kind, "customer_id": c.customer_id, "other_customer_id": c.other_customer_id, "detail": c.detail}))
        .collect();
    Ok(json_resp(200, &json!({"conflicts": open})))
}

/// `POST /admin/v1/conflicts/{id}/resolve`.
pub(super) async fn resolve_conflict(
    app: &App,
    _: &mut Req,
    p: Params<'_>,
) -> Result<Resp, ApiError> {
    let c = app
        .db
        .resolve_conflict(p[0], app.clock.now_secs())
        .await
        .map_err(ApiError::from)?;
    Ok(json_resp(
        200,
        &json!({"id": c.id, "resolved_at": c.resolved_at.map(rfc3339)}),
    ))
}

/// `GET /admin/v1/malformed?after=<cursor>&limit=<n>`: kept payloads,
/// newest first, a page at a time (`limit` 1–100, default 20); `next` is
/// the `after` of the following page, `null` on the last.
pub(super) async fn malformed(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let (after, limit) = page_query(req, 20, 100)?;
    let page = app
        .db
        .malformed_page(after, limit)
        .await
        .map_err(ApiError::from)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|(seq, m)| {
            json!({"id": seq.to_string(), "request_id": m.request_id, "channel": m.channel,
                   "at": rfc3339(m.at), "error": m.error,
                   "body": String::from_utf8_lossy(&m.body), "truncated": m.truncated})
        })
        .collect();
    Ok(json_resp(
        200,
        &json!({"malformed": items, "next": page.next.map(|n| n.to_string())}),
    ))
}

/// `POST /admin/v1/import`: the CSV import of INTERFACE §5.
pub(super) async fn import(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let s = &app.config.server;
    let raw = body::read(
        req,
        s.max_import_bytes,
        "server.max_import_bytes",
        Duration::from_millis(s.body_timeout_ms),
    )
    .await?;
    let channels = crate::import::channel_names(&app.config);
    let summary = crate::import::import(&app.db, &channels, &raw, app.clock.now_secs(), |_, _| {})
        .await
        .map_err(|e| match e {
            crate::import::ImportError::Csv(c) => ApiError::caller(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_csv",
                c.to_string(),
            ),
            crate::import::ImportError::Store { .. } => {
                ApiError::fault(Fault::Store, "store_unavailable", e.to_string())
            }
        })?;
    Ok(json_resp(
        200,
        &serde_json::to_value(&summary).unwrap_or_default(),
    ))
}

/// `GET /admin/v1/handoffs`: the inbox of conversations waiting for a person.
pub(super) async fn handoffs(app: &App, _: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let list = app.db.handoffs().await.map_err(ApiError::from)?;
    let items: Vec<Value> = list
        .iter()
        .map(|o| {
            let h = &o.handoff;
            json!({"conversation_id": o.customer_id, "customer_id": o.customer_id,
                   "opened_at": rfc3339(h.opened_at), "reason": h.reason, "detail": h.detail,
                   "channel": h.channel, "last_message_at": rfc3339(h.last_message_at),
                   "waiting": h.waiting})
        })
        .collect();
    Ok(json_resp(200, &json!({"handoffs": items})))
}

/// `POST /admin/v1/conversations/{id}/reply`: a person answers.
pub(super) async fn reply(app: &App, req: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ReplyBody {
        text: String,
    }
    let b: ReplyBody = json_body(app, req).await?;
    if b.text.trim().is_empty() {
        return Err(ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "text: must not be empty",
        ));
    }
    let o = app
        .db
        .reply_as_human(p[0], &b.text, app.clock.now_ms())
        .await
        .map_err(ApiError::from)?;
    app.wake.notify_one();
    let channel = o.routes.first().map(|r| r.identity.channel.as_str());
    Ok(json_resp(
        202,
        &json!({"id": o.id, "customer_id": o.customer_id, "channel": channel, "status": o.state.as_str()}),
    ))
}

/// `POST /admin/v1/conversations/{id}/close`.
pub(super) async fn close(app: &App, _: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let was_open = app.db.close_handoff(p[0]).await.map_err(ApiError::from)?;
    Ok(json_resp(
        200,
        &json!({"conversation_id": p[0], "closed": was_open}),
    ))
}

/// `POST /v1/events`: a business event for a customer found by identifier,
/// recorded on the timeline.
pub(super) async fn event(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ident {
        kind: String,
        value: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        identifier: Ident,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        properties: Value,
    }
    let b: Body = json_body(app, req).await?;
    let valid_type = !b.kind.is_empty()
        && b.kind.len() <= 64
        && b.kind
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if !valid_type {
        return Err(ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("type: `{}` must be 1 to 64 of a-z, 0-9 and `_`", b.kind),
        ));
    }
    let customer = lookup(
        app,
        &format!("{}:{}", b.identifier.kind, b.identifier.value),
    )
    .await?;
    super::note_audit_customer(&customer);
    let entry =
        chatcrafter_core::conversation::Entry::event(&b.kind, b.properties, app.clock.now_secs());
    let stored = app
        .db
        .record_event(
            &customer,
            &entry,
            app.config.delivery.reminder_delay_seconds * 1000,
            app.clock.now_ms(),
        )
        .await
        .map_err(ApiError::from)?;
    // A reminder may be due at once (a zero delay).
    app.wake.notify_one();
    app.notifier
        .publish(Change {
            customer_id: customer.clone(),
            kind: ChangeKind::Message,
        })
        .await;
    Ok(json_resp(
        202,
        &json!({"id": stored.id, "customer_id": customer}),
    ))
}

/// The deep link that carries `token` into `name`'s channel: the first of
/// its plugin's deep-link templates whose settings the channel configures
/// (contract 0.2's manifest `deep-links`); `None` when there is none.
pub(super) fn deep_link(
    app: &App,
    name: &str,
    channel: &chatcrafter_core::config::Channel,
    token: &str,
) -> Option<String> {
    let plugin = app.plugins.get(name)?;
    plugin
        .manifest()
        .deep_link(token, |s| channel.settings.get(s).map(String::as_str))
}

/// `POST /v1/link-tokens`.
pub(super) async fn link_token(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        customer_id: String,
        channel: String,
    }
    let b: Body = json_body(app, req).await?;
    let Some(channel) = app.config.channels.get(&b.channel) else {
        return Err(ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("channel: `{}` is not configured", b.channel),
        ));
    };
    let now = app.clock.now_secs();
    let token = app
        .db
        .create_link_token(&b.customer_id, &b.channel, LINK_TOKEN_TTL_SECONDS, now)
        .await
        .map_err(ApiError::from)?;
    let link = deep_link(app, &b.channel, channel, &token);
    Ok(json_resp(
        201,
        &json!({"token": token, "expires_at": rfc3339(now + LINK_TOKEN_TTL_SECONDS), "link": link}),
    ))
}
