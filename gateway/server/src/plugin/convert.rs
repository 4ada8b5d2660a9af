//! The versions the host serves, behind one face: [`Pre`] and [`Instance`]
//! hold a plugin of either contract version, and their calls take and
//! return the core's own types — the core's converters (shared with the
//! Spin edge), expanded over this host's bindings. Nothing past here knows
//! which version a plugin speaks.

use chatcrafter_core::channel::{
    ChannelError, Inbound, InboundRequest, Manifest, OutboundMessage, OutboundRequest,
};
use wasmtime::Store;

use super::bindings;
use super::instance::CallState;

/// `chatcrafter:channel@0.2.0`.
mod v0_2 {
    use super::bindings::v0_2::wit;

    chatcrafter_core::plugin_conversions_0_2!();
}

/// `chatcrafter:channel@0.1.0`: the thin adapter of the frozen version.
mod v0_1 {
    use super::bindings::v0_1::wit;

    chatcrafter_core::plugin_conversions_0_1!();
}

/// The interface a plugin of each version exports, newest first.
pub(crate) const INTERFACES: [&str; 2] = [
    "chatcrafter:channel/plugin@0.2.0",
    "chatcrafter:channel/plugin@0.1.0",
];

/// A plugin compiled and linked, ready to instantiate.
pub(crate) enum Pre {
    V0_2(bindings::v0_2::ChannelPluginPre<CallState>),
    V0_1(bindings::v0_1::ChannelPluginPre<CallState>),
}

/// One instance of a plugin.
pub(crate) enum Instance {
    V0_2(bindings::v0_2::ChannelPlugin),
    V0_1(bindings::v0_1::ChannelPlugin),
}

/// A request already in its version's WIT form (converted once, even when
/// a call is retried on a fresh instance).
pub(crate) enum WitRequest {
    V0_2(bindings::v0_2::wit::InboundRequest),
    V0_1(bindings::v0_1::wit::InboundRequest),
}

impl Pre {
    /// Links `instance_pre` as the version whose interface it exports.
    pub(crate) fn new(
        interface: &str,
        instance_pre: wasmtime::component::InstancePre<CallState>,
    ) -> wasmtime::Result<Pre> {
        Ok(if interface == INTERFACES[0] {
            Pre::V0_2(bindings::v0_2::ChannelPluginPre::new(instance_pre)?)
        } else {
            Pre::V0_1(bindings::v0_1::ChannelPluginPre::new(instance_pre)?)
        })
    }

    /// The contract version, e.g. `0.2.0`.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Pre::V0_2(_) => "0.2.0",
            Pre::V0_1(_) => "0.1.0",
        }
    }

    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V0_2(p) => Instance::V0_2(p.instantiate_async(store).await?),
            Pre::V0_1(p) => Instance::V0_1(p.instantiate_async(store).await?),
        })
    }

    /// Converts a request for this version.
    pub(crate) fn request(&self, r: InboundRequest) -> WitRequest {
        match self {
            Pre::V0_2(_) => WitRequest::V0_2(v0_2::inbound_request(r)),
            Pre::V0_1(_) => WitRequest::V0_1(v0_1::inbound_request(r)),
        }
    }
}

impl Instance {
    pub(crate) async fn describe(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Manifest> {
        Ok(match self {
            Instance::V0_2(i) => {
                v0_2::manifest(i.chatcrafter_channel_plugin().call_describe(store).await?)
            }
            Instance::V0_1(i) => {
                v0_1::manifest(i.chatcrafter_channel_plugin().call_describe(store).await?)
            }
        })
    }

    /// `parse-inbound`; `plugin_id` names the channel of 0.2 identities.
    pub(crate) async fn parse_inbound(
        &self,
        store: &mut Store<CallState>,
        request: &WitRequest,
        plugin_id: &str,
    ) -> wasmtime::Result<Result<Inbound, ChannelError>> {
        Ok(match (self, request) {
            (Instance::V0_2(i), WitRequest::V0_2(r)) => i
                .chatcrafter_channel_plugin()
                .call_parse_inbound(store, r)
                .await?
                .map(|x| v0_2::inbound(x, plugin_id))
                .map_err(v0_2::channel_error),
            (Instance::V0_1(i), WitRequest::V0_1(r)) => i
                .chatcrafter_channel_plugin()
                .call_parse_inbound(store, r)
                .await?
                .map(v0_1::inbound)
                .map_err(v0_1::channel_error),
            _ => wasmtime::bail!("a request converted for another contract version"),
        })
    }

    pub(crate) async fn render_outbound(
        &self,
        store: &mut Store<CallState>,
        message: &OutboundMessage,
    ) -> wasmtime::Result<Result<OutboundRequest, ChannelError>> {
        Ok(match self {
            Instance::V0_2(i) => i
                .chatcrafter_channel_plugin()
                .call_render_outbound(store, &v0_2::outbound_message(message))
                .await?
                .map(v0_2::outbound_request)
                .map_err(v0_2::channel_error),
            Instance::V0_1(i) => i
                .chatcrafter_channel_plugin()
                .call_render_outbound(store, &v0_1::outbound_message(message))
                .await?
                .map(v0_1::outbound_request)
                .map_err(v0_1::channel_error),
        })
    }
}
