//! Update blobs: from what GetUpdateData carries to the update document as UTF-8 bytes, the
//! form `sitesync_metadata::parse_update` reads and the content hash covers.
//!
//! - `XmlUpdateBlob` is the document as text; the answer's XML escaping is already undone by
//!   the response parser, so decoding only checks the size.
//! - `XmlUpdateBlobCompressed` is base64 → Cabinet (`MSCF` 1.3, one folder, LZX with a 2 MiB
//!   window) → one member named `blob` → the document in UTF-16LE without byte-order mark →
//!   UTF-8.
//!
//! The Cabinet's headers are checked here before the `cab` crate reads it, so that nothing it
//! declares is trusted beyond the limits: its total size, one folder, one member named `blob`
//! at offset 0 with a declared size within [`Limits::max_member_bytes`], and a compression the
//! crate decodes with a bounded window (none, MSZIP, or LZX of at most 2 MiB; a hostile header
//! could otherwise ask for a 32 MiB LZX window). Decompression then reads at most the declared
//! size, in blocks of at most 64 KiB, so memory stays bounded by the limits whatever the input.

use std::io::{self, Read as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::model::UpdateBlob;
use crate::xml::{Limits, excerpt};

/// The member name every compressed update blob uses.
pub const BLOB_MEMBER_NAME: &str = "blob";

/// Why a blob was refused. Each names what is wrong with the blob, not just that it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("the update document is {size} bytes, more than the limit of {limit} bytes")]
    DocumentTooLarge { size: usize, limit: usize },

    #[error(
        "the compressed blob is {size} bytes of base64, more than the limit of {limit} bytes \
         (the base64 of the largest Cabinet accepted)"
    )]
    CompressedTooLarge { size: usize, limit: usize },

    #[error("the compressed blob is not valid base64 ({detail}); it may have been cut off")]
    Base64 { detail: String },

    #[error("the compressed blob is not a Cabinet file: it does not start with `MSCF`")]
    NotACabinet,

    #[error("the Cabinet is truncated: {detail}")]
    CabinetTruncated { detail: String },

    #[error(
        "the Cabinet declares a size of {declared} bytes, more than the limit of {limit} bytes"
    )]
    CabinetTooLarge { declared: u64, limit: usize },

    #[error(
        "the Cabinet's member declares {declared} bytes, more than the limit of {limit} bytes \
         (twice the document limit, as UTF-16)"
    )]
    MemberTooLarge { declared: u64, limit: usize },

    #[error("the Cabinet has {found} folders; an update blob has exactly one")]
    FolderCount { found: u16 },

    #[error("the Cabinet holds {found} members; an update blob holds exactly one, named `blob`")]
    MemberCount { found: u16 },

    #[error("the Cabinet's member is named `{found}`; an update blob's member is named `blob`")]
    MemberName { found: String },

    #[error("the Cabinet is not supported: {detail}")]
    UnsupportedCabinet { detail: String },

    #[error("the Cabinet's compressed data is corrupt: {detail}")]
    CorruptCabinet { detail: String },

    #[error(
        "the Cabinet's member is {size} bytes, an odd number; a UTF-16 document has two bytes \
         per code unit"
    )]
    OddLength { size: usize },

    #[error("the document is not valid UTF-16LE: unpaired surrogate {unit:#06x} at byte {byte}")]
    InvalidUtf16 { unit: u16, byte: usize },
}

impl UpdateBlob {
    /// The update document as UTF-8 bytes, ready for `sitesync_metadata::parse_update`.
    pub fn decode(&self, limits: &Limits) -> Result<Vec<u8>, BlobError> {
        match self {
            UpdateBlob::Plain(text) => decode_plain_blob(text, limits),
            UpdateBlob::Compressed(text) => decode_compressed_blob(text, limits),
        }
    }
}

/// An `XmlUpdateBlob`'s text (already unescaped) as the document's bytes.
pub fn decode_plain_blob(text: &str, limits: &Limits) -> Result<Vec<u8>, BlobError> {
    check_document_size(text.len(), limits)?;
    Ok(text.as_bytes().to_vec())
}

/// An `XmlUpdateBlobCompressed`'s base64 text to the document as UTF-8.
pub fn decode_compressed_blob(base64_text: &str, limits: &Limits) -> Result<Vec<u8>, BlobError> {
    let limit = limits.max_compressed_text_bytes();
    if base64_text.len() > limit {
        return Err(BlobError::CompressedTooLarge {
            size: base64_text.len(),
            limit,
        });
    }
    // XSD base64Binary allows whitespace anywhere; servers do not write any, so copy only if
    // there is some.
    let cleaned: std::borrow::Cow<'_, str> = if base64_text.bytes().any(|b| b.is_ascii_whitespace())
    {
        base64_text
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
            .into()
    } else {
        base64_text.into()
    };
    let cabinet = BASE64
        .decode(cleaned.as_bytes())
        .map_err(|e| BlobError::Base64 {
            detail: e.to_string(),
        })?;
    decode_cabinet(&cabinet, limits)
}

/// A Cabinet holding one member `blob` in UTF-16LE, to the document as UTF-8.
pub fn decode_cabinet(cabinet: &[u8], limits: &Limits) -> Result<Vec<u8>, BlobError> {
    let member = extract_member(cabinet, limits)?;
    let text = utf16le_to_utf8(&member, limits)?;
    Ok(text.into_bytes())
}

/// What the checked headers say about the one member.
struct MemberEntry {
    name: String,
    size: usize,
}

/// Checks the Cabinet's headers against the limits, then decompresses its one member.
fn extract_member(cabinet: &[u8], limits: &Limits) -> Result<Vec<u8>, BlobError> {
    let (total, member) = check_headers(cabinet, limits)?;
    let cabinet = &cabinet[..total];
    let mut reader =
        cab::Cabinet::new(io::Cursor::new(cabinet)).map_err(|e| cab_error(&e, "its headers"))?;
    let file = reader
        .read_file(&member.name)
        .map_err(|e| cab_error(&e, "its first data block"))?;
    let mut data = Vec::with_capacity(member.size);
    file.take(member.size as u64)
        .read_to_end(&mut data)
        .map_err(|e| cab_error(&e, "its data blocks"))?;
    if data.len() != member.size {
        return Err(BlobError::CabinetTruncated {
            detail: format!(
                "the member `blob` ends after {} of its {} bytes",
                data.len(),
                member.size
            ),
        });
    }
    Ok(data)
}

fn cab_error(error: &io::Error, reading: &str) -> BlobError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        BlobError::CabinetTruncated {
            detail: format!("it ends while reading {reading}"),
        }
    } else {
        BlobError::CorruptCabinet {
            detail: excerpt(&error.to_string()),
        }
    }
}

/// The fixed part of a `CFHEADER`: signature, reserved, cbCabinet, reserved, coffFiles,
/// reserved, version, cFolders, cFiles, flags, setID, iCabinet.
const HEADER_BYTES: usize = 36;
const FLAG_PREV_CABINET: u16 = 0x0001;
const FLAG_NEXT_CABINET: u16 = 0x0002;
const FLAG_RESERVE_PRESENT: u16 = 0x0004;
/// Compression types (`typeCompress & 0x000F`) the `cab` crate decodes.
const COMPRESS_NONE: u16 = 0;
const COMPRESS_MSZIP: u16 = 1;
const COMPRESS_LZX: u16 = 3;
/// The largest LZX window accepted, as a power of two: 2 MiB, what the specification names
/// and every recorded blob uses.
const MAX_LZX_WINDOW_BITS: u16 = 21;

/// Reads the Cabinet's header, its folder and its file entry (the layout of [MS-CAB]), and
/// refuses anything an update blob never is. Returns the declared total size and the member.
fn check_headers(cabinet: &[u8], limits: &Limits) -> Result<(usize, MemberEntry), BlobError> {
    if cabinet.len() < 4 || &cabinet[..4] != b"MSCF" {
        return Err(if cabinet.len() < 4 && b"MSCF".starts_with(cabinet) {
            BlobError::CabinetTruncated {
                detail: format!("it is {} bytes, shorter than its header", cabinet.len()),
            }
        } else {
            BlobError::NotACabinet
        });
    }
    let mut at = Bytes::new(cabinet, 4);
    at.skip(4, "the header")?;
    let total = at.u32("the header")?;
    let cabinet_limit = limits.max_cabinet_bytes();
    if total as usize > cabinet_limit {
        return Err(BlobError::CabinetTooLarge {
            declared: u64::from(total),
            limit: cabinet_limit,
        });
    }
    if total as usize > cabinet.len() {
        return Err(BlobError::CabinetTruncated {
            detail: format!(
                "it declares {total} bytes and has {} (the blob was cut off)",
                cabinet.len()
            ),
        });
    }
    at.skip(4, "the header")?;
    let files_offset = at.u32("the header")? as usize;
    at.skip(4, "the header")?;
    let minor = at.u8("the header")?;
    let major = at.u8("the header")?;
    if (major, minor) != (1, 3) {
        return Err(BlobError::UnsupportedCabinet {
            detail: format!("format version {major}.{minor}; update blobs are version 1.3"),
        });
    }
    let folders = at.u16("the header")?;
    let files = at.u16("the header")?;
    let flags = at.u16("the header")?;
    at.skip(4, "the header")?;
    debug_assert_eq!(at.position, HEADER_BYTES);
    if folders != 1 {
        return Err(BlobError::FolderCount { found: folders });
    }
    if files != 1 {
        return Err(BlobError::MemberCount { found: files });
    }
    if flags & (FLAG_PREV_CABINET | FLAG_NEXT_CABINET) != 0 {
        return Err(BlobError::UnsupportedCabinet {
            detail: "it is part of a multi-Cabinet set".to_owned(),
        });
    }
    let mut folder_reserve = 0;
    if flags & FLAG_RESERVE_PRESENT != 0 {
        let header_reserve = at.u16("the header's reserve sizes")?;
        folder_reserve = at.u8("the header's reserve sizes")?;
        at.skip(1, "the header's reserve sizes")?;
        at.skip(usize::from(header_reserve), "the header's reserved area")?;
    }

    // CFFOLDER: coffCabStart, cCFData, typeCompress, reserve.
    at.skip(6, "the folder entry")?;
    let compression = at.u16("the folder entry")?;
    check_compression(compression)?;
    at.skip(usize::from(folder_reserve), "the folder entry")?;

    // CFFILE: cbFile, uoffFolderStart, iFolder, date, time, attribs, szName.
    let mut at = Bytes::new(&cabinet[..total as usize], files_offset);
    let size = at.u32("the file entry")?;
    let offset = at.u32("the file entry")?;
    let folder = at.u16("the file entry")?;
    at.skip(6, "the file entry")?;
    let name = at.name()?;
    if !name.eq_ignore_ascii_case(BLOB_MEMBER_NAME) {
        return Err(BlobError::MemberName {
            found: excerpt(&name),
        });
    }
    let member_limit = limits.max_member_bytes();
    if size as usize > member_limit {
        return Err(BlobError::MemberTooLarge {
            declared: u64::from(size),
            limit: member_limit,
        });
    }
    if offset != 0 || folder != 0 {
        return Err(BlobError::UnsupportedCabinet {
            detail: format!(
                "the member starts at offset {offset} of folder {folder:#06x}; an update blob's \
                 starts at offset 0 of folder 0"
            ),
        });
    }
    Ok((
        total as usize,
        MemberEntry {
            name,
            size: size as usize,
        },
    ))
}

fn check_compression(compression: u16) -> Result<(), BlobError> {
    let window_bits = (compression >> 8) & 0x1F;
    match compression & 0x000F {
        COMPRESS_NONE | COMPRESS_MSZIP => Ok(()),
        COMPRESS_LZX if (15..=MAX_LZX_WINDOW_BITS).contains(&window_bits) => Ok(()),
        COMPRESS_LZX => Err(BlobError::UnsupportedCabinet {
            detail: format!(
                "LZX with a window of 2^{window_bits} bytes; update blobs use at most 2^21 (2 MiB)"
            ),
        }),
        2 => Err(BlobError::UnsupportedCabinet {
            detail: "Quantum compression, which cannot be decoded".to_owned(),
        }),
        other => Err(BlobError::UnsupportedCabinet {
            detail: format!("unknown compression type {other}"),
        }),
    }
}

/// A little-endian reader over a byte slice that reports running out as truncation.
struct Bytes<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8], position: usize) -> Self {
        Self { data, position }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BlobError> {
        let end = self
            .position
            .checked_add(n)
            .filter(|&end| end <= self.data.len());
        match end {
            Some(end) => {
                let part = &self.data[self.position..end];
                self.position = end;
                Ok(part)
            }
            None => Err(BlobError::CabinetTruncated {
                detail: format!("it ends inside {what}"),
            }),
        }
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), BlobError> {
        self.take(n, what).map(|_| ())
    }

    fn u8(&mut self, what: &str) -> Result<u8, BlobError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, BlobError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, BlobError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A file name: NUL-terminated, at most 256 bytes as [MS-CAB] allows.
    fn name(&mut self) -> Result<String, BlobError> {
        let rest = self.data.get(self.position..).unwrap_or_default();
        let window = &rest[..rest.len().min(257)];
        match window.iter().position(|&b| b == 0) {
            Some(end) => {
                self.position += end + 1;
                Ok(String::from_utf8_lossy(&window[..end]).into_owned())
            }
            None if rest.len() < 257 => Err(BlobError::CabinetTruncated {
                detail: "it ends inside the member's name".to_owned(),
            }),
            None => Err(BlobError::MemberName {
                found: excerpt(&String::from_utf8_lossy(window)),
            }),
        }
    }
}

/// UTF-16LE (without byte-order mark; one is tolerated and dropped) to UTF-8, refusing odd
/// lengths, unpaired surrogates and a result beyond the document limit.
pub fn utf16le_to_utf8(bytes: &[u8], limits: &Limits) -> Result<String, BlobError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(BlobError::OddLength { size: bytes.len() });
    }
    let mut text = Vec::with_capacity((bytes.len() / 2).min(limits.max_document_bytes));
    let mut rest = match bytes {
        [0xFF, 0xFE, after @ ..] => after,
        _ => bytes,
    };
    while !rest.is_empty() {
        // Update documents are nearly all ASCII: eight units at a time while they are.
        if let Some((block, after)) = rest.split_first_chunk::<16>() {
            let [a, b] = [&block[..8], &block[8..]]
                .map(|half| u64::from_le_bytes(half.try_into().expect("eight bytes")));
            if (a | b) & ASCII_UNITS_MASK == 0 {
                text.extend(block.iter().step_by(2));
                rest = after;
                continue;
            }
        }
        let at = bytes.len() - rest.len();
        let high = u16::from_le_bytes([rest[0], rest[1]]);
        let (ch, used) = match high {
            0xD800..=0xDBFF => match rest.get(2..4) {
                Some(&[lo, hi]) => {
                    let low = u16::from_le_bytes([lo, hi]);
                    let code = (0xDC00..=0xDFFF).contains(&low).then(|| {
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    });
                    (code.and_then(char::from_u32), 4)
                }
                _ => (None, 2),
            },
            0xDC00..=0xDFFF => (None, 2),
            _ => (char::from_u32(u32::from(high)), 2),
        };
        let Some(ch) = ch else {
            return Err(BlobError::InvalidUtf16 {
                unit: high,
                byte: at,
            });
        };
        text.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
        rest = &rest[used..];
    }
    // The text is at most 1.5 times the member, which the Cabinet checks bounded.
    check_document_size(text.len(), limits)?;
    Ok(String::from_utf8(text).expect("every unit was decoded to a whole code point"))
}

/// Four UTF-16LE units read as one little-endian `u64`: set bits above 0x7F in any unit.
const ASCII_UNITS_MASK: u64 = 0xFF80_FF80_FF80_FF80;

fn check_document_size(size: usize, limits: &Limits) -> Result<(), BlobError> {
    if size > limits.max_document_bytes {
        return Err(BlobError::DocumentTooLarge {
            size,
            limit: limits.max_document_bytes,
        });
    }
    Ok(())
}
