//! The export file as it arrives: written under a temporary name beside its destination,
//! and given its name only once the node said it is complete and it reads back as the file
//! the node announced. Anything else (an error, Ctrl-C, a stream cut short) drops the
//! [`PartialFile`], which removes it: a file with the destination's name is always whole.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sitesync_archive::{Archive, v1};

/// An export file being received.
#[derive(Debug)]
pub struct PartialFile {
    /// Where the file goes once complete.
    destination: PathBuf,
    /// The temporary file: `.NAME.partial-PID` in the destination's directory, so the
    /// final rename stays on one file system.
    path: PathBuf,
    file: File,
    /// Bytes written so far: the offset the next chunk must start at.
    written: u64,
    /// Set once renamed into place: nothing is left to remove.
    done: bool,
}

impl PartialFile {
    /// Creates the temporary file beside `destination`.
    pub fn create(destination: &Path) -> anyhow::Result<Self> {
        let path = partial_path(destination)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            destination: destination.to_owned(),
            path,
            file,
            written: 0,
            done: false,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`, which must start where the last one ended.
    pub fn append(&mut self, chunk: &v1::FileChunk) -> anyhow::Result<()> {
        if chunk.offset != self.written {
            bail!(
                "the node sent bytes at offset {} after {} bytes: parts of the file are \
                 missing, repeated or out of order",
                chunk.offset,
                self.written
            );
        }
        self.file
            .write_all(&chunk.data)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.written += chunk.data.len() as u64;
        Ok(())
    }

    /// Completes the file once the node's end said it is `total_bytes` long: flushes it to
    /// disk, checks that it opens as an export file with `header`, and renames it to its
    /// destination (replacing an existing file only when `replace`). Returns the file
    /// opened for reading.
    pub fn complete(
        mut self,
        total_bytes: u64,
        header: &v1::ArchiveHeader,
        replace: bool,
    ) -> anyhow::Result<Archive<File>> {
        if total_bytes != self.written {
            bail!(
                "the node says the file is {total_bytes} bytes long, but sent {}",
                self.written
            );
        }
        self.file
            .sync_all()
            .with_context(|| format!("cannot write {} to disk", self.path.display()))?;
        let reopened = File::open(&self.path)
            .with_context(|| format!("cannot read back {}", self.path.display()))?;
        let archive = Archive::open(reopened)
            .context("the file the node sent does not read back as an export file")?;
        if archive.header() != header {
            bail!("the file the node sent does not carry the header it announced");
        }
        if !replace && self.destination.exists() {
            bail!(
                "{} appeared while the export ran: pass --force to replace it",
                self.destination.display()
            );
        }
        fs::rename(&self.path, &self.destination).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                self.destination.display()
            )
        })?;
        self.done = true;
        sync_directory(&self.destination)?;
        Ok(archive)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `.NAME.partial-PID` beside `destination`.
fn partial_path(destination: &Path) -> anyhow::Result<PathBuf> {
    let Some(name) = destination.file_name() else {
        bail!("--out {} names no file", destination.display());
    };
    Ok(destination.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Makes the rename of `path` durable: the directory entry is flushed to disk too.
fn sync_directory(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(directory)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot write {} to disk", directory.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sitesync_archive::Writer;
    use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
    use sitesync_security::signing::Signer;
    use sitesync_security::{Identity, TlsFiles};

    use super::*;

    /// A signed export file with one empty batch, and its header.
    fn export_file(dir: &Path) -> (Vec<u8>, v1::ArchiveHeader) {
        let authority = Authority::init(&dir.join("pki"), "test").unwrap();
        let cen = Identity::site("CEN").unwrap();
        authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
        let signer = Signer::load(&TlsFiles::in_pki_dir(&dir.join("pki"), &cen)).unwrap();
        let anchor = |sequence| v1::Anchor {
            log_id: "log".into(),
            sequence,
            snapshot_through: None,
        };
        let header = v1::ArchiveHeader {
            format_version: sitesync_archive::FORMAT_VERSION,
            source_site: "CEN".into(),
            kind: v1::ArchiveKind::Incremental.into(),
            catalog_version: Some(v1::SignedCatalogVersion::default()),
            update_server_digest: Some(v1::CatalogDigest { value: vec![7; 32] }),
            base: Some(anchor(5)),
            target: Some(anchor(5)),
            counts: Some(v1::ArchiveCounts::default()),
            ..Default::default()
        };
        let mut writer = Writer::start(Vec::new(), &header).unwrap();
        writer
            .chunk(&v1::ChangeBatch {
                from: Some(anchor(5)),
                body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart::default())),
                resume_anchor: Some(anchor(5)),
            })
            .unwrap();
        (writer.finish(&signer).unwrap(), header)
    }

    /// `bytes` in pieces of `size`, with their offsets.
    fn chunks(bytes: &[u8], size: usize) -> Vec<v1::FileChunk> {
        bytes
            .chunks(size)
            .enumerate()
            .map(|(i, data)| v1::FileChunk {
                offset: (i * size) as u64,
                data: data.to_vec(),
            })
            .collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "pki")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_complete_file_gets_its_name_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, header) = export_file(dir.path());
        let destination = dir.path().join("cen.ssx");
        let mut partial = PartialFile::create(&destination).unwrap();
        assert_eq!(
            entries(dir.path()),
            [format!(".cen.ssx.partial-{}", std::process::id())]
        );
        for chunk in chunks(&bytes, 100) {
            partial.append(&chunk).unwrap();
        }
        let archive = partial
            .complete(bytes.len() as u64, &header, false)
            .unwrap();
        assert_eq!(archive.header(), &header);
        assert_eq!(entries(dir.path()), ["cen.ssx"]);
        assert_eq!(fs::read(&destination).unwrap(), bytes);
    }

    #[test]
    fn gaps_short_totals_and_other_headers_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, header) = export_file(dir.path());
        let destination = dir.path().join("cen.ssx");

        let mut partial = PartialFile::create(&destination).unwrap();
        let pieces = chunks(&bytes, 100);
        partial.append(&pieces[0]).unwrap();
        let error = partial.append(&pieces[2]).unwrap_err();
        assert!(
            error.to_string().contains("offset 200 after 100 bytes"),
            "{error}"
        );
        drop(partial);
        assert!(entries(dir.path()).is_empty());

        let mut partial = PartialFile::create(&destination).unwrap();
        for chunk in &pieces {
            partial.append(chunk).unwrap();
        }
        let error = partial
            .complete(bytes.len() as u64 + 1, &header, false)
            .unwrap_err();
        assert!(error.to_string().contains("but sent"), "{error}");
        assert!(entries(dir.path()).is_empty());

        let mut partial = PartialFile::create(&destination).unwrap();
        for chunk in &pieces {
            partial.append(chunk).unwrap();
        }
        let mut other = header.clone();
        other.source_site = "PR1".into();
        let error = partial
            .complete(bytes.len() as u64, &other, false)
            .unwrap_err();
        assert!(error.to_string().contains("header it announced"), "{error}");
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_destination_that_appeared_is_kept_unless_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, header) = export_file(dir.path());
        let destination = dir.path().join("cen.ssx");
        for replace in [false, true] {
            fs::write(&destination, b"earlier").unwrap();
            let mut partial = PartialFile::create(&destination).unwrap();
            for chunk in chunks(&bytes, 1 << 20) {
                partial.append(&chunk).unwrap();
            }
            let result = partial.complete(bytes.len() as u64, &header, replace);
            assert_eq!(result.is_ok(), replace);
            assert_eq!(entries(dir.path()), ["cen.ssx"]);
            let expected: &[u8] = if replace { &bytes } else { b"earlier" };
            assert_eq!(fs::read(&destination).unwrap(), expected);
        }
    }
}
