//! A bench-only server for the load comparison in `scripts/load.sh`: the
//! same hyper setup with three handlers, so the only difference between
//! runs is the work per request.
//!
//! - `bare`: answer 200, touch nothing.
//! - `native`: read the body, verify the WhatsApp signature with the
//!   gateway's verifier, parse it with `serde_json` into typed structs.
//! - `plugin`: the same, but parse with the bundled WhatsApp plugin on a
//!   fresh instance (the gateway's path, without the pipeline).
//! - `plugin-reuse`: the same with `reuse_instances` (trusted plugins): warm
//!   instances serve one sender's messages. The load is one sender
//!   repeated, the case reuse is for; mixed senders fall back to fresh
//!   instances.
//!
//! `cargo run --release --example bench_server -- MODE PORT APP_SECRET`

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use chatcrafter_core::channel::{Header, InboundRequest, RequestContext};
use chatcrafter_core::verify::signature::Verifier;
use chatcrafter_gateway::plugin::{Plugin, PluginHost, bundled};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[path = "../benches/common/native_whatsapp.rs"]
mod native_whatsapp;
use native_whatsapp::Notification;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bare,
    Native,
    Plugin,
    PluginReuse,
}

struct State {
    mode: Mode,
    verifier: Verifier,
    plugin: Plugin,
}

async fn handle(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if state.mode == Mode::Bare {
        return Response::new(Full::new(Bytes::new()));
    }
    let headers: Vec<Header> = req
        .headers()
        .iter()
        .filter_map(|(n, v)| {
            Some(Header {
                name: n.as_str().into(),
                value: v.to_str().ok()?.into(),
            })
        })
        .collect();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if state.verifier.verify(&headers, &body, 0).is_err() {
        return Response::builder()
            .status(401)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let ok = match state.mode {
        Mode::Native => serde_json::from_slice::<Notification>(&body).is_ok(),
        _ => {
            let request = InboundRequest {
                method: "POST".into(),
                path: "/webhooks/whatsapp".into(),
                query: String::new(),
                headers,
                body: body.to_vec(),
                context: RequestContext {
                    received_at_ms: 0,
                    request_id: "bench".into(),
                    user: None,
                    settings: vec![],
                },
            };
            state.plugin.parse_inbound_owned(request).await.is_ok()
        }
    };
    let status = if ok { 200 } else { 400 };
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = match args.get(1).map(String::as_str) {
        Some("bare") => Mode::Bare,
        Some("native") => Mode::Native,
        Some("plugin") => Mode::Plugin,
        Some("plugin-reuse") => Mode::PluginReuse,
        _ => anyhow::bail!("usage: bench_server bare|native|plugin|plugin-reuse PORT APP_SECRET"),
    };
    let port: u16 = args.get(2).map(|p| p.parse()).transpose()?.unwrap_or(0);
    let secret = args.get(3).cloned().unwrap_or_default();
    let host = PluginHost::new()?;
    let wasm = bundled::PLUGINS
        .iter()
        .find(|(n, _)| *n == "whatsapp")
        .unwrap()
        .1;
    let mut plugin = host.load("builtin:whatsapp", wasm)?;
    plugin.set_instance_reuse(mode == Mode::PluginReuse);
    // The scheme the gateway applies: the plugin's own declaration.
    let verification = plugin.manifest().verification.clone();
    let verifier = Verifier::new(&verification, |_| Some(secret.as_str()), false, &[3; 32])?;
    let state = Arc::new(State {
        mode,
        verifier,
        plugin,
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            println!("listening on http://{}", listener.local_addr()?);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        })
}
