//! The Redis backend, for several gateway nodes sharing one store.
//!
//! Units of work run optimistically: reads are `MGET`s over one multiplexed
//! connection (a connection manager that reconnects by itself); the commit
//! is one Lua script that checks every key read still holds the value read
//! and, only then, applies all writes — atomically, as Redis runs scripts.
//! A unit whose reads went stale is retried from scratch. A unit that only
//! reads needs no commit: resolving a known identity is one `MGET`.

use std::collections::BTreeMap;
use std::time::Duration;

use chatcrafter_core::store::{
    Backend, BoxFuture, Expiry, MAX_ATTEMPTS, Scope, StoreError, Txn, Work, Write, WriteSet,
};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

/// Checks reads, then applies writes. KEYS: read keys, then write keys.
/// ARGV[1] = number of read keys; then one expected value per read key
/// (`\0` = absent, `\1` + value = present); then one op per write key
/// (`\0` = delete, `\1` + value = set, `\2` + 20-digit seconds + value
/// = set, expiring that many seconds from now by Redis's own clock: a TTL,
/// never an absolute instant, so a gateway whose clock differs from
/// Redis's keeps a key exactly as long as it meant to). Returns 1 if
/// applied, 0 if stale.
const COMMIT: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  local want = ARGV[i + 1]
  local have = redis.call('GET', KEYS[i])
  if string.sub(want, 1, 1) == '\0' then
    if have then return 0 end
  else
    if (not have) or have ~= string.sub(want, 2) then return 0 end
  end
end
for j = n + 1, #KEYS do
  local op = ARGV[j + 1]
  local tag = string.sub(op, 1, 1)
  if tag == '\0' then
    redis.call('DEL', KEYS[j])
  elseif tag == '\2' then
    redis.call('SET', KEYS[j], string.sub(op, 22), 'EX', tonumber(string.sub(op, 2, 21)))
  else
    redis.call('SET', KEYS[j], string.sub(op, 2))
  end
end
return 1
"#;

/// The longest TTL written: about 100 years, far past any retention here,
/// and well inside what Lua's numbers hold exactly and Redis's `EX` takes.
const LONGEST_TTL: u64 = 100 * 365 * 86_400;

/// `MGET KEYS`, and if `KEYS[ARGV[1]]` holds `v`, also `GET ARGV[2]‖v‖ARGV[3]`:
/// a lookup and the record it names in one round trip.
const FOLLOW: &str = r#"
local vals = redis.call('MGET', unpack(KEYS))
local v = vals[tonumber(ARGV[1])]
local target = false
if v then target = redis.call('GET', ARGV[2] .. v .. ARGV[3]) end
return {vals, target}
"#;

/// A Redis store.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: String,
    commit: redis::Script,
    follow: redis::Script,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl Redis {
    /// Connects to `url` (`redis://` or `rediss://`, trusting the system's
    /// certificate store); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(redis::Client::open(url).map_err(err)?, prefix).await
    }

    /// Connects with a prepared client (e.g. one trusting a private CA).
    pub async fn connect_with(client: redis::Client, prefix: &str) -> Result<Self, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(err)?;
        Ok(Redis {
            conn,
            prefix: prefix.to_string(),
            commit: redis::Script::new(COMMIT),
            follow: redis::Script::new(FOLLOW),
        })
    }
}

struct RedisTxn {
    conn: ConnectionManager,
    follow: redis::Script,
    reads: BTreeMap<String, Option<Vec<u8>>>,
    writes: WriteSet,
}

impl Txn for RedisTxn {
    fn get_many<'a>(
        &'a mut self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, StoreError>> {
        Box::pin(async move {
            let missing: Vec<&String> = keys
                .iter()
                .filter(|k| !self.writes.contains(k) && !self.reads.contains_key(*k))
                .collect();
            if !missing.is_empty() {
                let values: Vec<Option<Vec<u8>>> = if missing.len() == 1 {
                    vec![self.conn.get(missing[0]).await.map_err(err)?]
                } else {
                    self.conn.mget(&missing).await.map_err(err)?
                };
                for (k, v) in missing.into_iter().zip(values) {
                    self.reads.insert(k.clone(), v);
                }
            }
            let reads = &self.reads;
            self.writes
                .read_through(keys, |k| Ok(reads.get(k).cloned().flatten()))
        })
    }

    fn get_many_following<'a>(
        &'a mut self,
        keys: &'a [String],
        follow: usize,
        prefix: &'a str,
        suffix: &'a str,
    ) -> BoxFuture<'a, Result<chatcrafter_core::store::Followed, StoreError>> {
        Box::pin(async move {
            // Fresh units only: keys already read or written this unit must
            // be answered from the unit's own view.
            if keys.is_empty()
                || keys
                    .iter()
                    .any(|k| self.reads.contains_key(k) || self.writes.contains(k))
            {
                return chatcrafter_core::store::follow_in_two_reads(
                    self, keys, follow, prefix, suffix,
                )
                .await;
            }
            let mut inv = self.follow.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            inv.arg(follow + 1).arg(prefix).arg(suffix);
            let (values, target): (Vec<Option<Vec<u8>>>, Option<Vec<u8>>) =
                inv.invoke_async(&mut self.conn).await.map_err(err)?;
            for (k, v) in keys.iter().zip(&values) {
                self.reads.insert(k.clone(), v.clone());
            }
            if let Some(id) = values.get(follow).cloned().flatten() {
                let key = format!("{prefix}{}{suffix}", String::from_utf8_lossy(&id));
                self.reads.insert(key, target.clone());
            }
            Ok((values, target))
        })
    }

    fn put(&mut self, key: &str, value: Vec<u8>) {
        self.writes.put(key, value);
    }

    fn delete(&mut self, key: &str) {
        self.writes.delete(key);
    }

    fn discard(&mut self) {
        self.writes.discard();
    }

    fn put_expiring(&mut self, key: &str, value: Vec<u8>, expiry: Expiry) {
        if expiry.ttl == 0 {
            // Its retention has already passed by the injected clock.
            self.writes.delete(key);
            return;
        }
        // `EX` refuses overlong values (a script error would apply half a
        // unit): at most a century.
        let expiry = Expiry {
            ttl: expiry.ttl.min(LONGEST_TTL),
            ..expiry
        };
        self.writes.put_expiring(key, value, expiry);
    }
}

fn tagged(present: bool, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 1);
    v.push(u8::from(present));
    v.extend_from_slice(value);
    v
}

impl Backend for Redis {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            for attempt in 0..MAX_ATTEMPTS {
                let mut txn = RedisTxn {
                    conn: self.conn.clone(),
                    follow: self.follow.clone(),
                    reads: BTreeMap::new(),
                    writes: WriteSet::default(),
                };
                let out = work(&mut txn, Scope::new()).await?;
                if txn.writes.is_empty() {
                    return Ok(out);
                }
                let mut inv = self.commit.prepare_invoke();
                inv.arg(txn.reads.len());
                for (k, v) in &txn.reads {
                    inv.key(k);
                    inv.arg(match v {
                        Some(v) => tagged(true, v),
                        None => tagged(false, b""),
                    });
                }
                for (k, w) in txn.writes.iter() {
                    inv.key(k);
                    inv.arg(match w {
                        Write::Put(v) => tagged(true, v),
                        Write::PutUntil(v, e) => {
                            let mut op = format!("\u{2}{:020}", e.ttl).into_bytes();
                            op.extend_from_slice(v);
                            op
                        }
                        Write::Delete => tagged(false, b""),
                    });
                }
                let mut conn = self.conn.clone();
                let applied: i64 = inv.invoke_async(&mut conn).await.map_err(err)?;
                if applied == 1 {
                    return Ok(out);
                }
                // Someone else wrote what we read: back off a little, with
                // jitter from the attempt number, and start over.
                let pause = Duration::from_micros(
                    200 * u64::from(attempt + 1) + u64::from(attempt * 37 % 150),
                );
                tokio::time::sleep(pause).await;
            }
            Err(StoreError::Contention(MAX_ATTEMPTS))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(err)
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<chatcrafter_core::store::ScanPage, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // Redis's own cursor: keys present throughout are returned at
            // least once, whatever is written meanwhile.
            let start: u64 = match cursor {
                Some(c) => c
                    .parse()
                    .map_err(|_| StoreError::Unavailable(format!("not a scan cursor: {c}")))?,
                None => 0,
            };
            // The prefix is matched literally: its glob characters escaped.
            let mut pattern = String::with_capacity(prefix.len() + 1);
            for ch in prefix.chars() {
                if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(ch);
            }
            pattern.push('*');
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(start)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let mut page = Vec::with_capacity(keys.len());
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
                page.extend(
                    keys.into_iter()
                        .zip(values)
                        .filter_map(|(k, v)| v.map(|v| (k, v))),
                );
            }
            Ok((page, (next != 0).then(|| next.to_string())))
        })
    }

    fn dump(&self) -> BoxFuture<'_, Result<Vec<(String, Vec<u8>)>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(err)?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            let mut out = Vec::new();
            for k in keys {
                let v: Option<Vec<u8>> = conn.get(&k).await.map_err(err)?;
                if let Some(v) = v {
                    out.push((k, v));
                }
            }
            Ok(out)
        })
    }
}
