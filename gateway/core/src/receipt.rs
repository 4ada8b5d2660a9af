//! Signed erasure receipts (INTERFACE §3.6): the receipt's JSON without
//! `signature`, keys in sorted order and no spaces, signed with Ed25519;
//! `key_id` names the signing key. `[privacy] receipt_key` (a base64
//! 32-byte Ed25519 seed) and `receipt_key_id` configure it; without them
//! the key is derived from `[security] data_key` (id `derived-…`), so a
//! gateway always signs and `gateway receipt public-key` tells the key to
//! verify with.

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::Value;

/// Why a receipt key could not be set up or a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A key that is not 32 bytes of base64.
    #[error("{0} must be 32 bytes, base64 encoded")]
    BadKey(&'static str),
    /// Neither a receipt key nor a data key to derive one from.
    #[error(
        "privacy.receipt_key is not configured and there is no security.data_key to derive it from"
    )]
    NoKey,
    /// Not a JSON object with a string `signature` and `key_id`.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// Signed by another key than the one given.
    #[error("signed with key `{found}`, not `{expected}`")]
    OtherKey {
        /// The receipt's `key_id`.
        found: String,
        /// The verifying key's id.
        expected: String,
    },
    /// The signature does not match the receipt's content.
    #[error("the signature does not match the receipt: it was altered or signed by another key")]
    BadSignature,
}

/// The gateway's receipt signing key.
pub struct ReceiptSigner {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl ReceiptSigner {
    /// The signer `[privacy]` and `[security]` describe.
    pub fn from_config(c: &crate::config::Config) -> Result<Self, ReceiptError> {
        let decode = |s: &str, what| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or(ReceiptError::BadKey(what))
        };
        match &c.privacy.receipt_key {
            Some(seed) => {
                let seed = decode(seed, "privacy.receipt_key")?;
                let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                    .map_err(|_| ReceiptError::BadKey("privacy.receipt_key"))?;
                let key_id = c
                    .privacy
                    .receipt_key_id
                    .clone()
                    .unwrap_or_else(|| derived_id(&pair));
                Ok(ReceiptSigner { key_id, pair })
            }
            None => {
                let data = c.security.data_key.as_deref().ok_or(ReceiptError::NoKey)?;
                let data = decode(data, "security.data_key")?;
                let mac = ring::hmac::sign(
                    &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &data),
                    b"chatcrafter receipt signing key 1",
                );
                let pair = Ed25519KeyPair::from_seed_unchecked(mac.as_ref())
                    .map_err(|_| ReceiptError::BadKey("security.data_key"))?;
                Ok(ReceiptSigner {
                    key_id: derived_id(&pair),
                    pair,
                })
            }
        }
    }

    /// The signing key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64 (what `gateway receipt verify --public-key`
    /// takes).
    pub fn public_key(&self) -> String {
        b64(self.pair.public_key().as_ref())
    }

    /// `receipt` with `key_id` and `signature` set.
    pub fn sign(&self, mut receipt: Value) -> Value {
        if let Some(o) = receipt.as_object_mut() {
            o.remove("signature");
            o.insert("key_id".into(), Value::String(self.key_id.clone()));
        }
        let sig = self.pair.sign(canonical(&receipt).as_bytes());
        if let Some(o) = receipt.as_object_mut() {
            o.insert("signature".into(), Value::String(b64(sig.as_ref())));
        }
        receipt
    }
}

fn derived_id(pair: &Ed25519KeyPair) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
    format!(
        "derived-{}",
        &crate::verify::hex_encode(digest.as_ref())[..16]
    )
}

/// Checks `receipt` against `public_key` (32 bytes, base64) with id
/// `key_id` (any id when `None`).
pub fn verify(receipt: &Value, public_key: &str, key_id: Option<&str>) -> Result<(), ReceiptError> {
    let o = receipt
        .as_object()
        .ok_or_else(|| ReceiptError::Malformed("not a JSON object".into()))?;
    let sig = o
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| ReceiptError::Malformed("no `signature` string".into()))?;
    let found = o
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ReceiptError::Malformed("no `key_id` string".into()))?;
    if let Some(expected) = key_id
        && expected != found
    {
        return Err(ReceiptError::OtherKey {
            found: found.into(),
            expected: expected.into(),
        });
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| ReceiptError::Malformed("`signature` is not base64".into()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(public_key.trim())
        .map_err(|_| ReceiptError::BadKey("the public key"))?;
    let mut unsigned = receipt.clone();
    if let Some(o) = unsigned.as_object_mut() {
        o.remove("signature");
    }
    UnparsedPublicKey::new(&ED25519, key)
        .verify(canonical(&unsigned).as_bytes(), &sig)
        .map_err(|_| ReceiptError::BadSignature)
}

/// `v` as JSON with every object's keys in sorted order and no spaces
/// (whatever order the map type keeps).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&o[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(receipt_key: Option<&str>) -> crate::config::Config {
        let mut c = crate::config::Config::parse("version = 1").unwrap();
        c.security.data_key = Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into());
        c.privacy.receipt_key = receipt_key.map(String::from);
        c.privacy.receipt_key_id = receipt_key.map(|_| "r1".into());
        c
    }

    #[test]
    fn a_signed_receipt_verifies_and_any_change_breaks_it() {
        let signer = ReceiptSigner::from_config(&config(Some(
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        )))
        .unwrap();
        let r = signer.sign(json!({"customer_id": "c_1", "removed": {"messages": 3, "identities": 2}, "erased_at": "2026-12-01T00:00:00Z"}));
        assert_eq!(r["key_id"], "r1");
        let pk = signer.public_key();
        verify(&r, &pk, Some("r1")).unwrap();
        verify(&r, &pk, None).unwrap();
        let mut altered = r.clone();
        altered["removed"]["messages"] = json!(2);
        assert_eq!(verify(&altered, &pk, None), Err(ReceiptError::BadSignature));
        assert!(matches!(
            verify(&r, &pk, Some("r2")),
            Err(ReceiptError::OtherKey { .. })
        ));
        let other = ReceiptSigner::from_config(&config(None)).unwrap();
        assert!(other.key_id().starts_with("derived-"));
        assert_eq!(
            verify(&r, &other.public_key(), None),
            Err(ReceiptError::BadSignature)
        );
        assert_eq!(
            canonical(&json!({"b": 1, "a": {"d": [1, "x"], "c": null}})),
            r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#
        );
    }
}
