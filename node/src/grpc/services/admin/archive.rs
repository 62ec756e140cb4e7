//! `Admin.ExportCatalog` and `Admin.ImportCatalog` (S12): the export file moved over the
//! operator's connection. The file is written and read by [`crate::grpc::archive`]; here
//! its bytes go out in [`v1::FileChunk`]s as they are written, in bounded memory, and come
//! in to a spool file under the data directory, which the import then verifies and applies
//! and which is removed afterwards whatever happens.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use sitesync_proto::v1;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::super::super::wire::{store_info, wire_run};
use crate::feed::Anchor;
use crate::grpc::archive::{self, ImportReport};
use crate::node::NodeState;
use crate::sync::manager::SyncManager;
use crate::telemetry::TraceContext;

/// File chunks in flight to the exporting operator: bounded memory whatever the file's size.
const EXPORT_WINDOW: usize = 4;

/// Starts an export: plans it (refusals come back at once), then writes the file on the
/// blocking pool into the returned stream.
pub(super) async fn export(
    node: Arc<NodeState>,
    request: v1::ExportCatalogRequest,
) -> Result<ReceiverStream<Result<v1::ExportCatalogChunk, Status>>, Status> {
    let since = request
        .since
        .map(Anchor::try_from)
        .transpose()
        .map_err(|e| Status::from(e.within("since")))?;
    let planner = node.clone();
    let (plan, start) = tokio::task::spawn_blocking(move || archive::plan_export(&planner, since))
        .await
        .map_err(|e| Status::internal(format!("the export stopped: {e}")))??;
    let (sender, receiver) = mpsc::channel(EXPORT_WINDOW);
    let first = v1::ExportCatalogChunk {
        kind: Some(v1::export_catalog_chunk::Kind::Start(v1::ExportStart {
            header: Some(plan.header.clone()),
            estimated_records: plan.estimated_records,
        })),
    };
    sender
        .send(Ok(first))
        .await
        .map_err(|_| Status::cancelled("the operator went away"))?;
    let span = tracing::info_span!(
        "export",
        kind = plan.header.kind,
        records = plan.estimated_records
    );
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let sink = ChunkSink {
            sender: sender.clone(),
            buffer: Vec::with_capacity(sitesync_proto::FILE_CHUNK_BYTES),
            offset: 0,
        };
        let end = archive::export(&node, &plan, &start, sink)
            .map_err(Status::from)
            .and_then(|mut sink| {
                sink.flush().map_err(|e| Status::cancelled(e.to_string()))?;
                Ok(sink.offset)
            });
        let last = end.map(|total_bytes| v1::ExportCatalogChunk {
            kind: Some(v1::export_catalog_chunk::Kind::End(v1::ExportEnd {
                total_bytes,
            })),
        });
        match &last {
            Ok(_) => tracing::info!("export written"),
            Err(e) => tracing::warn!(error = %e.message(), "export failed"),
        }
        let _ = sender.blocking_send(last);
    });
    Ok(ReceiverStream::new(receiver))
}

/// Sends what is written as file chunks of at most `FILE_CHUNK_BYTES`, waiting while the
/// operator is behind.
struct ChunkSink {
    sender: mpsc::Sender<Result<v1::ExportCatalogChunk, Status>>,
    buffer: Vec<u8>,
    /// Bytes sent so far.
    offset: u64,
}

impl Write for ChunkSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = sitesync_proto::FILE_CHUNK_BYTES - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == sitesync_proto::FILE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(sitesync_proto::FILE_CHUNK_BYTES),
        );
        let length = data.len() as u64;
        let chunk = v1::ExportCatalogChunk {
            kind: Some(v1::export_catalog_chunk::Kind::Chunk(v1::FileChunk {
                offset: self.offset,
                data,
            })),
        };
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the operator went away")
        })?;
        self.offset += length;
        Ok(())
    }
}

/// Receives a file into a spool under the data directory, then imports it.
pub(super) async fn import(
    node: Arc<NodeState>,
    sync: SyncManager,
    mut stream: tonic::Streaming<v1::ImportCatalogChunk>,
    trace: Option<TraceContext>,
) -> Result<Response<v1::ImportCatalogResponse>, Status> {
    let header = match stream.message().await? {
        Some(v1::ImportCatalogChunk {
            kind: Some(v1::import_catalog_chunk::Kind::Header(header)),
        }) => header,
        _ => {
            return Err(Status::invalid_argument(
                "an import starts with its header, then the file's bytes",
            ));
        }
    };
    // Refused before the file is received.
    archive::accepts_imports(&node)?;
    let spool = Spool::create(&node).await?;
    let mut file = tokio::fs::File::create(&spool.path)
        .await
        .map_err(|e| Status::internal(format!("cannot spool the import: {e}")))?;
    let mut received = 0u64;
    while let Some(message) = stream.message().await? {
        let Some(v1::import_catalog_chunk::Kind::Chunk(chunk)) = message.kind else {
            return Err(Status::invalid_argument(
                "only file bytes may follow an import's header",
            ));
        };
        if chunk.offset != received {
            return Err(Status::invalid_argument(format!(
                "file bytes at offset {} where {received} were expected: bytes are missing, repeated or out of order",
                chunk.offset
            )));
        }
        if chunk.data.len() > sitesync_proto::FILE_CHUNK_BYTES {
            return Err(Status::invalid_argument(format!(
                "a file chunk of {} bytes is larger than {}",
                chunk.data.len(),
                sitesync_proto::FILE_CHUNK_BYTES
            )));
        }
        received += chunk.data.len() as u64;
        if received > header.total_bytes {
            return Err(Status::invalid_argument(format!(
                "more bytes arrived than the {} the header announced",
                header.total_bytes
            )));
        }
        file.write_all(&chunk.data)
            .await
            .map_err(|e| Status::internal(format!("cannot spool the import: {e}")))?;
    }
    if received != header.total_bytes {
        return Err(Status::invalid_argument(format!(
            "the file was cut off: {received} of {} bytes arrived",
            header.total_bytes
        )));
    }
    file.flush()
        .await
        .map_err(|e| Status::internal(format!("cannot spool the import: {e}")))?;
    drop(file);
    let name = if header.file_name.is_empty() {
        "the imported file".to_owned()
    } else {
        header.file_name.clone()
    };
    let report = archive::import(&node, &sync, &spool.path, &name, header.dry_run, trace).await?;
    Ok(Response::new(response(&node, report)))
}

/// The response for a finished import.
fn response(node: &NodeState, report: ImportReport) -> v1::ImportCatalogResponse {
    let run = report.run.as_ref().map(wire_run);
    v1::ImportCatalogResponse {
        header: Some(report.header),
        already_held: report.already_held,
        sync_id: report.run.as_ref().map_or(0, |r| r.id),
        counts: run.and_then(|r| r.counts),
        update_server: Some(store_info(&node.database.update_server().state())),
        catalog_version: node.held_catalog_version(),
    }
}

/// A file being received, removed when dropped.
struct Spool {
    path: PathBuf,
}

impl Spool {
    async fn create(node: &NodeState) -> Result<Self, Status> {
        let dir = archive::spool_dir(&node.config.data_dir);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!("incoming-{}.ssx", uuid::Uuid::new_v4()));
        Ok(Self { path })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
