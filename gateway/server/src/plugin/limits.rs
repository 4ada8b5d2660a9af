//! The limits every plugin call runs under, with the reason for each number.

use std::time::Duration;

/// How often the engine's epoch advances: 5 ms. Deadlines are counted in
/// these ticks, so they are accurate to about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A plugin call may run for 20 ticks, about 100 ms. A bundled plugin parses a
/// 1 MiB webhook in a few milliseconds; 100 ms leaves room for slow machines
/// while keeping a runaway plugin far inside Discord's 3-second answer window.
/// The call yields to the server's executor at each tick on its way there.
pub const CALL_DEADLINE_TICKS: u64 = 20;

/// The call deadline in milliseconds, for error messages.
pub const CALL_DEADLINE_MS: u64 = CALL_DEADLINE_TICKS * EPOCH_TICK.as_millis() as u64;

/// A plugin's linear memory may grow to 64 MiB. Parsing a body at the
/// default 1 MiB `max_body_bytes` into a JSON tree takes a few times its
/// size; 64 MiB is an order of magnitude more, and small enough that a few
/// hundred concurrent calls cannot exhaust the machine.
pub const MAX_MEMORY_BYTES: usize = 64 << 20;

/// The pool holds 128 instance slots; the pool reserves address space
/// (not memory) for each slot up front.
pub const MAX_CONCURRENT_CALLS: u32 = 128;

/// At most 64 plugin calls run at once, half the pool: the other half is
/// for warm instances (8 per reusing plugin) and headroom.
///
/// Where calls run: on the server task that needs them, as wasmtime async
/// calls on a fiber (async bindings, `instantiate_async`), with an epoch
/// deadline callback that **yields to the executor at every tick** and
/// interrupts the call after [`CALL_DEADLINE_TICKS`]. So a plugin that runs
/// long holds a server thread for at most one tick (5 ms) at a time, and
/// every other connection keeps being served. The alternative, tokio's
/// blocking pool (`spawn_blocking`), was measured: it moved every call to
/// another thread and back, and cost the webhook path about a quarter of
/// its throughput on 2 cores (docs/benchmarks.md), for calls that mostly
/// take tens of microseconds.
pub const MAX_CALLS_IN_FLIGHT: usize = 64;

/// Core instances per component: a `wasm32-wasip2` component holds the
/// program, the WASI adapter and a few small shim modules.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Linear memories per component: the program's and, at most, the adapter's.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 2;

/// Tables per component: the program's, the adapter's and the shims'.
pub const MAX_TABLES_PER_COMPONENT: u32 = 8;

/// The first 1 MiB of each pooled linear memory stays resident between calls
/// (it is zeroed in place instead of being handed back to the kernel), so a
/// fresh instance does not page-fault its stack and data in again. Plugins
/// use a 256 KiB stack and little static data, so their hot pages fit.
pub const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// The largest plugin file the registry will load: 16 MiB. The bundled
/// plugins are about 250 KiB; a component this large is a mistake.
pub const MAX_PLUGIN_FILE_BYTES: u64 = 16 << 20;

/// A reused instance (trusted plugins only) serves at most 1000 calls, so a
/// slow leak in a plugin's heap cannot grow without bound, then is dropped.
pub const MAX_CALLS_PER_INSTANCE: u32 = 1000;

/// At most 8 warm instances per plugin: one per server worker thread is
/// enough, and each holds a pool slot.
pub const MAX_WARM_INSTANCES: usize = 8;
