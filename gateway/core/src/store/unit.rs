//! What a unit of work needs besides its transaction ([`Ctx`]: the key
//! table, sealing, random ids, the injected clock, the identity rules), and
//! [`Db::unit`] / [`Db::read_unit`], which run a closure as one atomic unit
//! on the backend: `db.unit(move |ctx, txn| Box::pin(work(ctx, txn, input)))`.
//! The closure borrows the transaction only for one attempt (an optimistic
//! backend calls it again on conflict); [`crate::store::Scope`] is what
//! lets its future borrow both that transaction and the unit's inputs.

use ring::rand::SecureRandom;
use serde::Serialize;

use crate::Clock;
use crate::db::{Db, DbError};
use crate::identity::*;
use crate::seal::Keyring;
use crate::store::{Backend, BoxFuture, Keys, StoreError, Txn, Work, get};

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

impl<B: Backend> Db<B> {
    /// Runs `f` as one atomic unit of work, retried by the backend on
    /// conflict (so `f` may run more than once and must only read, decide
    /// and buffer writes). A domain error (anything but the store's own)
    /// ends the unit without writing and is not retried.
    pub(crate) async fn unit<'a, T, F>(&'a self, f: F) -> Result<T, DbError>
    where
        T: Send + 'a,
        F: for<'t> Fn(&'t Ctx<'a>, &'t mut dyn Txn) -> BoxFuture<'t, Result<T, DbError>>
            + Send
            + Sync
            + 'a,
    {
        self.run(f, false).await
    }

    /// [`Db::unit`] for a unit that only reads: on a snapshot of what is
    /// committed, where the backend can do that without taking part in
    /// writes (it fails if the unit writes).
    pub(crate) async fn read_unit<'a, T, F>(&'a self, f: F) -> Result<T, DbError>
    where
        T: Send + 'a,
        F: for<'t> Fn(&'t Ctx<'a>, &'t mut dyn Txn) -> BoxFuture<'t, Result<T, DbError>>
            + Send
            + Sync
            + 'a,
    {
        self.run(f, true).await
    }

    async fn run<'a, T, F>(&'a self, f: F, read_only: bool) -> Result<T, DbError>
    where
        T: Send + 'a,
        F: for<'t> Fn(&'t Ctx<'a>, &'t mut dyn Txn) -> BoxFuture<'t, Result<T, DbError>>
            + Send
            + Sync
            + 'a,
    {
        let ctx = self.ctx();
        let (ctx, f) = (&ctx, &f);
        let work: &Work<'_, Result<T, DbError>> = &move |txn, _| {
            Box::pin(async move {
                match f(ctx, txn).await {
                    // The store's own failure: the backend's to retry or report.
                    Err(DbError::Store(e)) => Err(e),
                    Err(e) => {
                        // A domain error: nothing the unit wrote stays.
                        txn.discard();
                        Ok(Err(e))
                    }
                    ok => Ok(ok),
                }
            })
        };
        let out = if read_only {
            self.backend().read(work).await
        } else {
            self.backend().transact(work).await
        };
        out?
    }
}
