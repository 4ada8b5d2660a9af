//! `/healthz`, `/readyz`, `/metrics`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, header};

use super::{ApiError, Fault, Params, Req, Resp};
use crate::app::App;

pub(super) async fn healthz(_: &App, _: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    Ok(text(200, "text/plain; charset=utf-8", "ok\n".into()))
}

/// Ready when the store answers and every configured channel has its
/// plugin loaded.
pub(super) async fn readyz(app: &App, _: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    use chatcrafter_core::store::Backend as _;
    if let Err(e) = app.db.backend().ping().await {
        return Err(ApiError::fault(Fault::Store, "not_ready", e.to_string()));
    }
    let missing: Vec<&String> = app
        .config
        .channels
        .keys()
        .filter(|c| app.plugins.get(c).is_none())
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::fault(
            Fault::Store,
            "not_ready",
            format!("plugins not loaded: {}", names.join(", ")),
        ));
    }
    let body = serde_json::json!({"status": "ready", "channels": app.plugins.channels()});
    Ok(text(200, "application/json", body.to_string()))
}

pub(super) async fn metrics(app: &App, _: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    Ok(text(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render(),
    ))
}

pub(super) fn text(status: u16, content_type: &str, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
