//! The HTTP client that delivers what plugins render, and calls the
//! webhook agent: HTTP/1.1 and HTTP/2, TLS with the system's roots (ring),
//! pooled connections, a deadline per call. What to send, where it may go
//! and what an answer means are core's decisions ([`chatcrafter_core::delivery`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest answer body read from a channel API or the agent.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body (at most [`MAX_ANSWER_BYTES`]).
    pub body: Bytes,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be built (bad URL, header, method).
    #[error("bad request: {0}")]
    Request(String),
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Transport(String),
    /// No answer within the deadline.
    #[error("no answer within {0} ms")]
    Timeout(u128),
}

/// A pooled HTTP(S) client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the system's root certificates (none found is
    /// logged: plain-HTTP destinations still work, HTTPS ones fail
    /// clearly).
    pub fn new() -> Self {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("no system root certificates ({e}); HTTPS deliveries will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        HttpClient { inner }
    }

    /// Sends one request and reads the answer, all within `deadline`.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<Answer, CallError> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Request(e.to_string()))?;
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| CallError::Transport(transport_error(&e)))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout(deadline.as_millis())))
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The client error with its cause (hyper-util's own message is only
/// "client error (Connect)").
fn transport_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
