//! The export file of S12 (`WSUSutil export` and `import`): an update-server store's change
//! feed written to disk, for a server that cannot reach its upstream.
//!
//! The layout is in `proto/sitesync/v1/archive.proto`: a magic, a header frame
//! ([`v1::ArchiveHeader`]: what the file is, readable without any node), one frame per
//! change batch ([`v1::ChangeBatch`], LZ4-compressed), a manifest frame listing the SHA-256
//! of the header and of every chunk, signed with a site key of the hierarchy, and a trailer
//! pointing at the manifest.
//!
//! [`Writer`] writes a file front to back, hashing each chunk as it goes, so an exporter
//! streams a file of any size in bounded memory. [`Archive`] reads one: [`Archive::open`]
//! finds the manifest and checks the header against it, [`Archive::verify_signature`]
//! checks the manifest's signature against the CAs an importer trusts, and
//! [`Archive::verify`] reads every chunk once, checking its place, digest and declared size,
//! that the batches follow each other from the file's base to its target, and that the
//! header's counts are what the chunks carry. Only a file that passed all of it is applied,
//! chunk by chunk through [`Archive::batches`], which checks each chunk's digest again as it
//! reads it: a file changed between the two reads is caught too.
//!
//! Every refusal is an [`ArchiveError`] that names the part of the file that is wrong.

mod error;
mod read;
mod write;

pub use error::ArchiveError;
pub use read::{Archive, Batches, Verified, anchor_text};
pub use write::Writer;

pub use sitesync_proto::v1;

/// The format this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The first bytes of every export file.
pub const MAGIC: &[u8; 16] = b"sitesync-export\n";

/// The last bytes of every export file, after the manifest's offset.
pub const END_MAGIC: &[u8; 8] = b"ssx-end\n";

/// The trailer's length: the manifest frame's offset, then [`END_MAGIC`].
pub const TRAILER_BYTES: u64 = 16;

/// The largest header or manifest frame a reader accepts (16 MiB: a manifest lists about
/// 70 bytes per chunk of up to 16 MiB, so this covers files far beyond any catalog).
pub const MAX_FRAME_BYTES: usize = sitesync_proto::MAX_MESSAGE_BYTES;

/// The largest chunk, compressed or decompressed (a change batch is at most a message).
pub const MAX_CHUNK_BYTES: usize = sitesync_proto::MAX_MESSAGE_BYTES;

/// The conventional file name extension.
pub const EXTENSION: &str = "ssx";

/// A frame's kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Header = b'H' as isize,
    Chunk = b'C' as isize,
    Manifest = b'M' as isize,
}

impl FrameKind {
    pub(crate) fn byte(self) -> u8 {
        self as u8
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Chunk => "chunk",
            Self::Manifest => "manifest",
        }
    }
}

/// A frame's kind byte and length: 5 bytes.
pub(crate) const FRAME_PREFIX_BYTES: u64 = 5;

/// The counts a batch contributes, by record kind.
pub fn batch_counts(batch: &v1::ChangeBatch) -> v1::ArchiveCounts {
    let mut counts = v1::ArchiveCounts::default();
    match &batch.body {
        Some(v1::change_batch::Body::Snapshot(part)) => {
            counts.snapshot = (part.revisions.len() + part.references.len()) as u64;
        }
        Some(v1::change_batch::Body::Log(log)) => {
            for change in &log.changes {
                match v1::ChangeKind::try_from(change.kind) {
                    Ok(v1::ChangeKind::New) => counts.new += 1,
                    Ok(v1::ChangeKind::Changed) => counts.changed += 1,
                    Ok(v1::ChangeKind::Expired) => counts.expired += 1,
                    Ok(v1::ChangeKind::Deleted) => counts.deleted += 1,
                    _ => {}
                }
            }
        }
        None => {}
    }
    counts
}

/// Adds `more` to `total`.
pub fn add_counts(total: &mut v1::ArchiveCounts, more: &v1::ArchiveCounts) {
    total.snapshot += more.snapshot;
    total.new += more.new;
    total.changed += more.changed;
    total.expired += more.expired;
    total.deleted += more.deleted;
}

/// The bytes a manifest's signature covers.
pub fn manifest_signed_bytes(manifest: &[u8]) -> Vec<u8> {
    let context = sitesync_proto::ARCHIVE_MANIFEST_SIGNATURE_CONTEXT;
    let mut bytes = Vec::with_capacity(context.len() + manifest.len());
    bytes.extend_from_slice(context);
    bytes.extend_from_slice(manifest);
    bytes
}

#[cfg(test)]
mod tests;
