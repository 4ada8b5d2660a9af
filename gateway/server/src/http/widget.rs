//! The widget's REST route: `POST /widget/v1/messages` with a Bearer JWT,
//! and CORS for the configured origins.

use chatcrafter_core::channel::RequestContext;
use hyper::{Method, StatusCode, header};
use tracing::Instrument as _;

use super::webhook::{accept, headers_of, parse, plugin_request, plugin_response};
use super::{ApiError, Params, Req, Resp, body, ops};
use crate::app::App;
use crate::ids::request_id;

pub(super) async fn post_message(
    app: &App,
    req: &mut Req,
    _: Params<'_>,
) -> Result<Resp, ApiError> {
    let (Some(config), Some(auth), Some(plugin)) =
        (&app.config.widget, &app.widget, app.plugins.get("widget"))
    else {
        return Err(ApiError::caller(
            StatusCode::NOT_FOUND,
            "not_found",
            "the widget is not configured ([widget])",
        ));
    };
    let origin = allowed_origin(config, req)?;
    let with_cors = |resp: Resp| with_cors(resp, origin.as_deref());
    if req.method() == Method::OPTIONS {
        return Ok(with_cors(preflight("POST, OPTIONS")));
    }
    let request_id = request_id();
    let span = super::webhook::inbound_span("widget", &plugin, &request_id);
    let serve = async {
        let now_ms = app.clock.now_ms();
        let user = authenticate(app, auth, req, now_ms / 1000)?;
        let raw = body::read_capped(app, req).await?;
        let request = plugin_request(
            req,
            headers_of(req),
            None,
            &raw,
            RequestContext {
                received_at_ms: now_ms,
                request_id: request_id.clone(),
                user: Some(user),
                settings: vec![],
            },
        );
        let inbound = take(app, &plugin, request).await?;
        Ok(with_cors(plugin_response(&inbound)))
    };
    serve.instrument(span).await
}

/// A widget message, from the REST route or a live session: parsed by the
/// widget plugin and recorded; only then is it acknowledged.
pub(super) async fn take(
    app: &App,
    plugin: &std::sync::Arc<crate::plugin::Plugin>,
    request: chatcrafter_core::channel::InboundRequest,
) -> Result<chatcrafter_core::channel::Inbound, ApiError> {
    let inbound = parse(app, "widget", plugin, request).await?;
    accept(app, "widget", &inbound).await?;
    Ok(inbound)
}

/// `GET /widget/v1/history`: the caller's unified cross-channel timeline,
/// newest last.
pub(super) async fn history(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let (Some(config), Some(auth)) = (&app.config.widget, &app.widget) else {
        return Err(ApiError::caller(
            StatusCode::NOT_FOUND,
            "not_found",
            "the widget is not configured ([widget])",
        ));
    };
    let origin = allowed_origin(config, req)?;
    if req.method() == Method::OPTIONS {
        return Ok(with_cors(preflight("GET, OPTIONS"), origin.as_deref()));
    }
    let user = authenticate(app, auth, req, app.clock.now_secs())?;
    let customer = app
        .db
        .find_identity("widget", &user.subject)
        .await
        .map_err(ApiError::from)?;
    let body = match customer {
        Some(id) => {
            super::admin::timeline_json(&id, &app.db.timeline(&id).await.map_err(ApiError::from)?)
        }
        None => serde_json::json!({"customer_id": null, "entries": []}),
    };
    Ok(with_cors(
        ops::text(200, "application/json", body.to_string()),
        origin.as_deref(),
    ))
}

/// The request's `Origin`, if it sent one and `widget.allowed_origins` lists
/// it; 403 `origin_not_allowed` for any other origin.
pub(super) fn allowed_origin(
    config: &chatcrafter_core::config::Widget,
    req: &Req,
) -> Result<Option<String>, ApiError> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(String::from);
    if let Some(o) = &origin
        && !config.allowed_origins.iter().any(|a| a == o)
    {
        return Err(ApiError::caller(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("origin {o} is not in widget.allowed_origins"),
        ));
    }
    Ok(origin)
}

/// Adds the CORS answer for an allowed origin.
fn with_cors(mut resp: Resp, origin: Option<&str>) -> Resp {
    if let Some(o) = origin {
        let h = resp.headers_mut();
        if let Ok(v) = header::HeaderValue::from_str(o) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::VARY, header::HeaderValue::from_static("origin"));
    }
    resp
}

/// The answer to a CORS preflight.
fn preflight(methods: &'static str) -> Resp {
    let mut resp = ops::text(204, "text/plain", String::new());
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        header::HeaderValue::from_static("600"),
    );
    resp
}

/// The widget user a request's Bearer JWT names, or 401 `invalid_token`
/// with the reason (counted per reason in the verification metric).
fn authenticate(
    app: &App,
    auth: &chatcrafter_core::verify::jwt::WidgetAuth,
    req: &Req,
    now: u64,
) -> Result<chatcrafter_core::channel::AuthenticatedUser, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    auth.verify(token, now).map_err(|e| {
        app.metrics.inc(
            "gateway_verification_failures_total",
            &[("channel", "widget"), ("reason", e.reason())],
        );
        let mut err = ApiError::caller(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string());
        err.extra = Some(("reason", e.reason().to_string()));
        err.headers.push((
            header::WWW_AUTHENTICATE,
            "Bearer error=\"invalid_token\"".into(),
        ));
        err
    })
}
