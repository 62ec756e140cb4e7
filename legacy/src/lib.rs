//! The legacy scan catalog of S13: what older clients scan offline, as `wsusscn2.cab` was
//! for Windows Update — here an index signed by the top site and shards by revision range
//! (`proto/sitesync/v1/legacy_catalog.proto`).
//!
//! - [`shard`] writes a shard (an LZ4 frame of length-prefixed documents) and reads one
//!   back one revision at a time, so a client never holds a whole shard's documents.
//! - [`build`] cuts a stream of revisions into shards and writes a catalog directory: a
//!   shard is cut after an update whose id falls on a boundary (a fixed fraction of ids),
//!   so a change, an insertion or a removal changes only the shard it falls in, and a
//!   rebuild writes only shards whose content is new (shard files are named by their
//!   SHA-256). The index is written last, atomically.
//! - [`verify`] checks a catalog directory before use: the index's signature (a site of
//!   the hierarchy, the top site it names), that it has not expired, that it is not older
//!   than the one held, and every shard's length and SHA-256. Each refusal says which.
//!
//! - [`fetch`] takes a node's catalog into a directory over
//!   `ClientPolicy.GetLegacyScanCatalog`: the index checked first, then only the shards
//!   missing or damaged, each resumable, the index written last.
//!
//! Directory layout: `index.bin` (an encoded [`v1::SignedLegacyCatalogIndex`]),
//! `shards/<sha256 hex>.lz4` and `held-build` (the newest build the directory has held).

pub mod build;
pub mod fetch;
pub mod shard;
pub mod verify;

pub use sitesync_proto::v1;

/// The index as signed and stored in `index.bin`.
pub type SignedIndex = v1::SignedLegacyCatalogIndex;
/// What an index says.
pub type Index = v1::LegacyCatalogIndex;
/// One shard's entry in an index.
pub type ShardEntry = v1::LegacyCatalogShard;

/// When `index` was built, if it says.
pub fn built_at(index: &Index) -> Option<sitesync_metadata::Timestamp> {
    index
        .built_at
        .and_then(|t| sitesync_proto::convert::timestamp_from_wire(t).ok())
}

/// When `index` expires, if it says.
pub fn expires_at(index: &Index) -> Option<sitesync_metadata::Timestamp> {
    index
        .expires_at
        .and_then(|t| sitesync_proto::convert::timestamp_from_wire(t).ok())
}

/// The format this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// What the top site's signature over an index starts with, so it can mean nothing else.
pub const LEGACY_INDEX_SIGNATURE_CONTEXT: &[u8] = b"sitesync.v1.LegacyCatalogIndex\0";

/// The index's file name in a catalog directory.
pub const INDEX_FILE: &str = "index.bin";

/// The newest build a catalog directory has held, so an older index put back is refused.
pub const HELD_BUILD_FILE: &str = "held-build";

/// The shards' directory in a catalog directory.
pub const SHARDS_DIR: &str = "shards";

/// The largest index a reader accepts (an index names about 100 bytes per shard).
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

/// A shard's file name: its SHA-256, hex, and `.lz4`.
pub fn shard_file_name(sha256: &[u8]) -> String {
    let mut name = String::with_capacity(2 * sha256.len() + 4);
    for byte in sha256 {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(".lz4");
    name
}
