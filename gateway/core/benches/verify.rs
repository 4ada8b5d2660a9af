//! `verify`: the gateway's verification code path beside the raw crypto it
//! wraps, on the same inputs, in one run.
//!
//! - HMAC-SHA256 over 1 KiB: `Verifier::verify` (header lookup, prefix,
//!   hex decode, template) vs `ring::hmac::verify`.
//! - Ed25519 (Discord): `Verifier::verify` (timestamp ‖ body, window) vs
//!   `ring::signature::UnparsedPublicKey::verify`.
//! - Widget JWT HS256 / ES256 / RS256: `WidgetAuth::verify` vs a bare
//!   `jsonwebtoken::decode` with the same key and algorithm.
//!
//! Run: `cargo bench -p chatcrafter-core --bench verify`

use std::hint::black_box;

use chatcrafter_core::channel::{Encoding, Header, Verification};
use chatcrafter_core::verify::hex_encode;
use chatcrafter_core::verify::jwt::{KeySource, WidgetAuth};
use chatcrafter_core::verify::signature::Verifier;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

const NOW: u64 = 1_795_580_000;

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn hmac(c: &mut Criterion) {
    let body = vec![b'x'; 1024];
    let secret = b"meta-app-secret";
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&k, &body);
    let headers = vec![Header {
        name: "x-hub-signature-256".into(),
        value: format!("sha256={}", hex_encode(tag.as_ref())),
    }];
    let v = Verifier::new(
        &Verification::HmacSha256 {
            header: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
            signed_template: "{body}".into(),
            timestamp_header: None,
            max_age_seconds: None,
            secret: "app_secret".into(),
        },
        |_| Some("meta-app-secret"),
        false,
        &[1; 32],
    )
    .unwrap();
    assert!(v.verify(&headers, &body, NOW).is_ok());
    let mut g = c.benchmark_group("verify_hmac_sha256_1k");
    g.bench_function("raw_ring", |b| {
        b.iter(|| ring::hmac::verify(&k, black_box(&body), tag.as_ref()).unwrap())
    });
    g.bench_function("gateway", |b| {
        b.iter(|| {
            v.verify(black_box(&headers), black_box(&body), NOW)
                .unwrap()
        })
    });
    g.finish();
}

fn ed25519(c: &mut Criterion) {
    let rng = ring::rand::SystemRandom::new();
    let pair =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let body = br#"{"type":2,"id":"1300000000000000002","application_id":"1289391923891234567","data":{"name":"ask"}}"#.to_vec();
    let ts = NOW.to_string();
    let msg: Vec<u8> = ts.as_bytes().iter().chain(&body).copied().collect();
    let sig = pair.sign(&msg);
    let public = hex_encode(pair.public_key().as_ref());
    let v = Verifier::new(
        &Verification::Ed25519 {
            signature_header: "x-signature-ed25519".into(),
            timestamp_header: "x-signature-timestamp".into(),
            encoding: Encoding::Hex,
            max_age_seconds: 300,
            public_key: "public_key".into(),
        },
        |_| Some(public.as_str()),
        false,
        &[1; 32],
    )
    .unwrap();
    let headers = vec![
        Header {
            name: "x-signature-ed25519".into(),
            value: hex_encode(sig.as_ref()),
        },
        Header {
            name: "x-signature-timestamp".into(),
            value: ts.clone(),
        },
    ];
    assert!(v.verify(&headers, &body, NOW).is_ok());
    let raw = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        pair.public_key().as_ref().to_vec(),
    );
    let mut g = c.benchmark_group("verify_ed25519");
    g.bench_function("raw_ring", |b| {
        b.iter(|| {
            // What a caller of raw ring does too: the signed message is timestamp ‖ body.
            let msg: Vec<u8> = ts
                .as_bytes()
                .iter()
                .chain(black_box(&body))
                .copied()
                .collect();
            raw.verify(&msg, sig.as_ref()).unwrap()
        })
    });
    g.bench_function("gateway", |b| {
        b.iter(|| {
            v.verify(black_box(&headers), black_box(&body), NOW)
                .unwrap()
        })
    });
    g.finish();
}

fn jwt(c: &mut Criterion) {
    let claims = serde_json::json!({"sub": "user-42", "exp": NOW + 600, "email": "sarah@example.com", "name": "Sarah"});
    let secret = "widget-secret-widget-secret-0123456789";
    let rsa_pub = String::from_utf8(key("rsa_public.pem")).unwrap();
    let ec_pub = String::from_utf8(key("ec_public.pem")).unwrap();
    let cases: Vec<(&str, Algorithm, EncodingKey, DecodingKey, KeySource<'_>)> = vec![
        (
            "hs256",
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
            DecodingKey::from_secret(secret.as_bytes()),
            KeySource {
                secret: Some(secret),
                ..Default::default()
            },
        ),
        (
            "es256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
            DecodingKey::from_ec_pem(ec_pub.as_bytes()).unwrap(),
            KeySource {
                public_key_pem: Some(&ec_pub),
                ..Default::default()
            },
        ),
        (
            "rs256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap(),
            DecodingKey::from_rsa_pem(rsa_pub.as_bytes()).unwrap(),
            KeySource {
                public_key_pem: Some(&rsa_pub),
                ..Default::default()
            },
        ),
    ];
    for (name, alg, enc, dec, source) in cases {
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &enc).unwrap();
        let auth = WidgetAuth::new(&[format!("{alg:?}")], source, None, None, 60).unwrap();
        assert!(auth.verify(Some(&token), NOW).is_ok());
        let mut raw_validation = Validation::new(alg);
        raw_validation.validate_exp = false;
        raw_validation.validate_aud = false;
        raw_validation.required_spec_claims.clear();
        let mut g = c.benchmark_group(format!("verify_jwt_{name}"));
        g.bench_function("raw_jsonwebtoken", |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &dec, &raw_validation)
                    .unwrap()
            })
        });
        g.bench_function("gateway", |b| {
            b.iter(|| auth.verify(Some(black_box(&token)), NOW).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, hmac, ed25519, jwt);
criterion_main!(benches);
