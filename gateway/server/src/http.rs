//! The HTTP surface: hyper 1.x over hyper-util's auto connection builder
//! (HTTP/1.1 and HTTP/2), optional TLS 1.3 via rustls, and the routes of
//! INTERFACE §3.1–3.3.
//!
//! Limits: a connection must send its first byte within
//! `server.first_byte_timeout_ms` and at most `server.max_connections` are
//! open (see [`conn`]); request headers must arrive within
//! `server.header_timeout_ms` (a slow client is cut off), a body within `server.body_timeout_ms` and under
//! `server.max_body_bytes` (413 before the rest is read), and bodies held
//! at once stay under `server.max_inflight_body_bytes` (503 `overloaded`
//! over it). On SIGTERM or
//! SIGINT the listener closes and in-flight requests get
//! `server.shutdown_grace_ms` to finish (an open change feed of the
//! dashboard ends at once: see [`stream`]).

mod admin;
mod analytics;
mod body;
mod conn;
mod dashboard;
mod demo;
mod error;
mod ops;
mod privacy;
mod routes;
mod stream;
mod webhook;
mod widget;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::app::App;
pub use body::BodyBudget;
pub use demo::DemoKeys;
pub use error::{ApiError, Fault};

/// Response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// A request as hyper hands it over.
pub type Req = Request<Incoming>;

/// A route's `{…}` parameters, in the pattern's order.
pub type Params<'a> = &'a [&'a str];

/// Routes one request through the table in [`routes`]. Every path through
/// here ends in a response, counted in `gateway_http_requests_total` under
/// its route pattern.
pub async fn handle(app: Arc<App>, mut req: Req) -> Resp {
    let path = req.uri().path().to_string();
    let (route, found) = routes::find(req.method(), &path);
    let result = match found {
        Ok((r, params)) => match routes::authorize(&app, r, &req) {
            Ok(actor) => {
                match (r.audit, actor) {
                    // Its audit entry: written in the unit that makes the
                    // change, if the request changes something (see
                    // `RequestAudit`); otherwise on its own, before the
                    // answer leaves.
                    (Some(action), Some(actor)) => {
                        let draft = audit_draft(r, action, actor, &params, "ok");
                        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(draft)));
                        let result = REQUEST_AUDIT
                            .scope(slot.clone(), (r.handler)(&app, &mut req, &params))
                            .await;
                        let unwritten = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                        match unwritten {
                            Some(draft) => audited(&app, draft, result).await,
                            None => result,
                        }
                    }
                    _ => (r.handler)(&app, &mut req, &params).await,
                }
            }
            Err((e, actor)) => {
                if let Some(action) = r.audit {
                    let outcome = if actor == "-" {
                        "unauthenticated"
                    } else {
                        "refused"
                    };
                    let draft = audit_draft(r, action, actor, &params, outcome);
                    if let Err(failed) = app.audit.append(draft).await {
                        tracing::warn!(route, "a refused request was not audited: {failed}");
                    }
                }
                Err(*e)
            }
        },
        // An unknown channel is 404 whatever the method (INTERFACE §3.2).
        Err(e) => Err(webhook::unknown_channel(&app, &path).unwrap_or(e)),
    };
    let resp = result.unwrap_or_else(|e| {
        match e.fault {
            Fault::Caller => {}
            // A plugin's or a remote service's words may quote the request:
            // they go back to the caller, not to the log.
            Fault::Plugin | Fault::Upstream => {
                tracing::warn!(route, code = e.code, "request failed")
            }
            Fault::Store | Fault::Gateway => tracing::warn!(route, code = e.code, "{}", e.message),
        }
        e.into_response()
    });
    app.metrics.inc(
        "gateway_http_requests_total",
        &[("route", route), ("status", resp.status().as_str())],
    );
    resp
}

tokio::task_local! {
    /// The audit entry of the admin request this task serves, until a unit
    /// (or the request's end) has carried it.
    static REQUEST_AUDIT: std::sync::Arc<std::sync::Mutex<Option<chatcrafter_core::audit::AuditDraft>>>;
}

/// Names the customer of the admin request being served (found from its
/// body or query, not its path), for its audit entry.
pub(crate) fn note_audit_customer(id: &str) {
    let _ = REQUEST_AUDIT.try_with(|slot| {
        if let Some(d) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            d.customer_id = Some(id.to_string());
        }
    });
}

/// The store's [`chatcrafter_core::db::AuditHook`]: the first write unit
/// that commits while an admin change is being served carries its entry.
#[derive(Debug)]
pub struct RequestAudit;

impl chatcrafter_core::db::AuditHook for RequestAudit {
    fn pending(&self) -> Option<chatcrafter_core::audit::AuditDraft> {
        REQUEST_AUDIT
            .try_with(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .ok()
            .flatten()
    }

    fn committed(&self) {
        let _ =
            REQUEST_AUDIT.try_with(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

fn audit_draft(
    r: &routes::Route,
    action: &str,
    actor: &str,
    params: Params<'_>,
    outcome: &str,
) -> chatcrafter_core::audit::AuditDraft {
    // `{id}` is a customer on the customer and conversation routes.
    let by_path = (r.pattern.starts_with("/admin/v1/customers/{id}")
        || r.pattern.starts_with("/admin/v1/conversations/{id}"))
    .then(|| params.first().map(|p| p.to_string()))
    .flatten();
    chatcrafter_core::audit::AuditDraft {
        actor: actor.to_string(),
        action: action.to_string(),
        route: format!("{} {}", r.method, r.pattern),
        customer_id: by_path,
        outcome: outcome.to_string(),
    }
}

/// Writes the audit entry of an answered admin request that no unit
/// carried, with its outcome, before the answer leaves: a read whose entry
/// cannot be written is not answered (503).
async fn audited(
    app: &App,
    mut draft: chatcrafter_core::audit::AuditDraft,
    result: Result<Resp, ApiError>,
) -> Result<Resp, ApiError> {
    if let Err(e) = &result {
        draft.outcome = format!("error:{}", e.code);
    }
    let action = draft.action.clone();
    match app.audit.append(draft).await {
        Ok(()) => result,
        Err(e) if result.is_ok() => Err(ApiError::fault(
            Fault::Store,
            "store_unavailable",
            format!("the read was not answered: its audit entry could not be written ({e})"),
        )),
        Err(e) => {
            tracing::warn!(action, "a failed request was not audited: {e}");
            result
        }
    }
}

/// How the server stops.
pub type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let server = &app.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server.header_timeout_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    let limits = conn::Limits::within(server.max_connections, conn::raise_fd_limit());
    if limits.open < server.max_connections as usize {
        tracing::info!(
            "server.max_connections lowered from {} to {}: the process may open too few files (ulimit -n) for more",
            server.max_connections,
            limits.open
        );
    }
    let gate = conn::Gate::new(limits);
    // Tells streamed answers (the dashboard's change feeds) to end.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let grace = Duration::from_millis(server.shutdown_grace_ms);
    let handshake_timeout = Duration::from_millis(server.header_timeout_ms);
    let first_byte_timeout = Duration::from_millis(server.first_byte_timeout_ms);
    let mut accept_errors = conn::AcceptErrors::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like (the connection
                    // limit keeps room, but other files count too): back
                    // off briefly, and say so now and then, not each time.
                    app.metrics.inc("gateway_accept_errors_total", &[]);
                    if let Some(n) = accept_errors.failed(std::time::Instant::now()) {
                        tracing::warn!("accept failed {n} time(s) since the last report: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = match gate.admit().await {
            conn::Admission::Open(slot) => slot,
            conn::Admission::Overflow(slot) => {
                app.metrics
                    .inc("gateway_connections_refused_total", &[("answer", "503")]);
                let (builder, tls) = (builder.clone(), tls.clone());
                tokio::spawn(async move {
                    let answer = async {
                        serve_one(builder, stream, tls, service_fn(overloaded), None)
                            .await
                            .await
                    };
                    let _ = tokio::time::timeout(conn::OVERFLOW_DEADLINE, answer).await;
                    drop(slot);
                });
                continue;
            }
            conn::Admission::Refused => {
                app.metrics
                    .inc("gateway_connections_refused_total", &[("answer", "none")]);
                continue;
            }
        };
        let app = app.clone();
        // Each request carries the connection's slot, so a WebSocket
        // session keeps it once hyper has let the socket go.
        let slot = Arc::new(slot);
        let held = slot.clone();
        let stopping = stopping.clone();
        let service = service_fn(move |mut req: Req| {
            let app = app.clone();
            let stopping = stopping.clone();
            held.spoke();
            req.extensions_mut().insert(ws::ConnSlot(held.clone()));
            async move {
                let resp = handle(app, req).await;
                Ok::<_, Infallible>(stream::served(resp, Some(&stopping)))
            }
        });
        let (builder, tls, watcher) = (builder.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let mut evicted = slot.watch_silent();
            if let Err(why) = slot
                .first_byte(&stream, first_byte_timeout, &mut evicted)
                .await
            {
                return tracing::debug!(%peer, ?why, "connection closed before its first byte");
            }
            let serve = async {
                let serve = serve_one(builder, stream, tls, service, Some(watcher));
                match tokio::time::timeout(handshake_timeout, serve).await {
                    Ok(served) => served.await,
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            };
            // Until its first request reaches the service the connection
            // stays evictable, and it has header_timeout_ms to get there
            // (a TLS handshake, or an HTTP/2 preface, that never ends).
            let first_request = async {
                tokio::select! {
                    told = &mut evicted => if told.is_err() {
                        std::future::pending::<()>().await
                    },
                    () = tokio::time::sleep(handshake_timeout) => if slot.has_spoken() {
                        std::future::pending::<()>().await
                    },
                }
            };
            tokio::select! {
                () = serve => {}
                () = first_request => tracing::debug!(%peer, "connection closed before its first request"),
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(
        "shutting down: draining in-flight requests for up to {} ms",
        grace.as_millis()
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}

/// Completes the TLS handshake when there is one, then returns the future
/// that serves the connection (watched for graceful shutdown when given a
/// watcher).
async fn serve_one<S>(
    builder: auto::Builder<TokioExecutor>,
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    watcher: Option<hyper_util::server::graceful::Watcher>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
where
    S: hyper::service::Service<Req, Response = stream::Served, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    async fn run<C>(conn: C, watcher: Option<hyper_util::server::graceful::Watcher>)
    where
        C: hyper_util::server::graceful::GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let served = match watcher {
            Some(w) => w.watch(conn).await,
            None => conn.await,
        };
        if let Err(e) = served {
            tracing::debug!("connection: {e}");
        }
    }
    match tls {
        None => {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            Box::pin(run(conn, watcher))
        }
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                Box::pin(run(conn, watcher))
            }
            Err(e) => {
                tracing::debug!("TLS handshake: {e}");
                Box::pin(async {})
            }
        },
    }
}

/// The answer to a connection over `server.max_connections`.
async fn overloaded(_: Req) -> Result<stream::Served, Infallible> {
    let mut resp = ApiError::overloaded(
        "the gateway is serving as many connections as it may (server.max_connections); retry shortly",
        conn::RETRY_AFTER_SECONDS,
    )
    .into_response();
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    Ok(stream::served(resp, None))
}

/// A TLS 1.3-only acceptor (rustls with ring) from PEM files, offering h2
/// and http/1.1 by ALPN.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("server.tls_cert: {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("server.tls_cert: {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls_key: {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("server.tls_cert / server.tls_key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Binds the configured address.
pub async fn bind(listen: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
