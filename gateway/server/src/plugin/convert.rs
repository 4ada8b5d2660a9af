//! Conversions between the `chatcrafter:channel@0.1.0` bindings and the
//! core's own types. The pipeline only ever sees the core types, so a future
//! WIT version needs a new converter, never new pipeline code.

use chatcrafter_core::channel as core;

use super::bindings::wit;

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

fn encoding(e: wit::Encoding) -> core::Encoding {
    match e {
        wit::Encoding::Hex => core::Encoding::Hex,
        wit::Encoding::Base64 => core::Encoding::Base64,
    }
}

fn spec(s: wit::SettingSpec) -> core::SettingSpec {
    core::SettingSpec {
        name: s.name,
        description: s.description,
        required: s.required,
    }
}

pub(super) fn manifest(m: wit::Manifest) -> core::Manifest {
    let verification = match m.verification {
        wit::Verification::None => core::Verification::None,
        wit::Verification::HmacSha256(s) => core::Verification::HmacSha256 {
            header: s.header,
            prefix: s.prefix,
            encoding: encoding(s.encoding),
            signed_template: s.signed_template,
            timestamp_header: s.timestamp_header,
            max_age_seconds: s.max_age_seconds,
            secret: s.secret,
        },
        wit::Verification::SharedSecret(s) => core::Verification::SharedSecret {
            header: s.header,
            secret: s.secret,
        },
        wit::Verification::Ed25519(s) => core::Verification::Ed25519 {
            signature_header: s.signature_header,
            timestamp_header: s.timestamp_header,
            encoding: encoding(s.encoding),
            max_age_seconds: s.max_age_seconds,
            public_key: s.public_key,
        },
    };
    let handshake = match m.handshake {
        wit::Handshake::None => core::Handshake::None,
        wit::Handshake::QueryChallenge(q) => core::Handshake::QueryChallenge {
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
            core::Capability::ReceiveMessages,
        ),
        (
            wit::Capabilities::DELIVERY_STATUS,
            core::Capability::DeliveryStatus,
        ),
        (wit::Capabilities::SEND_TEXT, core::Capability::SendText),
        (
            wit::Capabilities::DEFERRED_REPLIES,
            core::Capability::DeferredReplies,
        ),
        (wit::Capabilities::LINK_TOKENS, core::Capability::LinkTokens),
    ];
    core::Manifest {
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

fn claim_kind_to_wit(k: &core::ClaimKind) -> wit::ClaimKind {
    match k {
        core::ClaimKind::Email => wit::ClaimKind::Email,
        core::ClaimKind::Phone => wit::ClaimKind::Phone,
        core::ClaimKind::Name => wit::ClaimKind::Name,
        core::ClaimKind::Username => wit::ClaimKind::Username,
        core::ClaimKind::UserId => wit::ClaimKind::UserId,
        core::ClaimKind::Other(s) => wit::ClaimKind::Other(s.clone()),
    }
}

fn claim(c: wit::Claim) -> core::Claim {
    core::Claim {
        kind: match c.kind {
            wit::ClaimKind::Email => core::ClaimKind::Email,
            wit::ClaimKind::Phone => core::ClaimKind::Phone,
            wit::ClaimKind::Name => core::ClaimKind::Name,
            wit::ClaimKind::Username => core::ClaimKind::Username,
            wit::ClaimKind::UserId => core::ClaimKind::UserId,
            wit::ClaimKind::Other(s) => core::ClaimKind::Other(s),
        },
        value: c.value,
        verified: c.verified,
    }
}

fn header(h: wit::Header) -> core::Header {
    core::Header {
        name: h.name,
        value: h.value,
    }
}

fn identity_to_wit(i: &core::ChannelIdentity) -> wit::ChannelIdentity {
    wit::ChannelIdentity {
        channel: i.channel.clone(),
        scope: i.scope.clone(),
        id: i.id.clone(),
    }
}

fn identity(i: wit::ChannelIdentity) -> core::ChannelIdentity {
    core::ChannelIdentity {
        channel: i.channel,
        scope: i.scope,
        id: i.id,
    }
}

/// Moves a request into its WIT form: the body and headers are not copied
/// again on the way into the guest.
pub(super) fn inbound_request(r: core::InboundRequest) -> wit::InboundRequest {
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

fn content(c: wit::Content) -> core::Content {
    match c {
        wit::Content::Text(text) => core::Content::Text { text },
        wit::Content::Media(m) => core::Content::Media {
            kind: match m.kind {
                wit::MediaKind::Image => core::MediaKind::Image,
                wit::MediaKind::Video => core::MediaKind::Video,
                wit::MediaKind::Audio => core::MediaKind::Audio,
                wit::MediaKind::Document => core::MediaKind::Document,
                wit::MediaKind::Sticker => core::MediaKind::Sticker,
            },
            reference: m.reference,
            mime_type: m.mime_type,
            caption: m.caption,
            filename: m.filename,
        },
        wit::Content::Location(l) => core::Content::Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name,
            address: l.address,
        },
        wit::Content::Postback(p) => core::Content::Postback {
            payload: p.payload,
            title: p.title,
        },
        wit::Content::Reaction(r) => core::Content::Reaction {
            message_id: r.message_id,
            emoji: r.emoji,
        },
        wit::Content::Unsupported(kind) => core::Content::Unsupported { kind },
    }
}

fn event(e: wit::InboundEvent) -> core::InboundEvent {
    match e {
        wit::InboundEvent::Message(m) => core::InboundEvent::Message(core::InboundMessage {
            provider_message_id: m.provider_message_id,
            sender: identity(m.sender),
            display_name: m.display_name,
            claims: m.claims.into_iter().map(claim).collect(),
            content: content(m.content),
            link_token: m.link_token,
            timestamp: m.timestamp,
            edited: m.edited,
            reply_handle: m.reply_handle,
        }),
        wit::InboundEvent::Status(s) => core::InboundEvent::Status(core::DeliveryStatus {
            provider_message_id: s.provider_message_id,
            recipient: s.recipient.map(identity),
            state: match s.state {
                wit::DeliveryState::Sent => core::DeliveryState::Sent,
                wit::DeliveryState::Delivered => core::DeliveryState::Delivered,
                wit::DeliveryState::Read => core::DeliveryState::Read,
                wit::DeliveryState::Failed => core::DeliveryState::Failed,
            },
            timestamp: s.timestamp,
            error: s.error,
        }),
        wit::InboundEvent::Ignored(i) => core::InboundEvent::Ignored { reason: i.reason },
    }
}

pub(super) fn inbound(i: wit::Inbound) -> core::Inbound {
    core::Inbound {
        events: i.events.into_iter().map(event).collect(),
        response: core::HttpResponse {
            status: i.response.status,
            headers: i.response.headers.into_iter().map(header).collect(),
            body: i.response.body,
        },
        diagnostics: i
            .diagnostics
            .into_iter()
            .map(|d| core::Diagnostic {
                level: match d.level {
                    wit::Level::Info => "info".into(),
                    wit::Level::Warning => "warning".into(),
                },
                message: d.message,
            })
            .collect(),
    }
}

pub(super) fn channel_error(e: wit::ChannelError) -> core::ChannelError {
    match e {
        wit::ChannelError::Malformed(s) => core::ChannelError::Malformed(s),
        wit::ChannelError::Unsupported(s) => core::ChannelError::Unsupported(s),
        wit::ChannelError::InvalidOutbound(s) => core::ChannelError::InvalidOutbound(s),
        wit::ChannelError::Other(s) => core::ChannelError::Other(s),
    }
}

pub(super) fn outbound_message(m: &core::OutboundMessage) -> wit::OutboundMessage {
    wit::OutboundMessage {
        message_id: m.message_id.clone(),
        recipient: identity_to_wit(&m.recipient),
        content: wit::OutboundContent::Text(m.text.clone()),
        reply_handle: m.reply_handle.clone(),
    }
}

pub(super) fn outbound_request(r: wit::OutboundRequest) -> core::OutboundRequest {
    match r {
        wit::OutboundRequest::Http(c) => core::OutboundRequest::Http(core::HttpCall {
            method: method(c.method),
            path: c.path,
            headers: c.headers.into_iter().map(header).collect(),
            body: c.body,
            credential: c.credential.map(|c| core::CredentialHeader {
                name: c.name,
                prefix: c.prefix,
                secret: c.secret,
            }),
            sent_id: c.sent_id,
        }),
        wit::OutboundRequest::Push(frame) => core::OutboundRequest::Push { frame },
    }
}
