//! Checking a catalog directory before use (see the crate documentation).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use prost::Message as _;
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use sitesync_metadata::Timestamp;
use sitesync_proto::convert::timestamp_from_wire;
use sitesync_proto::v1;
use sitesync_security::Identity;
use sitesync_security::signing::{self, Algorithm, VerifyError};

use crate::{
    FORMAT_VERSION, INDEX_FILE, LEGACY_INDEX_SIGNATURE_CONTEXT, MAX_INDEX_BYTES, SHARDS_DIR,
    shard_file_name,
};

/// Why a catalog is refused. Each names what is wrong, so a client knows what to fetch.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path} holds no legacy scan catalog (no {INDEX_FILE})")]
    NoIndex { path: PathBuf },
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("the catalog index is malformed: {0}")]
    Malformed(String),
    #[error("the catalog index is in format {found}; this sitesync reads format {FORMAT_VERSION}")]
    Format { found: u32 },
    #[error("the catalog index's signature is refused: {0}")]
    Signature(#[from] VerifyError),
    #[error("the catalog index says it is the top site {claimed}'s, but {signer} signed it")]
    WrongSigner { claimed: String, signer: Identity },
    #[error(
        "the catalog (build {build}) expired at {expired_at}: a frozen catalog is refused; fetch the current one"
    )]
    Expired { build: u64, expired_at: Timestamp },
    #[error(
        "the catalog is build {offered}, older than build {held} already held: a rollback is refused"
    )]
    Older { offered: u64, held: u64 },
    #[error("shard {name} is missing")]
    ShardMissing { name: String },
    #[error("shard {name} is {found} bytes, the index says {expected}: it is truncated or padded")]
    ShardLength {
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("shard {name} does not have the SHA-256 the index gives: it is damaged")]
    ShardDigest { name: String },
}

/// A catalog that passed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub signed: v1::SignedLegacyCatalogIndex,
    pub index: v1::LegacyCatalogIndex,
}

/// Reads `dir`'s index without checking it.
pub fn read_index(dir: &Path) -> Result<v1::SignedLegacyCatalogIndex, CatalogError> {
    let path = dir.join(INDEX_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CatalogError::NoIndex {
                path: dir.to_owned(),
            });
        }
        Err(e) => {
            return Err(CatalogError::Unreadable {
                path,
                reason: e.to_string(),
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CatalogError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(CatalogError::Malformed(format!(
            "the index is larger than {MAX_INDEX_BYTES} bytes"
        )));
    }
    v1::SignedLegacyCatalogIndex::decode(bytes.as_slice())
        .map_err(|e| CatalogError::Malformed(e.to_string()))
}

/// The index a directory holds, as stored and decoded (not checked).
#[derive(Debug, Clone)]
pub struct HeldIndex {
    /// `index.bin`'s bytes.
    pub file: Vec<u8>,
    pub index: v1::LegacyCatalogIndex,
}

impl HeldIndex {
    /// Every shard and the index.
    pub fn total_bytes(&self) -> u64 {
        self.index.shards.iter().map(|s| s.bytes).sum::<u64>() + self.file.len() as u64
    }
}

/// The index `dir` holds, if there is one that decodes.
pub fn held_index(dir: &Path) -> Option<HeldIndex> {
    let file = std::fs::read(dir.join(INDEX_FILE)).ok()?;
    let signed = v1::SignedLegacyCatalogIndex::decode(file.as_slice()).ok()?;
    let index = v1::LegacyCatalogIndex::decode(signed.index.as_slice()).ok()?;
    Some(HeldIndex { file, index })
}

/// A file's length and SHA-256, read a block at a time.
pub fn file_digest(path: &Path) -> std::io::Result<(u64, Vec<u8>)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    let mut length = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((length, hasher.finalize().to_vec()));
        }
        length += n as u64;
        hasher.update(&buffer[..n]);
    }
}

/// Checks an index before anything else is read: its signature is a site's of the
/// hierarchy (`cas`) and the top site's it names, its format is this crate's, it has not
/// expired at `now`, and it is not older than build `held`.
pub fn check_index(
    signed: &v1::SignedLegacyCatalogIndex,
    cas: &[CertificateDer<'_>],
    is_revoked: impl Fn(&[u8]) -> bool,
    now: Timestamp,
    held: Option<u64>,
) -> Result<v1::LegacyCatalogIndex, CatalogError> {
    if v1::SignatureAlgorithm::try_from(signed.algorithm)
        != Ok(v1::SignatureAlgorithm::EcdsaP256Sha256)
    {
        return Err(CatalogError::Malformed(format!(
            "signature algorithm {} is not one this sitesync verifies",
            signed.algorithm
        )));
    }
    let mut message = LEGACY_INDEX_SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(&signed.index);
    let signer = signing::verify(
        cas,
        is_revoked,
        &message,
        Algorithm::EcdsaP256Sha256,
        &signed.signature,
        &signed.signer_certificate,
        std::time::SystemTime::now(),
    )?;
    let index = v1::LegacyCatalogIndex::decode(signed.index.as_slice())
        .map_err(|e| CatalogError::Malformed(e.to_string()))?;
    if index.format_version != FORMAT_VERSION {
        return Err(CatalogError::Format {
            found: index.format_version,
        });
    }
    if signer != Identity::Site(index.top_site_code.clone()) {
        return Err(CatalogError::WrongSigner {
            claimed: index.top_site_code,
            signer,
        });
    }
    let expires_at = index
        .expires_at
        .map(timestamp_from_wire)
        .transpose()
        .map_err(|e| CatalogError::Malformed(e.to_string()))?
        .ok_or_else(|| CatalogError::Malformed("the expiry is missing".into()))?;
    if expires_at <= now {
        return Err(CatalogError::Expired {
            build: index.build,
            expired_at: expires_at,
        });
    }
    if let Some(held) = held
        && index.build < held
    {
        return Err(CatalogError::Older {
            offered: index.build,
            held,
        });
    }
    for shard in &index.shards {
        if shard.sha256.len() != 32 {
            return Err(CatalogError::Malformed(
                "a shard's SHA-256 is not 32 bytes".into(),
            ));
        }
    }
    Ok(index)
}

/// Checks one shard file against its index entry.
pub fn check_shard(dir: &Path, shard: &v1::LegacyCatalogShard) -> Result<(), CatalogError> {
    let name = shard_file_name(&shard.sha256);
    let path = dir.join(SHARDS_DIR).join(&name);
    let (found, sha256) = match file_digest(&path) {
        Ok(digest) => digest,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CatalogError::ShardMissing { name });
        }
        Err(e) => {
            return Err(CatalogError::Unreadable {
                path,
                reason: e.to_string(),
            });
        }
    };
    if found != shard.bytes {
        return Err(CatalogError::ShardLength {
            name,
            expected: shard.bytes,
            found,
        });
    }
    if sha256 != shard.sha256 {
        return Err(CatalogError::ShardDigest { name });
    }
    Ok(())
}

/// Checks the whole of `dir`: the index ([`check_index`]) and every shard.
pub fn verify_dir(
    dir: &Path,
    cas: &[CertificateDer<'_>],
    is_revoked: impl Fn(&[u8]) -> bool,
    now: Timestamp,
    held: Option<u64>,
) -> Result<Verified, CatalogError> {
    let signed = read_index(dir)?;
    let index = check_index(&signed, cas, is_revoked, now, held)?;
    for shard in &index.shards {
        check_shard(dir, shard)?;
    }
    Ok(Verified { signed, index })
}
