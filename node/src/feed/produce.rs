//! Producing a feed from a store's change log: the sending end of the change stream.
//!
//! [`ChangesStart::of`] checks a reader's anchor against the store and decides between the
//! log tail and a (possibly resumed) snapshot; [`BatchProducer`] then makes the batches one
//! at a time — the snapshot parts the reader needs, if any, then the log tail — each
//! starting where the previous one left the reader. The update server's change stream and
//! site-database replication share it: one rule for snapshot parts, log parts and their
//! anchors.

use sitesync_metadata::RevisionId;
use sitesync_proto::HeldReference;

use super::{
    Anchor, Batch, BatchBody, Change, ChangePayload, DocumentForm, SentDocument, SentRevision,
    SnapshotPart,
};
use crate::store::{CatalogStore, ChangeKind, LoggedChange, StoreError, StoreState};

/// Change-log records read per store call while filling a batch.
const LOG_PAGE: usize = 512;

/// What a reference counts for against a batch's size: the reader still applies the
/// revision, so a batch of references is about as much work as a batch of documents.
const REFERENCE_WEIGHT: usize = 4 << 10;

/// What a log record counts for beyond its document.
const RECORD_WEIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(
        "the anchor is at sequence {anchor} but this store's log ends at {last}: the reader is ahead of its upstream, which means the upstream's store was restored from an older copy; resync the reader"
    )]
    ReaderAhead { anchor: u64, last: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a change stream starts (and, for the update server's stream, ends).
#[derive(Debug, Clone)]
pub struct ChangesStart {
    /// The anchor the reader sent: the first batch starts from exactly it.
    since: Option<Anchor>,
    log_id: [u8; 16],
    /// The reader's position in our log, or `None` when it needs a snapshot.
    tail_from: Option<u64>,
    /// Resuming an interrupted snapshot after this revision.
    snapshot_after: Option<RevisionId>,
    /// The log position the snapshot is as of: the tail replays every record after it. A
    /// resumed snapshot keeps the position it started with, or changes made between the two
    /// streams to revisions it already installed would be missed.
    snapshot_as_of: u64,
    /// The store's state when the call started: the update server's stream ends at its
    /// position.
    pub target: StoreState,
}

impl ChangesStart {
    /// Checks the reader's anchor against the store's `state` and decides between the log
    /// tail and a (possibly resumed) snapshot.
    pub fn of(since: Option<Anchor>, state: &StoreState) -> Result<Self, ProduceError> {
        let mut start = Self {
            since,
            log_id: state.log_id,
            tail_from: None,
            snapshot_after: None,
            snapshot_as_of: state.last_sequence,
            target: *state,
        };
        let Some(since) = since else {
            return Ok(start);
        };
        if since.log_id != state.log_id {
            // Another log (or none yet): the reader's numbers mean nothing here.
            return Ok(start);
        }
        if since.sequence > state.last_sequence {
            return Err(ProduceError::ReaderAhead {
                anchor: since.sequence,
                last: state.last_sequence,
            });
        }
        let retained = since.sequence + 1 >= state.first_retained_sequence;
        match since.snapshot_through {
            Some(through) if retained => {
                start.snapshot_after = Some(through);
                start.snapshot_as_of = since.sequence;
            }
            // The log the resumed snapshot would replay from is gone: start over.
            Some(_) => {}
            None if retained => {
                start.tail_from = Some(since.sequence);
            }
            // Older than the retained log: a snapshot.
            None => {}
        }
        Ok(start)
    }

    /// How many changes the stream is expected to carry, for the reader's progress.
    pub fn estimated_changes(&self) -> u64 {
        match self.tail_from {
            Some(from) => self.target.last_sequence - from,
            None => self.target.revisions,
        }
    }

    /// The anchor the stream ends at.
    pub fn target_anchor(&self) -> Anchor {
        Anchor::at(self.log_id, self.target.last_sequence)
    }

    /// Whether the stream is the log tail after the reader's anchor (no snapshot).
    pub fn is_tail(&self) -> bool {
        self.tail_from.is_some()
    }
}

/// What a stream from a [`ChangesStart`] will carry, by record kind: the revisions of a
/// snapshot, or the log records the tail sends (a record whose revision the store no longer
/// holds is superseded and not sent, as [`BatchProducer`] does). Reads the log, not the
/// documents. Exact while the store does not change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub snapshot: u64,
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
}

impl RecordCounts {
    pub fn of(start: &ChangesStart, store: &CatalogStore) -> Result<Self, StoreError> {
        let mut counts = Self::default();
        let Some(mut position) = start.tail_from else {
            if start.snapshot_after.is_some() || start.snapshot_as_of != start.target.last_sequence
            {
                // A resumed snapshot or one with a tail: not what an export makes.
                return Err(StoreError::Corrupt {
                    what: "records of a resumed snapshot are not counted".into(),
                });
            }
            counts.snapshot = start.target.revisions;
            return Ok(counts);
        };
        let target = start.target.last_sequence;
        while position < target {
            let records = store.changes_since(position, LOG_PAGE)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                if record.sequence > target {
                    return Ok(counts);
                }
                position = record.sequence;
                let count = match record.kind {
                    ChangeKind::Deleted => &mut counts.deleted,
                    _ if store.content_of(record.revision)?.is_none() => continue,
                    ChangeKind::New => &mut counts.new,
                    ChangeKind::Changed => &mut counts.changed,
                    ChangeKind::Expired => &mut counts.expired,
                };
                *count += 1;
            }
        }
        Ok(counts)
    }
}

/// Produces the batches of one change stream, one at a time: the snapshot parts a reader
/// needs (if any), then the log tail. Each batch starts where the previous one left the
/// reader, so a stream built from it keeps the contract's continuity rule. It holds no
/// store, so it can move between blocking tasks while a stream waits for its reader.
#[derive(Debug, Clone)]
pub struct BatchProducer {
    log_id: [u8; 16],
    max_batch: usize,
    /// Documents go compressed: the reader asked for them so.
    lz4: bool,
    /// Where the reader stands once it has applied every batch produced so far.
    reader: Option<Anchor>,
    phase: Phase,
}

/// What the next batch of a [`BatchProducer`] is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A snapshot part covering the revisions after `after`, as of `as_of`.
    Snapshot {
        as_of: u64,
        after: Option<RevisionId>,
    },
    /// Log records after `position`.
    Tail { position: u64 },
}

impl BatchProducer {
    /// `max_batch` bytes of documents at most per batch (a single larger document travels
    /// alone); with `lz4`, documents go in their compressed form.
    pub fn new(start: &ChangesStart, max_batch: usize, lz4: bool) -> Self {
        Self {
            log_id: start.log_id,
            max_batch,
            lz4,
            reader: start.since,
            phase: match start.tail_from {
                Some(position) => Phase::Tail { position },
                None => Phase::Snapshot {
                    as_of: start.snapshot_as_of,
                    after: start.snapshot_after,
                },
            },
        }
    }

    /// Whether a snapshot part is still to come.
    pub fn snapshot_pending(&self) -> bool {
        matches!(self.phase, Phase::Snapshot { .. })
    }

    /// The next batch, or `None` once the reader has reached `target` (a log position) and
    /// the snapshot, if any, is complete. With `held_by_reader`, a revision that store holds
    /// with the same bytes goes as a reference: the reader holds a copy of that store.
    pub fn next_batch(
        &mut self,
        store: &CatalogStore,
        held_by_reader: Option<&CatalogStore>,
        target: u64,
    ) -> Result<Option<Batch>, StoreError> {
        let source = Source {
            store,
            held_by_reader,
            lz4: self.lz4,
        };
        match self.phase {
            Phase::Snapshot { as_of, after } => self.snapshot_part(source, as_of, after).map(Some),
            Phase::Tail { position } if position < target => {
                self.log_part(source, position, target).map(Some)
            }
            Phase::Tail { .. } => Ok(None),
        }
    }

    /// The records after `position` up to `target`, as many as fit in a batch.
    fn log_part(
        &mut self,
        source: Source<'_>,
        position: u64,
        target: u64,
    ) -> Result<Batch, StoreError> {
        let store = source.store;
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut last = position;
        'fill: while last < target {
            let records = store.changes_since(last, LOG_PAGE)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                if record.sequence > target {
                    break 'fill;
                }
                if let Some(change) = change_of(source, record)? {
                    let size = change_size(&change);
                    if bytes + size > self.max_batch && !changes.is_empty() {
                        break 'fill;
                    }
                    bytes += size;
                    changes.push(change);
                }
                last = record.sequence;
            }
        }
        let resume = Anchor::at(self.log_id, last);
        self.phase = Phase::Tail { position: last };
        Ok(Batch {
            from: self.reader.replace(resume),
            resume,
            body: BatchBody::Log(changes),
        })
    }

    /// The next part of the catalog in snapshot order; the last part moves the producer to
    /// the log tail after `as_of`.
    fn snapshot_part(
        &mut self,
        source: Source<'_>,
        as_of: u64,
        after: Option<RevisionId>,
    ) -> Result<Batch, StoreError> {
        let store = source.store;
        let ids = store.revisions_after(after, LOG_PAGE)?;
        let mut revisions = Vec::new();
        let mut references = Vec::new();
        let mut bytes = 0;
        let mut through = after;
        for id in ids {
            let Some(revision) = source.revision(id)? else {
                // Deleted since the page was read; the tail's deletion covers it.
                continue;
            };
            let size = revision_size(&revision);
            if bytes + size > self.max_batch && bytes > 0 {
                break;
            }
            bytes += size;
            match revision {
                SentRevision::Document(document) => revisions.push(document),
                SentRevision::Reference(reference) => references.push(reference),
            }
            through = Some(id);
        }
        // The last part names no `through`: it completes the snapshot.
        let done = store.revisions_after(through, 1)?.is_empty();
        let mut resume = Anchor::at(self.log_id, as_of);
        if done {
            self.phase = Phase::Tail { position: as_of };
        } else {
            resume.snapshot_through = through;
            self.phase = Phase::Snapshot {
                as_of,
                after: through,
            };
        }
        Ok(Batch {
            from: self.reader.replace(resume),
            resume,
            body: BatchBody::Snapshot(SnapshotPart {
                as_of,
                after,
                through: if done { None } else { through },
                revisions,
                references,
            }),
        })
    }
}

/// The store a stream serves, and the store whose copy its reader holds, if any.
#[derive(Clone, Copy)]
struct Source<'a> {
    store: &'a CatalogStore,
    held_by_reader: Option<&'a CatalogStore>,
    /// Documents go compressed.
    lz4: bool,
}

impl Source<'_> {
    /// Revision `id` as it goes out, or `None` when the store no longer holds it: a
    /// reference when the reader's copy holds the same bytes, else the document.
    fn revision(&self, id: RevisionId) -> Result<Option<SentRevision>, StoreError> {
        if let Some(held_by_reader) = self.held_by_reader {
            let Some(content) = self.store.content_of(id)? else {
                return Ok(None);
            };
            if held_by_reader.content_of(id)? == Some(content) {
                return Ok(Some(SentRevision::Reference(HeldReference { id, content })));
            }
        }
        let form = if self.lz4 {
            self.store.compressed_document(id)?.map(DocumentForm::Lz4)
        } else {
            self.store.document(id)?.map(DocumentForm::Plain)
        };
        Ok(form.map(|form| SentRevision::Document(SentDocument { id, form })))
    }
}

fn revision_size(revision: &SentRevision) -> usize {
    match revision {
        SentRevision::Document(document) => document.form.len(),
        SentRevision::Reference(_) => REFERENCE_WEIGHT,
    }
}

/// One log record as it goes out, or `None` when a later record supersedes it (its
/// revision is no longer held).
fn change_of(source: Source<'_>, record: LoggedChange) -> Result<Option<Change>, StoreError> {
    let payload = match record.kind {
        ChangeKind::Deleted => ChangePayload::Deleted(record.revision),
        ChangeKind::New | ChangeKind::Changed | ChangeKind::Expired => {
            match source.revision(record.revision)? {
                Some(revision) => ChangePayload::Revision(revision),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(Change {
        sequence: record.sequence,
        kind: record.kind,
        payload,
    }))
}

fn change_size(change: &Change) -> usize {
    match &change.payload {
        ChangePayload::Revision(SentRevision::Document(document)) => {
            document.form.len() + RECORD_WEIGHT
        }
        ChangePayload::Revision(SentRevision::Reference(_)) => REFERENCE_WEIGHT,
        ChangePayload::Deleted(_) => RECORD_WEIGHT,
    }
}
