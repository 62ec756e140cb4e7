//! Export files for the tests, written with the archive crate's own writer and signed with
//! the key of the site CEN of a CA made for the test.

use std::path::{Path, PathBuf};

use sitesync_archive::{Writer, add_counts, batch_counts, v1};
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::signing::Signer;
use sitesync_security::{Identity, TlsFiles};

/// The change log every file of these tests is cut from.
pub const LOG: &str = "0b1c8e3a-7d1e-4e55-9a59-3c2e0b0d8f11";

/// A directory holding a CA (`pki/`) with the site CEN, the CA of another hierarchy
/// (`other/`), and an incremental export file from `LOG:10` to `LOG:40` signed with CEN's
/// key (`cen.ssx`) that deletes 30 updates in three chunks.
pub struct ExportFixture {
    pub dir: tempfile::TempDir,
    /// The file's header as written.
    pub header: v1::ArchiveHeader,
    /// Where each chunk's frame starts.
    pub chunk_offsets: Vec<u64>,
}

impl ExportFixture {
    pub fn new() -> Self {
        Self::with_padding(0)
    }

    /// With a fourth chunk (to `LOG:41`) adding one update whose document is `padding`
    /// bytes that do not compress (at most 4 MiB): a file of more than one `FileChunk`.
    pub fn with_padding(padding: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let authority = Authority::init(&pki, "test").unwrap();
        let cen = Identity::site("CEN").unwrap();
        authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
        let signer = Signer::load(&TlsFiles::in_pki_dir(&pki, &cen)).unwrap();
        Authority::init(&dir.path().join("other"), "other").unwrap();

        let mut batches = vec![log_batch(10, 20), log_batch(20, 30), log_batch(30, 40)];
        if padding > 0 {
            batches.push(padding_batch(40, padding));
        }
        let mut counts = v1::ArchiveCounts::default();
        for batch in &batches {
            add_counts(&mut counts, &batch_counts(batch));
        }
        let (_, catalog_version) = v1::CatalogVersion {
            version: 12,
            top_site_code: "CEN".into(),
            update_server_digest: Some(v1::CatalogDigest { value: vec![7; 32] }),
            revision_count: 1_234,
            site_database_digest: Some(v1::CatalogDigest { value: vec![9; 32] }),
            issued_at: Some(time(1_738_310_400)),
            expires_at: Some(time(1_738_915_200)),
            delegations: Vec::new(),
        }
        .encode_for_signing();
        let header = v1::ArchiveHeader {
            format_version: sitesync_archive::FORMAT_VERSION,
            source_site: "CEN".into(),
            kind: v1::ArchiveKind::Incremental.into(),
            catalog_version: Some(v1::SignedCatalogVersion {
                catalog_version,
                ..Default::default()
            }),
            update_server_digest: Some(v1::CatalogDigest { value: vec![7; 32] }),
            site_database_digest: Some(v1::CatalogDigest { value: vec![9; 32] }),
            base: batches.first().and_then(|b| b.from.clone()),
            target: batches.last().and_then(|b| b.resume_anchor.clone()),
            counts: Some(counts),
            revision_count: 1_234,
            created_at: Some(time(1_738_310_000)),
        };
        let mut writer = Writer::start(Vec::new(), &header).unwrap();
        let mut chunk_offsets = Vec::new();
        for batch in &batches {
            chunk_offsets.push(writer.bytes_written());
            writer.chunk(batch).unwrap();
        }
        std::fs::write(dir.path().join("cen.ssx"), writer.finish(&signer).unwrap()).unwrap();
        Self {
            dir,
            header,
            chunk_offsets,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.path("cen.ssx")).unwrap()
    }

    /// A copy of the file (`damaged.ssx`) with one byte of chunk `index`'s payload changed.
    pub fn damaged(&self, index: usize) -> PathBuf {
        let mut bytes = self.bytes();
        // Past the frame's kind byte and length.
        let at = self.chunk_offsets[index] as usize + 5 + 3;
        bytes[at] ^= 0x20;
        let path = self.path("damaged.ssx");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The names in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
        entries(self.dir.path())
    }
}

pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub fn anchor(sequence: u64) -> v1::Anchor {
    v1::Anchor {
        log_id: LOG.to_owned(),
        sequence,
        snapshot_through: None,
    }
}

fn time(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn revision_id(sequence: u64) -> v1::RevisionId {
    v1::RevisionId {
        update_id: Some(v1::UpdateId {
            guid: format!("00000000-0000-0000-0000-{sequence:012}"),
        }),
        revision: 1,
    }
}

/// A log batch from `from` to `to` deleting one update per sequence number.
fn log_batch(from: u64, to: u64) -> v1::ChangeBatch {
    let changes = (from + 1..=to)
        .map(|sequence| v1::CatalogChange {
            sequence,
            kind: v1::ChangeKind::Deleted.into(),
            payload: Some(v1::catalog_change::Payload::Deleted(revision_id(sequence))),
        })
        .collect();
    v1::ChangeBatch {
        from: Some(anchor(from)),
        body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart { changes })),
        resume_anchor: Some(anchor(to)),
    }
}

/// One NEW record after `from` whose document is `bytes` bytes of noise.
fn padding_batch(from: u64, bytes: usize) -> v1::ChangeBatch {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let document = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let change = v1::CatalogChange {
        sequence: from + 1,
        kind: v1::ChangeKind::New.into(),
        payload: Some(v1::catalog_change::Payload::Revision(v1::UpdateDocument {
            id: Some(revision_id(from + 1)),
            document,
            lz4_document: Vec::new(),
        })),
    };
    v1::ChangeBatch {
        from: Some(anchor(from)),
        body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart {
            changes: vec![change],
        })),
        resume_anchor: Some(anchor(from + 1)),
    }
}
