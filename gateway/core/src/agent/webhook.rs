//! The signed envelope of a call to a business's own agent (`[agent] kind =
//! "webhook"`). The gateway signs `timestamp ‖ "." ‖ body` with
//! HMAC-SHA256 under `[agent] secret`; the business checks the signature and
//! that the timestamp is recent before trusting the call.

use ring::hmac;

use crate::verify::{hex_decode, hex_encode};

/// The header carrying the signature: `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-chatcrafter-signature";

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed(timestamp, body));
    format!("t={timestamp},v1={}", hex_encode(tag.as_ref()))
}

/// Checks a signature header as a business would: well formed, within
/// `max_age` seconds of `now`, and matching (constant time).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, max_age: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex_decode(v),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now) > max_age {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signed(t, body), &sig).is_ok()
}

fn signed(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut msg = timestamp.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_call_verifies_and_its_bad_twins_do_not() {
        let body = br#"{"message":{"text":"hi"}}"#;
        let h = sign(b"agent-secret", 1_795_580_000, body);
        assert!(h.starts_with("t=1795580000,v1="));
        assert!(verify(b"agent-secret", &h, body, 1_795_580_010, 300));
        assert!(
            !verify(b"other-secret", &h, body, 1_795_580_010, 300),
            "wrong secret"
        );
        assert!(
            !verify(
                b"agent-secret",
                &h,
                br#"{"message":{"text":"hj"}}"#,
                1_795_580_010,
                300
            ),
            "tampered body"
        );
        assert!(
            !verify(b"agent-secret", &h, body, 1_795_580_400, 300),
            "stale"
        );
        let moved = h.replace("t=1795580000", "t=1795580001");
        assert!(
            !verify(b"agent-secret", &moved, body, 1_795_580_010, 300),
            "timestamp swapped"
        );
        assert!(!verify(
            b"agent-secret",
            "garbage",
            body,
            1_795_580_010,
            300
        ));
    }
}
