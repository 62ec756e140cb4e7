//! Signed catalog versions in a sync: the top site signs after each phase; a child verifies
//! the version its parent offers before anything changes, and after each phase checks its
//! store against it, taking back what the phase applied when it does not match.

use sitesync_metadata::{CatalogDigest, ParseLimits};
use tracing::{info, info_span, warn};

use super::{SyncError, SyncManager};
use crate::catalog_version::{Held, VersionError, check_digest};
use crate::feed::ParentFeed;
use crate::feed::journal::Journal;

impl SyncManager {
    /// At the top site, with TLS: signs the catalog version of the stores as they are now;
    /// `complete` once both phases are done.
    pub(super) fn sign(&self, complete: bool) -> Result<(), SyncError> {
        let node = &self.inner.node;
        let Some(versions) = node.catalog_versions.as_ref().filter(|v| v.signs()) else {
            return Ok(());
        };
        let update_server = node.database.update_server().state();
        let site_database = complete.then(|| node.database.site_database().state());
        let held = versions
            .sign(
                node.config.site_code.as_str(),
                &update_server,
                site_database.as_ref(),
                self.inner.clock.now(),
            )
            .map_err(SyncError::Signing)?;
        info!(version = held.number(), complete, "catalog version signed");
        Ok(())
    }

    /// Before phase 1 at a child, with TLS: the top site's signed version the parent
    /// offers, verified, and the parent's update server checked against it, all before
    /// anything changes here.
    pub(super) fn verify_offered(
        &self,
        parent: &dyn ParentFeed,
    ) -> Result<Option<Held>, SyncError> {
        let Some(versions) = self.inner.node.catalog_versions.as_ref() else {
            return Ok(None);
        };
        let span = info_span!(
            "catalog_version.verify",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            version = tracing::field::Empty,
        )
        .entered();
        let verified = self.verify_offered_in_span(parent, versions);
        match &verified {
            Ok(Some(held)) => {
                span.record("version", held.number());
            }
            Ok(None) => {}
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", e.to_string());
            }
        }
        verified
    }

    fn verify_offered_in_span(
        &self,
        parent: &dyn ParentFeed,
        versions: &crate::catalog_version::CatalogVersions,
    ) -> Result<Option<Held>, SyncError> {
        let refused = |source| SyncError::CatalogVersion {
            parent: parent.address().to_owned(),
            source,
        };
        let catalog = tokio::runtime::Handle::current()
            .block_on(parent.catalog())
            .map_err(|source| SyncError::Parent {
                parent: parent.address().to_owned(),
                source,
            })?;
        let offered = versions
            .verify(catalog.catalog_version.as_ref(), self.inner.clock.now())
            .map_err(refused)?;
        if !self.is_internet_node() && offered.site_database_digest().is_none() {
            return Err(refused(VersionError::Incomplete {
                version: offered.number(),
            }));
        }
        check_digest(
            "parent's update server",
            offered.number(),
            catalog.digest,
            offered.update_server_digest(),
        )
        .map_err(refused)?;
        Ok(Some(offered))
    }

    /// After a phase at a child, with TLS: `store` must hold the signed version. If it
    /// does not, what the pull applied is taken back (the node keeps its previous catalog);
    /// if it does, the pull's journal is forgotten.
    pub(super) fn check_signed(
        &self,
        parent: &dyn ParentFeed,
        (store, anchor_key, name): (&crate::store::CatalogStore, &str, &'static str),
        offered: &Held,
        signed: Option<CatalogDigest>,
    ) -> Result<(), SyncError> {
        let _span = info_span!(
            "catalog_version.check",
            store = name,
            version = offered.number()
        )
        .entered();
        let journal = Journal::new(store, anchor_key);
        match check_digest(name, offered.number(), store.digest(), signed) {
            Ok(()) => Ok(journal.close()?),
            Err(refusal) => {
                let restored = journal.undo(&ParseLimits::default())?;
                warn!(
                    store = name,
                    restored,
                    digest = %store.digest(),
                    "the pulled catalog is not the signed one; the previous catalog is restored"
                );
                Err(SyncError::CatalogVersion {
                    parent: parent.address().to_owned(),
                    source: refusal,
                })
            }
        }
    }
}
