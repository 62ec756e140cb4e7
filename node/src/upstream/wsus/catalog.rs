//! The upstream WSUS (or Microsoft Update) as a catalog: the counterpart of
//! [`DirectoryUpstream`](crate::upstream::DirectoryUpstream) for a server reached through a
//! [`Session`], offering the same three steps to the sync manager's phase 1.
//!
//! Data flow. [`WsusUpstream::scan`] asks for the category list (`GetConfig` true) and then
//! the update list of the subscribed products × classifications, each with its stored anchor
//! unless the scan is full. Of every listed revision it fetches only those the *tracker* (a key
//! space of the node's database) does not hold yet, with GetUpdateData in batches of at most
//! `MaxNumberOfUpdatesPerRequest`, [`IN_FLIGHT`] batches at a time; each document is decoded
//! to UTF-8, parsed, checked against the id it was served under, and stored parsed (the
//! document within), LZ4-compressed, in the tracker's segment files ([`DocumentLog`]), with
//! its [`TrackedRevision`] and where the document is in the node database.
//! [`WsusUpstream::revisions`] then pages through the tracked revisions and
//! [`WsusUpstream::update_revision`] returns a stored revision without parsing it again.
//!
//! Tracker layout (numbers big endian, so records come out in revision order):
//!
//! | key                            | value                                               |
//! |--------------------------------|-----------------------------------------------------|
//! | `R` + update id (16) + rev (4) | [`TrackedRevision`] and its document's [`Location`] |
//! | `S` + update id (16) + rev (4) | why a listed revision was skipped: asked again      |
//! | `Acategories`                  | the category list's anchor                          |
//! | `Aupdates`                     | the update list's anchor and the filter it covers   |
//! | `Mformat`                      | the layout version                                  |
//! | `Mlimits`                      | the parse limits the stored revisions passed        |
//!
//! A document in the segment files is the parsed revision with its UTF-8 document
//! (postcard), LZ4 with its size prepended.
//!
//! Rules:
//! - The tracker only caches the upstream: another layout version or other parse limits
//!   clear it at open, and the next scan fetches everything again.
//! - A batch's documents are appended to the segment files and on stable storage before the
//!   records pointing at them are written, and those are flushed before another batch is
//!   asked for: a node killed mid-scan fetches again only the batches in flight.
//! - After every scan, segments no record points into are deleted, and when dead bytes
//!   outweigh live ones the live documents of mostly dead segments are moved out first.
//! - An update is tracked at one revision, the highest the upstream listed: storing a newer
//!   revision forgets the older ones in the same batch.
//! - A list's anchor is written only after everything that list brought is flushed, so a scan
//!   cut anywhere resumes with the previous anchor and fetches only what it does not hold.
//! - The update list's `Delta` is true for products and classifications the stored anchor
//!   covered and false for newly selected ones, which the server then lists in full.
//! - Only a scan whose two lists were both complete (no anchor) removes what neither names
//!   any more: GetRevisionIdList never reports removals.
//! - Documents the server cannot serve (`InternalServerError` for a batch, split down to the
//!   one revision), cannot decode or parse, or serves under another identity are skipped with
//!   a reason and not tracked. Since the list's anchor moves past them, they are remembered
//!   apart (`S`) and asked for again by every later scan until they are stored, superseded by
//!   a newer revision, or no longer named by a complete scan.

use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sitesync_metadata::{
    ContentHash, ParseLimits, RevisionId, UpdateId, UpdateRevision, parse_update_owned,
};
use sitesync_wsus::{Anchor, IdAndDelta, Limits, RevisionFilter, UpdateData};
use tokio::task::JoinSet;

use super::documents::{DocumentLog, DocumentLogError, DocumentLogOptions, Location};
use super::{Session, WsusError};
use crate::store::keys::successor;
use crate::store::{Backend, BackendError, WriteBatch};
use crate::upstream::{Damage, RevisionPages, ScanProgress, TrackedRevision, TrackedRevisions};

/// The version of the tracker layout.
const FORMAT_VERSION: u32 = 3;

const REVISION: u8 = b'R';
/// The prefix of the documents' records of earlier layouts, deleted when the tracker is
/// cleared.
const DOCUMENT: u8 = b'D';
const SKIPPED: u8 = b'S';
const FORMAT_KEY: &[u8] = b"Mformat";
const LIMITS_KEY: &[u8] = b"Mlimits";
const CATEGORIES_ANCHOR: &[u8] = b"Acategories";
const UPDATES_ANCHOR: &[u8] = b"Aupdates";

/// Records fetched per backend call when walking the tracker.
const SCAN_PAGE: usize = 1024;

/// GetUpdateData batches in flight at once: enough that the network is never idle while a
/// batch is parsed and stored, few enough that the answers held stay small.
pub const IN_FLIGHT: usize = 4;

/// Documents moved at once when reclaiming dead bytes.
const MOVE_BATCH: usize = 256;

/// The two lists a scan asks for, each with an anchor of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `GetConfig` true: categories, classifications and detectoids.
    Categories,
    /// `GetConfig` false: the updates of the subscribed products × classifications.
    Updates,
}

impl ListKind {
    fn anchor_key(self) -> &'static [u8] {
        match self {
            ListKind::Categories => CATEGORIES_ANCHOR,
            ListKind::Updates => UPDATES_ANCHOR,
        }
    }
}

/// A stored anchor and, for the update list, the filter the anchor covers (for `Delta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredAnchor {
    anchor: String,
    products: Vec<UpdateId>,
    classifications: Vec<UpdateId>,
}

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsusScanReport {
    /// Revisions the two lists named (the highest of each update).
    pub listed: usize,
    /// Documents fetched, checked and stored.
    pub fetched: usize,
    /// Listed revisions already tracked: not fetched again.
    pub unchanged: usize,
    /// Revisions skipped by an earlier scan and asked for again (not listed this time).
    pub retried: usize,
    /// Tracked revisions forgotten: by a complete scan because neither list names them, or
    /// because a newer revision of their update was stored.
    pub removed: usize,
    /// Listed revisions that could not be taken, each with the reason (the sync raises 6790
    /// naming them). Not recorded, so the next scan asks for them again.
    pub skipped: Vec<SkippedRevision>,
    /// Whether both lists were complete (asked without an anchor), so removals were applied.
    pub complete: bool,
    /// Revisions tracked after the scan.
    pub tracked: usize,
}

/// Chooses the update list's products and classifications from the tracked categories.
pub type Select<'a> =
    dyn Fn(&[TrackedRevision]) -> Result<(Vec<UpdateId>, Vec<UpdateId>), String> + Send + Sync + 'a;

/// A listed revision a scan could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRevision {
    pub revision: RevisionId,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WsusUpstreamError {
    /// The upstream server could not be used; the text names the server and the operation.
    #[error(transparent)]
    Server(#[from] WsusError),

    /// The revision is not tracked: it was never fetched, or it has been forgotten.
    #[error("{id} is not offered by the upstream server (it was never fetched, or it is gone)")]
    NotTracked { id: RevisionId },

    #[error("the upstream server's index in the node database: {0}")]
    Backend(#[from] BackendError),

    #[error("the upstream server's documents: {0}; the next sync fetches everything again")]
    Documents(#[from] DocumentLogError),

    /// The sync settings choose nothing the upstream offers (a product or classification
    /// name it does not know).
    #[error("{0}")]
    Selection(String),

    #[error(
        "the upstream server's index in the node database is corrupt: {what}; the next sync clears it and fetches everything again"
    )]
    Corrupt { what: String },
}

impl WsusUpstreamError {
    /// Whether the error says the tracker is damaged (a record or a document): the next scan
    /// starts over.
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Documents(_))
    }

    /// Whether the error concerns one document only: the sync skips that revision and goes on.
    pub fn is_per_document(&self) -> bool {
        matches!(self, Self::NotTracked { .. })
    }
}

/// An upstream WSUS as a catalog (see the module documentation).
#[derive(Debug)]
pub struct WsusUpstream {
    /// Shared with the GetUpdateData tasks of a scan.
    session: Arc<Session>,
    /// The key space of the node's database holding what was fetched and the anchors.
    tracker: Box<dyn Backend>,
    /// Applied to every document fetched, so a hostile upstream costs bounded time and memory.
    limits: ParseLimits,
    /// One scan (or reset) at a time.
    writer: tokio::sync::Mutex<()>,
    /// The documents, in segment files.
    documents: DocumentLog,
    /// Noted when a record or document is found corrupt or missing: the next scan clears the
    /// tracker and fetches everything again.
    damage: Damage,
}

/// What one walk over the records found (see [`WsusUpstream::sweep`]).
#[derive(Debug, Default)]
struct Swept {
    removed: usize,
    tracked: usize,
    /// The bytes of the tracked revisions' documents, by segment.
    live: HashMap<u32, u64>,
}

/// What the tracker keeps under `R` for a revision.
#[derive(Debug, Serialize, Deserialize)]
struct RevisionRecord {
    tracked: TrackedRevision,
    /// Where its document is.
    document: Location,
}

impl WsusUpstream {
    /// Opens the upstream, remembering what was fetched in `tracker` with the documents in
    /// segment files in `documents` (a directory of the node's data). Nothing is sent here.
    pub fn open(
        session: Session,
        tracker: Box<dyn Backend>,
        documents: &Path,
        limits: ParseLimits,
    ) -> Result<Self, WsusUpstreamError> {
        Self::open_with(
            session,
            tracker,
            documents,
            DocumentLogOptions::default(),
            limits,
        )
    }

    /// [`WsusUpstream::open`] with the segment files' sizes chosen (tests make them small).
    pub fn open_with(
        session: Session,
        tracker: Box<dyn Backend>,
        documents: &Path,
        options: DocumentLogOptions,
        limits: ParseLimits,
    ) -> Result<Self, WsusUpstreamError> {
        let upstream = Self {
            session: Arc::new(session),
            tracker,
            limits,
            writer: tokio::sync::Mutex::new(()),
            documents: DocumentLog::open(documents, options)?,
            damage: Damage::default(),
        };
        let format = upstream
            .tracker
            .get(FORMAT_KEY)?
            .map(|bytes| {
                <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt("the layout version record"))
            })
            .transpose()?;
        let limits = limits_record(&upstream.limits);
        let checked_under = upstream.tracker.get(LIMITS_KEY)?;
        if format != Some(FORMAT_VERSION) || checked_under.as_ref() != Some(&limits) {
            // Absent (new tracker), another layout, or revisions checked under other limits:
            // it only caches the upstream, so starting over costs one full fetch and loses
            // nothing.
            upstream.clear()?;
            let mut batch = WriteBatch::default();
            batch.put(FORMAT_KEY.to_vec(), FORMAT_VERSION.to_be_bytes().to_vec());
            batch.put(LIMITS_KEY.to_vec(), limits);
            upstream.tracker.apply(batch)?;
            upstream.tracker.flush()?;
        }
        Ok(upstream)
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Brings the tracker up to date with the upstream (see the module documentation) and
    /// returns once it is durable. `full` asks both lists without anchors and removes what
    /// neither names. `progress` is called when the revisions to fetch of each list are known
    /// and after every batch stored. The update list asks for `products` × `classifications`
    /// (both empty: every update).
    ///
    /// Fails when the server cannot be used (the session's error) or the node database fails.
    /// Problems with single documents are in the report.
    pub async fn scan(
        &self,
        full: bool,
        products: &[UpdateId],
        classifications: &[UpdateId],
        progress: &mut (dyn FnMut(ScanProgress) + Send),
    ) -> Result<WsusScanReport, WsusUpstreamError> {
        let fixed = |_: &[TrackedRevision]| Ok((products.to_vec(), classifications.to_vec()));
        self.scan_selecting(full, &fixed, progress).await
    }

    /// [`WsusUpstream::scan`], with the update list's products and classifications chosen by
    /// `select` from the tracked categories once the category list is stored, so a selection
    /// by name works on a first scan. `select` fails with a reason an operator can act on.
    pub async fn scan_selecting(
        &self,
        full: bool,
        select: &Select<'_>,
        progress: &mut (dyn FnMut(ScanProgress) + Send),
    ) -> Result<WsusScanReport, WsusUpstreamError> {
        let _writer = self.writer.lock().await;
        let mut full = full;
        if self.damage.take() {
            tracing::warn!(
                "the upstream server's index was found damaged; it is cleared and everything is fetched again"
            );
            self.clear()?;
            full = true;
        }
        let outcome = self.scan_once(full, select, progress).await;
        match self.noting_damage(outcome) {
            Err(WsusUpstreamError::Server(WsusError::ServerChanged { server, operation })) => {
                tracing::warn!(
                    %server, %operation,
                    "the upstream server reports that it has changed; its anchors are dropped and it is scanned in full"
                );
                self.drop_anchor(ListKind::Categories)?;
                self.drop_anchor(ListKind::Updates)?;
                self.tracker.flush()?;
                let outcome = self.scan_once(true, select, progress).await;
                self.noting_damage(outcome)
            }
            outcome => outcome,
        }
    }

    fn noting_damage<T>(
        &self,
        outcome: Result<T, WsusUpstreamError>,
    ) -> Result<T, WsusUpstreamError> {
        self.damage.noting(outcome, WsusUpstreamError::is_damage)
    }

    async fn scan_once(
        &self,
        full: bool,
        select: &Select<'_>,
        progress: &mut (dyn FnMut(ScanProgress) + Send),
    ) -> Result<WsusScanReport, WsusUpstreamError> {
        let mut report = WsusScanReport::default();
        let mut counts = ScanProgress::default();
        let config = self.session.config(None).await?;
        let batch_size = usize::try_from(config.max_updates_per_request.max(1)).unwrap_or(1);

        let mut named = HashSet::new();
        let categories_complete = self
            .scan_list(
                ListKind::Categories,
                full,
                &[],
                &[],
                batch_size,
                &mut named,
                &mut report,
                &mut counts,
                progress,
            )
            .await?;
        let (products, classifications) =
            select(&self.tracked_categories()?).map_err(WsusUpstreamError::Selection)?;
        let updates_complete = self
            .scan_list(
                ListKind::Updates,
                full,
                &products,
                &classifications,
                batch_size,
                &mut named,
                &mut report,
                &mut counts,
                progress,
            )
            .await?;

        report.complete = categories_complete && updates_complete;
        let retry = self.skipped_to_retry(&named, report.complete)?;
        if !retry.is_empty() {
            report.retried = retry.len();
            counts.to_read += retry.len();
            progress(counts);
            self.fetch_all(retry, batch_size, &mut report, &mut counts, progress)
                .await?;
        }
        let swept = self.sweep(report.complete.then_some(&named))?;
        report.removed += swept.removed;
        report.tracked = swept.tracked;
        self.tracker.flush()?;
        self.reclaim(&swept.live)?;
        report.skipped.sort_by_key(|s| s.revision);
        Ok(report)
    }

    /// The tracked revisions of the category list that are categories (products,
    /// classifications and the levels above them; not detectoids).
    fn tracked_categories(&self) -> Result<Vec<TrackedRevision>, WsusUpstreamError> {
        let mut categories = Vec::new();
        for revision in self.revisions() {
            let revision = revision?;
            if revision.category_type.is_some() {
                categories.push(revision);
            }
        }
        Ok(categories)
    }

    /// One list: asked (with its anchor unless `full`; once more without it if the server
    /// refuses it), its new revisions fetched and stored, then its anchor. Returns whether the
    /// list was complete (asked without an anchor). The revisions it names go into `named`.
    #[allow(clippy::too_many_arguments)]
    async fn scan_list(
        &self,
        kind: ListKind,
        full: bool,
        products: &[UpdateId],
        classifications: &[UpdateId],
        batch_size: usize,
        named: &mut HashSet<RevisionId>,
        report: &mut WsusScanReport,
        counts: &mut ScanProgress,
        progress: &mut (dyn FnMut(ScanProgress) + Send),
    ) -> Result<bool, WsusUpstreamError> {
        let clock = std::time::Instant::now();
        let stored = if full { None } else { self.anchor(kind)? };
        let filter = filter(kind, stored.as_ref(), products, classifications);
        let (list, complete) = match self.session.revision_list(&filter).await {
            Ok(list) => (list, stored.is_none()),
            Err(WsusError::InvalidParameters { message, .. })
                if stored.is_some() && (message.is_empty() || message == "filter") =>
            {
                tracing::warn!(
                    list = ?kind,
                    "the upstream server refuses the stored anchor; it is dropped and the list is asked in full"
                );
                self.drop_anchor(kind)?;
                self.tracker.flush()?;
                let filter = filter_without_anchor(kind, products, classifications);
                (self.session.revision_list(&filter).await?, true)
            }
            Err(e) => return Err(e.into()),
        };

        let latest = list.latest_revisions();
        let mut to_fetch = Vec::new();
        for id in latest {
            if !named.insert(id) {
                continue;
            }
            report.listed += 1;
            if self.tracker.get(&key(REVISION, id))?.is_some() {
                report.unchanged += 1;
            } else {
                to_fetch.push(id);
            }
        }
        counts.listed = report.listed;
        counts.to_read += to_fetch.len();
        progress(*counts);
        let fetching = to_fetch.len();
        tracing::info!(
            list = ?kind,
            listed = report.listed,
            to_fetch = fetching,
            elapsed = ?clock.elapsed(),
            "upstream list received"
        );

        self.fetch_all(to_fetch, batch_size, report, counts, progress)
            .await?;
        tracing::info!(list = ?kind, fetched = fetching, elapsed = ?clock.elapsed(), "upstream list fetched");
        // Everything the list brought is durable: only now may its anchor move.
        self.tracker.flush()?;
        let record = StoredAnchor {
            anchor: list.anchor.into_string(),
            products: sorted(products),
            classifications: sorted(classifications),
        };
        let mut batch = WriteBatch::default();
        batch.put(kind.anchor_key().to_vec(), encode(&record));
        self.tracker.apply(batch)?;
        self.tracker.flush()?;
        Ok(complete)
    }

    /// Fetches `ids` in batches, [`IN_FLIGHT`] at a time, storing each batch as it arrives.
    async fn fetch_all(
        &self,
        ids: Vec<RevisionId>,
        batch_size: usize,
        report: &mut WsusScanReport,
        counts: &mut ScanProgress,
        progress: &mut (dyn FnMut(ScanProgress) + Send),
    ) -> Result<(), WsusUpstreamError> {
        let mut batches = ids
            .chunks(batch_size)
            .map(<[RevisionId]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter();
        // Dropped with the scan's future, which aborts the batches still in flight.
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.len() < IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                let session = self.session.clone();
                let limits = self.limits;
                in_flight.spawn(async move {
                    let asked = batch.len();
                    let fetched = fetch_isolating(&session, batch).await?;
                    // Decoding and parsing are CPU work: off the runtime's threads, and in
                    // parallel with the other batches' transfers.
                    let checked = tokio::task::spawn_blocking(move || check(fetched, &limits))
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    Ok::<_, WsusError>((asked, checked))
                });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let (asked, checked) =
                joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            self.store(checked, report)?;
            // Durable before the next batch is asked for: a node killed now fetches again only
            // the batches in flight.
            self.tracker.flush()?;
            counts.read += asked;
            counts.parsed = report.fetched;
            counts.skipped = report.skipped.len();
            progress(*counts);
        }
        Ok(())
    }

    /// Stores one batch's checked documents and remembers its skipped revisions; applied (not
    /// yet flushed) on return.
    fn store(
        &self,
        checked: Checked,
        report: &mut WsusScanReport,
    ) -> Result<(), WsusUpstreamError> {
        let (documents, compressed): (Vec<_>, Vec<_>) = checked
            .documents
            .into_iter()
            .map(|document| ((document.id, document.tracked), document.compressed))
            .unzip();
        // Durable before any record points at them.
        let locations = self.documents.append(&compressed)?;
        let mut batch = WriteBatch::default();
        for ((id, tracked), document) in documents.into_iter().zip(locations) {
            report.removed += self.forget_older(id, &mut batch)?;
            batch.put(
                key(REVISION, id),
                encode(&RevisionRecord { tracked, document }),
            );
            batch.delete(key(SKIPPED, id));
            report.fetched += 1;
        }
        for skipped in checked.skipped {
            batch.put(key(SKIPPED, skipped.revision), encode(&skipped.reason));
            report.skipped.push(skipped);
        }
        if !batch.is_empty() {
            self.tracker.apply(batch)?;
        }
        Ok(())
    }

    /// Every tracked revision in (update id, revision) order, a page at a time.
    pub fn revisions(&self) -> TrackedRevisions<'_, Self> {
        TrackedRevisions::new(self)
    }

    /// Tracked revisions after `after` (`None` for the start), in order, at most `limit`.
    pub fn revisions_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<TrackedRevision>, WsusUpstreamError> {
        Ok(tracked_of(self.records_after(after, limit)?))
    }

    fn records_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, WsusUpstreamError> {
        let from = match after {
            Some(id) => successor(key(REVISION, id)),
            None => vec![REVISION],
        };
        self.collect_records(&[REVISION], from, limit)
    }

    /// Calls `each` with every tracked revision's record, `page` at a time, in order.
    fn for_each_page(
        &self,
        page: usize,
        mut each: impl FnMut(Vec<RevisionRecord>) -> Result<(), WsusUpstreamError>,
    ) -> Result<(), WsusUpstreamError> {
        let mut after = None;
        loop {
            let records = self.records_after(after, page)?;
            let full = records.len() == page;
            after = records.last().map(|last| last.tracked.id);
            each(records)?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Every tracked revision of one update (one, unless a scan is storing a newer one).
    pub fn revisions_of(
        &self,
        update: UpdateId,
    ) -> Result<Vec<TrackedRevision>, WsusUpstreamError> {
        Ok(tracked_of(self.records_of(update)?))
    }

    /// One tracked revision.
    pub fn revision(&self, id: RevisionId) -> Result<Option<TrackedRevision>, WsusUpstreamError> {
        Ok(self.record(id)?.map(|record| record.tracked))
    }

    fn record(&self, id: RevisionId) -> Result<Option<RevisionRecord>, WsusUpstreamError> {
        self.tracker
            .get(&key(REVISION, id))?
            .map(|bytes| decode(&bytes, "a revision record"))
            .transpose()
    }

    fn records_of(&self, update: UpdateId) -> Result<Vec<RevisionRecord>, WsusUpstreamError> {
        let mut prefix = vec![REVISION];
        prefix.extend_from_slice(update.as_bytes());
        self.collect_records(&prefix, prefix.clone(), usize::MAX)
    }

    /// The stored document of a tracked revision, UTF-8, as the server sent it once decoded.
    pub fn document(&self, id: RevisionId) -> Result<Vec<u8>, WsusUpstreamError> {
        Ok(self.update_revision(id)?.document)
    }

    /// A tracked revision as it was parsed when fetched (under this node's limits, which the
    /// tracker records), ready for the update-server store: it is not parsed again.
    pub fn update_revision(&self, id: RevisionId) -> Result<UpdateRevision, WsusUpstreamError> {
        let read = || {
            let record = self
                .record(id)?
                .ok_or(WsusUpstreamError::NotTracked { id })?;
            let stored = self.documents.read(record.document)?;
            let encoded = lz4_flex::decompress_size_prepended(&stored).map_err(|e| {
                corrupt(format!("the stored revision {id} does not decompress: {e}"))
            })?;
            decode(&encoded, "a stored revision")
        };
        self.noting_damage(read())
    }

    /// Forgets everything fetched and both anchors, so the next scan fetches everything again.
    /// Durable before returning.
    pub async fn reset(&self) -> Result<(), WsusUpstreamError> {
        let _writer = self.writer.lock().await;
        self.clear()?;
        self.tracker.flush()?;
        Ok(())
    }

    fn anchor(&self, kind: ListKind) -> Result<Option<StoredAnchor>, WsusUpstreamError> {
        self.tracker
            .get(kind.anchor_key())?
            .map(|bytes| decode(&bytes, "an anchor record"))
            .transpose()
    }

    fn drop_anchor(&self, kind: ListKind) -> Result<(), WsusUpstreamError> {
        let mut batch = WriteBatch::default();
        batch.delete(kind.anchor_key().to_vec());
        self.tracker.apply(batch)?;
        Ok(())
    }

    /// The revisions skipped by earlier scans that this scan's lists did not bring again and
    /// are still worth asking for. A complete scan forgets those no list names any more, and
    /// any scan those a newer tracked revision supersedes.
    fn skipped_to_retry(
        &self,
        named: &HashSet<RevisionId>,
        complete: bool,
    ) -> Result<Vec<RevisionId>, WsusUpstreamError> {
        let mut retry = Vec::new();
        let mut forget = WriteBatch::default();
        let mut from = vec![SKIPPED];
        loop {
            let page = self.tracker.scan(&[SKIPPED], &from, SCAN_PAGE, &|_| true)?;
            for (key, _) in page.entries {
                let id = parse_key(&key).ok_or_else(|| corrupt("a skipped revision's key"))?;
                let superseded = self
                    .revisions_of(id.update_id)?
                    .iter()
                    .any(|tracked| tracked.id.revision >= id.revision);
                if superseded || (complete && !named.contains(&id)) {
                    forget.delete(key);
                } else if !named.contains(&id) {
                    retry.push(id);
                }
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => break,
            }
        }
        if !forget.is_empty() {
            self.tracker.apply(forget)?;
        }
        Ok(retry)
    }

    /// Deletes the other tracked revisions of `id`'s update, returning how many. Their
    /// documents become dead bytes, reclaimed after the scan.
    fn forget_older(
        &self,
        id: RevisionId,
        batch: &mut WriteBatch,
    ) -> Result<usize, WsusUpstreamError> {
        let mut forgotten = 0;
        for record in self.records_of(id.update_id)? {
            if record.tracked.id != id {
                batch.delete(key(REVISION, record.tracked.id));
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// One walk over every record: with `named` (a complete scan), deletes the revisions not
    /// in it; counts the others and their documents' bytes in each segment.
    fn sweep(&self, named: Option<&HashSet<RevisionId>>) -> Result<Swept, WsusUpstreamError> {
        let mut swept = Swept::default();
        self.for_each_page(SCAN_PAGE, |records| {
            let mut batch = WriteBatch::default();
            for record in records {
                if named.is_some_and(|named| !named.contains(&record.tracked.id)) {
                    batch.delete(key(REVISION, record.tracked.id));
                    swept.removed += 1;
                } else {
                    swept.tracked += 1;
                    *swept.live.entry(record.document.segment).or_insert(0) +=
                        u64::from(record.document.length);
                }
            }
            if !batch.is_empty() {
                self.tracker.apply(batch)?;
            }
            Ok(())
        })?;
        Ok(swept)
    }

    fn clear(&self) -> Result<(), WsusUpstreamError> {
        for prefix in [REVISION, DOCUMENT, SKIPPED, b'A'] {
            let mut from = vec![prefix];
            loop {
                let page = self.tracker.scan(&[prefix], &from, SCAN_PAGE, &|_| true)?;
                let mut batch = WriteBatch::default();
                for (key, _) in page.entries {
                    batch.delete(key);
                }
                if !batch.is_empty() {
                    self.tracker.apply(batch)?;
                }
                match page.resume_after {
                    Some(last) => from = successor(last),
                    None => break,
                }
            }
        }
        // No record points at a document any more once this is durable.
        self.tracker.flush()?;
        self.documents.clear()?;
        Ok(())
    }

    /// Deletes the segments no record points into (`live`: the bytes records point at, by
    /// segment, durable), and moves the live documents out of mostly dead segments first when
    /// dead bytes outweigh live ones (and the options' bound).
    fn reclaim(&self, live: &HashMap<u32, u64>) -> Result<(), WsusUpstreamError> {
        let current = self.documents.current();
        let segments = self.documents.segments()?;
        let total: u64 = segments.iter().map(|(_, size)| size).sum();
        let live_total: u64 = live.values().sum();
        let dead = total.saturating_sub(live_total);
        let sparse: HashSet<u32> =
            if dead > live_total && dead > self.documents.options().reclaim_above {
                segments
                    .iter()
                    .filter(|&&(segment, size)| {
                        segment != current && live.get(&segment).copied().unwrap_or(0) * 2 < size
                    })
                    .map(|&(segment, _)| segment)
                    .collect()
            } else {
                HashSet::new()
            };
        if !sparse.is_empty() {
            let moved = self.move_documents_out_of(&sparse)?;
            tracing::info!(
                segments = sparse.len(),
                documents = moved,
                "moved the upstream server's live documents out of mostly dead segment files"
            );
        }
        for (segment, _) in segments {
            let unreferenced = !live.contains_key(&segment) || sparse.contains(&segment);
            if segment != current && unreferenced {
                self.documents.remove(segment)?;
            }
        }
        Ok(())
    }

    /// Appends again the documents stored in `segments`, repointing their records, durable
    /// on return. Returns how many were moved.
    fn move_documents_out_of(&self, segments: &HashSet<u32>) -> Result<usize, WsusUpstreamError> {
        let mut moved = 0;
        self.for_each_page(MOVE_BATCH, |records| {
            let records: Vec<RevisionRecord> = records
                .into_iter()
                .filter(|record| segments.contains(&record.document.segment))
                .collect();
            if records.is_empty() {
                return Ok(());
            }
            let documents = records
                .iter()
                .map(|record| self.documents.read(record.document))
                .collect::<Result<Vec<_>, _>>()?;
            let locations = self.documents.append(&documents)?;
            let mut batch = WriteBatch::default();
            for (record, document) in records.into_iter().zip(locations) {
                let id = record.tracked.id;
                let moved_record = RevisionRecord {
                    tracked: record.tracked,
                    document,
                };
                batch.put(key(REVISION, id), encode(&moved_record));
            }
            self.tracker.apply(batch)?;
            moved += documents.len();
            Ok(())
        })?;
        // The old copies are deleted only once nothing points at them.
        self.tracker.flush()?;
        Ok(moved)
    }

    fn collect_records(
        &self,
        prefix: &[u8],
        mut from: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, WsusUpstreamError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let page =
                self.tracker
                    .scan(prefix, &from, (limit - out.len()).min(SCAN_PAGE), &|_| true)?;
            for (_, value) in page.entries {
                out.push(decode(&value, "a revision record")?);
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => break,
            }
        }
        Ok(out)
    }
}

/// What one GetUpdateData batch brought once split around the revisions the server fails on.
#[derive(Debug)]
struct Fetched {
    /// The revisions asked for, less those the server failed on.
    served: Vec<RevisionId>,
    updates: Vec<UpdateData>,
    failed: Vec<SkippedRevision>,
}

/// A batch's documents ready to store, and the revisions it could not take.
#[derive(Debug)]
struct Checked {
    documents: Vec<CheckedDocument>,
    skipped: Vec<SkippedRevision>,
}

#[derive(Debug)]
struct CheckedDocument {
    id: RevisionId,
    tracked: TrackedRevision,
    /// The encoded [`UpdateRevision`] with its UTF-8 document, LZ4 with its size prepended.
    compressed: Vec<u8>,
}

/// Decodes, parses and checks each item of a batch against the revision it was asked for.
fn check(fetched: Fetched, limits: &ParseLimits) -> Checked {
    let decode_limits = Limits {
        max_document_bytes: limits.max_document_bytes,
        ..Limits::default()
    };
    let mut checked = Checked {
        documents: Vec::new(),
        skipped: fetched.failed,
    };
    let mut pending: HashSet<RevisionId> = fetched.served.into_iter().collect();
    for update in fetched.updates {
        // An item not asked for, or the same revision twice, is not trusted or needed.
        if !pending.remove(&update.id) {
            continue;
        }
        let id = update.id;
        let mut skip = |reason: String| {
            checked.skipped.push(SkippedRevision {
                revision: id,
                reason,
            })
        };
        let document = match update.blob.decode(&decode_limits) {
            Ok(document) => document,
            Err(e) => {
                skip(format!("its update blob cannot be decoded: {e}"));
                continue;
            }
        };
        let content_hash = ContentHash::of(&document);
        let revision = match parse_update_owned(document, limits) {
            Ok(revision) => revision,
            Err(e) => {
                skip(format!("its document is not accepted: {e}"));
                continue;
            }
        };
        if revision.id != id {
            skip(format!(
                "the server sent it with the document of {}, another revision",
                revision.id
            ));
            continue;
        }
        let tracked = TrackedRevision::of(&revision, content_hash, file_name(id));
        checked.documents.push(CheckedDocument {
            id,
            tracked,
            compressed: lz4_flex::compress_prepend_size(&encode(&revision)),
        });
    }
    let mut left_out: Vec<RevisionId> = pending.into_iter().collect();
    left_out.sort_unstable();
    for id in left_out {
        checked.skipped.push(SkippedRevision {
            revision: id,
            reason: "the server's answer to GetUpdateData left it out".into(),
        });
    }
    checked
}

/// GetUpdateData for `ids`; on `InternalServerError` the batch is split in halves until the
/// revisions the server cannot serve are isolated, each reported with the server's error.
async fn fetch_isolating(session: &Session, ids: Vec<RevisionId>) -> Result<Fetched, WsusError> {
    let mut fetched = Fetched {
        served: Vec::with_capacity(ids.len()),
        updates: Vec::new(),
        failed: Vec::new(),
    };
    let mut work = vec![ids];
    while let Some(ids) = work.pop() {
        match session.update_data(&ids).await {
            Ok(batch) => {
                fetched.served.extend_from_slice(&ids);
                fetched.updates.extend(batch.updates);
            }
            Err(e @ WsusError::InternalServerError { .. }) if ids.len() == 1 => {
                fetched.failed.push(SkippedRevision {
                    revision: ids[0],
                    reason: e.to_string(),
                });
            }
            Err(WsusError::InternalServerError { .. }) => {
                let (left, right) = ids.split_at(ids.len() / 2);
                work.push(right.to_vec());
                work.push(left.to_vec());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(fetched)
}

fn filter(
    kind: ListKind,
    stored: Option<&StoredAnchor>,
    products: &[UpdateId],
    classifications: &[UpdateId],
) -> RevisionFilter {
    let Some(stored) = stored else {
        return filter_without_anchor(kind, products, classifications);
    };
    let anchor = Some(Anchor::new(stored.anchor.clone()));
    match kind {
        ListKind::Categories => RevisionFilter::categories(anchor),
        ListKind::Updates => {
            // Delta for what the anchor covered; the newly selected are listed in full.
            let with_delta = |ids: &[UpdateId], covered: &[UpdateId]| {
                ids.iter()
                    .map(|&id| IdAndDelta {
                        id,
                        delta: covered.binary_search(&id).is_ok(),
                    })
                    .collect::<Vec<_>>()
            };
            RevisionFilter::updates(
                anchor,
                with_delta(products, &stored.products),
                with_delta(classifications, &stored.classifications),
            )
        }
    }
}

fn filter_without_anchor(
    kind: ListKind,
    products: &[UpdateId],
    classifications: &[UpdateId],
) -> RevisionFilter {
    let all = |ids: &[UpdateId]| {
        ids.iter()
            .map(|&id| IdAndDelta { id, delta: false })
            .collect::<Vec<_>>()
    };
    match kind {
        ListKind::Categories => RevisionFilter::categories(None),
        ListKind::Updates => RevisionFilter::updates(None, all(products), all(classifications)),
    }
}

fn sorted(ids: &[UpdateId]) -> Vec<UpdateId> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The name a revision goes by in logs, as a catalog directory would name its file.
fn file_name(id: RevisionId) -> String {
    format!("{}-r{}.xml", id.update_id, id.revision)
}

/// The parse limits as the tracker records them: each bound as a big-endian `u64`.
fn limits_record(limits: &ParseLimits) -> Vec<u8> {
    let ParseLimits {
        max_document_bytes,
        max_depth,
        max_elements,
        max_attributes_per_element,
        max_text_bytes,
    } = *limits;
    [
        max_document_bytes,
        max_depth,
        max_elements,
        max_attributes_per_element,
        max_text_bytes,
    ]
    .into_iter()
    .flat_map(|bound| (bound as u64).to_be_bytes())
    .collect()
}

fn tracked_of(records: Vec<RevisionRecord>) -> Vec<TrackedRevision> {
    records.into_iter().map(|record| record.tracked).collect()
}

fn key(kind: u8, id: RevisionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.push(kind);
    key.extend_from_slice(id.update_id.as_bytes());
    key.extend_from_slice(&id.revision.to_be_bytes());
    key
}

fn parse_key(key: &[u8]) -> Option<RevisionId> {
    if key.len() != 21 {
        return None;
    }
    Some(RevisionId {
        update_id: UpdateId::from_bytes(key.get(1..17)?.try_into().ok()?),
        revision: u32::from_be_bytes(key.get(17..21)?.try_into().ok()?),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard serializes plain structs into a Vec")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, WsusUpstreamError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("{what} does not decode: {e}")))
}

fn corrupt(what: impl Into<String>) -> WsusUpstreamError {
    WsusUpstreamError::Corrupt { what: what.into() }
}

impl RevisionPages for WsusUpstream {
    type Error = WsusUpstreamError;

    fn revisions_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<TrackedRevision>, WsusUpstreamError> {
        WsusUpstream::revisions_after(self, after, limit)
    }
}
