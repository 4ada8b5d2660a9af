//! Where the configuration comes from: `--config FILE` (relative paths
//! resolve against its folder), or, without one, dev mode's.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chatcrafter_core::config::Config;

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
