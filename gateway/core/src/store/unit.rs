//! What a unit of work needs besides its transaction ([`Ctx`]: the key
//! table, sealing, random ids, the injected clock, the identity rules) and
//! the [`unit!`] macro that runs one atomically on a backend.
//!
//! Why a macro and not a function taking a closure: a unit borrows its
//! inputs (a sender, a message) and the context, and its future must be
//! rebuilt for every retry of an optimistic backend. A closure returning a
//! future that borrows both its captures and a per-attempt transaction
//! needs a higher-ranked lifetime that today's closures cannot name; the
//! macro writes the one closure shape that works (the transaction moved in
//! and handed back with the result) at each call site instead.

use ring::rand::SecureRandom;
use serde::Serialize;

use crate::Clock;
use crate::db::DbError;
use crate::identity::*;
use crate::seal::Keyring;
use crate::store::{Keys, StoreError, Txn, get};

/// Everything a unit of work needs besides the transaction.
pub(crate) struct Ctx<'a> {
    /// The injected clock: retentions are written relative to it.
    pub(crate) clock: &'a dyn Clock,
    pub(crate) keys: &'a Keyring,
    pub(crate) prefix: &'a str,
    pub(crate) rules: &'a Rules,
    pub(crate) rng: &'a (dyn SecureRandom + Send + Sync),
}

impl Ctx<'_> {
    pub(crate) fn random_id(&self, tag: &str) -> String {
        let mut b = [0u8; 16];
        self.rng
            .fill(&mut b)
            .expect("the system random number generator failed");
        format!("{tag}_{}", crate::verify::hex_encode(&b))
    }

    /// The key table (see [`crate::store::keys`]).
    pub(crate) fn k(&self) -> Keys<'_> {
        Keys::new(self.prefix, self.keys)
    }

    pub(crate) fn seal<T: Serialize>(&self, key: &str, value: &T) -> Vec<u8> {
        let json = serde_json::to_vec(value).expect("graph records serialize");
        self.keys
            .seal(self.rng, &json, key.as_bytes())
            .expect("the system random number generator failed")
    }

    pub(crate) fn open<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, DbError> {
        let plain = self
            .keys
            .open(bytes, key.as_bytes())
            .map_err(|source| DbError::Seal {
                key: key.to_string(),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| {
            DbError::Store(StoreError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })
        })
    }

    /// The sealed value at `key`, or the type's default when there is none
    /// (an index or list not written yet).
    pub(crate) async fn open_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        txn: &mut dyn Txn,
        key: &str,
    ) -> Result<T, DbError> {
        match get(txn, key).await? {
            Some(b) => self.open(key, &b),
            None => Ok(T::default()),
        }
    }

    /// A customer id stored under a lookup key. Ids are random, not
    /// personal data, so they are stored as they are: that lets a known
    /// identity and its profile be read in one round trip.
    pub(crate) fn open_id(&self, key: &str, bytes: &[u8]) -> Result<String, DbError> {
        let id = std::str::from_utf8(bytes)
            .ok()
            .filter(|id| id.starts_with("c_") && id.len() == 34);
        id.map(String::from).ok_or_else(|| {
            DbError::Store(StoreError::Corrupt {
                key: key.to_string(),
                reason: "not a customer id".into(),
            })
        })
    }
}

/// Runs `$body` (an expression using `$ctx: &Ctx` and `$txn: &mut dyn Txn`)
/// as one atomic unit of work. Domain errors abort the unit without writing
/// and travel out on the `Ok` side, so the backend never retries them.
///
/// `unit!(read graph, …)` runs a unit that only reads, on a snapshot of
/// what is committed, where the backend can do that without taking part in
/// writes (it fails if the unit writes).
macro_rules! unit {
    (read $graph:expr, |$ctx:ident, $txn:ident| $body:expr) => {
        unit!(@run read, $graph, |$ctx, $txn| $body)
    };
    ($graph:expr, |$ctx:ident, $txn:ident| $body:expr) => {
        unit!(@run transact, $graph, |$ctx, $txn| $body)
    };
    (@run $method:ident, $graph:expr, |$ctx:ident, $txn:ident| $body:expr) => {{
        let ctx_owned = $graph.ctx();
        let ctx_ref = &ctx_owned;
        let work = move |mut boxed: Box<dyn Txn>| -> BoxFuture<
            '_,
            (Box<dyn Txn>, Result<Result<_, DbError>, StoreError>),
        > {
            Box::pin(async move {
                let result = {
                    let $ctx: &Ctx<'_> = ctx_ref;
                    let $txn: &mut dyn Txn = &mut *boxed;
                    $body.await
                };
                let result = match result {
                    Err(DbError::Store(e)) => Err(e),
                    Err(e) => {
                        // A domain error: nothing the unit wrote stays.
                        boxed.discard();
                        Ok(Err(e))
                    }
                    ok => Ok(ok),
                };
                (boxed, result)
            })
        };
        $graph.backend().$method(&work).await?
    }};
}

pub(crate) use unit;
