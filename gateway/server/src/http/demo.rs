//! The demo (dev mode, or `[server] demo = true` on a loopback address): a
//! small shop with the widget and a "log in as" form, a page that plays the
//! customer's WhatsApp and Telegram (requests signed with the configured
//! secrets and verified like any other), and the customer's unified
//! timeline. Every `/demo` route is 404 otherwise.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Params, Req, Resp, ops};
use crate::app::App;
use chatcrafter_core::channel::Header;

const SHOP: &str = include_str!("../../assets/demo.html");
const PHONE: &str = include_str!("../../assets/demo-phone.html");

/// How long a demo widget token lives.
const TOKEN_SECONDS: u64 = 3600;

/// The secrets the demo signs with, from the configuration.
#[derive(Debug)]
pub struct DemoKeys {
    widget_secret: String,
    whatsapp_app_secret: Option<String>,
    telegram_secret_token: Option<String>,
}

impl DemoKeys {
    /// The keys for `[server] demo = true`: the widget's HS secret (which
    /// it needs), and the `whatsapp` and `telegram` channels' secrets when
    /// they are configured.
    pub fn from_config(config: &chatcrafter_core::config::Config) -> anyhow::Result<Self> {
        let widget_secret = config
            .widget
            .as_ref()
            .and_then(|w| w.secret.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "server.demo: the demo mints widget tokens, so it needs [widget] secret (HS256)"
                )
            })?;
        let secret = |channel: &str, name: &str| {
            config
                .channels
                .get(channel)
                .and_then(|c| c.secrets.get(name).cloned())
        };
        Ok(DemoKeys {
            widget_secret,
            whatsapp_app_secret: secret("whatsapp", "app_secret"),
            telegram_secret_token: secret("telegram", "secret_token"),
        })
    }
}

/// The demo's keys — only for a request made on this machine: the demo
/// must be on, the `Host` a loopback name (no DNS rebinding), and nothing
/// in between (a proxy's `Forwarded`/`X-Forwarded-For`/`X-Real-IP`).
fn secrets<'a>(app: &'a App, req: &Req) -> Result<&'a DemoKeys, ApiError> {
    let not_here = |why: &str| {
        ApiError::caller(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "the demo runs in dev mode (gateway serve without --config) or with [server] demo = true, {why}"
            ),
        )
    };
    let keys = app.demo.as_ref().ok_or_else(|| not_here("and is off"))?;
    let h = req.headers();
    if ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| h.contains_key(*name))
    {
        return Err(not_here("never through a proxy"));
    }
    let host = h
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(not_here("for a loopback Host only"));
    }
    Ok(keys)
}

fn html(page: &'static str) -> Resp {
    let mut resp = ops::text(200, "text/html; charset=utf-8", page.to_string());
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// `GET /demo`: the shop.
pub(super) async fn shop(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    secrets(app, req)?;
    Ok(html(SHOP))
}

/// `GET /demo/phone`: the customer's phone.
pub(super) async fn phone(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    secrets(app, req)?;
    Ok(html(PHONE))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

/// `POST /demo/token` `{"sub","name"?,"email"?,"phone"?}`: a widget JWT
/// signed with the dev secret, as a business's backend would mint one for
/// a logged-in user (its email and phone marked verified).
pub(super) async fn token(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let s = secrets(app, req)?;
    let login: Login = super::admin::json_body(app, req).await?;
    if login.sub.trim().is_empty() {
        return Err(ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "sub: the user id is empty",
        ));
    }
    let now = app.clock.now_secs();
    let mut claims = json!({"sub": login.sub, "iat": now, "exp": now + TOKEN_SECONDS});
    let mut set = |k: &str, v: Option<String>, verified: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            claims[k] = json!(v.trim());
            if let Some(f) = verified {
                claims[f] = json!(true);
            }
        }
    };
    set("name", login.name, None);
    set("email", login.email, Some("email_verified"));
    set("phone", login.phone, Some("phone_number_verified"));
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(s.widget_secret.as_bytes()),
    )
    .map_err(|e| ApiError::fault(super::Fault::Gateway, "token_failed", e.to_string()))?;
    Ok(ops::text(
        200,
        "application/json",
        json!({"token": token, "expires_at": now + TOKEN_SECONDS}).to_string(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneMessage {
    channel: String,
    /// WhatsApp: the phone (digits, with or without `+`); Telegram: the
    /// user id.
    from: String,
    #[serde(default)]
    name: Option<String>,
    text: String,
}

/// `POST /demo/send` `{"channel":"whatsapp"|"telegram","from","name"?,"text"}`:
/// the customer writes from their phone — a webhook request built as the
/// channel builds it, signed with the dev secret, verified and recorded
/// like one from the network.
pub(super) async fn send(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    let s = secrets(app, req)?;
    let m: PhoneMessage = super::admin::json_body(app, req).await?;
    let now = app.clock.now_secs();
    let bad = |what: &str| {
        ApiError::caller(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            what.to_string(),
        )
    };
    let nonce = nonce_hex(&crate::ids::random_bytes());
    let name = m.name.unwrap_or_else(|| "Demo customer".into());
    let (headers, body) = match m.channel.as_str() {
        "whatsapp" => {
            let wa_id: String = m.from.chars().filter(char::is_ascii_digit).collect();
            if wa_id.len() < 8 {
                return Err(bad(
                    "from: a phone number with its country code, like +14155552671",
                ));
            }
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "demo", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": crate::dev::DEMO_WHATSAPP_NUMBER.trim_start_matches('+'), "phone_number_id": "100000000000001"},
                "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": format!("wamid.demo.{nonce}"), "timestamp": now.to_string(),
                              "type": "text", "text": {"body": m.text}}]}}]}]})
            .to_string()
            .into_bytes();
            let secret = s
                .whatsapp_app_secret
                .as_deref()
                .ok_or_else(|| bad("channel: no `whatsapp` channel is configured"))?;
            let sig = hmac_hex(secret.as_bytes(), &body);
            (
                vec![header("x-hub-signature-256", &format!("sha256={sig}"))],
                body,
            )
        }
        "telegram" => {
            let user: u64 = m
                .from
                .trim()
                .parse()
                .map_err(|_| bad("from: a Telegram user id (digits)"))?;
            let update_id =
                u32::from_be_bytes(crate::ids::random_bytes()[..4].try_into().expect("4 bytes"))
                    >> 1;
            let body =
                json!({"update_id": update_id, "message": {"message_id": update_id, "date": now,
                "from": {"id": user, "is_bot": false, "first_name": name},
                "chat": {"id": user, "type": "private", "first_name": name},
                "text": m.text}})
                .to_string()
                .into_bytes();
            (
                vec![header(
                    "x-telegram-bot-api-secret-token",
                    s.telegram_secret_token
                        .as_deref()
                        .ok_or_else(|| bad("channel: no `telegram` channel is configured"))?,
                )],
                body,
            )
        }
        other => {
            return Err(bad(&format!(
                "channel: `{other}` — the demo phone plays whatsapp or telegram"
            )));
        }
    };
    let mut headers = headers;
    headers.push(header("content-type", "application/json"));
    super::webhook::inject(app, &m.channel, headers, body).await?;
    Ok(ops::text(
        202,
        "application/json",
        json!({"sent": true}).to_string(),
    ))
}

/// `GET /demo/timeline?sub=<user>`: the logged-in demo user's unified
/// timeline, as the admin API shows it.
pub(super) async fn timeline(app: &App, req: &mut Req, _: Params<'_>) -> Result<Resp, ApiError> {
    secrets(app, req)?;
    let sub = chatcrafter_core::verify::query_param(req.uri().query().unwrap_or(""), "sub")
        .unwrap_or_default();
    let customer = app
        .db
        .find_identity("widget", &sub)
        .await
        .map_err(ApiError::from)?;
    let body = match customer {
        Some(id) => {
            super::admin::timeline_json(&id, &app.db.timeline(&id).await.map_err(ApiError::from)?)
        }
        None => json!({"customer_id": null, "entries": []}),
    };
    Ok(ops::text(200, "application/json", body.to_string()))
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    chatcrafter_core::verify::hex_encode(ring::hmac::sign(&key, body).as_ref())
}

fn nonce_hex(b: &[u8]) -> String {
    chatcrafter_core::verify::hex_encode(&b[..8])
}
