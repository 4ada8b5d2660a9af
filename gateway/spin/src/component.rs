//! The Spin bindings of the edge's traits: variables, outbound Redis, the
//! composed plugin, and the HTTP handler.

use std::sync::{Arc, Mutex};

use chatcrafter_core::channel::{ChannelError, Header, Inbound, InboundRequest, Manifest};
use chatcrafter_core::store::redis::{Link, Reply};
use chatcrafter_core::store::{BoxFuture, StoreError};
use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{FullBody, HeaderMap, HeaderName, HeaderValue, StatusCode};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

use crate::edge::{self, Edge, WallClock};

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        runtime_path: "spin_sdk::wit_bindgen::rt",
        inline: "package chatcrafter:edge; world edge { import chatcrafter:channel/plugin@0.1.0; }",
        path: "../../wit",
        world: "chatcrafter:edge/edge",
        generate_all,
    });
}

mod convert {
    #![allow(dead_code, reason = "the edge calls describe and parse-inbound only")]
    use super::bindings::chatcrafter::channel::plugin as wit;

    chatcrafter_core::plugin_conversions_0_1!();
}

/// The plugin composed into this component.
struct Composed;

impl edge::Plugin for Composed {
    fn describe(&self) -> Manifest {
        convert::manifest(bindings::chatcrafter::channel::plugin::describe())
    }

    fn parse_inbound(&self, request: InboundRequest) -> Result<Inbound, ChannelError> {
        bindings::chatcrafter::channel::plugin::parse_inbound(&convert::inbound_request(request))
            .map(convert::inbound)
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
    let method = req.method().as_str().to_ascii_uppercase();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<Header> = req
        .headers()
        .iter()
        // Spin's own headers (`spin-full-url`, …) are not the caller's.
        .filter(|(n, _)| !n.as_str().starts_with("spin-"))
        .filter_map(|(n, v)| {
            Some(Header {
                name: n.as_str().to_string(),
                value: v.to_str().ok()?.to_string(),
            })
        })
        .collect();
    let resp = match req.into_body().bytes().await {
        Err(e) => edge::Response::error(
            400,
            "unreadable_body",
            format!("the body could not be read: {e:?}"),
        ),
        Ok(body) => match edge().await {
            Err(e) => edge::Response::error(500, "edge_misconfigured", e.to_string()),
            Ok(edge) => {
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
        },
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
