//! The web widget's JWTs, verified with `jsonwebtoken`.
//!
//! Policy (RFC 8725): the algorithm comes from the configured allow-list,
//! never from the token alone; each key is bound to the algorithm family it
//! was configured for (an HMAC secret never verifies an RS256 token and an
//! RSA public key never keys an HS256 one); `alg: none` in any spelling is
//! refused; `exp` and `sub` are required; `nbf`, `iss` and `aud` are checked
//! when present or configured, with a leeway. Keys found by `kid` come only
//! from the configured JWKS file, never from a URL in the token. Times are
//! checked against the clock the host passes in.

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;

use crate::channel::{AuthenticatedUser, Claim, ClaimKind};

/// Why a token was refused; `reason()` is the API's reason string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token at all.
    #[error("no token")]
    Missing,
    /// Not three base64url parts of JSON.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `none`, or an algorithm outside the allow-list.
    #[error("algorithm `{0}` is not allowed")]
    Algorithm(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or wrong.
    #[error("the issuer is wrong or missing")]
    Issuer,
    /// `aud` is missing or wrong.
    #[error("the audience is wrong or missing")]
    Audience,
    /// `kid` is not in the configured key set.
    #[error("key id `{0}` is not known")]
    UnknownKid(String),
    /// A required claim is absent.
    #[error("claim `{0}` is required")]
    MissingClaim(&'static str),
    /// `exp` is further from `iat` (or from now) than the configured
    /// maximum lifetime.
    #[error("the token lives longer than the {0} s widget.max_token_lifetime_seconds allows")]
    Lifetime(u64),
    /// `iat` is in the future.
    #[error("the token was issued in the future")]
    IssuedInFuture,
}

impl TokenError {
    /// The reason reported with 401 `invalid_token`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
            TokenError::UnknownKid(_) => "unknown_kid",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::Lifetime(_) => "lifetime",
            TokenError::IssuedInFuture => "issued_in_future",
        }
    }
}

/// Why the widget's JWT configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSetupError {
    /// An unknown or forbidden algorithm name.
    #[error("widget.algorithms: `{0}` is not a JWT algorithm this gateway accepts")]
    UnknownAlgorithm(String),
    /// An allowed algorithm has no key to verify it.
    #[error("widget.algorithms lists {0:?} but no key for it is configured ({1})")]
    NoKey(Algorithm, &'static str),
    /// A key that does not parse.
    #[error("{0}: {1}")]
    BadKey(&'static str, String),
    /// An HMAC secret shorter than the hash (RFC 7518 §3.2).
    #[error("widget.secret is {0} bytes; HS256 needs at least 32")]
    WeakSecret(usize),
    /// `widget.verified_claims` names something that is not `email` or
    /// `phone`.
    #[error("widget.verified_claims: `{0}` is not `email` or `phone`")]
    UnknownVerifiedClaim(String),
}

/// Key material from the configuration.
#[derive(Debug, Clone, Default)]
pub struct KeySource<'a> {
    /// HMAC secret for HS*.
    pub secret: Option<&'a str>,
    /// PEM public key for RS*/PS*/ES*/EdDSA.
    pub public_key_pem: Option<&'a str>,
    /// The text of a JWKS file.
    pub jwks_json: Option<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

/// The widget's verifier, built once from the configuration.
pub struct WidgetAuth {
    allowed: Vec<Algorithm>,
    /// One prepared `Validation` per allowed algorithm (built once: they
    /// allocate).
    validations: Vec<(Algorithm, Validation)>,
    /// With exactly one key and no key set: that key and a validation that
    /// allows every configured algorithm of its family.
    single_key: Option<(DecodingKey, Validation)>,
    keys: BTreeMap<Family, DecodingKey>,
    jwks: BTreeMap<String, (DecodingKey, Option<Algorithm>)>,
    issuer: Option<String>,
    leeway: u64,
    /// Claims the business always verifies before signing (`email`,
    /// `phone`): they count as verified without a `*_verified` claim.
    verified_claims: Vec<ClaimKind>,
    /// Longest `exp − (iat or now)` accepted, seconds.
    max_lifetime: u64,
}

/// The longest widget token lifetime accepted by default: 24 hours.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: u64 = 86_400;

impl std::fmt::Debug for WidgetAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WidgetAuth")
            .field("allowed", &self.allowed)
            .field("kids", &self.jwks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PartialOrd for Family {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Family {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    iss: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    phone: Option<String>,
    /// OIDC's name for `phone`.
    phone_number: Option<String>,
    phone_number_verified: Option<bool>,
    name: Option<String>,
}

impl WidgetAuth {
    /// Builds the verifier: every allowed algorithm must have a key.
    pub fn new(
        algorithms: &[String],
        keys: KeySource<'_>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway_seconds: u64,
    ) -> Result<Self, JwtSetupError> {
        let mut allowed = Vec::new();
        for a in algorithms {
            let alg =
                Algorithm::from_str(a).map_err(|_| JwtSetupError::UnknownAlgorithm(a.clone()))?;
            allowed.push(alg);
        }
        let mut map = BTreeMap::new();
        if let Some(secret) = keys.secret {
            if secret.len() < 32 {
                return Err(JwtSetupError::WeakSecret(secret.len()));
            }
            map.insert(Family::Hmac, DecodingKey::from_secret(secret.as_bytes()));
        }
        if let Some(pem) = keys.public_key_pem {
            let pem = pem.as_bytes();
            let (fam, key) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                (Family::Rsa, k)
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                (Family::Ec, k)
            } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                (Family::Ed, k)
            } else {
                return Err(JwtSetupError::BadKey(
                    "widget.public_key_pem",
                    "not an RSA, EC or Ed25519 public key in PEM".into(),
                ));
            };
            map.insert(fam, key);
        }
        let mut jwks = BTreeMap::new();
        if let Some(text) = keys.jwks_json {
            let set: JwkSet = serde_json::from_str(text)
                .map_err(|e| JwtSetupError::BadKey("widget.jwks_file", e.to_string()))?;
            for jwk in &set.keys {
                let kid = jwk.common.key_id.clone().ok_or_else(|| {
                    JwtSetupError::BadKey("widget.jwks_file", "every key needs a `kid`".into())
                })?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                    JwtSetupError::BadKey("widget.jwks_file", format!("key `{kid}`: {e}"))
                })?;
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
                jwks.insert(kid, (key, alg));
            }
        }
        for alg in &allowed {
            if !map.contains_key(&family(*alg)) && jwks.is_empty() {
                let needs = match family(*alg) {
                    Family::Hmac => "widget.secret",
                    _ => "widget.public_key_pem or widget.jwks_file",
                };
                return Err(JwtSetupError::NoKey(*alg, needs));
            }
        }
        let validations: Vec<(Algorithm, Validation)> = allowed
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                // Times are checked against the injected clock instead.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.required_spec_claims.clear();
                v.validate_aud = audience.is_some();
                if let Some(aud) = &audience {
                    v.set_audience(&[aud]);
                    v.required_spec_claims.insert("aud".into());
                }
                if let Some(iss) = &issuer {
                    v.set_issuer(&[iss]);
                    v.required_spec_claims.insert("iss".into());
                }
                (*alg, v)
            })
            .collect();
        let single_key = match (map.len(), jwks.is_empty()) {
            (1, true) => map.iter().next().and_then(|(fam, key)| {
                let algs: Vec<Algorithm> = allowed
                    .iter()
                    .copied()
                    .filter(|a| family(*a) == *fam)
                    .collect();
                let first = validations.iter().find(|(a, _)| algs.contains(a))?;
                let mut v: Validation = first.1.clone();
                v.algorithms = algs;
                Some((key.clone(), v))
            }),
            _ => None,
        };
        Ok(WidgetAuth {
            single_key,
            validations,
            allowed,
            keys: map,
            jwks,
            issuer,

            leeway: leeway_seconds,
            verified_claims: Vec::new(),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
        })
    }

    /// The verifier `[widget]` configures; `jwks_json` is the content of
    /// its `jwks_file`, read by the host (a host without files has none).
    pub fn from_config(
        w: &crate::config::Widget,
        jwks_json: Option<&str>,
    ) -> Result<Self, JwtSetupError> {
        let keys = KeySource {
            secret: w.secret.as_deref(),
            public_key_pem: w.public_key_pem.as_deref(),
            jwks_json,
        };
        Ok(WidgetAuth::new(
            &w.algorithms,
            keys,
            w.issuer.clone(),
            w.audience.clone(),
            w.leeway_seconds,
        )?
        .with_verified_claims(&w.verified_claims)?
        .with_max_lifetime(w.max_token_lifetime_seconds))
    }

    /// Claims (`email`, `phone`) this business always verifies before it
    /// signs a token: they link without a `*_verified` claim. An unknown
    /// name is refused.
    pub fn with_verified_claims(mut self, names: &[String]) -> Result<Self, JwtSetupError> {
        for n in names {
            self.verified_claims.push(match n.as_str() {
                "email" => ClaimKind::Email,
                "phone" => ClaimKind::Phone,
                other => return Err(JwtSetupError::UnknownVerifiedClaim(other.to_string())),
            });
        }
        Ok(self)
    }

    /// The longest lifetime (`exp − iat`, or `exp − now` without `iat`)
    /// accepted, seconds.
    pub fn with_max_lifetime(mut self, seconds: u64) -> Self {
        self.max_lifetime = seconds;
        self
    }

    /// Verifies `token` at Unix time `now` and returns the user it names.
    pub fn verify(&self, token: Option<&str>, now: u64) -> Result<AuthenticatedUser, TokenError> {
        self.verify_until(token, now).map(|(user, _)| user)
    }

    /// [`WidgetAuth::verify`], and the last second the token is accepted
    /// (`exp` plus the leeway): when a live session on it must end.
    pub fn verify_until(
        &self,
        token: Option<&str>,
        now: u64,
    ) -> Result<(AuthenticatedUser, u64), TokenError> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)?;
        // The common deployment — one key, no key set — needs no look at the
        // header first: jsonwebtoken checks the algorithm against the
        // allow-list and the key's family itself. Only a failure takes the
        // longer path below, which names the precise reason.
        if let Some((key, v)) = &self.single_key
            && let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, v)
        {
            return self.finish(data.claims, now);
        }
        let header_b64 = token.split('.').next().ok_or(TokenError::Malformed)?;
        let mut header_buf = [0u8; 512];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(header_b64.trim_end_matches('='), &mut header_buf)
            .map_err(|_| TokenError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_buf[..n]).map_err(|_| TokenError::Malformed)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::Algorithm(header.alg.to_string()));
        }
        let alg = Algorithm::from_str(&header.alg)
            .map_err(|_| TokenError::Algorithm(header.alg.to_string()))?;
        if !self.allowed.contains(&alg) {
            return Err(TokenError::Algorithm(header.alg.to_string()));
        }
        let key = match &header.kid {
            Some(kid) if !self.jwks.is_empty() => {
                let (key, key_alg) = self
                    .jwks
                    .get(kid.as_ref())
                    .ok_or_else(|| TokenError::UnknownKid(kid.to_string()))?;
                // A key published for one algorithm verifies only that one.
                if key_alg.is_some_and(|k| k != alg) {
                    return Err(TokenError::Algorithm(header.alg.to_string()));
                }
                key
            }
            _ => self
                .keys
                .get(&family(alg))
                .ok_or_else(|| match &header.kid {
                    Some(kid) => TokenError::UnknownKid(kid.to_string()),
                    None => TokenError::UnknownKid(String::new()),
                })?,
        };
        let v = &self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .expect("a validation for every allowed algorithm")
            .1;
        let data = jsonwebtoken::decode::<Claims>(token, key, v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenError::Issuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::Audience,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm(header.alg.to_string()),
            ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_) => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })?;
        self.finish(data.claims, now)
    }

    /// The checks after the signature: times against the injected clock,
    /// required claims, and the user the token names.
    fn finish(&self, c: Claims, now: u64) -> Result<(AuthenticatedUser, u64), TokenError> {
        let exp = c.exp.ok_or(TokenError::MissingClaim("exp"))?;
        if now > exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = c.nbf
            && now.saturating_add(self.leeway) < nbf
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(iat) = c.iat
            && iat > now.saturating_add(self.leeway)
        {
            return Err(TokenError::IssuedInFuture);
        }
        // A token that lives for ever is a password that never changes.
        if exp.saturating_sub(c.iat.unwrap_or(now)) > self.max_lifetime {
            return Err(TokenError::Lifetime(self.max_lifetime));
        }
        let subject = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingClaim("sub"))?;
        let mut claims = vec![Claim {
            kind: ClaimKind::UserId,
            value: subject.clone(),
            verified: true,
        }];
        // An email or phone links on its own only when the business says it
        // verified it: in the token (OIDC's `*_verified`), or once for all
        // in `[widget] verified_claims`. Otherwise it is only a suggestion.
        let vouched = |kind: ClaimKind, flag: Option<bool>| {
            flag == Some(true) || self.verified_claims.contains(&kind)
        };
        let phone = c.phone.or(c.phone_number);
        for (kind, value, verified) in [
            (
                ClaimKind::Email,
                c.email,
                vouched(ClaimKind::Email, c.email_verified),
            ),
            (
                ClaimKind::Phone,
                phone,
                vouched(ClaimKind::Phone, c.phone_number_verified),
            ),
            (ClaimKind::Name, c.name, true),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                claims.push(Claim {
                    kind,
                    value,
                    verified,
                });
            }
        }
        let issuer = c
            .iss
            .or_else(|| self.issuer.clone())
            .unwrap_or_else(|| "widget".into());
        let until = exp.saturating_add(self.leeway);
        Ok((
            AuthenticatedUser {
                issuer,
                subject,
                claims,
            },
            until,
        ))
    }
}
