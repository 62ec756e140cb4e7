//! Applying a feed's batches to a store: the receiving end of the change stream.
//!
//! Every batch must start exactly where the store stands (the gap-and-duplicate check of
//! the contract); its documents are parsed and checked (a document must be filed under its
//! own identity), then applied to the store in one atomic write *together with the new
//! anchor* (and the journal's record of it), and flushed. A crash at any point therefore
//! resumes at a batch boundary, and a batch is never applied twice.
//!
//! Reading a batch ([`read`]) needs nothing of the store it goes to, so a follower reads
//! the next batch on the blocking pool while it applies the one before ([`commit`]).
//!
//! A snapshot part says which range it covers; updates the store holds wholly inside that
//! range but that the part does not contain are no longer offered, and are deleted.
//!
//! Site-database replication after the update-server phase may name revisions instead of
//! carrying them: the document and summary are then taken from the node's update-server
//! store ([`DocumentReader::parsed_in`]); a document carried all the same that store holds
//! with the same bytes is not parsed a second time either.

use std::collections::BTreeSet;

use sitesync_metadata::{ContentHash, ParseLimits, RevisionId, UpdateId, parse_update_owned};

use crate::publishing::CustomCheck;
use sitesync_proto::{HeldReference, MAX_MESSAGE_BYTES, RevisionDocument, decompress_document};

use super::journal::Journal;
use super::{Anchor, Batch, BatchBody, ChangePayload, DocumentForm, FeedError, SentDocument};
use super::{SentRevision, SnapshotPart};
use crate::store::{ApplyOutcome, CatalogChange, CatalogStore, StoreError, SummarizedRevision};

/// What applying a feed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedOutcome {
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
    pub batches: u64,
    pub bytes_received: u64,
    /// Whether a snapshot was (re)installed.
    pub snapshot: bool,
    /// The digest both the source (at the stream's target) and this store hold.
    pub digest: sitesync_metadata::CatalogDigest,
}

impl FeedOutcome {
    fn add(&mut self, outcome: &ApplyOutcome) {
        self.new += outcome.new;
        self.changed += outcome.changed;
        self.expired += outcome.expired;
        self.deleted += outcome.deleted;
    }
}

/// The anchor `store` holds under metadata key `key`, if any.
pub fn stored_anchor(store: &CatalogStore, key: &str) -> Result<Option<Anchor>, StoreError> {
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

/// Where a batch goes: the store, the metadata key of its resume anchor, and the undo
/// journal that records it, if any.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub store: &'a CatalogStore,
    pub anchor_key: &'a str,
    pub journal: Option<&'a Journal<'a>>,
}

/// A batch whose documents are read and checked, ready to apply.
#[derive(Debug)]
pub struct ReadBatch {
    from: Option<Anchor>,
    resume: Anchor,
    body: ReadBody,
    bytes_received: u64,
}

#[derive(Debug)]
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

/// Reads and checks a batch's documents (see [`DocumentReader`]).
pub fn read(batch: Batch, reader: &DocumentReader<'_>) -> Result<ReadBatch, FeedError> {
    let mut bytes_received = 0;
    let body = match batch.body {
        BatchBody::Log(changes) => ReadBody::Log(
            changes
                .into_iter()
                .map(|change| match change.payload {
                    ChangePayload::Revision(revision) => {
                        reader.revision(revision, &mut bytes_received)
                    }
                    ChangePayload::Deleted(id) => Ok(CatalogChange::Delete(id.update_id)),
                })
                .collect::<Result<_, _>>()?,
        ),
        BatchBody::Snapshot(part) => snapshot_puts(part, reader, &mut bytes_received)?,
    };
    Ok(ReadBatch {
        from: batch.from,
        resume: batch.resume,
        body,
        bytes_received,
    })
}

/// Applies a read batch to `target` after checking that it starts exactly at `position`
/// (the gap-and-duplicate check). Returns the new position.
pub fn commit(
    target: Target<'_>,
    position: Option<Anchor>,
    read: ReadBatch,
    outcome: &mut FeedOutcome,
) -> Result<Anchor, FeedError> {
    if read.from != position {
        return Err(FeedError::Protocol(format!(
            "a batch starts at {:?} but this store stands at {position:?}: a gap or a repeat",
            read.from
        )));
    }
    let store = target.store;
    let span = tracing::info_span!(
        "feed.batch",
        otel.name = format!("apply batch ({})", target.anchor_key),
        anchor_key = target.anchor_key,
        revisions = tracing::field::Empty,
        bytes = read.bytes_received,
        snapshot = matches!(read.body, ReadBody::Snapshot { .. }),
    )
    .entered();
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
    let mut recorded = match target.journal {
        Some(journal) => journal.record(&changes, position)?,
        None => Vec::new(),
    };
    let mut metadata: Vec<(&str, Vec<u8>)> = recorded
        .iter_mut()
        .map(|(key, value)| (key.as_str(), std::mem::take(value)))
        .collect();
    metadata.push((target.anchor_key, anchor));
    span.record("revisions", changes.len());
    let applied = store.apply(changes, &metadata)?;
    outcome.add(&applied);
    outcome.batches += 1;
    Ok(read.resume)
}

/// Turns received documents into puts.
#[derive(Debug, Clone, Copy)]
pub struct DocumentReader<'a> {
    pub limits: &'a ParseLimits,
    /// A store whose documents were parsed when they entered it: a document it holds with
    /// the same bytes, as its update's latest revision, takes its summary from there, and a
    /// revision named by reference takes its document from there.
    pub parsed_in: Option<&'a CatalogStore>,
    /// With signed catalog versions: custom updates are checked against the offered
    /// version's publisher delegations before they are stored (S6).
    pub custom: Option<&'a CustomCheck>,
}

impl DocumentReader<'_> {
    fn revision(
        &self,
        revision: SentRevision,
        bytes_received: &mut u64,
    ) -> Result<CatalogChange, FeedError> {
        match revision {
            SentRevision::Document(document) => self.put(document, bytes_received),
            SentRevision::Reference(reference) => self.reference(reference),
        }
    }

    fn put(
        &self,
        sent: SentDocument,
        bytes_received: &mut u64,
    ) -> Result<CatalogChange, FeedError> {
        let (document, compressed) = match sent.form {
            DocumentForm::Plain(bytes) => (bytes, None),
            DocumentForm::Lz4(lz4) => (decompress_document(&lz4)?, Some(lz4)),
        };
        let mut document = RevisionDocument {
            id: sent.id,
            document,
        };
        *bytes_received += document.document.len() as u64;
        // Compressed documents could hold far more than a message: a batch may still hold
        // only what an uncompressed one could, so a batch in memory stays bounded.
        if *bytes_received > MAX_MESSAGE_BYTES as u64 {
            return Err(FeedError::Protocol(format!(
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
        let revision = parse_update_owned(bytes, self.limits).map_err(|e| FeedError::Document {
            id: document.id,
            reason: e.to_string(),
        })?;
        document.check_identity(revision.id)?;
        if let Some(custom) = self.custom {
            custom.check(&revision)?;
        }
        Ok(match compressed {
            // Kept as it came: the store need not compress the document again.
            Some(compressed) => CatalogChange::PutSummarized(SummarizedRevision {
                compressed: Some(compressed),
                ..SummarizedRevision::from(revision)
            }),
            None => CatalogChange::Put(revision),
        })
    }

    /// A revision the source named instead of sending (site-database replication after the
    /// update-server phase): the put takes the document from the update-server store, which
    /// must hold exactly those bytes, and the summary from there too when it is the update's
    /// latest revision (an older one is parsed from the stored bytes). A revision the
    /// update-server store does not hold so is [`FeedError::Unresolved`].
    fn reference(&self, reference: HeldReference) -> Result<CatalogChange, FeedError> {
        let HeldReference { id, content } = reference;
        let Some(held_in) = self.parsed_in else {
            return Err(FeedError::Protocol(format!(
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
            return Err(FeedError::Unresolved { id });
        };
        let revision = parse_update_owned(document, self.limits).map_err(|e| {
            FeedError::Store(StoreError::Corrupt {
                what: format!("the stored document of {id} no longer parses: {e}"),
            })
        })?;
        if revision.id != id {
            return Err(FeedError::Store(StoreError::Corrupt {
                what: format!(
                    "the document stored for {id} is filed under {}",
                    revision.id
                ),
            }));
        }
        Ok(CatalogChange::Put(revision))
    }
}

/// A snapshot part's revisions, read and checked to lie inside the part's range.
fn snapshot_puts(
    part: SnapshotPart,
    reader: &DocumentReader<'_>,
    bytes_received: &mut u64,
) -> Result<ReadBody, FeedError> {
    let SnapshotPart {
        after,
        through,
        revisions,
        references,
        ..
    } = part;
    let mut puts = Vec::with_capacity(revisions.len() + references.len());
    let mut offered: BTreeSet<UpdateId> = BTreeSet::new();
    let carried = revisions.into_iter().map(SentRevision::Document);
    let named = references.into_iter().map(SentRevision::Reference);
    for incoming in carried.chain(named) {
        let change = reader.revision(incoming, bytes_received)?;
        let id = match &change {
            CatalogChange::Put(revision) => Some(revision.id),
            CatalogChange::PutSummarized(revision) => Some(revision.summary.id),
            CatalogChange::Delete(_) => None,
        };
        if let Some(id) = id {
            let inside = after.is_none_or(|a| id > a) && through.is_none_or(|t| id <= t);
            if !inside {
                return Err(FeedError::Protocol(format!(
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

/// The changes a snapshot part calls for: its revisions, and the deletion of every update
/// the store holds wholly inside the part's range that the part does not contain.
fn with_snapshot_deletions(
    store: &CatalogStore,
    (after, through): (Option<RevisionId>, Option<RevisionId>),
    mut changes: Vec<CatalogChange>,
    offered: &BTreeSet<UpdateId>,
) -> Result<Vec<CatalogChange>, FeedError> {
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
