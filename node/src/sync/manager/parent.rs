//! Both phases at a node whose upstream is a parent: the update-server store pulls the
//! parent's change feed, and the site database replicates the parent's, each checked against
//! the signed catalog version ([`super::signing`]).

use sitesync_metadata::ParseLimits;
use tracing::info;

use super::{SyncError, SyncManager, SyncRun};
use crate::catalog_version::{Held, VersionError};
use crate::feed::apply::FeedOutcome;
use crate::feed::follow::{
    self, PULL_ANCHOR_KEY, REPLICATION_ANCHOR_KEY, ReplicaStores, ReplicationLimits,
    ReplicationTarget,
};
use crate::feed::journal::Journal;
use crate::feed::{FeedError, ParentFeed};
use crate::publishing::CustomCheck;

impl SyncManager {
    /// Phase 1 at a child site: the parent's update server, pulled until the digests match,
    /// then checked against the top site's signed version (returned, when there is one).
    pub(super) fn pull_from_parent(
        &self,
        run: &mut SyncRun,
        parent: &dyn ParentFeed,
    ) -> Result<Option<Held>, SyncError> {
        let store = self.inner.node.database.update_server();
        let offered = self.verify_offered(parent)?;
        let custom = self.custom_check(parent, offered.as_ref())?;
        let target = (&**store, PULL_ANCHOR_KEY, "update server");
        // The sync runs on the blocking pool; the pull is asynchronous network work.
        let outcome = tokio::runtime::Handle::current().block_on(follow::pull(
            parent,
            store,
            &ParseLimits::default(),
            offered.is_some(),
            custom,
            |o: &FeedOutcome| {
                run.progress = (o.batches, 0);
                self.publish(run);
            },
        ));
        let outcome = match (outcome, &offered) {
            (Ok(outcome), _) => outcome,
            // What the parent served is not what it states: with a signed version, the
            // check below names the version and takes the pull back.
            (Err(FeedError::Mismatch { .. } | FeedError::Unsettled { .. }), Some(offered)) => {
                self.check_signed(parent, target, offered, offered.update_server_digest())?;
                return Err(SyncError::CatalogVersion {
                    parent: parent.address().to_owned(),
                    source: VersionError::Unsettled,
                });
            }
            // A custom update that is not genuine (S6): the pull is taken back, so the
            // node keeps the catalog it had.
            (Err(source @ FeedError::Custom(_)), Some(_)) => {
                self.take_back(&Journal::new(store, PULL_ANCHOR_KEY));
                return Err(SyncError::Parent {
                    parent: parent.address().to_owned(),
                    source,
                });
            }
            (Err(source), _) => {
                return Err(SyncError::Parent {
                    parent: parent.address().to_owned(),
                    source,
                });
            }
        };
        run.counts.update_server.add_pulled(&outcome);
        run.counts.bytes_received += outcome.bytes_received;
        if let Some(offered) = &offered {
            self.check_signed(parent, target, offered, offered.update_server_digest())?;
            if let Some(versions) = &self.inner.node.catalog_versions {
                versions.hold(offered)?;
            }
        }
        info!(sync_id = run.id, parent = %parent.address(), batches = outcome.batches, digest = %outcome.digest, "update server synced from the parent");
        Ok(offered)
    }

    /// Phase 2 at a child site: the parent's site database, replicated up to the parent's
    /// position when the stream opened, with the digests checked there.
    pub(super) fn replicate_from_parent(
        &self,
        run: &mut SyncRun,
        parent: &dyn ParentFeed,
        offered: Option<&Held>,
    ) -> Result<(), SyncError> {
        let database = &self.inner.node.database;
        let site = database.site_database();
        let site_code = self.inner.node.config.site_code.to_string();
        let stores = ReplicaStores {
            site_database: site,
            update_server: Some(database.update_server()),
        };
        let outcome = tokio::runtime::Handle::current()
            .block_on(follow::replicate(
                parent,
                stores,
                &site_code,
                ReplicationTarget::ParentPosition,
                &ReplicationLimits {
                    journal: offered.is_some(),
                    custom: self.custom_check(parent, offered)?,
                    ..ReplicationLimits::default()
                },
                |o| {
                    run.progress = (o.changes.batches, 0);
                    self.publish(run);
                    std::ops::ControlFlow::Continue(())
                },
            ))
            .map_err(|source| {
                if offered.is_some() && matches!(source, FeedError::Custom(_)) {
                    self.take_back(&Journal::new(site, REPLICATION_ANCHOR_KEY));
                }
                SyncError::Replication {
                    parent: parent.address().to_owned(),
                    source,
                }
            })?;
        run.counts.site_database.add_pulled(&outcome.changes);
        if let Some(offered) = offered {
            let signed = offered.site_database_digest();
            let target = (&**site, REPLICATION_ANCHOR_KEY, "site database");
            self.check_signed(parent, target, offered, signed)?;
        }
        info!(
            sync_id = run.id,
            parent = %parent.address(),
            batches = outcome.changes.batches,
            digest = %site.digest(),
            "site database replicated from the parent"
        );
        Ok(())
    }

    /// What custom updates from `parent` are checked against: the offered version's
    /// delegations (none without signed versions).
    fn custom_check(
        &self,
        parent: &dyn ParentFeed,
        offered: Option<&Held>,
    ) -> Result<Option<std::sync::Arc<CustomCheck>>, SyncError> {
        match (&self.inner.node.catalog_versions, offered) {
            (Some(versions), Some(offered)) => versions
                .custom_check(offered, false)
                .map(Some)
                .map_err(|source| SyncError::CatalogVersion {
                    parent: parent.address().to_owned(),
                    source,
                }),
            _ => Ok(None),
        }
    }
}
