//! `GET /admin/v1/analytics/{report}` (INTERFACE §3.6): `channels`,
//! `switches`, `attribution?model=…`, `journeys` (and one customer's
//! touchpoints with `?customer_id=`), each also as CSV with
//! `?format=csv`. Without filters a report reads the core's counter shards
//! (a few keys, whatever the store's size); `from`, `to` or `channel` read
//! the per-customer summaries instead. Neither reads a timeline, and no
//! report holds personal data: an `analyst` may read them all.

use chatcrafter_core::analytics::{self, Counters, Filter};
use hyper::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, Params, Req, Resp};
use crate::app::App;

fn query(req: &Req, name: &str) -> Option<String> {
    chatcrafter_core::verify::query_param(req.uri().query().unwrap_or(""), name)
}

fn invalid(message: String) -> ApiError {
    ApiError::caller(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", message)
}

/// `?from=` / `?to=` as Unix seconds.
fn time(req: &Req, name: &str) -> Result<Option<u64>, ApiError> {
    match query(req, name) {
        None => Ok(None),
        Some(t) => chatcrafter_core::parse_rfc3339(&t)
            .map(Some)
            .ok_or_else(|| {
                invalid(format!(
                    "{name}: `{t}` is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"
                ))
            }),
    }
}

/// The report `p[0]`.
pub(super) async fn report(app: &App, req: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let name = p[0];
    let format = query(req, "format").unwrap_or_else(|| "json".into());
    if format != "json" && format != "csv" {
        return Err(invalid(format!("format: `{format}` — json or csv")));
    }
    let from = time(req, "from")?;
    let to = time(req, "to")?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(invalid("from is after to".into()));
    }
    let channel = query(req, "channel");
    if let Some(c) = &channel
        && !app.config.channels.contains_key(c)
        && !(app.config.widget.is_some() && c == "widget")
    {
        return Err(invalid(format!("channel: `{c}` is not configured")));
    }
    let filter = Filter {
        from,
        to,
        channel: channel.as_deref(),
    };
    let counters = || async {
        let c: Result<Counters, _> = if from.is_none() && to.is_none() && channel.is_none() {
            app.db.analytics_counters().await
        } else {
            app.db.analytics_filtered(&filter).await
        };
        c.map_err(ApiError::from)
    };
    let (doc, rows): (Value, Vec<Vec<String>>) = match name {
        "channels" => {
            let c = counters().await?;
            let doc = analytics::channels_report(&c);
            let rows = channel_rows(&doc, &analytics::channels_named(&c));
            (doc, rows)
        }
        "switches" => {
            let doc = analytics::switches_report(&counters().await?);
            let mut rows = vec![vec!["from".into(), "to".into(), "count".into()]];
            if let Some(m) = doc["matrix"].as_object() {
                for (from, tos) in m {
                    for (to, n) in tos.as_object().into_iter().flatten() {
                        rows.push(vec![from.clone(), to.clone(), n.to_string()]);
                    }
                }
            }
            (doc, rows)
        }
        "attribution" => {
            let model = query(req, "model").unwrap_or_else(|| "linear".into());
            if !analytics::MODELS.contains(&model.as_str()) {
                return Err(invalid(format!(
                    "model: `{model}` — one of {}",
                    analytics::MODELS.join(", ")
                )));
            }
            let doc = analytics::attribution_report(&counters().await?, &model);
            let mut rows = vec![vec![
                "model".into(),
                "channel".into(),
                "credit".into(),
                "conversions".into(),
            ]];
            for (ch, credit) in doc["credit"].as_object().into_iter().flatten() {
                rows.push(vec![
                    model.clone(),
                    ch.clone(),
                    credit.to_string(),
                    doc["conversions"].to_string(),
                ]);
            }
            (doc, rows)
        }
        "journeys" => match query(req, "customer_id") {
            Some(id) => {
                let (live, s) = app
                    .db
                    .analytics_touchpoints(&id)
                    .await
                    .map_err(ApiError::from)?;
                super::note_audit_customer(&live);
                let touchpoints: Vec<Value> = if s.excluded {
                    vec![]
                } else {
                    s.touches
                        .iter()
                        .filter(|t| filter.from.is_none_or(|f| t.at >= f))
                        .filter(|t| filter.to.is_none_or(|x| t.at <= x))
                        .filter(|t| filter.channel.is_none_or(|c| t.channel == c))
                        .map(|t| {
                            json!({"at": chatcrafter_core::rfc3339(t.at),
                                   "channel": t.channel, "kind": "message"})
                        })
                        .collect()
                };
                let mut rows = vec![vec!["at".into(), "channel".into(), "kind".into()]];
                for t in &touchpoints {
                    rows.push(vec![
                        t["at"].as_str().unwrap_or_default().into(),
                        t["channel"].as_str().unwrap_or_default().into(),
                        "message".into(),
                    ]);
                }
                let mut doc = json!({"customer_id": live, "touchpoints": touchpoints});
                if let Some(src) = s.source.as_ref().filter(|_| !s.excluded) {
                    doc["first_touch_source"] = json!(src);
                }
                (doc, rows)
            }
            None => {
                let doc = analytics::journeys_report(&counters().await?);
                let mut rows = vec![vec![
                    "path".into(),
                    "customers".into(),
                    "conversions".into(),
                ]];
                for p in doc["paths"].as_array().into_iter().flatten() {
                    let path: Vec<&str> = p["path"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    rows.push(vec![
                        path.join(" > "),
                        p["customers"].to_string(),
                        p["conversions"].to_string(),
                    ]);
                }
                (doc, rows)
            }
        },
        other => {
            return Err(ApiError::caller(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no report `{other}`; the reports are channels, switches, attribution and journeys"
                ),
            ));
        }
    };
    if format == "csv" {
        return Ok(super::ops::text(200, "text/csv; charset=utf-8", csv(&rows)));
    }
    Ok(super::admin::json_resp(200, &doc))
}

/// `channels` as one row per channel, the JSON fields as columns.
fn channel_rows(doc: &Value, channels: &std::collections::BTreeSet<String>) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "channel".into(),
        "first_touch".into(),
        "active".into(),
        "conversions".into(),
        "conversion_rate".into(),
    ]];
    for ch in channels {
        let cell = |field: &str| {
            doc[field]
                .get(ch)
                .map(Value::to_string)
                .unwrap_or_else(|| "0".into())
        };
        rows.push(vec![
            ch.clone(),
            cell("first_touch"),
            cell("active"),
            cell("conversions"),
            cell("conversion_rate"),
        ]);
    }
    rows
}

/// RFC 4180: fields with a comma, quote or line break are quoted.
fn csv(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for r in rows {
        let fields: Vec<String> = r
            .iter()
            .map(|f| {
                if f.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", f.replace('"', "\"\""))
                } else {
                    f.clone()
                }
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}
