//! The key layout of a catalog store.
//!
//! A store is two key spaces (two sled trees). The **index** holds everything small:
//!
//! | prefix | key                            | value                                         |
//! |--------|--------------------------------|-----------------------------------------------|
//! | `U`    | update id (16)                 | the update's record: latest summary, held revisions with their content hashes |
//! | `C`    | category id (16) + position (8)| a chunk of updates by category: one per category per applied batch |
//! | `G`    | last sequence of the chunk (8) | a chunk of change-log records: one per applied batch |
//! | `M`    | a name                         | store state and callers' own metadata         |
//!
//! The **documents** space, which both of a node's stores share, holds the original
//! documents under the tag of the store that wrote them (1) + the change-log sequence number
//! of the put that stored them in that store (8) + update id (16) + revision (4); an
//! update's record names the tag and sequence number for each revision it holds. A store
//! that takes a revision the other store already holds with the same bytes names the other
//! store's copy instead of writing its own (see [`super::catalog::DocumentSpace`]).
//!
//! Numbers are big endian, so byte order equals numeric order and scans come out sorted.
//!
//! Why this shape: documents are large and written once; keeping them apart leaves the
//! index dense enough to stay in cache, so reads for listing and for each put never touch
//! document pages. The category index (see [`super::category_index`]) and the change log
//! are one chunk per applied batch (per category for the index) rather than one key per
//! update or change — the storage engine charges per key and per page touched. Documents
//! are keyed by when they arrived for the same reason: a sync's new documents append to
//! the end of the documents space instead of landing on pages all over it, each of which
//! the engine would read back (evicted pages come from disk), rewrite and split. Keying a
//! chunk by its *last* sequence number lets a forward scan from `after + 1` land on the
//! chunk holding the record after `after`.

use sitesync_metadata::{RevisionId, UpdateId};

/// The version of the on-disk layout. A store written by another layout is refused at open
/// instead of being misread, except the catalog store's `UPGRADABLE_FORMATS`.
pub const FORMAT_VERSION: u32 = 5;

pub const UPDATE: u8 = b'U';
pub const CATEGORY: u8 = b'C';
pub const LOG: u8 = b'G';
pub const META: u8 = b'M';

/// The store's own state record.
pub const STATE: &str = "state";

pub fn record(update: UpdateId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(UPDATE);
    key.extend_from_slice(update.as_bytes());
    key
}

/// The tag of the update-server store's documents in the shared documents space.
pub const UPDATE_SERVER_DOCUMENTS: u8 = b'u';
/// The tag of the site database's documents in the shared documents space.
pub const SITE_DATABASE_DOCUMENTS: u8 = b's';
/// The tag of the published custom updates' documents (a top site's).
pub const PUBLICATIONS_DOCUMENTS: u8 = b'p';

/// Where a document sits in the documents space: the store that wrote it (its tag) and the
/// change-log sequence number of the put that stored it there.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DocumentLocation {
    pub owner: u8,
    pub stored: u64,
}

/// A document's key in the documents space.
pub fn document(location: DocumentLocation, id: RevisionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(29);
    key.push(location.owner);
    key.extend_from_slice(&location.stored.to_be_bytes());
    key.extend_from_slice(id.update_id.as_bytes());
    key.extend_from_slice(&id.revision.to_be_bytes());
    key
}

/// The parts of a document key.
pub fn parse_document_key(key: &[u8]) -> Option<(DocumentLocation, RevisionId)> {
    if key.len() != 29 {
        return None;
    }
    Some((
        DocumentLocation {
            owner: key[0],
            stored: u64_at(key, 1)?,
        },
        RevisionId {
            update_id: update_id_at(key, 9)?,
            revision: u32_at(key, 25)?,
        },
    ))
}

pub fn category_members(category: UpdateId) -> Vec<u8> {
    let mut key = Vec::with_capacity(25);
    key.push(CATEGORY);
    key.extend_from_slice(category.as_bytes());
    key
}

pub fn category(category: UpdateId, position: u64) -> Vec<u8> {
    let mut key = category_members(category);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

pub fn log_chunk(last_sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LOG);
    key.extend_from_slice(&last_sequence.to_be_bytes());
    key
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(META);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The smallest key greater than `key`: where a scan continues after it.
pub fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

/// The update id stored at `offset` in a key or value, if it is long enough.
pub fn update_id_at(bytes: &[u8], offset: usize) -> Option<UpdateId> {
    let id: [u8; 16] = bytes.get(offset..offset + 16)?.try_into().ok()?;
    Some(UpdateId::from_bytes(id))
}

pub fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

pub fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}
