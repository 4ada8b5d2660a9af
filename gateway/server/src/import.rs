//! The CSV identity import, shared by `gateway import` and
//! `POST /admin/v1/import`.

use chatcrafter_core::identity::csv::{self, CsvError, Rejected};
use serde::Serialize;

use crate::app::IdentityGraph;

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
        error: chatcrafter_core::identity::graph::GraphError,
    },
}

/// Imports `bytes`; `progress(done, total)` is called after each row.
pub async fn import(
    graph: &IdentityGraph,
    bytes: &[u8],
    at: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<Summary, ImportError> {
    let (rows, rejected) = csv::parse(bytes)?;
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
