//! Why an export file is refused: each variant names the part of the file that is wrong.

use sitesync_security::signing::{SigningError, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read the export file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a sitesync export file: it does not start with the export magic")]
    NotAnExport,
    #[error(
        "the export file is truncated or its end is damaged: {0}; copy it again from the exporting side"
    )]
    Truncated(String),
    #[error(
        "the export file's format version is {found}, but this build reads version {known} only; use a sitesync of the exporter's version"
    )]
    UnknownVersion { found: u32, known: u32 },
    #[error("the {what} frame at offset {offset} is damaged: {reason}")]
    Frame {
        what: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("the {what} does not decode: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("the {what} is missing `{field}`")]
    Missing {
        what: &'static str,
        field: &'static str,
    },
    #[error(
        "the manifest's signature is refused: {0}; the file was altered after it was signed, or signed by a key this node does not trust"
    )]
    Signature(#[from] VerifyError),
    #[error("the manifest's signature algorithm {0} is not one this build verifies")]
    Algorithm(i32),
    #[error(
        "the header does not match the signed manifest (SHA-256 {actual}, signed {signed}): the header was altered"
    )]
    HeaderDigest { actual: String, signed: String },
    #[error(
        "chunk {index} of {count} is not where the signed manifest puts it: {reason}; chunks are missing, repeated or out of order"
    )]
    Misplaced {
        index: usize,
        count: usize,
        reason: String,
    },
    #[error(
        "chunk {index} (offset {offset}) does not match the signed manifest (SHA-256 {actual}, signed {signed}): the chunk was altered, moved or replaced"
    )]
    ChunkDigest {
        index: usize,
        offset: u64,
        actual: String,
        signed: String,
    },
    #[error(
        "chunk {index} declares {declared} bytes, more than the {limit} a chunk may hold: refused before reading it"
    )]
    ChunkTooLarge {
        index: usize,
        declared: u64,
        limit: usize,
    },
    #[error("chunk {index} does not decompress to its declared {declared} bytes: {reason}")]
    Decompress {
        index: usize,
        declared: u32,
        reason: String,
    },
    #[error("chunk {index} does not decode as a change batch: {reason}")]
    Batch { index: usize, reason: String },
    #[error(
        "chunk {index} starts at {found} but {expected_from} left the importer at {expected}: the batches do not follow each other"
    )]
    Chain {
        index: usize,
        found: String,
        expected_from: String,
        expected: String,
    },
    #[error("the chunks end at {found}, but the header says the file reaches {target}")]
    Target { found: String, target: String },
    #[error(
        "the header says the file carries {header} {kind} records, but its chunks carry {actual}: the header lies about its counts"
    )]
    Counts {
        kind: &'static str,
        header: u64,
        actual: u64,
    },
    #[error("the header is inconsistent: {0}")]
    Inconsistent(String),
    #[error("cannot sign the manifest: {0}")]
    Sign(#[from] SigningError),
    #[error("cannot write the export file: {0}")]
    Write(String),
}
