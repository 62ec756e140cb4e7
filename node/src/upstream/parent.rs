//! A child site's upstream: its parent's update server (S1, S10).
//!
//! A child's update-server store pulls the parent's `UpdateServer.GetChanges` stream from
//! the anchor it last applied. Every batch must start exactly where the child stands (the
//! gap-and-duplicate check of the contract); its changes are parsed and checked (a document
//! must be filed under its own identity), then applied to the store in one atomic write
//! *together with the new anchor*, and flushed. A crash at any point therefore resumes at a
//! batch boundary, and a batch is never applied twice. The same checks and the same atomic
//! apply (`apply_batch`) serve site-database replication ([`crate::replication`]), under
//! its own anchor key; there a document the node's update-server store already holds, with
//! the same bytes, is not parsed a second time.
//!
//! A child whose anchor is on another log (the parent's store was recreated), or further
//! behind than the parent retains, receives a snapshot: the catalog in (update id,
//! revision) order, in parts. Each part says which range it covers; updates the child holds
//! wholly inside that range but that the part does not contain are no longer offered, and
//! are deleted. Then the log tail follows.
//!
//! At the end the parent states its catalog at the stream's target; when the child's digest
//! differs (the parent was written to meanwhile), the child pulls again.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sitesync_metadata::{
    CatalogDigest, ContentHash, ParseLimits, RevisionId, UpdateId, parse_update_owned,
};
use sitesync_proto::v1::update_server_client::UpdateServerClient;
use sitesync_proto::v1::{self, get_changes_response};
use sitesync_proto::{ConversionError, HeldReference, MAX_MESSAGE_BYTES, RevisionDocument};
use tonic::transport::Channel;

use crate::store::{ApplyOutcome, CatalogChange, CatalogStore, StoreError, SummarizedRevision};
use crate::upstream::journal::Journal;

/// The store metadata key holding the anchor in the parent's log.
pub const ANCHOR_KEY: &str = "upstream.parent-anchor";

/// How many times a pull starts over when the parent changed during the stream.
const MAX_ROUNDS: usize = 5;

/// A position in the parent's update-server log (the contract's `Anchor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentAnchor {
    pub log_id: [u8; 16],
    pub sequence: u64,
    /// Set while a snapshot is being installed: everything up to this revision is in.
    pub snapshot_through: Option<RevisionId>,
}

impl ParentAnchor {
    /// The contract's wire form of this position.
    pub fn to_wire(self) -> v1::Anchor {
        v1::Anchor {
            log_id: uuid::Uuid::from_bytes(self.log_id).hyphenated().to_string(),
            sequence: self.sequence,
            snapshot_through: self.snapshot_through.map(Into::into),
        }
    }

    pub(crate) fn from_wire(wire: v1::Anchor) -> Result<Self, PullError> {
        let log_id = uuid::Uuid::parse_str(&wire.log_id).map_err(|_| {
            PullError::Protocol(format!(
                "an anchor names log `{}`, which is not a log id",
                wire.log_id
            ))
        })?;
        Ok(Self {
            log_id: *log_id.as_bytes(),
            sequence: wire.sequence,
            snapshot_through: wire
                .snapshot_through
                .map(RevisionId::try_from)
                .transpose()
                .map_err(|e| PullError::Invalid(e.within("anchor.snapshot_through")))?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the parent's update server is unreachable or failed: {0}")]
    Transport(#[from] tonic::Status),
    #[error("the parent sent an invalid message: {0}")]
    Invalid(#[from] ConversionError),
    #[error("the parent broke the change-stream protocol: {0}")]
    Protocol(String),
    #[error("the parent sent a document that does not parse ({id}): {reason}")]
    Document { id: RevisionId, reason: String },
    #[error(
        "the parent sent {id} by reference, but this node's update-server store does not hold it with the same bytes"
    )]
    Unresolved { id: RevisionId },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the catalog kept changing at the parent while it was pulled ({MAX_ROUNDS} rounds); the next sync will try again"
    )]
    Unsettled,
    #[error(
        "the parent states digest {stated} for its catalog, but what it served adds up to {pulled}: its store and its documents disagree"
    )]
    Mismatch {
        stated: CatalogDigest,
        pulled: CatalogDigest,
    },
}

impl PullError {
    /// Whether a revision sent by reference could not be taken from the node's own
    /// update-server store: asking again for documents resolves it.
    pub fn is_unresolved_reference(&self) -> bool {
        matches!(
            self,
            Self::Unresolved { .. } | Self::Store(StoreError::DocumentNotShared { .. })
        )
    }
}

/// What one pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullOutcome {
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
    pub batches: u64,
    pub bytes_received: u64,
    /// Whether a snapshot was (re)installed.
    pub snapshot: bool,
    /// The digest both the parent (at the stream's target) and this store hold.
    pub digest: CatalogDigest,
}

impl PullOutcome {
    fn add(&mut self, outcome: &ApplyOutcome) {
        self.new += outcome.new;
        self.changed += outcome.changed;
        self.expired += outcome.expired;
        self.deleted += outcome.deleted;
    }
}

/// The anchor the store holds, if any.
pub fn stored_anchor(store: &CatalogStore) -> Result<Option<ParentAnchor>, StoreError> {
    stored_anchor_at(store, ANCHOR_KEY)
}

/// The anchor the store holds under metadata key `key`, if any.
pub(crate) fn stored_anchor_at(
    store: &CatalogStore,
    key: &str,
) -> Result<Option<ParentAnchor>, StoreError> {
    store
        .metadata(key)?
        // An undo that returned the store to before its first pull leaves the key empty.
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| {
            postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!("the parent anchor does not decode: {e}"),
            })
        })
        .transpose()
}

/// Brings `store` up to the parent's update-server store, until both digests match. With
/// `journal`, what is applied can be taken back ([`crate::upstream::journal`]).
pub async fn pull(
    client: &mut UpdateServerClient<Channel>,
    store: &CatalogStore,
    limits: &ParseLimits,
    journal: bool,
    mut progress: impl FnMut(&PullOutcome),
) -> Result<PullOutcome, PullError> {
    let mut outcome = PullOutcome::default();
    let journal = journal.then(|| Journal::new(store, ANCHOR_KEY));
    for _ in 0..MAX_ROUNDS {
        let batches_before = outcome.batches;
        let target_digest = pull_once(
            client,
            (store, journal.as_ref()),
            limits,
            &mut outcome,
            &mut progress,
        )
        .await?;
        if store.digest() == target_digest {
            outcome.digest = target_digest;
            return Ok(outcome);
        }
        if outcome.batches == batches_before {
            // Nothing came, yet the digests differ: what the parent serves is not what it
            // states it holds.
            return Err(PullError::Mismatch {
                stated: target_digest,
                pulled: store.digest(),
            });
        }
    }
    Err(PullError::Unsettled)
}

/// One `GetChanges` stream; returns the parent's digest at the stream's target.
async fn pull_once(
    client: &mut UpdateServerClient<Channel>,
    (store, journal): (&CatalogStore, Option<&Journal<'_>>),
    limits: &ParseLimits,
    outcome: &mut PullOutcome,
    progress: &mut impl FnMut(&PullOutcome),
) -> Result<CatalogDigest, PullError> {
    let mut position = stored_anchor(store)?;
    let mut stream = client
        .get_changes(v1::GetChangesRequest {
            since: position.map(ParentAnchor::to_wire),
            max_batch_bytes: 0,
            accept_lz4: true,
        })
        .await?
        .into_inner();
    let mut planned = false;
    // The batch being read on the blocking pool while the one before it is applied here:
    // parsing and writing overlap, and batches are still applied one at a time, in order.
    let mut reading: Option<tokio::task::JoinHandle<Result<ReadBatch, PullError>>> = None;
    while let Some(message) = stream.message().await? {
        match message.kind {
            Some(get_changes_response::Kind::Plan(plan)) if !planned => {
                planned = true;
                outcome.snapshot |= plan.snapshot;
            }
            Some(get_changes_response::Kind::Batch(batch)) if planned => {
                let limits = *limits;
                let next = tokio::task::spawn_blocking(move || {
                    let reader = DocumentReader {
                        limits: &limits,
                        parsed_in: None,
                    };
                    read_batch(batch, &reader)
                });
                if let Some(previous) = reading.replace(next) {
                    let read = joined(previous).await?;
                    position = Some(commit_batch(
                        store,
                        (ANCHOR_KEY, journal),
                        position,
                        read,
                        outcome,
                    )?);
                    progress(outcome);
                }
            }
            Some(get_changes_response::Kind::Complete(complete)) if planned => {
                if let Some(previous) = reading.take() {
                    let read = joined(previous).await?;
                    commit_batch(store, (ANCHOR_KEY, journal), position, read, outcome)?;
                    progress(outcome);
                }
                let digest = complete
                    .at_target
                    .and_then(|info| info.store)
                    .and_then(|store| store.digest)
                    .ok_or_else(|| {
                        PullError::Invalid(ConversionError::missing(
                            "complete.at_target.store.digest",
                        ))
                    })?;
                return Ok(CatalogDigest::try_from(digest)?);
            }
            _ => {
                return Err(PullError::Protocol(
                    "messages out of order: a plan first, then batches, then completion".into(),
                ));
            }
        }
    }
    Err(PullError::Protocol(
        "the stream ended without completion; the next pull resumes from the last batch applied"
            .into(),
    ))
}

/// The batch a reading task produced. A panic while reading is a bug and goes on as one.
async fn joined(
    task: tokio::task::JoinHandle<Result<ReadBatch, PullError>>,
) -> Result<ReadBatch, PullError> {
    match task.await {
        Ok(read) => read,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(PullError::Transport(tonic::Status::cancelled(
            "the node is shutting down",
        ))),
    }
}

/// One batch of a change stream, and how to read its documents.
pub(crate) struct IncomingBatch<'a> {
    pub batch: v1::ChangeBatch,
    pub limits: &'a ParseLimits,
    /// A store whose documents were parsed when they entered it: a document it holds with
    /// the same bytes, as its update's latest revision, takes its summary from there.
    pub parsed_in: Option<&'a CatalogStore>,
}

/// Applies one batch of a change stream to `store`, atomically with its resume anchor
/// under metadata key `anchor_key` (and the journal's record of it, if any), after checking
/// that it starts exactly at `position` (the gap-and-duplicate check). Returns the new
/// position.
pub(crate) fn apply_batch(
    store: &CatalogStore,
    anchor: (&str, Option<&Journal<'_>>),
    position: Option<ParentAnchor>,
    incoming: IncomingBatch<'_>,
    outcome: &mut PullOutcome,
) -> Result<ParentAnchor, PullError> {
    let IncomingBatch {
        batch,
        limits,
        parsed_in,
    } = incoming;
    let read = read_batch(batch, &DocumentReader { limits, parsed_in })?;
    commit_batch(store, anchor, position, read, outcome)
}

/// A batch whose documents are read and checked, ready to apply; reading needs nothing
/// of the store it goes to, so it can run ahead of the batch before it being applied.
struct ReadBatch {
    from: Option<ParentAnchor>,
    resume: ParentAnchor,
    body: ReadBody,
    bytes_received: u64,
}

enum ReadBody {
    Log(Vec<CatalogChange>),
    /// A snapshot part's revisions; which held updates it deletes is decided when it is
    /// applied, against the store as it is then.
    Snapshot {
        after: Option<RevisionId>,
        through: Option<RevisionId>,
        puts: Vec<CatalogChange>,
        offered: BTreeSet<UpdateId>,
    },
}

fn read_batch(batch: v1::ChangeBatch, reader: &DocumentReader<'_>) -> Result<ReadBatch, PullError> {
    let from = batch.from.map(ParentAnchor::from_wire).transpose()?;
    let resume = ParentAnchor::from_wire(
        batch
            .resume_anchor
            .ok_or_else(|| PullError::Invalid(ConversionError::missing("batch.resume_anchor")))?,
    )?;
    let mut bytes_received = 0;
    let body = match batch.body {
        Some(v1::change_batch::Body::Log(log)) => {
            ReadBody::Log(log_changes(log, reader, &mut bytes_received)?)
        }
        Some(v1::change_batch::Body::Snapshot(part)) => {
            snapshot_puts(part, reader, &mut bytes_received)?
        }
        None => return Err(PullError::Invalid(ConversionError::missing("batch.body"))),
    };
    Ok(ReadBatch {
        from,
        resume,
        body,
        bytes_received,
    })
}

/// The apply half of [`apply_batch`].
fn commit_batch(
    store: &CatalogStore,
    (anchor_key, journal): (&str, Option<&Journal<'_>>),
    position: Option<ParentAnchor>,
    read: ReadBatch,
    outcome: &mut PullOutcome,
) -> Result<ParentAnchor, PullError> {
    if read.from != position {
        return Err(PullError::Protocol(format!(
            "a batch starts at {:?} but this store stands at {position:?}: a gap or a repeat",
            read.from
        )));
    }
    outcome.bytes_received += read.bytes_received;
    let changes = match read.body {
        ReadBody::Log(changes) => changes,
        ReadBody::Snapshot {
            after,
            through,
            puts,
            offered,
        } => {
            outcome.snapshot = true;
            with_snapshot_deletions(store, (after, through), puts, &offered)?
        }
    };
    let anchor =
        postcard::to_allocvec(&read.resume).expect("postcard serializes plain structs into a Vec");
    let mut recorded = match journal {
        Some(journal) => journal.record(&changes, position)?,
        None => Vec::new(),
    };
    let mut metadata: Vec<(&str, Vec<u8>)> = recorded
        .iter_mut()
        .map(|(key, value)| (key.as_str(), std::mem::take(value)))
        .collect();
    metadata.push((anchor_key, anchor));
    let applied = store.apply(changes, &metadata)?;
    outcome.add(&applied);
    outcome.batches += 1;
    Ok(read.resume)
}

/// Turns received documents into puts (see [`IncomingBatch`]).
struct DocumentReader<'a> {
    limits: &'a ParseLimits,
    parsed_in: Option<&'a CatalogStore>,
}

impl DocumentReader<'_> {
    fn put(
        &self,
        document: v1::UpdateDocument,
        bytes_received: &mut u64,
    ) -> Result<CatalogChange, PullError> {
        let (mut document, compressed) = RevisionDocument::with_compressed(document)?;
        *bytes_received += document.document.len() as u64;
        // Compressed documents could hold far more than a message: a batch may still hold
        // only what an uncompressed one could, so a batch in memory stays bounded.
        if *bytes_received > MAX_MESSAGE_BYTES as u64 {
            return Err(PullError::Protocol(format!(
                "a batch carries more than {} MiB of documents (compressed ones counted at their own length)",
                MAX_MESSAGE_BYTES >> 20
            )));
        }
        if let Some(parsed_in) = self.parsed_in {
            // The same bytes parse to the same revision, so its identity was checked too.
            let content = ContentHash::of(&document.document);
            if let Some(summary) = parsed_in.summary_of_held(document.id, content)? {
                return Ok(CatalogChange::PutSummarized(SummarizedRevision {
                    summary,
                    content,
                    document: Some(document.document),
                    compressed,
                }));
            }
        }
        // The bytes move into the revision; `document` keeps the declared identity to check.
        let bytes = std::mem::take(&mut document.document);
        let revision = parse_update_owned(bytes, self.limits).map_err(|e| PullError::Document {
            id: document.id,
            reason: e.to_string(),
        })?;
        document.check_identity(revision.id)?;
        Ok(match compressed {
            // Kept as it came: the store need not compress the document again.
            Some(compressed) => CatalogChange::PutSummarized(SummarizedRevision {
                compressed: Some(compressed),
                ..SummarizedRevision::from(revision)
            }),
            None => CatalogChange::Put(revision),
        })
    }

    /// A revision the parent named instead of sending (site-database replication after the
    /// update-server phase): the put takes the document from the update-server store, which
    /// must hold exactly those bytes, and the summary from there too when it is the update's
    /// latest revision (an older one is parsed from the stored bytes). A revision the
    /// update-server store does not hold so is [`PullError::Unresolved`].
    fn reference(&self, reference: v1::RevisionReference) -> Result<CatalogChange, PullError> {
        let HeldReference { id, content } = HeldReference::try_from(reference)?;
        let Some(held_in) = self.parsed_in else {
            return Err(PullError::Protocol(format!(
                "the parent sent {id} by reference, which this stream did not ask for"
            )));
        };
        if let Some(summary) = held_in.summary_of_held(id, content)? {
            return Ok(CatalogChange::PutSummarized(SummarizedRevision {
                summary,
                content,
                document: None,
                compressed: None,
            }));
        }
        let Some(document) = held_in.document_with(id, content)? else {
            return Err(PullError::Unresolved { id });
        };
        let revision = parse_update_owned(document, self.limits).map_err(|e| {
            PullError::Store(StoreError::Corrupt {
                what: format!("the stored document of {id} no longer parses: {e}"),
            })
        })?;
        if revision.id != id {
            return Err(PullError::Store(StoreError::Corrupt {
                what: format!(
                    "the document stored for {id} is filed under {}",
                    revision.id
                ),
            }));
        }
        Ok(CatalogChange::Put(revision))
    }
}

fn log_changes(
    log: v1::ChangeLogPart,
    reader: &DocumentReader<'_>,
    bytes_received: &mut u64,
) -> Result<Vec<CatalogChange>, PullError> {
    log.changes
        .into_iter()
        .map(|change| match change.payload {
            Some(v1::catalog_change::Payload::Revision(document)) => {
                reader.put(document, bytes_received)
            }
            Some(v1::catalog_change::Payload::Reference(reference)) => reader.reference(reference),
            Some(v1::catalog_change::Payload::Deleted(id)) => {
                Ok(CatalogChange::Delete(RevisionId::try_from(id)?.update_id))
            }
            None => Err(PullError::Invalid(ConversionError::missing(
                "change.payload",
            ))),
        })
        .collect()
}

/// A snapshot part's revisions, read and checked to lie inside the part's range.
fn snapshot_puts(
    part: v1::SnapshotPart,
    reader: &DocumentReader<'_>,
    bytes_received: &mut u64,
) -> Result<ReadBody, PullError> {
    let after = part.after.map(RevisionId::try_from).transpose()?;
    let through = part.through.map(RevisionId::try_from).transpose()?;
    let mut puts = Vec::with_capacity(part.revisions.len() + part.references.len());
    let mut offered: BTreeSet<UpdateId> = BTreeSet::new();
    let carried = part.revisions.into_iter().map(Incoming::Document);
    let named = part.references.into_iter().map(Incoming::Reference);
    for incoming in carried.chain(named) {
        let change = match incoming {
            Incoming::Document(document) => reader.put(document, bytes_received)?,
            Incoming::Reference(reference) => reader.reference(reference)?,
        };
        let id = match &change {
            CatalogChange::Put(revision) => Some(revision.id),
            CatalogChange::PutSummarized(revision) => Some(revision.summary.id),
            CatalogChange::Delete(_) => None,
        };
        if let Some(id) = id {
            let inside = after.is_none_or(|a| id > a) && through.is_none_or(|t| id <= t);
            if !inside {
                return Err(PullError::Protocol(format!(
                    "snapshot part carries {id} outside its range"
                )));
            }
            offered.insert(id.update_id);
        }
        puts.push(change);
    }
    Ok(ReadBody::Snapshot {
        after,
        through,
        puts,
        offered,
    })
}

/// A revision of a snapshot part, carried or named.
enum Incoming {
    Document(v1::UpdateDocument),
    Reference(v1::RevisionReference),
}

/// The changes a snapshot part calls for: its revisions, and the deletion of every update
/// the store holds wholly inside the part's range that the part does not contain.
fn with_snapshot_deletions(
    store: &CatalogStore,
    (after, through): (Option<RevisionId>, Option<RevisionId>),
    mut changes: Vec<CatalogChange>,
    offered: &BTreeSet<UpdateId>,
) -> Result<Vec<CatalogChange>, PullError> {
    // Updates the store holds inside the range, whole: not offered any more.
    let mut cursor = after.map(|a| a.update_id);
    loop {
        let held = store.held_updates(cursor, 1_000)?;
        let Some(last) = held.last() else { break };
        cursor = Some(last.update_id);
        for update in &held {
            let first = RevisionId {
                update_id: update.update_id,
                revision: update.revisions.first().map_or(0, |r| r.0),
            };
            let newest = RevisionId {
                update_id: update.update_id,
                revision: update.revisions.last().map_or(0, |r| r.0),
            };
            if through.is_some_and(|t| first > t) {
                return Ok(changes);
            }
            let whole = after.is_none_or(|a| first > a) && through.is_none_or(|t| newest <= t);
            if whole && !offered.contains(&update.update_id) {
                changes.push(CatalogChange::Delete(update.update_id));
            }
        }
    }
    Ok(changes)
}
