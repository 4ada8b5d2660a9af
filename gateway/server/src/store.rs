//! The native store backends of core's [`Backend`] trait:
//! [`embedded::Embedded`] (redb, the default: `gateway serve` needs nothing
//! else) and [`redis::Redis`] (several gateway nodes sharing one Redis).

pub mod embedded;
pub mod redis;

use chatcrafter_core::store::{BoxFuture, StoreError, Work};

/// The configured backend.
#[derive(Debug)]
pub enum AnyBackend {
    /// redb.
    Embedded(embedded::Embedded),
    /// Redis.
    Redis(redis::Redis),
}

impl chatcrafter_core::store::Backend for AnyBackend {
    fn transact<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        match self {
            AnyBackend::Embedded(b) => b.transact(work),
            AnyBackend::Redis(b) => b.transact(work),
        }
    }

    fn read<'a, T: Send + 'a>(
        &'a self,
        work: &'a Work<'a, T>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        match self {
            AnyBackend::Embedded(b) => b.read(work),
            AnyBackend::Redis(b) => b.read(work),
        }
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        match self {
            AnyBackend::Embedded(b) => b.sweep_expired(now, limit),
            AnyBackend::Redis(b) => b.sweep_expired(now, limit),
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        match self {
            AnyBackend::Embedded(b) => b.ping(),
            AnyBackend::Redis(b) => b.ping(),
        }
    }

    fn dump(&self) -> BoxFuture<'_, Result<Vec<(String, Vec<u8>)>, StoreError>> {
        match self {
            AnyBackend::Embedded(b) => b.dump(),
            AnyBackend::Redis(b) => b.dump(),
        }
    }
}
