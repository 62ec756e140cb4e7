//! The catalog-directory upstream: a directory of update XML documents, one file per
//! revision, named `<update id>-r<revision>.xml`.
//!
//! Data flow. [`DirectoryUpstream::scan`] lists the directory, merges the listing with what
//! the *tracker* (a key space of the node's database) recorded at earlier scans, reads only
//! the files that are new or changed (on a few threads: reading, hashing and parsing are
//! most of a first scan), and records for each revision its file's size,
//! modification time and content hash next to a [`TrackedRevision`]. A directory of 100,000
//! documents is therefore parsed once; later scans cost a listing, one `stat` per file and
//! a sequential pass over the small file records. The sync manager then pages through
//! [`DirectoryUpstream::revisions`] to choose what enters the stores and fetches those with
//! [`DirectoryUpstream::document`], which checks the bytes against the recorded hash.
//!
//! Tracker layout (numbers big endian, so both record kinds come out in revision order):
//!
//! | key                            | value                                               |
//! |--------------------------------|-----------------------------------------------------|
//! | `F` + update id (16) + rev (4) | `FileState`: file name, size, mtime, content hash    |
//! | `R` + update id (16) + rev (4) | [`TrackedRevision`]                                 |
//! | `M` + `format`                 | the layout version                                  |
//!
//! File records are apart from revision records so that a rescan, which reads every file
//! record, reads a few dozen bytes per revision instead of the whole summary. Both records of
//! a revision are always written and deleted in the same batch.
//!
//! Rules:
//! - A file's name fixes its identity. A name that is not `<GUID>-r<number>.xml` (GUID in
//!   any case), a document whose own identity differs from its name, and a second file with
//!   the identity of another (`ABC…-r1.xml` next to `abc…-r1.xml`) are skipped with a reason.
//!   Other names are not documents: only `.xml` files are looked at.
//! - Skipped documents are not recorded, so the next scan tries them again. A tracked file
//!   that changes into something unreadable keeps its earlier record: bad input changes
//!   nothing (SPEC invariant 5), and the next scan tries it again because its size or
//!   modification time still differs from the record.
//! - Size and modification time decide whether a file changed, as `make` and git do. A file
//!   modified within [`RACY_WINDOW`] of a scan could change again without its timestamp
//!   moving, so its record is marked for a content check: the next scan re-hashes it (not
//!   re-parses it, unless the bytes differ). A `document` call that finds changed bytes marks
//!   the record the same way, so the upstream heals itself at the next scan.
//! - The size is checked before a file is read, and reads are bounded by it, so an oversized
//!   or growing file costs nothing.
//! - The tracker is a cache of the directory: a layout it does not understand is dropped at
//!   open and rebuilt by the next scan.

use crate::store::keys::successor;
use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sitesync_metadata::{
    ContentHash, ParseError, ParseLimits, RevisionId, UpdateId, UpdateRevision, parse_update_owned,
};

use super::{
    Damage, RevisionPages, ScanProgress, ScanReport, SkippedDocument, TrackedRevision,
    TrackedRevisions, UpstreamError,
};
use crate::store::{Backend, WriteBatch};

/// The version of the tracker layout.
const FORMAT_VERSION: u32 = 1;

const FILE: u8 = b'F';
const REVISION: u8 = b'R';
const FORMAT_KEY: &[u8] = b"Mformat";

/// Records fetched per backend call when walking the tracker.
const SCAN_PAGE: usize = 1024;

/// A batch is applied once it holds this many writes or bytes, so a first scan of a huge
/// directory neither builds one giant batch in memory nor pays a write per file.
///
/// Kept small because sled's memory grows with the size of the batches it applies (measured:
/// peak RSS of a 100,000-file first scan about 200 MB at 1,024 writes, 300–480 MB at 4,096
/// and more), while smaller batches barely slow the scan.
const BATCH_OPS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// Threads that read and parse files at most; the recording thread comes on top.
const MAX_READERS: usize = 4;

/// Below this many files to read, threads cost more than they save.
const PARALLEL_READS: usize = 32;

/// Below this many files to stat, threads cost more than they save.
const PARALLEL_STATS: usize = 4096;

/// Outcomes the readers may get ahead of the recording thread: bounds memory.
const READ_AHEAD: usize = 256;

/// How recent a modification time must be for size and time not to prove a file unchanged:
/// wider than any file-system timestamp granularity (FAT: 2 s) and small clock skews.
pub const RACY_WINDOW: Duration = Duration::from_secs(3);

/// What the tracker remembers of the file a revision was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileState {
    file_name: String,
    size: u64,
    /// Nanoseconds since the Unix epoch; `None` where the platform gives no time.
    modified: Option<i128>,
    content_hash: ContentHash,
    /// Size and time do not prove the file unchanged: read and hash it at the next scan.
    recheck: bool,
}

/// A well-named `.xml` file found by listing the directory.
#[derive(Debug)]
struct Listed {
    id: RevisionId,
    name: String,
    size: u64,
    modified: Option<i128>,
}

/// What reading one file found.
#[derive(Debug)]
enum Examined {
    Skipped(String),
    /// The same bytes as the record it replaces: only the file record moves.
    Same(FileState),
    /// A new or changed revision, its records already encoded (off the recording thread).
    Parsed {
        file: Vec<u8>,
        revision: Vec<u8>,
    },
}

/// A file the scan must read, with the record it replaces, if any. Small (a first scan of a
/// large directory holds one per file), so it points into the listing.
#[derive(Debug)]
struct PendingRead<'a> {
    listed: &'a Listed,
    previous: Option<Box<FileState>>,
}

/// A directory of update XML documents as an upstream (see the module documentation).
#[derive(Debug)]
pub struct DirectoryUpstream {
    /// The catalog directory; file names in records are relative to it.
    dir: PathBuf,
    /// The key space of the node's database holding what was read.
    tracker: Box<dyn Backend>,
    /// Applied to every document read, so a hostile upstream costs bounded time and memory.
    limits: ParseLimits,
    /// One scan (or reset) at a time; `document` marks records under it too, so it never
    /// overwrites a record a scan is writing.
    writer: Mutex<()>,
    /// Noted when a record is found corrupt: the next scan clears the index and reads every
    /// file again.
    damage: Damage,
}

impl DirectoryUpstream {
    /// Opens the upstream over `dir`, remembering what was read in `tracker` (a key space of
    /// the node's database). The directory is not touched here: one that is missing now is
    /// reported by [`DirectoryUpstream::scan`], which the sync manager retries.
    pub fn open(
        dir: PathBuf,
        tracker: Box<dyn Backend>,
        limits: ParseLimits,
    ) -> Result<Self, UpstreamError> {
        let upstream = Self {
            dir,
            tracker,
            limits,
            writer: Mutex::new(()),
            damage: Damage::default(),
        };
        let format = upstream
            .tracker
            .get(FORMAT_KEY)?
            .map(|bytes| {
                <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt("the layout version record"))
            })
            .transpose()?;
        if format != Some(FORMAT_VERSION) {
            // Absent (new tracker) or another layout: the tracker only caches the directory,
            // so starting over costs one full read and loses nothing.
            upstream.clear()?;
            let mut batch = WriteBatch::default();
            batch.put(FORMAT_KEY.to_vec(), FORMAT_VERSION.to_be_bytes().to_vec());
            upstream.tracker.apply(batch)?;
            upstream.tracker.flush()?;
        }
        Ok(upstream)
    }

    /// The catalog directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the tracker up to date with the directory (see the module documentation) and
    /// returns once it is durable. `progress` is called after the listing, when the files to
    /// read are known, and after every file read.
    ///
    /// Fails only when the directory cannot be listed ([`UpstreamError::Unreachable`]),
    /// lists no document although revisions were read before ([`UpstreamError::Emptied`]),
    /// or the node database fails. Problems with single documents are in the report.
    pub fn scan(
        &self,
        progress: &mut dyn FnMut(ScanProgress),
    ) -> Result<ScanReport, UpstreamError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.damage.take() {
            tracing::warn!(
                dir = %self.dir.display(),
                "the catalog directory's index was found damaged; it is cleared and every file is read again"
            );
            self.clear()?;
        }
        let outcome = self.scan_locked(progress);
        self.noting_damage(outcome)
    }

    fn noting_damage<T>(&self, outcome: Result<T, UpstreamError>) -> Result<T, UpstreamError> {
        self.damage.noting(outcome, UpstreamError::is_damage)
    }

    fn scan_locked(
        &self,
        progress: &mut dyn FnMut(ScanProgress),
    ) -> Result<ScanReport, UpstreamError> {
        // Compared with file modification times, which the file system takes from the wall
        // clock, so this is the wall clock too rather than the node's clock seam.
        let started = unix_nanos(SystemTime::now());
        let mut report = ScanReport::default();
        let mut counts = ScanProgress::default();

        let listing = self.list(&mut report)?;
        counts.listed = report.listed;
        counts.skipped = report.skipped.len();
        progress(counts);

        if listing.is_empty() {
            let tracked = self.count_tracked()?;
            if tracked > 0 {
                return Err(UpstreamError::Emptied {
                    path: self.dir.clone(),
                    tracked,
                });
            }
        }

        let mut batch = WriteBatch::default();
        let reads = self.merge(&listing, &mut report, &mut batch)?;
        counts.to_read = reads.len();
        counts.skipped = report.skipped.len();
        progress(counts);

        self.read_all(
            &reads,
            started,
            &mut report,
            &mut batch,
            &mut counts,
            progress,
        )?;
        if !batch.is_empty() {
            self.tracker.apply(batch)?;
        }
        self.tracker.flush()?;
        report.skipped.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(report)
    }

    /// Every tracked revision in (update id, revision) order, a page at a time: memory stays
    /// bounded whatever the size of the catalog. Meant to be walked between scans (the sync
    /// manager runs one sync at a time); a scan running meanwhile may show through.
    pub fn revisions(&self) -> TrackedRevisions<'_, Self> {
        TrackedRevisions::new(self)
    }

    /// Tracked revisions after `after` (`None` for the start), in (update id, revision)
    /// order, at most `limit`.
    pub fn revisions_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<TrackedRevision>, UpstreamError> {
        let from = match after {
            Some(id) => successor(key(REVISION, id)),
            None => vec![REVISION],
        };
        self.noting_damage(self.collect_revisions(&[REVISION], from, limit))
    }

    /// Every tracked revision of one update, oldest first: for following bundles and
    /// prerequisites to the updates they name.
    pub fn revisions_of(&self, update: UpdateId) -> Result<Vec<TrackedRevision>, UpstreamError> {
        let mut prefix = vec![REVISION];
        prefix.extend_from_slice(update.as_bytes());
        self.collect_revisions(&prefix, prefix.clone(), usize::MAX)
    }

    /// One tracked revision.
    pub fn revision(&self, id: RevisionId) -> Result<Option<TrackedRevision>, UpstreamError> {
        self.tracker
            .get(&key(REVISION, id))?
            .map(|bytes| decode(&bytes, "a revision record"))
            .transpose()
    }

    /// The document of a tracked revision, byte for byte, read from its file and checked
    /// against the content hash recorded at the scan. A file changed since then is
    /// [`UpstreamError::DocumentChanged`], never silently different data, and its record is
    /// marked so that the next scan reads it again.
    pub fn document(&self, id: RevisionId) -> Result<Vec<u8>, UpstreamError> {
        let state = self
            .file_state(id)?
            .ok_or(UpstreamError::NotTracked { id })?;
        let file = self.dir.join(&state.file_name);
        let read = File::open(&file).and_then(|f| read_bounded(f, state.size));
        let outcome = match read {
            Ok(document) if ContentHash::of(&document) == state.content_hash => {
                return Ok(document);
            }
            Ok(_) => UpstreamError::DocumentChanged { file, id },
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                UpstreamError::DocumentChanged { file, id }
            }
            Err(source) => UpstreamError::DocumentUnreadable { file, id, source },
        };
        self.mark_for_recheck(id, state.content_hash)?;
        Err(outcome)
    }

    /// The parsed revision of a tracked document: [`DirectoryUpstream::document`], parsed
    /// under this upstream's limits, ready for the update-server store.
    pub fn update_revision(&self, id: RevisionId) -> Result<UpdateRevision, UpstreamError> {
        let document = self.noting_damage(self.document(id))?;
        parse_update_owned(document, &self.limits).map_err(|e| UpstreamError::DocumentInvalid {
            file: self.dir.join(self.file_name(id)),
            id,
            reason: e.to_string(),
        })
    }

    /// Forgets everything read, so the next scan reads every file again. Durable before
    /// returning.
    pub fn reset(&self) -> Result<(), UpstreamError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.clear()?;
        self.tracker.flush()?;
        Ok(())
    }

    /// Lists the directory: every well-named `.xml` file, sorted by (identity, name).
    /// Badly named `.xml` files go to the report.
    fn list(&self, report: &mut ScanReport) -> Result<Vec<Listed>, UpstreamError> {
        let unreachable = |source| UpstreamError::Unreachable {
            path: self.dir.clone(),
            source,
        };
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(unreachable)? {
            let entry = entry.map_err(unreachable)?;
            let is_xml = Path::new(&entry.file_name())
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
            if is_xml {
                entries.push(entry);
            }
        }
        let stats = stat_all(&entries);

        let mut listing = Vec::with_capacity(entries.len());
        for (entry, stat) in entries.into_iter().zip(stats) {
            let os_name = entry.file_name();
            let (size, modified) = match stat {
                Ok(Some(stat)) => stat,
                Ok(None) => continue,
                // Removed between the listing and the stat: it is simply not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.listed += 1;
                    report.skipped.push(SkippedDocument {
                        revision: os_name.to_str().and_then(identity_of_name),
                        file: entry.path(),
                        reason: format!("cannot read the file's size and time: {e}"),
                    });
                    continue;
                }
            };
            report.listed += 1;
            let Some(name) = os_name.to_str() else {
                report.skipped.push(SkippedDocument {
                    file: entry.path(),
                    revision: None,
                    reason: "the file name is not valid Unicode; name the file <update id>-r<revision>.xml".into(),
                });
                continue;
            };
            let Some(id) = identity_of_name(name) else {
                report.skipped.push(SkippedDocument {
                    file: entry.path(),
                    revision: None,
                    reason: "the file name is not <update id>-r<revision>.xml (for example 56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml), so it cannot be matched to the document's identity".into(),
                });
                continue;
            };
            listing.push(Listed {
                id,
                name: name.to_owned(),
                size,
                modified,
            });
        }
        listing.sort_unstable_by(|a, b| (a.id, &a.name).cmp(&(b.id, &b.name)));
        Ok(listing)
    }

    /// Walks the sorted listing and the file records together. Records without a file are
    /// forgotten (into `batch`); files whose record proves them unchanged are counted; every
    /// other file is returned, to be read.
    fn merge<'a>(
        &self,
        listing: &'a [Listed],
        report: &mut ScanReport,
        batch: &mut WriteBatch,
    ) -> Result<Vec<PendingRead<'a>>, UpstreamError> {
        let mut records = FileRecords::new(&*self.tracker);
        let mut record = records.next()?;
        let mut listing = listing.iter().peekable();
        let mut reads = Vec::new();
        loop {
            let listed_id = listing.peek().map(|l| l.id);
            let record_id = record.as_ref().map(|(id, _)| *id);
            let (id, tracked) = match (listed_id, record_id) {
                (None, None) => break,
                // Deleting records at or before the cursor does not disturb the walk.
                (None, Some(r)) => {
                    self.forget(r, batch);
                    self.apply_if_full(batch)?;
                    report.removed += 1;
                    record = records.next()?;
                    continue;
                }
                (Some(l), Some(r)) if r < l => {
                    self.forget(r, batch);
                    self.apply_if_full(batch)?;
                    report.removed += 1;
                    record = records.next()?;
                    continue;
                }
                (Some(l), Some(r)) if r == l => {
                    let state = record.take().map(|(_, state)| state);
                    record = records.next()?;
                    (l, state)
                }
                (Some(l), _) => (l, None),
            };

            let mut group = Vec::new();
            while let Some(listed) = listing.next_if(|l| l.id == id) {
                group.push(listed);
            }
            // The tracked file stays the one read; otherwise the first name wins.
            let primary = tracked
                .as_ref()
                .and_then(|t| group.iter().position(|l| l.name == t.file_name))
                .unwrap_or(0);
            let listed = group.swap_remove(primary);
            for duplicate in group {
                report.skipped.push(SkippedDocument {
                    file: self.dir.join(&duplicate.name),
                    revision: Some(id),
                    reason: format!(
                        "{id} is also in {}; a revision must be in one file only, so remove one of them",
                        listed.name
                    ),
                });
            }

            match tracked {
                None => reads.push(PendingRead {
                    listed,
                    previous: None,
                }),
                // The file read before is gone; a file of the same identity under another
                // spelling of the name replaces it.
                Some(state) if state.file_name != listed.name => {
                    self.forget(id, batch);
                    report.removed += 1;
                    reads.push(PendingRead {
                        listed,
                        previous: None,
                    });
                }
                Some(state)
                    if !state.recheck
                        && state.size == listed.size
                        && state.modified.is_some()
                        && state.modified == listed.modified =>
                {
                    report.unchanged += 1;
                    report.tracked += 1;
                }
                Some(state) => reads.push(PendingRead {
                    listed,
                    previous: Some(Box::new(state)),
                }),
            }
        }
        Ok(reads)
    }

    /// Reads the files the merge selected, on up to [`MAX_READERS`] threads (reading,
    /// hashing and parsing dominate a first scan), and records the outcomes in order of
    /// arrival on this thread, which alone writes the tracker.
    fn read_all(
        &self,
        reads: &[PendingRead<'_>],
        scan_started: Option<i128>,
        report: &mut ScanReport,
        batch: &mut WriteBatch,
        counts: &mut ScanProgress,
        progress: &mut dyn FnMut(ScanProgress),
    ) -> Result<(), UpstreamError> {
        let mut record = |read: &PendingRead<'_>, examined| -> Result<(), UpstreamError> {
            self.record(read, examined, report, batch);
            counts.read += 1;
            counts.parsed = report.parsed;
            counts.skipped = report.skipped.len();
            progress(*counts);
            self.apply_if_full(batch)
        };
        let readers = readers();
        if readers == 1 || reads.len() < PARALLEL_READS {
            for read in reads {
                record(read, self.examine(read, scan_started))?;
            }
            return Ok(());
        }
        let next = AtomicUsize::new(0);
        thread::scope(|scope| {
            let (sender, receiver) = mpsc::sync_channel(READ_AHEAD);
            for _ in 0..readers {
                let sender = sender.clone();
                let next = &next;
                scope.spawn(move || {
                    while let Some(read) = reads.get(next.fetch_add(1, Ordering::Relaxed)) {
                        // The receiver is gone only when recording failed: stop early.
                        if sender
                            .send((read, self.examine(read, scan_started)))
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
            drop(sender);
            for (read, examined) in receiver {
                record(read, examined)?;
            }
            Ok(())
        })
    }

    /// Reads, hashes and parses one file, without touching the tracker.
    fn examine(&self, read: &PendingRead<'_>, scan_started: Option<i128>) -> Examined {
        let PendingRead { listed, previous } = read;
        let id = listed.id;
        let (document, (size, modified)) = match self.read_file(&self.dir.join(&listed.name)) {
            Ok(read) => read,
            Err(reason) => return Examined::Skipped(reason),
        };
        let content_hash = ContentHash::of(&document);
        let state = FileState {
            file_name: listed.name.clone(),
            size,
            modified,
            content_hash,
            recheck: is_racy(modified, scan_started),
        };
        if previous
            .as_ref()
            .is_some_and(|p| p.content_hash == content_hash)
        {
            return Examined::Same(state);
        }
        let revision = match parse_update_owned(document, &self.limits) {
            Ok(revision) => revision,
            Err(e) => return Examined::Skipped(format!("not a valid update document: {e}")),
        };
        if revision.id != id {
            return Examined::Skipped(format!(
                "the file name says {id} but the document is {}; rename the file {}-r{}.xml",
                revision.id, revision.id.update_id, revision.id.revision
            ));
        }
        let tracked = TrackedRevision::of(&revision, content_hash, listed.name.clone());
        Examined::Parsed {
            file: encode(&state),
            revision: encode(&tracked),
        }
    }

    /// Stages what [`DirectoryUpstream::examine`] found and counts it.
    fn record(
        &self,
        read: &PendingRead<'_>,
        examined: Examined,
        report: &mut ScanReport,
        batch: &mut WriteBatch,
    ) {
        let id = read.listed.id;
        match examined {
            Examined::Skipped(reason) => {
                if read.previous.is_some() {
                    // The earlier record stays; see the module documentation.
                    report.tracked += 1;
                }
                report.skipped.push(SkippedDocument {
                    file: self.dir.join(&read.listed.name),
                    revision: Some(id),
                    reason,
                });
            }
            Examined::Same(state) => {
                // Touched or copied again, same bytes: only the file record moves.
                if read.previous.as_deref() != Some(&state) {
                    batch.put(key(FILE, id), encode(&state));
                }
                report.unchanged += 1;
                report.tracked += 1;
            }
            Examined::Parsed { file, revision } => {
                batch.put(key(FILE, id), file);
                batch.put(key(REVISION, id), revision);
                report.parsed += 1;
                report.tracked += 1;
            }
        }
    }

    /// The bytes of a listed file with the size and time they were read at, or why it
    /// cannot be taken.
    fn read_file(&self, file: &Path) -> Result<(Vec<u8>, FileStat), String> {
        let handle = File::open(file).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                "the file disappeared while the directory was scanned".to_owned()
            }
            _ => format!("cannot open the file: {e}"),
        })?;
        // The size and time of the file actually opened, taken before reading: a write that
        // lands after this moves them, so the next scan reads the file again.
        let metadata = handle
            .metadata()
            .map_err(|e| format!("cannot read the file's size and time: {e}"))?;
        let size = metadata.len();
        let limit = self.limits.max_document_bytes;
        if size > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Err(ParseError::TooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit,
            }
            .to_string());
        }
        let document = read_bounded(handle, size).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => e.to_string(),
            _ => format!("cannot read the file: {e}"),
        })?;
        let modified = metadata.modified().ok().and_then(unix_nanos);
        Ok((document, (size, modified)))
    }

    fn file_state(&self, id: RevisionId) -> Result<Option<FileState>, UpstreamError> {
        self.tracker
            .get(&key(FILE, id))?
            .map(|bytes| decode(&bytes, "a file record"))
            .transpose()
    }

    fn file_name(&self, id: RevisionId) -> String {
        match self.file_state(id) {
            Ok(Some(state)) => state.file_name,
            _ => format!("{}-r{}.xml", id.update_id, id.revision),
        }
    }

    /// Marks the record of `id` for a content check at the next scan, unless a scan has
    /// replaced it meanwhile.
    fn mark_for_recheck(&self, id: RevisionId, seen: ContentHash) -> Result<(), UpstreamError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut state) = self.file_state(id)? else {
            return Ok(());
        };
        if state.content_hash != seen || state.recheck {
            return Ok(());
        }
        state.recheck = true;
        let mut batch = WriteBatch::default();
        batch.put(key(FILE, id), encode(&state));
        self.tracker.apply(batch)?;
        self.tracker.flush()?;
        Ok(())
    }

    /// Stages the removal of both records of a revision.
    fn forget(&self, id: RevisionId, batch: &mut WriteBatch) {
        batch.delete(key(FILE, id));
        batch.delete(key(REVISION, id));
    }

    /// Deletes every file and revision record (not flushed); the layout version stays. Each
    /// batch removes both records of its revisions, so an interrupted clear leaves a tracker
    /// that is smaller, not inconsistent.
    fn clear(&self) -> Result<(), UpstreamError> {
        for prefix in [FILE, REVISION] {
            let mut from = vec![prefix];
            loop {
                let page = self.tracker.scan(&[prefix], &from, SCAN_PAGE, &|_| true)?;
                let mut batch = WriteBatch::default();
                for (key, _) in page.entries {
                    match parse_key(&key) {
                        Some(id) => self.forget(id, &mut batch),
                        None => batch.delete(key),
                    }
                }
                if !batch.is_empty() {
                    self.tracker.apply(batch)?;
                }
                match page.resume_after {
                    Some(last) => from = successor(last),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Applies `batch` once it is large enough (see [`BATCH_OPS`]).
    fn apply_if_full(&self, batch: &mut WriteBatch) -> Result<(), UpstreamError> {
        if batch.len() >= BATCH_OPS || batch.bytes() >= BATCH_BYTES {
            self.tracker.apply(std::mem::take(batch))?;
        }
        Ok(())
    }

    fn count_tracked(&self) -> Result<usize, UpstreamError> {
        let mut records = FileRecords::new(&*self.tracker);
        let mut count = 0;
        while records.next()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    fn collect_revisions(
        &self,
        prefix: &[u8],
        mut from: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<TrackedRevision>, UpstreamError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let page =
                self.tracker
                    .scan(prefix, &from, (limit - out.len()).min(SCAN_PAGE), &|_| true)?;
            for (_, value) in page.entries {
                out.push(decode(&value, "a revision record")?);
            }
            match page.resume_after {
                Some(last) => from = successor(last),
                None => break,
            }
        }
        Ok(out)
    }
}

/// The file records of the tracker in revision order, read a page at a time.
struct FileRecords<'a> {
    tracker: &'a dyn Backend,
    buffered: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    from: Option<Vec<u8>>,
}

impl<'a> FileRecords<'a> {
    fn new(tracker: &'a dyn Backend) -> Self {
        Self {
            tracker,
            buffered: Vec::new().into_iter(),
            from: Some(vec![FILE]),
        }
    }

    fn next(&mut self) -> Result<Option<(RevisionId, FileState)>, UpstreamError> {
        loop {
            if let Some((key, value)) = self.buffered.next() {
                let id = parse_key(&key).ok_or_else(|| corrupt("a file record key"))?;
                return Ok(Some((id, decode(&value, "a file record")?)));
            }
            let Some(from) = self.from.take() else {
                return Ok(None);
            };
            let page = self.tracker.scan(&[FILE], &from, SCAN_PAGE, &|_| true)?;
            self.from = page.resume_after.map(successor);
            self.buffered = page.entries.into_iter();
        }
    }
}

/// A regular file's size and modification time (nanoseconds since the Unix epoch).
type FileStat = (u64, Option<i128>);

/// The size and modification time of each entry (`None` for what is not a regular file),
/// in order. One `stat` per file is most of a rescan, so large listings are split over
/// threads.
fn stat_all(entries: &[fs::DirEntry]) -> Vec<io::Result<Option<FileStat>>> {
    let stat = |entry: &fs::DirEntry| {
        // Follow symbolic links, so a directory assembled from links works; do not stat
        // other entries twice.
        let metadata = match entry.file_type()? {
            t if t.is_symlink() => fs::metadata(entry.path())?,
            _ => entry.metadata()?,
        };
        Ok(metadata.is_file().then(|| {
            (
                metadata.len(),
                metadata.modified().ok().and_then(unix_nanos),
            )
        }))
    };
    let threads = readers();
    if threads == 1 || entries.len() < PARALLEL_STATS {
        return entries.iter().map(stat).collect();
    }
    thread::scope(|scope| {
        let parts: Vec<_> = entries
            .chunks(entries.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(stat).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// How many threads read or stat files.
fn readers() -> usize {
    thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_READERS)
}

/// The identity a file name claims: `<GUID>-r<revision>.xml`, the GUID in any case, the
/// revision in plain decimal (no sign, no leading zero), so that each identity has one
/// spelling up to case.
fn identity_of_name(name: &str) -> Option<RevisionId> {
    let stem = name.get(..name.len().checked_sub(4)?)?;
    let (guid, rest) = (stem.get(..36)?, stem.get(36..)?);
    let digits = rest
        .strip_prefix("-r")
        .or_else(|| rest.strip_prefix("-R"))?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    Some(RevisionId {
        update_id: guid.parse().ok()?,
        revision: digits.parse().ok()?,
    })
}

/// Reads exactly `size` bytes: a file that turns out longer or shorter is being written, and
/// is refused rather than read half-old, half-new.
fn read_bounded(file: File, size: u64) -> io::Result<Vec<u8>> {
    let mut document = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(size.saturating_add(1))
        .read_to_end(&mut document)?;
    if document.len() as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file changed size while it was read (is it still being written?)",
        ));
    }
    Ok(document)
}

fn is_racy(modified: Option<i128>, scan_started: Option<i128>) -> bool {
    match (modified, scan_started) {
        (Some(modified), Some(started)) => modified >= started - RACY_WINDOW.as_nanos() as i128,
        _ => true,
    }
}

fn unix_nanos(time: SystemTime) -> Option<i128> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok(),
        Err(before) => i128::try_from(before.duration().as_nanos())
            .ok()
            .map(|n| -n),
    }
}

fn key(kind: u8, id: RevisionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.push(kind);
    key.extend_from_slice(id.update_id.as_bytes());
    key.extend_from_slice(&id.revision.to_be_bytes());
    key
}

fn parse_key(key: &[u8]) -> Option<RevisionId> {
    if key.len() != 21 {
        return None;
    }
    Some(RevisionId {
        update_id: UpdateId::from_bytes(key.get(1..17)?.try_into().ok()?),
        revision: u32::from_be_bytes(key.get(17..21)?.try_into().ok()?),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard serializes plain structs into a Vec")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, UpstreamError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("{what} does not decode: {e}")))
}

fn corrupt(what: impl Into<String>) -> UpstreamError {
    UpstreamError::Corrupt { what: what.into() }
}

impl RevisionPages for DirectoryUpstream {
    type Error = UpstreamError;

    fn revisions_after(
        &self,
        after: Option<RevisionId>,
        limit: usize,
    ) -> Result<Vec<TrackedRevision>, UpstreamError> {
        DirectoryUpstream::revisions_after(self, after, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_name_one_identity() {
        let id: RevisionId = RevisionId {
            update_id: "56309036-4c77-4dd9-951a-99ee9c246a94".parse().unwrap(),
            revision: 101,
        };
        for good in [
            "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml",
            "56309036-4C77-4DD9-951A-99EE9C246A94-r101.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a94-R101.XML",
        ] {
            assert_eq!(identity_of_name(good), Some(id), "{good}");
        }
        for bad in [
            "56309036-4c77-4dd9-951a-99ee9c246a94-r0101.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a94-r+101.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a94-r.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a94.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a94-r4294967296.xml",
            "{56309036-4c77-4dd9-951a-99ee9c246a94}-r101.xml",
            "56309036-4c77-4dd9-951a-99ee9c246a9-r101.xml",
            "update.xml",
            ".xml",
            "é.xml",
        ] {
            assert_eq!(identity_of_name(bad), None, "{bad}");
        }
        assert_eq!(
            identity_of_name("56309036-4c77-4dd9-951a-99ee9c246a94-r0.xml").map(|i| i.revision),
            Some(0)
        );
    }

    #[test]
    fn a_tracker_of_another_layout_is_dropped_at_open() {
        let tracker = crate::store::MemoryBackend::new();
        let id = RevisionId {
            update_id: UpdateId::from_bytes([7; 16]),
            revision: 1,
        };
        let mut batch = WriteBatch::default();
        batch.put(FORMAT_KEY.to_vec(), 0u32.to_be_bytes().to_vec());
        batch.put(key(FILE, id), b"an older file record".to_vec());
        batch.put(key(REVISION, id), b"an older revision record".to_vec());
        tracker.apply(batch).unwrap();

        let upstream = DirectoryUpstream::open(
            PathBuf::from("/nonexistent"),
            Box::new(tracker),
            ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(upstream.revisions().count(), 0);
        assert_eq!(upstream.count_tracked().unwrap(), 0);
        assert_eq!(
            upstream.tracker.get(FORMAT_KEY).unwrap(),
            Some(FORMAT_VERSION.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn recent_modifications_are_racy() {
        let now = 1_000 * 1_000_000_000i128;
        assert!(is_racy(Some(now), Some(now)));
        assert!(is_racy(Some(now - 1_000_000_000), Some(now)));
        assert!(!is_racy(Some(now - 10_000_000_000), Some(now)));
        assert!(is_racy(None, Some(now)));
    }

    #[test]
    fn keys_round_trip_in_revision_order() {
        let a = RevisionId {
            update_id: UpdateId::from_bytes([1; 16]),
            revision: 300,
        };
        let b = RevisionId {
            update_id: UpdateId::from_bytes([1; 16]),
            revision: 1_000,
        };
        assert_eq!(parse_key(&key(FILE, a)), Some(a));
        assert!(key(REVISION, a) < key(REVISION, b));
    }
}
