//! The CSV identity import (INTERFACE §5): a header row in any order,
//! case-insensitive — `customer_name`, `email`, `phone_number`,
//! `telegram_user_id`, `discord_user_id`, `widget_user_id`, and `attr:<name>`
//! columns. UTF-8, RFC 4180 quoting. Each row says "these identifiers are one
//! person". A bad row is reported with its line number and skipped.

use super::identifier::{Identifier, IdentifierKind};
use super::import::ImportRow;

/// A row the import refused, by its line number in the file (1 = header).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// Line number of the row's first line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Why the file as a whole cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// Not UTF-8.
    #[error("the file is not UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
    /// No header row.
    #[error("the file is empty: a header row is required")]
    Empty,
    /// A header naming an unknown column.
    #[error(
        "line 1: unknown column `{0}` (expected customer_name, email, phone_number, telegram_user_id, discord_user_id, widget_user_id or attr:<name>)"
    )]
    UnknownColumn(String),
    /// A header naming a column twice.
    #[error("line 1: column `{0}` appears twice")]
    DuplicateColumn(String),
    /// A header with no identifier column at all.
    #[error(
        "line 1: no identifier column (email, phone_number, telegram_user_id, discord_user_id or widget_user_id)"
    )]
    NoIdentifier,
    /// Broken quoting that makes the rest unreadable.
    #[error("line {0}: a quoted field is never closed")]
    Unterminated(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Name,
    Email,
    Phone,
    Channel(&'static str),
    Attr(String),
}

/// Splits RFC 4180 text into records, each with the line it starts on.
fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, CsvError> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    let mut at_field_start = true;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut fields)));
                line += 1;
                start = line;
                at_field_start = true;
                any = false;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err(CsvError::Unterminated(start));
    }
    if any || !fields.is_empty() || !field.is_empty() {
        fields.push(field);
        out.push((start, fields));
    }
    // Blank lines are not rows.
    out.retain(|(_, f)| !(f.len() == 1 && f[0].trim().is_empty()));
    Ok(out)
}

/// Rows to import, each with its line number, and rows refused.
pub type Parsed = (Vec<(usize, ImportRow)>, Vec<Rejected>);

/// Parses a whole file into rows to import and rows refused.
pub fn parse(bytes: &[u8]) -> Result<Parsed, CsvError> {
    let text = std::str::from_utf8(bytes).map_err(|e| CsvError::NotUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut recs = records(text)?.into_iter();
    let (_, header) = recs.next().ok_or(CsvError::Empty)?;
    let mut columns = Vec::new();
    for h in &header {
        let name = h.trim().to_ascii_lowercase();
        let col = match name.as_str() {
            "customer_name" => Column::Name,
            "email" => Column::Email,
            "phone_number" => Column::Phone,
            "telegram_user_id" => Column::Channel("telegram"),
            "discord_user_id" => Column::Channel("discord"),
            "widget_user_id" => Column::Channel("widget"),
            _ => match name.strip_prefix("attr:") {
                Some(a) if !a.is_empty() => Column::Attr(h.trim()[5..].to_string()),
                _ => return Err(CsvError::UnknownColumn(h.trim().to_string())),
            },
        };
        if columns.contains(&col) {
            return Err(CsvError::DuplicateColumn(h.trim().to_string()));
        }
        columns.push(col);
    }
    if !columns
        .iter()
        .any(|c| matches!(c, Column::Email | Column::Phone | Column::Channel(_)))
    {
        return Err(CsvError::NoIdentifier);
    }
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    'rows: for (line, fields) in recs {
        if fields.len() != columns.len() {
            rejected.push(Rejected {
                line,
                reason: format!(
                    "{} fields, but the header has {}",
                    fields.len(),
                    columns.len()
                ),
            });
            continue;
        }
        let mut row = ImportRow::default();
        for (col, value) in columns.iter().zip(&fields) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match col {
                Column::Name => {
                    row.attributes.insert("name".into(), value.to_string());
                }
                Column::Email | Column::Phone => {
                    let kind = if *col == Column::Email {
                        IdentifierKind::Email
                    } else {
                        IdentifierKind::Phone
                    };
                    match Identifier::new(kind, value) {
                        Ok(i) => row.identifiers.push(i),
                        Err(e) => {
                            let column = if kind == IdentifierKind::Email {
                                "email"
                            } else {
                                "phone_number"
                            };
                            rejected.push(Rejected {
                                line,
                                reason: format!("{column}: {e}"),
                            });
                            continue 'rows;
                        }
                    }
                }
                Column::Channel(channel) => {
                    let numeric = *channel != "widget";
                    if numeric && !value.bytes().all(|b| b.is_ascii_digit()) {
                        rejected.push(Rejected {
                            line,
                            reason: format!(
                                "{channel}_user_id: `{value}` is not a numeric user id"
                            ),
                        });
                        continue 'rows;
                    }
                    row.channel_ids
                        .push((channel.to_string(), value.to_string()));
                    if *channel == "widget" {
                        row.identifiers.push(Identifier {
                            kind: IdentifierKind::UserId,
                            value: value.to_string(),
                        });
                    }
                }
                Column::Attr(name) => {
                    // Consent means something to the gateway: only the
                    // two values it understands.
                    if name.starts_with("consent.") && value != "granted" && value != "denied" {
                        rejected.push(Rejected {
                            line,
                            reason: format!("attr:{name}: `{value}` must be `granted` or `denied`"),
                        });
                        continue 'rows;
                    }
                    row.attributes.insert(name.clone(), value.to_string());
                }
            }
        }
        if row.identifiers.is_empty() && row.channel_ids.is_empty() {
            rejected.push(Rejected {
                line,
                reason: "the row has no identifier".into(),
            });
            continue;
        }
        rows.push((line, row));
    }
    Ok((rows, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_quotes_any_header_order_and_bad_rows_reported_by_line() {
        let csv = "Email,customer_name,PHONE_NUMBER,telegram_user_id,attr:tier\r\n\
                   sarah@example.com,\"Kim, Sarah\",+1 650 555 1234,123456789,gold\r\n\
                   not-an-email,Bob,,,\n\
                   ,\"Multi\nLine\",+447911123456,,\n\
                   ada@example.com,Ada,,abc,\n\
                   \n\
                   only,two\n";
        let (rows, rejected) = parse(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        let (line, r) = &rows[0];
        assert_eq!(*line, 2);
        assert_eq!(r.attributes["name"], "Kim, Sarah");
        assert_eq!(r.attributes["tier"], "gold");
        assert_eq!(r.identifiers.len(), 2);
        assert_eq!(
            r.channel_ids,
            vec![("telegram".to_string(), "123456789".to_string())]
        );
        assert_eq!(rows[1].0, 4);
        assert_eq!(rows[1].1.attributes["name"], "Multi\nLine");
        let lines: Vec<usize> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 6, 8]);
        assert_eq!(
            rejected[0].reason,
            "email: `not-an-email` is not an email address"
        );
        assert_eq!(
            rejected[1].reason,
            "telegram_user_id: `abc` is not a numeric user id"
        );
        assert_eq!(rejected[2].reason, "2 fields, but the header has 5");
        let (_, rejected) =
            parse(b"email,attr:consent.marketing\na@example.com,yes\nb@example.com,granted\n")
                .unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            (rejected[0].line, rejected[0].reason.as_str()),
            (
                2,
                "attr:consent.marketing: `yes` must be `granted` or `denied`"
            )
        );
    }

    #[test]
    fn a_bad_header_fails_the_file_with_the_column() {
        assert_eq!(
            parse(b"email,favourite_colour\n").unwrap_err().to_string(),
            "line 1: unknown column `favourite_colour` (expected customer_name, email, phone_number, telegram_user_id, discord_user_id, widget_user_id or attr:<name>)"
        );
        assert!(matches!(
            parse(b"customer_name\nBob\n"),
            Err(CsvError::NoIdentifier)
        ));
        assert!(matches!(parse(b""), Err(CsvError::Empty)));
        assert!(matches!(
            parse(b"email\n\"open\n"),
            Err(CsvError::Unterminated(2))
        ));
        assert!(matches!(
            parse(b"email,Email\n"),
            Err(CsvError::DuplicateColumn(_))
        ));
    }
}
