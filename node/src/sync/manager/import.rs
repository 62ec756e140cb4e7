//! Phase 1 at a node whose upstream is export files (S12): the file, verified when it was
//! received and opened as a feed, is applied exactly as a pull from a parent is — batch by
//! batch with the undo journal, its catalog version checked first and the store's digest
//! against it at the end — and any failure takes back what the import applied, so the
//! store is as it was before.

use sitesync_metadata::ParseLimits;
use tracing::{info, info_span, warn};

use super::{SyncError, SyncManager, SyncRun};
use crate::catalog_version::{Held, VersionError, check_digest};
use crate::feed::ParentFeed;
use crate::feed::apply::FeedOutcome;
use crate::feed::follow::{self, PULL_ANCHOR_KEY};
use crate::feed::journal::Journal;

impl SyncManager {
    /// Applies the export file `file` to the update-server store.
    pub(super) fn import_file(
        &self,
        run: &mut SyncRun,
        file: &dyn ParentFeed,
    ) -> Result<(), SyncError> {
        let store = self.inner.node.database.update_server();
        let name = file.address().to_owned();
        let offered = self.verify_imported_version(file)?;
        let custom = match &self.inner.node.catalog_versions {
            Some(versions) => Some(versions.custom_check(&offered, true).map_err(|source| {
                SyncError::ImportVersion {
                    file: name.clone(),
                    source: Box::new(source),
                }
            })?),
            None => None,
        };
        let outcome = tokio::runtime::Handle::current().block_on(follow::pull(
            file,
            store,
            &ParseLimits::default(),
            true,
            custom,
            |o: &FeedOutcome| {
                run.progress = (o.batches, 0);
                self.publish(run);
            },
        ));
        let journal = Journal::new(store, PULL_ANCHOR_KEY);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(source) => {
                self.take_back(&journal);
                return Err(SyncError::Import {
                    file: name,
                    source: Box::new(source),
                });
            }
        };
        run.counts.update_server.add_pulled(&outcome);
        run.counts.bytes_received += outcome.bytes_received;
        let _span = info_span!(
            "catalog_version.check",
            store = "update server",
            version = offered.number()
        )
        .entered();
        if let Err(source) = check_digest(
            "update server",
            offered.number(),
            store.digest(),
            offered.update_server_digest(),
        ) {
            self.take_back(&journal);
            return Err(SyncError::ImportVersion {
                file: name,
                source: Box::new(source),
            });
        }
        journal.close()?;
        if let Some(versions) = &self.inner.node.catalog_versions {
            versions.hold_import(&offered)?;
        }
        info!(sync_id = run.id, file = %name, batches = outcome.batches, digest = %outcome.digest, version = offered.number(), "update server synced from an export file");
        Ok(())
    }

    /// The file's catalog version, verified against the CAs imports trust and the last
    /// version imported (rollback, expiry), and the file's stated digest checked against it.
    fn verify_imported_version(&self, file: &dyn ParentFeed) -> Result<Held, SyncError> {
        let name = file.address().to_owned();
        let refused = |source| SyncError::ImportVersion {
            file: name.clone(),
            source: Box::new(source),
        };
        let versions = self
            .inner
            .node
            .catalog_versions
            .as_ref()
            .ok_or_else(|| refused(VersionError::Missing))?;
        let _span = info_span!("catalog_version.verify", file = %name).entered();
        let catalog = tokio::runtime::Handle::current()
            .block_on(file.catalog())
            .map_err(|source| SyncError::Import {
                file: name.clone(),
                source: Box::new(source),
            })?;
        let offered = versions
            .verify_import(catalog.catalog_version.as_ref(), self.inner.clock.now())
            .map_err(refused)?;
        check_digest(
            "export file's update server",
            offered.number(),
            catalog.digest,
            offered.update_server_digest(),
        )
        .map_err(refused)?;
        Ok(offered)
    }

    /// Takes back what this import (and any import cut off before it) applied.
    pub(super) fn take_back(&self, journal: &Journal<'_>) {
        match journal.undo(&ParseLimits::default()) {
            Ok(restored) => {
                warn!(
                    restored,
                    "the phase failed; the store is restored to before it"
                )
            }
            Err(e) => {
                warn!(error = %e, "the phase failed and could not be taken back yet; the next sync takes it back or completes it")
            }
        }
    }
}
