//! Whatever the bytes, the response parsers and the blob decoder return a result and never
//! panic: arbitrary input, and recorded answers and Cabinets with bytes changed or cut off
//! (which reach much deeper into the parsers and the LZX decoder than random bytes do).

mod common;

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::exchange;
use proptest::prelude::*;
use sitesync_wsus::{
    Limits, UpdateBlob, decode_cabinet, decode_compressed_blob, parse_auth_config,
    parse_authorization_cookie, parse_config_data, parse_cookie, parse_fault,
    parse_revision_id_list, parse_update_data, utf16le_to_utf8,
};

/// Small limits, so that the limits' own paths are exercised as well.
fn limits() -> Limits {
    Limits {
        max_response_bytes: 64 << 10,
        max_depth: 12,
        max_list_items: 20,
        max_text_bytes: 1024,
        max_document_bytes: 40 << 10,
    }
}

/// Runs every parser and decoder on `body`; their results do not matter, only that they return.
fn parse_everything(body: &[u8], limits: &Limits) {
    let _ = parse_auth_config(body, limits);
    let _ = parse_authorization_cookie(body, limits);
    let _ = parse_cookie(body, limits);
    let _ = parse_config_data(body, limits);
    let _ = parse_revision_id_list(body, limits);
    let _ = parse_fault(body, limits);
    if let Ok(batch) = parse_update_data(body, limits) {
        for update in batch.updates {
            let _ = update.blob.decode(limits);
        }
    }
    let _ = decode_cabinet(body, limits);
    let _ = utf16le_to_utf8(body, limits);
}

fn recorded_bodies() -> &'static Vec<Vec<u8>> {
    static BODIES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BODIES.get_or_init(|| (1..=19).map(|n| exchange(n).response_body).collect())
}

/// The three recorded Cabinets, each also with its data-block checksums zeroed (a zero checksum
/// is not checked), so that changed bytes reach the LZX decoder instead of the checksum test.
fn recorded_cabinets() -> &'static Vec<Vec<u8>> {
    static CABINETS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CABINETS.get_or_init(|| {
        let mut all = Vec::new();
        for number in [13, 14, 16] {
            let batch =
                parse_update_data(&exchange(number).response_body, &Limits::default()).unwrap();
            let UpdateBlob::Compressed(text) = &batch.updates[0].blob else {
                unreachable!("exchange {number} has a compressed blob")
            };
            let cabinet = BASE64.decode(text).unwrap();
            all.push(without_checksums(&cabinet));
            all.push(cabinet);
        }
        all
    })
}

/// Zeroes the checksum of every data block of the Cabinet's one folder.
fn without_checksums(cabinet: &[u8]) -> Vec<u8> {
    let mut bytes = cabinet.to_vec();
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut at = u32_at(&bytes, 36) as usize;
    let blocks = u16::from_le_bytes([bytes[40], bytes[41]]);
    for _ in 0..blocks {
        bytes[at..at + 4].fill(0);
        let compressed = u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]) as usize;
        at += 8 + compressed;
    }
    bytes
}

/// Up to `max` changes: (position as a fraction of the length, new byte).
fn edits(max: usize) -> impl Strategy<Value = Vec<(f64, u8)>> {
    prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..=max)
}

fn apply(original: &[u8], edits: &[(f64, u8)], keep: f64) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for &(at, byte) in edits {
        let i = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
        bytes[i] = byte;
    }
    bytes.truncate(((keep * bytes.len() as f64) as usize).max(1));
    bytes
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        parse_everything(&body, &limits());
        parse_everything(&body, &Limits::default());
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,2000}") {
        let _ = decode_compressed_blob(&text, &limits());
        let _ = UpdateBlob::Plain(text.clone()).decode(&limits());
        parse_everything(text.as_bytes(), &limits());
    }

    #[test]
    fn xml_like_text_never_panics(
        text in "(<[a-zA-Z:]{0,12}( xmlns(:[a-z]{1,3})?=\"[a-z:/.]{0,20}\")?/?>|</[a-zA-Z:]{0,12}>|&[a-z#0-9]{0,5};|<!DOCTYPE|<!\\[CDATA\\[|\\]\\]>|<\\?xml|[a-zA-Z0-9 =\"'])*"
    ) {
        parse_everything(text.as_bytes(), &limits());
    }

    #[test]
    fn changed_recorded_answers_never_panic(
        which in 0usize..19,
        changes in edits(8),
        keep in 0.5..=1.0f64,
    ) {
        let body = apply(&recorded_bodies()[which], &changes, keep);
        parse_everything(&body, &limits());
        parse_everything(&body, &Limits::default());
    }

    #[test]
    fn changed_recorded_cabinets_never_panic(
        which in 0usize..6,
        changes in edits(6),
        keep in 0.6..=1.0f64,
    ) {
        let cabinet = apply(&recorded_cabinets()[which], &changes, keep);
        let _ = decode_cabinet(&cabinet, &Limits::default());
        let _ = decode_compressed_blob(&BASE64.encode(&cabinet), &Limits::default());
    }

    /// The transcoder (with its eight-units-at-a-time path for ASCII) agrees with the
    /// standard library's UTF-16 decoder on any units: mostly ASCII runs broken by other
    /// code points and stray surrogates, at every alignment.
    #[test]
    fn utf16_transcoding_agrees_with_the_standard_decoder(
        units in prop::collection::vec(
            prop_oneof![8 => 0x20u16..0x7F, 1 => 0x80u16..0xD800, 1 => 0xD800u16..0xE000, 1 => 0xE000u16..=0xFFFF],
            0..200,
        ),
    ) {
        let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
        // A leading byte-order mark is dropped.
        let text_units = units.strip_prefix(&[0xFEFF]).unwrap_or(&units);
        let expected: Result<String, _> = char::decode_utf16(text_units.iter().copied()).collect();
        match (utf16le_to_utf8(&bytes, &Limits::default()), expected) {
            (Ok(text), Ok(expected)) => prop_assert_eq!(text, expected),
            (Err(_), Err(_)) => {}
            (got, expected) => prop_assert!(false, "got {got:?}, the standard decoder {expected:?}"),
        }
    }
}
