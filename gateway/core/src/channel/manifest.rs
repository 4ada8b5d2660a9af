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
}

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
        Ok(())
    }
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
            settings: vec![],
            capabilities: vec![Capability::ReceiveMessages],
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
