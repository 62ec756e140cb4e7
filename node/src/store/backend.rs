//! The storage interface under both stores, and its two implementations.
//!
//! The catalog logic needs little from an engine: point reads, ordered prefix scans in
//! pages, an atomic multi-key write, and a flush that makes everything written so far
//! durable. Keeping the interface this small lets the stores run on sled in production and
//! on a `BTreeMap` in fast tests, and lets the engine change without touching sync logic.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::RwLock;

/// A failure of the storage engine itself (I/O, corruption). Callers cannot fix these by
/// retrying with other input, so they are reported, not interpreted.
#[derive(Debug, thiserror::Error)]
#[error("storage engine: {0}")]
pub struct BackendError(String);

impl From<sled::Error> for BackendError {
    fn from(e: sled::Error) -> Self {
        Self(e.to_string())
    }
}

/// One key/value pair read from a scan.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The result of one [`Backend::scan`] call.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The last key looked at, kept or not; `None` when the range is exhausted.
    pub resume_after: Option<Vec<u8>>,
}

/// Scans at most this many keys per call, kept or not, so a filter that rejects most keys
/// still returns control (and a resume point) in bounded time.
const MAX_KEYS_LOOKED_AT: usize = 8192;

/// Writes applied together: either all of them are visible afterwards or none is.
#[derive(Debug, Default)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Key and value bytes in the batch, for progress and benchmark figures.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a store needs from a storage engine.
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Up to `limit` entries whose key starts with `prefix`, is `>= from` and passes `keep`,
    /// in key order, with the key of the last entry looked at (kept or not) so the caller
    /// can continue after it. Paged rather than an iterator so that no lock or snapshot
    /// outlives the call and memory stays bounded however large the store is; `keep` lets a
    /// scan skip large values it does not want without copying them.
    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Page, BackendError>;

    /// Applies every write of the batch atomically.
    fn apply(&self, batch: WriteBatch) -> Result<(), BackendError>;

    /// Returns once everything applied so far is on stable storage. Nothing is
    /// acknowledged to anyone before this returns.
    fn flush(&self) -> Result<(), BackendError>;
}

/// Fills one [`Backend::scan`] page from entries in key order starting at the scan's start,
/// the same way for every engine.
fn fill_page<K, V>(
    entries: impl Iterator<Item = Result<(K, V), BackendError>>,
    prefix: &[u8],
    limit: usize,
    keep: &dyn Fn(&[u8]) -> bool,
) -> Result<Page, BackendError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut page = Page::default();
    for (looked_at, entry) in entries.enumerate() {
        let (key, value) = entry?;
        let key = key.as_ref();
        if !key.starts_with(prefix) {
            break;
        }
        if keep(key) {
            page.entries.push((key.to_vec(), value.as_ref().to_vec()));
        }
        if page.entries.len() >= limit || looked_at + 1 >= MAX_KEYS_LOOKED_AT {
            page.resume_after = Some(key.to_vec());
            break;
        }
    }
    Ok(page)
}

/// A shared backend is a backend: the in-memory database hands out the same space to
/// everyone who opens it by name, as sled does with its trees.
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        (**self).get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Page, BackendError> {
        (**self).scan(prefix, from, limit, keep)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), BackendError> {
        (**self).apply(batch)
    }

    fn flush(&self) -> Result<(), BackendError> {
        (**self).flush()
    }
}

/// A sled tree. One sled database per node holds one tree per store.
#[derive(Debug, Clone)]
pub struct SledBackend {
    tree: sled::Tree,
}

impl SledBackend {
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }
}

/// Opens (or creates) a node's sled database.
///
/// The cache is set explicitly because sled's default (1 GiB) is far more than a node
/// should take; the page cache of the operating system serves repeated reads anyway.
///
/// The database's file lock outlives a closed database for a moment (its flusher thread
/// exits on its own), and a restarted process may overlap its predecessor's exit; so a held
/// lock is waited for, up to [`LOCK_WAIT`], before it is reported.
pub fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, BackendError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            // sled reports a held lock as a formatted I/O error, losing the error kind.
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(BackendError(format!(
                        "the database in {} is in use by another process (is another sitesync-node running with the same data directory?)",
                        path.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// How long [`open_sled`] waits for a database another process (or a just-closed database)
/// still holds.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Page, BackendError> {
        let start = if from > prefix { from } else { prefix };
        let entries = self
            .tree
            .range(start..)
            .map(|item| item.map_err(BackendError::from));
        fill_page(entries, prefix, limit, keep)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        Ok(self.tree.apply_batch(sled_batch)?)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.tree.flush()?;
        Ok(())
    }
}

/// An in-memory engine for tests of the catalog logic. It is "durable" the moment a write
/// is applied, which is exactly the contract the sled engine meets after `flush`.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A writer that panicked left either the whole batch or none of it (batches are
        // applied under one guard), so the map is consistent and safe to keep using.
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.read().get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Page, BackendError> {
        let start = if from > prefix { from } else { prefix };
        let map = self.read();
        let entries = map.range(start.to_vec()..).map(Ok);
        fill_page(entries, prefix, limit, keep)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, value) in batch.ops {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
