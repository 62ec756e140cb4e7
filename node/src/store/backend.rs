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
        match &e {
            // sled refuses every operation after a failed write until the database is
            // opened again, so say what to do.
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Self(format!(
                "the data volume is full ({io}); free space on it and restart the node"
            )),
            _ => Self(e.to_string()),
        }
    }
}

/// Free space kept on the database's volume: a write that would leave less is refused
/// with an error naming the volume, instead of being attempted. sled cannot recover from
/// a full disk in place (after one failed write every later operation fails until the
/// database is opened again), so the store must not let it get there; a refused write
/// changes nothing, and the next one succeeds once space is freed.
pub const KEEP_FREE_BYTES: u64 = 64 << 20;
/// Writes up to this size (status messages, a sync's record) may use all but
/// [`SMALL_WRITE_KEEP_FREE_BYTES`] of the reserve, so that a sync refused for space is
/// still recorded and reported (6703).
const SMALL_WRITE_BYTES: u64 = 256 << 10;
const SMALL_WRITE_KEEP_FREE_BYTES: u64 = 16 << 20;
/// sled writes a batch more than once (its log, then the pages it rewrites), so a batch
/// needs several times its size.
const WRITE_AMPLIFICATION: u64 = 4;

/// The free-space check before each write to a database on disk.
#[derive(Debug, Clone)]
struct SpaceCheck {
    /// The database directory: its file system is the one checked.
    dir: std::path::PathBuf,
    keep_free: u64,
}

impl SpaceCheck {
    fn check(&self, batch_bytes: u64) -> Result<(), BackendError> {
        // When the file system cannot say, the engine is left to try.
        let Ok(stats) = rustix::fs::statvfs(&self.dir) else {
            return Ok(());
        };
        let available = stats.f_bavail.saturating_mul(stats.f_frsize);
        let keep = if batch_bytes <= SMALL_WRITE_BYTES {
            self.keep_free.min(SMALL_WRITE_KEEP_FREE_BYTES)
        } else {
            self.keep_free
        };
        let needed = keep.saturating_add(batch_bytes.saturating_mul(WRITE_AMPLIFICATION));
        if available >= needed {
            return Ok(());
        }
        const MIB: f64 = (1 << 20) as f64;
        Err(BackendError(format!(
            "the data volume is full: {:.1} MiB free on the file system of {}, and a write of {:.1} MiB needs {:.1} MiB ({:.0} MiB are kept free so the database stays usable); nothing was written: free space on that volume",
            available as f64 / MIB,
            self.dir.display(),
            batch_bytes as f64 / MIB,
            needed as f64 / MIB,
            keep as f64 / MIB,
        )))
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
    /// Refuses writes that would fill the database's volume; `None` writes unchecked.
    space: Option<SpaceCheck>,
}

impl SledBackend {
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree, space: None }
    }

    /// A tree whose writes are refused, with a clear error, when they would leave less
    /// than `keep_free` bytes free on the file system of `dir` (the database directory);
    /// see [`KEEP_FREE_BYTES`].
    pub fn with_space_check(tree: sled::Tree, dir: &Path, keep_free: u64) -> Self {
        Self {
            tree,
            space: Some(SpaceCheck {
                dir: dir.to_owned(),
                keep_free,
            }),
        }
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
        if let Some(space) = &self.space {
            space.check(batch.bytes() as u64)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put(b"key".to_vec(), vec![7; bytes]);
        batch
    }

    #[test]
    fn a_write_that_would_fill_the_volume_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_sled(dir.path(), 8 << 20).unwrap();
        // More free space kept than any test machine has: every large write is refused.
        let full =
            SledBackend::with_space_check(db.open_tree("t").unwrap(), dir.path(), u64::MAX / 8);
        let error = full.apply(batch(1 << 20)).unwrap_err().to_string();
        assert!(
            error.starts_with("storage engine: the data volume is full: "),
            "{error}"
        );
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
        assert!(error.contains("nothing was written"), "{error}");
        assert_eq!(full.get(b"key").unwrap(), None);

        // The database is not harmed: once space is there, the same write succeeds.
        let roomy = SledBackend::with_space_check(db.open_tree("t").unwrap(), dir.path(), 0);
        roomy.apply(batch(1 << 20)).unwrap();
        roomy.flush().unwrap();
        assert_eq!(full.get(b"key").unwrap().map(|v| v.len()), Some(1 << 20));
    }

    #[test]
    fn small_writes_may_use_most_of_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_sled(dir.path(), 8 << 20).unwrap();
        let available = {
            let stats = rustix::fs::statvfs(dir.path()).unwrap();
            stats.f_bavail * stats.f_frsize
        };
        // A reserve just above what is free: large writes are refused, a small one (a
        // status message reporting that) still goes through while 16 MiB remain.
        assert!(
            available > SMALL_WRITE_KEEP_FREE_BYTES + (1 << 20),
            "the test needs more than 17 MiB free in the temporary directory"
        );
        let backend = SledBackend::with_space_check(
            db.open_tree("t").unwrap(),
            dir.path(),
            available + (1 << 30),
        );
        assert!(backend.apply(batch(1 << 20)).is_err());
        backend.apply(batch(1 << 10)).unwrap();
    }
}
