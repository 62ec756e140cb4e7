//! What the sync manager tells the node's metrics ([`crate::metrics::sync`]): the phase a
//! sync enters, and how it ended with what it applied, in the metrics' label words.

use super::{SyncKind, SyncManager, SyncPhase, SyncResult, SyncRun};
use crate::metrics::sync::{Applied, SyncLabels};

impl SyncManager {
    /// Times the phase `run` is in; called wherever the run is published.
    pub(super) fn record_phase(&self, run: &SyncRun) {
        let phase = match run.phase {
            SyncPhase::Starting => "starting",
            SyncPhase::UpdateServer => "update_server",
            SyncPhase::SiteDatabase => "site_database",
            SyncPhase::Queued | SyncPhase::Finished => return,
        };
        self.inner.node.metrics.sync.phase(run.id, phase);
    }

    /// Counts a finished `run` and what it applied.
    pub(super) fn record_finished(&self, run: &SyncRun) {
        let labels = SyncLabels {
            kind: match run.kind {
                SyncKind::Full => "full",
                SyncKind::Manual => "manual",
            },
            trigger: super::trigger_label(run.trigger),
            result: match run.result {
                Some(SyncResult::Succeeded) => "succeeded",
                Some(SyncResult::Failed) | None => "failed",
            },
        };
        let applied = |c: super::PhaseCounts| Applied {
            new: c.new,
            changed: c.changed,
            expired: c.expired,
            deleted: c.deleted,
        };
        let mut stores = vec![("update_server", applied(run.counts.update_server))];
        if !self.is_internet_node() {
            stores.push(("site_database", applied(run.counts.site_database)));
        }
        self.inner
            .node
            .metrics
            .sync
            .finished(run.id, labels, &stores);
    }
}
