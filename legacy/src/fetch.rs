//! Fetching a catalog from a node into a directory (`ClientPolicy.GetLegacyScanCatalog`):
//! what `sitesyncctl catalog download` does for a client and what a child site does to
//! take its parent's catalog.
//!
//! The index comes first and is checked (signature, freshness, not older than what the
//! directory holds) before any shard is asked for. Only the shards the directory lacks, or
//! holds damaged, are fetched; each arrives in `shards/<name>.partial`, so an interrupted
//! download resumes from the bytes it has, and becomes `shards/<name>.lz4` only once its
//! length and SHA-256 are the index's. The index is written last, atomically: until then
//! the directory's catalog is the one it held, whatever failed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sitesync_proto::v1;
use sitesync_proto::v1::client_policy_client::ClientPolicyClient;
use tonic::transport::Channel;

use crate::build::write_atomically;
use crate::verify::{CatalogError, check_shard, file_digest};
use crate::{HELD_BUILD_FILE, INDEX_FILE, MAX_INDEX_BYTES, SHARDS_DIR, shard_file_name};

/// Why a fetch failed. The directory's catalog is as it was.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the node holds no legacy scan catalog: {0}")]
    NotFound(String),
    #[error("GetLegacyScanCatalog: {0}")]
    Call(tonic::Status),
    #[error("the node's stream is malformed: {0}")]
    Stream(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<tonic::Status> for FetchError {
    fn from(status: tonic::Status) -> Self {
        if status.code() == tonic::Code::NotFound {
            Self::NotFound(status.message().to_owned())
        } else {
            Self::Call(status)
        }
    }
}

/// Shards downloaded at once.
const SHARDS_IN_FLIGHT: usize = 4;

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub signed: v1::SignedLegacyCatalogIndex,
    pub index: v1::LegacyCatalogIndex,
    /// SHA-256 of the index file as written.
    pub index_sha256: Vec<u8>,
    /// The build the directory held before, if any.
    pub previous_build: Option<u64>,
    pub shards_fetched: usize,
    /// Shard bytes received (a resumed shard counts only what was sent).
    pub bytes_fetched: u64,
    /// Shards resumed from a partial download, and the bytes they already had.
    pub shards_resumed: usize,
    pub bytes_resumed: u64,
    /// Shards the directory already held with the right content.
    pub shards_held: usize,
    /// The whole catalog's size: every shard and the index.
    pub total_bytes: u64,
}

/// How a fetch judges the shards a directory already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldShards {
    /// By length and SHA-256: a damaged shard is fetched again (a client's download).
    Hashed,
    /// By length only: cheap enough to run every few minutes (a site asking its parent).
    /// Every shard's SHA-256 was checked when it arrived.
    Sized,
}

/// What a fetch is doing, for a progress bar or a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The index passed; `shards` of `bytes` bytes must be fetched.
    Plan { shards: usize, bytes: u64 },
    /// `bytes` more shard bytes arrived.
    Received { bytes: u64 },
}

/// The build a directory holds: the higher of its index's (read, not verified) and the one
/// recorded by the last fetch or build (so an older index put back by hand is refused).
pub fn held_build(dir: &Path) -> Option<u64> {
    let from_index = crate::verify::held_index(dir).map(|held| held.index.build);
    let recorded = std::fs::read_to_string(dir.join(HELD_BUILD_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    from_index.max(recorded)
}

/// Records `build` as the newest held in `dir` (never lowers it).
pub fn record_held_build(dir: &Path, build: u64) -> std::io::Result<()> {
    if held_build(dir).is_some_and(|held| held > build) {
        return Ok(());
    }
    write_atomically(&dir.join(HELD_BUILD_FILE), format!("{build}\n").as_bytes())
}

/// Fetches the catalog the node behind `client` serves into `dir`. `check` judges the
/// index before any shard is fetched (see [`crate::verify::check_index`]), given the build
/// `dir` holds; `held` says how the shards `dir` holds are judged.
pub async fn fetch(
    client: &mut ClientPolicyClient<Channel>,
    dir: &Path,
    held: HeldShards,
    check: impl FnOnce(
        &v1::SignedLegacyCatalogIndex,
        Option<u64>,
    ) -> Result<v1::LegacyCatalogIndex, CatalogError>,
    mut progress: impl FnMut(Progress),
) -> Result<FetchReport, FetchError> {
    let shards_dir = dir.join(SHARDS_DIR);
    std::fs::create_dir_all(&shards_dir).map_err(|source| FetchError::Io {
        path: shards_dir.clone(),
        source,
    })?;
    let previous_build = held_build(dir);
    let previous_shards = crate::build::previous_shards(dir);

    let mut index_bytes = Vec::new();
    receive(client, Vec::new(), 0, MAX_INDEX_BYTES, |data| {
        index_bytes.extend_from_slice(data);
        Ok(())
    })
    .await?;
    let signed = v1::SignedLegacyCatalogIndex::decode(index_bytes.as_slice())
        .map_err(|e| CatalogError::Malformed(e.to_string()))?;
    let index = check(&signed, previous_build)?;

    // What is missing or damaged here, in index order.
    let mut wanted = Vec::new();
    let mut report = FetchReport {
        signed: signed.clone(),
        index_sha256: Sha256::digest(&index_bytes).to_vec(),
        previous_build,
        shards_fetched: 0,
        bytes_fetched: 0,
        shards_resumed: 0,
        bytes_resumed: 0,
        shards_held: 0,
        total_bytes: index.shards.iter().map(|s| s.bytes).sum::<u64>() + index_bytes.len() as u64,
        index: index.clone(),
    };
    for shard in &index.shards {
        let whole = match held {
            HeldShards::Hashed => check_shard(dir, shard).is_ok(),
            HeldShards::Sized => std::fs::metadata(shards_dir.join(shard_file_name(&shard.sha256)))
                .is_ok_and(|m| m.len() == shard.bytes),
        };
        if whole {
            report.shards_held += 1;
        } else {
            wanted.push(shard);
        }
    }
    progress(Progress::Plan {
        shards: wanted.len(),
        bytes: wanted.iter().map(|s| s.bytes).sum(),
    });
    // A few shards at a time: a catalog is many small files, and one at a time would wait
    // a round trip for each.
    let mut pending = wanted.into_iter().cloned();
    let mut tasks = tokio::task::JoinSet::new();
    let (received, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    for shard in pending.by_ref().take(SHARDS_IN_FLIGHT) {
        tasks.spawn(fetch_shard(
            client.clone(),
            shards_dir.clone(),
            shard,
            received.clone(),
        ));
    }
    let mut failure = None;
    let mut count = |bytes: u64, report: &mut FetchReport| {
        report.bytes_fetched += bytes;
        progress(Progress::Received { bytes });
    };
    loop {
        tokio::select! {
            Some(bytes) = arrivals.recv() => count(bytes, &mut report),
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(resumed))) => {
                    report.shards_fetched += 1;
                    if resumed > 0 {
                        report.shards_resumed += 1;
                        report.bytes_resumed += resumed;
                    }
                    // After a failure, the shards in flight finish (each is kept if it
                    // arrived whole) and no more are asked for.
                    if failure.is_none()
                        && let Some(shard) = pending.next()
                    {
                        tasks.spawn(fetch_shard(
                            client.clone(),
                            shards_dir.clone(),
                            shard,
                            received.clone(),
                        ));
                    }
                }
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    failure.get_or_insert(FetchError::Stream(format!("a shard's download stopped: {e}")));
                }
            },
        }
    }
    while let Ok(bytes) = arrivals.try_recv() {
        count(bytes, &mut report);
    }
    if let Some(e) = failure {
        return Err(e);
    }

    // The commit: from here the directory holds the new catalog.
    let index_path = dir.join(INDEX_FILE);
    write_atomically(&index_path, &index_bytes).map_err(|source| FetchError::Io {
        path: index_path,
        source,
    })?;
    record_held_build(dir, index.build).map_err(|source| FetchError::Io {
        path: dir.join(HELD_BUILD_FILE),
        source,
    })?;
    crate::build::remove_unnamed_shards(&shards_dir, &index, previous_shards);
    Ok(report)
}

/// Fetches one shard into `shards/<name>.partial` (resuming what is there) and, once it is
/// whole and has its SHA-256, renames it into place. Sends the bytes as they arrive to
/// `received`; returns the bytes it resumed from.
async fn fetch_shard(
    mut client: ClientPolicyClient<Channel>,
    shards_dir: PathBuf,
    shard: v1::LegacyCatalogShard,
    received: tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<u64, FetchError> {
    let name = shard_file_name(&shard.sha256);
    let path = shards_dir.join(&name);
    let partial = shards_dir.join(format!("{name}.partial"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FetchError::Io { path, source }
    };
    let mut offset = std::fs::metadata(&partial).map_or(0, |m| m.len());
    if offset > shard.bytes {
        offset = 0;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&partial)
        .map_err(io(&partial))?;
    file.set_len(offset).map_err(io(&partial))?;
    let mut writer = std::io::BufWriter::new(file);
    std::io::Seek::seek(&mut writer, std::io::SeekFrom::Start(offset)).map_err(io(&partial))?;
    let outcome = receive(
        &mut client,
        shard.sha256.clone(),
        offset,
        shard.bytes,
        |data| {
            writer.write_all(data).map_err(io(&partial))?;
            let _ = received.send(data.len() as u64);
            Ok(())
        },
    )
    .await;
    let file = writer.into_inner().map_err(|e| FetchError::Io {
        path: partial.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&partial))?;
    drop(file);
    match outcome {
        Ok(()) => {}
        // A shard the node holds shorter than the index says: refused below by length.
        Err(FetchError::Stream(_)) if shard_len(&partial) != shard.bytes => {}
        // Interrupted: the partial file stays, and the next download resumes from it.
        Err(e) => return Err(e),
    }
    let found = shard_len(&partial);
    if found != shard.bytes {
        let _ = std::fs::remove_file(&partial);
        return Err(CatalogError::ShardLength {
            name,
            expected: shard.bytes,
            found,
        }
        .into());
    }
    if file_digest(&partial).map_err(io(&partial))?.1 != shard.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(CatalogError::ShardDigest { name }.into());
    }
    std::fs::rename(&partial, &path).map_err(io(&path))?;
    Ok(offset)
}

fn shard_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Streams one file (the index when `shard` is empty) from `offset`, handing each chunk to
/// `sink`; checks the header, the chunks' offsets, at most `limit` bytes in all, and the
/// trailer's length. (The SHA-256 a shard must have is the index's, checked by the caller;
/// the index's own is its signature.)
async fn receive(
    client: &mut ClientPolicyClient<Channel>,
    shard: Vec<u8>,
    offset: u64,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let mut stream = client
        .get_legacy_scan_catalog(v1::GetLegacyScanCatalogRequest {
            resume_version: 0,
            resume_offset: offset,
            shard,
        })
        .await?
        .into_inner();
    let mut at = offset;
    let mut total = None;
    while let Some(message) = stream.message().await? {
        match message.kind {
            Some(v1::legacy_scan_catalog_chunk::Kind::Header(header)) => {
                if total.is_some() {
                    return Err(FetchError::Stream("a second header".into()));
                }
                if header.start_offset != offset {
                    return Err(FetchError::Stream(format!(
                        "asked from byte {offset}, the node starts at {}",
                        header.start_offset
                    )));
                }
                if header.total_bytes > limit {
                    return Err(FetchError::Stream(format!(
                        "the node sends {} bytes, more than the {limit} expected",
                        header.total_bytes
                    )));
                }
                total = Some(header.total_bytes);
            }
            Some(v1::legacy_scan_catalog_chunk::Kind::Chunk(chunk)) => {
                let Some(total) = total else {
                    return Err(FetchError::Stream("a chunk before the header".into()));
                };
                if chunk.offset != at {
                    return Err(FetchError::Stream(format!(
                        "a chunk at byte {}, expected {at}",
                        chunk.offset
                    )));
                }
                at += chunk.data.len() as u64;
                if at > total {
                    return Err(FetchError::Stream("more bytes than the header says".into()));
                }
                sink(&chunk.data)?;
            }
            Some(v1::legacy_scan_catalog_chunk::Kind::Trailer(trailer)) => {
                if Some(trailer.total_bytes) != total || at != trailer.total_bytes {
                    return Err(FetchError::Stream(format!(
                        "received {at} bytes of {}",
                        trailer.total_bytes
                    )));
                }
                return Ok(());
            }
            None => return Err(FetchError::Stream("an empty message".into())),
        }
    }
    Err(FetchError::Stream(format!(
        "the stream ended at byte {at} without its trailer"
    )))
}
