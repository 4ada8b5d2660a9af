//! The plugin host: a shared, immutable wasmtime engine; each plugin compiled
//! once and cached as an `InstancePre`; one fresh instance per call.
//!
//! Every call runs in its own `Store` from the pooling allocator, with an
//! epoch deadline and a memory cap (see [`limits`]). A trap, a deadline or a
//! refused allocation fails that one call with a [`PluginError`] naming the
//! plugin and its version; the host and every other call carry on.
//!
//! What this module deliberately does not do: it never hands a plugin a
//! secret, a clock, randomness or any host capability, and it keeps nothing
//! of a plugin instance between calls.

mod bindings;
mod convert;
mod instance;
pub mod limits;
mod registry;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use chatcrafter_core::channel::{
    ChannelError, Inbound, InboundRequest, Manifest, ManifestError, OutboundMessage,
    OutboundRequest,
};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use convert::{Instance, Pre, WitRequest};
use instance::{CallState, MemoryCapExceeded};
pub use registry::Registry;

/// The interface a current channel plugin exports.
pub const PLUGIN_INTERFACE: &str = "chatcrafter:channel/plugin@0.2.0";

/// The older interfaces still served (docs/plugin-versions.md).
pub const OLDER_INTERFACES: &[&str] = &["chatcrafter:channel/plugin@0.1.0"];

/// Import namespaces a `wasm32-wasip2` guest's standard library may link.
/// They are satisfied with an empty WASI context. Anything else — notably
/// `wasi:sockets`, `wasi:http` and `wasi:filesystem` beyond the empty
/// preopens — is refused when the plugin is loaded.
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-input@",
    "wasi:cli/terminal-output@",
    "wasi:cli/terminal-stdin@",
    "wasi:cli/terminal-stdout@",
    "wasi:cli/terminal-stderr@",
    "wasi:io/error@",
    "wasi:io/poll@",
    "wasi:io/streams@",
    "wasi:clocks/wall-clock@",
    "wasi:clocks/monotonic-clock@",
    "wasi:random/random@",
    "wasi:random/insecure@",
    "wasi:random/insecure-seed@",
    "wasi:filesystem/types@",
    "wasi:filesystem/preopens@",
];

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{source_name}: cannot read: {error}")]
    Read {
        /// Where the plugin came from.
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is too large to be a plugin.
    #[error("{source_name}: {size} bytes is over the {max} byte limit for a plugin")]
    TooLarge {
        /// Where the plugin came from.
        source_name: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not a valid WebAssembly component.
    #[error("{source_name}: not a valid WebAssembly component: {reason}")]
    NotComponent {
        /// Where the plugin came from.
        source_name: String,
        /// What wasmtime said.
        reason: String,
    },
    /// A component of another world.
    #[error(
        "{source_name}: not a chatcrafter:channel plugin: it exports [{found}], \
         but a channel plugin must export `{PLUGIN_INTERFACE}` \
         (world chatcrafter:channel/channel-plugin), or the older \
         `chatcrafter:channel/plugin@0.1.0`"
    )]
    WrongWorld {
        /// Where the plugin came from.
        source_name: String,
        /// What it exports instead.
        found: String,
    },
    /// It exports the interface, but with other function signatures.
    #[error("{source_name}: exports `{interface}` with a different shape: {reason}")]
    WrongShape {
        /// Where the plugin came from.
        source_name: String,
        /// The interface it exports.
        interface: String,
        /// What did not match.
        reason: String,
    },
    /// It imports a host capability.
    #[error(
        "{source_name}: imports `{import}`, but channel plugins are pure functions that \
         import nothing from the host (no network, files, clock or secrets)"
    )]
    ForbiddenImport {
        /// Where the plugin came from.
        source_name: String,
        /// The import.
        import: String,
    },
    /// `describe` failed.
    #[error("{source_name}: `describe` failed: {error}")]
    Describe {
        /// Where the plugin came from.
        source_name: String,
        /// The call's error.
        error: Box<PluginError>,
    },
    /// The manifest is unusable.
    #[error("{source_name}: plugin {id}@{version} has an invalid manifest: {error}")]
    Manifest {
        /// Where the plugin came from.
        source_name: String,
        /// Its id as declared.
        id: String,
        /// Its version as declared.
        version: String,
        /// What is wrong.
        error: ManifestError,
    },
}

/// Why one plugin call failed. Every variant names the plugin and version.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin returned a channel error: its answer about the input.
    #[error("plugin {id}@{version}: `{export}` returned an error: {error}")]
    Channel {
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// The export called.
        export: &'static str,
        /// The plugin's error.
        error: ChannelError,
    },
    /// The call ran past its deadline.
    #[error("plugin {id}@{version}: `{export}` exceeded its {deadline_ms} ms deadline")]
    Deadline {
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// The export called.
        export: &'static str,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error(
        "plugin {id}@{version}: `{export}` tried to grow its memory to {requested} bytes, \
         over the {cap} byte cap"
    )]
    MemoryCap {
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// The export called.
        export: &'static str,
        /// Bytes requested.
        requested: usize,
        /// The cap.
        cap: usize,
    },
    /// The plugin trapped.
    #[error("plugin {id}@{version}: `{export}` trapped: {reason}")]
    Trap {
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// The export called.
        export: &'static str,
        /// The trap.
        reason: String,
    },
    /// No instance could be created (pool exhausted, instantiation trap).
    #[error("plugin {id}@{version}: could not instantiate for `{export}`: {reason}")]
    Instantiate {
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// The export called.
        export: &'static str,
        /// Why.
        reason: String,
    },
    /// The plugin returned something the host cannot use (e.g. an outbound
    /// request naming an undeclared secret).
    #[error("plugin {id}@{version}: `{export}` returned an invalid result: {reason}")]
    InvalidResult {
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// The export called.
        export: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl PluginError {
    /// Whether the plugin refused its *input* (the caller's fault, e.g. a
    /// malformed payload → 400) rather than failing itself (→ 502).
    pub fn is_input_error(&self) -> bool {
        matches!(self, PluginError::Channel { error, .. }
            if matches!(error, ChannelError::Malformed(_) | ChannelError::Unsupported(_)))
    }

    /// Whose fault it is: the caller's when the plugin refused its input,
    /// the plugin's otherwise.
    pub fn fault(&self) -> chatcrafter_core::Fault {
        if self.is_input_error() {
            chatcrafter_core::Fault::Caller
        } else {
            chatcrafter_core::Fault::Plugin
        }
    }

    /// Its label in `gateway_plugin_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Deadline { .. } => "deadline",
            PluginError::MemoryCap { .. } => "memory_cap",
            PluginError::Trap { .. } | PluginError::Instantiate { .. } => "trap",
            PluginError::InvalidResult { .. } => "invalid_answer",
            PluginError::Channel { .. } => "error",
        }
    }
}

/// Runs `f` on `plugin` once one of `permits` is free (see
/// [`limits::MAX_CALLS_IN_FLIGHT`]), and times the call itself. The call is
/// a future: it runs on the calling task and yields at every epoch tick.
/// The epoch deadline stops a guest that computes; a guest that waits (on a
/// WASI timer) is stopped by the same deadline in wall-clock time here.
pub async fn call_bounded<R>(
    permits: &tokio::sync::Semaphore,
    plugin: &Plugin,
    export: &'static str,
    f: impl AsyncFnOnce(&Plugin) -> Result<R, PluginError>,
) -> (Result<R, PluginError>, std::time::Duration) {
    let Ok(_permit) = permits.acquire().await else {
        let e = PluginError::Instantiate {
            id: plugin.manifest.id.clone(),
            version: plugin.manifest.version.clone(),
            export,
            reason: "the gateway is shutting down".into(),
        };
        return (Err(e), std::time::Duration::ZERO);
    };
    let start = std::time::Instant::now();
    // Two ticks past the epoch deadline, so that a guest that computes is
    // stopped (and reported) by the epoch, and this catches only waiting.
    let wall = std::time::Duration::from_millis(limits::CALL_DEADLINE_MS) + 2 * limits::EPOCH_TICK;
    let out = match tokio::time::timeout(wall, f(plugin)).await {
        Ok(out) => out,
        Err(_) => Err(PluginError::Deadline {
            id: plugin.manifest.id.clone(),
            version: plugin.manifest.version.clone(),
            export,
            deadline_ms: limits::CALL_DEADLINE_MS,
        }),
    };
    (out, start.elapsed())
}

struct HostInner {
    engine: Engine,
    linker: Linker<CallState>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// The engine every plugin runs on. Cheap to clone; shared and immutable.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Creates the engine (pooling allocator, epoch interruption) and starts
    /// the thread that advances its epoch every [`limits::EPOCH_TICK`].
    pub fn new() -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits::MAX_CONCURRENT_CALLS)
            .total_core_instances(
                limits::MAX_CONCURRENT_CALLS * limits::MAX_CORE_INSTANCES_PER_COMPONENT,
            )
            .total_memories(limits::MAX_CONCURRENT_CALLS * limits::MAX_MEMORIES_PER_COMPONENT)
            .total_tables(limits::MAX_CONCURRENT_CALLS * limits::MAX_TABLES_PER_COMPONENT)
            .max_core_instances_per_component(limits::MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(limits::MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(limits::MAX_TABLES_PER_COMPONENT)
            .max_memory_size(limits::MAX_MEMORY_BYTES)
            .linear_memory_keep_resident(limits::KEEP_RESIDENT_BYTES)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(limits::EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?
        };
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                stop,
                ticker: Some(ticker),
            }),
        })
    }

    /// Loads a plugin from a `.wasm` file.
    pub fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let source_name = path.display().to_string();
        let read = |error| LoadError::Read {
            source_name: source_name.clone(),
            error,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > limits::MAX_PLUGIN_FILE_BYTES {
            return Err(LoadError::TooLarge {
                source_name,
                size,
                max: limits::MAX_PLUGIN_FILE_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        self.load(&source_name, &bytes)
    }

    /// Compiles and checks a plugin, and reads its manifest.
    pub fn load(&self, source_name: &str, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let engine = &self.inner.engine;
        let component = Component::new(engine, bytes).map_err(|e| LoadError::NotComponent {
            source_name: source_name.to_string(),
            reason: format!("{:#}", e),
        })?;
        let ty = component.component_type();
        let Some(interface) = convert::INTERFACES
            .into_iter()
            .find(|i| ty.get_export(engine, i).is_some())
        else {
            let found: Vec<String> = ty.exports(engine).map(|(n, _)| format!("`{n}`")).collect();
            return Err(LoadError::WrongWorld {
                source_name: source_name.to_string(),
                found: found.join(", "),
            });
        };
        let mut imports = Vec::new();
        for (name, _) in ty.imports(engine) {
            if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
                return Err(LoadError::ForbiddenImport {
                    source_name: source_name.to_string(),
                    import: name.to_string(),
                });
            }
            imports.push(name.to_string());
        }
        let instance_pre =
            self.inner
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::WrongShape {
                    source_name: source_name.to_string(),
                    interface: interface.to_string(),
                    reason: format!("{e:#}"),
                })?;
        let pre = Pre::new(interface, instance_pre).map_err(|e| LoadError::WrongShape {
            source_name: source_name.to_string(),
            interface: interface.to_string(),
            reason: format!("{e:#}"),
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut plugin = Plugin {
            sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
            source: source_name.to_string(),
            manifest: placeholder_manifest(source_name),
            imports,
            pre,
            host: self.clone(),
            reuse: false,
            warm: std::sync::Mutex::new(Vec::new()),
            reused_calls: std::sync::atomic::AtomicU64::new(0),
        };
        let manifest = block_on(plugin.call("describe", async |p, store| p.describe(store).await))
            .map_err(|error| LoadError::Describe {
                source_name: source_name.to_string(),
                error: Box::new(error),
            })?;
        manifest.validate().map_err(|error| LoadError::Manifest {
            source_name: source_name.to_string(),
            id: manifest.id.clone(),
            version: manifest.version.clone(),
            error,
        })?;
        plugin.manifest = manifest;
        Ok(plugin)
    }
}

/// Until `describe` answers, errors name the plugin by its source.
fn placeholder_manifest(source_name: &str) -> Manifest {
    Manifest {
        id: source_name.to_string(),
        version: "?".into(),
        display_name: String::new(),
        verification: chatcrafter_core::channel::Verification::None,
        handshake: chatcrafter_core::channel::Handshake::None,
        secrets: vec![],
        settings: vec![],
        capabilities: vec![],
        reply_window_seconds: None,
        person_reply_window_seconds: None,
        deep_links: vec![],
        outbound_limits: Default::default(),
    }
}

/// A loaded, checked plugin. Each call instantiates it afresh.
pub struct Plugin {
    source: String,
    /// The SHA-256 of the component's bytes, hex.
    sha256: String,
    manifest: Manifest,
    imports: Vec<String>,
    pre: Pre,
    host: PluginHost,
    /// Whether warm instances may serve more than one call (see
    /// [`Plugin::set_instance_reuse`]).
    reuse: bool,
    warm: std::sync::Mutex<Vec<Warm>>,
    reused_calls: std::sync::atomic::AtomicU64,
}

/// An instance kept warm for reuse, and the one channel identity whose data
/// it has seen.
struct Warm {
    store: Store<CallState>,
    instance: Instance,
    owner: Option<chatcrafter_core::channel::ChannelIdentity>,
    calls: u32,
}

/// The channel identities an inbound result speaks about.
fn senders(inbound: &Inbound) -> Vec<&chatcrafter_core::channel::ChannelIdentity> {
    use chatcrafter_core::channel::InboundEvent;
    let mut out: Vec<&chatcrafter_core::channel::ChannelIdentity> = Vec::new();
    for e in &inbound.events {
        let who = match e {
            InboundEvent::Message(m) => Some(&m.sender),
            InboundEvent::Status(s) => s.recipient.as_ref(),
            InboundEvent::Ignored { .. } => None,
        };
        if let Some(w) = who.filter(|w| !out.contains(w)) {
            out.push(w);
        }
    }
    out
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("source", &self.source)
            .field("id", &self.manifest.id)
            .field("version", &self.manifest.version)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The manifest the plugin declared when it was loaded.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The SHA-256 of the component's bytes, hex (`gateway plugin check`
    /// prints it: the edge's plugin files must match the embedded ones).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The contract version it speaks, e.g. `0.2.0`.
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }

    /// Where it was loaded from (`builtin:whatsapp`, or a path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The WASI interfaces its standard library links (granted empty).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Calls `describe` on a fresh instance: the smallest call there is, so
    /// its cost is the per-call instantiation overhead.
    pub fn describe_fresh(&self) -> Result<Manifest, PluginError> {
        block_on(self.call("describe", async |p, store| p.describe(store).await))
    }

    /// Runs `parse-inbound` on a verified request, blocking this thread
    /// until it is done (the `plugin run` command's and the tests' way; the
    /// server awaits [`Plugin::parse_inbound_owned`]).
    pub fn parse_inbound(&self, request: &InboundRequest) -> Result<Inbound, PluginError> {
        block_on(self.parse_inbound_owned(request.clone()))
    }

    /// [`Plugin::parse_inbound`] as a future, taking the request by value,
    /// which spares a copy of its body and headers (the server's path). A
    /// call that runs long yields at every epoch tick, so it holds a server
    /// thread for at most one tick at a time.
    pub async fn parse_inbound_owned(
        &self,
        request: InboundRequest,
    ) -> Result<Inbound, PluginError> {
        let wit_request = self.pre.request(request);
        if self.reuse
            && let Some(out) = self.parse_on_warm(&wit_request).await
        {
            return Ok(out);
        }
        let (mut store, instance) = self.instantiate("parse-inbound").await?;
        let result = instance
            .parse_inbound(&mut store, &wit_request, &self.manifest.id)
            .await
            .map_err(|e| self.classify("parse-inbound", &store, &e))?;
        let out = result.map_err(|e| self.channel_error("parse-inbound", e))?;
        if self.reuse {
            let seen = senders(&out);
            if seen.len() <= 1 {
                let owner = seen.first().map(|w| (*w).clone());
                self.keep_warm(Warm {
                    store,
                    instance,
                    owner,
                    calls: 1,
                });
            }
        }
        Ok(out)
    }

    /// Lets warm instances serve up to [`limits::MAX_CALLS_PER_INSTANCE`]
    /// `parse-inbound` calls, for plugins the operator trusts. Never across
    /// customers: an instance is tied to the one channel identity whose data
    /// it has seen; a result that speaks about anyone else is thrown away
    /// with its instance and the call is made again on a fresh one, so no
    /// output ever comes from an instance that saw another person's data.
    /// The trade-off: a plugin's own state (a bug, or a deliberate cache)
    /// persists between one person's messages.
    pub fn set_instance_reuse(&mut self, on: bool) {
        self.reuse = on;
    }

    /// How many calls warm instances have served (for metrics and tests).
    pub fn reused_calls(&self) -> u64 {
        self.reused_calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One call on a warm instance, if there is one and its result is
    /// acceptable under the isolation rule; `None` means: do it fresh.
    async fn parse_on_warm(&self, wit_request: &WitRequest) -> Option<Inbound> {
        let mut w = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        start_deadline(&mut w.store);
        // Any failure on a reused instance is retried on a fresh one, which
        // reports it on its own terms.
        let out = w
            .instance
            .parse_inbound(&mut w.store, wit_request, &self.manifest.id)
            .await
            .ok()?
            .ok()?;
        let seen = senders(&out);
        let fits = match (&w.owner, seen.as_slice()) {
            (_, []) => true,
            (None, [_]) => true,
            (Some(owner), [one]) => owner == *one,
            _ => false,
        };
        if !fits {
            return None;
        }
        if w.owner.is_none() {
            w.owner = seen.first().map(|x| (*x).clone());
        }
        w.calls += 1;
        self.reused_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if w.calls < limits::MAX_CALLS_PER_INSTANCE {
            self.keep_warm(w);
        }
        Some(out)
    }

    fn keep_warm(&self, w: Warm) {
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() < limits::MAX_WARM_INSTANCES {
            warm.push(w);
        }
    }

    /// Runs `render-outbound`, blocking this thread until it is done (the
    /// tests' way; the server awaits [`Plugin::render_outbound_async`]).
    pub fn render_outbound(
        &self,
        message: &OutboundMessage,
    ) -> Result<OutboundRequest, PluginError> {
        block_on(self.render_outbound_async(message))
    }

    /// Runs `render-outbound`, and checks that any secret the result refers
    /// to is one the manifest declares.
    pub async fn render_outbound_async(
        &self,
        message: &OutboundMessage,
    ) -> Result<OutboundRequest, PluginError> {
        // The recipient was recorded under the configured channel name; the
        // plugin knows its channel by its own id.
        let mut message = message.clone();
        message.recipient.channel = self.manifest.id.clone();
        let result = self
            .call("render-outbound", async |p, store| {
                p.render_outbound(store, &message).await
            })
            .await?;
        let request = result.map_err(|e| self.channel_error("render-outbound", e))?;
        if let OutboundRequest::Http(call) = &request {
            let declared = |name: &str| self.manifest.secrets.iter().any(|s| s.name == name);
            let mut used: Vec<&str> = secret_placeholders(&call.path).collect();
            if let Some(c) = &call.credential {
                used.push(&c.secret);
            }
            if let Some(bad) = used.into_iter().find(|n| !declared(n)) {
                return Err(self.invalid(
                    "render-outbound",
                    format!("refers to undeclared secret `{bad}`"),
                ));
            }
            if !call.path.starts_with('/') {
                return Err(self.invalid(
                    "render-outbound",
                    format!(
                        "path `{}` must start with `/` (it is relative to api_base)",
                        call.path
                    ),
                ));
            }
        }
        Ok(request)
    }

    fn channel_error(&self, export: &'static str, error: ChannelError) -> PluginError {
        PluginError::Channel {
            id: self.manifest.id.clone(),
            version: self.manifest.version.clone(),
            export,
            error,
        }
    }

    /// An answer of `parse-inbound` that the host's checks refused.
    pub fn invalid_answer(&self, e: &chatcrafter_core::channel::InvalidAnswer) -> PluginError {
        self.invalid("parse-inbound", e.to_string())
    }

    fn invalid(&self, export: &'static str, reason: String) -> PluginError {
        PluginError::InvalidResult {
            id: self.manifest.id.clone(),
            version: self.manifest.version.clone(),
            export,
            reason,
        }
    }

    /// One call on a fresh instance in a fresh store.
    async fn call<R>(
        &self,
        export: &'static str,
        f: impl AsyncFnOnce(&Instance, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (mut store, instance) = self.instantiate(export).await?;
        let out = f(&instance, &mut store).await;
        out.map_err(|e| self.classify(export, &store, &e))
    }

    /// A fresh store and instance, under the call limits.
    async fn instantiate(
        &self,
        export: &'static str,
    ) -> Result<(Store<CallState>, Instance), PluginError> {
        let mut store = Store::new(&self.host.inner.engine, CallState::new());
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut s| {
            // One tick gone: yield to the executor, or stop at the deadline.
            let state = s.data_mut();
            state.ticks += 1;
            Ok(if state.ticks >= limits::CALL_DEADLINE_TICKS {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        start_deadline(&mut store);
        match self.pre.instantiate(&mut store).await {
            Ok(i) => Ok((store, i)),
            Err(e) => Err(match self.classify(export, &store, &e) {
                PluginError::Trap {
                    id,
                    version,
                    export,
                    reason,
                } => PluginError::Instantiate {
                    id,
                    version,
                    export,
                    reason,
                },
                other => other,
            }),
        }
    }

    fn classify(
        &self,
        export: &'static str,
        store: &Store<CallState>,
        error: &wasmtime::Error,
    ) -> PluginError {
        let id = self.manifest.id.clone();
        let version = self.manifest.version.clone();
        if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
            return PluginError::MemoryCap {
                id,
                version,
                export,
                requested: cap.requested,
                cap: cap.cap,
            };
        }
        if let Some(requested) = store.data().limiter.refused {
            return PluginError::MemoryCap {
                id,
                version,
                export,
                requested,
                cap: limits::MAX_MEMORY_BYTES,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Deadline {
                id,
                version,
                export,
                deadline_ms: limits::CALL_DEADLINE_MS,
            },
            Some(trap) => PluginError::Trap {
                id,
                version,
                export,
                reason: trap
                    .to_string()
                    .trim_start_matches("wasm trap: ")
                    .to_string(),
            },
            None => PluginError::Trap {
                id,
                version,
                export,
                reason: error.root_cause().to_string(),
            },
        }
    }
}

/// Runs a plugin call to completion on this thread (the `plugin` commands,
/// loading at start-up, the tests). Inside a tokio runtime the thread just
/// waits for it; outside one, the call runs in wasmtime-wasi's runtime, so
/// that a guest's WASI timers have a reactor to run on.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    if tokio::runtime::Handle::try_current().is_ok() {
        pollster::block_on(f)
    } else {
        wasmtime_wasi::runtime::in_tokio(f)
    }
}

/// Starts a call's deadline: [`limits::CALL_DEADLINE_TICKS`] epoch ticks,
/// yielding to the executor at each one (the store's deadline callback).
fn start_deadline(store: &mut Store<CallState>) {
    store.data_mut().ticks = 0;
    store.set_epoch_deadline(1);
}

/// The secret names in a path's `{secret:NAME}` placeholders.
pub fn secret_placeholders(path: &str) -> impl Iterator<Item = &str> {
    path.split("{secret:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// Loads a plugin by its configuration spec: `builtin:NAME` for a bundled
/// one, otherwise a path to a `.wasm` component, relative to `base_dir`.
/// The one loader `gateway serve` and the `plugin` commands share.
pub fn load_spec(host: &PluginHost, spec: &str, base_dir: &Path) -> anyhow::Result<Plugin> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        let Some((_, bytes)) = bundled::PLUGINS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = bundled::PLUGINS.iter().map(|(n, _)| *n).collect();
            anyhow::bail!(
                "no bundled plugin `{name}`; the bundled plugins are {}",
                names.join(", ")
            );
        };
        return Ok(host.load(spec, bytes)?);
    }
    let path = base_dir.join(spec);
    Ok(host.load_file(&path)?)
}

/// The plugins compiled into the binary, and the test programs the host's
/// tests load (built by `build.rs` from `plugins/`).
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}
