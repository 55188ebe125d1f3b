//! Retention: ended operations older than the configured age are pruned,
//! with their events, and audit entries older than theirs, in bounded
//! steps, by a background task.

use std::sync::Arc;
use std::time::SystemTime;

use super::Inner;
use crate::model::Timestamp;
use crate::store::Change;

/// Most operations removed by one commit, so a big backlog never makes one
/// huge transaction.
const PRUNE_STEP: usize = 1000;

pub(super) fn spawn(inner: &Arc<Inner>) {
    let inner = inner.clone();
    let shutdown = inner.shutdown.clone();
    inner.tasks.clone().spawn(async move {
        let mut tick = tokio::time::interval(inner.config.prune_interval);
        loop {
            if shutdown.run_until_cancelled(tick.tick()).await.is_none() {
                return;
            }
            let before = Timestamp::from(SystemTime::now() - inner.config.retention);
            let mut total = 0;
            loop {
                match inner.store.commit(Change::Prune { before, max: PRUNE_STEP }).await {
                    Ok(receipt) => {
                        total += receipt.count;
                        if receipt.count < PRUNE_STEP {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pruning failed");
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            if total > 0 {
                tracing::info!(pruned = total, "pruned ended operations past retention");
            }
            let before = Timestamp::from(SystemTime::now() - inner.config.audit_retention);
            loop {
                match inner.store.commit(Change::PruneAudit { before, max: PRUNE_STEP }).await {
                    Ok(receipt) if receipt.count == PRUNE_STEP => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "pruning the audit log failed");
                        break;
                    }
                }
            }
        }
    });
}
