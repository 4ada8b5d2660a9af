//! A configured channel's gate: its verifier and handshake prepared with
//! its secrets, and the settings its plugin is given — built from the
//! channel's configuration and its plugin's manifest the same way by every
//! host (the native gateway at start-up, the Spin edge per instance).

use std::collections::BTreeMap;

use crate::channel::{Handshake, Manifest, SettingSpec, Verification};
use crate::config::Channel;

use super::handshake::Responder;
use super::signature::Verifier;

/// One configured channel, ready to serve.
#[derive(Debug)]
pub struct ChannelGate {
    /// The channel's name (`/webhooks/{name}`).
    pub name: String,
    /// Its verification, prepared with its secrets.
    pub verifier: Verifier,
    /// Its handshake, prepared with its secrets.
    pub handshake: Responder,
    /// Settings passed to the plugin with each request.
    pub settings: Vec<(String, String)>,
}

/// Why a channel cannot serve: a secret or setting missing or unknown to
/// its plugin, or a verification that cannot be prepared. The message names
/// the configuration key and how to set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GateError(pub String);

impl ChannelGate {
    /// Prepares channel `name` (configured as `config`) for its plugin's
    /// `manifest`; `env_hint(channel, secret)` names where else a missing
    /// secret may be set (an environment variable natively, a Spin
    /// variable at the edge). `random_key` keys constant-time comparisons.
    /// With `inbound_only`, only the secrets that verification and the
    /// handshake use are required (a host that never sends — the edge —
    /// is not given the channel's sending token).
    pub fn new(
        name: &str,
        config: &Channel,
        manifest: &Manifest,
        inbound_only: bool,
        env_hint: impl Fn(&str, &str) -> String,
        random_key: &[u8; 32],
    ) -> Result<ChannelGate, GateError> {
        let m = manifest;
        let inbound = inbound_secrets(m);
        let specs: Vec<SettingSpec> = m
            .secrets
            .iter()
            .map(|s| SettingSpec {
                required: s.required && (!inbound_only || inbound.contains(&s.name.as_str())),
                ..s.clone()
            })
            .collect();
        check_declared(name, "secrets", &config.secrets, m, &specs, &env_hint)?;
        check_declared(
            name,
            "settings",
            &config.settings,
            m,
            &m.settings,
            &env_hint,
        )?;
        if !config.templates.is_empty() && !m.can(crate::channel::Capability::SendTemplates) {
            let purpose = config.templates.keys().next().map(String::as_str);
            return Err(GateError(format!(
                "channels.{name}.templates.{}: plugin {}@{} sends no templates (its manifest does not declare send-templates)",
                purpose.unwrap_or_default(),
                m.id,
                m.version
            )));
        }
        let secret = |n: &str| config.secrets.get(n).map(String::as_str);
        let verifier = Verifier::new(&m.verification, secret, config.allow_unverified, random_key)
            .map_err(|e| {
                GateError(format!(
                    "channels.{name}: plugin {}@{}: {e}",
                    m.id, m.version
                ))
            })?;
        let handshake = Responder::new(&m.handshake, secret, random_key);
        Ok(ChannelGate {
            name: name.to_string(),
            verifier,
            handshake,
            settings: config
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// The secrets a manifest's verification and handshake name.
pub fn inbound_secrets(m: &Manifest) -> Vec<&str> {
    let mut names = Vec::new();
    match &m.verification {
        Verification::None => {}
        Verification::HmacSha256 { secret, .. } | Verification::SharedSecret { secret, .. } => {
            names.push(secret.as_str())
        }
        Verification::Ed25519 { public_key, .. } => names.push(public_key.as_str()),
    }
    if let Handshake::QueryChallenge { token_secret, .. } = &m.handshake {
        names.push(token_secret.as_str());
    }
    names
}

/// Every given secret or setting is one the plugin declares, and every one
/// it requires is given.
fn check_declared(
    channel: &str,
    kind: &str,
    given: &BTreeMap<String, String>,
    m: &Manifest,
    specs: &[SettingSpec],
    env_hint: &impl Fn(&str, &str) -> String,
) -> Result<(), GateError> {
    for name in given.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            let declared: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(GateError(format!(
                "channels.{channel}.{kind}.{name}: plugin {}@{} declares no {} `{name}` (it declares: {})",
                m.id,
                m.version,
                kind.trim_end_matches('s'),
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
    }
    for s in specs.iter().filter(|s| s.required) {
        if !given.contains_key(&s.name) {
            return Err(GateError(format!(
                "channels.{channel}.{kind}.{}: required by plugin {}@{} ({}); set it in the file{}",
                s.name,
                m.id,
                m.version,
                s.description,
                if kind == "secrets" {
                    format!(" or in {}", env_hint(channel, &s.name))
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(())
}
