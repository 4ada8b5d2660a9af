//! Conversions between the bindings of each `chatcrafter:channel` version
//! and the core's own channel types, written once for every host: the
//! native gateway's wasmtime bindings and the Spin edge's wit-bindgen
//! bindings name the WIT's types alike (`wit::Manifest`,
//! `wit::Verification::…`), so both expand a version's macro where `wit`
//! names their module. The pipeline only ever sees the core types: a new
//! WIT version needs a converter, never new pipeline code.
//!
//! What every version shares is [`plugin_conversions_common!`]; each
//! version adds what differs: 0.1's one content per message and identities
//! naming their channel ([`plugin_conversions_0_1!`], frozen), 0.2's content
//! lists, referrals, rich outbound content and manifest additions
//! ([`plugin_conversions_0_2!`]).

/// The conversions every version shares (HTTP, verification, claims,
/// inbound contents, errors, outbound requests). Expanded by the version
/// macros; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! plugin_conversions_common {
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

        fn verification_and_handshake(
            v: wit::Verification,
            h: wit::Handshake,
        ) -> ($crate::channel::Verification, $crate::channel::Handshake) {
            let verification = match v {
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
            let handshake = match h {
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
            (verification, handshake)
        }

        /// The capabilities every version has.
        fn shared_capabilities(c: wit::Capabilities) -> Vec<$crate::channel::Capability> {
            [
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
            ]
            .into_iter()
            .filter(|(f, _)| c.contains(*f))
            .map(|(_, c)| c)
            .collect()
        }

        /// A manifest of what every version declares; what a later version
        /// adds starts at its 0.1 default (no window, links or rich limits).
        fn manifest_base(
            id: String,
            version: String,
            display_name: String,
            (verification, handshake): (wit::Verification, wit::Handshake),
            (secrets, settings): (Vec<wit::SettingSpec>, Vec<wit::SettingSpec>),
            capabilities: Vec<$crate::channel::Capability>,
        ) -> $crate::channel::Manifest {
            let (verification, handshake) = verification_and_handshake(verification, handshake);
            $crate::channel::Manifest {
                id,
                version,
                display_name,
                verification,
                handshake,
                secrets: secrets.into_iter().map(spec).collect(),
                settings: settings.into_iter().map(spec).collect(),
                capabilities,
                reply_window_seconds: None,
                person_reply_window_seconds: None,
                deep_links: vec![],
                outbound_limits: $crate::channel::OutboundLimits::text_only(),
            }
        }

        fn delivery_state(s: wit::DeliveryState) -> $crate::channel::DeliveryState {
            match s {
                wit::DeliveryState::Sent => $crate::channel::DeliveryState::Sent,
                wit::DeliveryState::Delivered => $crate::channel::DeliveryState::Delivered,
                wit::DeliveryState::Read => $crate::channel::DeliveryState::Read,
                wit::DeliveryState::Failed => $crate::channel::DeliveryState::Failed,
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
        pub(super) fn inbound_with(
            i: wit::Inbound,
            event: impl Fn(wit::InboundEvent) -> $crate::channel::InboundEvent,
        ) -> $crate::channel::Inbound {
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
    };
}

/// Defines `manifest`, `inbound_request`, `inbound`, `channel_error`,
/// `outbound_message`, `outbound_request` (and their helpers) for
/// `chatcrafter:channel/plugin@0.1.0` — the frozen version — over a module
/// in scope as `wit`. 0.1 takes one content per message and text-only
/// outbound; its manifest has no reply window, deep links or limits.
#[macro_export]
macro_rules! plugin_conversions_0_1 {
    () => {
        $crate::plugin_conversions_common!();

        pub(super) fn manifest(m: wit::Manifest) -> $crate::channel::Manifest {
            let capabilities = shared_capabilities(m.capabilities);
            manifest_base(
                m.id,
                m.version,
                m.display_name,
                (m.verification, m.handshake),
                (m.secrets, m.settings),
                capabilities,
            )
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

        fn event(e: wit::InboundEvent) -> $crate::channel::InboundEvent {
            match e {
                wit::InboundEvent::Message(m) => {
                    $crate::channel::InboundEvent::Message($crate::channel::InboundMessage {
                        provider_message_id: m.provider_message_id,
                        sender: identity(m.sender),
                        display_name: m.display_name,
                        claims: m.claims.into_iter().map(claim).collect(),
                        contents: vec![content(m.content)],
                        referral: None,
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
                        state: delivery_state(s.state),
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
            inbound_with(i, event)
        }

        /// 0.1 takes text only: the host has already degraded anything
        /// richer for a plugin that declares no rich capability.
        pub(super) fn outbound_message(
            m: &$crate::channel::OutboundMessage,
        ) -> wit::OutboundMessage {
            wit::OutboundMessage {
                message_id: m.message_id.clone(),
                recipient: identity_to_wit(&m.recipient),
                content: wit::OutboundContent::Text(m.content.as_text()),
                reply_handle: m.reply_handle.clone(),
            }
        }
    };
}

/// Defines the same functions for `chatcrafter:channel/plugin@0.2.0`, the
/// current version; `inbound` also takes the plugin's id, which 0.2
/// identities leave to the host.
#[macro_export]
macro_rules! plugin_conversions_0_2 {
    () => {
        $crate::plugin_conversions_common!();

        pub(super) fn manifest(m: wit::Manifest) -> $crate::channel::Manifest {
            let mut capabilities = shared_capabilities(m.capabilities);
            for (flag, c) in [
                (
                    wit::Capabilities::SEND_MEDIA,
                    $crate::channel::Capability::SendMedia,
                ),
                (
                    wit::Capabilities::SEND_CHOICES,
                    $crate::channel::Capability::SendChoices,
                ),
                (
                    wit::Capabilities::SEND_TEMPLATES,
                    $crate::channel::Capability::SendTemplates,
                ),
            ] {
                if m.capabilities.contains(flag) {
                    capabilities.push(c);
                }
            }
            let mut out = manifest_base(
                m.id,
                m.version,
                m.display_name,
                (m.verification, m.handshake),
                (m.secrets, m.settings),
                capabilities,
            );
            out.reply_window_seconds = m.reply_window_seconds;
            out.person_reply_window_seconds = m.person_reply_window_seconds;
            out.deep_links = m.deep_links;
            out.outbound_limits = $crate::channel::OutboundLimits {
                max_text_chars: m.outbound_limits.max_text_chars,
                max_choices: m.outbound_limits.max_choices,
                max_choice_title_chars: m.outbound_limits.max_choice_title_chars,
                max_caption_chars: m.outbound_limits.max_caption_chars,
            };
            out
        }

        fn identity_to_wit(i: &$crate::channel::ChannelIdentity) -> wit::ChannelIdentity {
            wit::ChannelIdentity {
                scope: i.scope.clone(),
                id: i.id.clone(),
            }
        }

        /// 0.2 identities carry no channel: the plugin's own id, which the
        /// answer rules then replace with the configured channel name.
        fn identity(i: wit::ChannelIdentity, channel: &str) -> $crate::channel::ChannelIdentity {
            $crate::channel::ChannelIdentity {
                channel: channel.to_string(),
                scope: i.scope,
                id: i.id,
            }
        }

        fn event(e: wit::InboundEvent, channel: &str) -> $crate::channel::InboundEvent {
            match e {
                wit::InboundEvent::Message(m) => {
                    $crate::channel::InboundEvent::Message($crate::channel::InboundMessage {
                        provider_message_id: m.provider_message_id,
                        sender: identity(m.sender, channel),
                        display_name: m.display_name,
                        claims: m.claims.into_iter().map(claim).collect(),
                        contents: m.contents.into_iter().map(content).collect(),
                        referral: m.referral.map(|r| $crate::channel::Referral {
                            source_type: r.source_type,
                            source_id: r.source_id,
                            click_id: r.click_id,
                            link_ref: r.link_ref,
                            url: r.url,
                        }),
                        link_token: m.link_token,
                        timestamp: m.timestamp,
                        edited: m.edited,
                        reply_handle: m.reply_handle,
                    })
                }
                wit::InboundEvent::Status(s) => {
                    $crate::channel::InboundEvent::Status($crate::channel::DeliveryStatus {
                        provider_message_id: s.provider_message_id,
                        recipient: s.recipient.map(|r| identity(r, channel)),
                        state: delivery_state(s.state),
                        timestamp: s.timestamp,
                        error: s.error,
                    })
                }
                wit::InboundEvent::Ignored(i) => {
                    $crate::channel::InboundEvent::Ignored { reason: i.reason }
                }
            }
        }

        /// `channel` is the plugin's manifest id: 0.2 identities carry none.
        pub(super) fn inbound(i: wit::Inbound, channel: &str) -> $crate::channel::Inbound {
            inbound_with(i, |e| event(e, channel))
        }

        fn media_kind_to_wit(k: $crate::channel::MediaKind) -> wit::MediaKind {
            match k {
                $crate::channel::MediaKind::Image => wit::MediaKind::Image,
                $crate::channel::MediaKind::Video => wit::MediaKind::Video,
                $crate::channel::MediaKind::Audio => wit::MediaKind::Audio,
                $crate::channel::MediaKind::Document => wit::MediaKind::Document,
                $crate::channel::MediaKind::Sticker => wit::MediaKind::Sticker,
            }
        }

        fn outbound_content(c: &$crate::channel::OutboundContent) -> wit::OutboundContent {
            use $crate::channel::OutboundContent as C;
            match c {
                C::Text { text } => wit::OutboundContent::Text(text.clone()),
                C::Media {
                    kind,
                    source,
                    caption,
                    filename,
                } => wit::OutboundContent::Media(wit::OutboundMedia {
                    kind: media_kind_to_wit(*kind),
                    source: match source {
                        $crate::channel::MediaSource::Url(u) => wit::MediaSource::Url(u.clone()),
                        $crate::channel::MediaSource::MediaId(i) => {
                            wit::MediaSource::MediaId(i.clone())
                        }
                    },
                    caption: caption.clone(),
                    filename: filename.clone(),
                }),
                C::Choices { prompt, options } => wit::OutboundContent::Choices(wit::Choices {
                    prompt: prompt.clone(),
                    options: options
                        .iter()
                        .map(|o| wit::Choice {
                            id: o.id.clone(),
                            title: o.title.clone(),
                        })
                        .collect(),
                }),
                C::Template {
                    name,
                    language,
                    parameters,
                } => wit::OutboundContent::Template(wit::Template {
                    name: name.clone(),
                    language: language.clone(),
                    parameters: parameters.clone(),
                }),
            }
        }

        pub(super) fn outbound_message(
            m: &$crate::channel::OutboundMessage,
        ) -> wit::OutboundMessage {
            let c = &m.context;
            wit::OutboundMessage {
                message_id: m.message_id.clone(),
                recipient: identity_to_wit(&m.recipient),
                content: outbound_content(&m.content),
                reply_handle: m.reply_handle.clone(),
                context: wit::OutboundContext {
                    channel: c.channel.clone(),
                    purpose: match c.purpose {
                        $crate::channel::Purpose::AgentReply => wit::Purpose::AgentReply,
                        $crate::channel::Purpose::PersonReply => wit::Purpose::PersonReply,
                        $crate::channel::Purpose::Proactive => wit::Purpose::Proactive,
                    },
                    last_inbound_at: c.last_inbound_at,
                    now: c.now,
                    settings: c
                        .settings
                        .iter()
                        .map(|(name, value)| wit::Setting {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                },
            }
        }
    };
}
