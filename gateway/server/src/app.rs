//! The running gateway's state, built once from the configuration: the
//! plugins, each channel's verifier and handshake, the widget's JWT
//! verifier, the store and the sink verified events go to, and the
//! metrics. Where the configuration comes from is [`crate::load`]'s; how
//! the store is opened, [`crate::store`]'s; the clock and ids,
//! [`crate::ids`]'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use chatcrafter_core::Clock;
use chatcrafter_core::config::{Config, Widget};
use chatcrafter_core::identity::identifier::IdentifierKind;
use chatcrafter_core::verify::SecretMatcher;
use chatcrafter_core::verify::gate::ChannelGate;
use chatcrafter_core::verify::jwt::WidgetAuth;

use crate::inbound::Sink;
use crate::metrics::Metrics;
use crate::plugin::{PluginHost, Registry};
use crate::store::GatewayDb;

/// One configured channel, ready to serve (the core's [`ChannelGate`]).
pub type ChannelRuntime = ChannelGate;

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
    pub db: Arc<GatewayDb>,
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
    pub plugin_calls: Arc<tokio::sync::Semaphore>,
    /// Request bodies held at once (`server.max_inflight_body_bytes`).
    pub body_budget: crate::http::BodyBudget,
    /// Appends audit entries in batches (reads, refusals, failures).
    pub audit: crate::audit::AuditWriter,
    /// What the `/demo` pages sign with, when `[server] demo` is on (dev
    /// mode); `None`, and `/demo` is 404, otherwise.
    pub demo: Option<crate::http::DemoKeys>,
    /// Signs erasure receipts.
    pub receipts: chatcrafter_core::receipt::ReceiptSigner,
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
            let mut plugin = crate::plugin::load_spec(&host, &ch.plugin, base_dir)
                .with_context(|| format!("channels.{name}.plugin"))?;
            plugin.set_instance_reuse(ch.reuse_instances);
            plugins.swap(name, plugin);
        }
        if config.widget.is_some() && plugins.get("widget").is_none() {
            plugins.swap(
                "widget",
                crate::plugin::load_spec(&host, "builtin:widget", base_dir)?,
            );
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
        let random = crate::ids::random_bytes();
        let mut channels = BTreeMap::new();
        for (name, ch) in &config.channels {
            let plugin = plugins.get(name).expect("loaded above");
            let gate = ChannelGate::new(
                name,
                ch,
                plugin.manifest(),
                false,
                chatcrafter_core::config::channel_secret_env,
                &random,
            )?;
            channels.insert(name.clone(), gate);
        }
        let widget = match &config.widget {
            Some(w) => Some(widget_auth(w, base_dir)?),
            None => None,
        };
        let graph = Arc::new(crate::store::open_db(&config, base_dir, clock.clone()).await?);
        let primary_identifier = crate::store::rules(&config)?.primary;
        let notifier = Arc::new(match config.store.kind {
            chatcrafter_core::config::StoreKind::Embedded => crate::notify::Notifier::local(),
            chatcrafter_core::config::StoreKind::Redis => crate::notify::Notifier::redis_with(
                crate::store::redis_client(&config, base_dir)?,
                &config.store.key_prefix,
            )
            .await
            .context("store.url: subscribing to change notifications")?,
        });
        let metrics = Arc::new(Metrics::default());
        let wake = Arc::new(tokio::sync::Notify::new());
        let sink: Arc<dyn Sink> = Arc::new(crate::inbound::StoreSink {
            db: graph.clone(),
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
        let body_budget = crate::http::BodyBudget::new(config.server.max_inflight_body_bytes);
        let audit = crate::audit::AuditWriter::start(graph.clone());
        let demo = match config.server.demo {
            true => Some(crate::http::DemoKeys::from_config(&config)?),
            false => None,
        };
        let receipts = chatcrafter_core::receipt::ReceiptSigner::from_config(&config)?;
        Ok(App {
            receipts,
            config,
            plugins,
            channels,
            widget,
            sink,
            db: graph,
            admin_tokens,
            primary_identifier,
            notifier,
            metrics,
            clock,
            wake,
            plugin_calls: Arc::new(tokio::sync::Semaphore::new(
                crate::plugin::limits::MAX_CALLS_IN_FLIGHT,
            )),
            body_budget,
            audit,
            demo,
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
    Ok(WidgetAuth::from_config(w, jwks.as_deref())?)
}
