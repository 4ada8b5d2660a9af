//! What a plugin declares about its channel, for the host to enforce.

use serde::{Deserialize, Serialize};

/// How a signature is written in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// The verification the host applies to every inbound request of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme")]
pub enum Verification {
    /// None: allowed only when the configuration says so, or when the host
    /// authenticates the caller itself (the widget's JWT).
    None,
    /// HMAC-SHA256 over a signed string built from a template.
    HmacSha256 {
        /// Header carrying the signature, lower case.
        header: String,
        /// Prefix before the encoded signature (`sha256=`), possibly empty.
        prefix: String,
        /// Encoding of the signature.
        encoding: Encoding,
        /// `{body}` and `{header:NAME}` placeholders; the rest is literal.
        signed_template: String,
        /// Header with the request time in Unix seconds, if any.
        timestamp_header: Option<String>,
        /// Accepted clock distance in seconds, if a timestamp is checked.
        max_age_seconds: Option<u32>,
        /// Name of the secret keying the HMAC.
        secret: String,
    },
    /// A static secret repeated in a header.
    SharedSecret {
        /// Header carrying the secret, lower case.
        header: String,
        /// Name of the secret it must equal.
        secret: String,
    },
    /// Ed25519 over timestamp ‖ body.
    Ed25519 {
        /// Header carrying the signature, lower case.
        signature_header: String,
        /// Header carrying the signed timestamp, lower case.
        timestamp_header: String,
        /// Encoding of the signature.
        encoding: Encoding,
        /// Accepted clock distance in seconds.
        max_age_seconds: u32,
        /// Name of the secret holding the hex public key.
        public_key: String,
    },
}

/// The subscription handshake the host answers for a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Handshake {
    /// No handshake.
    None,
    /// Echo a query parameter when a token matches a secret (WhatsApp).
    QueryChallenge {
        /// HTTP method of the handshake, upper case.
        method: String,
        /// Query parameter naming the mode.
        mode_param: String,
        /// Required mode value.
        mode_value: String,
        /// Query parameter carrying the token.
        token_param: String,
        /// Secret the token must equal.
        token_secret: String,
        /// Query parameter echoed back.
        challenge_param: String,
    },
}

/// A secret or setting a plugin needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingSpec {
    /// Configuration key.
    pub name: String,
    /// What it is and where to find it.
    pub description: String,
    /// Whether the channel cannot run without it.
    pub required: bool,
}

/// What a plugin can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Produces inbound messages.
    ReceiveMessages,
    /// Produces delivery statuses.
    DeliveryStatus,
    /// Renders outbound text.
    SendText,
    /// Answers at once and defers the real reply.
    DeferredReplies,
    /// Recognises link tokens.
    LinkTokens,
    /// Renders outbound media (0.2).
    SendMedia,
    /// Renders reply options natively (0.2); without it the host sends
    /// them as numbered text.
    SendChoices,
    /// Renders message templates (0.2).
    SendTemplates,
}

/// What one outbound message may hold on a channel (0.2's
/// `outbound-limits`; a 0.1 plugin gets [`OutboundLimits::text_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundLimits {
    /// Longest text, in Unicode scalar values.
    pub max_text_chars: u32,
    /// Most reply options; 0 when the channel has none.
    pub max_choices: u32,
    /// Longest option title, in Unicode scalar values.
    pub max_choice_title_chars: u32,
    /// Longest media caption; 0 when the channel takes none.
    pub max_caption_chars: u32,
}

impl OutboundLimits {
    /// A channel that takes text only, 4096 characters (what 0.1 plugins
    /// are assumed to take).
    pub const fn text_only() -> Self {
        OutboundLimits {
            max_text_chars: 4096,
            max_choices: 0,
            max_choice_title_chars: 0,
            max_caption_chars: 0,
        }
    }
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self::text_only()
    }
}

/// Most deep-link templates a manifest may declare.
pub const MAX_DEEP_LINKS: usize = 4;
/// Longest deep-link template, bytes.
pub const MAX_DEEP_LINK_BYTES: usize = 512;

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Plugin id and channel name, `[a-z0-9-]+`.
    pub id: String,
    /// The plugin's semantic version.
    pub version: String,
    /// Human-readable channel name.
    pub display_name: String,
    /// Inbound verification.
    pub verification: Verification,
    /// Subscription handshake.
    pub handshake: Handshake,
    /// Secrets the host needs.
    pub secrets: Vec<SettingSpec>,
    /// Non-secret settings passed to the plugin.
    pub settings: Vec<SettingSpec>,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// How long after the customer's last message the channel accepts
    /// free-form messages, seconds; `None`: no window.
    #[serde(default)]
    pub reply_window_seconds: Option<u32>,
    /// How long a person's reply is accepted, when longer than the reply
    /// window (Messenger's `HUMAN_AGENT` tag); `None`: the reply window.
    #[serde(default)]
    pub person_reply_window_seconds: Option<u32>,
    /// Deep-link templates, first usable one wins (see
    /// [`Manifest::deep_link`]).
    #[serde(default)]
    pub deep_links: Vec<String>,
    /// What one outbound message may hold.
    #[serde(default)]
    pub outbound_limits: OutboundLimits,
}

/// Why a manifest is unacceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The id is not `[a-z0-9-]{1,32}`.
    #[error("id `{0}` must be 1 to 32 characters of a-z, 0-9 and `-`")]
    BadId(String),
    /// The version is empty.
    #[error("version must not be empty")]
    NoVersion,
    /// A scheme refers to a secret the manifest does not declare.
    #[error("{used_by} refers to secret `{name}`, which `secrets` does not declare")]
    UndeclaredSecret {
        /// The secret's name.
        name: String,
        /// Which part of the manifest refers to it.
        used_by: &'static str,
    },
    /// A header name is not lower case or empty.
    #[error("{used_by}: header name `{name}` must be non-empty lower case")]
    BadHeader {
        /// The header name.
        name: String,
        /// Which part of the manifest holds it.
        used_by: &'static str,
    },
    /// An HMAC template without `{body}` would not protect the body.
    #[error("hmac-sha256 signed-template `{0}` must contain `{{body}}`")]
    TemplateWithoutBody(String),
    /// A timestamp header without a window, or the reverse.
    #[error("hmac-sha256 needs both timestamp-header and max-age-seconds, or neither")]
    HalfTimestamp,
    /// A deep-link template the host cannot use safely.
    #[error("deep-links: {0}")]
    BadDeepLink(String),
    /// Outbound limits that contradict the capabilities.
    #[error("outbound-limits: {0}")]
    BadLimits(String),
}

impl Manifest {
    /// Checks what the host relies on: a usable id, declared secrets, and
    /// well-formed schemes.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(ManifestError::BadId(self.id.clone()));
        }
        if self.version.trim().is_empty() {
            return Err(ManifestError::NoVersion);
        }
        let declared = |name: &str, used_by: &'static str| {
            if self.secrets.iter().any(|s| s.name == name) {
                Ok(())
            } else {
                Err(ManifestError::UndeclaredSecret {
                    name: name.to_string(),
                    used_by,
                })
            }
        };
        let header = |name: &str, used_by: &'static str| {
            if !name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(ManifestError::BadHeader {
                    name: name.to_string(),
                    used_by,
                })
            }
        };
        match &self.verification {
            Verification::None => {}
            Verification::HmacSha256 {
                header: h,
                signed_template,
                timestamp_header,
                max_age_seconds,
                secret,
                ..
            } => {
                header(h, "hmac-sha256")?;
                declared(secret, "hmac-sha256")?;
                if !signed_template.contains("{body}") {
                    return Err(ManifestError::TemplateWithoutBody(signed_template.clone()));
                }
                match (timestamp_header, max_age_seconds) {
                    (Some(t), Some(_)) => header(t, "hmac-sha256 timestamp")?,
                    (None, None) => {}
                    _ => return Err(ManifestError::HalfTimestamp),
                }
            }
            Verification::SharedSecret { header: h, secret } => {
                header(h, "shared-secret")?;
                declared(secret, "shared-secret")?;
            }
            Verification::Ed25519 {
                signature_header,
                timestamp_header,
                public_key,
                ..
            } => {
                header(signature_header, "ed25519")?;
                header(timestamp_header, "ed25519 timestamp")?;
                declared(public_key, "ed25519")?;
            }
        }
        if let Handshake::QueryChallenge { token_secret, .. } = &self.handshake {
            declared(token_secret, "query-challenge handshake")?;
        }
        self.validate_deep_links()?;
        let l = &self.outbound_limits;
        if l.max_text_chars == 0 {
            return Err(ManifestError::BadLimits(
                "max-text-chars must be at least 1".into(),
            ));
        }
        if self.can(Capability::SendChoices)
            && (l.max_choices == 0 || l.max_choice_title_chars == 0)
        {
            return Err(ManifestError::BadLimits(
                "send-choices needs max-choices and max-choice-title-chars of at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether the plugin declares `c`.
    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }

    fn validate_deep_links(&self) -> Result<(), ManifestError> {
        let bad = |why: String| Err(ManifestError::BadDeepLink(why));
        if self.deep_links.len() > MAX_DEEP_LINKS {
            return bad(format!(
                "{} templates; at most {MAX_DEEP_LINKS}",
                self.deep_links.len()
            ));
        }
        for t in &self.deep_links {
            if t.len() > MAX_DEEP_LINK_BYTES {
                return bad(format!(
                    "a template is {} bytes; at most {MAX_DEEP_LINK_BYTES}",
                    t.len()
                ));
            }
            if !t.starts_with("https://") {
                return bad(format!("`{t}` must start with https://"));
            }
            if !t.contains("{token}") {
                return bad(format!("`{t}` must contain {{token}}"));
            }
            for name in placeholders(t) {
                let known = name == "token"
                    || name
                        .strip_prefix("setting:")
                        .is_some_and(|s| self.settings.iter().any(|d| d.name == s));
                if !known {
                    return bad(format!(
                        "`{t}` uses {{{name}}}; only {{token}} and {{setting:NAME}} of a declared setting are allowed"
                    ));
                }
            }
            // The host (not data) must decide where the link points.
            let host_part = t["https://".len()..].split('/').next().unwrap_or_default();
            if host_part.contains('{') {
                return bad(format!("`{t}`: its host must be literal"));
            }
        }
        Ok(())
    }

    /// The deep link carrying `token`, from the first template whose
    /// settings are all configured (`setting` looks one up); each setting's
    /// value is percent-encoded, and a leading `+` of a phone number
    /// dropped. `None` when no template is usable.
    pub fn deep_link<'a>(
        &self,
        token: &str,
        setting: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<String> {
        'templates: for t in &self.deep_links {
            let mut out = String::new();
            let mut rest = t.as_str();
            while let Some(start) = rest.find('{') {
                out.push_str(&rest[..start]);
                let Some(len) = rest[start..].find('}') else {
                    continue 'templates;
                };
                let name = &rest[start + 1..start + len];
                let value = match name.strip_prefix("setting:") {
                    Some(s) => match setting(s) {
                        Some(v) if !v.trim().is_empty() => v.trim().trim_start_matches('+'),
                        _ => continue 'templates,
                    },
                    None => token,
                };
                out.push_str(&encode_component(value));
                rest = &rest[start + len + 1..];
            }
            out.push_str(rest);
            return Some(out);
        }
        None
    }
}

/// The `{…}` placeholders of a template.
fn placeholders(t: &str) -> impl Iterator<Item = &str> {
    t.split('{')
        .skip(1)
        .map(|p| p.split_once('}').map(|(n, _)| n).unwrap_or(p))
}

/// Percent-encodes all but URL-unreserved characters.
fn encode_component(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(verification: Verification) -> Manifest {
        Manifest {
            id: "acme-chat".into(),
            version: "1.0.0".into(),
            display_name: "Acme".into(),
            verification,
            handshake: Handshake::None,
            secrets: vec![SettingSpec {
                name: "signing_secret".into(),
                description: String::new(),
                required: true,
            }],
            settings: vec![SettingSpec {
                name: "page_id".into(),
                description: String::new(),
                required: false,
            }],
            capabilities: vec![Capability::ReceiveMessages],
            reply_window_seconds: None,
            person_reply_window_seconds: None,
            deep_links: vec![],
            outbound_limits: OutboundLimits::text_only(),
        }
    }

    #[test]
    fn the_first_deep_link_whose_settings_are_configured_is_used() {
        let mut m = manifest(Verification::None);
        m.settings.push(SettingSpec {
            name: "username".into(),
            description: String::new(),
            required: false,
        });
        m.deep_links = vec![
            "https://ig.me/m/{setting:username}?ref={token}".into(),
            "https://m.me/{setting:page_id}?ref={token}".into(),
        ];
        assert_eq!(m.validate(), Ok(()));
        let only_page = |n: &str| (n == "page_id").then_some("+1234 5");
        assert_eq!(
            m.deep_link("lt_abc", only_page).as_deref(),
            Some("https://m.me/1234%205?ref=lt_abc")
        );
        let both = |n: &str| Some(if n == "username" { "shop" } else { "1" });
        assert_eq!(
            m.deep_link("t", both).as_deref(),
            Some("https://ig.me/m/shop?ref=t")
        );
        assert_eq!(m.deep_link("t", |_| None), None);
    }

    #[test]
    fn a_deep_link_with_an_unknown_placeholder_or_a_data_host_is_refused() {
        for (t, why) in [
            ("https://m.me/{setting:nope}?ref={token}", "{setting:nope}"),
            ("http://m.me/?ref={token}", "https://"),
            ("https://m.me/x", "{token}"),
            ("https://{setting:page_id}/?r={token}", "literal"),
        ] {
            let mut m = manifest(Verification::None);
            m.deep_links = vec![t.into()];
            let err = m.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{t}: {err}");
        }
    }

    fn hmac(template: &str, secret: &str) -> Verification {
        Verification::HmacSha256 {
            header: "x-acme-signature".into(),
            prefix: "v0=".into(),
            encoding: Encoding::Hex,
            signed_template: template.into(),
            timestamp_header: Some("x-acme-timestamp".into()),
            max_age_seconds: Some(300),
            secret: secret.into(),
        }
    }

    #[test]
    fn a_slack_style_manifest_is_valid() {
        let m = manifest(hmac(
            "v0:{header:x-acme-timestamp}:{body}",
            "signing_secret",
        ));
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn a_scheme_naming_an_undeclared_secret_is_refused() {
        let m = manifest(hmac("{body}", "other"));
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "hmac-sha256 refers to secret `other`, which `secrets` does not declare"
        );
    }

    #[test]
    fn a_template_that_does_not_sign_the_body_is_refused() {
        let m = manifest(hmac("{header:x-acme-timestamp}", "signing_secret"));
        assert!(matches!(
            m.validate(),
            Err(ManifestError::TemplateWithoutBody(_))
        ));
    }

    #[test]
    fn an_id_with_upper_case_or_slashes_is_refused() {
        for id in [
            "Acme",
            "a/b",
            "",
            "a-very-long-identifier-that-goes-on-and-on",
        ] {
            let mut m = manifest(Verification::None);
            m.id = id.into();
            assert_eq!(m.validate(), Err(ManifestError::BadId(id.into())), "{id}");
        }
    }
}
