//! The Redis backend, for several gateway nodes sharing one store: the
//! core's [`OverRedis`] (its units, scripts and retries, shared with the
//! Spin edge) over a [`Link`] made of the `redis` crate's multiplexed
//! connection manager (it reconnects by itself). Scripts go as `EVALSHA`,
//! loaded on first use.

use std::time::Duration;

use chatcrafter_core::store::redis::{Link, OverRedis, Reply, Script, backoff_micros};
use chatcrafter_core::store::{BoxFuture, StoreError};
use redis::aio::ConnectionManager;

/// A Redis store.
pub type Redis = OverRedis<NativeLink>;

/// The `redis` crate's connection, as the core's [`Link`].
#[derive(Clone)]
pub struct NativeLink {
    conn: ConnectionManager,
    commit: redis::Script,
    follow: redis::Script,
}

impl std::fmt::Debug for NativeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeLink").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Connects to `url` (`redis://` or `rediss://`, trusting the system's
/// certificate store); keys start with `prefix`.
pub async fn connect(url: &str, prefix: &str) -> Result<Redis, StoreError> {
    connect_with(redis::Client::open(url).map_err(err)?, prefix).await
}

/// Connects with a prepared client (e.g. one trusting a private CA).
pub async fn connect_with(client: redis::Client, prefix: &str) -> Result<Redis, StoreError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    let conn = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(err)?;
    let link = NativeLink {
        conn,
        commit: redis::Script::new(chatcrafter_core::store::redis::COMMIT.source),
        follow: redis::Script::new(chatcrafter_core::store::redis::FOLLOW.source),
    };
    Ok(OverRedis::new(link, prefix))
}

fn reply(v: redis::Value) -> Result<Reply, StoreError> {
    Ok(match v {
        redis::Value::Nil => Reply::Nil,
        redis::Value::Int(i) => Reply::Int(i),
        redis::Value::BulkString(b) => Reply::Bytes(b),
        redis::Value::SimpleString(s) => Reply::Bytes(s.into_bytes()),
        redis::Value::Okay => Reply::Bytes(b"OK".to_vec()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Reply::List(items.into_iter().map(reply).collect::<Result<_, _>>()?)
        }
        redis::Value::ServerError(e) => return Err(err(format!("{e:?}"))),
        other => return Err(err(format!("unexpected reply {other:?}"))),
    })
}

impl Link for NativeLink {
    fn call(&self, args: Vec<Vec<u8>>) -> BoxFuture<'_, Result<Reply, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = redis::Cmd::new();
            for a in &args {
                cmd.arg(a.as_slice());
            }
            let v: redis::Value = cmd.query_async(&mut conn).await.map_err(err)?;
            reply(v)
        })
    }

    fn eval(
        &self,
        script: &'static Script,
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<Reply, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let s = match script.name {
                "commit" => &self.commit,
                "follow" => &self.follow,
                _ => &redis::Script::new(script.source),
            };
            let mut inv = s.prepare_invoke();
            for k in &keys {
                inv.key(k.as_slice());
            }
            for a in &args {
                inv.arg(a.as_slice());
            }
            let v: redis::Value = inv.invoke_async(&mut conn).await.map_err(err)?;
            reply(v)
        })
    }

    fn pause(&self, attempt: u32) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(Duration::from_micros(backoff_micros(
            attempt,
        ))))
    }
}
