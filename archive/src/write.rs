//! Writing an export file front to back, in bounded memory.

use std::io::Write;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sitesync_security::signing::{Algorithm, Signer};

use crate::{
    ArchiveError, FORMAT_VERSION, FrameKind, MAGIC, MAX_CHUNK_BYTES, batch_counts,
    manifest_signed_bytes, v1,
};

/// Writes one export file into `sink`: the magic and header at [`Writer::start`], a chunk
/// per [`Writer::chunk`], the signed manifest and the trailer at [`Writer::finish`]. Only
/// the manifest's list of chunk digests grows with the file.
#[derive(Debug)]
pub struct Writer<W: Write> {
    sink: W,
    offset: u64,
    header_sha256: Vec<u8>,
    chunks: Vec<v1::ArchiveChunk>,
    /// What the chunks written so far carry, checked against the header at the end.
    pub(crate) counts: v1::ArchiveCounts,
    pub(crate) header_counts: v1::ArchiveCounts,
}

impl<W: Write> Writer<W> {
    /// Writes the magic and `header` (its format version is set here).
    pub fn start(mut sink: W, header: &v1::ArchiveHeader) -> Result<Self, ArchiveError> {
        let mut header = header.clone();
        header.format_version = FORMAT_VERSION;
        let encoded = header.encode_to_vec();
        sink.write_all(MAGIC)?;
        let mut writer = Self {
            sink,
            offset: MAGIC.len() as u64,
            header_sha256: Sha256::digest(&encoded).to_vec(),
            chunks: Vec::new(),
            counts: v1::ArchiveCounts::default(),
            header_counts: header.counts.unwrap_or_default(),
        };
        writer.frame(FrameKind::Header, &encoded)?;
        Ok(writer)
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Writes one batch as a compressed chunk.
    pub fn chunk(&mut self, batch: &v1::ChangeBatch) -> Result<(), ArchiveError> {
        let plain = batch.encode_to_vec();
        if plain.len() > MAX_CHUNK_BYTES {
            return Err(ArchiveError::Write(format!(
                "a change batch of {} bytes is larger than a chunk may be ({MAX_CHUNK_BYTES})",
                plain.len()
            )));
        }
        let stored = lz4_flex::block::compress(&plain);
        crate::add_counts(&mut self.counts, &batch_counts(batch));
        self.chunks.push(v1::ArchiveChunk {
            offset: self.offset,
            stored_bytes: stored.len() as u32,
            plain_bytes: plain.len() as u32,
            sha256: Sha256::digest(&stored).to_vec(),
        });
        self.frame(FrameKind::Chunk, &stored)
    }

    /// Signs the manifest with `signer`, writes it and the trailer, flushes, and returns the
    /// sink. Refuses when the chunks carry other counts than the header states.
    pub fn finish(mut self, signer: &Signer) -> Result<W, ArchiveError> {
        for (kind, header, actual) in crate::read::count_pairs(&self.header_counts, &self.counts) {
            if header != actual {
                return Err(ArchiveError::Write(format!(
                    "the header states {header} {kind} records but {actual} were written: the store changed during the export"
                )));
            }
        }
        let manifest = v1::ArchiveManifest {
            format_version: FORMAT_VERSION,
            header_sha256: std::mem::take(&mut self.header_sha256),
            chunks: std::mem::take(&mut self.chunks),
        }
        .encode_to_vec();
        let (algorithm, signature, certificate) = signer.sign(&manifest_signed_bytes(&manifest))?;
        let signed = v1::SignedArchiveManifest {
            manifest,
            algorithm: match algorithm {
                Algorithm::EcdsaP256Sha256 => v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            },
            signature,
            signer_certificate: certificate,
        };
        let manifest_offset = self.offset;
        self.frame(FrameKind::Manifest, &signed.encode_to_vec())?;
        self.sink.write_all(&manifest_offset.to_le_bytes())?;
        self.sink.write_all(crate::END_MAGIC)?;
        self.sink.flush()?;
        Ok(self.sink)
    }

    fn frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), ArchiveError> {
        let length = u32::try_from(payload.len()).map_err(|_| {
            ArchiveError::Write(format!("a {} of {} bytes", kind.name(), payload.len()))
        })?;
        self.sink.write_all(&[kind.byte()])?;
        self.sink.write_all(&length.to_le_bytes())?;
        self.sink.write_all(payload)?;
        self.offset += crate::FRAME_PREFIX_BYTES + u64::from(length);
        Ok(())
    }
}
