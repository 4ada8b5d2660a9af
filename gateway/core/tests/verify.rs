//! Verification on real signatures made with ring and jsonwebtoken, and
//! their bad twins.

use base64::Engine as _;
use chatcrafter_core::channel::{ClaimKind, Encoding, Header, Verification};
use chatcrafter_core::verify::hex_encode;
use chatcrafter_core::verify::jwt::{KeySource, TokenError, WidgetAuth};
use chatcrafter_core::verify::signature::{SetupError, Verifier, VerifyError};
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};

const NOW: u64 = 1_795_580_000;
const KEY: [u8; 32] = [9; 32];

fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(n, v)| Header {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn whatsapp() -> Verifier {
    let v = Verification::HmacSha256 {
        header: "x-hub-signature-256".into(),
        prefix: "sha256=".into(),
        encoding: Encoding::Hex,
        signed_template: "{body}".into(),
        timestamp_header: None,
        max_age_seconds: None,
        secret: "app_secret".into(),
    };
    Verifier::new(
        &v,
        |n| (n == "app_secret").then_some("meta-app-secret"),
        false,
        &KEY,
    )
    .unwrap()
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex_encode(ring::hmac::sign(&k, msg).as_ref())
}

// WhatsApp signs the escaped ASCII bytes it sends.
const ESCAPED: &[u8] = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"contacts":[{"profile":{"name":"J\u00f6rg"}}],"messages":[{"text":{"body":"\u00e4\u00f6\u00e5 https:\/\/x.example"}}]}}]}]}"#;

#[test]
fn whatsapp_signature_over_the_escaped_bytes_verifies_as_received() {
    let sig = format!("sha256={}", hmac_hex(b"meta-app-secret", ESCAPED));
    assert_eq!(
        whatsapp().verify(&headers(&[("x-hub-signature-256", &sig)]), ESCAPED, NOW),
        Ok(())
    );
    // Re-serializing (serde_json writes raw UTF-8 and drops `\/`) changes
    // the bytes, so a gateway that re-serialized would reject the real thing.
    let value: serde_json::Value = serde_json::from_slice(ESCAPED).unwrap();
    let reserialized = serde_json::to_vec(&value).unwrap();
    assert_ne!(reserialized, ESCAPED);
    assert!(
        whatsapp()
            .verify(
                &headers(&[("x-hub-signature-256", &sig)]),
                &reserialized,
                NOW
            )
            .is_err()
    );
}

#[test]
fn whatsapp_wrong_signature_tampered_body_and_missing_header_fail() {
    let sig = format!("sha256={}", hmac_hex(b"meta-app-secret", ESCAPED));
    let wrong = format!("sha256={}", hmac_hex(b"another-secret", ESCAPED));
    let v = whatsapp();
    let bad = Err(VerifyError::BadSignature {
        header: "x-hub-signature-256".into(),
    });
    assert_eq!(
        v.verify(&headers(&[("x-hub-signature-256", &wrong)]), ESCAPED, NOW),
        bad
    );
    let mut tampered = ESCAPED.to_vec();
    tampered[20] ^= 1;
    assert_eq!(
        v.verify(&headers(&[("x-hub-signature-256", &sig)]), &tampered, NOW),
        bad
    );
    assert_eq!(
        v.verify(&headers(&[]), ESCAPED, NOW),
        Err(VerifyError::MissingSignature {
            header: "x-hub-signature-256".into()
        })
    );
    // Without the `sha256=` prefix, or with garbage hex.
    let bare = sig.trim_start_matches("sha256=").to_string();
    assert_eq!(
        v.verify(&headers(&[("x-hub-signature-256", &bare)]), ESCAPED, NOW),
        bad
    );
    assert_eq!(
        v.verify(
            &headers(&[("x-hub-signature-256", "sha256=zz")]),
            ESCAPED,
            NOW
        ),
        bad
    );
}

#[test]
fn whatsapp_sha1_only_header_is_a_missing_signature() {
    let sha1 = ring::hmac::sign(
        &ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            b"meta-app-secret",
        ),
        ESCAPED,
    );
    let h = headers(&[(
        "x-hub-signature",
        &format!("sha1={}", hex_encode(sha1.as_ref())),
    )]);
    assert_eq!(
        whatsapp().verify(&h, ESCAPED, NOW).unwrap_err().code(),
        "missing_signature"
    );
}

/// Slack's scheme: a timestamp header inside the signed template.
fn slack_scheme() -> Verification {
    Verification::HmacSha256 {
        header: "x-slack-signature".into(),
        prefix: "v0=".into(),
        encoding: Encoding::Hex,
        signed_template: "v0:{header:x-slack-request-timestamp}:{body}".into(),
        timestamp_header: Some("x-slack-request-timestamp".into()),
        max_age_seconds: Some(300),
        secret: "signing_secret".into(),
    }
}

#[test]
fn a_slack_style_scheme_is_verified_from_the_manifest_alone() {
    let v = Verifier::new(
        &slack_scheme(),
        |_| Some("8f742231b10e8888abcd99yyyzzz85a5"),
        false,
        &KEY,
    )
    .unwrap();
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather";
    let ts = (NOW - 10).to_string();
    let sig = format!(
        "v0={}",
        hmac_hex(
            b"8f742231b10e8888abcd99yyyzzz85a5",
            format!("v0:{ts}:")
                .as_bytes()
                .iter()
                .chain(body)
                .copied()
                .collect::<Vec<_>>()
                .as_slice()
        )
    );
    let h = headers(&[
        ("x-slack-signature", &sig),
        ("x-slack-request-timestamp", &ts),
    ]);
    assert_eq!(v.verify(&h, body, NOW), Ok(()));
    // The same signature replayed later is stale.
    assert_eq!(
        v.verify(&h, body, NOW + 400).unwrap_err().code(),
        "stale_timestamp"
    );
    // A different timestamp breaks the signature.
    let moved = (NOW - 11).to_string();
    let h = headers(&[
        ("x-slack-signature", &sig),
        ("x-slack-request-timestamp", &moved),
    ]);
    assert_eq!(v.verify(&h, body, NOW).unwrap_err().code(), "bad_signature");
}

#[test]
fn base64_hmac_signatures_verify() {
    let v = Verification::HmacSha256 {
        header: "x-sig".into(),
        prefix: String::new(),
        encoding: Encoding::Base64,
        signed_template: "{body}".into(),
        timestamp_header: None,
        max_age_seconds: None,
        secret: "s".into(),
    };
    let v = Verifier::new(&v, |_| Some("k"), false, &KEY).unwrap();
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
    let sig =
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, b"hello").as_ref());
    assert_eq!(
        v.verify(&headers(&[("x-sig", &sig)]), b"hello", NOW),
        Ok(())
    );
}

fn telegram() -> Verifier {
    let v = Verification::SharedSecret {
        header: "x-telegram-bot-api-secret-token".into(),
        secret: "secret_token".into(),
    };
    Verifier::new(&v, |_| Some("tg-secret_123"), false, &KEY).unwrap()
}

#[test]
fn telegram_secret_token_good_wrong_and_missing() {
    let t = telegram();
    assert_eq!(
        t.verify(
            &headers(&[("x-telegram-bot-api-secret-token", "tg-secret_123")]),
            b"{}",
            NOW
        ),
        Ok(())
    );
    assert_eq!(
        t.verify(
            &headers(&[("x-telegram-bot-api-secret-token", "tg-secret_12")]),
            b"{}",
            NOW
        )
        .unwrap_err()
        .code(),
        "bad_signature"
    );
    assert_eq!(
        t.verify(&headers(&[]), b"{}", NOW).unwrap_err().code(),
        "missing_signature"
    );
    assert_eq!(t.secret_header(), Some("x-telegram-bot-api-secret-token"));
}

fn discord() -> (Verifier, Ed25519KeyPair) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = hex_encode(pair.public_key().as_ref());
    let v = Verification::Ed25519 {
        signature_header: "x-signature-ed25519".into(),
        timestamp_header: "x-signature-timestamp".into(),
        encoding: Encoding::Hex,
        max_age_seconds: 300,
        public_key: "public_key".into(),
    };
    (
        Verifier::new(&v, |_| Some(public.as_str()), false, &KEY).unwrap(),
        pair,
    )
}

fn discord_sign(pair: &Ed25519KeyPair, ts: &str, body: &[u8]) -> String {
    let msg: Vec<u8> = ts.as_bytes().iter().chain(body).copied().collect();
    hex_encode(pair.sign(&msg).as_ref())
}

#[test]
fn discord_ping_and_command_verify_and_their_bad_twins_fail() {
    let (v, pair) = discord();
    let ping = br#"{"type":1,"id":"1","application_id":"2"}"#;
    let ts = NOW.to_string();
    let sig = discord_sign(&pair, &ts, ping);
    let ok = headers(&[
        ("x-signature-ed25519", &sig),
        ("x-signature-timestamp", &ts),
    ]);
    assert_eq!(v.verify(&ok, ping, NOW), Ok(()));
    // Discord's probe: a PING with a bad signature must fail.
    let mut bad_sig = sig.clone().into_bytes();
    bad_sig[0] = if bad_sig[0] == b'a' { b'b' } else { b'a' };
    let probe = headers(&[
        (
            "x-signature-ed25519",
            std::str::from_utf8(&bad_sig).unwrap(),
        ),
        ("x-signature-timestamp", &ts),
    ]);
    assert_eq!(
        v.verify(&probe, ping, NOW).unwrap_err().code(),
        "bad_signature"
    );
    // Tampered body.
    assert_eq!(
        v.verify(&ok, br#"{"type":2,"id":"1","application_id":"2"}"#, NOW)
            .unwrap_err()
            .code(),
        "bad_signature"
    );
    // Timestamp header swapped for another (signed with the old one).
    let swapped = headers(&[
        ("x-signature-ed25519", &sig),
        ("x-signature-timestamp", &(NOW + 1).to_string()),
    ]);
    assert_eq!(
        v.verify(&swapped, ping, NOW).unwrap_err().code(),
        "bad_signature"
    );
    // A correctly signed but stale request.
    let old = (NOW - 301).to_string();
    let stale = headers(&[
        ("x-signature-ed25519", &discord_sign(&pair, &old, ping)),
        ("x-signature-timestamp", &old),
    ]);
    assert_eq!(
        v.verify(&stale, ping, NOW).unwrap_err().code(),
        "stale_timestamp"
    );
    assert_eq!(
        v.verify(&headers(&[("x-signature-timestamp", &ts)]), ping, NOW)
            .unwrap_err()
            .code(),
        "missing_signature"
    );
}

#[test]
fn setup_names_a_missing_secret_and_refuses_unverified_plugins() {
    let v = Verification::SharedSecret {
        header: "x".into(),
        secret: "secret_token".into(),
    };
    assert_eq!(
        Verifier::new(&v, |_| None, false, &KEY).unwrap_err(),
        SetupError::MissingSecret("secret_token".into())
    );
    assert_eq!(
        Verifier::new(&Verification::None, |_| None, false, &KEY).unwrap_err(),
        SetupError::Unverified
    );
    assert!(Verifier::new(&Verification::None, |_| None, true, &KEY).is_ok());
}

// --- JWT ------------------------------------------------------------------

const HS_SECRET: &str = "widget-secret-widget-secret-0123456789";

fn key(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value, kid: Option<&str>) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn claims() -> serde_json::Value {
    serde_json::json!({"sub": "user-42", "exp": NOW + 600, "iss": "https://shop.example", "aud": "chatcrafter-widget",
                       "email": "sarah@example.com", "email_verified": true,
                       "phone": "+16505551234", "phone_number_verified": true, "name": "Sarah"})
}

fn auth(algs: &[&str], keys: KeySource<'_>) -> WidgetAuth {
    let algs: Vec<String> = algs.iter().map(|s| s.to_string()).collect();
    WidgetAuth::new(
        &algs,
        keys,
        Some("https://shop.example".into()),
        Some("chatcrafter-widget".into()),
        60,
    )
    .unwrap()
}

#[test]
fn tokens_verify_for_every_supported_algorithm() {
    let hs = auth(
        &["HS256", "HS384", "HS512"],
        KeySource {
            secret: Some(HS_SECRET),
            ..Default::default()
        },
    );
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let t = sign(
            alg,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
            claims(),
            None,
        );
        let user = hs
            .verify(Some(&t), NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(user.subject, "user-42");
        assert_eq!(user.issuer, "https://shop.example");
        assert!(user.claims.iter().all(|c| c.verified));
        assert_eq!(user.claims.len(), 4);
    }
    type FromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;
    let pems: [(Algorithm, &str, &str, FromPem); 3] = [
        (Algorithm::RS256, "RS256", "rsa", EncodingKey::from_rsa_pem),
        (Algorithm::ES256, "ES256", "ec", EncodingKey::from_ec_pem),
        (Algorithm::EdDSA, "EdDSA", "ed", EncodingKey::from_ed_pem),
    ];
    for (alg, name, file, from_pem) in pems {
        let public = key(&format!("{file}_public.pem"));
        let a = auth(
            &[name],
            KeySource {
                public_key_pem: Some(&public),
                ..Default::default()
            },
        );
        let private = from_pem(key(&format!("{file}_private.pem")).as_bytes()).unwrap();
        let t = sign(alg, &private, claims(), None);
        assert!(a.verify(Some(&t), NOW).is_ok(), "{name}");
    }
}

/// The usual widget setup: HS256 with the shared secret.
fn hs256_auth() -> WidgetAuth {
    auth(
        &["HS256"],
        KeySource {
            secret: Some(HS_SECRET),
            ..Default::default()
        },
    )
}

fn reason(a: &WidgetAuth, token: &str) -> &'static str {
    a.verify(Some(token), NOW).unwrap_err().reason()
}

#[test]
fn alg_none_in_any_spelling_is_refused() {
    let a = hs256_auth();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    for alg in ["none", "None", "NONE"] {
        let t = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": alg, "typ": "JWT"})),
            b64(&claims())
        );
        assert_eq!(reason(&a, &t), "algorithm", "{alg}");
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let rsa_pub = key("rsa_public.pem");
    let a = auth(
        &["RS256"],
        KeySource {
            public_key_pem: Some(&rsa_pub),
            ..Default::default()
        },
    );
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(rsa_pub.as_bytes()),
        claims(),
        None,
    );
    assert_eq!(reason(&a, &t), "algorithm");
    // Even with HS256 allowed, the RSA key never keys an HMAC.
    let both = auth(
        &["RS256", "HS256"],
        KeySource {
            public_key_pem: Some(&rsa_pub),
            secret: Some(HS_SECRET),
            ..Default::default()
        },
    );
    assert_eq!(reason(&both, &t), "bad_signature");
}

#[test]
fn expired_not_yet_valid_wrong_audience_and_issuer_are_refused() {
    let a = hs256_auth();
    let k = EncodingKey::from_secret(HS_SECRET.as_bytes());
    // The usual claims with `patch` applied (null removes a claim), signed.
    let token = |patch: serde_json::Value| {
        let mut c = claims();
        for (name, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(name);
            } else {
                c[name] = v.clone();
            }
        }
        sign(Algorithm::HS256, &k, c, None)
    };
    for (patch, why) in [
        (serde_json::json!({"exp": NOW - 61}), "expired"),
        (serde_json::json!({"nbf": NOW + 120}), "not_yet_valid"),
        (serde_json::json!({"aud": "someone-else"}), "audience"),
        (serde_json::json!({"aud": null}), "audience"),
        (serde_json::json!({"iss": "https://evil.example"}), "issuer"),
        (serde_json::json!({"exp": null}), "missing_claim"),
        (serde_json::json!({"sub": null}), "missing_claim"),
    ] {
        assert_eq!(reason(&a, &token(patch.clone())), why, "{patch}");
    }
    // Within the leeway it still passes; an array audience containing ours
    // is accepted.
    for patch in [
        serde_json::json!({"exp": NOW - 30}),
        serde_json::json!({"aud": ["x", "chatcrafter-widget"]}),
    ] {
        assert!(
            a.verify(Some(&token(patch.clone())), NOW).is_ok(),
            "{patch}"
        );
    }
}

#[test]
fn jwks_keys_are_selected_by_kid_and_unknown_kids_are_refused() {
    let jwks = key("jwks.json");
    let a = auth(
        &["RS256"],
        KeySource {
            jwks_json: Some(&jwks),
            ..Default::default()
        },
    );
    let k2 = EncodingKey::from_rsa_pem(key("rsa2_private.pem").as_bytes()).unwrap();
    assert!(
        a.verify(
            Some(&sign(Algorithm::RS256, &k2, claims(), Some("k2"))),
            NOW
        )
        .is_ok()
    );
    assert_eq!(
        reason(&a, &sign(Algorithm::RS256, &k2, claims(), Some("k9"))),
        "unknown_kid"
    );
    // The right kid with another key's signature.
    let k1 = EncodingKey::from_rsa_pem(key("rsa_private.pem").as_bytes()).unwrap();
    assert_eq!(
        reason(&a, &sign(Algorithm::RS256, &k1, claims(), Some("k2"))),
        "bad_signature"
    );
}

#[test]
fn garbage_tampering_and_absence_are_refused() {
    let a = hs256_auth();
    assert_eq!(a.verify(None, NOW).unwrap_err(), TokenError::Missing);
    assert_eq!(a.verify(Some("  "), NOW).unwrap_err(), TokenError::Missing);
    assert_eq!(reason(&a, "not-a-jwt"), "malformed");
    assert_eq!(reason(&a, "a.b.c"), "malformed");
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        claims(),
        None,
    );
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::json!({"sub": "admin", "exp": NOW + 600, "iss": "https://shop.example", "aud": "chatcrafter-widget"}).to_string());
    parts[1] = &forged;
    assert_eq!(reason(&a, &parts.join(".")), "bad_signature");
    // A token signed with another secret.
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-0123"),
        claims(),
        None,
    );
    assert_eq!(reason(&a, &other), "bad_signature");
}

#[test]
fn setup_refuses_weak_secrets_and_algorithms_without_keys() {
    let algs = vec!["HS256".to_string()];
    let err = WidgetAuth::new(
        &algs,
        KeySource {
            secret: Some("short"),
            ..Default::default()
        },
        None,
        None,
        60,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "widget.secret is 5 bytes; HS256 needs at least 32"
    );
    let algs = vec!["RS256".to_string()];
    let err = WidgetAuth::new(
        &algs,
        KeySource {
            secret: Some(HS_SECRET),
            ..Default::default()
        },
        None,
        None,
        60,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no key for it is configured"),
        "{err}"
    );
    let algs = vec!["none".to_string()];
    assert!(
        WidgetAuth::new(
            &algs,
            KeySource {
                secret: Some(HS_SECRET),
                ..Default::default()
            },
            None,
            None,
            60
        )
        .is_err()
    );
}

fn hs_auth() -> WidgetAuth {
    auth(
        &["HS256"],
        KeySource {
            secret: Some(HS_SECRET),
            ..Default::default()
        },
    )
}

fn hs_token(claims: serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        claims,
        None,
    )
}

fn verified(user: &chatcrafter_core::channel::AuthenticatedUser, kind: ClaimKind) -> Option<bool> {
    user.claims
        .iter()
        .find(|c| c.kind == kind)
        .map(|c| c.verified)
}

#[test]
fn an_email_or_phone_is_verified_only_when_the_token_or_the_business_says_so() {
    let base = serde_json::json!({"sub": "mallory-1", "exp": NOW + 600, "iss": "https://shop.example",
        "aud": "chatcrafter-widget", "email": "sarah@example.com", "phone": "+14155552671"});
    // Bare claims: a sign-up phone the business has not confirmed.
    let user = hs_auth()
        .verify(Some(&hs_token(base.clone())), NOW)
        .unwrap();
    assert_eq!(verified(&user, ClaimKind::Email), Some(false));
    assert_eq!(verified(&user, ClaimKind::Phone), Some(false));
    // `*_verified: false` is as good as absent.
    let mut no = base.clone();
    no["email_verified"] = serde_json::json!(false);
    let user = hs_auth().verify(Some(&hs_token(no)), NOW).unwrap();
    assert_eq!(verified(&user, ClaimKind::Email), Some(false));
    // OIDC's flags, and its `phone_number` spelling.
    let mut oidc = base.clone();
    oidc.as_object_mut().unwrap().remove("phone");
    oidc["phone_number"] = serde_json::json!("+14155552671");
    oidc["phone_number_verified"] = serde_json::json!(true);
    oidc["email_verified"] = serde_json::json!(true);
    let user = hs_auth().verify(Some(&hs_token(oidc)), NOW).unwrap();
    assert_eq!(verified(&user, ClaimKind::Email), Some(true));
    assert_eq!(verified(&user, ClaimKind::Phone), Some(true));
    // A business whose backend only ever signs verified values says so once.
    let trusting = hs_auth().with_verified_claims(&["phone".into()]).unwrap();
    let user = trusting.verify(Some(&hs_token(base)), NOW).unwrap();
    assert_eq!(verified(&user, ClaimKind::Phone), Some(true));
    assert_eq!(verified(&user, ClaimKind::Email), Some(false));
    assert_eq!(
        hs_auth()
            .with_verified_claims(&["name".into()])
            .unwrap_err()
            .to_string(),
        "widget.verified_claims: `name` is not `email` or `phone`"
    );
}

#[test]
fn a_token_may_not_live_longer_than_the_configured_lifetime_nor_be_issued_in_the_future() {
    let claims = |exp: u64, iat: Option<u64>| {
        let mut c = serde_json::json!({"sub": "u", "exp": exp, "iss": "https://shop.example",
            "aud": "chatcrafter-widget"});
        if let Some(iat) = iat {
            c["iat"] = serde_json::json!(iat);
        }
        hs_token(c)
    };
    let a = hs_auth().with_max_lifetime(3_600);
    assert!(a.verify(Some(&claims(NOW + 3_600, None)), NOW).is_ok());
    assert!(
        a.verify(Some(&claims(NOW + 600, Some(NOW - 2_000))), NOW)
            .is_ok()
    );
    let e = a.verify(Some(&claims(NOW + 3_601, None)), NOW).unwrap_err();
    assert_eq!(e.reason(), "lifetime");
    let e = a.verify(Some(&claims(u64::MAX, None)), NOW).unwrap_err();
    assert_eq!(e.reason(), "lifetime");
    let e = a
        .verify(Some(&claims(NOW + 60, Some(NOW + 3_000))), NOW)
        .unwrap_err();
    assert_eq!(e.reason(), "issued_in_future");
    // The default is a day.
    let e = hs_auth()
        .verify(Some(&claims(NOW + 2 * 86_400, None)), NOW)
        .unwrap_err();
    assert_eq!(e.reason(), "lifetime");
}

#[test]
fn a_request_signed_as_the_channel_would_verifies_and_its_signature_is_the_channels() {
    use chatcrafter_core::verify::signature::{SignError, sign_request};
    let slack = slack_scheme();
    let secret = |n: &str| (n == "signing_secret").then_some("s3cr3t");
    let body = b"command=%2Fweather";
    let mut h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
    sign_request(&slack, secret, &mut h, body, NOW).unwrap();
    // The timestamp header is set to now, and the signature is the HMAC a
    // channel computes over the template, independently.
    let ts = h
        .iter()
        .find(|x| x.name == "x-slack-request-timestamp")
        .unwrap();
    assert_eq!(ts.value, NOW.to_string());
    let sig = h.iter().find(|x| x.name == "x-slack-signature").unwrap();
    let expected = hmac_hex(b"s3cr3t", format!("v0:{NOW}:command=%2Fweather").as_bytes());
    assert_eq!(sig.value, format!("v0={expected}"));
    let v = Verifier::new(&slack, secret, false, &KEY).unwrap();
    assert_eq!(v.verify(&h, body, NOW), Ok(()));
    assert_eq!(
        v.verify(&h, b"command=%2Ftime", NOW).unwrap_err().code(),
        "bad_signature"
    );
    // A missing secret and an ed25519 scheme are said, not guessed.
    assert_eq!(
        sign_request(&slack, |_| None, &mut h, body, NOW),
        Err(SignError::MissingSecret("signing_secret".into()))
    );
    let discord = Verification::Ed25519 {
        signature_header: "x-signature-ed25519".into(),
        timestamp_header: "x-signature-timestamp".into(),
        encoding: Encoding::Hex,
        max_age_seconds: 300,
        public_key: "public_key".into(),
    };
    assert!(matches!(
        sign_request(&discord, secret, &mut h, body, NOW),
        Err(SignError::Ed25519(_))
    ));
    // Base64 and a shared secret.
    let b64 = Verification::HmacSha256 {
        header: "x-sig".into(),
        prefix: String::new(),
        encoding: Encoding::Base64,
        signed_template: "{body}".into(),
        timestamp_header: None,
        max_age_seconds: None,
        secret: "k".into(),
    };
    let mut h = Vec::new();
    sign_request(&b64, |_| Some("key"), &mut h, body, NOW).unwrap();
    assert_eq!(
        Verifier::new(&b64, |_| Some("key"), false, &KEY)
            .unwrap()
            .verify(&h, body, NOW),
        Ok(())
    );
    let shared = Verification::SharedSecret {
        header: "x-telegram-bot-api-secret-token".into(),
        secret: "secret_token".into(),
    };
    let mut h = Vec::new();
    sign_request(&shared, |_| Some("tok"), &mut h, body, NOW).unwrap();
    assert_eq!(h[0].value, "tok");
}
