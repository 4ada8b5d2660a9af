//! The channels' plugins, by channel name, swappable while calls are in
//! flight: a call holds an `Arc` of the plugin it started with, so a swap
//! only changes what the *next* call gets.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::Plugin;

/// Channel name → loaded plugin.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The plugin serving `channel` right now.
    pub fn get(&self, channel: &str) -> Option<Arc<Plugin>> {
        self.read().get(channel).cloned()
    }

    /// Installs `plugin` for `channel` atomically, returning the plugin it
    /// replaced. Calls already running finish on the old one.
    pub fn swap(&self, channel: &str, plugin: Plugin) -> Option<Arc<Plugin>> {
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.to_string(), Arc::new(plugin))
    }

    /// The channels served, in name order.
    pub fn channels(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        // A panic while holding the lock cannot leave the map half-written
        // (insert is the only mutation), so a poisoned lock is still sound.
        self.plugins.read().unwrap_or_else(|p| p.into_inner())
    }
}
