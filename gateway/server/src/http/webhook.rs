//! `/webhooks/{channel}`: handshake, verification on the raw bytes, the
//! plugin's `parse-inbound`, the pipeline, and the channel's expected answer.

use bytes::Bytes;
use std::sync::Arc;

use tracing::Instrument as _;

use chatcrafter_core::channel::{AnswerRules, Header, Inbound, InboundRequest, RequestContext};
use chatcrafter_core::verify::handshake::Outcome;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode, header};

use super::{ApiError, Fault, Params, Req, Resp, body, ops};
use crate::app::App;
use crate::ids::request_id;
use crate::plugin::Plugin;

pub(super) async fn handle(app: &App, req: &mut Req, p: Params<'_>) -> Result<Resp, ApiError> {
    let channel = p[0];
    let (Some(rt), Some(plugin)) = (app.channels.get(channel), app.plugins.get(channel)) else {
        return Err(unknown(channel));
    };
    let request_id = request_id();
    let span = inbound_span(channel, &plugin, &request_id);
    serve(app, req, channel, rt, plugin, request_id)
        .instrument(span)
        .await
}

/// The span of one inbound request: its channel, the plugin and version
/// that parse it, the host's request id, and — once resolution has run —
/// the customer's id. Never a phone, email or message text.
pub(super) fn inbound_span(channel: &str, plugin: &Plugin, request_id: &str) -> tracing::Span {
    let m = plugin.manifest();
    tracing::info_span!(
        "inbound",
        channel = %channel,
        plugin = %format_args!("{}@{}", m.id, m.version),
        request_id = %request_id,
        customer_id = tracing::field::Empty,
    )
}

async fn serve(
    app: &App,
    req: &mut Req,
    channel: &str,
    rt: &crate::app::ChannelRuntime,
    plugin: Arc<Plugin>,
    request_id: String,
) -> Result<Resp, ApiError> {
    let query = req.uri().query().unwrap_or("");
    match rt.handshake.respond(req.method().as_str(), query) {
        Outcome::Accept(challenge) => return Ok(ops::text(200, "text/plain", challenge)),
        Outcome::Reject => {
            app.metrics.inc(
                "gateway_verification_failures_total",
                &[("channel", channel), ("reason", "handshake_token")],
            );
            return Err(ApiError::caller(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the handshake token does not match",
            ));
        }
        Outcome::NotHandshake => {}
    }
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(req.method(), "POST"));
    }
    let raw = body::read_capped(app, req).await?;
    let headers = headers_of(req);
    let now_ms = app.clock.now_ms();
    if let Err(e) = rt.verifier.verify(&headers, &raw, now_ms / 1000) {
        app.metrics.inc(
            "gateway_verification_failures_total",
            &[("channel", channel), ("reason", e.code())],
        );
        return Err(ApiError::caller(
            StatusCode::UNAUTHORIZED,
            e.code(),
            e.to_string(),
        ));
    }
    let request = plugin_request(
        req,
        headers,
        rt.verifier.secret_header(),
        &raw,
        RequestContext {
            received_at_ms: now_ms,
            request_id: request_id.clone(),
            user: None,
            settings: rt.settings.clone(),
        },
    );
    let kept_body = raw.bytes.clone();
    let inbound = match parse(app, channel, &plugin, request).await {
        Ok(i) => i,
        Err(mut e) => {
            if e.code == "malformed_payload" {
                // The plugin's words may quote the payload (a card number
                // in a message): they go to the sealed quarantine, and the
                // answer names only the request.
                let m = plugin.manifest();
                let answer = format!(
                    "plugin {}@{} could not parse the request; it is kept for inspection as request {request_id} (GET /admin/v1/malformed)",
                    m.id, m.version
                );
                let error = std::mem::replace(&mut e.message, answer);
                keep_malformed(app, channel, request_id, &error, &kept_body, now_ms / 1000).await;
            }
            return Err(e);
        }
    };
    accept(app, channel, &inbound).await?;
    Ok(plugin_response(&inbound))
}

/// A request to `channel`'s webhook made inside the gateway (the dev-mode
/// demo plays a customer's phone this way): verified on its bytes, parsed
/// and recorded exactly as one from the network.
pub(super) async fn inject(
    app: &App,
    channel: &str,
    headers: Vec<Header>,
    body: Vec<u8>,
) -> Result<Inbound, ApiError> {
    let (Some(rt), Some(plugin)) = (app.channels.get(channel), app.plugins.get(channel)) else {
        return Err(unknown(channel));
    };
    let now_ms = app.clock.now_ms();
    rt.verifier
        .verify(&headers, &body, now_ms / 1000)
        .map_err(|e| ApiError::caller(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))?;
    let request_id = request_id();
    let span = inbound_span(channel, &plugin, &request_id);
    let path = format!("/webhooks/{channel}");
    let request = InboundRequest::for_plugin(
        ("POST", &path, ""),
        headers,
        rt.verifier.secret_header(),
        &body,
        RequestContext {
            received_at_ms: now_ms,
            request_id,
            user: None,
            settings: rt.settings.clone(),
        },
    );
    async {
        let inbound = parse(app, channel, &plugin, request).await?;
        accept(app, channel, &inbound).await?;
        Ok(inbound)
    }
    .instrument(span)
    .await
}

fn unknown(channel: &str) -> ApiError {
    ApiError::caller(
        StatusCode::NOT_FOUND,
        "unknown_channel",
        format!("no channel `{channel}` is configured"),
    )
}

/// 404 `unknown_channel` when `path` is a webhook of a channel that is not
/// configured.
pub(super) fn unknown_channel(app: &App, path: &str) -> Option<ApiError> {
    let channel = path.strip_prefix("/webhooks/")?;
    (!channel.contains('/') && !app.channels.contains_key(channel)).then(|| unknown(channel))
}

/// The request as a plugin sees it: every header but those carrying
/// credentials (`authorization`, `cookie`, `proxy-authorization`, and the
/// channel's own secret header, if its verification uses one). The one
/// place webhook and widget requests are built for a plugin.
pub(super) fn plugin_request(
    req: &Req,
    headers: Vec<Header>,
    secret_header: Option<&str>,
    body: &[u8],
    context: RequestContext,
) -> InboundRequest {
    let uri = req.uri();
    InboundRequest::for_plugin(
        (req.method().as_str(), uri.path(), uri.query().unwrap_or("")),
        headers,
        secret_header,
        body,
        context,
    )
}

/// Keeps a malformed payload, sealed, for `GET /admin/v1/malformed`. Best
/// effort: the channel is answered 400 either way.
async fn keep_malformed(
    app: &App,
    channel: &str,
    request_id: String,
    error: &str,
    body: &[u8],
    at: u64,
) {
    let item = chatcrafter_core::quarantine::Malformed {
        request_id,
        channel: channel.to_string(),
        at,
        error: error.to_string(),
        body: body.to_vec(),
        truncated: false,
    };
    if let Err(e) = app.db.keep_malformed(&item).await {
        tracing::warn!(channel, "malformed payload not kept: {e}");
    }
}

/// Runs `parse-inbound` off the async workers, times it, classifies
/// failures, and checks and places the answer under `channel` (see
/// [`AnswerRules`]): a plugin that speaks for another channel, returns too
/// many events or overlong fields fails the request as its own fault.
pub(super) async fn parse(
    app: &App,
    channel: &str,
    plugin: &Arc<Plugin>,
    request: InboundRequest,
) -> Result<Inbound, ApiError> {
    let (result, took) =
        crate::plugin::call_bounded(&app.plugin_calls, plugin, "parse-inbound", async |p| {
            p.parse_inbound_owned(request).await
        })
        .await;
    let manifest = plugin.manifest();
    app.metrics.observe(
        "gateway_plugin_call_seconds",
        &[("plugin", &manifest.id), ("export", "parse-inbound")],
        took,
    );
    let rules = AnswerRules {
        plugin_id: &manifest.id,
        channel,
        max_events: app.config.server.max_events_per_request as usize,
        trust_verified_claims: app
            .config
            .channels
            .get(channel)
            .is_none_or(|c| c.trusts_verified_claims()),
        now: app.clock.now_secs(),
    };
    let checked =
        result.and_then(|inbound| rules.apply(inbound).map_err(|e| plugin.invalid_answer(&e)));
    checked.map_err(|e| {
        if e.fault() == Fault::Caller {
            // The plugin's words may quote the payload: they go to the
            // sealed quarantine, not to the log.
            tracing::info!("malformed payload, kept for inspection");
        } else {
            app.metrics.inc(
                "gateway_plugin_failures_total",
                &[("plugin", &manifest.id), ("kind", e.kind())],
            );
        }
        ApiError::from(e)
    })
}

/// Hands the events to the pipeline; only then may the channel hear 2xx.
pub(super) async fn accept(app: &App, channel: &str, inbound: &Inbound) -> Result<(), ApiError> {
    app.sink.accept(channel, inbound).await.map_err(|e| {
        if e.fault() == Fault::Store {
            return ApiError::from(e);
        }
        // Nothing the channel sent can make recording fail otherwise (a
        // record missing or unreadable): ours, answered 500 so the channel
        // retries, and logged.
        let message = format!(
            "recording the request failed: {}",
            ApiError::from(e).message
        );
        ApiError::fault(Fault::Gateway, "inbound_failed", message)
    })?;
    for e in &inbound.events {
        let kind = match e {
            chatcrafter_core::channel::InboundEvent::Message(_) => "message",
            chatcrafter_core::channel::InboundEvent::Status(_) => "status",
            chatcrafter_core::channel::InboundEvent::Ignored { .. } => "ignored",
        };
        app.metrics.inc(
            "gateway_inbound_events_total",
            &[("channel", channel), ("kind", kind)],
        );
    }
    Ok(())
}

/// The answer the plugin asked for.
pub(super) fn plugin_response(inbound: &Inbound) -> Resp {
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(inbound.response.status).unwrap_or(StatusCode::OK));
    for h in &inbound.response.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            header::HeaderValue::from_str(&h.value),
        ) {
            resp = resp.header(name, value);
        }
    }
    resp.body(Full::new(Bytes::from(inbound.response.body.clone())))
        .expect("valid response")
}

/// Request headers as the core sees them (lower-case names; values that are
/// not UTF-8 dropped).
pub(super) fn headers_of(req: &Req) -> Vec<Header> {
    req.headers()
        .iter()
        .filter_map(|(n, v)| {
            Some(Header {
                name: n.as_str().to_string(),
                value: v.to_str().ok()?.to_string(),
            })
        })
        .collect()
}
