//! The CSV identity import, shared by `gateway import` and
//! `POST /admin/v1/import`.

use std::collections::BTreeMap;

use chatcrafter_core::config::Config;
use chatcrafter_core::identity::ImportRow;
use chatcrafter_core::identity::csv::{self, CsvError, Rejected};
use serde::Serialize;

use crate::store::GatewayDb;

/// The import summary (INTERFACE §3.6).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Data rows read (header and blank lines excluded).
    pub rows: usize,
    /// Links written.
    pub linked: usize,
    /// Merges performed.
    pub merged: usize,
    /// Conflicts recorded.
    pub conflicts: usize,
    /// Rows refused, by line.
    pub rejected: Vec<Rejected>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file as a whole is unusable.
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// The store failed; rows before `line` are imported.
    #[error("line {line}: {error}")]
    Store {
        /// The row that failed.
        line: usize,
        /// Why.
        error: chatcrafter_core::db::DbError,
    },
}

/// The channel names a CSV channel column links into: a column names a
/// kind of channel (`telegram_user_id`: Telegram), and identities are
/// recorded under the names the operator configured those channels as
/// (`[channels.tg] plugin = "builtin:telegram"` → `tg`). A kind no
/// configured channel serves keeps its own name.
pub fn channel_names(config: &Config) -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, ch) in &config.channels {
        if let Some(kind) = ch.plugin.strip_prefix("builtin:") {
            names
                .entry(kind.to_string())
                .or_default()
                .push(name.clone());
        }
    }
    names
}

/// Moves a row's channel ids from their kinds to the configured names.
fn place(row: &mut ImportRow, channels: &BTreeMap<String, Vec<String>>) {
    row.channel_ids = std::mem::take(&mut row.channel_ids)
        .into_iter()
        .flat_map(|(kind, id)| match channels.get(&kind) {
            Some(names) => names.iter().map(|n| (n.clone(), id.clone())).collect(),
            None => vec![(kind, id)],
        })
        .collect();
}

/// Imports `bytes`; `progress(done, total)` is called after each row.
/// `channels` is [`channel_names`] of the running configuration.
pub async fn import(
    graph: &GatewayDb,
    channels: &BTreeMap<String, Vec<String>>,
    bytes: &[u8],
    at: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<Summary, ImportError> {
    let (mut rows, rejected) = csv::parse(bytes)?;
    for (_, row) in &mut rows {
        place(row, channels);
    }
    let total = rows.len();
    let mut summary = Summary {
        rows: total + rejected.len(),
        rejected,
        ..Summary::default()
    };
    for (n, (line, row)) in rows.iter().enumerate() {
        let out = graph
            .import_row(row, at)
            .await
            .map_err(|error| ImportError::Store { line: *line, error })?;
        summary.linked += out.linked;
        summary.merged += out.merged;
        summary.conflicts += out.conflicts;
        progress(n + 1, total);
    }
    summary.rejected.sort_by_key(|r| r.line);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_columns_link_into_the_channels_configured_for_their_kind() {
        let config = Config::parse(
            "version = 1\n[channels.tg]\nplugin = \"builtin:telegram\"\n\
             [channels.tg2]\nplugin = \"builtin:telegram\"\n",
        )
        .unwrap();
        let channels = channel_names(&config);
        let mut row = ImportRow {
            channel_ids: vec![
                ("telegram".into(), "42".into()),
                ("widget".into(), "u-1".into()),
            ],
            ..ImportRow::default()
        };
        place(&mut row, &channels);
        assert_eq!(
            row.channel_ids,
            vec![
                ("tg".to_string(), "42".to_string()),
                ("tg2".into(), "42".into()),
                ("widget".into(), "u-1".into())
            ]
        );
    }
}
