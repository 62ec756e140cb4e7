//! Where a top site's update server syncs from (SPEC S1, S12).
//!
//! An upstream offers a set of revisions, each with its update XML document. The sync
//! manager drives it in three steps, the same for every kind of upstream:
//!
//! 1. `scan` brings the upstream's view up to date and reports what could not be read,
//!    document by document, so one bad document never fails a sync (issue 3, item 7); only
//!    an upstream that cannot be reached at all is an error.
//! 2. `revisions` lists every offered revision as a [`TrackedRevision`]: what the sync
//!    settings filter by (type, state, categories, bundles, languages), so choosing what
//!    enters the stores needs no parsing. It pages, so a catalog of any size fits in a small
//!    memory budget.
//! 3. `document` fetches the bytes of the revisions the sync manager chose.
//!
//! Steps 2 and 3 are the same for every kind, as [`Offered`]; step 1 is each kind's own.
//!
//! - [`directory`]: the catalog directory, one update XML document per file — what an
//!   operator feeds a disconnected top site, and what the demo and benchmarks generate.
//! - [`wsus`]: Microsoft Update or an existing WSUS server, over the server-to-server
//!   protocol [MS-WSUSSS] (S1).
//!
//! A child site's upstream, its parent, is not one of these: it is a feed
//! ([`crate::feed`]), followed from the last anchor applied.

pub mod directory;
pub mod published;
pub mod wsus;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sitesync_metadata::{
    CategoryType, ContentHash, PublicationState, Relationship, RevisionId, UpdateId,
    UpdateRevision, UpdateType,
};

use crate::store::BackendError;

pub use directory::DirectoryUpstream;
pub use published::{WithPublications, WithPublicationsError};
pub use wsus::{WsusUpstream, WsusUpstreamError};

/// Revisions read a page at a time, in (update id, revision) order.
pub trait RevisionPages {
    type Error;

    /// Tracked revisions after `after` (`None` for the start), in order, at most `limit`.
    fn revisions_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<TrackedRevision>, Self::Error>;
}

/// Revisions tracked per page read.
const PAGE: usize = 1024;

/// Every tracked revision of an upstream, in (update id, revision) order, a page at a time:
/// memory stays bounded whatever the size of the catalog. Meant to be walked between scans
/// (the sync manager runs one sync at a time); a scan running meanwhile may show through.
/// Stops after the first error.
#[derive(Debug)]
pub struct TrackedRevisions<'a, U> {
    upstream: &'a U,
    page: std::vec::IntoIter<TrackedRevision>,
    /// The last revision handed out, where the next page starts.
    after: Option<RevisionId>,
    done: bool,
}

impl<'a, U: RevisionPages> TrackedRevisions<'a, U> {
    pub fn new(upstream: &'a U) -> Self {
        Self {
            upstream,
            page: Vec::new().into_iter(),
            after: None,
            done: false,
        }
    }
}

impl<U: RevisionPages> Iterator for TrackedRevisions<'_, U> {
    type Item = Result<TrackedRevision, U::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(revision) = self.page.next() {
            self.after = Some(revision.id);
            return Some(Ok(revision));
        }
        if self.done {
            return None;
        }
        match self.upstream.revisions_after(self.after, PAGE) {
            Ok(page) => {
                self.done = page.len() < PAGE;
                self.page = page.into_iter();
                let revision = self.page.next()?;
                self.after = Some(revision.id);
                Some(Ok(revision))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// What phase 1 reads of a scanned upstream, whatever its kind.
pub trait Offered {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every offered revision in (update id, revision) order, a page at a time.
    fn offered(&self) -> Box<dyn Iterator<Item = Result<TrackedRevision, Self::Error>> + '_>;

    /// The parsed document of an offered revision, ready for the update-server store.
    fn parsed(&self, id: RevisionId) -> Result<UpdateRevision, Self::Error>;

    /// Whether the error concerns that one document only: the sync skips the revision with a
    /// 6790 warning and goes on. Every other error fails the sync.
    fn is_per_document(error: &Self::Error) -> bool;

    /// Whether `id` is a custom update (or category) published at this site, not the
    /// upstream's (S6).
    fn is_published(&self, _id: UpdateId) -> bool {
        false
    }
}

impl Offered for DirectoryUpstream {
    type Error = UpstreamError;

    fn offered(&self) -> Box<dyn Iterator<Item = Result<TrackedRevision, UpstreamError>> + '_> {
        Box::new(self.revisions())
    }

    fn parsed(&self, id: RevisionId) -> Result<UpdateRevision, UpstreamError> {
        self.update_revision(id)
    }

    fn is_per_document(error: &UpstreamError) -> bool {
        error.is_per_document()
    }
}

impl Offered for WsusUpstream {
    type Error = WsusUpstreamError;

    fn offered(&self) -> Box<dyn Iterator<Item = Result<TrackedRevision, WsusUpstreamError>> + '_> {
        Box::new(self.revisions())
    }

    fn parsed(&self, id: RevisionId) -> Result<UpdateRevision, WsusUpstreamError> {
        self.update_revision(id)
    }

    fn is_per_document(error: &WsusUpstreamError) -> bool {
        error.is_per_document()
    }
}

/// One revision the upstream offers, with what the sync settings need to decide whether it
/// enters the stores. Kept per revision in the node's database, so listing never re-parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedRevision {
    pub id: RevisionId,
    /// SHA-256 of the document as it was read; [`DirectoryUpstream::document`] checks it.
    pub content_hash: ContentHash,
    /// The file the revision was read from, relative to the catalog directory.
    pub file_name: String,
    pub update_type: UpdateType,
    pub publication_state: PublicationState,
    /// The members of `IsCategory` prerequisite groups: the products and classifications
    /// the update belongs to. Sorted, without duplicates.
    pub categories: Vec<UpdateId>,
    /// The updates a bundle carries, which follow it into the stores. Sorted, without
    /// duplicates.
    pub bundled: Vec<UpdateId>,
    /// Every other prerequisite (detectoids, and the product and classification groups of
    /// bundled children, which real documents do not mark `IsCategory`). Sorted, without
    /// duplicates.
    pub prerequisites: Vec<UpdateId>,
    /// The languages of the localized titles, as the document writes them.
    pub languages: Vec<String>,
    /// Present exactly for category updates: which level of the category tree.
    pub category_type: Option<CategoryType>,
    /// The title in the document's default language, for logs and status messages.
    pub title: String,
}

impl TrackedRevision {
    pub fn of(revision: &UpdateRevision, content_hash: ContentHash, file_name: String) -> Self {
        let mut categories: Vec<UpdateId> = revision.categories().collect();
        sort_unique(&mut categories);
        let mut bundled: Vec<UpdateId> = revision
            .bundled
            .iter()
            .flat_map(|r| r.members().iter().map(|m| m.update_id))
            .collect();
        sort_unique(&mut bundled);
        let mut prerequisites: Vec<UpdateId> = revision
            .prerequisites
            .iter()
            .filter(|r| {
                !matches!(
                    r,
                    Relationship::AtLeastOne {
                        is_category: true,
                        ..
                    }
                )
            })
            .flat_map(|r| r.members().iter().map(|m| m.update_id))
            .collect();
        sort_unique(&mut prerequisites);
        Self {
            id: revision.id,
            content_hash,
            file_name,
            update_type: revision.update_type,
            publication_state: revision.publication_state,
            categories,
            bundled,
            prerequisites,
            languages: revision
                .localized
                .iter()
                .map(|l| l.language.clone())
                .collect(),
            category_type: revision.category_type,
            title: revision.title().to_owned(),
        }
    }
}

fn sort_unique(ids: &mut Vec<UpdateId>) {
    ids.sort_unstable();
    ids.dedup();
}

/// What one scan did. Every file is counted once: as parsed, unchanged, or skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Regular files (or links to them) whose name ends in `.xml`, in any case, well named
    /// or not.
    pub listed: usize,
    /// Files read and parsed because they were new or their content changed.
    pub parsed: usize,
    /// Files already tracked with the same content (same size and modification time, or
    /// the same bytes when those were not conclusive); not parsed.
    pub unchanged: usize,
    /// Tracked revisions whose file is gone: forgotten, so they are no longer offered.
    pub removed: usize,
    /// Files that could not be taken, each with the reason. They are not recorded, so the
    /// next scan tries them again. A file that was tracked before and has now become
    /// unreadable keeps its earlier record (bad input changes nothing, SPEC invariant 5).
    pub skipped: Vec<SkippedDocument>,
    /// Revisions tracked after the scan: what [`DirectoryUpstream::revisions`] lists.
    pub tracked: usize,
}

/// A document a scan could not take, and why, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDocument {
    pub file: PathBuf,
    /// The revision the file name claims, when it names one.
    pub revision: Option<RevisionId>,
    pub reason: String,
}

/// Counts passed to the progress callback of a scan: once when the directory is listed,
/// once when the files to read are known, then after every file read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanProgress {
    pub listed: usize,
    /// Files that must be read (new, changed, or to be checked again); 0 until known.
    pub to_read: usize,
    /// Of `to_read`, how many were read so far.
    pub read: usize,
    pub parsed: usize,
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The whole upstream is unavailable: the sync fails (6703) and is retried.
    #[error(
        "cannot read the catalog directory {path}: {source}; check that it exists, is mounted, and that the node's user may list it"
    )]
    Unreachable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The directory lists no document although revisions were read from it before. A
    /// missing mount or a wrong path looks exactly like this, so it fails the sync rather
    /// than deleting every update downstream.
    #[error(
        "the catalog directory {path} holds no update documents, but {tracked} revisions were read from it before; nothing is deleted, since this is usually a missing mount or a wrong path. If the upstream really offers nothing now, reset the upstream (changing the sync settings does) and sync again"
    )]
    Emptied { path: PathBuf, tracked: usize },

    /// The revision is not tracked: it was never scanned, or it has been forgotten.
    #[error(
        "{id} is not offered by the catalog directory (it was never read, or its file is gone)"
    )]
    NotTracked { id: RevisionId },

    /// The file no longer holds the bytes that were scanned. The next scan reads it again.
    #[error(
        "{file} changed after the catalog directory was scanned ({id} no longer has the content that was read); the next sync reads it again"
    )]
    DocumentChanged { file: PathBuf, id: RevisionId },

    /// The file of a tracked revision cannot be read. The next scan reads it again.
    #[error("cannot read {file} ({id}): {source}; the next sync reads it again")]
    DocumentUnreadable {
        file: PathBuf,
        id: RevisionId,
        #[source]
        source: io::Error,
    },

    /// The bytes match what was scanned but no longer parse under this node's limits (the
    /// limits were lowered since the scan).
    #[error("{file} ({id}) is not accepted: {reason}")]
    DocumentInvalid {
        file: PathBuf,
        id: RevisionId,
        reason: String,
    },

    #[error("the catalog directory's index in the node database: {0}")]
    Backend(#[from] BackendError),

    #[error(
        "the catalog directory's index in the node database is corrupt: {what}; the next sync rebuilds it from the directory"
    )]
    Corrupt { what: String },
}

impl UpstreamError {
    /// Whether the error says the index is damaged: the next scan starts over.
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Corrupt { .. })
    }

    /// Whether the error concerns one document only: the sync skips that revision with a
    /// warning and goes on (issue 3, item 7). Every other error fails the sync.
    pub fn is_per_document(&self) -> bool {
        matches!(
            self,
            Self::NotTracked { .. }
                | Self::DocumentChanged { .. }
                | Self::DocumentUnreadable { .. }
                | Self::DocumentInvalid { .. }
        )
    }
}

/// Whether an upstream's index in the node database was found damaged. Any call that meets
/// a damaged record notes it; the next scan takes it and starts over, which loses nothing:
/// the index only caches what the upstream offers.
#[derive(Debug, Default)]
pub(crate) struct Damage(AtomicBool);

impl Damage {
    /// `outcome`, noting damage when `is_damage` says its error is.
    pub(crate) fn noting<T, E>(
        &self,
        outcome: Result<T, E>,
        is_damage: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        if let Err(error) = &outcome
            && is_damage(error)
        {
            self.0.store(true, Ordering::Relaxed);
        }
        outcome
    }

    /// Whether damage was noted since the last call.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}
