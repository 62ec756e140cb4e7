//! `sitesync.v1.UpdateServer`: downstream nodes pull the update-server store from here.
//!
//! A `GetChanges` stream is produced on a blocking task (store reads are synchronous) into a
//! bounded channel: a slow reader fills the channel and the producer waits, so memory stays
//! at a couple of batches whatever the reader's speed.
//!
//! The batches themselves come from the feed's [`BatchProducer`], which `SiteReplication`
//! shares: one rule for snapshot parts, log parts and their anchors.

use std::sync::Arc;

use sitesync_metadata::RevisionId;
use sitesync_proto::v1::{self, get_changes_response};
use sitesync_proto::{MAX_IDS_PER_REQUEST, TARGET_BATCH_BYTES};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::super::wire::{catalog_info, catalog_info_at};
use crate::feed::Anchor;
use crate::feed::produce::{BatchProducer, ChangesStart};
use crate::node::NodeState;
use crate::store::CatalogStore;

/// Batches the producer may run ahead of the reader.
const STREAM_BUFFER: usize = 2;

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
        Ok(Response::new(catalog_info(&self.node)))
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
        let since = request
            .since
            .map(Anchor::try_from)
            .transpose()
            .map_err(|e| e.within("since"))?;
        let start = ChangesStart::of(since, &self.node.database.update_server().state())?;
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
                        at_target: Some(catalog_info_at(&node, &target)),
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
    send(
        sender,
        get_changes_response::Kind::Plan(v1::ChangesPlan {
            target: Some(start.target_anchor().into()),
            snapshot: producer.snapshot_pending(),
            estimated_changes: start.estimated_changes(),
        }),
    )?;
    while let Some(batch) = producer.next_batch(store, None, target)? {
        send(sender, get_changes_response::Kind::Batch(batch.into()))?;
    }
    Ok(())
}
