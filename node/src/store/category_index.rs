//! The category index of a catalog store: for each category, the updates whose latest
//! revision belongs to it, in the order they entered it (the change-log position of the
//! put that placed them there).
//!
//! The index is kept in chunks, one key per category per applied batch, holding every
//! entry that batch added to the category. A sync puts hundreds of updates into a few
//! dozen categories per batch, so this writes a few dozen keys where one key per entry
//! wrote hundreds: the storage engine charges per key, and entries that all append to the
//! end of a category split a page every few inserts.
//!
//! A chunk's key is the category and the *last* position the batch added (see
//! [`keys::category`]); its value is its entries, each the position (8, big endian) and
//! the update id (16), ascending by position. Chunks of one category cover disjoint,
//! increasing ranges of positions, so the chunk holding position `p`, if any does, is the
//! first at or after `(category, p)`. Removing an entry rewrites its chunk, or deletes the
//! chunk once it is empty; the key stays, which keeps that rule true.
//!
//! Layouts before 5 kept one entry per key, the update id alone under `(category,
//! position)`. Such a value is a chunk of one entry at the key's position, so those stores
//! read as they are.

use std::collections::{BTreeMap, BTreeSet};

use sitesync_metadata::UpdateId;

use super::backend::{Backend, WriteBatch};
use super::error::{StoreError, corrupt};
use super::keys;

/// One entry: an update, at the change-log position at which it entered the category.
pub(super) type Entry = (u64, UpdateId);

const ENTRY_BYTES: usize = 24;
/// The value of a one-entry key, as layouts before 5 wrote it.
const SINGLE_ENTRY_BYTES: usize = 16;

/// The entries of the chunk stored under `key`.
pub(super) fn decode(key: &[u8], value: &[u8]) -> Result<Vec<Entry>, String> {
    if value.len() == SINGLE_ENTRY_BYTES {
        let position = keys::u64_at(key, 17).ok_or("a category index key is too short")?;
        let update = keys::update_id_at(value, 0).ok_or("a category index entry is too short")?;
        return Ok(vec![(position, update)]);
    }
    if value.is_empty() || !value.len().is_multiple_of(ENTRY_BYTES) {
        return Err(format!(
            "a category index chunk of {} bytes is not a whole number of entries",
            value.len()
        ));
    }
    Ok(value
        .chunks_exact(ENTRY_BYTES)
        .map(|entry| {
            let position = u64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
            let update = keys::update_id_at(entry, 8).expect("24 bytes hold an id at 8");
            (position, update)
        })
        .collect())
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut value = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (position, update) in entries {
        value.extend_from_slice(&position.to_be_bytes());
        value.extend_from_slice(update.as_bytes());
    }
    value
}

/// The category-index changes of one apply, staged until its index batch is written.
#[derive(Debug, Default)]
pub(super) struct CategoryChanges {
    /// Entries this batch adds, per category, ascending by position (puts take positions
    /// in order).
    added: BTreeMap<UpdateId, Vec<Entry>>,
    /// Entries of earlier batches to remove: (category, position).
    removed: BTreeSet<(UpdateId, u64)>,
}

impl CategoryChanges {
    pub(super) fn add(&mut self, category: UpdateId, position: u64, update: UpdateId) {
        self.added
            .entry(category)
            .or_default()
            .push((position, update));
    }

    /// Removes the entry at `position` from `category`, whether an earlier batch or this
    /// one added it.
    pub(super) fn remove(&mut self, category: UpdateId, position: u64) {
        if let Some(entries) = self.added.get_mut(&category)
            && let Ok(at) = entries.binary_search_by_key(&position, |(p, _)| *p)
        {
            entries.remove(at);
            return;
        }
        self.removed.insert((category, position));
    }

    /// Adds the writes to `batch`, reading from `index` the chunks entries are removed
    /// from.
    pub(super) fn stage(
        self,
        index: &dyn Backend,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        let mut rewritten: BTreeMap<Vec<u8>, Vec<Entry>> = BTreeMap::new();
        for (category, position) in self.removed {
            let missing = || {
                corrupt(format!(
                    "category {category} has no index entry at position {position}"
                ))
            };
            let chunk_key = chunk_holding(index, category, position)?.ok_or_else(missing)?;
            let entries = match rewritten.entry(chunk_key) {
                std::collections::btree_map::Entry::Occupied(chunk) => chunk.into_mut(),
                std::collections::btree_map::Entry::Vacant(chunk) => {
                    let value = index
                        .get(chunk.key())?
                        .ok_or_else(|| corrupt("a category index chunk vanished".to_owned()))?;
                    let entries = decode(chunk.key(), &value).map_err(corrupt)?;
                    chunk.insert(entries)
                }
            };
            let at = entries
                .binary_search_by_key(&position, |(p, _)| *p)
                .map_err(|_| missing())?;
            entries.remove(at);
        }
        for (key, entries) in rewritten {
            if entries.is_empty() {
                batch.delete(key);
            } else {
                batch.put(key, encode(&entries));
            }
        }
        for (category, entries) in self.added {
            if let Some((last, _)) = entries.last() {
                batch.put(keys::category(category, *last), encode(&entries));
            }
        }
        Ok(())
    }
}

/// The key of the chunk of `category` that would hold `position`.
fn chunk_holding(
    index: &dyn Backend,
    category: UpdateId,
    position: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let prefix = keys::category_members(category);
    let page = index.scan(&prefix, &keys::category(category, position), 1, &|_| true)?;
    Ok(page.entries.into_iter().next().map(|(key, _)| key))
}

/// Up to `limit` entries of `category` after position `after`, in order.
pub(super) fn entries_after(
    index: &dyn Backend,
    category: UpdateId,
    after: u64,
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let prefix = keys::category_members(category);
    let mut from = keys::category(category, after.saturating_add(1));
    let mut out = Vec::new();
    while out.len() < limit {
        let page = index.scan(&prefix, &from, 16, &|_| true)?;
        for (key, value) in &page.entries {
            let entries = decode(key, value).map_err(corrupt)?;
            out.extend(
                entries
                    .into_iter()
                    .filter(|(position, _)| *position > after),
            );
        }
        match page.resume_after {
            Some(last) => from = keys::successor(last),
            None => break,
        }
    }
    out.truncate(limit);
    Ok(out)
}
