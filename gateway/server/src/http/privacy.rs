//! Customer data as a liability: the export (GDPR access and
//! portability). docs/privacy.md documents the format.

use serde_json::{Value, json};

use super::{ApiError, Params, Req, Resp, ops};
use crate::app::App;
use chatcrafter_core::rfc3339;
use hyper::{StatusCode, header};

/// The export format's name and version, first in every export.
const FORMAT: &str = "chatcrafter-export/1";

/// `GET /admin/v1/customers/{id}/export?format=json|csv`: everything held
/// about the customer, decrypted — profile with each attribute's source and
/// time, linked identities and identifiers with how and when, consent,
/// merges, conflicts involving them, and the full cross-channel timeline.
pub(super) async fn export(app: &App, req: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let format = chatcrafter_core::verify::query_param(req.uri().query().unwrap_or(""), "format")
        .unwrap_or_else(|| "json".into());
    if format != "json" && format != "csv" {
        return Err(ApiError::caller(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("format: `{format}` — json or csv"),
        ));
    }
    let doc = export_doc(app, p[0]).await?;
    let id = doc["customer_id"].as_str().unwrap_or_default().to_string();
    let (body, kind, ext) = if format == "json" {
        (
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
            "application/json",
            "json",
        )
    } else {
        (csv(&doc), "text/csv; charset=utf-8", "csv")
    };
    Ok(attachment(
        ops::text(200, kind, body),
        &format!("customer-{id}.{ext}"),
    ))
}

/// `DELETE /admin/v1/customers/{id}`: erases the customer and everyone
/// merged with them, on every channel and in every index, destroys their
/// keys, and answers with the signed receipt of INTERFACE §3.6 (counts per
/// kind; docs/privacy.md).
pub(super) async fn erase(app: &App, _: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let erased = app.db.erase(p[0]).await.map_err(ApiError::from)?;
    app.metrics.inc("gateway_customers_erased_total", &[]);
    let receipt = app.receipts.sign(json!({
        "customer_id": erased.customer_id,
        "customers": erased.customers,
        "erased_at": rfc3339(app.clock.now_secs()),
        "removed": erased.removed,
    }));
    tracing::info!(customer = %erased.customer_id, customers = erased.customers.len(), "customer erased");
    Ok(super::admin::json_resp(200, &receipt))
}

/// `POST /admin/v1/customers/{id}/restore`: brings a customer retention
/// archived back into the lookups, for every identity and identifier no one
/// else has taken meanwhile (`not_relinked` lists the others).
pub(super) async fn restore(app: &App, _: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let (c, taken) = app.db.restore(p[0]).await.map_err(ApiError::from)?;
    Ok(super::admin::json_resp(
        200,
        &json!({
            "customer": super::admin::customer_json(&c, app.primary_identifier),
            "not_relinked": taken,
        }),
    ))
}

/// An export's answer headers: a download, never cached.
fn attachment(mut resp: Resp, name: &str) -> Resp {
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The export document of docs/privacy.md.
async fn export_doc(app: &App, customer_id: &str) -> Result<Value, ApiError> {
    let c = app.db.customer(customer_id).await.map_err(ApiError::from)?;
    let timeline = app.db.timeline(&c.id).await.map_err(ApiError::from)?;
    let conflicts: Vec<Value> = app
        .db
        .conflicts()
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .filter(|k| k.customer_id == c.id || k.other_customer_id.as_deref() == Some(&c.id))
        .map(|k| {
            json!({"id": k.id, "at": rfc3339(k.at), "kind": k.kind, "customer_id": k.customer_id,
                   "other_customer_id": k.other_customer_id, "detail": k.detail,
                   "resolved_at": k.resolved_at.map(rfc3339)})
        })
        .collect();
    let profile = super::admin::customer_json(&c, app.primary_identifier);
    let attributes: Vec<Value> = c
        .attributes
        .iter()
        .map(|(name, a)| {
            json!({"name": name, "value": a.value, "source": a.source, "updated_at": rfc3339(a.updated_at)})
        })
        .collect();
    let (queued, reminders) = app.db.queued_for(&c.id).await.map_err(ApiError::from)?;
    let queued: Vec<Value> = queued
        .iter()
        .map(|o| {
            json!({"id": o.id, "channel": o.routes.get(o.route).map(|r| r.identity.channel.clone()),
                   "text": o.text, "author": o.author, "state": o.state.as_str(),
                   "created_at": rfc3339(o.created_at)})
        })
        .collect();
    let reminders: Vec<Value> = reminders
        .iter()
        .filter_map(|j| match &j.kind {
            chatcrafter_core::delivery::JobKind::Reminder { abandoned_at, .. } => Some(
                json!({"id": j.id, "cart_abandoned_at": rfc3339(*abandoned_at),
                       "scheduled_at": rfc3339(j.created_ms / 1000)}),
            ),
            _ => None,
        })
        .collect();
    let attribute_history: Vec<Value> = c
        .attribute_history
        .iter()
        .map(|a| {
            json!({"name": a.name, "value": a.value, "source": a.source,
                   "set_at": rfc3339(a.set_at), "replaced_at": rfc3339(a.replaced_at)})
        })
        .collect();
    let doc = json!({
        "format": FORMAT,
        "exported_at": rfc3339(app.clock.now_secs()),
        "customer_id": c.id,
        "created_at": rfc3339(c.created_at),
        "primary_identifier": profile["primary_identifier"],
        "attributes": attributes,
        "attribute_history": attribute_history,
        "consent": profile["consent"],
        "consent_history": c.consent_history.iter().map(|h| json!({
            "purpose": h.purpose, "granted": h.granted, "at": rfc3339(h.at), "source": h.source,
        })).collect::<Vec<_>>(),
        "identities": profile["identities"],
        "identifiers": profile["identifiers"],
        "merges": {"absorbed": c.absorbed, "merged_into": c.merged_into},
        "conflicts": conflicts,
        "timeline": timeline.iter().map(super::admin::entry_json).collect::<Vec<_>>(),
        "queued": {"outbound": queued, "reminders": reminders},
    });
    Ok(doc)
}

/// The widget user's own customer, or 404 when nothing is held about them.
async fn own_customer(
    app: &App,
    user: &chatcrafter_core::channel::AuthenticatedUser,
) -> Result<String, ApiError> {
    app.db
        .find_identity("widget", &user.subject)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            ApiError::caller(
                StatusCode::NOT_FOUND,
                "not_found",
                "nothing is held about you yet",
            )
        })
}

/// Records a widget user's own privacy request in the audit log (actor
/// `widget`, never their id).
async fn audit_self(app: &App, action: &str, route: &str, customer: &str) -> Result<(), ApiError> {
    let draft = chatcrafter_core::audit::AuditDraft {
        actor: "widget".into(),
        action: action.into(),
        route: route.into(),
        customer_id: Some(customer.to_string()),
        outcome: "ok".into(),
    };
    app.audit.append(draft).await.map_err(|e| {
        ApiError::fault(
            super::Fault::Store,
            "store_unavailable",
            format!("not answered: its audit entry could not be written ({e})"),
        )
    })
}

/// `GET /widget/v1/me/export`: the widget user's own data, as the admin
/// export's JSON (Bearer JWT).
pub(super) async fn my_export(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let (user, origin) = match super::widget::caller(app, req, "GET, OPTIONS")? {
        super::widget::Caller::Preflight(resp) => return Ok(resp),
        super::widget::Caller::User { user, origin } => (user, origin),
    };
    let id = own_customer(app, &user).await?;
    let doc = export_doc(app, &id).await?;
    audit_self(app, "self.export", "GET /widget/v1/me/export", &id).await?;
    let resp = ops::text(
        200,
        "application/json",
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    );
    Ok(super::widget::with_cors(
        attachment(resp, "my-data.json"),
        origin.as_deref(),
    ))
}

/// `POST /widget/v1/me/erasure-request`: the widget user asks to be
/// forgotten; the request waits in the admin's review queue (kind
/// `erasure_request`) — 202 `{"request_id"}`.
pub(super) async fn my_erasure_request(
    app: &App,
    req: &mut Req,
    _: Params<'_>,
) -> Result<Resp, ApiError> {
    let (user, origin) = match super::widget::caller(app, req, "POST, OPTIONS")? {
        super::widget::Caller::Preflight(resp) => return Ok(resp),
        super::widget::Caller::User { user, origin } => (user, origin),
    };
    let id = own_customer(app, &user).await?;
    let request = app
        .db
        .request_erasure(&id, "web widget", app.clock.now_secs())
        .await
        .map_err(ApiError::from)?;
    audit_self(
        app,
        "self.erasure_request",
        "POST /widget/v1/me/erasure-request",
        &id,
    )
    .await?;
    Ok(super::widget::with_cors(
        ops::text(
            202,
            "application/json",
            json!({"request_id": request}).to_string(),
        ),
        origin.as_deref(),
    ))
}

/// The export as one long-format CSV: `section,item,field,value`, one row
/// per value (RFC 4180 quoting; cells a spreadsheet would run as a formula
/// are neutralized).
fn csv(doc: &Value) -> String {
    let mut out = String::from("section,item,field,value\r\n");
    let mut row = |section: &str, item: &str, field: &str, value: &Value| {
        let value = match value {
            Value::Null => return,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&[section, item, field, &value].map(cell).join(","));
        out.push_str("\r\n");
    };
    for field in ["format", "exported_at", "customer_id", "created_at"] {
        row("customer", "", field, &doc[field]);
    }
    if let Some(p) = doc["primary_identifier"].as_object() {
        row(
            "customer",
            "",
            "primary_identifier",
            &json!(format!(
                "{}:{}",
                p.get("kind").and_then(Value::as_str).unwrap_or_default(),
                p.get("value").and_then(Value::as_str).unwrap_or_default()
            )),
        );
    }
    let mut items = |section: &str, list: &Value, key: &str| {
        for (n, item) in list.as_array().into_iter().flatten().enumerate() {
            let name = item[key]
                .as_str()
                .map_or_else(|| n.to_string(), String::from);
            for (field, value) in item.as_object().into_iter().flatten() {
                if field != key {
                    row(section, &name, field, value);
                }
            }
        }
    };
    items("attribute", &doc["attributes"], "name");
    items("identity", &doc["identities"], "id");
    items("identifier", &doc["identifiers"], "value");
    items("conflict", &doc["conflicts"], "id");
    items("timeline", &doc["timeline"], "id");
    items("consent_history", &doc["consent_history"], "");
    items("attribute_history", &doc["attribute_history"], "name");
    items("queued_outbound", &doc["queued"]["outbound"], "id");
    items("queued_reminder", &doc["queued"]["reminders"], "id");
    for (purpose, c) in doc["consent"].as_object().into_iter().flatten() {
        for (field, value) in c.as_object().into_iter().flatten() {
            row("consent", purpose, field, value);
        }
    }
    for absorbed in doc["merges"]["absorbed"].as_array().into_iter().flatten() {
        row("merge", "", "absorbed", absorbed);
    }
    row("merge", "", "merged_into", &doc["merges"]["merged_into"]);
    out
}

/// One CSV cell: quoted when it must be, and a leading `=`, `+`, `-`, `@`,
/// tab or carriage return (a formula to a spreadsheet) neutralized with a
/// leading `'`.
fn cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// `POST /v1/consent` `{"identifier":{"kind","value"},"purpose","granted"}`:
/// a consent given or withdrawn through the business's own systems (source
/// `api`), kept with its time in the customer's consent history; 200 with
/// the customer's consent now.
pub(super) async fn set_consent(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ident {
        kind: String,
        value: String,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        identifier: Ident,
        purpose: String,
        granted: bool,
    }
    let b: Body = super::admin::json_body(app, req).await?;
    let valid = !b.purpose.is_empty()
        && b.purpose.len() <= 64
        && b.purpose
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if !valid {
        return Err(ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!(
                "purpose: `{}` must be 1 to 64 of a-z, 0-9 and `_`",
                b.purpose
            ),
        ));
    }
    let id = super::admin::lookup(
        app,
        &format!("{}:{}", b.identifier.kind, b.identifier.value),
    )
    .await?;
    super::note_audit_customer(&id);
    let attrs = std::collections::BTreeMap::from([(
        format!("consent.{}", b.purpose),
        if b.granted { "granted" } else { "denied" }.to_string(),
    )]);
    let c = app
        .db
        .set_attributes(&id, &attrs, "api", app.clock.now_secs())
        .await
        .map_err(ApiError::from)?;
    Ok(ops::text(
        200,
        "application/json",
        json!({"customer_id": c.id, "consent": super::admin::customer_json(&c, app.primary_identifier)["consent"]}).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralized() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1 555"), "'+1 555");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
    }
}
