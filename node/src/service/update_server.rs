//! `sitesync.v1.UpdateServer`: downstream nodes pull the update-server store from here.
//!
//! A `GetChanges` stream is produced on a blocking task (store reads are synchronous) into a
//! bounded channel: a slow reader fills the channel and the producer waits, so memory stays
//! at a couple of batches whatever the reader's speed.
//!
//! The batches themselves come from `BatchProducer`, which `SiteReplication` shares (see
//! [`super::site_replication`]): one rule for snapshot parts, log parts and their anchors.

use std::sync::Arc;

use sitesync_metadata::RevisionId;
use sitesync_proto::v1::{self, get_changes_response};
use sitesync_proto::{HeldReference, MAX_IDS_PER_REQUEST, TARGET_BATCH_BYTES, sent_document_len};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{anchor, log_id_text};
use crate::node::NodeState;
use crate::store::{CatalogStore, ChangeKind, LoggedChange, StoreError, StoreState};

/// Batches the producer may run ahead of the reader.
const STREAM_BUFFER: usize = 2;
/// Change-log records read per store call while filling a batch.
const LOG_PAGE: usize = 512;

#[derive(Debug, Clone)]
pub struct UpdateServerService {
    node: Arc<NodeState>,
}

impl UpdateServerService {
    pub fn new(node: Arc<NodeState>) -> Self {
        Self { node }
    }
}

type ChangesSender = mpsc::Sender<Result<v1::GetChangesResponse, Status>>;

#[tonic::async_trait]
impl v1::update_server_server::UpdateServer for UpdateServerService {
    async fn get_catalog_info(
        &self,
        _request: Request<v1::GetCatalogInfoRequest>,
    ) -> Result<Response<v1::CatalogInfo>, Status> {
        Ok(Response::new(self.node.catalog_info()))
    }

    type GetChangesStream = ReceiverStream<Result<v1::GetChangesResponse, Status>>;

    async fn get_changes(
        &self,
        request: Request<v1::GetChangesRequest>,
    ) -> Result<Response<Self::GetChangesStream>, Status> {
        let request = request.into_inner();
        let max_batch = match request.max_batch_bytes as usize {
            0 => TARGET_BATCH_BYTES,
            n => n.clamp(1, TARGET_BATCH_BYTES),
        };
        let start = ChangesStart::of(request.since, &self.node.database.update_server().state())?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let store: &CatalogStore = node.database.update_server();
            let target = start.target;
            let producer = BatchProducer::new(&start, max_batch, request.accept_lz4);
            let result = stream_changes(store, start, producer, &sender).and_then(|()| {
                send(
                    &sender,
                    get_changes_response::Kind::Complete(v1::ChangesComplete {
                        at_target: Some(node.catalog_info_at(&target)),
                    }),
                )
            });
            if let Err(StreamError::Failed(status)) = result {
                let _ = sender.blocking_send(Err(status));
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type GetUpdateDocumentsStream = ReceiverStream<Result<v1::UpdateDocumentBatch, Status>>;

    async fn get_update_documents(
        &self,
        request: Request<v1::GetUpdateDocumentsRequest>,
    ) -> Result<Response<Self::GetUpdateDocumentsStream>, Status> {
        let request = request.into_inner();
        let asked = request.revisions.len() + request.updates.len();
        if asked > MAX_IDS_PER_REQUEST {
            return Err(Status::invalid_argument(format!(
                "{asked} ids asked for; at most {MAX_IDS_PER_REQUEST} per request: split the request"
            )));
        }
        let revisions = request
            .revisions
            .into_iter()
            .map(RevisionId::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let updates = request
            .updates
            .into_iter()
            .map(sitesync_metadata::UpdateId::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let store = node.database.update_server();
            let mut batch = v1::UpdateDocumentBatch::default();
            let mut bytes = 0;
            let mut wanted = revisions;
            for update in updates {
                match store.revision_numbers(update) {
                    Ok(held) if held.is_empty() => batch.missing_updates.push(update.into()),
                    Ok(held) => wanted.extend(held),
                    Err(e) => {
                        let _ = sender.blocking_send(Err(e.into()));
                        return;
                    }
                }
            }
            for id in wanted {
                match store.document(id) {
                    Ok(Some(document)) => {
                        if bytes + document.len() > TARGET_BATCH_BYTES
                            && !batch.documents.is_empty()
                        {
                            if sender
                                .blocking_send(Ok(std::mem::take(&mut batch)))
                                .is_err()
                            {
                                return;
                            }
                            bytes = 0;
                        }
                        bytes += document.len();
                        batch.documents.push(v1::UpdateDocument {
                            id: Some(id.into()),
                            document,
                            lz4_document: Vec::new(),
                        });
                    }
                    Ok(None) => batch.missing_revisions.push(id.into()),
                    Err(e) => {
                        let _ = sender.blocking_send(Err(e.into()));
                        return;
                    }
                }
            }
            let _ = sender.blocking_send(Ok(batch));
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Where a change stream starts (and, for `GetChanges`, ends).
#[derive(Debug, Clone)]
pub(crate) struct ChangesStart {
    /// The anchor the reader sent: the first batch starts from exactly it.
    since: Option<v1::Anchor>,
    log_id: [u8; 16],
    /// The reader's position in our log, or `None` when it needs a snapshot.
    tail_from: Option<u64>,
    /// Resuming an interrupted snapshot after this revision.
    snapshot_after: Option<RevisionId>,
    /// The log position the snapshot is as of: the tail replays every record after it. A
    /// resumed snapshot keeps the position it started with, or changes made between the two
    /// streams to revisions it already installed would be missed.
    snapshot_as_of: u64,
    /// The store's state when the call started: a `GetChanges` stream ends at its position.
    target: StoreState,
}

impl ChangesStart {
    /// Checks the reader's anchor against the store's `state` and decides between the log
    /// tail and a (possibly resumed) snapshot.
    pub(crate) fn of(since: Option<v1::Anchor>, state: &StoreState) -> Result<Self, Status> {
        let ours = log_id_text(state.log_id);
        let mut start = Self {
            since: since.clone(),
            log_id: state.log_id,
            tail_from: None,
            snapshot_after: None,
            snapshot_as_of: state.last_sequence,
            target: *state,
        };
        let Some(since) = since else {
            return Ok(start);
        };
        if since.log_id != ours {
            // Another log (or none yet): the reader's numbers mean nothing here.
            return Ok(start);
        }
        if since.sequence > state.last_sequence {
            return Err(Status::failed_precondition(format!(
                "the anchor is at sequence {} but this store's log ends at {}: the reader is ahead of its upstream, which means the upstream's store was restored from an older copy; resync the reader",
                since.sequence, state.last_sequence
            )));
        }
        let retained = since.sequence + 1 >= state.first_retained_sequence;
        match since.snapshot_through {
            Some(through) if retained => {
                start.snapshot_after = Some(
                    RevisionId::try_from(through)
                        .map_err(|e| e.within("since.snapshot_through"))?,
                );
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
}

/// Why a stream stopped early.
enum StreamError {
    /// The reader went away; nothing to report.
    Gone,
    /// A failure to report to the reader.
    Failed(Status),
}

impl From<crate::store::StoreError> for StreamError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Failed(e.into())
    }
}

fn send(sender: &ChangesSender, kind: get_changes_response::Kind) -> Result<(), StreamError> {
    sender
        .blocking_send(Ok(v1::GetChangesResponse { kind: Some(kind) }))
        .map_err(|_| StreamError::Gone)
}

fn stream_changes(
    store: &CatalogStore,
    start: ChangesStart,
    mut producer: BatchProducer,
    sender: &ChangesSender,
) -> Result<(), StreamError> {
    let target = start.target.last_sequence;
    let estimated = match start.tail_from {
        Some(from) => target - from,
        None => start.target.revisions,
    };
    send(
        sender,
        get_changes_response::Kind::Plan(v1::ChangesPlan {
            target: Some(anchor(start.log_id, target)),
            snapshot: producer.snapshot_pending(),
            estimated_changes: estimated,
        }),
    )?;
    while let Some(batch) = producer.next_batch(store, None, target)? {
        send(sender, get_changes_response::Kind::Batch(batch))?;
    }
    Ok(())
}

/// Produces the batches of one change stream, one at a time: the snapshot parts a reader
/// needs (if any), then the log tail. Each batch starts where the previous one left the
/// reader, so a stream built from it keeps the contract's continuity rule. It holds no
/// store, so it can move between blocking tasks while a stream waits for its reader.
#[derive(Debug, Clone)]
pub(crate) struct BatchProducer {
    log_id: [u8; 16],
    max_batch: usize,
    /// Documents go compressed (`lz4_document`): the reader asked for them so.
    lz4: bool,
    /// Where the reader stands once it has applied every batch produced so far.
    reader: Option<v1::Anchor>,
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
    pub(crate) fn new(start: &ChangesStart, max_batch: usize, lz4: bool) -> Self {
        Self {
            log_id: start.log_id,
            max_batch,
            lz4,
            reader: start.since.clone(),
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
    pub(crate) fn snapshot_pending(&self) -> bool {
        matches!(self.phase, Phase::Snapshot { .. })
    }

    /// The next batch, or `None` once the reader has reached `target` (a log position) and
    /// the snapshot, if any, is complete. With `held_by_reader`, a revision that store holds
    /// with the same bytes goes as a reference: the reader holds a copy of that store.
    pub(crate) fn next_batch(
        &mut self,
        store: &CatalogStore,
        held_by_reader: Option<&CatalogStore>,
        target: u64,
    ) -> Result<Option<v1::ChangeBatch>, StoreError> {
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
    ) -> Result<v1::ChangeBatch, StoreError> {
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
                if let Some(change) = wire_change(source, record)? {
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
        let resume = anchor(self.log_id, last);
        self.phase = Phase::Tail { position: last };
        Ok(v1::ChangeBatch {
            from: self.reader.replace(resume.clone()),
            body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart { changes })),
            resume_anchor: Some(resume),
        })
    }

    /// The next part of the catalog in snapshot order; the last part moves the producer to
    /// the log tail after `as_of`.
    fn snapshot_part(
        &mut self,
        source: Source<'_>,
        as_of: u64,
        after: Option<RevisionId>,
    ) -> Result<v1::ChangeBatch, StoreError> {
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
            let size = revision.size();
            if bytes + size > self.max_batch && bytes > 0 {
                break;
            }
            bytes += size;
            match revision {
                Outgoing::Document(document) => revisions.push(document),
                Outgoing::Reference(reference) => references.push(reference),
            }
            through = Some(id);
        }
        // The last part names no `through`: it completes the snapshot.
        let done = store.revisions_after(through, 1)?.is_empty();
        let mut resume = anchor(self.log_id, as_of);
        if done {
            self.phase = Phase::Tail { position: as_of };
        } else {
            resume.snapshot_through = through.map(Into::into);
            self.phase = Phase::Snapshot {
                as_of,
                after: through,
            };
        }
        Ok(v1::ChangeBatch {
            from: self.reader.replace(resume.clone()),
            body: Some(v1::change_batch::Body::Snapshot(v1::SnapshotPart {
                as_of_sequence: as_of,
                after: after.map(Into::into),
                through: if done { None } else { through.map(Into::into) },
                revisions,
                references,
            })),
            resume_anchor: Some(resume),
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

/// A revision as it goes on the wire.
enum Outgoing {
    Document(v1::UpdateDocument),
    Reference(v1::RevisionReference),
}

/// What a reference counts for against a batch's size: the reader still applies the
/// revision, so a batch of references is about as much work as a batch of documents.
const REFERENCE_WEIGHT: usize = 4 << 10;

impl Outgoing {
    fn size(&self) -> usize {
        match self {
            Self::Document(document) => sent_document_len(document),
            Self::Reference(_) => REFERENCE_WEIGHT,
        }
    }
}

impl Source<'_> {
    /// Revision `id` for the wire, or `None` when the store no longer holds it: a reference
    /// when the reader's copy holds the same bytes, else the document.
    fn revision(&self, id: RevisionId) -> Result<Option<Outgoing>, StoreError> {
        if let Some(held_by_reader) = self.held_by_reader {
            let Some(content) = self.store.content_of(id)? else {
                return Ok(None);
            };
            if held_by_reader.content_of(id)? == Some(content) {
                return Ok(Some(Outgoing::Reference(
                    HeldReference { id, content }.into(),
                )));
            }
        }
        let id_on_wire = Some(id.into());
        let document = if self.lz4 {
            self.store
                .compressed_document(id)?
                .map(|lz4_document| v1::UpdateDocument {
                    id: id_on_wire,
                    document: Vec::new(),
                    lz4_document,
                })
        } else {
            self.store.document(id)?.map(|document| v1::UpdateDocument {
                id: id_on_wire,
                document,
                lz4_document: Vec::new(),
            })
        };
        Ok(document.map(Outgoing::Document))
    }
}

/// The wire form of one log record, or `None` when a later record supersedes it (its
/// revision is no longer held).
fn wire_change(
    source: Source<'_>,
    record: LoggedChange,
) -> Result<Option<v1::CatalogChange>, StoreError> {
    let payload = match record.kind {
        ChangeKind::Deleted => v1::catalog_change::Payload::Deleted(record.revision.into()),
        ChangeKind::New | ChangeKind::Changed | ChangeKind::Expired => {
            match source.revision(record.revision)? {
                Some(Outgoing::Document(document)) => {
                    v1::catalog_change::Payload::Revision(document)
                }
                Some(Outgoing::Reference(reference)) => {
                    v1::catalog_change::Payload::Reference(reference)
                }
                None => return Ok(None),
            }
        }
    };
    let kind = match record.kind {
        ChangeKind::New => v1::ChangeKind::New,
        ChangeKind::Changed => v1::ChangeKind::Changed,
        ChangeKind::Expired => v1::ChangeKind::Expired,
        ChangeKind::Deleted => v1::ChangeKind::Deleted,
    };
    Ok(Some(v1::CatalogChange {
        sequence: record.sequence,
        kind: kind as i32,
        payload: Some(payload),
    }))
}

fn change_size(change: &v1::CatalogChange) -> usize {
    match &change.payload {
        Some(v1::catalog_change::Payload::Revision(document)) => sent_document_len(document) + 64,
        Some(v1::catalog_change::Payload::Reference(_)) => REFERENCE_WEIGHT,
        _ => 64,
    }
}
