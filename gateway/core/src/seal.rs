//! At-rest protection of personal data.
//!
//! - **Sealing**: AES-256-GCM (ring) envelopes `[version=1][key id][nonce
//!   (12)][ciphertext ‖ tag]`. The key id lets keys rotate: new data is
//!   sealed under the current key, old envelopes open with the key they
//!   name. Callers pass associated data that binds an envelope to its place
//!   (e.g. `customer:{id}:attr:email`), so a ciphertext copied to another
//!   record does not open.
//! - **Blind index**: identifiers are looked up by HMAC-SHA256 under a
//!   separate `index_key`, so the store can find `email:sarah@example.com`
//!   without ever holding it in the clear.
//!
//! Nonces come from the randomness the host passes in; this module never
//! reaches for a global generator.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::SecureRandom;

const VERSION: u8 = 1;
const HEADER: usize = 2 + NONCE_LEN;
/// An envelope sealed under one customer's own key:
/// `[2][id length][customer id][nonce (12)][ciphertext ‖ tag]`. The
/// customer id is plain (ids are random, not personal data) so that the
/// envelope names the key that opens it, as a key id does.
const CUSTOMER_VERSION: u8 = 2;

/// Why keys could not be set up or an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key that is not 32 bytes of base64.
    #[error("{0} must be 32 bytes, base64 encoded")]
    BadKey(&'static str),
    /// A key is missing from the configuration.
    #[error("{0} is not configured")]
    MissingKey(&'static str),
    /// The envelope names a key this keyring does not hold.
    #[error("sealed with key id {0}, which is not configured")]
    UnknownKeyId(u8),
    /// Truncated, tampered with, or bound to other associated data.
    #[error("the sealed value is corrupt or belongs elsewhere")]
    Corrupt,
    /// The random number generator failed.
    #[error("no randomness for a nonce")]
    Random,
    /// A key id that is not 1–255, or a retired id equal to the current one.
    #[error("security: key id `{0}` must be 1 to 255 and differ from data_key_id")]
    BadKeyId(String),
    /// Sealed under a customer's own key, which was destroyed when the
    /// customer was erased: nothing can open it any more.
    #[error("sealed under the key of customer {0}, which was erased")]
    Shredded(String),
}

/// What an envelope says about the key that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealer<'a> {
    /// A data key of the keyring, by id.
    DataKey(u8),
    /// The own key of the customer with this id.
    Customer(&'a str),
}

/// Which key `envelope` is sealed under, if it is an envelope at all
/// (stored plain values — numbers, ids, JSON — are printable text, and an
/// envelope starts with a version byte that is not).
pub fn sealer(envelope: &[u8]) -> Option<Sealer<'_>> {
    match envelope {
        [VERSION, id, rest @ ..] if rest.len() >= NONCE_LEN + 16 => Some(Sealer::DataKey(*id)),
        [CUSTOMER_VERSION, n, rest @ ..] if rest.len() >= *n as usize + NONCE_LEN + 16 => {
            std::str::from_utf8(&rest[..*n as usize])
                .ok()
                .map(Sealer::Customer)
        }
        _ => None,
    }
}

/// One customer's own data key: what their records are sealed under, kept
/// wrapped by the keyring's data key. Destroying it (erasure) makes every
/// copy of those records — in the store, its AOF or RDB files, backups —
/// unreadable.
pub struct CustomerKey(LessSafeKey);

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(..)")
    }
}

impl CustomerKey {
    /// A fresh random key, and its 32 bytes (to wrap and store).
    pub fn generate(rng: &dyn SecureRandom) -> Result<(Self, [u8; 32]), SealError> {
        let mut raw = [0u8; 32];
        rng.fill(&mut raw).map_err(|_| SealError::Random)?;
        Ok((CustomerKey(aead_key(&raw)), raw))
    }

    /// The key of these 32 bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        let raw = <[u8; 32]>::try_from(raw).map_err(|_| SealError::Corrupt)?;
        Ok(CustomerKey(aead_key(&raw)))
    }

    /// Seals `plaintext` for `customer`, bound to `aad`.
    pub fn seal(
        &self,
        rng: &dyn SecureRandom,
        customer: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let id_len = u8::try_from(customer.len()).map_err(|_| SealError::Corrupt)?;
        let mut header = Vec::with_capacity(2 + customer.len());
        header.push(CUSTOMER_VERSION);
        header.push(id_len);
        header.extend_from_slice(customer.as_bytes());
        seal_with(&self.0, rng, &header, plaintext, aad)
    }

    /// Opens an envelope this key sealed with `aad`.
    pub fn open(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(Sealer::Customer(id)) = sealer(envelope) else {
            return Err(SealError::Corrupt);
        };
        let at = 2 + id.len();
        let nonce = Nonce::try_assume_unique_for_key(&envelope[at..at + NONCE_LEN])
            .map_err(|_| SealError::Corrupt)?;
        let mut buf = envelope[at + NONCE_LEN..].to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

/// The data keys (current and retired) and the index key.
pub struct Keyring {
    current: u8,
    keys: Vec<(u8, LessSafeKey)>,
    index: hmac::Key,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn decode_key(b64: &str, what: &'static str) -> Result<[u8; 32], SealError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(SealError::BadKey(what))
}

impl Keyring {
    /// A keyring whose current data key has id 1.
    pub fn new(data_key: Option<&str>, index_key: Option<&str>) -> Result<Self, SealError> {
        let data = decode_key(
            data_key.ok_or(SealError::MissingKey("security.data_key"))?,
            "security.data_key",
        )?;
        let index = decode_key(
            index_key.ok_or(SealError::MissingKey("security.index_key"))?,
            "security.index_key",
        )?;
        Ok(Keyring {
            current: 1,
            keys: vec![(1, aead_key(&data))],
            index: hmac::Key::new(hmac::HMAC_SHA256, &index),
        })
    }

    /// The keyring `[security]` describes: `data_key` under `data_key_id`
    /// (default 1) for new envelopes, and every `retired_data_keys` entry for
    /// opening old ones.
    pub fn from_config(c: &crate::config::Security) -> Result<Self, SealError> {
        let index = c.index_key.as_deref();
        let current = c.data_key_id.unwrap_or(1);
        if current == 0 {
            return Err(SealError::BadKeyId("0".into()));
        }
        let mut ring = Keyring::new(c.data_key.as_deref(), index)?;
        let mut retired: Vec<(u8, &String)> = Vec::new();
        for (id, key) in &c.retired_data_keys {
            let n: u8 = id
                .parse()
                .ok()
                .filter(|n| *n != 0 && *n != current)
                .ok_or_else(|| SealError::BadKeyId(id.clone()))?;
            retired.push((n, key));
        }
        let data_key = c.data_key.as_deref().unwrap_or_default();
        for (n, key) in retired {
            ring = ring.rotate(n, key)?;
        }
        ring.rotate(current, data_key)
    }

    /// Rotates: `data_key` becomes the current key under `id`; earlier keys
    /// still open what they sealed.
    pub fn rotate(mut self, id: u8, data_key: &str) -> Result<Self, SealError> {
        let key = decode_key(data_key, "security.data_key")?;
        self.keys.retain(|(k, _)| *k != id);
        self.keys.push((id, aead_key(&key)));
        self.current = id;
        Ok(self)
    }

    /// Seals `plaintext`, bound to `aad`.
    pub fn seal(
        &self,
        rng: &dyn SecureRandom,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let key = &self
            .keys
            .iter()
            .find(|(id, _)| *id == self.current)
            .expect("current key present")
            .1;
        seal_with(key, rng, &[VERSION, self.current], plaintext, aad)
    }

    /// The id new envelopes are sealed under.
    pub fn current_id(&self) -> u8 {
        self.current
    }

    /// Opens an envelope sealed with `aad`.
    pub fn open(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if envelope.len() < HEADER + 16 || envelope[0] != VERSION {
            return Err(SealError::Corrupt);
        }
        let id = envelope[1];
        let key = &self
            .keys
            .iter()
            .find(|(k, _)| *k == id)
            .ok_or(SealError::UnknownKeyId(id))?
            .1;
        let nonce = Nonce::try_assume_unique_for_key(&envelope[2..HEADER])
            .map_err(|_| SealError::Corrupt)?;
        let mut buf = envelope[HEADER..].to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }

    /// The blind index of an already normalized identifier, hex.
    pub fn blind_index(&self, kind: &str, normalized: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.index);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(normalized.as_bytes());
        crate::verify::hex_encode(ctx.sign().as_ref())
    }
}

/// `header ‖ nonce ‖ AES-256-GCM(plaintext, aad) ‖ tag`, with a fresh
/// random nonce.
fn seal_with(
    key: &LessSafeKey,
    rng: &dyn SecureRandom,
    header: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
    let mut out = Vec::with_capacity(header.len() + NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(header);
    out.extend_from_slice(&nonce);
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| SealError::Corrupt)?;
    out.extend_from_slice(&buf);
    Ok(out)
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    const IX: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

    #[test]
    fn a_sealed_value_opens_only_with_its_associated_data() {
        let k = Keyring::new(Some(K1), Some(IX)).unwrap();
        let env = k
            .seal(
                &SystemRandom::new(),
                b"sarah@example.com",
                b"customer:1:email",
            )
            .unwrap();
        assert!(!env.windows(5).any(|w| w == b"sarah"));
        assert_eq!(
            k.open(&env, b"customer:1:email").unwrap(),
            b"sarah@example.com"
        );
        assert_eq!(k.open(&env, b"customer:2:email"), Err(SealError::Corrupt));
        let mut tampered = env.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            k.open(&tampered, b"customer:1:email"),
            Err(SealError::Corrupt)
        );
    }

    #[test]
    fn rotation_keeps_old_envelopes_readable() {
        let rng = SystemRandom::new();
        let old = Keyring::new(Some(K1), Some(IX)).unwrap();
        let env1 = old.seal(&rng, b"v1", b"a").unwrap();
        let new = Keyring::new(Some(K1), Some(IX))
            .unwrap()
            .rotate(2, K2)
            .unwrap();
        let env2 = new.seal(&rng, b"v2", b"a").unwrap();
        assert_eq!(env2[1], 2);
        assert_eq!(new.open(&env1, b"a").unwrap(), b"v1");
        assert_eq!(new.open(&env2, b"a").unwrap(), b"v2");
        assert_eq!(old.open(&env2, b"a"), Err(SealError::UnknownKeyId(2)));
    }

    #[test]
    fn a_customer_envelope_names_its_customer_and_opens_only_with_their_key() {
        let rng = SystemRandom::new();
        let (mine, _) = CustomerKey::generate(&rng).unwrap();
        let (other, _) = CustomerKey::generate(&rng).unwrap();
        let env = mine.seal(&rng, "c_1", b"hello", b"tl:1").unwrap();
        assert_eq!(sealer(&env), Some(Sealer::Customer("c_1")));
        assert_eq!(mine.open(&env, b"tl:1").unwrap(), b"hello");
        assert_eq!(mine.open(&env, b"tl:2"), Err(SealError::Corrupt));
        assert_eq!(other.open(&env, b"tl:1"), Err(SealError::Corrupt));
        let k = Keyring::new(Some(K1), Some(IX)).unwrap();
        assert_eq!(k.open(&env, b"tl:1"), Err(SealError::Corrupt));
        let v1 = k.seal(&rng, b"x", b"a").unwrap();
        assert_eq!(sealer(&v1), Some(Sealer::DataKey(1)));
        for plain in [&b"12"[..], b"c_0123", b"{\"at\":1}", b""] {
            assert_eq!(sealer(plain), None);
        }
    }

    #[test]
    fn the_blind_index_is_stable_keyed_and_kind_separated() {
        let k = Keyring::new(Some(K1), Some(IX)).unwrap();
        let a = k.blind_index("email", "sarah@example.com");
        assert_eq!(a, k.blind_index("email", "sarah@example.com"));
        assert_ne!(a, k.blind_index("phone", "sarah@example.com"));
        let other = Keyring::new(Some(K1), Some(K2)).unwrap();
        assert_ne!(a, other.blind_index("email", "sarah@example.com"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_configured_keyring_seals_with_the_current_id_and_opens_retired_ones() {
        let rng = SystemRandom::new();
        let old = Keyring::new(Some(K1), Some(IX)).unwrap();
        let env = old.seal(&rng, b"v1", b"a").unwrap();
        let mut c = crate::config::Security {
            data_key: Some(K2.into()),
            index_key: Some(IX.into()),
            data_key_id: Some(2),
            ..Default::default()
        };
        c.retired_data_keys.insert("1".into(), K1.into());
        let k = Keyring::from_config(&c).unwrap();
        assert_eq!(k.open(&env, b"a").unwrap(), b"v1");
        assert_eq!(k.seal(&rng, b"v2", b"a").unwrap()[1], 2);
        c.retired_data_keys.insert("2".into(), K1.into());
        assert_eq!(
            Keyring::from_config(&c).unwrap_err(),
            SealError::BadKeyId("2".into())
        );
    }

    #[test]
    fn bad_and_missing_keys_are_named() {
        assert_eq!(
            Keyring::new(Some("short"), Some(IX))
                .unwrap_err()
                .to_string(),
            "security.data_key must be 32 bytes, base64 encoded"
        );
        assert_eq!(
            Keyring::new(Some(K1), None).unwrap_err().to_string(),
            "security.index_key is not configured"
        );
    }
}
