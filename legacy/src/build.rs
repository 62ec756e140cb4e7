//! Writing a catalog directory from a stream of revisions (see the crate documentation).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sitesync_metadata::{RevisionId, Timestamp, UpdateId};
use sitesync_proto::convert::timestamp_to_wire;
use sitesync_proto::v1;
use sitesync_security::signing::{Algorithm, Signer, SigningError};

use crate::shard::ShardWriter;
use crate::{
    FORMAT_VERSION, INDEX_FILE, LEGACY_INDEX_SIGNATURE_CONTEXT, SHARDS_DIR, shard_file_name,
};

/// Where shards are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPolicy {
    /// One update id in `span` is a boundary: shards hold `span` updates on average.
    pub span: u16,
    /// A shard is also cut once it holds this many uncompressed bytes, so no shard grows
    /// without bound whatever the ids.
    pub max_uncompressed_bytes: u64,
}

impl Default for ShardPolicy {
    fn default() -> Self {
        Self {
            span: 64,
            max_uncompressed_bytes: 8 << 20,
        }
    }
}

impl ShardPolicy {
    /// Whether a shard ends after `update`: the last two bytes of its id (random in every
    /// GUID the catalog holds) fall on a multiple of `span`.
    pub fn is_boundary(&self, update: UpdateId) -> bool {
        let bytes = update.as_bytes();
        u16::from_be_bytes([bytes[14], bytes[15]]).is_multiple_of(self.span.max(1))
    }
}

/// What the index says besides its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexMeta {
    pub top_site_code: String,
    /// Above the previous build's.
    pub build: u64,
    pub catalog_version: u64,
    pub built_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub signed: v1::SignedLegacyCatalogIndex,
    pub index: v1::LegacyCatalogIndex,
    /// Shards written because their content is new.
    pub written: usize,
    /// Shards already in the directory with the same content.
    pub reused: usize,
    pub bytes_written: u64,
    /// The whole catalog's size: every shard and the index.
    pub total_bytes: u64,
}

/// Why a build failed; the directory's previous catalog is left whole.
#[derive(Debug, thiserror::Error)]
pub enum BuildError<E: std::error::Error + 'static> {
    #[error("reading the revisions: {0}")]
    Source(#[source] E),
    #[error("revisions must come in (update id, revision) order: {next} after {previous}")]
    Order {
        previous: RevisionId,
        next: RevisionId,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing the index: {0}")]
    Sign(#[from] SigningError),
}

/// Writes the catalog of `revisions` (in order) into `dir` (see the crate documentation).
pub fn build<E: std::error::Error + 'static>(
    dir: &Path,
    revisions: impl IntoIterator<Item = Result<(RevisionId, Vec<u8>), E>>,
    meta: IndexMeta,
    signer: &Signer,
    policy: ShardPolicy,
) -> Result<BuildReport, BuildError<E>> {
    let shards_dir = dir.join(SHARDS_DIR);
    std::fs::create_dir_all(&shards_dir).map_err(|source| BuildError::Io {
        path: shards_dir.clone(),
        source,
    })?;
    let previous = previous_shards(dir);
    let mut index = v1::LegacyCatalogIndex {
        format_version: FORMAT_VERSION,
        top_site_code: meta.top_site_code,
        build: meta.build,
        catalog_version: meta.catalog_version,
        built_at: Some(timestamp_to_wire(meta.built_at)),
        expires_at: Some(timestamp_to_wire(meta.expires_at)),
        ..Default::default()
    };
    let mut report = Written::default();
    let mut shard = OpenShard::default();
    let mut last: Option<RevisionId> = None;
    for item in revisions {
        let (id, document) = item.map_err(BuildError::Source)?;
        if let Some(previous) = last {
            if id <= previous {
                return Err(BuildError::Order { previous, next: id });
            }
            if id.update_id != previous.update_id {
                index.update_count += 1;
                let full = shard.writer.uncompressed_bytes() >= policy.max_uncompressed_bytes;
                if full || policy.is_boundary(previous.update_id) {
                    let done = std::mem::take(&mut shard);
                    index.shards.push(done.close(&shards_dir, &mut report)?);
                }
            }
        }
        shard.push(id, &document).map_err(|source| BuildError::Io {
            path: shards_dir.clone(),
            source,
        })?;
        index.revision_count += 1;
        last = Some(id);
    }
    if last.is_some() {
        index.update_count += 1;
        index.shards.push(shard.close(&shards_dir, &mut report)?);
    }

    let encoded = index.encode_to_vec();
    let mut message = LEGACY_INDEX_SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(&encoded);
    let (algorithm, signature, signer_certificate) = signer.sign(&message)?;
    let signed = v1::SignedLegacyCatalogIndex {
        index: encoded,
        algorithm: match algorithm {
            Algorithm::EcdsaP256Sha256 => v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
        },
        signature,
        signer_certificate,
    };
    let index_bytes = signed.encode_to_vec();
    write_atomically(&dir.join(INDEX_FILE), &index_bytes).map_err(|source| BuildError::Io {
        path: dir.join(INDEX_FILE),
        source,
    })?;

    crate::fetch::record_held_build(dir, index.build).map_err(|source| BuildError::Io {
        path: dir.join(crate::HELD_BUILD_FILE),
        source,
    })?;
    remove_unnamed_shards(&shards_dir, &index, previous);
    let total_bytes = index.shards.iter().map(|s| s.bytes).sum::<u64>() + index_bytes.len() as u64;
    Ok(BuildReport {
        signed,
        index,
        written: report.written,
        reused: report.reused,
        bytes_written: report.bytes + index_bytes.len() as u64,
        total_bytes,
    })
}

#[derive(Debug, Default)]
struct Written {
    written: usize,
    reused: usize,
    bytes: u64,
}

/// The shard being filled.
#[derive(Debug, Default)]
struct OpenShard {
    writer: ShardWriter,
    first: Option<RevisionId>,
    last: Option<RevisionId>,
}

impl OpenShard {
    fn push(&mut self, id: RevisionId, document: &[u8]) -> std::io::Result<()> {
        self.writer.push(id, document)?;
        self.first.get_or_insert(id);
        self.last = Some(id);
        Ok(())
    }

    /// Writes the shard unless the directory holds it already; returns its index entry.
    fn close<E: std::error::Error + 'static>(
        self,
        dir: &Path,
        report: &mut Written,
    ) -> Result<v1::LegacyCatalogShard, BuildError<E>> {
        let revisions = self.writer.revisions();
        let bytes = self.writer.finish().map_err(|source| BuildError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let sha256 = Sha256::digest(&bytes).to_vec();
        let path = dir.join(shard_file_name(&sha256));
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if held {
            report.reused += 1;
        } else {
            write_atomically(&path, &bytes).map_err(|source| BuildError::Io {
                path: path.clone(),
                source,
            })?;
            report.written += 1;
            report.bytes += bytes.len() as u64;
        }
        Ok(v1::LegacyCatalogShard {
            first: self.first.map(Into::into),
            last: self.last.map(Into::into),
            revisions,
            bytes: bytes.len() as u64,
            sha256,
        })
    }
}

/// Removes the shards (and partial downloads) neither `index` nor the one before it
/// (`previous`) names: a client in the middle of downloading the previous catalog still
/// finds its shards.
pub(crate) fn remove_unnamed_shards(
    shards_dir: &Path,
    index: &v1::LegacyCatalogIndex,
    previous: Vec<String>,
) {
    let keep: HashSet<String> = index
        .shards
        .iter()
        .map(|s| shard_file_name(&s.sha256))
        .chain(previous)
        .collect();
    if let Ok(entries) = std::fs::read_dir(shards_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let shard = name.strip_suffix(".partial").unwrap_or(&name);
            if !keep.contains(shard) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The shard names of the index `dir` holds now, if it can be read.
pub(crate) fn previous_shards(dir: &Path) -> Vec<String> {
    crate::verify::held_index(dir).map_or_else(Vec::new, |held| {
        held.index
            .shards
            .iter()
            .map(|s| shard_file_name(&s.sha256))
            .collect()
    })
}

/// Writes `bytes` to `path` through a temporary file beside it, synced, then renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent()
        && let Ok(directory) = std::fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
    Ok(())
}
