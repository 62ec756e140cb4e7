//! One shard: an LZ4 frame holding, for each revision in order, its update id (16 bytes),
//! its revision number (4 bytes, big endian), the document's length (4 bytes, big endian)
//! and the document.

use std::io::{self, Read, Write};

use sitesync_metadata::{RevisionId, UpdateId};

/// The largest document a reader accepts (what an update document may be, with room).
pub const MAX_DOCUMENT_BYTES: u32 = 8 << 20;

/// Writes revisions into a shard held in memory (a shard is bounded; see
/// [`crate::build::ShardPolicy`]).
pub struct ShardWriter {
    encoder: lz4_flex::frame::FrameEncoder<Vec<u8>>,
    revisions: u32,
    bytes: u64,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("revisions", &self.revisions)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Default for ShardWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardWriter {
    pub fn new() -> Self {
        Self {
            encoder: lz4_flex::frame::FrameEncoder::new(Vec::new()),
            revisions: 0,
            bytes: 0,
        }
    }

    /// Adds one revision.
    pub fn push(&mut self, id: RevisionId, document: &[u8]) -> io::Result<()> {
        let length = u32::try_from(document.len())
            .ok()
            .filter(|l| *l <= MAX_DOCUMENT_BYTES)
            .ok_or_else(|| io::Error::other(format!("{id}: the document is too large")))?;
        self.encoder.write_all(id.update_id.as_bytes())?;
        self.encoder.write_all(&id.revision.to_be_bytes())?;
        self.encoder.write_all(&length.to_be_bytes())?;
        self.encoder.write_all(document)?;
        self.revisions += 1;
        self.bytes += 24 + document.len() as u64;
        Ok(())
    }

    /// Revisions pushed so far.
    pub fn revisions(&self) -> u32 {
        self.revisions
    }

    /// Uncompressed bytes pushed so far.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.bytes
    }

    /// The shard's bytes.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.encoder.finish().map_err(io::Error::other)
    }
}

/// Reads a shard one revision at a time.
pub struct ShardReader<R: Read> {
    decoder: lz4_flex::frame::FrameDecoder<R>,
    done: bool,
}

impl<R: Read> std::fmt::Debug for ShardReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardReader")
            .field("done", &self.done)
            .finish()
    }
}

impl<R: Read> ShardReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            decoder: lz4_flex::frame::FrameDecoder::new(reader),
            done: false,
        }
    }

    /// The next revision and its document; `None` at the end.
    pub fn next_revision(&mut self) -> io::Result<Option<(RevisionId, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let mut head = [0u8; 24];
        let mut filled = 0;
        while filled < head.len() {
            let n = self.decoder.read(&mut head[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            self.done = true;
            return Ok(None);
        }
        if filled < head.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the shard ends inside a revision's header",
            ));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&head[..16]);
        let revision = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
        let length = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
        if length > MAX_DOCUMENT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a document of {length} bytes is larger than any update document"),
            ));
        }
        let mut document = vec![0u8; length as usize];
        self.decoder.read_exact(&mut document)?;
        Ok(Some((
            RevisionId {
                update_id: UpdateId::from_bytes(id),
                revision,
            },
            document,
        )))
    }
}

impl<R: Read> Iterator for ShardReader<R> {
    type Item = io::Result<(RevisionId, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_revision() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8, revision: u32) -> RevisionId {
        RevisionId {
            update_id: UpdateId::from_bytes([n; 16]),
            revision,
        }
    }

    #[test]
    fn revisions_come_back_one_at_a_time() {
        let mut writer = ShardWriter::new();
        writer.push(id(1, 100), b"<a/>").unwrap();
        writer.push(id(2, 7), b"").unwrap();
        writer.push(id(3, 1), &vec![b'x'; 100_000]).unwrap();
        assert_eq!(writer.revisions(), 3);
        let bytes = writer.finish().unwrap();
        let read: Vec<_> = ShardReader::new(bytes.as_slice())
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], (id(1, 100), b"<a/>".to_vec()));
        assert_eq!(read[1], (id(2, 7), Vec::new()));
        assert_eq!(read[2].1.len(), 100_000);
    }

    #[test]
    fn a_truncated_or_damaged_shard_is_an_error() {
        let mut writer = ShardWriter::new();
        for n in 0..50 {
            writer.push(id(n, 1), &vec![n; 5_000]).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let truncated = &bytes[..bytes.len() / 2];
        assert!(
            ShardReader::new(truncated)
                .collect::<io::Result<Vec<_>>>()
                .is_err()
        );
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        let read = ShardReader::new(flipped.as_slice()).collect::<io::Result<Vec<_>>>();
        // A flipped byte either fails to decode or changes a document; the index's digest
        // is what catches every case (see `verify`).
        if let Ok(read) = read {
            assert!(
                read.iter()
                    .enumerate()
                    .any(|(n, (_, d))| *d != vec![n as u8; 5_000])
            );
        }
    }
}
