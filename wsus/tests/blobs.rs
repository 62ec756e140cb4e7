//! Update blobs: the four served documents decode to exactly the update-xml fixtures and parse
//! as the revision they were served under; hostile Cabinets are refused with specific errors.

mod common;

use std::io::{Cursor, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cab::{CabinetBuilder, CompressionType};
use common::{exchange, update_xml};
use sitesync_metadata::{ParseLimits, parse_update};
use sitesync_wsus::{
    BlobError, Limits, UpdateBlob, decode_cabinet, decode_compressed_blob, parse_update_data,
    utf16le_to_utf8,
};

/// The blob of the one update a recorded GetUpdateData answer carries.
fn served(number: u32) -> sitesync_wsus::UpdateData {
    let mut batch = parse_update_data(&exchange(number).response_body, &Limits::default()).unwrap();
    batch.updates.remove(0)
}

/// The Cabinet inside a recorded compressed blob.
fn recorded_cabinet(number: u32) -> Vec<u8> {
    let UpdateBlob::Compressed(text) = served(number).blob else {
        panic!("exchange {number} has a compressed blob");
    };
    BASE64.decode(text).unwrap()
}

#[test]
fn the_served_documents_are_the_update_xml_fixtures() {
    let cases = [
        (14, "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml"),
        (15, "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml"),
        (16, "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml"),
    ];
    for (number, file) in cases {
        let document = served(number).blob.decode(&Limits::default()).unwrap();
        assert!(document == update_xml(file), "exchange {number} vs {file}");
    }
}

/// The blob of a2fef9b0 is the original document. The update-xml copy differs in exactly one
/// way: its French title has plain spaces where the blob has three no-break spaces (U+00A0).
/// So the comparison maps U+00A0 to a space, after checking there are exactly three of them.
#[test]
fn the_bundle_blob_is_the_fixture_but_for_three_no_break_spaces() {
    let document = served(13).blob.decode(&Limits::default()).unwrap();
    let text = String::from_utf8(document).unwrap();
    assert_eq!(text.matches('\u{a0}').count(), 3);
    let fixture = update_xml("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml");
    assert!(!String::from_utf8_lossy(&fixture).contains('\u{a0}'));
    assert!(text.replace('\u{a0}', " ").into_bytes() == fixture);
    // 34,785 UTF-16 code units (69,570 bytes in the Cabinet), as recorded.
    assert_eq!(text.encode_utf16().count(), 34_785);
}

#[test]
fn every_served_document_parses_as_the_revision_it_was_served_under() {
    for number in 13..=16 {
        let update = served(number);
        let document = update.blob.decode(&Limits::default()).unwrap();
        let revision = parse_update(&document, &ParseLimits::default())
            .unwrap_or_else(|e| panic!("exchange {number}: {e}"));
        // 56309036 writes its own id in upper case; ids compare as GUIDs.
        assert_eq!(revision.id, update.id, "exchange {number}");
        assert_eq!(revision.document, document);
    }
}

#[test]
fn the_recorded_cabinets_are_lzx_with_one_member_named_blob() {
    for number in [13, 14, 16] {
        let bytes = recorded_cabinet(number);
        let cabinet = cab::Cabinet::new(Cursor::new(&bytes)).unwrap();
        let folders: Vec<_> = cabinet.folder_entries().collect();
        assert_eq!(folders.len(), 1);
        assert_eq!(
            folders[0].compression_type(),
            CompressionType::Lzx(cab::WindowSize::MB2)
        );
        let names: Vec<_> = folders[0]
            .file_entries()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(names, ["blob"]);
    }
}

/// A Cabinet built with the `cab` crate (which writes MSZIP, not LZX), for hostile variants.
fn build_cabinet(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = CabinetBuilder::new();
    let folder = builder.add_folder(CompressionType::MsZip);
    for (name, _) in members {
        folder.add_file(*name);
    }
    let mut writer = builder.build(Cursor::new(Vec::new())).unwrap();
    let mut contents = members.iter();
    while let Some(mut file) = writer.next_file().unwrap() {
        file.write_all(contents.next().unwrap().1).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[test]
fn an_mszip_cabinet_decodes_too() {
    let document = "<upd:Update>caf\u{e9} \u{1f600}</upd:Update>";
    let cabinet = build_cabinet(&[("blob", &utf16le(document))]);
    let decoded = decode_cabinet(&cabinet, &Limits::default()).unwrap();
    assert_eq!(decoded, document.as_bytes());
    // And through base64, as a server would send it.
    let decoded = decode_compressed_blob(&BASE64.encode(&cabinet), &Limits::default()).unwrap();
    assert_eq!(decoded, document.as_bytes());
}

#[test]
fn a_byte_order_mark_is_dropped() {
    let mut member = vec![0xFF, 0xFE];
    member.extend(utf16le("<a/>"));
    let decoded = decode_cabinet(&build_cabinet(&[("blob", &member)]), &Limits::default());
    assert_eq!(decoded.unwrap(), b"<a/>");
}

#[test]
fn a_cabinet_declaring_a_huge_size_is_refused_before_reading() {
    let mut bytes = recorded_cabinet(16);
    bytes[8..12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::CabinetTooLarge {
                declared: 0x7fff_ffff,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_member_declaring_a_huge_size_is_refused_before_reading() {
    let mut bytes = recorded_cabinet(16);
    // The file entry of every recorded cabinet is at offset 44 (coffFiles), cbFile first.
    assert_eq!(&bytes[16..20], &44u32.to_le_bytes());
    bytes[44..48].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::MemberTooLarge {
                declared: 0x7fff_0000,
                ..
            }
        ),
        "{err}"
    );
    // A member within the cap but larger than what the data holds is truncated, not trusted.
    let mut bytes = recorded_cabinet(16);
    bytes[44..48].copy_from_slice(&20_000u32.to_le_bytes());
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::CabinetTruncated { .. }), "{err}");
}

#[test]
fn the_limit_follows_the_document_limit() {
    let small = Limits {
        max_document_bytes: 4_000,
        ..Limits::default()
    };
    // 56309036's member is 9,834 bytes: more than twice 4,000.
    let err = decode_cabinet(&recorded_cabinet(16), &small).unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::MemberTooLarge {
                declared: 9_834,
                limit: 8_000
            }
        ),
        "{err}"
    );
    // The document is 4,917 bytes of UTF-8 (9,834 of UTF-16): a limit of exactly that passes.
    let exact = Limits {
        max_document_bytes: 4_917,
        ..Limits::default()
    };
    assert!(decode_cabinet(&recorded_cabinet(16), &exact).is_ok());
}

#[test]
fn a_member_not_named_blob_is_refused() {
    let mut bytes = recorded_cabinet(16);
    assert_eq!(&bytes[60..65], b"blob\0");
    bytes[60..64].copy_from_slice(b"blub");
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        BlobError::MemberName {
            found: "blub".to_owned()
        }
    );
    let built = build_cabinet(&[("update.xml", &utf16le("<a/>"))]);
    let err = decode_cabinet(&built, &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        BlobError::MemberName {
            found: "update.xml".to_owned()
        }
    );
}

#[test]
fn more_than_one_member_is_refused() {
    let built = build_cabinet(&[("blob", &utf16le("<a/>")), ("blob2", &utf16le("<b/>"))]);
    let err = decode_cabinet(&built, &Limits::default()).unwrap_err();
    assert_eq!(err, BlobError::MemberCount { found: 2 });
}

#[test]
fn a_window_larger_than_2_mib_is_refused() {
    let mut bytes = recorded_cabinet(16);
    // typeCompress of the one folder: 0x1503 (LZX, 2^21) → 0x1903 (LZX, 2^25 = 32 MiB).
    assert_eq!(&bytes[42..44], &0x1503u16.to_le_bytes());
    bytes[42..44].copy_from_slice(&0x1903u16.to_le_bytes());
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::UnsupportedCabinet { .. }), "{err}");
    assert!(err.to_string().contains("2^25"), "{err}");
}

#[test]
fn odd_length_and_invalid_utf16_are_refused() {
    let err = decode_cabinet(&build_cabinet(&[("blob", b"<\0a")]), &Limits::default());
    assert_eq!(err.unwrap_err(), BlobError::OddLength { size: 3 });

    // `<` then a lone high surrogate then `a`.
    let member = [0x3C, 0x00, 0x00, 0xD8, 0x61, 0x00];
    let err = decode_cabinet(&build_cabinet(&[("blob", &member)]), &Limits::default());
    assert_eq!(
        err.unwrap_err(),
        BlobError::InvalidUtf16 {
            unit: 0xD800,
            byte: 2
        }
    );
    // A lone low surrogate at the end.
    let err = utf16le_to_utf8(&[0x3C, 0x00, 0x00, 0xDC], &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        BlobError::InvalidUtf16 {
            unit: 0xDC00,
            byte: 2
        }
    );
}

#[test]
fn truncated_blobs_are_refused_as_truncated() {
    let UpdateBlob::Compressed(text) = served(13).blob else {
        panic!("000013 has a compressed blob");
    };
    // Cut inside a base64 quantum: not base64 at all.
    let err = decode_compressed_blob(&text[..text.len() / 2 + 1], &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::Base64 { .. }), "{err}");
    // Cut on a quantum boundary: base64, but the Cabinet declares more than it has.
    let cut = text.len() / 2 / 4 * 4;
    let err = decode_compressed_blob(&text[..cut], &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::CabinetTruncated { .. }), "{err}");
    assert!(err.to_string().contains("declares 11337 bytes"), "{err}");
    // A Cabinet cut and patched to declare its new size: its data blocks run out.
    let mut bytes = recorded_cabinet(13);
    bytes.truncate(6_000);
    bytes[8..12].copy_from_slice(&6_000u32.to_le_bytes());
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::CabinetTruncated { .. }), "{err}");
    // Only a few bytes of header.
    let err = decode_cabinet(b"MSCF\0\0", &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::CabinetTruncated { .. }), "{err}");
    let err = decode_cabinet(b"MSC", &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::CabinetTruncated { .. }), "{err}");
}

#[test]
fn corrupt_compressed_data_is_refused() {
    let mut bytes = recorded_cabinet(14);
    // Zero the data block's checksum so the corruption reaches the LZX decoder.
    let data_block = 65;
    bytes[data_block..data_block + 4].fill(0);
    for b in &mut bytes[data_block + 8 + 100..data_block + 8 + 400] {
        *b ^= 0x5A;
    }
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::CorruptCabinet { .. }
                | BlobError::CabinetTruncated { .. }
                | BlobError::InvalidUtf16 { .. }
                | BlobError::OddLength { .. }
        ),
        "{err}"
    );
    // With the checksum in place, the Cabinet's own check catches it.
    let mut bytes = recorded_cabinet(14);
    bytes[data_block + 8 + 200] ^= 0x01;
    let err = decode_cabinet(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err, BlobError::CorruptCabinet { .. }), "{err}");
    assert!(err.to_string().contains("Checksum"), "{err}");
}

#[test]
fn not_a_cabinet_is_refused() {
    let err = decode_compressed_blob("PHVwZDpVcGRhdGUvPg==", &Limits::default()).unwrap_err();
    assert_eq!(err, BlobError::NotACabinet);
}

#[test]
fn plain_blobs_are_bounded_by_the_document_limit() {
    let limits = Limits {
        max_document_bytes: 10,
        ..Limits::default()
    };
    let blob = UpdateBlob::Plain("<a>0123456789</a>".to_owned());
    assert_eq!(
        blob.decode(&limits).unwrap_err(),
        BlobError::DocumentTooLarge {
            size: 17,
            limit: 10
        }
    );
}
