//! The documents a WSUS scan fetched, kept outside the node database in append-only segment
//! files (`00000000.seg`, `00000001.seg`, ... in the tracker's directory).
//!
//! A scan stores up to 100,000 documents of a few kilobytes each. Inserted into the node
//! database they cost more than fetching them: every insert lands in a random leaf whose
//! values the database then rewrites again and again. Appended to a file they cost one write
//! and one `fdatasync` per batch. The tracker's records in the node database hold each
//! document's [`Location`]; a record is written only after its document is durable, so a
//! crash leaves at worst bytes no record points at.
//!
//! Documents of replaced or removed revisions become dead bytes. The tracker measures them
//! after every scan ([`super::WsusUpstream`]) and moves the live documents out of segments
//! that are mostly dead, then deletes those segments: the files stay within about twice the
//! live documents.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

const EXTENSION: &str = "seg";

/// Where one document is: its segment, its bytes there, and their CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub segment: u32,
    pub offset: u64,
    pub length: u32,
    pub checksum: u32,
}

/// Sizes that shape the files; the defaults suit any catalog, tests make them small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLogOptions {
    /// A segment takes no new batch once it holds this many bytes.
    pub segment_bytes: u64,
    /// Dead bytes are reclaimed only beyond this many (and beyond the live bytes).
    pub reclaim_above: u64,
}

impl Default for DocumentLogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 256 << 20,
            reclaim_above: 64 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentLogError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} holds other bytes at {offset} than were stored there (checksum mismatch)")]
    Checksum { path: PathBuf, offset: u64 },
}

/// The segment files of one tracker.
#[derive(Debug)]
pub struct DocumentLog {
    dir: PathBuf,
    options: DocumentLogOptions,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The segment appended to.
    current: u32,
    file: File,
    len: u64,
    /// Open handles for reading, by segment.
    readers: HashMap<u32, Arc<File>>,
}

impl DocumentLog {
    /// Opens the segments in `dir` (created if missing), appending to the highest numbered.
    pub fn open(dir: &Path, options: DocumentLogOptions) -> Result<Self, DocumentLogError> {
        fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
        let current = segments_in(dir)?.last().map_or(0, |(number, _)| *number);
        let (file, len) = open_for_append(dir, current)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(State {
                current,
                file,
                len,
                readers: HashMap::new(),
            }),
        })
    }

    pub fn options(&self) -> DocumentLogOptions {
        self.options
    }

    /// Appends `documents` and returns once they are on stable storage, with where each is.
    pub fn append(&self, documents: &[Vec<u8>]) -> Result<Vec<Location>, DocumentLogError> {
        let mut state = self.state();
        if state.len >= self.options.segment_bytes {
            let next = state.current + 1;
            let (file, len) = open_for_append(&self.dir, next)?;
            // The new file's name must be durable before any record points into it.
            sync_dir(&self.dir)?;
            state.current = next;
            state.file = file;
            state.len = len;
        }
        let mut bytes = Vec::with_capacity(documents.iter().map(Vec::len).sum());
        let mut locations = Vec::with_capacity(documents.len());
        for document in documents {
            locations.push(Location {
                segment: state.current,
                offset: state.len + bytes.len() as u64,
                length: u32::try_from(document.len()).expect("documents are far below 4 GiB"),
                checksum: crc32fast::hash(document),
            });
            bytes.extend_from_slice(document);
        }
        let path = self.path(state.current);
        state
            .file
            .write_all_at(&bytes, state.len)
            .map_err(io_error("cannot write", &path))?;
        state
            .file
            .sync_data()
            .map_err(io_error("cannot flush", &path))?;
        state.len += bytes.len() as u64;
        Ok(locations)
    }

    /// The bytes stored at `at`, checked against their checksum.
    pub fn read(&self, at: Location) -> Result<Vec<u8>, DocumentLogError> {
        let path = self.path(at.segment);
        let file = {
            let mut state = self.state();
            match state.readers.get(&at.segment) {
                Some(file) => file.clone(),
                None => {
                    let file = Arc::new(File::open(&path).map_err(io_error("cannot open", &path))?);
                    state.readers.insert(at.segment, file.clone());
                    file
                }
            }
        };
        let mut bytes = vec![0; at.length as usize];
        file.read_exact_at(&mut bytes, at.offset)
            .map_err(io_error("cannot read", &path))?;
        if crc32fast::hash(&bytes) != at.checksum {
            return Err(DocumentLogError::Checksum {
                path,
                offset: at.offset,
            });
        }
        Ok(bytes)
    }

    /// The segment appended to; never removed.
    pub fn current(&self) -> u32 {
        self.state().current
    }

    /// Every segment and its size in bytes, in order.
    pub fn segments(&self) -> Result<Vec<(u32, u64)>, DocumentLogError> {
        segments_in(&self.dir)
    }

    /// Deletes a segment no record points into any more (not the current one).
    pub fn remove(&self, segment: u32) -> Result<(), DocumentLogError> {
        let mut state = self.state();
        assert_ne!(
            segment, state.current,
            "the current segment is never removed"
        );
        state.readers.remove(&segment);
        let path = self.path(segment);
        fs::remove_file(&path).map_err(io_error("cannot delete", &path))
    }

    /// Deletes every segment and starts again with an empty one.
    pub fn clear(&self) -> Result<(), DocumentLogError> {
        let mut state = self.state();
        state.readers.clear();
        for (segment, _) in segments_in(&self.dir)? {
            let path = self.path(segment);
            fs::remove_file(&path).map_err(io_error("cannot delete", &path))?;
        }
        let (file, len) = open_for_append(&self.dir, 0)?;
        sync_dir(&self.dir)?;
        state.current = 0;
        state.file = file;
        state.len = len;
        Ok(())
    }

    fn path(&self, segment: u32) -> PathBuf {
        segment_path(&self.dir, segment)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:08}.{EXTENSION}"))
}

fn segments_in(dir: &Path) -> Result<Vec<(u32, u64)>, DocumentLogError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("cannot list", dir))? {
        let entry = entry.map_err(io_error("cannot list", dir))?;
        let name = entry.file_name();
        let name = Path::new(&name);
        let Some(number) = (name.extension() == Some(EXTENSION.as_ref()))
            .then(|| name.file_stem()?.to_str()?.parse::<u32>().ok())
            .flatten()
        else {
            continue;
        };
        let path = entry.path();
        let size = entry
            .metadata()
            .map_err(io_error("cannot read the size of", &path))?
            .len();
        segments.push((number, size));
    }
    segments.sort_unstable();
    Ok(segments)
}

fn open_for_append(dir: &Path, segment: u32) -> Result<(File, u64), DocumentLogError> {
    let path = segment_path(dir, segment);
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("cannot open", &path))?;
    let len = file
        .metadata()
        .map_err(io_error("cannot read the size of", &path))?
        .len();
    Ok((file, len))
}

fn sync_dir(dir: &Path) -> Result<(), DocumentLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("cannot flush", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DocumentLogError {
    let path = path.to_path_buf();
    move |source| DocumentLogError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DocumentLogOptions {
        DocumentLogOptions {
            segment_bytes: 100,
            reclaim_above: 0,
        }
    }

    #[test]
    fn documents_read_back_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = DocumentLog::open(dir.path(), small()).unwrap();
        let batches: Vec<Vec<Vec<u8>>> = (0..5u8)
            .map(|b| (0..3u8).map(|d| vec![b * 10 + d; 40]).collect())
            .collect();
        let mut stored = Vec::new();
        for batch in &batches {
            stored.extend(
                log.append(batch)
                    .unwrap()
                    .into_iter()
                    .zip(batch.iter().cloned()),
            );
        }
        // 120 bytes a batch over a 100-byte bound: one segment each.
        assert_eq!(log.segments().unwrap().len(), 5);
        drop(log);
        let log = DocumentLog::open(dir.path(), small()).unwrap();
        assert_eq!(log.current(), 4);
        for (at, document) in &stored {
            assert_eq!(&log.read(*at).unwrap(), document);
        }
    }

    #[test]
    fn changed_bytes_are_refused_by_their_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let log = DocumentLog::open(dir.path(), DocumentLogOptions::default()).unwrap();
        let at = log.append(&[b"<Update/>".to_vec()]).unwrap()[0];
        let path = segment_path(dir.path(), at.segment);
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 1;
        fs::write(&path, bytes).unwrap();
        let log = DocumentLog::open(dir.path(), DocumentLogOptions::default()).unwrap();
        let err = log.read(at).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn clearing_leaves_one_empty_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = DocumentLog::open(dir.path(), small()).unwrap();
        for _ in 0..3 {
            log.append(&[vec![1; 150]]).unwrap();
        }
        log.clear().unwrap();
        assert_eq!(log.segments().unwrap(), vec![(0, 0)]);
        let at = log.append(&[b"again".to_vec()]).unwrap()[0];
        assert_eq!(log.read(at).unwrap(), b"again");
    }
}
