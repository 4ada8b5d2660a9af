//! Verification of inbound requests, on the raw bytes, before any plugin
//! runs. Pure functions: the host passes headers, body, secrets, randomness
//! and the current time.
//!
//! - [`signature`]: the schemes a plugin manifest can declare — HMAC-SHA256
//!   over a template, a shared-secret header, Ed25519 over timestamp ‖ body —
//!   prepared once per channel and applied per request;
//! - [`handshake`]: subscription handshakes such as WhatsApp's challenge echo;
//! - [`jwt`]: the web widget's JWTs.
//!
//! Every comparison with a secret is constant time. Nothing here logs, and
//! no error carries a secret or a signature value.

pub mod gate;
pub mod handshake;
pub mod jwt;
pub mod signature;

/// Read access to request headers, by lower-case name.
pub trait Headers {
    /// The first value of header `name`, if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for [crate::channel::Header] {
    fn header(&self, name: &str) -> Option<&str> {
        // Names arrive lower case from the HTTP layer; the exact comparison
        // answers almost every lookup before the case-insensitive one.
        self.iter()
            .find(|h| h.name == name || h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

impl Headers for Vec<crate::channel::Header> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// Decodes hex (either case). `None` on odd length or a non-hex digit.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Lower-case hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The value of query parameter `name` (matched literally, dots included),
/// percent-decoded with `+` as space.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match hex_decode_pair(b[i + 1], b[i + 2]) {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_decode_pair(hi: u8, lo: u8) -> Option<u8> {
    let s = [hi, lo];
    let s = std::str::from_utf8(&s).ok()?;
    hex_decode(s).map(|v| v[0])
}

/// Compares a presented secret with an expected one in constant time: both
/// are MACed under a per-process random key and the tags compared with
/// ring's constant-time `hmac::verify`, so neither the position of the first
/// difference nor the expected length leaks.
#[derive(Debug)]
pub struct SecretMatcher {
    key: ring::hmac::Key,
    expected: ring::hmac::Tag,
}

impl SecretMatcher {
    /// `random_key` must be fresh randomness from the host (32 bytes).
    pub fn new(expected: &[u8], random_key: &[u8; 32]) -> Self {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, random_key);
        let expected = ring::hmac::sign(&key, expected);
        SecretMatcher { key, expected }
    }

    /// Whether `presented` equals the expected secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        ring::hmac::verify(&self.key, presented, self.expected.as_ref()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_matched_literally_and_decoded() {
        let q = "hub.mode=subscribe&hub.verify_token=a%20b+c&hub.challenge=1158201444";
        assert_eq!(query_param(q, "hub.verify_token").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "hub_mode"), None);
        assert_eq!(query_param("x=%zz%4", "x").as_deref(), Some("%zz%4"));
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(
            hex_decode(&hex_encode(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert_eq!(hex_decode("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn secret_matcher_accepts_only_the_exact_secret() {
        let m = SecretMatcher::new(b"s3cret", &[7; 32]);
        assert!(m.matches(b"s3cret"));
        assert!(!m.matches(b"s3cre"));
        assert!(!m.matches(b"s3cret "));
        assert!(!m.matches(b""));
    }
}
