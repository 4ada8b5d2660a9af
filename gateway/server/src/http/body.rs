//! Reading a request body under a size limit, a deadline and the budget of
//! bytes held at once: a declared length over the limit is refused before
//! a byte is read, a streamed body is cut off the moment it passes the
//! limit, and a body that would pass `server.max_inflight_body_bytes` is
//! answered 503 `overloaded` (with `Retry-After`) instead of waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, StatusCode, header};

use super::error::ApiError;
use crate::app::App;

/// The budget is counted in KiB, so a semaphore's `u32` requests cover any
/// body size.
const UNIT: u64 = 1024;

/// Bodies held at once, all connections together
/// (`server.max_inflight_body_bytes`).
#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    bytes: u64,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        BodyBudget {
            // Rounded up, as each body's share is: a budget equal to
            // `max_body_bytes` always fits the largest body.
            units: Arc::new(Semaphore::new(bytes.div_ceil(UNIT) as usize)),
            bytes,
        }
    }

    /// Takes room for `bytes` more, or says the budget is spent.
    fn take(&self, bytes: u64, held: &mut Option<OwnedSemaphorePermit>) -> Result<(), ApiError> {
        let have = held.as_ref().map_or(0, |p| p.num_permits() as u64);
        let need = bytes.div_ceil(UNIT).saturating_sub(have);
        if need == 0 {
            return Ok(());
        }
        let more = u32::try_from(need)
            .ok()
            .and_then(|n| self.units.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ApiError::overloaded(
                    format!(
                        "the gateway already holds {} bytes of request bodies (server.max_inflight_body_bytes); retry shortly",
                        self.bytes
                    ),
                    1,
                )
            })?;
        match held {
            Some(p) => p.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// A body read under the budget: its room is given back when this is
/// dropped, once the request is done with it.
#[derive(Debug)]
pub(super) struct Held {
    /// The bytes as received.
    pub(super) bytes: Bytes,
    _room: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Held {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the whole body under `server.max_body_bytes`,
/// `server.body_timeout_ms` and the gateway's body budget.
pub(super) async fn read_capped(app: &App, req: &mut Request<Incoming>) -> Result<Held, ApiError> {
    let server = &app.config.server;
    let mut room = None;
    let bytes = read_with(
        req,
        server.max_body_bytes,
        "server.max_body_bytes",
        Duration::from_millis(server.body_timeout_ms),
        |total| {
            app.body_budget.take(total, &mut room).inspect_err(|_| {
                app.metrics.inc(
                    "gateway_overloaded_total",
                    &[("limit", "inflight_body_bytes")],
                );
            })
        },
    )
    .await?;
    Ok(Held { bytes, _room: room })
}

/// Reads the whole body, at most `max` bytes (the setting named `limit`),
/// within `timeout`.
pub(super) async fn read(
    req: &mut Request<Incoming>,
    max: u64,
    limit: &str,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    read_with(req, max, limit, timeout, |_| Ok(())).await
}

/// [`read`], asking `reserve` for room before holding each new total
/// (first for the declared length, when there is one).
async fn read_with(
    req: &mut Request<Incoming>,
    max: u64,
    limit: &str,
    timeout: Duration,
    mut reserve: impl FnMut(u64) -> Result<(), ApiError>,
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
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        reserve(len)?;
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
                let total = buf.len() as u64 + data.len() as u64;
                if total > max {
                    return Err(too_large());
                }
                reserve(total)?;
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
