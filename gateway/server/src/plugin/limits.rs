//! The limits every plugin call runs under, with the reason for each number.

use std::time::Duration;

/// How often the engine's epoch advances: 5 ms. Deadlines are counted in
/// these ticks, so they are accurate to about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A plugin call may run for 20 ticks, about 100 ms. A bundled plugin parses a
/// 1 MiB webhook in a few milliseconds; 100 ms leaves room for slow machines
/// while keeping a runaway plugin far inside Discord's 3-second answer window.
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
/// Where calls run: a plugin call is synchronous, CPU-bound work of up to
/// the 100 ms deadline, so the server never runs one on a tokio worker
/// thread (it would stall every other connection on that thread). Each
/// call goes to tokio's blocking pool (`spawn_blocking`) after taking one
/// of these permits; the epoch deadline still bounds it there. Wasmtime's
/// async instantiation with epoch yields was the alternative: it keeps
/// calls on the workers but cooperatively, at the cost of async bindings
/// and a fiber stack per call, for no gain on calls this short.
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
