//! Reading a request body under a size limit and a deadline: a declared
//! length over the limit is refused before a byte is read, and a streamed
//! body is cut off the moment it passes the limit.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, StatusCode, header};

use super::error::ApiError;

/// Reads the whole body under `server.max_body_bytes` and
/// `server.body_timeout_ms`.
pub(super) async fn read_capped(
    server: &chatcrafter_core::config::Server,
    req: &mut Request<Incoming>,
) -> Result<Bytes, ApiError> {
    read(
        req,
        server.max_body_bytes,
        "server.max_body_bytes",
        Duration::from_millis(server.body_timeout_ms),
    )
    .await
}

/// Reads the whole body, at most `max` bytes (the setting named `limit`),
/// within `timeout`.
pub(super) async fn read(
    req: &mut Request<Incoming>,
    max: u64,
    limit: &str,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::caller(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the {max} byte limit ({limit})"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(too_large());
    }
    let body = req.body_mut();
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::caller(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the body failed: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() as u64 + data.len() as u64 > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::caller(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} ms", timeout.as_millis()),
            ))
        })
}
