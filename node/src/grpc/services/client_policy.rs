//! `sitesync.v1.ClientPolicy`: the site-wide machine policy clients fetch (S8) and the
//! legacy scan catalog they download (S13).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sitesync_proto::convert::timestamp_to_wire;
use sitesync_proto::{FILE_CHUNK_BYTES, v1};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::super::wire::machine_policy;
use crate::clock::TimestampExt as _;
use crate::legacy_catalog::LegacyCatalog;
use crate::node::NodeState;
use crate::sync::manager::SyncManager;

#[derive(Debug, Clone)]
pub struct ClientPolicyService {
    node: Arc<NodeState>,
    sync: SyncManager,
    legacy: LegacyCatalog,
}

impl ClientPolicyService {
    pub fn new(node: Arc<NodeState>, sync: SyncManager, legacy: LegacyCatalog) -> Self {
        Self { node, sync, legacy }
    }
}

/// Chunks in flight to one client: the stream holds at most this many MiB at a time.
const CHUNKS_IN_FLIGHT: usize = 4;

#[tonic::async_trait]
impl v1::client_policy_server::ClientPolicy for ClientPolicyService {
    async fn get_machine_policy(
        &self,
        _request: Request<v1::GetMachinePolicyRequest>,
    ) -> Result<Response<v1::MachinePolicy>, Status> {
        machine_policy(&self.node, &self.sync).map(Response::new)
    }

    type GetLegacyScanCatalogStream = ReceiverStream<Result<v1::LegacyScanCatalogChunk, Status>>;

    /// The index (from memory: it is small) or one shard (read from its file a chunk at a
    /// time, so a client costs at most a few chunks of memory), from the offset asked for.
    async fn get_legacy_scan_catalog(
        &self,
        request: Request<v1::GetLegacyScanCatalogRequest>,
    ) -> Result<Response<Self::GetLegacyScanCatalogStream>, Status> {
        let request = request.into_inner();
        let Some(held) = self.legacy.held() else {
            return Err(Status::not_found(if self.legacy.is_host() {
                "this site holds no legacy scan catalog yet: it builds one after its first successful sync, every refresh, or on `sitesyncctl catalog build-legacy`"
            } else {
                "this site holds no legacy scan catalog yet: it takes one from its parent once the catalog host has built it"
            }));
        };
        let next_refresh_at = sitesync_legacy::built_at(&held.index)
            .map(|t| timestamp_to_wire(t.saturating_add(self.legacy.refresh())));
        let header = |total_bytes, start_offset| v1::LegacyScanCatalogHeader {
            version: held.index.build,
            generated_at: held.index.built_at,
            next_refresh_at,
            total_bytes,
            start_offset,
            catalog_digest: None,
            shard: request.shard.clone(),
        };
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        if request.shard.is_empty() {
            // An index of another build than the one being resumed starts again at 0.
            let offset = if request.resume_version == held.index.build {
                request.resume_offset
            } else {
                0
            };
            let total = held.file.len() as u64;
            if offset > total {
                return Err(beyond_end(offset, total));
            }
            let header = header(total, offset);
            tokio::spawn(async move {
                let sha256 = Sha256::digest(&held.file).to_vec();
                let mut at = offset as usize;
                let _ = tx.send(Ok(header_chunk(header))).await;
                while at < held.file.len() {
                    let end = (at + FILE_CHUNK_BYTES).min(held.file.len());
                    let chunk = data_chunk(at as u64, held.file[at..end].to_vec());
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    at = end;
                }
                let _ = tx.send(Ok(trailer_chunk(total, sha256))).await;
            });
        } else {
            let Some(path) = self.legacy.shard_path(&request.shard) else {
                return Err(Status::not_found(format!(
                    "this site holds no shard {}: fetch the index again, a newer build names other shards",
                    hex(&request.shard)
                )));
            };
            let mut file = std::fs::File::open(&path)
                .map_err(|e| Status::not_found(format!("shard {}: {e}", hex(&request.shard))))?;
            let total = file
                .metadata()
                .map_err(|e| Status::internal(format!("shard {}: {e}", hex(&request.shard))))?
                .len();
            let offset = request.resume_offset;
            if offset > total {
                return Err(beyond_end(offset, total));
            }
            let header = header(total, offset);
            // Read on a blocking thread: the file stays open, so a rebuild that removes
            // the shard meanwhile does not cut the download short.
            tokio::task::spawn_blocking(move || {
                let send = |chunk| tx.blocking_send(chunk).is_ok();
                if !send(Ok(header_chunk(header))) {
                    return;
                }
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; FILE_CHUNK_BYTES];
                let mut at = 0u64;
                if let Err(e) = file.seek(SeekFrom::Start(0)) {
                    let _ = send(Err(Status::internal(e.to_string())));
                    return;
                }
                loop {
                    let n = match file.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            let _ = send(Err(Status::internal(format!("reading the shard: {e}"))));
                            return;
                        }
                    };
                    hasher.update(&buffer[..n]);
                    let end = at + n as u64;
                    if end > offset {
                        let from = offset.saturating_sub(at) as usize;
                        let chunk = data_chunk(at.max(offset), buffer[from..n].to_vec());
                        if !send(Ok(chunk)) {
                            return;
                        }
                    }
                    at = end;
                }
                let _ = send(Ok(trailer_chunk(at, hasher.finalize().to_vec())));
            });
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn beyond_end(offset: u64, total: u64) -> Status {
    Status::invalid_argument(format!(
        "resume_offset {offset} is beyond the end of the file ({total} bytes): start again from 0"
    ))
}

fn header_chunk(header: v1::LegacyScanCatalogHeader) -> v1::LegacyScanCatalogChunk {
    v1::LegacyScanCatalogChunk {
        kind: Some(v1::legacy_scan_catalog_chunk::Kind::Header(header)),
    }
}

fn data_chunk(offset: u64, data: Vec<u8>) -> v1::LegacyScanCatalogChunk {
    v1::LegacyScanCatalogChunk {
        kind: Some(v1::legacy_scan_catalog_chunk::Kind::Chunk(v1::FileChunk {
            offset,
            data,
        })),
    }
}

fn trailer_chunk(total_bytes: u64, sha256: Vec<u8>) -> v1::LegacyScanCatalogChunk {
    v1::LegacyScanCatalogChunk {
        kind: Some(v1::legacy_scan_catalog_chunk::Kind::Trailer(
            v1::FileTrailer {
                total_bytes,
                sha256,
            },
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
