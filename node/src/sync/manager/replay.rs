//! Phase 2 at a top site: the update-server store's change log is replayed into the site
//! database from the position of the last full sync; a manual sync applies only new updates
//! and leaves the rest, and the position, for the next full sync.

use tracing::info;

use super::{FULL_SYNC_POSITION, LOG_PAGE, SyncError, SyncKind, SyncManager, SyncRun};
use crate::store::{CatalogChange, ChangeKind};

impl SyncManager {
    /// Phase 2 (see the module documentation).
    pub(super) fn sync_site_database(&self, run: &mut SyncRun) -> Result<(), SyncError> {
        let update_server = self.inner.node.database.update_server();
        let site = self.inner.node.database.site_database();
        let start: u64 = site
            .metadata(FULL_SYNC_POSITION)?
            .and_then(|b| b.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let end = update_server.last_sequence();
        let clock = std::time::Instant::now();
        run.progress = (0, end.saturating_sub(start));
        self.publish(run);
        let mut position = start;
        while position < end {
            let records = update_server.changes_since(position, LOG_PAGE)?;
            let Some(last) = records.last().map(|r| r.sequence.min(end)) else {
                break;
            };
            let mut changes = Vec::with_capacity(records.len());
            for record in records.into_iter().filter(|r| r.sequence <= end) {
                let wanted = match run.kind {
                    SyncKind::Full => true,
                    // A manual sync takes only updates the site database has never held,
                    // and leaves changes, expirations and deletions to the next full sync.
                    SyncKind::Manual => {
                        record.kind == ChangeKind::New
                            && site.latest(record.revision.update_id)?.is_none()
                    }
                };
                if !wanted {
                    continue;
                }
                if record.kind == ChangeKind::Deleted {
                    changes.push(CatalogChange::Delete(record.revision.update_id));
                } else if let Some(revision) = update_server.revision(record.revision)? {
                    // Absent when a later record deleted it; that record follows.
                    changes.push(CatalogChange::Put(revision));
                }
            }
            let position_meta = (run.kind == SyncKind::Full)
                .then(|| (FULL_SYNC_POSITION, last.to_be_bytes().to_vec()));
            let outcome = site.apply(changes, position_meta.as_slice())?;
            run.counts.site_database.add(&outcome);
            position = last;
            run.progress = (position - start, end - start);
            self.publish(run);
        }
        let c = run.counts.site_database;
        info!(
            sync_id = run.id,
            records = end.saturating_sub(start),
            new = c.new,
            changed = c.changed,
            expired = c.expired,
            deleted = c.deleted,
            elapsed = ?clock.elapsed(),
            "site database synced"
        );
        Ok(())
    }
}
