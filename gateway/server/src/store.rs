//! Opening the configured store, and the native store backends of core's
//! [`Backend`] trait:
//! [`embedded::Embedded`] (redb, the default: `gateway serve` needs nothing
//! else) and [`redis::Redis`] (several gateway nodes sharing one Redis).

pub mod embedded;
pub mod redis;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chatcrafter_core::Clock;
use chatcrafter_core::config::Config;
use chatcrafter_core::db::Db;
use chatcrafter_core::identity::Rules;
use chatcrafter_core::seal::Keyring;
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

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<chatcrafter_core::store::ScanPage, StoreError>> {
        match self {
            AnyBackend::Embedded(b) => b.scan(prefix, cursor, limit),
            AnyBackend::Redis(b) => b.scan(prefix, cursor, limit),
        }
    }
}

/// The gateway's data over the configured backend.
pub type GatewayDb = Db<Arc<AnyBackend>>;

/// Opens the configured store backend.
pub async fn open_backend(config: &Config, base_dir: &Path) -> anyhow::Result<AnyBackend> {
    use chatcrafter_core::config::StoreKind;
    Ok(match config.store.kind {
        StoreKind::Embedded => AnyBackend::Embedded(embedded::Embedded::open(
            &base_dir.join(&config.store.path),
        )?),
        StoreKind::Redis => AnyBackend::Redis(
            redis::connect_with(redis_client(config, base_dir)?, &config.store.key_prefix).await?,
        ),
    })
}

/// The identity graph over the configured store, sealed with the
/// configured keys (the server and `gateway import` open it the same way).
pub async fn open_db(
    config: &Config,
    base_dir: &Path,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<GatewayDb> {
    let keys = Keyring::from_config(&config.security)?;
    let backend = open_backend(config, base_dir).await?;
    let db = Db::new(
        Arc::new(backend),
        clock,
        Arc::new(keys),
        &config.store.key_prefix,
        rules(config)?,
        Arc::new(ring::rand::SystemRandom::new()),
    )
    .with_audit_hook(Arc::new(crate::http::RequestAudit));
    Ok(match open_vault(config, base_dir).await? {
        Some(vault) => db.with_vault(Arc::new(vault)),
        None => db,
    })
}

/// The key vault (`store.key_vault_path` / `key_vault_url`), when
/// customers' keys are kept apart from their data.
async fn open_vault(config: &Config, base_dir: &Path) -> anyhow::Result<Option<AnyBackend>> {
    if let Some(path) = &config.store.key_vault_path {
        let path = base_dir.join(path);
        return Ok(Some(AnyBackend::Embedded(
            embedded::Embedded::open(&path)
                .with_context(|| format!("store.key_vault_path: {}", path.display()))?,
        )));
    }
    if let Some(url) = &config.store.key_vault_url {
        let client = client_for(url, config, base_dir)
            .with_context(|| "store.key_vault_url: not a usable Redis URL".to_string())?;
        return Ok(Some(AnyBackend::Redis(
            redis::connect_with(client, &config.store.key_prefix)
                .await
                .context("store.key_vault_url")?,
        )));
    }
    Ok(None)
}

/// A Redis client for `store.url`, trusting `store.tls_ca_file` for
/// `rediss://` when it is set (the system's trust store otherwise).
pub fn redis_client(config: &Config, base_dir: &Path) -> anyhow::Result<::redis::Client> {
    let url = config.store.url.as_deref().unwrap_or_default();
    client_for(url, config, base_dir)
        .with_context(|| "store.url: not a usable Redis URL".to_string())
}

/// A Redis client for `url`, with `store.tls_ca_file` as for the store.
fn client_for(url: &str, config: &Config, base_dir: &Path) -> anyhow::Result<::redis::Client> {
    let client = match &config.store.tls_ca_file {
        Some(ca) if url.starts_with("rediss://") => {
            let path = base_dir.join(ca);
            let pem = std::fs::read(&path)
                .with_context(|| format!("store.tls_ca_file: {}", path.display()))?;
            ::redis::Client::build_with_tls(
                url,
                ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        _ => ::redis::Client::open(url),
    };
    Ok(client?)
}

/// The identity rules from `[identity]` (the core's
/// [`Rules::from_config`]), its warnings logged.
pub fn rules(config: &Config) -> anyhow::Result<Rules> {
    let (rules, warnings) = Rules::from_config(&config.identity).map_err(anyhow::Error::msg)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(rules)
}
