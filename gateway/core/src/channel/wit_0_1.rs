//! Conversions between the bindings of `chatcrafter:channel@0.1.0` and
//! the core's own channel types, written once for every host: the native
//! gateway's wasmtime bindings and the Spin edge's wit-bindgen bindings
//! name the WIT's types alike (`wit::Manifest`, `wit::Verification::…`), so
//! both expand [`plugin_conversions_0_1!`] where `wit` names their module.
//! The pipeline only ever sees the core types: a new WIT version needs a
//! new converter, never new pipeline code.

/// Defines `manifest`, `inbound_request`, `inbound`, `channel_error`,
/// `outbound_message`, `outbound_request` (and their helpers), converting
/// between the core's channel types and the types of a module in scope as
/// `wit` — the `chatcrafter:channel/plugin@0.1.0` interface as a bindings
/// generator renders it.
#[macro_export]
macro_rules! plugin_conversions_0_1 {
    () => {
        pub(super) fn method_to_wit(m: &str) -> wit::Method {
            match m.to_ascii_uppercase().as_str() {
                "GET" => wit::Method::Get,
                "POST" => wit::Method::Post,
                "PUT" => wit::Method::Put,
                "PATCH" => wit::Method::Patch,
                "DELETE" => wit::Method::Delete,
                other => wit::Method::Other(other.to_string()),
            }
        }

        pub(super) fn method(m: wit::Method) -> String {
            match m {
                wit::Method::Get => "GET".into(),
                wit::Method::Post => "POST".into(),
                wit::Method::Put => "PUT".into(),
                wit::Method::Patch => "PATCH".into(),
                wit::Method::Delete => "DELETE".into(),
                wit::Method::Other(s) => s.to_ascii_uppercase(),
            }
        }

        fn encoding(e: wit::Encoding) -> $crate::channel::Encoding {
            match e {
                wit::Encoding::Hex => $crate::channel::Encoding::Hex,
                wit::Encoding::Base64 => $crate::channel::Encoding::Base64,
            }
        }

        fn spec(s: wit::SettingSpec) -> $crate::channel::SettingSpec {
            $crate::channel::SettingSpec {
                name: s.name,
                description: s.description,
                required: s.required,
            }
        }

        pub(super) fn manifest(m: wit::Manifest) -> $crate::channel::Manifest {
            let verification = match m.verification {
                wit::Verification::None => $crate::channel::Verification::None,
                wit::Verification::HmacSha256(s) => $crate::channel::Verification::HmacSha256 {
                    header: s.header,
                    prefix: s.prefix,
                    encoding: encoding(s.encoding),
                    signed_template: s.signed_template,
                    timestamp_header: s.timestamp_header,
                    max_age_seconds: s.max_age_seconds,
                    secret: s.secret,
                },
                wit::Verification::SharedSecret(s) => $crate::channel::Verification::SharedSecret {
                    header: s.header,
                    secret: s.secret,
                },
                wit::Verification::Ed25519(s) => $crate::channel::Verification::Ed25519 {
                    signature_header: s.signature_header,
                    timestamp_header: s.timestamp_header,
                    encoding: encoding(s.encoding),
                    max_age_seconds: s.max_age_seconds,
                    public_key: s.public_key,
                },
            };
            let handshake = match m.handshake {
                wit::Handshake::None => $crate::channel::Handshake::None,
                wit::Handshake::QueryChallenge(q) => $crate::channel::Handshake::QueryChallenge {
                    method: method(q.method),
                    mode_param: q.mode_param,
                    mode_value: q.mode_value,
                    token_param: q.token_param,
                    token_secret: q.token_secret,
                    challenge_param: q.challenge_param,
                },
            };
            let flags = [
                (
                    wit::Capabilities::RECEIVE_MESSAGES,
                    $crate::channel::Capability::ReceiveMessages,
                ),
                (
                    wit::Capabilities::DELIVERY_STATUS,
                    $crate::channel::Capability::DeliveryStatus,
                ),
                (
                    wit::Capabilities::SEND_TEXT,
                    $crate::channel::Capability::SendText,
                ),
                (
                    wit::Capabilities::DEFERRED_REPLIES,
                    $crate::channel::Capability::DeferredReplies,
                ),
                (
                    wit::Capabilities::LINK_TOKENS,
                    $crate::channel::Capability::LinkTokens,
                ),
            ];
            $crate::channel::Manifest {
                id: m.id,
                version: m.version,
                display_name: m.display_name,
                verification,
                handshake,
                secrets: m.secrets.into_iter().map(spec).collect(),
                settings: m.settings.into_iter().map(spec).collect(),
                capabilities: flags
                    .into_iter()
                    .filter(|(f, _)| m.capabilities.contains(*f))
                    .map(|(_, c)| c)
                    .collect(),
            }
        }

        fn claim_kind_to_wit(k: &$crate::channel::ClaimKind) -> wit::ClaimKind {
            match k {
                $crate::channel::ClaimKind::Email => wit::ClaimKind::Email,
                $crate::channel::ClaimKind::Phone => wit::ClaimKind::Phone,
                $crate::channel::ClaimKind::Name => wit::ClaimKind::Name,
                $crate::channel::ClaimKind::Username => wit::ClaimKind::Username,
                $crate::channel::ClaimKind::UserId => wit::ClaimKind::UserId,
                $crate::channel::ClaimKind::Other(s) => wit::ClaimKind::Other(s.clone()),
            }
        }

        fn claim(c: wit::Claim) -> $crate::channel::Claim {
            $crate::channel::Claim {
                kind: match c.kind {
                    wit::ClaimKind::Email => $crate::channel::ClaimKind::Email,
                    wit::ClaimKind::Phone => $crate::channel::ClaimKind::Phone,
                    wit::ClaimKind::Name => $crate::channel::ClaimKind::Name,
                    wit::ClaimKind::Username => $crate::channel::ClaimKind::Username,
                    wit::ClaimKind::UserId => $crate::channel::ClaimKind::UserId,
                    wit::ClaimKind::Other(s) => $crate::channel::ClaimKind::Other(s),
                },
                value: c.value,
                verified: c.verified,
            }
        }

        fn header(h: wit::Header) -> $crate::channel::Header {
            $crate::channel::Header {
                name: h.name,
                value: h.value,
            }
        }

        fn identity_to_wit(i: &$crate::channel::ChannelIdentity) -> wit::ChannelIdentity {
            wit::ChannelIdentity {
                channel: i.channel.clone(),
                scope: i.scope.clone(),
                id: i.id.clone(),
            }
        }

        fn identity(i: wit::ChannelIdentity) -> $crate::channel::ChannelIdentity {
            $crate::channel::ChannelIdentity {
                channel: i.channel,
                scope: i.scope,
                id: i.id,
            }
        }

        /// Moves a request into its WIT form: the body and headers are not copied
        /// again on the way into the guest.
        pub(super) fn inbound_request(r: $crate::channel::InboundRequest) -> wit::InboundRequest {
            let ctx = r.context;
            wit::InboundRequest {
                request: wit::HttpRequest {
                    method: method_to_wit(&r.method),
                    path: r.path,
                    query: r.query,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| wit::Header {
                            name: h.name,
                            value: h.value,
                        })
                        .collect(),
                    body: r.body,
                },
                context: wit::RequestContext {
                    received_at_ms: ctx.received_at_ms,
                    request_id: ctx.request_id,
                    user: ctx.user.map(|u| wit::AuthenticatedUser {
                        issuer: u.issuer,
                        subject: u.subject,
                        claims: u
                            .claims
                            .into_iter()
                            .map(|c| wit::Claim {
                                kind: claim_kind_to_wit(&c.kind),
                                value: c.value,
                                verified: c.verified,
                            })
                            .collect(),
                    }),
                    settings: ctx
                        .settings
                        .into_iter()
                        .map(|(name, value)| wit::Setting { name, value })
                        .collect(),
                },
            }
        }

        fn content(c: wit::Content) -> $crate::channel::Content {
            match c {
                wit::Content::Text(text) => $crate::channel::Content::Text { text },
                wit::Content::Media(m) => $crate::channel::Content::Media {
                    kind: match m.kind {
                        wit::MediaKind::Image => $crate::channel::MediaKind::Image,
                        wit::MediaKind::Video => $crate::channel::MediaKind::Video,
                        wit::MediaKind::Audio => $crate::channel::MediaKind::Audio,
                        wit::MediaKind::Document => $crate::channel::MediaKind::Document,
                        wit::MediaKind::Sticker => $crate::channel::MediaKind::Sticker,
                    },
                    reference: m.reference,
                    mime_type: m.mime_type,
                    caption: m.caption,
                    filename: m.filename,
                },
                wit::Content::Location(l) => $crate::channel::Content::Location {
                    latitude: l.latitude,
                    longitude: l.longitude,
                    name: l.name,
                    address: l.address,
                },
                wit::Content::Postback(p) => $crate::channel::Content::Postback {
                    payload: p.payload,
                    title: p.title,
                },
                wit::Content::Reaction(r) => $crate::channel::Content::Reaction {
                    message_id: r.message_id,
                    emoji: r.emoji,
                },
                wit::Content::Unsupported(kind) => $crate::channel::Content::Unsupported { kind },
            }
        }

        fn event(e: wit::InboundEvent) -> $crate::channel::InboundEvent {
            match e {
                wit::InboundEvent::Message(m) => {
                    $crate::channel::InboundEvent::Message($crate::channel::InboundMessage {
                        provider_message_id: m.provider_message_id,
                        sender: identity(m.sender),
                        display_name: m.display_name,
                        claims: m.claims.into_iter().map(claim).collect(),
                        content: content(m.content),
                        link_token: m.link_token,
                        timestamp: m.timestamp,
                        edited: m.edited,
                        reply_handle: m.reply_handle,
                    })
                }
                wit::InboundEvent::Status(s) => {
                    $crate::channel::InboundEvent::Status($crate::channel::DeliveryStatus {
                        provider_message_id: s.provider_message_id,
                        recipient: s.recipient.map(identity),
                        state: match s.state {
                            wit::DeliveryState::Sent => $crate::channel::DeliveryState::Sent,
                            wit::DeliveryState::Delivered => {
                                $crate::channel::DeliveryState::Delivered
                            }
                            wit::DeliveryState::Read => $crate::channel::DeliveryState::Read,
                            wit::DeliveryState::Failed => $crate::channel::DeliveryState::Failed,
                        },
                        timestamp: s.timestamp,
                        error: s.error,
                    })
                }
                wit::InboundEvent::Ignored(i) => {
                    $crate::channel::InboundEvent::Ignored { reason: i.reason }
                }
            }
        }

        pub(super) fn inbound(i: wit::Inbound) -> $crate::channel::Inbound {
            $crate::channel::Inbound {
                events: i.events.into_iter().map(event).collect(),
                response: $crate::channel::HttpResponse {
                    status: i.response.status,
                    headers: i.response.headers.into_iter().map(header).collect(),
                    body: i.response.body,
                },
                diagnostics: i
                    .diagnostics
                    .into_iter()
                    .map(|d| $crate::channel::Diagnostic {
                        level: match d.level {
                            wit::Level::Info => "info".into(),
                            wit::Level::Warning => "warning".into(),
                        },
                        message: d.message,
                    })
                    .collect(),
            }
        }

        pub(super) fn channel_error(e: wit::ChannelError) -> $crate::channel::ChannelError {
            match e {
                wit::ChannelError::Malformed(s) => $crate::channel::ChannelError::Malformed(s),
                wit::ChannelError::Unsupported(s) => $crate::channel::ChannelError::Unsupported(s),
                wit::ChannelError::InvalidOutbound(s) => {
                    $crate::channel::ChannelError::InvalidOutbound(s)
                }
                wit::ChannelError::Other(s) => $crate::channel::ChannelError::Other(s),
            }
        }

        pub(super) fn outbound_message(
            m: &$crate::channel::OutboundMessage,
        ) -> wit::OutboundMessage {
            wit::OutboundMessage {
                message_id: m.message_id.clone(),
                recipient: identity_to_wit(&m.recipient),
                content: wit::OutboundContent::Text(m.text.clone()),
                reply_handle: m.reply_handle.clone(),
            }
        }

        pub(super) fn outbound_request(
            r: wit::OutboundRequest,
        ) -> $crate::channel::OutboundRequest {
            match r {
                wit::OutboundRequest::Http(c) => {
                    $crate::channel::OutboundRequest::Http($crate::channel::HttpCall {
                        method: method(c.method),
                        path: c.path,
                        headers: c.headers.into_iter().map(header).collect(),
                        body: c.body,
                        credential: c.credential.map(|c| $crate::channel::CredentialHeader {
                            name: c.name,
                            prefix: c.prefix,
                            secret: c.secret,
                        }),
                        sent_id: c.sent_id,
                    })
                }
                wit::OutboundRequest::Push(frame) => {
                    $crate::channel::OutboundRequest::Push { frame }
                }
            }
        }
    };
}
