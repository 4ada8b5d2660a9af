//! Errors as the HTTP API reports them: classified once by whose fault they
//! are, mapped to a status in one place, and written as
//! `{"error": {"code": "…", "message": "…"}}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

pub use chatcrafter_core::Fault;
use chatcrafter_core::db::DbError;

use crate::plugin::PluginError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// Whose fault.
    pub fault: Fault,
    /// For caller faults, the precise status (400, 401, 403, 404, 405, 413, …).
    pub status: Option<StatusCode>,
    /// snake_case code.
    pub code: &'static str,
    /// Human-readable, naming what is wrong; never a secret.
    pub message: String,
    /// Extra fields in the error object (e.g. a token's `reason`).
    pub extra: Option<(&'static str, String)>,
    /// Extra response headers (e.g. `allow` on 405).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    /// A caller error with an exact status.
    pub fn caller(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            fault: Fault::Caller,
            status: Some(status),
            code,
            message: message.into(),
            extra: None,
            headers: Vec::new(),
        }
    }

    /// A failure that is not the caller's.
    pub fn fault(fault: Fault, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            fault,
            status: None,
            code,
            message: message.into(),
            extra: None,
            headers: Vec::new(),
        }
    }

    /// 503 `overloaded` with `Retry-After`: a limit that protects the
    /// gateway is reached; the same request may succeed shortly.
    pub fn overloaded(message: impl Into<String>, retry_after_seconds: u64) -> Self {
        let mut e = Self::caller(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        e.headers
            .push((header::RETRY_AFTER, retry_after_seconds.to_string()));
        e
    }

    /// 404 for a route that does not exist.
    pub fn not_found(path: &str) -> Self {
        Self::caller(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )
    }

    /// 405 with the methods the route serves.
    pub fn method_not_allowed(method: &hyper::Method, allow: &str) -> Self {
        let mut e = Self::caller(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not served here; use {allow}"),
        );
        e.headers.push((header::ALLOW, allow.to_string()));
        e
    }

    /// The status this error is answered with: the one place faults become
    /// statuses.
    pub fn status(&self) -> StatusCode {
        match self.fault {
            Fault::Caller => self.status.unwrap_or(StatusCode::BAD_REQUEST),
            Fault::Plugin | Fault::Upstream => StatusCode::BAD_GATEWAY,
            Fault::Store => StatusCode::SERVICE_UNAVAILABLE,
            Fault::Gateway => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error and the message of each of its causes, outermost first,
    /// so a response or a log line keeps what the cause said.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    /// The JSON response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some((k, v)) = &self.extra {
            error[*k] = serde_json::Value::String(v.clone());
        }
        let body = serde_json::to_vec(&serde_json::json!({"error": error})).unwrap_or_default();
        let mut resp = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            resp = resp.header(k, v);
        }
        resp.body(Full::new(Bytes::from(body)))
            .expect("valid response")
    }
}

/// A store-level error, classified by its own [`DbError::fault`]; the code and
/// the caller's exact status are chosen here, once.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        let message = ApiError::chain(&e);
        match &e {
            DbError::NotFound(what) => ApiError::caller(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} does not exist"),
            ),
            DbError::Limit { .. } => {
                ApiError::caller(StatusCode::CONFLICT, "identity_limit", message)
            }
            DbError::Invalid(_) => {
                ApiError::caller(StatusCode::CONFLICT, "invalid_operation", message)
            }
            DbError::Store(_) if e.fault() == Fault::Store => {
                ApiError::fault(Fault::Store, "store_unavailable", message)
            }
            DbError::Seal { .. } => ApiError::fault(e.fault(), "sealed_value", message),
            _ => ApiError::fault(e.fault(), "unreadable_record", message),
        }
    }
}

/// A plugin error, classified by its own [`PluginError::fault`]: a refused
/// input is the caller's 400 `malformed_payload`, anything else the
/// plugin's 502 `plugin_failed`.
impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e.fault() {
            Fault::Caller => {
                ApiError::caller(StatusCode::BAD_REQUEST, "malformed_payload", e.to_string())
            }
            fault => ApiError::fault(fault, "plugin_failed", e.to_string()),
        }
    }
}
