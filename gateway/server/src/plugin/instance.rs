//! Per-call state: one `Store` per call, built from a cached `InstancePre`;
//! nothing here is shared between calls.
//!
//! A plugin imports nothing from the host. A `wasm32-wasip2` guest's standard
//! library may still link a few WASI interfaces; they are satisfied by a WASI
//! context with no capability at all — no preopened directories, no
//! environment or arguments, no network, stdio discarded, clocks frozen at
//! the Unix epoch and randomness from a fixed seed. That context is built
//! only if the guest actually calls into WASI, which the bundled plugins
//! never do, so an ordinary call pays nothing for it.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::MAX_MEMORY_BYTES;

/// What a store holds for one call.
pub(crate) struct CallState {
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    /// Epoch ticks this call has run for (see `limits::CALL_DEADLINE_TICKS`).
    pub(crate) ticks: u64,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState")
            .field("wasi_used", &self.wasi.is_some())
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl CallState {
    pub(crate) fn new() -> Self {
        CallState {
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryCap::default(),
            ticks: 0,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(empty_wasi);
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// A WASI context that grants nothing.
fn empty_wasi() -> WasiCtx {
    WasiCtx::builder()
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(wasmtime_wasi::Deterministic::new(vec![0x2a]))
        .insecure_random_seed(0)
        .build()
}

/// A clock stopped at the Unix epoch: plugins get their times from the
/// request context, never from a clock.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Refuses to grow a linear memory past [`MAX_MEMORY_BYTES`] and remembers
/// that it did, so the failure is reported as what it is.
#[derive(Debug, Default)]
pub(crate) struct MemoryCap {
    /// The size a refused growth asked for, in bytes.
    pub(crate) refused: Option<usize>,
}

/// The error a refused growth raises inside the guest; it ends the call.
#[derive(Debug, thiserror::Error)]
#[error("linear memory growth to {requested} bytes refused (cap {cap} bytes)")]
pub(crate) struct MemoryCapExceeded {
    pub(crate) requested: usize,
    pub(crate) cap: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > MAX_MEMORY_BYTES {
            self.refused = Some(desired);
            // An error, not `Ok(false)`: a guest whose allocator sees a failed
            // `memory.grow` aborts with a bare `unreachable`, which would hide
            // the reason.
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                requested: desired,
                cap: MAX_MEMORY_BYTES,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        // Tables hold function references; a plugin needs a few thousand.
        Ok(desired <= 100_000)
    }
}
