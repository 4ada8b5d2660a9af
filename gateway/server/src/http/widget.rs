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
        return Err(not_configured());
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

/// 404 for every widget route of a gateway without `[widget]`.
pub(super) fn not_configured() -> ApiError {
    ApiError::caller(
        StatusCode::NOT_FOUND,
        "not_found",
        "the widget is not configured ([widget])",
    )
}

/// Who calls an authenticated widget route.
pub(super) enum Caller {
    /// A CORS preflight, answered.
    Preflight(Resp),
    /// A user with a valid token, from an allowed origin (if any).
    User {
        user: chatcrafter_core::channel::AuthenticatedUser,
        origin: Option<String>,
    },
}

/// The start of every authenticated widget route: the widget configured
/// (404), the origin allowed (403), a preflight answered for `methods`, the
/// Bearer token verified (401).
pub(super) fn caller(app: &App, req: &Req, methods: &'static str) -> Result<Caller, ApiError> {
    let (Some(config), Some(auth)) = (&app.config.widget, &app.widget) else {
        return Err(not_configured());
    };
    let origin = allowed_origin(config, req)?;
    if req.method() == Method::OPTIONS {
        return Ok(Caller::Preflight(with_cors(
            preflight(methods),
            origin.as_deref(),
        )));
    }
    let user = authenticate(app, auth, req, app.clock.now_secs())?;
    Ok(Caller::User { user, origin })
}

/// `GET /widget/v1/history`: the caller's unified cross-channel timeline,
/// newest last.
pub(super) async fn history(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let (user, origin) = match caller(app, req, "GET, OPTIONS")? {
        Caller::Preflight(resp) => return Ok(resp),
        Caller::User { user, origin } => (user, origin),
    };
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
pub(super) fn with_cors(mut resp: Resp, origin: Option<&str>) -> Resp {
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

/// The widget script, built into the binary.
const SCRIPT: &str = include_str!("../../assets/widget.js");

/// The script's ETag: a hash of its content.
static SCRIPT_ETAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let d = ring::digest::digest(&ring::digest::SHA256, SCRIPT.as_bytes());
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
});

/// `GET /widget/v1/widget.js`: the embeddable client, with a content-hash
/// ETag (304 when the browser has it) and a day's cache.
pub(super) async fn script(_: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let etag = SCRIPT_ETAG.as_str();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        ops::text(304, "text/javascript; charset=utf-8", String::new())
    } else {
        ops::text(200, "text/javascript; charset=utf-8", SCRIPT.to_string())
    };
    let h = resp.headers_mut();
    h.insert(
        header::ETAG,
        header::HeaderValue::from_str(etag).expect("hex"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=86400, stale-while-revalidate=604800"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// `POST /widget/v1/continue` `{"channel":"whatsapp"|"telegram"|…}` with the
/// widget's Bearer JWT: a one-time link token for the caller's customer, its
/// deep link and the link as a QR code (SVG), so the conversation moves to
/// the phone and stays one conversation. 409 `no_conversation` before the
/// user has written; 422 when the channel has no deep link.
pub(super) async fn continue_on(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let (user, origin) = match caller(app, req, "POST, OPTIONS")? {
        Caller::Preflight(resp) => return Ok(resp),
        Caller::User { user, origin } => (user, origin),
    };
    let now = app.clock.now_secs();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        channel: String,
    }
    let b: Body = super::admin::json_body(app, req).await?;
    let unprocessable =
        |m: String| ApiError::caller(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", m);
    let channel = app
        .config
        .channels
        .get(&b.channel)
        .ok_or_else(|| unprocessable(format!("channel: `{}` is not configured", b.channel)))?;
    let customer = app
        .db
        .find_identity("widget", &user.subject)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            ApiError::caller(
                StatusCode::CONFLICT,
                "no_conversation",
                "send a first message here before continuing on another channel",
            )
        })?;
    let token = app
        .db
        .create_link_token(
            &customer,
            &b.channel,
            super::admin::LINK_TOKEN_TTL_SECONDS,
            now,
        )
        .await
        .map_err(ApiError::from)?;
    let link = super::admin::deep_link(app, &b.channel, channel, &token).ok_or_else(|| {
        unprocessable(format!(
            "channel `{}` has no deep link (Telegram needs settings.bot_username, WhatsApp settings.display_phone_number)",
            b.channel
        ))
    })?;
    let qr = qrcode::QrCode::new(link.as_bytes())
        .map_err(|e| ApiError::fault(super::Fault::Gateway, "qr_failed", format!("QR code: {e}")))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(160, 160)
        .build();
    let body = serde_json::json!({
        "token": token,
        "link": link,
        "qr_svg": qr,
        "expires_at": chatcrafter_core::rfc3339(now + super::admin::LINK_TOKEN_TTL_SECONDS),
    });
    Ok(with_cors(
        ops::text(201, "application/json", body.to_string()),
        origin.as_deref(),
    ))
}
