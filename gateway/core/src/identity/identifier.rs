//! Identifiers — what links identities to a customer — and their
//! normalization. Phones are parsed with `phonenumber` (a port of Google's
//! libphonenumber) and judged by their form — a country code that exists
//! and a length that country's numbers can have — never by whether the
//! number is assigned; Mexico's legacy `+521` mobile form is the one rule
//! written here.

use std::collections::BTreeMap;

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

/// Identifier values that never link (`[identity] blocked_values`): shared
/// test accounts and placeholders such as `+10000000000`. Any string is
/// accepted; a value that normalizes as an email or a phone is matched in
/// its normalized form (so `+1 000 000 0000` blocks `+10000000000`), any
/// other as it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockedValues(std::collections::BTreeSet<String>);

impl BlockedValues {
    /// The set of `values`, each in the form identifiers are compared in.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        BlockedValues(
            values
                .into_iter()
                .map(|v| {
                    [IdentifierKind::Email, IdentifierKind::Phone]
                        .into_iter()
                        .find_map(|kind| Identifier::new(kind, v).ok())
                        .map_or_else(|| v.trim().to_string(), |i| i.value)
                })
                .collect(),
        )
    }

    /// Whether `identifier` is one of the blocked values.
    pub fn contains(&self, identifier: &Identifier) -> bool {
        self.0.contains(&identifier.value)
    }
}

/// Limits and blocks from `[identity]`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Tried first when linking by claims.
    pub primary: IdentifierKind,
    /// Values never linked.
    pub blocked: BlockedValues,
    /// Max distinct values per kind per customer.
    pub limits: BTreeMap<IdentifierKind, usize>,
    /// Cross-channel attribute overwrites inside this window are flagged, s.
    pub conflict_window: u64,
}

impl Rules {
    /// The rules `[identity]` configures, and a warning for each blocked
    /// value that looks like an email or phone but is not a valid one (it
    /// is accepted as written, but can then only ever match a user id
    /// spelled the same: likely a typo). An unknown kind in `limits` is an
    /// error naming the key.
    pub fn from_config(c: &crate::config::Identity) -> Result<(Rules, Vec<String>), String> {
        let mut warnings = Vec::new();
        for (i, v) in c.blocked_values.iter().enumerate() {
            let kind = if v.contains('@') {
                IdentifierKind::Email
            } else {
                IdentifierKind::Phone
            };
            if (v.contains('@') || v.trim_start().starts_with('+'))
                && Identifier::new(kind, v).is_err()
            {
                warnings.push(format!(
                    "identity.blocked_values[{i}] is not a valid {}; it blocks only that exact text",
                    kind.as_str()
                ));
            }
        }
        let blocked = BlockedValues::new(c.blocked_values.iter().map(String::as_str));
        let mut limits = BTreeMap::new();
        for (k, n) in &c.limits {
            let kind = IdentifierKind::parse(k).ok_or_else(|| {
                format!("identity.limits.{k}: not an identifier kind (email, phone, user_id)")
            })?;
            limits.insert(kind, *n as usize);
        }
        let primary = match c.primary_identifier {
            crate::config::PrimaryIdentifier::Email => IdentifierKind::Email,
            crate::config::PrimaryIdentifier::Phone => IdentifierKind::Phone,
            crate::config::PrimaryIdentifier::UserId => IdentifierKind::UserId,
        };
        let rules = Rules {
            primary,
            blocked,
            limits,
            conflict_window: c.conflict_window_seconds,
        };
        Ok((rules, warnings))
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            primary: IdentifierKind::Email,
            blocked: BlockedValues::default(),
            limits: BTreeMap::from([(IdentifierKind::Email, 3), (IdentifierKind::Phone, 3)]),
            conflict_window: 86_400,
        }
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

/// Normalizes a phone number to E.164 by its *form* alone: a `+`, a
/// country calling code that exists, and a national number of a length
/// that country's numbers can have (libphonenumber's "possible length",
/// from its metadata).
/// Whether the number is *assigned* (its metadata's ranges) is deliberately
/// not asked: that refuses fictional ranges such as +1 555 01xx, ranges
/// opened after the metadata was released, and forms channels still send —
/// and a phone that WhatsApp or a signed token vouches for must never be
/// dropped for it.
///
/// Mexico's mobile numbers once carried a `1` after the country code
/// (`+52 1 55 …`); WhatsApp still reports many `wa_id`s that way. Both forms
/// are one number, so `+521` followed by ten digits becomes `+52` and those
/// ten digits.
/// The national number lengths a country's numbers can have: the union
/// over its number types (the metadata states none for the general
/// description itself, as libphonenumber derives it).
fn possible_lengths(meta: &phonenumber::metadata::Metadata) -> Vec<u16> {
    let d = meta.descriptors();
    let mut out: Vec<u16> = [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ]
    .into_iter()
    .flatten()
    .chain([d.general()])
    .flat_map(|desc| desc.possible_length().iter().copied())
    .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `national` without a trunk prefix written after the country code, as in
/// `+44 (0)20 7946 0958`: dropped when the country dials one (`0`), its
/// numbers' general pattern refuses the number with it and accepts it
/// without. Italy's numbers, which keep their leading 0, are left alone.
fn without_trunk_prefix<'n>(meta: &phonenumber::metadata::Metadata, national: &'n str) -> &'n str {
    let general = meta.descriptors().general();
    match national.strip_prefix('0') {
        Some(rest)
            if meta.national_prefix() == Some("0")
                && !general.is_match(national)
                && general.is_match(rest) =>
        {
            rest
        }
        _ => national,
    }
}

fn normalize_phone(raw: &str) -> Result<String, InvalidIdentifier> {
    let bad = || InvalidIdentifier::Phone(raw.to_string());
    // Numbers without a `+` have no country; WhatsApp's wa_id is digits
    // with the country code first, so callers add the `+` for those.
    let rest = raw.strip_prefix('+').ok_or_else(bad)?;
    // Digits and the separators people write numbers with: spaces (any,
    // including no-break ones), dashes, dots, slashes and parentheses.
    let separator = |c: char| {
        c.is_whitespace() || matches!(c, '-' | '.' | '/' | '(' | ')' | '\u{2010}'..='\u{2015}')
    };
    if !rest.chars().all(|c| c.is_ascii_digit() || separator(c)) {
        return Err(bad());
    }
    let mut digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    // E.164 numbers have at most 15 digits; a trunk prefix may add one.
    if digits.len() > 16 {
        return Err(bad());
    }
    if digits.len() == 13 && digits.starts_with("521") {
        digits.remove(2);
    }
    // Calling codes are prefix-free (ITU-T E.164): the one of 1 to 3
    // digits that exists is the code, the rest the national number.
    let (code, regions, national) = (1..=3usize)
        .filter(|n| digits.len() > *n)
        .find_map(|n| {
            let code: u16 = digits[..n].parse().ok()?;
            let regions = phonenumber::metadata::DATABASE.by_code(&code)?;
            Some((code, regions, &digits[n..]))
        })
        .ok_or_else(bad)?;
    // As libphonenumber's `isPossibleNumber`: the lengths of the calling
    // code's main country (the US for +1, Russia for +7).
    let main = regions
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(regions.first())
        .ok_or_else(bad)?;
    let national = without_trunk_prefix(main, national);
    if !possible_lengths(main).contains(&(national.len() as u16)) {
        return Err(bad());
    }
    Ok(format!("+{code}{national}"))
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
        // Possible lengths are per country: 10 national digits in the US,
        // 8 to 11 in Brazil.
        assert!(phone("+1 650 555 123").is_err());
        assert!(phone("+55 11 12345").is_err());
    }

    #[test]
    fn a_trunk_prefix_after_the_country_code_is_dropped() {
        assert_eq!(phone("+44 (0)20 7946 0958").unwrap(), "+442079460958");
        assert_eq!(phone("+44 (0)7911 123456").unwrap(), "+447911123456");
        assert_eq!(phone("+49 (0)30 12345678").unwrap(), "+493012345678");
        assert_eq!(phone("+41 (0)44 668 18 00").unwrap(), "+41446681800");
        // Italy's numbers keep their leading 0.
        assert_eq!(phone("+39 06 6982 1234").unwrap(), "+390669821234");
    }

    #[test]
    fn any_usual_separator_is_accepted_and_overlong_numbers_are_not() {
        assert_eq!(phone("+1 650/555\u{a0}1234").unwrap(), "+16505551234");
        assert_eq!(
            phone("+1 650\u{2011}555\u{2011}1234").unwrap(),
            "+16505551234"
        );
        assert!(phone(&format!("+1{}", "5".repeat(70_000))).is_err());
    }

    #[test]
    fn mexicos_legacy_mobile_form_is_the_same_number() {
        assert_eq!(phone("+52 55 1234 5678").unwrap(), "+525512345678");
        assert_eq!(phone("+52 1 55 1234 5678").unwrap(), "+525512345678");
        assert_eq!(phone("+5215512345678").unwrap(), "+525512345678");
    }

    #[test]
    fn unassigned_and_fictional_ranges_still_normalize() {
        // +1 555 numbers are fictional (no metadata range holds them), and
        // +1 000 is no area code at all: both are still phone-shaped, and a
        // channel that vouches for one must be able to link it.
        assert_eq!(phone("+1 555 123 4567").unwrap(), "+15551234567");
        assert_eq!(
            phone("+15550100").unwrap_err(),
            InvalidIdentifier::Phone("+15550100".into())
        );
        assert_eq!(phone("+1 000 000 0000").unwrap(), "+10000000000");
    }

    #[test]
    fn phones_without_a_country_or_too_short_are_refused() {
        assert!(phone("6505551234").is_err());
        assert!(phone("+1 555").is_err());
        // No country uses the calling code 999.
        assert!(phone("+999 1234 5678").is_err());
        assert!(phone("+1 650 555 1234 ext 5").is_err());
        assert_eq!(
            phone("banana").unwrap_err().to_string(),
            "`banana` is not a valid phone number in international form (+country code)"
        );
    }

    #[test]
    fn blocked_values_take_any_string_and_match_normalized_forms() {
        let blocked = BlockedValues::new(["+1 000 000 0000", "Test@Example.com", "not a phone +"]);
        let id = |kind, v| Identifier::new(kind, v).unwrap();
        assert!(blocked.contains(&id(IdentifierKind::Phone, "+10000000000")));
        assert!(blocked.contains(&id(IdentifierKind::Email, "test@example.COM")));
        assert!(blocked.contains(&id(IdentifierKind::UserId, "not a phone +")));
        assert!(!blocked.contains(&id(IdentifierKind::Phone, "+15551234567")));
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
