//! The running gateway's state, built once from the configuration: the
//! plugins, each channel's verifier and handshake, the widget's JWT
//! verifier, the pipeline the verified events go to, and the metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chatcrafter_core::Clock;
use chatcrafter_core::channel::Manifest;
use chatcrafter_core::config::{Config, Widget};
use chatcrafter_core::verify::handshake::Responder;
use chatcrafter_core::verify::jwt::{KeySource, WidgetAuth};
use chatcrafter_core::verify::signature::Verifier;

use chatcrafter_core::identity::graph::{Graph, Rules};
use chatcrafter_core::identity::identifier::{BlockedValues, IdentifierKind};
use chatcrafter_core::seal::Keyring;
use chatcrafter_core::verify::SecretMatcher;

use crate::inbound::Sink;
use crate::metrics::Metrics;
use crate::plugin::{Plugin, PluginHost, Registry, bundled};
use crate::store::AnyBackend;

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// One configured channel, ready to serve.
#[derive(Debug)]
pub struct ChannelRuntime {
    /// The channel's name (`/webhooks/{name}`).
    pub name: String,
    /// Its verification, prepared with its secrets.
    pub verifier: Verifier,
    /// Its handshake, prepared with its secrets.
    pub handshake: Responder,
    /// Settings passed to the plugin with each request.
    pub settings: Vec<(String, String)>,
}

/// The identity graph over the configured backend.
pub type IdentityGraph = Graph<Arc<AnyBackend>>;

/// An admin bearer token, by the hash of its value.
#[derive(Debug)]
pub struct AdminToken {
    /// Who holds it.
    pub name: String,
    /// What it may do.
    pub role: chatcrafter_core::config::Role,
    matcher: SecretMatcher,
}

impl AdminToken {
    /// Whether `sha256(token)` is this token's hash (constant time).
    pub fn matches(&self, token_sha256: &[u8]) -> bool {
        self.matcher.matches(token_sha256)
    }
}

/// Opens the configured store backend.
pub async fn open_backend(config: &Config, base_dir: &Path) -> anyhow::Result<AnyBackend> {
    use chatcrafter_core::config::StoreKind;
    Ok(match config.store.kind {
        StoreKind::Embedded => AnyBackend::Embedded(crate::store::embedded::Embedded::open(
            &base_dir.join(&config.store.path),
        )?),
        StoreKind::Redis => AnyBackend::Redis(
            crate::store::redis::Redis::connect_with(
                redis_client(config, base_dir)?,
                &config.store.key_prefix,
            )
            .await?,
        ),
    })
}

/// The identity graph over the configured store, sealed with the
/// configured keys (the server and `gateway import` open it the same way).
pub async fn open_graph(
    config: &Config,
    base_dir: &Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<IdentityGraph> {
    let keys = Keyring::from_config(&config.security)?;
    let backend = open_backend(config, base_dir).await?;
    Ok(Graph::new(
        Arc::new(backend),
        clock,
        Arc::new(keys),
        &config.store.key_prefix,
        rules(config)?,
        Arc::new(ring::rand::SystemRandom::new()),
    ))
}

/// Reads `--config FILE` (relative paths resolve against its folder), or,
/// without one, dev mode's configuration and whether its secrets were just
/// created.
pub fn load_config(config_path: Option<&Path>) -> anyhow::Result<Loaded> {
    match config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let config = Config::parse(&text)
                .with_context(|| format!("{}: invalid configuration", path.display()))?;
            let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok(Loaded {
                config,
                base_dir,
                dev: None,
            })
        }
        None => {
            let dir = Path::new("./data");
            let (secrets, created) = crate::dev::DevSecrets::load_or_create(dir)?;
            Ok(Loaded {
                config: secrets.config(dir),
                base_dir: PathBuf::from("."),
                dev: Some((secrets, created)),
            })
        }
    }
}

/// A configuration as [`load_config`] found it.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// What relative paths in it are relative to.
    pub base_dir: PathBuf,
    /// In dev mode: the generated secrets, and whether they were just created.
    pub dev: Option<(crate::dev::DevSecrets, bool)>,
}

/// A Redis client for `store.url`, trusting `store.tls_ca_file` for
/// `rediss://` when it is set (the system's trust store otherwise).
pub fn redis_client(config: &Config, base_dir: &Path) -> anyhow::Result<redis::Client> {
    let url = config.store.url.as_deref().unwrap_or_default();
    let client = match &config.store.tls_ca_file {
        Some(ca) if url.starts_with("rediss://") => {
            let path = base_dir.join(ca);
            let pem = std::fs::read(&path)
                .with_context(|| format!("store.tls_ca_file: {}", path.display()))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        _ => redis::Client::open(url),
    };
    client.with_context(|| "store.url: not a usable Redis URL".to_string())
}

/// The identity rules from `[identity]`.
pub fn rules(config: &Config) -> anyhow::Result<Rules> {
    let c = &config.identity;
    let blocked = BlockedValues::new(c.blocked_values.iter().map(String::as_str));
    let mut limits = BTreeMap::new();
    for (k, n) in &c.limits {
        let kind = IdentifierKind::parse(k).with_context(|| {
            format!("identity.limits.{k}: not an identifier kind (email, phone, user_id)")
        })?;
        limits.insert(kind, *n as usize);
    }
    let primary = match c.primary_identifier {
        chatcrafter_core::config::PrimaryIdentifier::Email => IdentifierKind::Email,
        chatcrafter_core::config::PrimaryIdentifier::Phone => IdentifierKind::Phone,
        chatcrafter_core::config::PrimaryIdentifier::UserId => IdentifierKind::UserId,
    };
    Ok(Rules {
        primary,
        blocked,
        limits,
        conflict_window: c.conflict_window_seconds,
    })
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// The parsed configuration (secrets included; never logged).
    pub config: Config,
    /// Channel name → plugin; the widget's plugin is under `widget`.
    pub plugins: Registry,
    /// Channel name → verification and settings.
    pub channels: BTreeMap<String, ChannelRuntime>,
    /// The widget's token verifier, when `[widget]` is configured.
    pub widget: Option<WidgetAuth>,
    /// Where verified events go.
    pub sink: Arc<dyn Sink>,
    /// The identity graph.
    pub graph: Arc<IdentityGraph>,
    /// Admin API tokens.
    pub admin_tokens: Vec<AdminToken>,
    /// `[identity] primary_identifier`, as the customer object reports it.
    pub primary_identifier: IdentifierKind,
    /// Real-time change notifications.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Wakes the queue worker when this node queues a job.
    pub wake: Arc<tokio::sync::Notify>,
    /// Plugin calls in flight (see `plugin::limits::MAX_CALLS_IN_FLIGHT`).
    pub plugin_calls: tokio::sync::Semaphore,
}

/// 32 bytes from the operating system's CSPRNG.
pub fn random_bytes() -> [u8; 32] {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random number generator failed");
    b
}

/// A random id, 16 hex characters.
pub fn request_id() -> String {
    chatcrafter_core::verify::hex_encode(&random_bytes()[..8])
}

fn load_plugin(host: &PluginHost, spec: &str, base_dir: &Path) -> anyhow::Result<Plugin> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        let Some((_, bytes)) = bundled::PLUGINS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = bundled::PLUGINS.iter().map(|(n, _)| *n).collect();
            bail!(
                "no bundled plugin `{name}`; the bundled plugins are {}",
                names.join(", ")
            );
        };
        return Ok(host.load(spec, bytes)?);
    }
    let path = base_dir.join(spec);
    Ok(host.load_file(&path)?)
}

fn check_declared(
    channel: &str,
    kind: &str,
    given: &BTreeMap<String, String>,
    m: &Manifest,
    specs: &[chatcrafter_core::channel::SettingSpec],
) -> anyhow::Result<()> {
    for name in given.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            let declared: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "channels.{channel}.{kind}.{name}: plugin {}@{} declares no {} `{name}` (it declares: {})",
                m.id,
                m.version,
                kind.trim_end_matches('s'),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            );
        }
    }
    for s in specs.iter().filter(|s| s.required) {
        if !given.contains_key(&s.name) {
            bail!(
                "channels.{channel}.{kind}.{}: required by plugin {}@{} ({}); set it in the file{}",
                s.name,
                m.id,
                m.version,
                s.description,
                if kind == "secrets" {
                    format!(
                        " or in GATEWAY_CHANNELS_{}_{}",
                        channel.replace('-', "_").to_uppercase(),
                        s.name.to_uppercase()
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

impl App {
    /// Loads every plugin the configuration names, applies secrets from the
    /// environment, and prepares verification. `base_dir` resolves relative
    /// paths in the configuration.
    pub async fn build(
        mut config: Config,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<App> {
        let host = PluginHost::new()?;
        let plugins = Registry::new();
        for (name, ch) in &config.channels {
            let mut plugin = load_plugin(&host, &ch.plugin, base_dir)
                .with_context(|| format!("channels.{name}.plugin"))?;
            plugin.set_instance_reuse(ch.reuse_instances);
            plugins.swap(name, plugin);
        }
        if config.widget.is_some() && plugins.get("widget").is_none() {
            plugins.swap("widget", load_plugin(&host, "builtin:widget", base_dir)?);
        }
        config.apply_env(&env, |channel| {
            plugins
                .get(channel)
                .map(|p| {
                    p.manifest()
                        .secrets
                        .iter()
                        .map(|s| s.name.clone())
                        .collect()
                })
                .unwrap_or_default()
        });
        let random = random_bytes();
        let mut channels = BTreeMap::new();
        for (name, ch) in &config.channels {
            let plugin = plugins.get(name).expect("loaded above");
            let m = plugin.manifest();
            check_declared(name, "secrets", &ch.secrets, m, &m.secrets)?;
            check_declared(name, "settings", &ch.settings, m, &m.settings)?;
            let secret = |n: &str| ch.secrets.get(n).map(String::as_str);
            let verifier = Verifier::new(&m.verification, secret, ch.allow_unverified, &random)
                .with_context(|| format!("channels.{name}: plugin {}@{}", m.id, m.version))?;
            let handshake = Responder::new(&m.handshake, secret, &random);
            channels.insert(
                name.clone(),
                ChannelRuntime {
                    name: name.clone(),
                    verifier,
                    handshake,
                    settings: ch
                        .settings
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
            );
        }
        let widget = match &config.widget {
            Some(w) => Some(widget_auth(w, base_dir)?),
            None => None,
        };
        let graph = Arc::new(open_graph(&config, base_dir, clock.clone()).await?);
        let primary_identifier = rules(&config)?.primary;
        let notifier = Arc::new(match config.store.kind {
            chatcrafter_core::config::StoreKind::Embedded => crate::notify::Notifier::local(),
            chatcrafter_core::config::StoreKind::Redis => crate::notify::Notifier::redis_with(
                redis_client(&config, base_dir)?,
                &config.store.key_prefix,
            )
            .await
            .context("store.url: subscribing to change notifications")?,
        });
        let metrics = Arc::new(Metrics::default());
        let wake = Arc::new(tokio::sync::Notify::new());
        let sink: Arc<dyn Sink> = Arc::new(crate::inbound::StoreSink {
            graph: graph.clone(),
            notifier: notifier.clone(),
            metrics: metrics.clone(),
            wake: wake.clone(),
        });
        let admin_tokens = config
            .admin
            .tokens
            .iter()
            .map(|t| AdminToken {
                name: t.name.clone(),
                role: t.role,
                matcher: SecretMatcher::new(
                    &chatcrafter_core::verify::hex_decode(&t.token_sha256).unwrap_or_default(),
                    &random,
                ),
            })
            .collect();
        Ok(App {
            config,
            plugins,
            channels,
            widget,
            sink,
            graph,
            admin_tokens,
            primary_identifier,
            notifier,
            metrics,
            clock,
            wake,
            plugin_calls: tokio::sync::Semaphore::new(crate::plugin::limits::MAX_CALLS_IN_FLIGHT),
        })
    }
}

fn widget_auth(w: &Widget, base_dir: &Path) -> anyhow::Result<WidgetAuth> {
    let jwks = match &w.jwks_file {
        Some(f) => {
            let path: PathBuf = base_dir.join(f);
            Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("widget.jwks_file: {}", path.display()))?,
            )
        }
        None => None,
    };
    let keys = KeySource {
        secret: w.secret.as_deref(),
        public_key_pem: w.public_key_pem.as_deref(),
        jwks_json: jwks.as_deref(),
    };
    Ok(WidgetAuth::new(
        &w.algorithms,
        keys,
        w.issuer.clone(),
        w.audience.clone(),
        w.leeway_seconds,
    )?)
}
