//! The node's audit writer: entries that are not part of a change (reads,
//! refusals, failed requests) are appended in batches — whatever is waiting
//! when the previous batch commits goes in the next one, in one unit — so
//! concurrent admin reads do not contend for the chain's head one by one.
//! Each caller waits for its batch to commit before its answer leaves.

use std::sync::Arc;

use chatcrafter_core::audit::AuditDraft;
use tokio::sync::{mpsc, oneshot};

use crate::store::GatewayDb;

/// Most entries in one batch.
const BATCH: usize = 256;

type Waiting = (AuditDraft, oneshot::Sender<Result<(), String>>);

/// Appends audit entries for this node.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Waiting>,
}

impl AuditWriter {
    /// Starts the writer on `db` (on the current Tokio runtime).
    pub fn start(db: Arc<GatewayDb>) -> AuditWriter {
        let (tx, mut rx) = mpsc::channel::<Waiting>(4 * BATCH);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(w) => batch.push(w),
                        Err(_) => break,
                    }
                }
                let drafts: Vec<AuditDraft> = batch.iter().map(|(d, _)| d.clone()).collect();
                let result = db
                    .audit_all(&drafts)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                for (_, reply) in batch {
                    let _ = reply.send(result.clone());
                }
            }
        });
        AuditWriter { tx }
    }

    /// Appends `draft` and waits until it is stored; the error says why not.
    pub async fn append(&self, draft: AuditDraft) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((draft, reply))
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }
}
