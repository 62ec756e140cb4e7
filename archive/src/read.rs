//! Reading an export file, trusting nothing in it until it is checked.

use std::io::{Read, Seek, SeekFrom};

use prost::Message as _;
use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use sitesync_security::Identity;
use sitesync_security::signing::{self, Algorithm};

use crate::{
    ArchiveError, END_MAGIC, FORMAT_VERSION, FRAME_PREFIX_BYTES, FrameKind, MAGIC, MAX_CHUNK_BYTES,
    MAX_FRAME_BYTES, TRAILER_BYTES, add_counts, batch_counts, manifest_signed_bytes, v1,
};

/// An export file opened for reading: its header and manifest decoded, nothing trusted yet.
#[derive(Debug)]
pub struct Archive<R> {
    file: R,
    len: u64,
    header: v1::ArchiveHeader,
    header_sha256: Vec<u8>,
    header_end: u64,
    signed: v1::SignedArchiveManifest,
    pub(crate) manifest: v1::ArchiveManifest,
    pub(crate) manifest_offset: u64,
    /// Set by [`Archive::verify_signature`]: the manifest may be relied on.
    signer: Option<Identity>,
}

/// What a complete check of a file found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The site whose key signed the manifest.
    pub signer: Identity,
    pub chunks: usize,
    /// What the chunks carry, equal to the header's counts.
    pub counts: v1::ArchiveCounts,
    /// Bytes of the chunks once decompressed.
    pub plain_bytes: u64,
    /// Where each chunk leaves its importer: an import cut off after chunk `i` resumes
    /// with chunk `i + 1`.
    pub resumes: Vec<v1::Anchor>,
}

impl<R: Read + Seek> Archive<R> {
    /// Reads the magic, the header, the trailer and the manifest. Checks their framing and
    /// the header's own consistency; the signature and the chunks are checked by
    /// [`Archive::verify_signature`] and [`Archive::verify`].
    pub fn open(mut file: R) -> Result<Self, ArchiveError> {
        let len = file.seek(SeekFrom::End(0))?;
        let mut magic = [0u8; 16];
        file.seek(SeekFrom::Start(0))?;
        let got = read_up_to(&mut file, &mut magic)?;
        if got < MAGIC.len() {
            return Err(if magic[..got] == MAGIC[..got] {
                ArchiveError::Truncated(format!("it is {len} bytes long"))
            } else {
                ArchiveError::NotAnExport
            });
        }
        if &magic != MAGIC {
            return Err(ArchiveError::NotAnExport);
        }
        let header_offset = MAGIC.len() as u64;
        let (header_bytes, header_end) =
            read_frame(&mut file, len, header_offset, FrameKind::Header)?;
        let header = v1::ArchiveHeader::decode(header_bytes.as_slice()).map_err(|e| {
            ArchiveError::Decode {
                what: "header",
                reason: e.to_string(),
            }
        })?;
        if header.format_version != FORMAT_VERSION {
            return Err(ArchiveError::UnknownVersion {
                found: header.format_version,
                known: FORMAT_VERSION,
            });
        }
        check_header(&header)?;
        if len < header_end + TRAILER_BYTES {
            return Err(ArchiveError::Truncated(format!(
                "it ends at {len} bytes, before its manifest and trailer"
            )));
        }
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        file.seek(SeekFrom::Start(len - TRAILER_BYTES))?;
        file.read_exact(&mut trailer)?;
        if &trailer[8..] != END_MAGIC {
            return Err(ArchiveError::Truncated(
                "the trailer that ends every export file is missing".into(),
            ));
        }
        let manifest_offset = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
        if manifest_offset < header_end || manifest_offset >= len - TRAILER_BYTES {
            return Err(ArchiveError::Frame {
                what: "manifest",
                offset: manifest_offset,
                reason: format!(
                    "the trailer points outside the file's chunks ({header_end}..{})",
                    len - TRAILER_BYTES
                ),
            });
        }
        let (signed_bytes, manifest_end) =
            read_frame(&mut file, len, manifest_offset, FrameKind::Manifest)?;
        if manifest_end != len - TRAILER_BYTES {
            return Err(ArchiveError::Frame {
                what: "manifest",
                offset: manifest_offset,
                reason: format!(
                    "it ends at {manifest_end}, not at the trailer ({})",
                    len - TRAILER_BYTES
                ),
            });
        }
        let signed = v1::SignedArchiveManifest::decode(signed_bytes.as_slice()).map_err(|e| {
            ArchiveError::Decode {
                what: "signed manifest",
                reason: e.to_string(),
            }
        })?;
        let manifest = v1::ArchiveManifest::decode(signed.manifest.as_slice()).map_err(|e| {
            ArchiveError::Decode {
                what: "manifest",
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            file,
            len,
            header,
            header_sha256: Sha256::digest(&header_bytes).to_vec(),
            header_end,
            signed,
            manifest,
            manifest_offset,
            signer: None,
        })
    }

    pub fn header(&self) -> &v1::ArchiveHeader {
        &self.header
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many chunks the manifest lists.
    pub fn chunk_count(&self) -> usize {
        self.manifest.chunks.len()
    }

    /// The certificate (DER) that signed the manifest, as the file carries it: unchecked
    /// until [`Archive::verify_signature`].
    pub fn signer_certificate(&self) -> &[u8] {
        &self.signed.signer_certificate
    }

    /// Checks the manifest's signature: a site certificate chaining to one of `cas`, valid
    /// at `now` and not revoked; then that the header is the one the manifest lists and the
    /// chunks lie end to end between the header and the manifest. Returns the signer.
    pub fn verify_signature(
        &mut self,
        cas: &[CertificateDer<'_>],
        is_revoked: impl Fn(&[u8]) -> bool,
        now: std::time::SystemTime,
    ) -> Result<Identity, ArchiveError> {
        let algorithm = match v1::SignatureAlgorithm::try_from(self.signed.algorithm) {
            Ok(v1::SignatureAlgorithm::EcdsaP256Sha256) => Algorithm::EcdsaP256Sha256,
            _ => return Err(ArchiveError::Algorithm(self.signed.algorithm)),
        };
        let signer = signing::verify(
            cas,
            is_revoked,
            &manifest_signed_bytes(&self.signed.manifest),
            algorithm,
            &self.signed.signature,
            &self.signed.signer_certificate,
            now,
        )?;
        if self.manifest.format_version != FORMAT_VERSION {
            return Err(ArchiveError::UnknownVersion {
                found: self.manifest.format_version,
                known: FORMAT_VERSION,
            });
        }
        if self.manifest.header_sha256 != self.header_sha256 {
            return Err(ArchiveError::HeaderDigest {
                actual: hex(&self.header_sha256),
                signed: hex(&self.manifest.header_sha256),
            });
        }
        let count = self.manifest.chunks.len();
        let mut expected = self.header_end;
        for (index, chunk) in self.manifest.chunks.iter().enumerate() {
            if chunk.offset != expected {
                return Err(ArchiveError::Misplaced {
                    index,
                    count,
                    reason: format!(
                        "the manifest puts it at offset {} where the file has {expected}",
                        chunk.offset
                    ),
                });
            }
            expected += FRAME_PREFIX_BYTES + u64::from(chunk.stored_bytes);
        }
        if expected != self.manifest_offset {
            return Err(ArchiveError::Misplaced {
                index: count,
                count,
                reason: format!(
                    "the chunks end at {expected} but the manifest starts at {}",
                    self.manifest_offset
                ),
            });
        }
        self.signer = Some(signer.clone());
        Ok(signer)
    }

    /// Lets the chunk checks run without a trusted signature: only in fuzzing builds, so
    /// that the fuzz target reaches the chunk reader with files it makes up.
    #[cfg(fuzzing)]
    pub fn trust_unverified_for_fuzzing(&mut self) {
        self.signer = Some(Identity::Site("FUZ".into()));
    }

    /// Reads every chunk once (after [`Archive::verify_signature`]): each in its place, with
    /// its signed digest and declared size, decoding as a change batch; the batches follow
    /// each other from the file's base to its target; and they carry exactly the header's
    /// counts. Nothing is kept in memory beyond one chunk.
    pub fn verify(
        &mut self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Verified, ArchiveError> {
        let signer = self.signer.clone().ok_or_else(|| {
            ArchiveError::Inconsistent("the signature must be verified before the chunks".into())
        })?;
        let header = self.header.clone();
        let mut counts = v1::ArchiveCounts::default();
        let mut plain_bytes = 0;
        let mut position = header.base.clone();
        let mut previous = "the file's base".to_owned();
        let total = self.manifest.chunks.len();
        let mut resumes = Vec::with_capacity(total);
        for index in 0..total {
            let batch = self.chunk(index)?;
            plain_bytes += u64::from(self.manifest.chunks[index].plain_bytes);
            if batch.from != position {
                return Err(ArchiveError::Chain {
                    index,
                    found: anchor_text(batch.from.as_ref()),
                    expected_from: previous,
                    expected: anchor_text(position.as_ref()),
                });
            }
            if batch.resume_anchor.is_none() {
                return Err(ArchiveError::Batch {
                    index,
                    reason: "it has no resume anchor".into(),
                });
            }
            add_counts(&mut counts, &batch_counts(&batch));
            resumes.extend(batch.resume_anchor.clone());
            position = batch.resume_anchor;
            previous = format!("chunk {index}");
            progress(index + 1, total);
        }
        if position != header.target {
            return Err(ArchiveError::Target {
                found: anchor_text(position.as_ref()),
                target: anchor_text(header.target.as_ref()),
            });
        }
        let stated = header.counts.unwrap_or_default();
        for (kind, header, actual) in count_pairs(&stated, &counts) {
            if header != actual {
                return Err(ArchiveError::Counts {
                    kind,
                    header,
                    actual,
                });
            }
        }
        if header.kind == v1::ArchiveKind::Full as i32 && counts.snapshot != header.revision_count {
            return Err(ArchiveError::Counts {
                kind: "snapshot (the revision count)",
                header: header.revision_count,
                actual: counts.snapshot,
            });
        }
        Ok(Verified {
            signer,
            chunks: total,
            counts,
            plain_bytes,
            resumes,
        })
    }

    /// The file's batches in order, from chunk `first` on, each checked against the signed
    /// manifest again as it is read (after [`Archive::verify_signature`]).
    pub fn batches(&mut self, first: usize) -> Batches<'_, R> {
        Batches {
            archive: self,
            next: first,
        }
    }

    /// Chunk `index`, checked against the manifest, decompressed and decoded.
    fn chunk(&mut self, index: usize) -> Result<v1::ChangeBatch, ArchiveError> {
        if self.signer.is_none() {
            return Err(ArchiveError::Inconsistent(
                "the signature must be verified before the chunks are read".into(),
            ));
        }
        let entry = self.manifest.chunks[index].clone();
        for (declared, what) in [
            (u64::from(entry.stored_bytes), "stored"),
            (u64::from(entry.plain_bytes), "decompressed"),
        ] {
            if declared > MAX_CHUNK_BYTES as u64 {
                let _ = what;
                return Err(ArchiveError::ChunkTooLarge {
                    index,
                    declared,
                    limit: MAX_CHUNK_BYTES,
                });
            }
        }
        let (stored, _) = read_frame(&mut self.file, self.len, entry.offset, FrameKind::Chunk)?;
        if stored.len() != entry.stored_bytes as usize {
            return Err(ArchiveError::Misplaced {
                index,
                count: self.manifest.chunks.len(),
                reason: format!(
                    "it holds {} bytes where the manifest lists {}",
                    stored.len(),
                    entry.stored_bytes
                ),
            });
        }
        let actual = Sha256::digest(&stored);
        if actual.as_slice() != entry.sha256.as_slice() {
            return Err(ArchiveError::ChunkDigest {
                index,
                offset: entry.offset,
                actual: hex(&actual),
                signed: hex(&entry.sha256),
            });
        }
        let mut plain = vec![0u8; entry.plain_bytes as usize];
        let written = lz4_flex::block::decompress_into(&stored, &mut plain).map_err(|e| {
            ArchiveError::Decompress {
                index,
                declared: entry.plain_bytes,
                reason: match e {
                    lz4_flex::block::DecompressError::OutputTooSmall { .. } => {
                        "it decompresses past its declared size".into()
                    }
                    other => other.to_string(),
                },
            }
        })?;
        if written != plain.len() {
            return Err(ArchiveError::Decompress {
                index,
                declared: entry.plain_bytes,
                reason: format!("it decompresses to {written} bytes only"),
            });
        }
        v1::ChangeBatch::decode(plain.as_slice()).map_err(|e| ArchiveError::Batch {
            index,
            reason: e.to_string(),
        })
    }
}

/// The batches of a file in order: see [`Archive::batches`].
#[derive(Debug)]
pub struct Batches<'a, R> {
    archive: &'a mut Archive<R>,
    next: usize,
}

impl<R: Read + Seek> Iterator for Batches<'_, R> {
    type Item = Result<v1::ChangeBatch, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.archive.manifest.chunks.len() {
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some(self.archive.chunk(index))
    }
}

/// The header's fields that a reader relies on, checked to be present and consistent.
fn check_header(header: &v1::ArchiveHeader) -> Result<(), ArchiveError> {
    let missing = |field| ArchiveError::Missing {
        what: "header",
        field,
    };
    if header.catalog_version.is_none() {
        return Err(missing("catalog_version"));
    }
    if header.update_server_digest.is_none() {
        return Err(missing("update_server_digest"));
    }
    let target = header.target.as_ref().ok_or_else(|| missing("target"))?;
    match v1::ArchiveKind::try_from(header.kind) {
        Ok(v1::ArchiveKind::Full) => {
            if header.base.is_some() {
                return Err(ArchiveError::Inconsistent(
                    "a full file names a base".into(),
                ));
            }
        }
        Ok(v1::ArchiveKind::Incremental) => {
            let base = header.base.as_ref().ok_or_else(|| missing("base"))?;
            if base.log_id != target.log_id || base.sequence > target.sequence {
                return Err(ArchiveError::Inconsistent(format!(
                    "the base {} does not come before the target {}",
                    anchor_text(Some(base)),
                    anchor_text(Some(target))
                )));
            }
        }
        _ => {
            return Err(ArchiveError::Inconsistent(format!(
                "kind {} is neither full nor incremental",
                header.kind
            )));
        }
    }
    Ok(())
}

/// Pairs of (kind, header's count, actual count).
pub(crate) fn count_pairs(
    header: &v1::ArchiveCounts,
    actual: &v1::ArchiveCounts,
) -> [(&'static str, u64, u64); 5] {
    [
        ("snapshot", header.snapshot, actual.snapshot),
        ("new", header.new, actual.new),
        ("changed", header.changed, actual.changed),
        ("expired", header.expired, actual.expired),
        ("deleted", header.deleted, actual.deleted),
    ]
}

/// Reads the frame of `kind` at `offset`: its payload and where it ends.
fn read_frame(
    file: &mut (impl Read + Seek),
    len: u64,
    offset: u64,
    kind: FrameKind,
) -> Result<(Vec<u8>, u64), ArchiveError> {
    let damaged = |reason: String| ArchiveError::Frame {
        what: kind.name(),
        offset,
        reason,
    };
    if offset + FRAME_PREFIX_BYTES > len {
        return Err(ArchiveError::Truncated(format!(
            "the {} at offset {offset} is cut off",
            kind.name()
        )));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut prefix = [0u8; FRAME_PREFIX_BYTES as usize];
    file.read_exact(&mut prefix)?;
    if prefix[0] != kind.byte() {
        return Err(damaged(format!(
            "it is marked {:?}, not a {}",
            char::from(prefix[0]),
            kind.name()
        )));
    }
    let length = u32::from_le_bytes(prefix[1..].try_into().expect("4 bytes")) as u64;
    let limit = match kind {
        FrameKind::Chunk => MAX_CHUNK_BYTES,
        FrameKind::Header | FrameKind::Manifest => MAX_FRAME_BYTES,
    } as u64;
    if length > limit {
        return Err(damaged(format!(
            "it declares {length} bytes, more than the {limit} it may hold"
        )));
    }
    let end = offset + FRAME_PREFIX_BYTES + length;
    if end > len {
        return Err(ArchiveError::Truncated(format!(
            "the {} at offset {offset} declares {length} bytes but the file ends at {len}",
            kind.name()
        )));
    }
    let mut payload = vec![0u8; length as usize];
    file.read_exact(&mut payload)?;
    Ok((payload, end))
}

/// Reads into `buffer` until it is full or the file ends; returns how much was read.
fn read_up_to(file: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// An anchor as messages show it: `log-id:sequence`, with the snapshot position if any.
pub fn anchor_text(anchor: Option<&v1::Anchor>) -> String {
    match anchor {
        None => "the start (no anchor)".to_owned(),
        Some(anchor) => match &anchor.snapshot_through {
            None => format!("{}:{}", anchor.log_id, anchor.sequence),
            Some(_) => format!("{}:{} (inside a snapshot)", anchor.log_id, anchor.sequence),
        },
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
