//! A catalog store: every revision it holds, the latest revision of each update, a
//! category index, a change log and the catalog digest, kept consistent by applying each
//! set of changes as one atomic batch and flushing before answering.
//!
//! Both of a node's stores (the update-server store and the site database) are catalog
//! stores; they differ in who writes to them, not in how they keep data.

use super::keys::successor;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sitesync_metadata::{
    CatalogDigest, CategoryType, ContentHash, MsrcSeverity, ParseLimits, PublicationState,
    RevisionId, UpdateId, UpdateRevision, UpdateType, parse_update,
};

use super::backend::{Backend, WriteBatch};
use super::category_index::{self, CategoryChanges};
use super::error::{StoreError, corrupt};
use super::keys::{self, DocumentLocation, FORMAT_VERSION};

/// Earlier layouts whose data this layout still reads as it is, so such a store is taken
/// over and marked with [`FORMAT_VERSION`], after which an older release refuses it rather
/// than misreading what this one writes:
/// - 3 kept documents uncompressed (see [`stored_document_form`]);
/// - 4 kept the category index one entry per key (see [`category_index`]).
const UPGRADABLE_FORMATS: [u32; 2] = [3, 4];

/// Rows fetched per backend call when a read walks a range.
const SCAN_PAGE: usize = 1024;

/// What one change-log record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The first revision of an update this store did not hold.
    New,
    /// Another revision of an update the store holds (or new bytes for a revision it holds).
    Changed,
    /// A revision whose publication state is Expired.
    Expired,
    /// The update is no longer offered upstream; every revision of it was removed.
    Deleted,
}

/// One change-log record: what changed, at which sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedChange {
    pub sequence: u64,
    pub kind: ChangeKind,
    /// For `Deleted`, the revision that was latest when the update was removed.
    pub revision: RevisionId,
}

/// The change-log records of one applied batch, stored under one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LogChunk {
    first_sequence: u64,
    /// The records, at `first_sequence`, `first_sequence + 1`, ...
    changes: Vec<(ChangeKind, RevisionId)>,
}

impl LogChunk {
    fn records(self) -> impl Iterator<Item = LoggedChange> {
        let first = self.first_sequence;
        self.changes
            .into_iter()
            .zip(first..)
            .map(|((kind, revision), sequence)| LoggedChange {
                sequence,
                kind,
                revision,
            })
    }
}

/// A change offered to a store.
// Nearly every change in a batch is a put, so boxing the revision would add an allocation
// per change to save space only on the rare deletions.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum CatalogChange {
    /// Hold this revision. Putting a revision the store already holds with the same bytes
    /// changes nothing, which makes re-applying a batch after a crash harmless.
    Put(UpdateRevision),
    /// The same as `Put`, for a revision whose document was parsed before: its summary and
    /// content hash come with it instead of from parsing the document again.
    PutSummarized(SummarizedRevision),
    /// Remove the update and all its revisions.
    Delete(UpdateId),
}

/// What a put needs of a parsed revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummarizedRevision {
    /// The revision's own summary (its `id` is the revision's).
    pub summary: UpdateSummary,
    pub content: ContentHash,
    /// The original document, byte for byte; `None` when another store on the same
    /// documents space holds it with the same hash (a revision replicated by reference).
    /// Such a put fails with [`StoreError::DocumentNotShared`] if none does, and the whole
    /// apply with it.
    pub document: Option<Vec<u8>>,
    /// `document` LZ4-compressed in the size-prepended form, when it arrived so and was
    /// checked to decompress to exactly `document`: kept as it is instead of compressing
    /// the document again.
    pub compressed: Option<Vec<u8>>,
}

impl From<UpdateRevision> for SummarizedRevision {
    fn from(revision: UpdateRevision) -> Self {
        Self {
            summary: UpdateSummary::of(&revision),
            content: revision.content_hash(),
            document: Some(revision.document),
            compressed: None,
        }
    }
}

/// The store's counters, persisted with every batch that changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    pub format: u32,
    /// The identity of this store's change log, fixed when the store is created. A reader's
    /// anchor on another log (the store was recreated and its numbers restarted) is refused
    /// rather than misread.
    pub log_id: [u8; 16],
    /// The sequence number of the newest change-log record (0 when the log is empty).
    pub last_sequence: u64,
    /// The oldest sequence number still in the log; older records were compacted away.
    pub first_retained_sequence: u64,
    pub digest: CatalogDigest,
    pub revisions: u64,
    pub updates: u64,
}

impl StoreState {
    fn empty() -> Self {
        Self {
            format: FORMAT_VERSION,
            log_id: *uuid::Uuid::new_v4().as_bytes(),
            last_sequence: 0,
            first_retained_sequence: 1,
            digest: CatalogDigest::EMPTY,
            revisions: 0,
            updates: 0,
        }
    }
}

/// What people list and filter by, kept for the latest revision of each update so listing
/// does not re-parse documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSummary {
    pub id: RevisionId,
    pub update_type: UpdateType,
    pub publication_state: PublicationState,
    pub title: String,
    pub kb_article: Option<String>,
    pub msrc_severity: Option<MsrcSeverity>,
    pub category_type: Option<CategoryType>,
    pub categories: Vec<UpdateId>,
    pub superseded: Vec<UpdateId>,
}

impl UpdateSummary {
    pub fn of(revision: &UpdateRevision) -> Self {
        let mut categories: Vec<UpdateId> = revision.categories().collect();
        categories.sort();
        categories.dedup();
        Self {
            id: revision.id,
            update_type: revision.update_type,
            publication_state: revision.publication_state,
            title: revision.title().to_owned(),
            kb_article: revision.kb_article.clone(),
            msrc_severity: revision.msrc_severity,
            category_type: revision.category_type,
            categories,
            superseded: revision.superseded.iter().map(|r| r.update_id).collect(),
        }
    }
}

/// An update a store holds, with every revision and its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUpdate {
    pub update_id: UpdateId,
    /// Ascending by revision number.
    pub revisions: Vec<(u32, ContentHash)>,
}

/// The result of applying a set of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
    /// Changes that were already held (same revision, same bytes) or deletions of unknown
    /// updates.
    pub unchanged: u64,
    /// The newest sequence number after the apply: everything up to it is durable.
    pub last_sequence: u64,
    pub digest: CatalogDigest,
}

impl ApplyOutcome {
    pub fn logged(&self) -> u64 {
        self.new + self.changed + self.expired + self.deleted
    }
}

/// What [`CatalogStore::verify`] found by reading the whole store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub recorded: StoreState,
    /// The digest recomputed from every stored document's bytes.
    pub recomputed_digest: CatalogDigest,
    pub revisions: u64,
    pub updates: u64,
    /// Every retained log sequence number, in order, had no gaps and ended at
    /// `recorded.last_sequence`.
    pub log_contiguous: bool,
    /// Documents no update record references: harmless leftovers of an interrupted apply.
    pub unreferenced_documents: u64,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the store keeps per update, next to its revisions: the latest revision's summary,
/// every revision held with its content hash and document key (so a put needs one read,
/// and a delete none of the documents), and where the update sits in the category index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UpdateRecord {
    summary: UpdateSummary,
    /// Every revision held, ascending by revision number.
    revisions: Vec<HeldRevision>,
    /// The category-index position of this update's entries (see [`keys`]).
    category_position: u64,
}

/// One revision an update record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct HeldRevision {
    revision: u32,
    content: ContentHash,
    /// Where the document is: with the revision id, its key (see [`keys::document`]). It
    /// may be the other store's copy.
    document: DocumentLocation,
}

impl HeldRevision {
    fn document_key(&self, update: UpdateId) -> Vec<u8> {
        keys::document(
            self.document,
            RevisionId {
                update_id: update,
                revision: self.revision,
            },
        )
    }
}

/// Whether the update record in `index` holds revision `id` with its document at `location`.
fn references(
    index: &dyn Backend,
    location: DocumentLocation,
    id: RevisionId,
) -> Result<bool, StoreError> {
    Ok(record_in(index, id.update_id)?
        .and_then(|record| record.held(id.revision))
        .is_some_and(|held| held.document == location))
}

fn record_in(index: &dyn Backend, update: UpdateId) -> Result<Option<UpdateRecord>, StoreError> {
    index
        .get(&keys::record(update))?
        .map(|bytes| decode(&bytes, "update record"))
        .transpose()
}

/// The documents space a node's stores share, so that a revision both hold with the same
/// bytes is stored once: the site database takes what the update-server store synced
/// (phase 2 of a sync, and a child's replication after its update server pulled) without
/// writing hundreds of megabytes a second time.
///
/// A store that puts a revision another store holds with the same content hash records the
/// other store's document location instead of writing its own copy. A document is removed
/// only once no store's index references it. Every apply holds the space's writer lock
/// from its first read to its last write, so a store taking another's copy and a store
/// removing that copy never interleave; readers take no lock.
#[derive(Debug)]
pub struct DocumentSpace {
    documents: Box<dyn Backend>,
    writers: Mutex<()>,
    /// Every store on the space: its tag and its index.
    stores: RwLock<Vec<(u8, Arc<dyn Backend>)>>,
}

impl DocumentSpace {
    pub fn new(documents: Box<dyn Backend>) -> Arc<Self> {
        Arc::new(Self {
            documents,
            writers: Mutex::new(()),
            stores: RwLock::new(Vec::new()),
        })
    }

    /// The stores on the space; written only when a store opens, so reads never wait.
    fn stores(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u8, Arc<dyn Backend>)>> {
        self.stores.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writers(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any store's index references the document at `location` for `id`.
    fn referenced(&self, location: DocumentLocation, id: RevisionId) -> Result<bool, StoreError> {
        for (_, index) in self.stores().iter() {
            if references(&**index, location, id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Where another store than `tag` keeps the document of `id` whose hash is `content`.
    fn copy_elsewhere(
        &self,
        tag: u8,
        id: RevisionId,
        content: ContentHash,
    ) -> Result<Option<DocumentLocation>, StoreError> {
        for (other, index) in self.stores().iter() {
            if *other == tag {
                continue;
            }
            let held = record_in(&**index, id.update_id)?.and_then(|r| r.held(id.revision));
            if let Some(held) = held.filter(|held| held.content == content) {
                return Ok(Some(held.document));
            }
        }
        Ok(None)
    }

    /// Bytes of the documents each store wrote, as kept (compressed), by the store's tag: a
    /// document both stores hold is counted once, for the store that wrote it. Reads every
    /// document, so a caller keeps the answer until a store changes.
    pub fn bytes_by_owner(&self) -> Result<HashMap<u8, u64>, StoreError> {
        let mut bytes = HashMap::new();
        let mut from = Vec::new();
        loop {
            let page = self.documents.scan(&[], &from, SCAN_PAGE, &|_| true)?;
            for (key, value) in &page.entries {
                if let Some(owner) = key.first() {
                    *bytes.entry(*owner).or_default() += value.len() as u64;
                }
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => return Ok(bytes),
            }
        }
    }

    /// How many documents the space holds, for every store on it together.
    pub fn count(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        walk_keys(&*self.documents, |_| count += 1)?;
        Ok(count)
    }

    /// Removes documents no store references: leftovers of an apply a crash cut short.
    /// Returns how many it removed.
    pub fn remove_unreferenced(&self) -> Result<u64, StoreError> {
        // No apply may index a document between the check and the removal.
        let _writers = self.lock_writers();
        let mut keys = Vec::new();
        walk_keys(&*self.documents, |key| keys.push(key.to_vec()))?;
        let mut batch = WriteBatch::default();
        for key in keys {
            let Some((location, id)) = keys::parse_document_key(&key) else {
                continue;
            };
            if !self.referenced(location, id)? {
                batch.delete(key);
            }
        }
        let removed = batch.len() as u64;
        if !batch.is_empty() {
            self.documents.apply(batch)?;
            self.documents.flush()?;
        }
        Ok(removed)
    }
}

impl UpdateRecord {
    fn held(&self, revision: u32) -> Option<HeldRevision> {
        self.revisions
            .binary_search_by_key(&revision, |r| r.revision)
            .ok()
            .map(|i| self.revisions[i])
    }

    /// Holds `held`, returning the entry it replaces (same revision number), if any.
    fn hold(&mut self, held: HeldRevision) -> Option<HeldRevision> {
        match self
            .revisions
            .binary_search_by_key(&held.revision, |r| r.revision)
        {
            Ok(i) => Some(std::mem::replace(&mut self.revisions[i], held)),
            Err(i) => {
                self.revisions.insert(i, held);
                None
            }
        }
    }
}

/// A catalog store over any [`Backend`]: an index space of its own and a documents space it
/// may share with the node's other store (see [`keys`] for why they are apart, and
/// [`DocumentSpace`] for the sharing).
///
/// An apply writes new documents first and flushes, then the index batch (which is what
/// makes the change visible) and flushes again, then removes documents no index references
/// any more. A crash at any point therefore leaves the index consistent; the worst it
/// leaves behind is documents nothing references, which reads never see and which
/// [`CatalogStore::verify`] counts and [`CatalogStore::remove_unreferenced_documents`]
/// removes.
#[derive(Debug)]
pub struct CatalogStore {
    index: Arc<dyn Backend>,
    space: Arc<DocumentSpace>,
    /// This store's tag in the documents space (see [`keys::document`]).
    tag: u8,
    /// Serializes writers (each apply reads the counters, then writes them back) and holds
    /// what only writers need.
    writer: Mutex<WriterState>,
    /// The last persisted state, so readers get counters and the digest in O(1).
    state: RwLock<StoreState>,
    /// The newest durable sequence number, for those who wait for the log to grow (a
    /// parent streaming its log to children).
    sequence: tokio::sync::watch::Sender<u64>,
    /// Limits for re-parsing stored documents; they were validated at ingest, so these
    /// only guard against a damaged store.
    parse_limits: ParseLimits,
}

/// A batch's pending view of the updates it touches, so that several changes to one update
/// in one batch see each other. `None` is an update the batch deleted.
type Pending = HashMap<UpdateId, Option<UpdateRecord>>;

impl CatalogStore {
    /// Opens the store on a shared documents space under `tag`, creating its state record
    /// if the index is empty. Each store on one space needs a tag of its own.
    pub fn open(
        index: Box<dyn Backend>,
        space: &Arc<DocumentSpace>,
        tag: u8,
    ) -> Result<Self, StoreError> {
        let index: Arc<dyn Backend> = Arc::from(index);
        let (state, write) = match index.get(&keys::meta(keys::STATE))? {
            Some(bytes) => {
                let mut state: StoreState = decode(&bytes, "state record")?;
                match state.format {
                    FORMAT_VERSION => (state, false),
                    found if UPGRADABLE_FORMATS.contains(&found) => {
                        state.format = FORMAT_VERSION;
                        (state, true)
                    }
                    found => return Err(StoreError::Format { found }),
                }
            }
            None => (StoreState::empty(), true),
        };
        if write {
            let mut batch = WriteBatch::default();
            batch.put(keys::meta(keys::STATE), encode(&state));
            index.apply(batch)?;
            index.flush()?;
        }
        let writer = WriterState {
            held_updates: held_updates(&*index)?,
        };
        {
            let mut stores = space.stores.write().unwrap_or_else(|p| p.into_inner());
            assert!(
                stores.iter().all(|(other, _)| *other != tag),
                "two stores opened with the documents tag {tag} on one documents space"
            );
            stores.push((tag, index.clone()));
        }
        Ok(Self {
            sequence: tokio::sync::watch::Sender::new(state.last_sequence),
            index,
            space: space.clone(),
            tag,
            writer: Mutex::new(writer),
            state: RwLock::new(state),
            parse_limits: ParseLimits {
                max_document_bytes: usize::MAX,
                ..ParseLimits::default()
            },
        })
    }

    pub fn state(&self) -> StoreState {
        *self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn digest(&self) -> CatalogDigest {
        self.state().digest
    }

    pub fn last_sequence(&self) -> u64 {
        self.state().last_sequence
    }

    /// Follows the newest durable sequence number: it changes after every apply that
    /// logged something.
    pub fn watch_sequence(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sequence.subscribe()
    }

    /// Applies `changes` atomically together with the caller's own metadata (for example a
    /// sync anchor or a replication cursor, which must move in the same write as the data it
    /// describes). Returns only after the batch is durable.
    pub fn apply(
        &self,
        changes: impl IntoIterator<Item = CatalogChange>,
        metadata: &[(&str, Vec<u8>)],
    ) -> Result<ApplyOutcome, StoreError> {
        for (name, _) in metadata {
            if *name == keys::STATE {
                return Err(StoreError::ReservedMeta((*name).to_owned()));
            }
        }
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _space = self.space.lock_writers();
        let mut state = self.state();
        let mut outcome = ApplyOutcome::default();
        let mut pending = Pending::new();
        let mut batch = StagedWrites::default();
        let mut log = LogChunk {
            first_sequence: state.last_sequence + 1,
            changes: Vec::new(),
        };

        for change in changes {
            let logged = match change {
                CatalogChange::Put(revision) => {
                    let revision = SummarizedRevision::from(revision);
                    self.put(revision, &writer, &mut state, &mut pending, &mut batch)?
                }
                CatalogChange::PutSummarized(revision) => {
                    self.put(revision, &writer, &mut state, &mut pending, &mut batch)?
                }
                CatalogChange::Delete(update) => {
                    self.delete(update, &writer, &mut state, &mut pending, &mut batch)?
                }
            };
            let Some((kind, revision)) = logged else {
                outcome.unchanged += 1;
                continue;
            };
            match kind {
                ChangeKind::New => outcome.new += 1,
                ChangeKind::Changed => outcome.changed += 1,
                ChangeKind::Expired => outcome.expired += 1,
                ChangeKind::Deleted => outcome.deleted += 1,
            }
            state.last_sequence += 1;
            log.changes.push((kind, revision));
        }

        let mut held_changes = Vec::with_capacity(pending.len());
        for (update, record) in pending {
            held_changes.push((update, record.is_some()));
            match record {
                Some(record) => batch.index.put(keys::record(update), encode(&record)),
                None => batch.index.delete(keys::record(update)),
            }
        }
        std::mem::take(&mut batch.categories).stage(&*self.index, &mut batch.index)?;
        for (name, value) in metadata {
            batch.index.put(keys::meta(name), value.clone());
        }
        if !log.changes.is_empty() {
            batch
                .index
                .put(keys::log_chunk(state.last_sequence), encode(&log));
            batch.index.put(keys::meta(keys::STATE), encode(&state));
        }
        // The order is the crash-safety argument in the type's documentation.
        let documents = &self.space.documents;
        if !batch.new_documents.is_empty() {
            documents.apply(batch.new_documents)?;
            documents.flush()?;
        }
        if !batch.index.is_empty() {
            self.index.apply(batch.index)?;
            self.index.flush()?;
            *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
            self.sequence.send_if_modified(|current| {
                let moved = *current != state.last_sequence;
                *current = state.last_sequence;
                moved
            });
            for (update, held) in held_changes {
                if held {
                    writer.held_updates.insert(update);
                } else {
                    writer.held_updates.remove(&update);
                }
            }
        }
        if !batch.removed_documents.is_empty() {
            // Durable with the next flush; until then a crash only leaves them unreferenced.
            let mut removals = WriteBatch::default();
            for (location, id) in batch.removed_documents {
                if !self.space.referenced(location, id)? {
                    removals.delete(keys::document(location, id));
                }
            }
            if !removals.is_empty() {
                documents.apply(removals)?;
            }
        }
        outcome.last_sequence = state.last_sequence;
        outcome.digest = state.digest;
        Ok(outcome)
    }

    /// Stages one put; the change-log record it earns gets sequence
    /// `state.last_sequence + 1`.
    fn put(
        &self,
        revision: SummarizedRevision,
        writer: &WriterState,
        state: &mut StoreState,
        pending: &mut Pending,
        batch: &mut StagedWrites,
    ) -> Result<Option<(ChangeKind, RevisionId)>, StoreError> {
        let SummarizedRevision {
            summary,
            content,
            document,
            compressed,
        } = revision;
        let id = summary.id;
        let current = self.pending_record(id.update_id, writer, pending)?;
        let held = current.as_ref().and_then(|r| r.held(id.revision));
        match held {
            Some(held) if held.content == content => return Ok(None),
            Some(held) => state.digest.remove(id, held.content),
            None => state.revisions += 1,
        }
        state.digest.add(id, content);
        let position = state.last_sequence + 1;
        let location = match self.space.copy_elsewhere(self.tag, id, content)? {
            Some(location) => location,
            None => {
                let document = document.ok_or(StoreError::DocumentNotShared { id })?;
                let location = DocumentLocation {
                    owner: self.tag,
                    stored: position,
                };
                let stored = match compressed {
                    Some(compressed) => stored_form_of_compressed(&compressed),
                    None => stored_document_form(&document),
                };
                batch
                    .new_documents
                    .put(keys::document(location, id), stored);
                location
            }
        };

        let expired = summary.publication_state == PublicationState::Expired;
        let (kind, mut record) = match current {
            None => {
                state.updates += 1;
                for category in &summary.categories {
                    batch.categories.add(*category, position, id.update_id);
                }
                let record = UpdateRecord {
                    summary,
                    revisions: Vec::new(),
                    category_position: position,
                };
                (ChangeKind::New, record)
            }
            Some(mut record) => {
                // An older revision arriving late is held but does not become the latest.
                if id.revision >= record.summary.id.revision {
                    if summary.categories != record.summary.categories {
                        for category in &record.summary.categories {
                            batch.categories.remove(*category, record.category_position);
                        }
                        for category in &summary.categories {
                            batch.categories.add(*category, position, id.update_id);
                        }
                        record.category_position = position;
                    }
                    record.summary = summary;
                }
                let kind = if expired {
                    ChangeKind::Expired
                } else {
                    ChangeKind::Changed
                };
                (kind, record)
            }
        };
        let replaced = record.hold(HeldRevision {
            revision: id.revision,
            content,
            document: location,
        });
        if let Some(replaced) = replaced {
            batch.removed_documents.insert((replaced.document, id));
        }
        pending.insert(id.update_id, Some(record));
        Ok(Some((kind, id)))
    }

    fn delete(
        &self,
        update: UpdateId,
        writer: &WriterState,
        state: &mut StoreState,
        pending: &mut Pending,
        batch: &mut StagedWrites,
    ) -> Result<Option<(ChangeKind, RevisionId)>, StoreError> {
        let Some(record) = self.pending_record(update, writer, pending)? else {
            return Ok(None);
        };
        for held in &record.revisions {
            let id = RevisionId {
                update_id: update,
                revision: held.revision,
            };
            state.digest.remove(id, held.content);
            state.revisions -= 1;
            batch.removed_documents.insert((held.document, id));
        }
        for category in &record.summary.categories {
            batch.categories.remove(*category, record.category_position);
        }
        pending.insert(update, None);
        state.updates -= 1;
        Ok(Some((ChangeKind::Deleted, record.summary.id)))
    }

    fn pending_record(
        &self,
        update: UpdateId,
        writer: &WriterState,
        pending: &Pending,
    ) -> Result<Option<UpdateRecord>, StoreError> {
        match pending.get(&update) {
            Some(record) => Ok(record.clone()),
            None if writer.held_updates.contains(&update) => self.record(update),
            // Most puts of a sync are updates the store never held: no read needed.
            None => Ok(None),
        }
    }

    fn record(&self, update: UpdateId) -> Result<Option<UpdateRecord>, StoreError> {
        record_in(&*self.index, update)
    }

    /// The summary of revision `id` if the store holds it, with exactly the bytes whose hash
    /// is `content`, as its update's latest revision: what parsing those bytes again would
    /// give. Lets a second store take a revision without a second parse.
    pub fn summary_of_held(
        &self,
        id: RevisionId,
        content: ContentHash,
    ) -> Result<Option<UpdateSummary>, StoreError> {
        Ok(self.record(id.update_id)?.and_then(|record| {
            let held = record.held(id.revision)?;
            (record.summary.id == id && held.content == content).then_some(record.summary)
        }))
    }

    /// The summary of an update's latest revision.
    pub fn latest(&self, update: UpdateId) -> Result<Option<UpdateSummary>, StoreError> {
        Ok(self.record(update)?.map(|r| r.summary))
    }

    /// Every revision held of an update, oldest first.
    pub fn revision_numbers(&self, update: UpdateId) -> Result<Vec<RevisionId>, StoreError> {
        Ok(self
            .record(update)?
            .map(|r| {
                r.revisions
                    .iter()
                    .map(|held| RevisionId {
                        update_id: update,
                        revision: held.revision,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every revision held of an update with its content hash, oldest first.
    pub fn revision_hashes(&self, update: UpdateId) -> Result<Vec<(u32, ContentHash)>, StoreError> {
        Ok(self
            .record(update)?
            .map(|r| {
                r.revisions
                    .iter()
                    .map(|held| (held.revision, held.content))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// What the store holds of revision `id`, if it holds it.
    fn held(&self, id: RevisionId) -> Result<Option<HeldRevision>, StoreError> {
        Ok(self.record(id.update_id)?.and_then(|r| r.held(id.revision)))
    }

    /// The content hash of revision `id`, if the store holds it.
    pub fn content_of(&self, id: RevisionId) -> Result<Option<ContentHash>, StoreError> {
        Ok(self.held(id)?.map(|held| held.content))
    }

    /// The original document of a revision, byte for byte.
    pub fn document(&self, id: RevisionId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.held(id)? {
            Some(held) => self.stored_document(id, held).map(Some),
            None => Ok(None),
        }
    }

    /// The document of revision `id` if the store holds it with exactly the bytes whose
    /// hash is `content`.
    pub fn document_with(
        &self,
        id: RevisionId,
        content: ContentHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.held(id)?.filter(|held| held.content == content) {
            Some(held) => self.stored_document(id, held).map(Some),
            None => Ok(None),
        }
    }

    /// The document of revision `id` LZ4-compressed, in LZ4's size-prepended form: as it is
    /// kept, so passing it on costs no compression. It is checked to decompress first, so a
    /// damaged copy is reported here as corruption rather than sent.
    pub fn compressed_document(&self, id: RevisionId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(held) = self.held(id)? else {
            return Ok(None);
        };
        let stored = self.stored_bytes(id, held)?;
        compressed_from_stored(stored)
            .map(Some)
            .map_err(|e| corrupt(format!("the stored document of {id} {e}")))
    }

    fn stored_document(&self, id: RevisionId, held: HeldRevision) -> Result<Vec<u8>, StoreError> {
        document_from_stored(self.stored_bytes(id, held)?)
            .map_err(|e| corrupt(format!("the stored document of {id} {e}")))
    }

    fn stored_bytes(&self, id: RevisionId, held: HeldRevision) -> Result<Vec<u8>, StoreError> {
        self.space
            .documents
            .get(&held.document_key(id.update_id))?
            .ok_or_else(|| {
                corrupt(format!(
                    "revision {id} is indexed but its document is missing"
                ))
            })
    }

    /// A revision, parsed from its stored document.
    pub fn revision(&self, id: RevisionId) -> Result<Option<UpdateRevision>, StoreError> {
        let Some(document) = self.document(id)? else {
            return Ok(None);
        };
        parse_update(&document, &self.parse_limits)
            .map(Some)
            .map_err(|e| corrupt(format!("stored document of {id} no longer parses: {e}")))
    }

    /// Change-log records with a sequence number greater than `after`, at most `limit`.
    pub fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<LoggedChange>, StoreError> {
        let mut from = keys::log_chunk(after.saturating_add(1));
        let mut out = Vec::new();
        while out.len() < limit {
            // Chunks hold up to a batch of records each, so a few chunks fill any page.
            let page = self.index.scan(&[keys::LOG], &from, 4, &|_| true)?;
            for (_, value) in page.entries {
                let chunk: LogChunk = decode(&value, "change-log chunk")?;
                out.extend(
                    chunk
                        .records()
                        .filter(|c| c.sequence > after)
                        .take(limit - out.len()),
                );
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => break,
            }
        }
        Ok(out)
    }

    /// Latest-revision summaries in update-id order, starting after `after`, at most `limit`.
    pub fn summaries(
        &self,
        after: Option<UpdateId>,
        limit: usize,
    ) -> Result<Vec<UpdateSummary>, StoreError> {
        let mut from = match after {
            // Every key of `after` sorts before its successor's record key.
            Some(id) => successor(keys::record(id)),
            None => vec![keys::UPDATE],
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let page = self
                .index
                .scan(&[keys::UPDATE], &from, limit - out.len(), &|_| true)?;
            for (_, value) in page.entries {
                out.push(decode::<UpdateRecord>(&value, "update record")?.summary);
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => break,
            }
        }
        Ok(out)
    }

    /// Updates held, in id order, after `after` (`None` for the start), at most `limit`,
    /// each with every revision held and its content hash: what a sync compares its
    /// upstream against without reading documents.
    pub fn held_updates(
        &self,
        after: Option<UpdateId>,
        limit: usize,
    ) -> Result<Vec<HeldUpdate>, StoreError> {
        let from = match after {
            Some(id) => successor(keys::record(id)),
            None => vec![keys::UPDATE],
        };
        self.index
            .scan(&[keys::UPDATE], &from, limit, &|_| true)?
            .entries
            .into_iter()
            .map(|(key, value)| {
                let update_id = keys::update_id_at(&key, 1)
                    .ok_or_else(|| corrupt("an update record key is too short"))?;
                let record: UpdateRecord = decode(&value, "update record")?;
                Ok(HeldUpdate {
                    update_id,
                    revisions: record
                        .revisions
                        .iter()
                        .map(|held| (held.revision, held.content))
                        .collect(),
                })
            })
            .collect()
    }

    /// Held revisions in (update id, revision) order — snapshot order — after `after`
    /// (`None` for the start), at most `limit`.
    pub fn revisions_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<RevisionId>, StoreError> {
        let mut from = match after {
            Some(id) => keys::record(id.update_id),
            None => vec![keys::UPDATE],
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let page = self
                .index
                .scan(&[keys::UPDATE], &from, SCAN_PAGE, &|_| true)?;
            for (key, value) in page.entries {
                let update = keys::update_id_at(&key, 1)
                    .ok_or_else(|| corrupt("an update record key is too short"))?;
                let record: UpdateRecord = decode(&value, "update record")?;
                for held in record.revisions {
                    let id = RevisionId {
                        update_id: update,
                        revision: held.revision,
                    };
                    if after.is_some_and(|after| id <= after) {
                        continue;
                    }
                    out.push(id);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => break,
            }
        }
        Ok(out)
    }

    /// Updates whose latest revision belongs to `category`, in the order they entered it,
    /// after index position `after` (0 for the start), at most `limit`. Each comes with its
    /// position, to pass as `after` for the next page.
    pub fn updates_in_category(
        &self,
        category: UpdateId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, UpdateId)>, StoreError> {
        category_index::entries_after(&*self.index, category, after, limit)
    }

    /// The caller's own metadata stored with [`CatalogStore::apply`].
    pub fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.index.get(&keys::meta(name))?)
    }

    /// Reads the whole store and checks it against its own state record: the digest
    /// recomputed from every referenced document's bytes, the counts, the update records,
    /// the category index and the change log. Unreferenced documents (left by a crash in the
    /// middle of an apply) are counted, not reported as problems.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let recorded = self.state();
        let mut problems = Vec::new();

        let mut records: HashMap<UpdateId, UpdateRecord> = HashMap::new();
        walk(&*self.index, &[keys::UPDATE], |key, value| {
            let Some(update) = keys::update_id_at(key, 1) else {
                problems.push("an update record key is too short".to_owned());
                return;
            };
            match postcard::from_bytes::<UpdateRecord>(value) {
                Ok(record) => {
                    if record.revisions.last().map(|r| r.revision)
                        != Some(record.summary.id.revision)
                    {
                        problems.push(format!(
                            "update {update}: the latest summary is not the newest revision"
                        ));
                    }
                    records.insert(update, record);
                }
                Err(e) => problems.push(format!("update record of {update} does not decode: {e}")),
            }
        })?;

        let mut recomputed = CatalogDigest::EMPTY;
        let mut revisions = 0u64;
        let mut unreferenced_documents = 0u64;
        let mut lookup_failure = None;
        walk(&*self.space.documents, &[], |key, document| {
            let Some((location, id)) = keys::parse_document_key(key) else {
                problems.push("a document key has an unknown shape".to_owned());
                return;
            };
            let Some(held) = records
                .get(&id.update_id)
                .and_then(|r| r.held(id.revision))
                .filter(|held| held.document == location)
            else {
                // Another store's document, or a leftover nothing references.
                match self.space.referenced(location, id) {
                    Ok(true) => {}
                    Ok(false) => unreferenced_documents += 1,
                    Err(e) => lookup_failure = Some(e),
                }
                return;
            };
            let content = match document_from_stored(document.to_vec()) {
                Ok(document) => ContentHash::of(&document),
                Err(e) => {
                    problems.push(format!("revision {id}: the stored document {e}"));
                    return;
                }
            };
            if content != held.content {
                problems.push(format!(
                    "revision {id}: document does not match its recorded hash"
                ));
            }
            recomputed.add(id, content);
            revisions += 1;
        })?;
        if let Some(e) = lookup_failure {
            return Err(e);
        }
        let indexed: u64 = records.values().map(|r| r.revisions.len() as u64).sum();
        if indexed != revisions {
            problems.push(format!(
                "{indexed} revisions are indexed but {revisions} of their documents were found"
            ));
        }

        let expected_index: BTreeSet<_> = records
            .iter()
            .flat_map(|(update, record)| {
                record
                    .summary
                    .categories
                    .iter()
                    .map(move |category| (*category, record.category_position, *update))
            })
            .collect();
        let mut index = BTreeSet::new();
        walk(&*self.index, &[keys::CATEGORY], |key, value| {
            let Some(category) = keys::update_id_at(key, 1) else {
                problems.push("a category index key is too short".to_owned());
                return;
            };
            match category_index::decode(key, value) {
                Ok(entries) => index.extend(
                    entries
                        .into_iter()
                        .map(|(position, update)| (category, position, update)),
                ),
                Err(e) => problems.push(e),
            }
        })?;
        if index != expected_index {
            problems.push(format!(
                "the category index has {} entries, the update records call for {}",
                index.len(),
                expected_index.len()
            ));
        }

        let mut expected = recorded.first_retained_sequence;
        let mut log_contiguous = true;
        walk(
            &*self.index,
            &[keys::LOG],
            |key, value| match postcard::from_bytes::<LogChunk>(value) {
                Ok(chunk) if !chunk.changes.is_empty() => {
                    let last = chunk.first_sequence + chunk.changes.len() as u64 - 1;
                    if chunk.first_sequence != expected || keys::u64_at(key, 1) != Some(last) {
                        log_contiguous = false;
                    }
                    expected = last + 1;
                }
                Ok(_) => log_contiguous = false,
                Err(e) => problems.push(format!("a change-log chunk does not decode: {e}")),
            },
        )?;
        if expected != recorded.last_sequence + 1 {
            log_contiguous = false;
        }
        if !log_contiguous {
            problems.push(
                "the change log has a gap or does not end at the recorded sequence".to_owned(),
            );
        }
        if recomputed != recorded.digest {
            problems.push(format!(
                "recorded digest {} differs from the recomputed {recomputed}",
                recorded.digest
            ));
        }
        if revisions != recorded.revisions {
            problems.push(format!(
                "recorded {} revisions, found {revisions}",
                recorded.revisions
            ));
        }
        let updates = records.len() as u64;
        if updates != recorded.updates {
            problems.push(format!(
                "recorded {} updates, found {updates}",
                recorded.updates
            ));
        }
        Ok(VerifyReport {
            recorded,
            recomputed_digest: recomputed,
            revisions,
            updates,
            log_contiguous,
            unreferenced_documents,
            problems,
        })
    }

    /// Removes documents no store on this store's documents space references (see the
    /// type's documentation). Returns how many it removed.
    pub fn remove_unreferenced_documents(&self) -> Result<u64, StoreError> {
        self.space.remove_unreferenced()
    }
}

/// What the writer keeps in memory between applies.
#[derive(Debug)]
struct WriterState {
    /// Every update the store holds: rebuilt from the index at open and changed only after
    /// an index batch is durable, so it always equals the durable index.
    held_updates: HashSet<UpdateId>,
}

/// Reads the ids of every update the index holds.
fn held_updates(index: &dyn Backend) -> Result<HashSet<UpdateId>, StoreError> {
    let mut held = HashSet::new();
    let mut short_key = false;
    walk(index, &[keys::UPDATE], |key, _| {
        match keys::update_id_at(key, 1) {
            Some(update) => {
                held.insert(update);
            }
            None => short_key = true,
        }
    })?;
    if short_key {
        return Err(corrupt("an update record key is too short"));
    }
    Ok(held)
}

/// The writes one apply stages, per space and in the order they are applied.
#[derive(Default)]
struct StagedWrites {
    new_documents: WriteBatch,
    index: WriteBatch,
    /// Staged apart from `index`: removing an entry rewrites its chunk, read at the end.
    categories: CategoryChanges,
    /// Documents to remove once the index no longer references them, unless another store
    /// references them. A put stores its document under a key of its own or takes another
    /// store's, so no later put in the batch needs one of them back.
    removed_documents: BTreeSet<(DocumentLocation, RevisionId)>,
}

/// Calls `visit` for every entry under `prefix`, a page at a time.
fn walk(
    backend: &dyn Backend,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), StoreError> {
    let mut from = prefix.to_vec();
    loop {
        let page = backend.scan(prefix, &from, SCAN_PAGE, &|_| true)?;
        for (key, value) in &page.entries {
            visit(key, value);
        }
        match page.resume_after {
            Some(last) => from = successor(last),
            None => return Ok(()),
        }
    }
}

/// Calls `visit` for every key of `backend`, a page at a time, copying no value out.
fn walk_keys(backend: &dyn Backend, visit: impl FnMut(&[u8])) -> Result<(), StoreError> {
    // A scan's filter is `Fn`; the visitor runs inside it and keeps nothing in the page.
    let visit = std::cell::RefCell::new(visit);
    let keep = |key: &[u8]| {
        (visit.borrow_mut())(key);
        false
    };
    let mut from = Vec::new();
    loop {
        let page = backend.scan(&[], &from, SCAN_PAGE, &keep)?;
        match page.resume_after {
            Some(last) => from = successor(last),
            None => return Ok(()),
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard serializes plain structs into a Vec")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("{what} does not decode: {e}")))
}

/// How a document is kept: LZ4-compressed behind a zero byte. Update documents compress to
/// about a quarter, and sled rewrites a page of documents each time it splits or
/// consolidates it, so this cuts the bytes a sync writes and copies by as much. A document
/// itself never starts with a zero byte (XML has no NUL character), so a document kept as
/// it is, as layout 3 did, still reads back.
pub fn stored_document_form(document: &[u8]) -> Vec<u8> {
    stored_form_of_compressed(&lz4_flex::compress_prepend_size(document))
}

/// [`stored_document_form`] of a document given already compressed (LZ4, size prepended).
fn stored_form_of_compressed(compressed: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(1 + compressed.len());
    stored.push(0);
    stored.extend_from_slice(compressed);
    stored
}

/// The document [`stored_document_form`] kept; the error says what is wrong with `stored`.
pub fn document_from_stored(stored: Vec<u8>) -> Result<Vec<u8>, String> {
    match stored.split_first() {
        Some((0, compressed)) => lz4_flex::decompress_size_prepended(compressed)
            .map_err(|e| format!("does not decompress: {e}")),
        _ => Ok(stored),
    }
}

/// The LZ4 size-prepended form of the document [`stored_document_form`] kept, checked to
/// decompress; a document kept uncompressed is compressed now.
fn compressed_from_stored(mut stored: Vec<u8>) -> Result<Vec<u8>, String> {
    match stored.split_first() {
        Some((0, compressed)) => {
            lz4_flex::decompress_size_prepended(compressed)
                .map_err(|e| format!("does not decompress: {e}"))?;
            stored.remove(0);
            Ok(stored)
        }
        _ => Ok(lz4_flex::compress_prepend_size(&stored)),
    }
}
