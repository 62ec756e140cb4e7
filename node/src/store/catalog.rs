//! A catalog store: every revision it holds, the latest revision of each update, a
//! category index, a change log and the catalog digest, kept consistent by applying each
//! set of changes as one atomic batch and flushing before answering.
//!
//! Both of a node's stores (the update-server store and the site database) are catalog
//! stores; they differ in who writes to them, not in how they keep data.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sitesync_metadata::{
    CatalogDigest, CategoryType, ContentHash, MsrcSeverity, ParseLimits, PublicationState,
    RevisionId, UpdateId, UpdateRevision, UpdateType, parse_update,
};

use super::backend::{Backend, BackendError, WriteBatch};
use super::keys;

/// The version of the on-disk layout. A store written by another layout is refused at open
/// instead of being misread.
const FORMAT_VERSION: u32 = 1;

/// Rows fetched per backend call when a read walks a range.
const SCAN_PAGE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(
        "store is corrupt: {what}; restore the node's data directory from a backup or resync it from its upstream"
    )]
    Corrupt { what: String },
    #[error(
        "store was written with layout version {found}, this node understands version {FORMAT_VERSION}; run the sitesync release that wrote it, or resync into an empty data directory"
    )]
    Format { found: u32 },
    #[error("metadata key `{0}` is reserved for the store itself")]
    ReservedMeta(String),
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

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

/// A change offered to a store.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    /// Hold this revision. Putting a revision the store already holds with the same bytes
    /// changes nothing, which makes re-applying a batch after a crash harmless.
    Put(UpdateRevision),
    /// Remove the update and all its revisions.
    Delete(UpdateId),
}

/// The store's counters, persisted with every batch that changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    pub format: u32,
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
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A catalog store over any [`Backend`].
#[derive(Debug)]
pub struct CatalogStore {
    backend: Box<dyn Backend>,
    /// Serializes writers: each apply reads the counters, then writes them back.
    writer: Mutex<()>,
    /// The last persisted state, so readers get counters and the digest in O(1).
    state: RwLock<StoreState>,
    /// Limits for re-parsing stored documents; they were validated at ingest, so these
    /// only guard against a damaged store.
    parse_limits: ParseLimits,
}

/// A batch's pending view of the updates it touches, so that several changes to one update
/// in one batch see each other.
#[derive(Default)]
struct Pending {
    latest: HashMap<UpdateId, Option<UpdateSummary>>,
    revisions: HashMap<RevisionId, Option<ContentHash>>,
}

impl CatalogStore {
    /// Opens the store, creating its state record if the key space is empty.
    pub fn open(backend: Box<dyn Backend>) -> Result<Self, StoreError> {
        let state = match backend.get(&keys::meta(keys::STATE))? {
            Some(bytes) => {
                let state: StoreState = postcard::from_bytes(&bytes)
                    .map_err(|e| corrupt(format!("state record: {e}")))?;
                if state.format != FORMAT_VERSION {
                    return Err(StoreError::Format {
                        found: state.format,
                    });
                }
                state
            }
            None => {
                let state = StoreState::empty();
                let mut batch = WriteBatch::default();
                batch.put(keys::meta(keys::STATE), encode(&state));
                backend.apply(batch)?;
                backend.flush()?;
                state
            }
        };
        Ok(Self {
            backend,
            writer: Mutex::new(()),
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

    /// Applies `changes` atomically together with the caller's own metadata (for example a
    /// sync anchor or a replication cursor, which must move in the same write as the data it
    /// describes). Returns only after the batch is durable.
    pub fn apply(
        &self,
        changes: &[CatalogChange],
        metadata: &[(&str, Vec<u8>)],
    ) -> Result<ApplyOutcome, StoreError> {
        for (name, _) in metadata {
            if *name == keys::STATE {
                return Err(StoreError::ReservedMeta((*name).to_owned()));
            }
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.state();
        let mut outcome = ApplyOutcome::default();
        let mut pending = Pending::default();
        let mut batch = WriteBatch::default();

        for change in changes {
            let kind = match change {
                CatalogChange::Put(revision) => {
                    self.put(revision, &mut state, &mut pending, &mut batch)?
                }
                CatalogChange::Delete(update) => {
                    self.delete(*update, &mut state, &mut pending, &mut batch)?
                }
            };
            let Some((kind, revision)) = kind else {
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
            let record = LoggedChange {
                sequence: state.last_sequence,
                kind,
                revision,
            };
            batch.put(keys::log(record.sequence), encode(&record));
        }

        for (name, value) in metadata {
            batch.put(keys::meta(name), value.clone());
        }
        if outcome.logged() > 0 {
            batch.put(keys::meta(keys::STATE), encode(&state));
        }
        if !batch.is_empty() {
            self.backend.apply(batch)?;
            self.backend.flush()?;
            *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        }
        outcome.last_sequence = state.last_sequence;
        outcome.digest = state.digest;
        Ok(outcome)
    }

    fn put(
        &self,
        revision: &UpdateRevision,
        state: &mut StoreState,
        pending: &mut Pending,
        batch: &mut WriteBatch,
    ) -> Result<Option<(ChangeKind, RevisionId)>, StoreError> {
        let id = revision.id;
        let content = revision.content_hash();
        match self.held_revision(id, pending)? {
            Some(held) if held == content => return Ok(None),
            Some(held) => state.digest.remove(id, held),
            None => state.revisions += 1,
        }
        state.digest.add(id, content);
        pending.revisions.insert(id, Some(content));
        let mut value = Vec::with_capacity(32 + revision.document.len());
        value.extend_from_slice(&content.0);
        value.extend_from_slice(&revision.document);
        batch.put(keys::revision(id), value);

        let current = self.current_latest(id.update_id, pending)?;
        let kind = match &current {
            None => {
                state.updates += 1;
                ChangeKind::New
            }
            Some(_) if revision.publication_state == PublicationState::Expired => {
                ChangeKind::Expired
            }
            Some(_) => ChangeKind::Changed,
        };
        let becomes_latest = current
            .as_ref()
            .is_none_or(|c| id.revision >= c.id.revision);
        if becomes_latest {
            let summary = UpdateSummary::of(revision);
            let old_categories = current
                .as_ref()
                .map(|c| c.categories.as_slice())
                .unwrap_or(&[]);
            for category in old_categories {
                if !summary.categories.contains(category) {
                    batch.delete(keys::category(*category, id.update_id));
                }
            }
            for category in &summary.categories {
                if !old_categories.contains(category) {
                    batch.put(keys::category(*category, id.update_id), Vec::new());
                }
            }
            batch.put(keys::latest(id.update_id), encode(&summary));
            pending.latest.insert(id.update_id, Some(summary));
        }
        Ok(Some((kind, id)))
    }

    fn delete(
        &self,
        update: UpdateId,
        state: &mut StoreState,
        pending: &mut Pending,
        batch: &mut WriteBatch,
    ) -> Result<Option<(ChangeKind, RevisionId)>, StoreError> {
        let Some(current) = self.current_latest(update, pending)? else {
            return Ok(None);
        };
        for revision in self.held_revisions_of(update, pending)? {
            let Some(content) = self.held_revision(revision, pending)? else {
                continue;
            };
            state.digest.remove(revision, content);
            state.revisions -= 1;
            pending.revisions.insert(revision, None);
            batch.delete(keys::revision(revision));
        }
        for category in &current.categories {
            batch.delete(keys::category(*category, update));
        }
        batch.delete(keys::latest(update));
        pending.latest.insert(update, None);
        state.updates -= 1;
        Ok(Some((ChangeKind::Deleted, current.id)))
    }

    /// The content hash of a revision as this batch would leave it.
    fn held_revision(
        &self,
        id: RevisionId,
        pending: &Pending,
    ) -> Result<Option<ContentHash>, StoreError> {
        if let Some(held) = pending.revisions.get(&id) {
            return Ok(*held);
        }
        match self.backend.get(&keys::revision(id))? {
            Some(value) => Ok(Some(content_hash_of(&value, id)?)),
            None => Ok(None),
        }
    }

    /// The revisions of an update, stored or added earlier in this batch.
    fn held_revisions_of(
        &self,
        update: UpdateId,
        pending: &Pending,
    ) -> Result<BTreeSet<RevisionId>, StoreError> {
        let mut held: BTreeSet<RevisionId> = self.revision_numbers(update)?.into_iter().collect();
        for (id, content) in &pending.revisions {
            if id.update_id == update {
                match content {
                    Some(_) => held.insert(*id),
                    None => held.remove(id),
                };
            }
        }
        Ok(held)
    }

    fn current_latest(
        &self,
        update: UpdateId,
        pending: &Pending,
    ) -> Result<Option<UpdateSummary>, StoreError> {
        match pending.latest.get(&update) {
            Some(latest) => Ok(latest.clone()),
            None => self.latest(update),
        }
    }

    /// The summary of an update's latest revision.
    pub fn latest(&self, update: UpdateId) -> Result<Option<UpdateSummary>, StoreError> {
        self.backend
            .get(&keys::latest(update))?
            .map(|bytes| decode(&bytes, "latest-revision summary"))
            .transpose()
    }

    /// Every revision held of an update, oldest first.
    pub fn revision_numbers(&self, update: UpdateId) -> Result<Vec<RevisionId>, StoreError> {
        let prefix = keys::revisions_of(update);
        // Only keys are needed, but the interface is small on purpose; updates have few
        // revisions, so reading their values here costs little.
        self.backend
            .scan(&prefix, &prefix, usize::MAX)?
            .into_iter()
            .map(|(key, _)| {
                keys::u32_at(&key, 17)
                    .map(|revision| RevisionId {
                        update_id: update,
                        revision,
                    })
                    .ok_or_else(|| corrupt("revision key too short"))
            })
            .collect()
    }

    /// The original document of a revision, byte for byte.
    pub fn document(&self, id: RevisionId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.backend.get(&keys::revision(id))? {
            Some(mut value) => {
                if value.len() < 32 {
                    return Err(corrupt(format!("revision {id}: value too short")));
                }
                value.drain(..32);
                Ok(Some(value))
            }
            None => Ok(None),
        }
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
        let prefix = [keys::LOG];
        let from = keys::log(after.saturating_add(1));
        self.backend
            .scan(&prefix, &from, limit)?
            .into_iter()
            .map(|(_, value)| decode(&value, "change-log record"))
            .collect()
    }

    /// Latest-revision summaries in update-id order, starting after `after`, at most `limit`.
    pub fn summaries(
        &self,
        after: Option<UpdateId>,
        limit: usize,
    ) -> Result<Vec<UpdateSummary>, StoreError> {
        let prefix = [keys::LATEST];
        let from = match after {
            Some(id) => successor(keys::latest(id)),
            None => prefix.to_vec(),
        };
        self.backend
            .scan(&prefix, &from, limit)?
            .into_iter()
            .map(|(_, value)| decode(&value, "latest-revision summary"))
            .collect()
    }

    /// The updates whose latest revision belongs to `category`, in id order.
    pub fn updates_in_category(
        &self,
        category: UpdateId,
        after: Option<UpdateId>,
        limit: usize,
    ) -> Result<Vec<UpdateId>, StoreError> {
        let prefix = keys::category_members(category);
        let from = match after {
            Some(id) => successor(keys::category(category, id)),
            None => prefix.clone(),
        };
        self.backend
            .scan(&prefix, &from, limit)?
            .into_iter()
            .map(|(key, _)| {
                keys::update_id_at(&key, 17).ok_or_else(|| corrupt("category key too short"))
            })
            .collect()
    }

    /// The caller's own metadata stored with [`CatalogStore::apply`].
    pub fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.backend.get(&keys::meta(name))?)
    }

    /// Reads the whole store and checks it against its own state record: the digest
    /// recomputed from every document, the counts, the indexes and the change log.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let recorded = self.state();
        let mut problems = Vec::new();

        let mut recomputed = CatalogDigest::EMPTY;
        let mut revisions = 0u64;
        let mut latest_seen: HashMap<UpdateId, u32> = HashMap::new();
        walk(&*self.backend, &[keys::REVISION], |key, value| {
            let (Some(update_id), Some(revision)) =
                (keys::update_id_at(key, 1), keys::u32_at(key, 17))
            else {
                problems.push("a revision key is too short".to_owned());
                return;
            };
            let id = RevisionId {
                update_id,
                revision,
            };
            let Some((hash, document)) = value.split_first_chunk::<32>() else {
                problems.push(format!("revision {id}: value too short"));
                return;
            };
            if ContentHash::of(document).0 != *hash {
                problems.push(format!("revision {id}: document does not match its hash"));
            }
            recomputed.add(id, ContentHash(*hash));
            revisions += 1;
            let newest = latest_seen.entry(update_id).or_insert(revision);
            *newest = (*newest).max(revision);
        })?;

        let mut updates = 0u64;
        walk(&*self.backend, &[keys::LATEST], |_, value| {
            updates += 1;
            match postcard::from_bytes::<UpdateSummary>(value) {
                Ok(summary) => {
                    if latest_seen.get(&summary.id.update_id) != Some(&summary.id.revision) {
                        problems.push(format!(
                            "latest index names {} but the newest stored revision differs",
                            summary.id
                        ));
                    }
                }
                Err(e) => problems.push(format!("a latest-revision summary does not decode: {e}")),
            }
        })?;

        let mut expected = recorded.first_retained_sequence;
        let mut log_contiguous = true;
        walk(&*self.backend, &[keys::LOG], |key, _| {
            if keys::u64_at(key, 1) != Some(expected) {
                log_contiguous = false;
            }
            expected += 1;
        })?;
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
        if updates != recorded.updates || updates != latest_seen.len() as u64 {
            problems.push(format!(
                "recorded {} updates, found {updates} in the latest index and {} with revisions",
                recorded.updates,
                latest_seen.len()
            ));
        }
        Ok(VerifyReport {
            recorded,
            recomputed_digest: recomputed,
            revisions,
            updates,
            log_contiguous,
            problems,
        })
    }
}

/// Calls `visit` for every entry under `prefix`, a page at a time.
fn walk(
    backend: &dyn Backend,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), StoreError> {
    let mut from = prefix.to_vec();
    loop {
        let page = backend.scan(prefix, &from, SCAN_PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        from = successor(last.clone());
        let full = page.len() == SCAN_PAGE;
        for (key, value) in &page {
            visit(key, value);
        }
        if !full {
            return Ok(());
        }
    }
}

/// The smallest key greater than `key`.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

fn content_hash_of(value: &[u8], id: RevisionId) -> Result<ContentHash, StoreError> {
    value
        .first_chunk::<32>()
        .map(|hash| ContentHash(*hash))
        .ok_or_else(|| corrupt(format!("revision {id}: value too short")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard serializes plain structs into a Vec")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("{what} does not decode: {e}")))
}
