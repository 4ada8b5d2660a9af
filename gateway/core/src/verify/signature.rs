//! The webhook signature schemes a plugin manifest can declare, prepared
//! once per channel from the manifest and the channel's secrets.

use base64::Engine as _;
use ring::{hmac, signature};

use super::{Headers, SecretMatcher, hex_decode};
use crate::channel::{Encoding, Verification};

/// Why a request failed verification. The code is the API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature (or secret, or timestamp) header is absent.
    #[error("missing `{header}` header")]
    MissingSignature {
        /// The header that should carry it.
        header: String,
    },
    /// The signature or secret does not match.
    #[error("signature in `{header}` does not match")]
    BadSignature {
        /// The header checked.
        header: String,
    },
    /// The timestamp is outside the replay window.
    #[error("timestamp in `{header}` is outside the {max_age_seconds} s window")]
    StaleTimestamp {
        /// The timestamp header.
        header: String,
        /// The window.
        max_age_seconds: u32,
    },
}

impl VerifyError {
    /// The snake_case code for the error body and the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingSignature { .. } => "missing_signature",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::StaleTimestamp { .. } => "stale_timestamp",
        }
    }
}

/// Why a channel's verification cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The manifest's scheme needs a secret the configuration lacks.
    #[error("secret `{0}` is not configured")]
    MissingSecret(String),
    /// An Ed25519 public key that is not 32 bytes of hex.
    #[error("secret `{0}` must be a 32-byte Ed25519 public key in hex")]
    BadPublicKey(String),
    /// The plugin declares no verification and the channel does not allow it.
    #[error("the plugin declares no verification; set allow_unverified = true to serve it anyway")]
    Unverified,
}

#[derive(Debug)]
enum Part {
    Literal(Vec<u8>),
    Body,
    Header(String),
}

#[derive(Debug)]
enum Scheme {
    None,
    Hmac {
        header: String,
        prefix: String,
        encoding: Encoding,
        template: Vec<Part>,
        timestamp: Option<(String, u32)>,
        key: hmac::Key,
    },
    Shared {
        header: String,
        matcher: SecretMatcher,
    },
    Ed25519 {
        signature_header: String,
        timestamp_header: String,
        encoding: Encoding,
        max_age_seconds: u32,
        key: signature::UnparsedPublicKey<[u8; 32]>,
    },
}

/// A channel's verification, ready to apply.
#[derive(Debug)]
pub struct Verifier {
    scheme: Scheme,
}

impl Verifier {
    /// Prepares `verification` with the channel's secrets. `allow_unverified`
    /// is the channel's explicit consent to a scheme of `none`; `random_key`
    /// keys constant-time secret comparison.
    pub fn new<'a>(
        verification: &Verification,
        secret: impl Fn(&str) -> Option<&'a str>,
        allow_unverified: bool,
        random_key: &[u8; 32],
    ) -> Result<Self, SetupError> {
        let need =
            |name: &str| secret(name).ok_or_else(|| SetupError::MissingSecret(name.to_string()));
        let scheme = match verification {
            Verification::None if allow_unverified => Scheme::None,
            Verification::None => return Err(SetupError::Unverified),
            Verification::HmacSha256 {
                header,
                prefix,
                encoding,
                signed_template,
                timestamp_header,
                max_age_seconds,
                secret: name,
            } => Scheme::Hmac {
                header: header.clone(),
                prefix: prefix.clone(),
                encoding: *encoding,
                template: parse_template(signed_template),
                timestamp: timestamp_header.clone().zip(*max_age_seconds),
                key: hmac::Key::new(hmac::HMAC_SHA256, need(name)?.as_bytes()),
            },
            Verification::SharedSecret {
                header,
                secret: name,
            } => Scheme::Shared {
                header: header.clone(),
                matcher: SecretMatcher::new(need(name)?.as_bytes(), random_key),
            },
            Verification::Ed25519 {
                signature_header,
                timestamp_header,
                encoding,
                max_age_seconds,
                public_key,
            } => {
                let bytes = hex_decode(need(public_key)?.trim())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| SetupError::BadPublicKey(public_key.clone()))?;
                Scheme::Ed25519 {
                    signature_header: signature_header.clone(),
                    timestamp_header: timestamp_header.clone(),
                    encoding: *encoding,
                    max_age_seconds: *max_age_seconds,
                    key: signature::UnparsedPublicKey::new(&signature::ED25519, bytes),
                }
            }
        };
        Ok(Verifier { scheme })
    }

    /// Header names a plugin must not see because they carry the secret.
    pub fn secret_header(&self) -> Option<&str> {
        match &self.scheme {
            Scheme::Shared { header, .. } => Some(header),
            _ => None,
        }
    }

    /// Verifies one request on its raw body. `now` is Unix seconds.
    pub fn verify<H: Headers + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now: u64,
    ) -> Result<(), VerifyError> {
        match &self.scheme {
            Scheme::None => Ok(()),
            Scheme::Hmac {
                header,
                prefix,
                encoding,
                template,
                timestamp,
                key,
            } => {
                let value = headers.header(header).ok_or_else(|| missing(header))?;
                if let Some((ts_header, max_age)) = timestamp {
                    let ts = headers
                        .header(ts_header)
                        .ok_or_else(|| missing(ts_header))?;
                    fresh(ts, now, ts_header, *max_age)?;
                }
                let bad = || VerifyError::BadSignature {
                    header: header.clone(),
                };
                let sig = value.strip_prefix(prefix.as_str()).ok_or_else(bad)?;
                let mut buf = [0u8; SIGNATURE_MAX];
                let sig = decode(sig, *encoding, &mut buf).ok_or_else(bad)?;
                verify_tag(key, template, headers, body, sig).map_err(|()| bad())
            }
            Scheme::Shared { header, matcher } => {
                let value = headers.header(header).ok_or_else(|| missing(header))?;
                if matcher.matches(value.as_bytes()) {
                    Ok(())
                } else {
                    Err(VerifyError::BadSignature {
                        header: header.clone(),
                    })
                }
            }
            Scheme::Ed25519 {
                signature_header,
                timestamp_header,
                encoding,
                max_age_seconds,
                key,
            } => {
                let sig = headers
                    .header(signature_header)
                    .ok_or_else(|| missing(signature_header))?;
                let ts = headers
                    .header(timestamp_header)
                    .ok_or_else(|| missing(timestamp_header))?;
                let bad = || VerifyError::BadSignature {
                    header: signature_header.clone(),
                };
                let mut buf = [0u8; SIGNATURE_MAX];
                let sig = decode(sig, *encoding, &mut buf).ok_or_else(bad)?;
                let mut msg = Vec::with_capacity(ts.len() + body.len());
                msg.extend_from_slice(ts.as_bytes());
                msg.extend_from_slice(body);
                key.verify(&msg, sig).map_err(|_| bad())?;
                fresh(ts, now, timestamp_header, *max_age_seconds)
            }
        }
    }
}

fn verify_tag<H: Headers + ?Sized>(
    key: &hmac::Key,
    template: &[Part],
    headers: &H,
    body: &[u8],
    sig: &[u8],
) -> Result<(), ()> {
    // Build the signed string only when the template is more than `{body}`.
    match template {
        [Part::Body] => hmac::verify(key, body, sig).map_err(|_| ()),
        _ => hmac::verify(key, &signed_message(template, headers, body), sig).map_err(|_| ()),
    }
}

/// The bytes an HMAC template signs: its literals, the body and the named
/// headers' values (empty when absent), in order.
fn signed_message<H: Headers + ?Sized>(template: &[Part], headers: &H, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(body.len() + 64);
    for part in template {
        match part {
            Part::Literal(l) => msg.extend_from_slice(l),
            Part::Body => msg.extend_from_slice(body),
            Part::Header(h) => msg.extend_from_slice(headers.header(h).unwrap_or("").as_bytes()),
        }
    }
    msg
}

/// Why a request cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The scheme needs a secret that was not given.
    #[error("secret `{0}` is needed to sign (give it with --secret {0}=VALUE)")]
    MissingSecret(String),
    /// Ed25519 requests are signed with the channel's private key, which
    /// only the channel holds.
    #[error(
        "an ed25519 request is signed with the channel's private key: it can be verified (--secret {0}=<public key>), not signed here"
    )]
    Ed25519(String),
}

/// Signs a recorded request the way the channel would for `verification`
/// — the signature header (and an HMAC scheme's timestamp header, set to
/// `now` when absent) added to `headers`, or the shared secret's header
/// set — for tools and tests (`gateway plugin run --sign`). A scheme of
/// `none` signs nothing.
pub fn sign_request<'a>(
    verification: &Verification,
    secret: impl Fn(&str) -> Option<&'a str>,
    headers: &mut Vec<crate::channel::Header>,
    body: &[u8],
    now: u64,
) -> Result<(), SignError> {
    let need = |name: &str| secret(name).ok_or_else(|| SignError::MissingSecret(name.to_string()));
    fn set(headers: &mut Vec<crate::channel::Header>, name: &str, value: String) {
        headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        headers.push(crate::channel::Header {
            name: name.to_ascii_lowercase(),
            value,
        });
    }
    match verification {
        Verification::None => {}
        Verification::SharedSecret { header, secret } => {
            set(headers, header, need(secret)?.to_string())
        }
        Verification::Ed25519 { public_key, .. } => {
            return Err(SignError::Ed25519(public_key.clone()));
        }
        Verification::HmacSha256 {
            header,
            prefix,
            encoding,
            signed_template,
            timestamp_header,
            secret,
            ..
        } => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, need(secret)?.as_bytes());
            if let Some(ts) = timestamp_header
                && headers.header(ts).is_none()
            {
                set(headers, ts, now.to_string());
            }
            let msg = signed_message(&parse_template(signed_template), headers.as_slice(), body);
            let tag = hmac::sign(&key, &msg);
            let sig = match encoding {
                Encoding::Hex => super::hex_encode(tag.as_ref()),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
            };
            set(headers, header, format!("{prefix}{sig}"));
        }
    }
    Ok(())
}

fn missing(header: &str) -> VerifyError {
    VerifyError::MissingSignature {
        header: header.to_string(),
    }
}

fn fresh(ts: &str, now: u64, header: &str, max_age_seconds: u32) -> Result<(), VerifyError> {
    let stale = || VerifyError::StaleTimestamp {
        header: header.to_string(),
        max_age_seconds,
    };
    let ts: u64 = ts.trim().parse().map_err(|_| stale())?;
    if ts.abs_diff(now) > u64::from(max_age_seconds) {
        return Err(stale());
    }
    Ok(())
}

/// The longest signature any scheme carries: 64 bytes (Ed25519; an
/// HMAC-SHA256 tag is 32). Longer values cannot be valid.
const SIGNATURE_MAX: usize = 64;

/// Decodes a signature into `buf` without allocating: this runs on every
/// inbound request.
fn decode<'b>(s: &str, encoding: Encoding, buf: &'b mut [u8; SIGNATURE_MAX]) -> Option<&'b [u8]> {
    let s = s.trim();
    match encoding {
        Encoding::Hex => {
            let b = s.as_bytes();
            if !b.len().is_multiple_of(2) || b.len() / 2 > SIGNATURE_MAX {
                return None;
            }
            for (out, pair) in buf.iter_mut().zip(b.chunks_exact(2)) {
                let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
                if hi == 0xff || lo == 0xff {
                    return None;
                }
                *out = hi << 4 | lo;
            }
            Some(&buf[..b.len() / 2])
        }
        Encoding::Base64 => {
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(s, &mut buf[..])
                .ok()?;
            Some(&buf[..n])
        }
    }
}

/// Hex digit values; 0xff marks a non-digit. A table, not a match: a
/// signature's 64 or 128 digits are decoded on every verified request.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// `{body}` and `{header:NAME}` placeholders; everything else literal.
fn parse_template(t: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = t;
    let mut literal = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{body}") {
            flush(&mut literal, &mut parts);
            parts.push(Part::Body);
            rest = r;
        } else if let Some((name, r)) = rest
            .strip_prefix("{header:")
            .and_then(|r| r.split_once('}'))
        {
            flush(&mut literal, &mut parts);
            parts.push(Part::Header(name.to_ascii_lowercase()));
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            let mut buf = [0; 4];
            literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            rest = &rest[c.len_utf8()..];
        }
    }
    flush(&mut literal, &mut parts);
    parts
}

fn flush(literal: &mut Vec<u8>, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal)));
    }
}
