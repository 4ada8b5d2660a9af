//! The Redis backend's protocol, written once for every host that speaks
//! to Redis: the native gateway (the `redis` crate) and the Spin edge
//! (Spin's outbound Redis) run these same units, scripts and key table over
//! one shared Redis, so both see the same customers.
//!
//! Units of work run optimistically: reads are `MGET`s; the commit is one
//! Lua script ([`COMMIT`]) that checks every key read still holds the value
//! read and, only then, applies all writes — atomically, as Redis runs
//! scripts. A unit whose reads went stale is retried from scratch. A unit
//! that only reads needs no commit: resolving a known identity is one
//! [`FOLLOW`] script.
//!
//! A host supplies only a [`Link`]: "send this command, give me the
//! reply". Replies are [`Reply`] values; where a client flattens nested
//! arrays (Spin's does), the scripts here return flat arrays so nothing
//! depends on nesting.

use std::collections::BTreeMap;

use super::{
    Backend, BoxFuture, Dump, Expiry, Followed, MAX_ATTEMPTS, ScanPage, Scope, StoreError, Txn,
    Values, Work, Write, WriteSet,
};

/// A Lua script the units run, by its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    /// A short name, for hosts that cache scripts by it.
    pub name: &'static str,
    /// The Lua source.
    pub source: &'static str,
}

/// Checks reads, then applies writes. KEYS: read keys, then write keys.
/// ARGV[1] = number of read keys; then one expected value per read key
/// (`\0` = absent, `\1` + value = present); then one op per write key
/// (`\0` = delete, `\1` + value = set, `\2` + 20-digit seconds + value
/// = set, expiring that many seconds from now by Redis's own clock: a TTL,
/// never an absolute instant, so a gateway whose clock differs from
/// Redis's keeps a key exactly as long as it meant to; `\3` + a JSON object
/// of numbers = add them to the key's JSON object of counters, field by
/// field — not a read of the unit, so increments never conflict). Returns 1
/// if applied, 0 if stale.
pub const COMMIT: Script = Script {
    name: "commit",
    source: r#"
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
  elseif tag == '\3' then
    local cur = redis.call('GET', KEYS[j])
    local m = {}
    if cur then m = cjson.decode(cur) end
    for k, v in pairs(cjson.decode(string.sub(op, 2))) do
      local x = (m[k] or 0) + v
      if math.abs(x) < 1e-9 then m[k] = nil else m[k] = x end
    end
    if next(m) == nil then
      redis.call('SET', KEYS[j], '{}')
    else
      redis.call('SET', KEYS[j], cjson.encode(m))
    end
  else
    redis.call('SET', KEYS[j], string.sub(op, 2))
  end
end
return 1
"#,
};

/// `MGET KEYS`, and if `KEYS[ARGV[1]]` holds `v`, also
/// `GET ARGV[2]‖v‖ARGV[3]`: a lookup and the record it names in one round
/// trip. Returns a flat array: the `#KEYS` values, then the followed one
/// (nil where absent).
pub const FOLLOW: Script = Script {
    name: "follow",
    source: r#"
local vals = redis.call('MGET', unpack(KEYS))
local v = vals[tonumber(ARGV[1])]
local target = false
if v then target = redis.call('GET', ARGV[2] .. v .. ARGV[3]) end
vals[#KEYS + 1] = target
return vals
"#,
};

/// The longest TTL written: about 100 years, far past any retention here,
/// and well inside what Lua's numbers hold exactly and Redis's `EX` takes.
pub const LONGEST_TTL: u64 = 100 * 365 * 86_400;

/// A Redis reply, as much of it as the units need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nil.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk or status string.
    Bytes(Vec<u8>),
    /// An array (a client may flatten nested arrays into one).
    List(Vec<Reply>),
}

impl Reply {
    /// The reply as a list of optional values (a single value is a list of
    /// one). Nested lists are read flat.
    pub fn into_values(self) -> Result<Values, StoreError> {
        let mut out = Vec::new();
        fn walk(r: Reply, out: &mut Values) -> Result<(), StoreError> {
            match r {
                Reply::Nil => out.push(None),
                Reply::Bytes(b) => out.push(Some(b)),
                Reply::Int(i) => out.push(Some(i.to_string().into_bytes())),
                Reply::List(items) => {
                    for i in items {
                        walk(i, out)?;
                    }
                }
            }
            Ok(())
        }
        walk(self, &mut out)?;
        Ok(out)
    }

    /// The reply as one integer (a list of one integer counts).
    pub fn into_int(self) -> Result<i64, StoreError> {
        match self {
            Reply::Int(i) => Ok(i),
            Reply::Bytes(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unexpected("an integer", &Reply::Bytes(b))),
            Reply::List(mut items) if items.len() == 1 => items.pop().expect("one").into_int(),
            other => Err(unexpected("an integer", &other)),
        }
    }
}

fn unexpected(wanted: &str, got: &Reply) -> StoreError {
    StoreError::Unavailable(format!("redis: expected {wanted}, got {got:?}"))
}

/// How a host sends commands to one Redis server. Everything else — units,
/// scripts, retries, scans — is [`OverRedis`]'s.
pub trait Link: Send + Sync + std::fmt::Debug {
    /// Sends one command (`args[0]` is its name) and returns the reply; a
    /// Redis error reply or a lost connection is
    /// [`StoreError::Unavailable`].
    fn call(&self, args: Vec<Vec<u8>>) -> BoxFuture<'_, Result<Reply, StoreError>>;

    /// Runs `script` with `keys` and `args`. By default `EVAL` with the
    /// source; a host may cache it and send `EVALSHA`.
    fn eval(
        &self,
        script: &'static Script,
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<Reply, StoreError>> {
        let mut all = Vec::with_capacity(3 + keys.len() + args.len());
        all.push(b"EVAL".to_vec());
        all.push(script.source.as_bytes().to_vec());
        all.push(keys.len().to_string().into_bytes());
        all.extend(keys);
        all.extend(args);
        self.call(all)
    }

    /// Waits before retry `attempt` of a conflicted unit. Hosts without a
    /// timer retry at once.
    fn pause(&self, attempt: u32) -> BoxFuture<'_, ()> {
        let _ = attempt;
        Box::pin(std::future::ready(()))
    }
}

/// How long to back off before retry `attempt`, with jitter from the
/// attempt number (for [`Link::pause`]).
pub fn backoff_micros(attempt: u32) -> u64 {
    200 * u64::from(attempt + 1) + u64::from(attempt * 37 % 150)
}

/// The Redis backend over a host's [`Link`]; keys start with `prefix`.
#[derive(Debug, Clone)]
pub struct OverRedis<L> {
    link: L,
    prefix: String,
}

impl<L: Link> OverRedis<L> {
    /// The backend over `link`, whose keys start with `prefix`.
    pub fn new(link: L, prefix: &str) -> Self {
        OverRedis {
            link,
            prefix: prefix.to_string(),
        }
    }

    /// The link.
    pub fn link(&self) -> &L {
        &self.link
    }
}

struct RedisTxn<'l, L> {
    link: &'l L,
    reads: BTreeMap<String, Option<Vec<u8>>>,
    writes: WriteSet,
}

fn cmd(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

impl<L: Link> Txn for RedisTxn<'_, L> {
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
                let mut args = vec![b"MGET".to_vec()];
                args.extend(missing.iter().map(|k| k.as_bytes().to_vec()));
                let values = self.link.call(args).await?.into_values()?;
                if values.len() != missing.len() {
                    return Err(StoreError::Unavailable(format!(
                        "redis: MGET of {} keys answered {} values",
                        missing.len(),
                        values.len()
                    )));
                }
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
    ) -> BoxFuture<'a, Result<Followed, StoreError>> {
        Box::pin(async move {
            // Fresh units only: keys already read or written this unit must
            // be answered from the unit's own view.
            if keys.is_empty()
                || keys
                    .iter()
                    .any(|k| self.reads.contains_key(k) || self.writes.contains(k))
            {
                return super::follow_in_two_reads(self, keys, follow, prefix, suffix).await;
            }
            let args = vec![
                (follow + 1).to_string().into_bytes(),
                prefix.as_bytes().to_vec(),
                suffix.as_bytes().to_vec(),
            ];
            let keys_b = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
            let mut values = self.link.eval(&FOLLOW, keys_b, args).await?.into_values()?;
            if values.len() != keys.len() + 1 {
                return Err(StoreError::Unavailable(format!(
                    "redis: the follow script answered {} values for {} keys",
                    values.len(),
                    keys.len()
                )));
            }
            let target = values.pop().flatten();
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

    fn add(&mut self, key: &str, delta: &BTreeMap<String, f64>) {
        self.writes.add(key, delta);
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

/// The [`COMMIT`] script's keys and arguments for a unit's reads and
/// writes.
fn commit_args(
    reads: &BTreeMap<String, Option<Vec<u8>>>,
    writes: &WriteSet,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut keys = Vec::with_capacity(reads.len() + writes.len());
    let mut args = Vec::with_capacity(1 + reads.len() + writes.len());
    args.push(reads.len().to_string().into_bytes());
    for (k, v) in reads {
        keys.push(k.as_bytes().to_vec());
        args.push(match v {
            Some(v) => tagged(true, v),
            None => tagged(false, b""),
        });
    }
    for (k, w) in writes.iter() {
        keys.push(k.as_bytes().to_vec());
        args.push(match w {
            Write::Put(v) => tagged(true, v),
            Write::PutUntil(v, e) => {
                let mut op = format!("\u{2}{:020}", e.ttl).into_bytes();
                op.extend_from_slice(v);
                op
            }
            Write::Delete => tagged(false, b""),
            Write::Add(delta) => {
                let mut op = vec![3u8];
                op.extend(serde_json::to_vec(delta).unwrap_or_default());
                op
            }
        });
    }
    (keys, args)
}

/// `prefix` as a `SCAN MATCH` pattern that matches it literally.
pub fn literal_prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('*');
    pattern
}

impl<L: Link> OverRedis<L> {
    /// One `SCAN` step: the next cursor and the keys it returned.
    async fn scan_step(
        &self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let reply = self
            .link
            .call(cmd(&[
                b"SCAN",
                cursor.to_string().as_bytes(),
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                count.to_string().as_bytes(),
            ]))
            .await?;
        // `[cursor, [keys…]]`, or the same flattened.
        let mut values = reply.into_values()?.into_iter();
        let next = values
            .next()
            .flatten()
            .and_then(|c| String::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| StoreError::Unavailable("redis: SCAN answered no cursor".into()))?;
        let keys = values
            .flatten()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        Ok((next, keys))
    }

    async fn values_of(&self, keys: Vec<String>) -> Result<Dump, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![b"MGET".to_vec()];
        args.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
        let values = self.link.call(args).await?.into_values()?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }
}

impl<L: Link> Backend for OverRedis<L> {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            for attempt in 0..MAX_ATTEMPTS {
                let mut txn = RedisTxn {
                    link: &self.link,
                    reads: BTreeMap::new(),
                    writes: WriteSet::default(),
                };
                let out = work(&mut txn, Scope::new()).await?;
                if txn.writes.is_empty() {
                    return Ok(out);
                }
                let (keys, args) = commit_args(&txn.reads, &txn.writes);
                let applied = self.link.eval(&COMMIT, keys, args).await?.into_int()?;
                if applied == 1 {
                    return Ok(out);
                }
                // Someone else wrote what we read: back off, start over.
                self.link.pause(attempt).await;
            }
            Err(StoreError::Contention(MAX_ATTEMPTS))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.link.call(cmd(&[b"PING"])).await?;
            Ok(())
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        Box::pin(async move {
            // Redis's own cursor: keys present throughout are returned at
            // least once, whatever is written meanwhile.
            let start: u64 = match cursor {
                Some(c) => c
                    .parse()
                    .map_err(|_| StoreError::Unavailable(format!("not a scan cursor: {c}")))?,
                None => 0,
            };
            let pattern = literal_prefix_pattern(prefix);
            let (next, keys) = self.scan_step(start, &pattern, limit).await?;
            let page = self.values_of(keys).await?;
            Ok((page, (next != 0).then(|| next.to_string())))
        })
    }

    fn dump(&self) -> BoxFuture<'_, Result<Dump, StoreError>> {
        Box::pin(async move {
            let pattern = literal_prefix_pattern(&self.prefix);
            let mut out = Vec::new();
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_step(cursor, &pattern, 1000).await?;
                out.extend(self.values_of(keys).await?);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_replies_read_the_same() {
        let nested = Reply::List(vec![
            Reply::Bytes(b"7".to_vec()),
            Reply::List(vec![Reply::Bytes(b"a".to_vec()), Reply::Nil]),
        ]);
        let flat = Reply::List(vec![
            Reply::Bytes(b"7".to_vec()),
            Reply::Bytes(b"a".to_vec()),
            Reply::Nil,
        ]);
        assert_eq!(nested.into_values().unwrap(), flat.into_values().unwrap());
        assert_eq!(Reply::List(vec![Reply::Int(1)]).into_int().unwrap(), 1);
        assert_eq!(Reply::Bytes(b"0".to_vec()).into_int().unwrap(), 0);
        assert!(Reply::Nil.into_int().is_err());
    }

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(literal_prefix_pattern("a*b[c]?\\"), "a\\*b\\[c\\]\\?\\\\*");
    }

    #[test]
    fn commit_arguments_tag_reads_and_writes() {
        let mut reads = BTreeMap::new();
        reads.insert("r1".to_string(), None);
        reads.insert("r2".to_string(), Some(b"v".to_vec()));
        let mut writes = WriteSet::default();
        writes.put("w1", b"x".to_vec());
        writes.delete("w2");
        writes.put_expiring("w3", b"y".to_vec(), Expiry::after(100, 60));
        let (keys, args) = commit_args(&reads, &writes);
        assert_eq!(
            keys,
            vec![
                b"r1".to_vec(),
                b"r2".to_vec(),
                b"w1".to_vec(),
                b"w2".to_vec(),
                b"w3".to_vec()
            ]
        );
        assert_eq!(args[0], b"2");
        assert_eq!(args[1], b"\0");
        assert_eq!(args[2], b"\x01v");
        assert_eq!(args[3], b"\x01x");
        assert_eq!(args[4], b"\0");
        assert_eq!(args[5], b"\x0200000000000000000060y");
    }
}
