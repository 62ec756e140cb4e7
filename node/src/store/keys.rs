//! The key layout of a catalog store. Every store lives in one tree (one key space), so a
//! single atomic batch covers every index a change touches.
//!
//! | prefix | key                          | value                                   |
//! |--------|------------------------------|-----------------------------------------|
//! | `R`    | update id (16) + revision (4, big endian) | content hash (32) + original document |
//! | `L`    | update id (16)               | the latest revision's summary           |
//! | `C`    | category id (16) + update id (16) | empty: updates by category (latest revisions) |
//! | `G`    | sequence (8, big endian)     | one change-log record                   |
//! | `M`    | a name                       | store state and callers' own metadata   |
//!
//! Big-endian numbers make byte order equal numeric order, so scans come out sorted.

use sitesync_metadata::{RevisionId, UpdateId};

pub const REVISION: u8 = b'R';
pub const LATEST: u8 = b'L';
pub const CATEGORY: u8 = b'C';
pub const LOG: u8 = b'G';
pub const META: u8 = b'M';

/// The store's own state record.
pub const STATE: &str = "state";

pub fn revision(id: RevisionId) -> Vec<u8> {
    let mut key = revisions_of(id.update_id);
    key.extend_from_slice(&id.revision.to_be_bytes());
    key
}

pub fn revisions_of(update: UpdateId) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.push(REVISION);
    key.extend_from_slice(update.as_bytes());
    key
}

pub fn latest(update: UpdateId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(LATEST);
    key.extend_from_slice(update.as_bytes());
    key
}

pub fn category_members(category: UpdateId) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(CATEGORY);
    key.extend_from_slice(category.as_bytes());
    key
}

pub fn category(category: UpdateId, update: UpdateId) -> Vec<u8> {
    let mut key = category_members(category);
    key.extend_from_slice(update.as_bytes());
    key
}

pub fn log(sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LOG);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(META);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The update id stored at `offset` in a key, if the key is long enough.
pub fn update_id_at(key: &[u8], offset: usize) -> Option<UpdateId> {
    let bytes: [u8; 16] = key.get(offset..offset + 16)?.try_into().ok()?;
    Some(UpdateId::from_bytes(bytes))
}

pub fn u32_at(key: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        key.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

pub fn u64_at(key: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.get(offset..offset + 8)?.try_into().ok()?,
    ))
}
