//! The Spin bindings of the edge's traits: variables, outbound Redis, the
//! composed plugin, and the HTTP handler.

use std::sync::{Arc, Mutex};

use chatcrafter_core::channel::{ChannelError, Inbound, InboundRequest, Manifest};
use chatcrafter_core::store::redis::{Link, Reply};
use chatcrafter_core::store::{BoxFuture, StoreError};
use spin_sdk::http::{FullBody, HeaderMap, HeaderName, HeaderValue, StatusCode};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

use crate::edge::{self, Edge, WallClock};

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        inline: "package chatcrafter:edge; world edge { import chatcrafter:channel/plugin@0.2.0; }",
        path: "../../wit",
        world: "chatcrafter:edge/edge",
        generate_all,
    });
}

mod convert {
    #![allow(dead_code, reason = "the edge calls describe and parse-inbound only")]
    use super::bindings::chatcrafter::channel::plugin as wit;

    chatcrafter_core::plugin_conversions_0_2!();
}

/// The plugin composed into this component.
struct Composed;

impl edge::Plugin for Composed {
    fn describe(&self) -> Manifest {
        convert::manifest(bindings::chatcrafter::channel::plugin::describe())
    }

    fn parse_inbound(
        &self,
        request: InboundRequest,
        plugin_id: &str,
    ) -> Result<Inbound, ChannelError> {
        bindings::chatcrafter::channel::plugin::parse_inbound(&convert::inbound_request(request))
            .map(|i| convert::inbound(i, plugin_id))
            .map_err(convert::channel_error)
    }
}

/// Spin's variables.
struct SpinVariables;

impl edge::Variables for SpinVariables {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            match spin_sdk::variables::get(name).await {
                Ok(v) => Ok(Some(v)),
                Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Spin's outbound Redis as the core's [`Link`]: one connection, opened on
/// first use and again after a failure. Spin flattens nested replies; the
/// core's scripts answer flat arrays.
struct SpinRedis {
    address: String,
    conn: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for SpinRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinRedis").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl SpinRedis {
    async fn connection(&self) -> Result<Arc<Connection>, StoreError> {
        if let Some(c) = self.conn.lock().expect("one thread").clone() {
            return Ok(c);
        }
        let c = Arc::new(Connection::open(&self.address).await.map_err(unavailable)?);
        *self.conn.lock().expect("one thread") = Some(c.clone());
        Ok(c)
    }
}

impl Link for SpinRedis {
    fn call(&self, args: Vec<Vec<u8>>) -> BoxFuture<'_, Result<Reply, StoreError>> {
        Box::pin(async move {
            let conn = self.connection().await?;
            let mut args = args.into_iter();
            let command =
                String::from_utf8(args.next().unwrap_or_default()).map_err(unavailable)?;
            match conn
                .execute(command, args.map(RedisParameter::Binary))
                .await
            {
                Ok(results) => Ok(Reply::List(
                    results
                        .into_iter()
                        .map(|r| match r {
                            RedisResult::Nil => Reply::Nil,
                            RedisResult::Status(s) => Reply::Bytes(s.into_bytes()),
                            RedisResult::Int64(i) => Reply::Int(i),
                            RedisResult::Binary(b) => Reply::Bytes(b),
                        })
                        .collect(),
                )),
                Err(e) => {
                    // Reconnect next time: the connection may be gone.
                    *self.conn.lock().expect("one thread") = None;
                    Err(unavailable(e))
                }
            }
        })
    }
}

/// This instance's edge, built on its first request (Spin reuses an
/// instance for several requests).
static EDGE: Mutex<Option<Arc<Edge<SpinRedis>>>> = Mutex::new(None);

async fn edge() -> Result<Arc<Edge<SpinRedis>>, edge::SetupError> {
    if let Some(e) = EDGE.lock().expect("one thread").clone() {
        return Ok(e);
    }
    let e = Arc::new(
        Edge::load(
            &SpinVariables,
            &Composed,
            |url| SpinRedis {
                address: url.to_string(),
                conn: Mutex::new(None),
            },
            Arc::new(WallClock),
        )
        .await?,
    );
    *EDGE.lock().expect("one thread") = Some(e.clone());
    Ok(e)
}

type Answer = (StatusCode, HeaderMap, FullBody<bytes::Bytes>);

#[spin_sdk::http_service]
async fn handle(req: spin_sdk::http::Request) -> Answer {
    let resp = match edge().await {
        Err(e) => {
            // The log says why; an anonymous caller learns only that.
            eprintln!("chatcrafter edge: cannot start: {e}");
            edge::Response::error(
                500,
                "edge_misconfigured",
                "the edge cannot start; its log says why (docs/edge.md)",
            )
        }
        Ok(edge) => serve(&edge, req).await,
    };
    let mut map = HeaderMap::new();
    for (n, v) in &resp.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(n, v);
        }
    }
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, map, FullBody::new(bytes::Bytes::from(resp.body)))
}

/// Reads the request — its body only up to `server.max_body_bytes`, refused
/// from `content-length` before a byte is read — and hands it to the edge.
async fn serve(edge: &Edge<SpinRedis>, req: spin_sdk::http::Request) -> edge::Response {
    use http_body_util::BodyExt as _;
    let method = req.method().as_str().to_ascii_uppercase();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = edge::caller_headers(
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let max = edge.max_body_bytes();
    let declared = headers
        .iter()
        .find(|h| h.name == "content-length")
        .and_then(|h| h.value.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return edge::too_large(max);
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return edge::too_large(max);
        }
        Err(e) => {
            return edge::Response::error(
                400,
                "unreadable_body",
                format!("the body could not be read: {e}"),
            );
        }
    };
    edge.handle(
        &Composed,
        edge::Request {
            method,
            path,
            query,
            headers,
            body: body.to_vec(),
        },
    )
    .await
}
