//! Phase 1 at a top site: the upstream (a catalog directory or an upstream WSUS server) is
//! scanned, the sync settings choose the wanted updates, and the update-server store is
//! brought to exactly those by comparing content hashes with what it holds, in batches.
//!
//! Only the scan differs by kind; choosing and applying read the scanned upstream through
//! [`Offered`], the same for both.

use std::collections::VecDeque;
use std::time::Instant;

use sitesync_metadata::custom::LOCAL_PUBLISHER;
use sitesync_metadata::{UpdateId, UpdateType};
use tracing::info;

use super::super::settings::{Candidate, CatalogFilter, SyncSettings, included_updates};
use super::{LOG_PAGE, SyncError, SyncKind, SyncManager, SyncRun};
use crate::store::{ApplyOutcome, CatalogChange, HeldUpdate, StoreError};
use crate::upstream::{
    DirectoryUpstream, Offered, ScanProgress, TrackedRevision, WithPublications,
    WithPublicationsError, WsusUpstream,
};

impl<E> From<WithPublicationsError<E>> for SyncError
where
    SyncError: From<E>,
{
    fn from(error: WithPublicationsError<E>) -> Self {
        match error {
            WithPublicationsError::Upstream(e) => e.into(),
            WithPublicationsError::Publications(e) => e.into(),
            WithPublicationsError::Foreign(id) => SyncError::ForeignCustom(format!(
                "the upstream offers {id} under `Local publisher`, which only this site's publishing gives"
            )),
        }
    }
}

/// Changes applied per store batch, and the bytes of documents after which a batch is cut.
const BATCH_CHANGES: usize = 500;
const BATCH_BYTES: usize = 4 << 20;

impl SyncManager {
    /// Phase 1 from a catalog directory: every file is looked at, whatever the kind of sync.
    pub(super) fn sync_from_directory(
        &self,
        run: &mut SyncRun,
        upstream: &DirectoryUpstream,
        settings: &SyncSettings,
    ) -> Result<(), SyncError> {
        let clock = Instant::now();
        let report = upstream.scan(&mut self.scan_progress(run.id))?;
        info!(
            sync_id = run.id,
            listed = report.listed,
            parsed = report.parsed,
            removed = report.removed,
            skipped = report.skipped.len(),
            elapsed = ?clock.elapsed(),
            "upstream scanned"
        );
        for skipped in &report.skipped {
            self.skipped(run, &skipped.file.display().to_string(), &skipped.reason);
        }
        let offered = self.with_publications(upstream, settings)?;
        self.bring_store_to(run, &offered, settings, report.tracked as u64, clock)
    }

    /// Phase 1 from an upstream WSUS server (S1, S3, S4): a full sync asks for the complete
    /// lists (so what the server no longer lists is deleted), a manual one asks with the
    /// stored anchors for what is new. The update list asks for the settings' products and
    /// classifications, resolved by name against the categories the scan has just synced.
    pub(super) fn sync_from_wsus(
        &self,
        run: &mut SyncRun,
        upstream: &WsusUpstream,
        settings: &SyncSettings,
    ) -> Result<(), SyncError> {
        let clock = Instant::now();
        let full = run.kind == SyncKind::Full;
        // The settings may name the local publisher's categories (S6), which the server
        // does not hold: they resolve here and are not asked for.
        let offered = self.with_publications(upstream, settings)?;
        let local: Vec<TrackedRevision> = offered.local_categories().cloned().collect();
        let select = |categories: &[TrackedRevision]| {
            let mut all = categories.to_vec();
            all.extend(local.iter().cloned());
            CatalogFilter::resolve(settings, &all)
                .map(|filter| {
                    let (mut products, classifications) = filter.upstream_lists(categories);
                    let chosen = !products.is_empty();
                    products.retain(|id| !local.iter().any(|l| l.id.update_id == *id));
                    if chosen && products.is_empty() {
                        // Only custom products are chosen: ask for a category the server
                        // does not hold, so it lists no update (an empty list means all).
                        products.push(LOCAL_PUBLISHER);
                    }
                    (products, classifications)
                })
                .map_err(|e| e.to_string())
        };
        let scanned = tokio::runtime::Handle::current().block_on(upstream.scan_selecting(
            full,
            &select,
            &mut self.scan_progress(run.id),
        ));
        let report = match scanned {
            Err(crate::upstream::WsusUpstreamError::Selection(reason)) => {
                return Err(SyncError::Settings(reason));
            }
            other => other?,
        };
        info!(
            sync_id = run.id,
            server = %upstream.session().server(),
            complete = report.complete,
            listed = report.listed,
            fetched = report.fetched,
            unchanged = report.unchanged,
            retried = report.retried,
            removed = report.removed,
            skipped = report.skipped.len(),
            elapsed = ?clock.elapsed(),
            "upstream server scanned"
        );
        for skipped in &report.skipped {
            self.skipped(
                run,
                &format!("{} from {}", skipped.revision, upstream.session().server()),
                &skipped.reason,
            );
        }
        self.bring_store_to(run, &offered, settings, report.tracked as u64, clock)
    }

    /// Shows a scan's progress (documents read of those to read) as sync `id`'s, to status
    /// and progress bars: when the count to read changes, and every 256 documents read.
    fn scan_progress(&self, id: u64) -> impl FnMut(ScanProgress) + Send + '_ {
        let mut shown = (u64::MAX, u64::MAX);
        move |p: ScanProgress| {
            let progress = (p.read as u64, p.to_read as u64);
            if progress.1 == shown.1
                && progress.0 < shown.0.saturating_add(256)
                && progress.0 != progress.1
            {
                return;
            }
            shown = progress;
            self.inner.view.send_modify(|v| {
                if let Some(current) = v.current.as_mut().filter(|c| c.id == id) {
                    current.progress = progress;
                }
            });
        }
    }

    /// `upstream` with what the local publisher offers beside it ([`WithPublications`]).
    fn with_publications<'a, U: Offered>(
        &'a self,
        upstream: &'a U,
        settings: &SyncSettings,
    ) -> Result<WithPublications<'a, U>, crate::store::StoreError> {
        WithPublications::new(
            upstream,
            self.inner.node.database.publications(),
            settings.names_local_publisher(),
        )
    }

    /// Chooses the wanted updates among those `upstream` offers and brings the update-server
    /// store to exactly them. `total` is how many revisions the upstream offers (progress).
    fn bring_store_to<U: Offered>(
        &self,
        run: &mut SyncRun,
        upstream: &U,
        settings: &SyncSettings,
        total: u64,
        clock: Instant,
    ) -> Result<(), SyncError>
    where
        SyncError: From<U::Error>,
    {
        let inner = &self.inner;
        // One walk of the upstream: the categories (to resolve the settings' names) and what
        // the selection needs of every other revision; then which updates are wanted.
        let mut categories = Vec::new();
        let mut candidates = Vec::new();
        for revision in upstream.offered() {
            let revision = revision?;
            if revision.update_type == UpdateType::Category {
                categories.push(revision);
            } else {
                candidates.push(Candidate::from(revision));
            }
        }
        let filter = CatalogFilter::resolve(settings, &categories)
            .map_err(|e| SyncError::Settings(e.to_string()))?;
        let mut included = included_updates(&filter, &candidates);
        // Categories always sync (they are what operators choose from), except a local
        // publisher's vendors and products, which follow `Local publisher` (S6).
        included.extend(
            categories
                .iter()
                .map(|c| c.id.update_id)
                .filter(|&id| !upstream.is_published(id) || filter.takes_category(id)),
        );
        drop(candidates);
        info!(sync_id = run.id, included = included.len(), elapsed = ?clock.elapsed(), "selection resolved");

        // Walk the upstream and the store side by side, in update-id order.
        let store = inner.node.database.update_server();
        run.progress = (0, total);
        self.publish(run);
        let mut held = HeldCursor::new(store);
        let mut batch = Batch::default();
        let mut offered_revisions = upstream.offered().peekable();
        let mut walked = 0u64;
        while let Some(first) = offered_revisions.next() {
            let first = first?;
            let update = first.id.update_id;
            let mut offered = vec![first];
            while let Some(Ok(next)) = offered_revisions.peek() {
                if next.id.update_id != update {
                    break;
                }
                if let Some(Ok(next)) = offered_revisions.next() {
                    offered.push(next);
                }
            }
            walked += offered.len() as u64;
            // Updates the store holds that sort before this one are no longer offered.
            for gone in held.take_before(update)? {
                batch.push(CatalogChange::Delete(gone.update_id), 0);
            }
            let holding = held.take_if(update)?;
            if !included.contains(&update) {
                if holding.is_some() {
                    batch.push(CatalogChange::Delete(update), 0);
                }
            } else {
                for revision in offered {
                    let already = holding
                        .as_ref()
                        .and_then(|h| h.revisions.iter().find(|(r, _)| *r == revision.id.revision))
                        .is_some_and(|(_, hash)| *hash == revision.content_hash);
                    if already {
                        continue;
                    }
                    match upstream.parsed(revision.id) {
                        Ok(parsed) => {
                            let size = parsed.document.len();
                            run.counts.bytes_received += size as u64;
                            batch.push(CatalogChange::Put(parsed), size);
                        }
                        Err(e) if U::is_per_document(&e) => {
                            self.skipped(run, &revision.file_name, &e.to_string());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if batch.full() {
                run.counts.update_server.add(&batch.apply(store)?);
                run.progress = (walked, total);
                self.publish(run);
            }
        }
        for gone in held.take_rest()? {
            batch.push(CatalogChange::Delete(gone.update_id), 0);
            if batch.full() {
                run.counts.update_server.add(&batch.apply(store)?);
            }
        }
        run.counts.update_server.add(&batch.apply(store)?);
        run.progress = (total, total);
        self.publish(run);
        let c = run.counts.update_server;
        info!(
            sync_id = run.id,
            new = c.new,
            changed = c.changed,
            expired = c.expired,
            deleted = c.deleted,
            elapsed = ?clock.elapsed(),
            "update server synced"
        );
        Ok(())
    }
}

/// Changes gathered for one store batch.
#[derive(Default)]
struct Batch {
    changes: Vec<CatalogChange>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, change: CatalogChange, bytes: usize) {
        self.changes.push(change);
        self.bytes += bytes;
    }

    fn full(&self) -> bool {
        self.changes.len() >= BATCH_CHANGES || self.bytes >= BATCH_BYTES
    }

    fn apply(&mut self, store: &crate::store::CatalogStore) -> Result<ApplyOutcome, StoreError> {
        self.bytes = 0;
        if self.changes.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        store.apply(std::mem::take(&mut self.changes), &[])
    }
}

/// The store's held updates in id order, read a page at a time, for the phase-1 walk.
struct HeldCursor<'a> {
    store: &'a crate::store::CatalogStore,
    page: VecDeque<HeldUpdate>,
    after: Option<UpdateId>,
    exhausted: bool,
}

impl<'a> HeldCursor<'a> {
    fn new(store: &'a crate::store::CatalogStore) -> Self {
        Self {
            store,
            page: VecDeque::new(),
            after: None,
            exhausted: false,
        }
    }

    fn peek(&mut self) -> Result<Option<&HeldUpdate>, StoreError> {
        if self.page.is_empty() && !self.exhausted {
            let page = self.store.held_updates(self.after, LOG_PAGE)?;
            self.exhausted = page.len() < LOG_PAGE;
            if let Some(last) = page.last() {
                self.after = Some(last.update_id);
            }
            self.page = page.into();
        }
        Ok(self.page.front())
    }

    /// Held updates that sort before `update`.
    fn take_before(&mut self, update: UpdateId) -> Result<Vec<HeldUpdate>, StoreError> {
        let mut out = Vec::new();
        while self.peek()?.is_some_and(|h| h.update_id < update) {
            out.extend(self.page.pop_front());
        }
        Ok(out)
    }

    /// The held update `update`, if it is next.
    fn take_if(&mut self, update: UpdateId) -> Result<Option<HeldUpdate>, StoreError> {
        if self.peek()?.is_some_and(|h| h.update_id == update) {
            return Ok(self.page.pop_front());
        }
        Ok(None)
    }

    fn take_rest(&mut self) -> Result<Vec<HeldUpdate>, StoreError> {
        let mut out = Vec::new();
        while self.peek()?.is_some() {
            out.extend(self.page.pop_front());
        }
        Ok(out)
    }
}
