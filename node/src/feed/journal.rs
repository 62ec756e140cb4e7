//! The undo journal of a pull from a parent: what lets a child keep its previous catalog
//! when what it pulled turns out not to be the top site's signed catalog (issue 5).
//!
//! A pull applies batch by batch, each atomic with its anchor, so a crash resumes where it
//! stopped. Before a batch changes an update, the journal records how the store held that
//! update before the pull began (every revision's document, or that it was absent), in
//! the *same* atomic write as the batch: the journal and the data never disagree. When
//! the pulled catalog matches the signed version, the journal is closed (forgotten). When
//! it does not, [`Journal::undo`] puts every touched update back as it was and the anchor
//! back where the pull started, as new change-log records: sequence numbers keep rising
//! (invariant 3), and the next pull streams the same changes again.
//!
//! A journal that is open when a pull starts belongs to an earlier pull that was cut off;
//! it stays open and covers both, so an undo returns to the state before the first.

use std::collections::HashSet;

use sitesync_metadata::{ContentHash, ParseLimits, RevisionId, UpdateId, parse_update_owned};

use super::Anchor;
use crate::store::{CatalogChange, CatalogStore, StoreError};

/// The journal of one store's pulls, kept in the store's own metadata.
#[derive(Debug)]
pub struct Journal<'a> {
    store: &'a CatalogStore,
    /// The metadata key of the pull's anchor, restored by an undo.
    anchor_key: &'a str,
    /// `journal.<anchor key>`: the prefix of the journal's metadata keys.
    prefix: String,
}

/// An update as the store held it before the pull: the documents of its revisions, oldest
/// first; empty when it was not held.
type Before = (UpdateId, Vec<Vec<u8>>);

impl<'a> Journal<'a> {
    pub fn new(store: &'a CatalogStore, anchor_key: &'a str) -> Self {
        Self {
            store,
            anchor_key,
            prefix: format!("journal.{anchor_key}"),
        }
    }

    fn count_key(&self) -> String {
        format!("{}.count", self.prefix)
    }

    fn base_key(&self) -> String {
        format!("{}.base", self.prefix)
    }

    fn entry_key(&self, index: u64) -> String {
        format!("{}.{index}", self.prefix)
    }

    /// How many batches the open journal covers; 0 when it is closed.
    pub fn batches(&self) -> Result<u64, StoreError> {
        Ok(match self.store.metadata(&self.count_key())? {
            Some(bytes) if !bytes.is_empty() => {
                postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                    what: format!("the pull journal's count does not decode: {e}"),
                })?
            }
            _ => 0,
        })
    }

    /// The metadata to write atomically with a batch of `changes`, applied at `position`
    /// (the store's anchor before the batch): the state before the batch of every update
    /// the batch would change.
    pub fn record(
        &self,
        changes: &[CatalogChange],
        position: Option<Anchor>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut before: Vec<Before> = Vec::new();
        let mut recorded = HashSet::new();
        for change in changes {
            let (update, revision) = match change {
                CatalogChange::Put(revision) => (revision.id.update_id, Some(revision.id.revision)),
                CatalogChange::PutSummarized(revision) => (
                    revision.summary.id.update_id,
                    Some(revision.summary.id.revision),
                ),
                CatalogChange::Delete(update) => (*update, None),
            };
            if recorded.contains(&update) {
                continue;
            }
            let held = self.store.revision_hashes(update)?;
            let unchanged = match revision {
                // The same bytes again change nothing.
                Some(number) => held
                    .iter()
                    .any(|(held, hash)| *held == number && Some(*hash) == content_hash(change)),
                None => held.is_empty(),
            };
            if unchanged {
                continue;
            }
            recorded.insert(update);
            let mut documents = Vec::with_capacity(held.len());
            for (number, _) in held {
                let id = RevisionId {
                    update_id: update,
                    revision: number,
                };
                documents.extend(self.store.document(id)?);
            }
            before.push((update, documents));
        }
        let mut metadata = Vec::with_capacity(3);
        if before.is_empty() {
            return Ok(metadata);
        }
        let count = self.batches()?;
        if count == 0 {
            metadata.push((self.base_key(), encode(&position)));
        }
        metadata.push((self.entry_key(count), encode(&before)));
        metadata.push((self.count_key(), encode(&(count + 1))));
        Ok(metadata)
    }

    /// Forgets the journal: the pulled catalog is the signed one.
    pub fn close(&self) -> Result<(), StoreError> {
        let count = self.batches()?;
        if count == 0 {
            return Ok(());
        }
        let mut metadata: Vec<(String, Vec<u8>)> = (0..count)
            .map(|index| (self.entry_key(index), Vec::new()))
            .collect();
        metadata.push((self.base_key(), Vec::new()));
        metadata.push((self.count_key(), Vec::new()));
        self.write(Vec::new(), &metadata)
    }

    /// Puts every update the open journal covers back as it was before the pull, and the
    /// anchor back where the pull started; then closes the journal. Returns how many
    /// updates were restored. Safe to repeat after a crash: it runs again from the start.
    pub fn undo(&self, limits: &ParseLimits) -> Result<u64, StoreError> {
        let count = self.batches()?;
        if count == 0 {
            return Ok(0);
        }
        let corrupt = |what: String| StoreError::Corrupt { what };
        let base: Option<Anchor> = match self.store.metadata(&self.base_key())? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| corrupt(format!("the pull journal's base does not decode: {e}")))?,
            None => None,
        };
        // The first record of an update is its state before the pull.
        let mut seen = HashSet::new();
        let mut restore: Vec<Before> = Vec::new();
        for index in 0..count {
            let bytes = self
                .store
                .metadata(&self.entry_key(index))?
                .ok_or_else(|| corrupt(format!("pull journal entry {index} is missing")))?;
            let entry: Vec<Before> = postcard::from_bytes(&bytes)
                .map_err(|e| corrupt(format!("pull journal entry {index} does not decode: {e}")))?;
            restore.extend(entry.into_iter().filter(|(update, _)| seen.insert(*update)));
        }
        let restored = restore.len() as u64;
        // Removing first and putting back second: two writes, each atomic; a crash between
        // them leaves the journal open, and the undo runs again.
        self.write(
            restore
                .iter()
                .map(|(update, _)| CatalogChange::Delete(*update))
                .collect(),
            &[],
        )?;
        let mut puts = Vec::new();
        for (update, documents) in restore {
            for document in documents {
                let revision = parse_update_owned(document, limits).map_err(|e| {
                    corrupt(format!(
                        "a journalled document of {update} no longer parses: {e}"
                    ))
                })?;
                puts.push(CatalogChange::Put(revision));
            }
        }
        let anchor = base.map(|a| encode(&a)).unwrap_or_default();
        self.write(puts, &[(self.anchor_key.to_owned(), anchor)])?;
        self.close()?;
        Ok(restored)
    }

    fn write(
        &self,
        changes: Vec<CatalogChange>,
        metadata: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let metadata: Vec<(&str, Vec<u8>)> = metadata
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        self.store.apply(changes, &metadata)?;
        Ok(())
    }
}

/// The content hash of the revision a put carries; `None` for a deletion.
fn content_hash(change: &CatalogChange) -> Option<ContentHash> {
    match change {
        CatalogChange::Put(revision) => Some(ContentHash::of(&revision.document)),
        CatalogChange::PutSummarized(revision) => Some(revision.content),
        CatalogChange::Delete(_) => None,
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard serializes plain structs into a Vec")
}
