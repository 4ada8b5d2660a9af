//! Identifiers — what links identities to a customer — and their
//! normalization. Phones are parsed with `phonenumber` (a port of Google's
//! libphonenumber), so country rules such as Brazil's mobile ninth digit or
//! Mexico's legacy `+521` prefix come from its metadata, not from code here.

use serde::{Deserialize, Serialize};

/// The kinds of identifier that can link identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// An email address.
    Email,
    /// A phone number, E.164.
    Phone,
    /// The business's own user id.
    UserId,
}

impl IdentifierKind {
    /// Its name in configuration, lookups and the blind index.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
            IdentifierKind::UserId => "user_id",
        }
    }

    /// Parses `email`, `phone` or `user_id`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(IdentifierKind::Email),
            "phone" => Some(IdentifierKind::Phone),
            "user_id" => Some(IdentifierKind::UserId),
            _ => None,
        }
    }
}

/// A normalized identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identifier {
    /// What it is.
    pub kind: IdentifierKind,
    /// The normalized value.
    pub value: String,
}

/// Why a value is not a usable identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentifier {
    /// Not an email address.
    #[error("`{0}` is not an email address")]
    Email(String),
    /// Not a phone number in international form.
    #[error("`{0}` is not a valid phone number in international form (+country code)")]
    Phone(String),
    /// Empty.
    #[error("the {0} is empty")]
    Empty(&'static str),
}

impl Identifier {
    /// Normalizes `raw` as an identifier of `kind`.
    pub fn new(kind: IdentifierKind, raw: &str) -> Result<Self, InvalidIdentifier> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(InvalidIdentifier::Empty(kind.as_str()));
        }
        let value = match kind {
            IdentifierKind::Email => normalize_email(raw)?,
            IdentifierKind::Phone => normalize_phone(raw)?,
            IdentifierKind::UserId => raw.to_string(),
        };
        Ok(Identifier { kind, value })
    }
}

fn normalize_email(raw: &str) -> Result<String, InvalidIdentifier> {
    let lower = raw.to_lowercase();
    let valid = match lower.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !lower.chars().any(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    };
    if valid {
        Ok(lower)
    } else {
        Err(InvalidIdentifier::Email(raw.to_string()))
    }
}

fn normalize_phone(raw: &str) -> Result<String, InvalidIdentifier> {
    // Numbers without a `+` have no country; WhatsApp's wa_id is digits
    // with the country code first, so callers add the `+` for those.
    let bad = || InvalidIdentifier::Phone(raw.to_string());
    if !raw.starts_with('+') {
        return Err(bad());
    }
    let number = phonenumber::parse(None, raw).map_err(|_| bad())?;
    if !phonenumber::is_valid(&number) {
        return Err(bad());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Result<String, InvalidIdentifier> {
        Identifier::new(IdentifierKind::Phone, s).map(|i| i.value)
    }

    #[test]
    fn phones_normalize_to_e164() {
        assert_eq!(phone("+1 (650) 555-1234").unwrap(), "+16505551234");
        assert_eq!(phone("+44 7911 123456").unwrap(), "+447911123456");
        assert_eq!(phone("+49 151 12345678").unwrap(), "+4915112345678");
    }

    #[test]
    fn country_rules_come_from_libphonenumber() {
        // Brazil: São Paulo mobile numbers carry the ninth digit.
        assert_eq!(phone("+55 11 91234-5678").unwrap(), "+5511912345678");
        // Mexico: current metadata knows no mobile `1` after +52; the
        // legacy form is refused rather than guessed at.
        assert_eq!(phone("+52 55 1234 5678").unwrap(), "+525512345678");
        assert!(phone("+52 1 55 1234 5678").is_err());
    }

    #[test]
    fn phones_without_a_country_or_too_short_are_refused() {
        assert!(phone("6505551234").is_err());
        assert!(phone("+1 555").is_err());
        assert_eq!(
            phone("banana").unwrap_err().to_string(),
            "`banana` is not a valid phone number in international form (+country code)"
        );
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        let e = Identifier::new(IdentifierKind::Email, "  Sarah.K@Example.COM ").unwrap();
        assert_eq!(e.value, "sarah.k@example.com");
        assert!(Identifier::new(IdentifierKind::Email, "not-an-email").is_err());
        assert!(Identifier::new(IdentifierKind::Email, "a@b").is_err());
        assert!(Identifier::new(IdentifierKind::Email, "").is_err());
    }
}
