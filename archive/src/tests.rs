//! Writing and reading export files, and every way a file can be wrong.

use std::io::Cursor;
use std::time::SystemTime;

use proptest::prelude::*;
use rustls::pki_types::CertificateDer;
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY, first_certificate};
use sitesync_security::signing::Signer;
use sitesync_security::{Identity, TlsFiles};

use super::*;

const LOG: &str = "0b1c8e3a-7d1e-4e55-9a59-3c2e0b0d8f11";

struct Keys {
    _dir: tempfile::TempDir,
    signer: Signer,
    ca: Vec<CertificateDer<'static>>,
    other_ca: Vec<CertificateDer<'static>>,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::init(&dir.path().join("a"), "test").unwrap();
    let cen = Identity::site("CEN").unwrap();
    authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
    let signer = Signer::load(&TlsFiles::in_pki_dir(&dir.path().join("a"), &cen)).unwrap();
    let other = Authority::init(&dir.path().join("b"), "other").unwrap();
    let ca_of = |authority: &Authority| {
        vec![CertificateDer::from(
            first_certificate(&std::fs::read(authority.certificate_path()).unwrap()).unwrap(),
        )]
    };
    Keys {
        ca: ca_of(&authority),
        other_ca: ca_of(&other),
        signer,
        _dir: dir,
    }
}

fn anchor(sequence: u64) -> v1::Anchor {
    v1::Anchor {
        log_id: LOG.to_owned(),
        sequence,
        snapshot_through: None,
    }
}

/// A log batch from `from` to `to` deleting one update per sequence number.
fn log_batch(from: u64, to: u64) -> v1::ChangeBatch {
    let changes = (from + 1..=to)
        .map(|sequence| v1::CatalogChange {
            sequence,
            kind: v1::ChangeKind::Deleted as i32,
            payload: Some(v1::catalog_change::Payload::Deleted(v1::RevisionId {
                update_id: Some(v1::UpdateId {
                    guid: format!("00000000-0000-0000-0000-{sequence:012}"),
                }),
                revision: 1,
            })),
        })
        .collect();
    v1::ChangeBatch {
        from: Some(anchor(from)),
        body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart { changes })),
        resume_anchor: Some(anchor(to)),
    }
}

/// An incremental file from 10 to 40 in three chunks, as `header` says (or as the
/// header `tweak` makes it).
fn incremental(keys: &Keys, tweak: impl FnOnce(&mut v1::ArchiveHeader)) -> Vec<u8> {
    let batches = [log_batch(10, 20), log_batch(20, 30), log_batch(30, 40)];
    written(keys, &batches, tweak)
}

fn written(
    keys: &Keys,
    batches: &[v1::ChangeBatch],
    tweak: impl FnOnce(&mut v1::ArchiveHeader),
) -> Vec<u8> {
    let mut counts = v1::ArchiveCounts::default();
    for batch in batches {
        add_counts(&mut counts, &batch_counts(batch));
    }
    let mut header = v1::ArchiveHeader {
        format_version: FORMAT_VERSION,
        source_site: "CEN".into(),
        kind: v1::ArchiveKind::Incremental as i32,
        catalog_version: Some(v1::SignedCatalogVersion::default()),
        update_server_digest: Some(v1::CatalogDigest { value: vec![7; 32] }),
        site_database_digest: None,
        base: batches.first().and_then(|b| b.from.clone()),
        target: batches.last().and_then(|b| b.resume_anchor.clone()),
        counts: Some(counts),
        revision_count: 0,
        created_at: None,
    };
    tweak(&mut header);
    // The writer checks the counts against the header; a lying header is written by hand.
    let honest_counts = counts;
    let stated = header.counts.unwrap_or_default();
    header.counts = Some(honest_counts);
    let mut writer = Writer::start(Vec::new(), &header).unwrap();
    for batch in batches {
        writer.chunk(batch).unwrap();
    }
    let bytes = writer.finish(&keys.signer).unwrap();
    if stated == honest_counts {
        bytes
    } else {
        rewrite_header(keys, &bytes, |h| h.counts = Some(stated))
    }
}

/// Rewrites a file's header and signs a fresh manifest for it with the same key: what only
/// a holder of a trusted key can do.
fn rewrite_header(
    keys: &Keys,
    bytes: &[u8],
    change: impl FnOnce(&mut v1::ArchiveHeader),
) -> Vec<u8> {
    let mut archive = trusted(keys, bytes);
    let mut header = archive.header().clone();
    change(&mut header);
    let batches: Vec<_> = archive.batches(0).map(Result::unwrap).collect();
    let mut writer = Writer::start(Vec::new(), &header).unwrap();
    // Bypass the writer's own count check by writing what the (changed) header claims.
    writer.header_counts = header.counts.unwrap_or_default();
    writer.counts = writer.header_counts;
    for batch in &batches {
        let before = writer.counts;
        writer.chunk(batch).unwrap();
        writer.counts = before;
    }
    writer.finish(&keys.signer).unwrap()
}

/// `bytes` opened and its signature checked.
fn trusted(keys: &Keys, bytes: &[u8]) -> Archive<Cursor<Vec<u8>>> {
    let mut archive = Archive::open(Cursor::new(bytes.to_vec())).unwrap();
    archive
        .verify_signature(&keys.ca, |_| false, SystemTime::now())
        .unwrap();
    archive
}

fn check(keys: &Keys, bytes: &[u8]) -> Result<Verified, ArchiveError> {
    check_with(&keys.ca, bytes)
}

fn check_with(ca: &[CertificateDer<'_>], bytes: &[u8]) -> Result<Verified, ArchiveError> {
    let mut archive = Archive::open(Cursor::new(bytes.to_vec()))?;
    archive.verify_signature(ca, |_| false, SystemTime::now())?;
    archive.verify(|_, _| {})
}

#[test]
fn a_written_file_reads_back_with_its_header_and_batches() {
    let keys = keys();
    let bytes = incremental(&keys, |_| {});
    let verified = check(&keys, &bytes).unwrap();
    assert_eq!(verified.signer, Identity::site("CEN").unwrap());
    assert_eq!(verified.chunks, 3);
    assert_eq!(verified.counts.deleted, 30);
    let mut archive = Archive::open(Cursor::new(bytes.clone())).unwrap();
    assert_eq!(archive.header().target, Some(anchor(40)));
    assert_eq!(archive.len(), bytes.len() as u64);
    archive
        .verify_signature(&keys.ca, |_| false, SystemTime::now())
        .unwrap();
    let resumed: Vec<_> = archive.batches(1).map(Result::unwrap).collect();
    assert_eq!(resumed, vec![log_batch(20, 30), log_batch(30, 40)]);
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let keys = keys();
    let bytes = incremental(&keys, |_| {});
    for position in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x20;
        assert!(
            check(&keys, &damaged).is_err(),
            "a flipped byte at {position} of {} went through",
            bytes.len()
        );
    }
}

#[test]
fn truncation_at_any_point_is_refused() {
    let keys = keys();
    let bytes = incremental(&keys, |_| {});
    for len in 0..bytes.len() {
        let error = check(&keys, &bytes[..len]).unwrap_err();
        assert!(
            matches!(
                error,
                ArchiveError::Truncated(_) | ArchiveError::NotAnExport | ArchiveError::Frame { .. }
            ),
            "at {len}: {error}"
        );
    }
}

#[test]
fn a_key_of_another_hierarchy_is_refused() {
    let keys = keys();
    let bytes = incremental(&keys, |_| {});
    let error = check_with(&keys.other_ca, &bytes).unwrap_err();
    assert!(matches!(error, ArchiveError::Signature(_)), "{error}");
    // Trusting both CAs accepts it.
    let both: Vec<_> = keys.other_ca.iter().chain(&keys.ca).cloned().collect();
    check_with(&both, &bytes).unwrap();
}

#[test]
fn a_header_that_lies_about_its_counts_is_refused() {
    let keys = keys();
    let bytes = incremental(&keys, |h| {
        h.counts = Some(v1::ArchiveCounts {
            deleted: 29,
            ..Default::default()
        });
    });
    let error = check(&keys, &bytes).unwrap_err();
    assert!(
        matches!(
            error,
            ArchiveError::Counts {
                kind: "deleted",
                header: 29,
                actual: 30
            }
        ),
        "{error}"
    );
}

#[test]
fn duplicated_missing_and_reordered_chunks_are_refused_even_when_signed() {
    let keys = keys();
    for (batches, what) in [
        (
            vec![log_batch(10, 20), log_batch(10, 20), log_batch(20, 30)],
            "duplicated",
        ),
        (vec![log_batch(10, 20), log_batch(30, 40)], "missing"),
        (
            vec![log_batch(20, 30), log_batch(10, 20), log_batch(30, 40)],
            "reordered",
        ),
    ] {
        let bytes = written(&keys, &batches, |h| {
            h.base = Some(anchor(10));
            h.target = Some(anchor(40));
        });
        let error = check(&keys, &bytes).unwrap_err();
        assert!(
            matches!(
                error,
                ArchiveError::Chain { .. } | ArchiveError::Target { .. }
            ),
            "{what}: {error}"
        );
    }
}

#[test]
fn chunks_swapped_after_signing_do_not_match_the_manifest() {
    let keys = keys();
    let bytes = incremental(&keys, |_| {});
    let archive = trusted(&keys, &bytes);
    let chunks = archive.manifest.chunks.clone();
    // Chunks 1 and 2 carry the same number of records, so they have equal lengths.
    let (a, b) = (&chunks[1], &chunks[2]);
    assert_eq!(a.stored_bytes, b.stored_bytes);
    let len = (FRAME_PREFIX_BYTES + u64::from(a.stored_bytes)) as usize;
    let mut swapped = bytes.clone();
    let (a, b) = (a.offset as usize, b.offset as usize);
    swapped[a..a + len].copy_from_slice(&bytes[b..b + len]);
    swapped[b..b + len].copy_from_slice(&bytes[a..a + len]);
    let error = check(&keys, &swapped).unwrap_err();
    assert!(
        matches!(error, ArchiveError::ChunkDigest { index: 1, .. }),
        "{error}"
    );
}

#[test]
fn a_chunk_that_decompresses_past_its_declared_size_is_refused() {
    let keys = keys();
    let bytes = incremental(&keys, |_| {});
    // Re-sign a manifest whose first chunk declares fewer decompressed bytes.
    let archive = trusted(&keys, &bytes);
    let mut manifest = archive.manifest.clone();
    manifest.chunks[0].plain_bytes -= 10;
    let forged = resign(&keys, &bytes, archive.manifest_offset, &manifest);
    let error = check(&keys, &forged).unwrap_err();
    assert!(
        matches!(error, ArchiveError::Decompress { index: 0, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("past its declared size"),
        "{error}"
    );
    // And one declaring more than a chunk may hold is refused before it is read.
    manifest.chunks[0].plain_bytes = u32::MAX;
    let forged = resign(&keys, &bytes, archive.manifest_offset, &manifest);
    let error = check(&keys, &forged).unwrap_err();
    assert!(
        matches!(error, ArchiveError::ChunkTooLarge { index: 0, .. }),
        "{error}"
    );
}

/// `bytes` with its manifest replaced by `manifest`, signed with the trusted key.
fn resign(keys: &Keys, bytes: &[u8], offset: u64, manifest: &v1::ArchiveManifest) -> Vec<u8> {
    use prost::Message as _;
    let encoded = manifest.encode_to_vec();
    let (_, signature, certificate) = keys.signer.sign(&manifest_signed_bytes(&encoded)).unwrap();
    let signed = v1::SignedArchiveManifest {
        manifest: encoded,
        algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
        signature,
        signer_certificate: certificate,
    }
    .encode_to_vec();
    let mut out = bytes[..offset as usize].to_vec();
    out.push(b'M');
    out.extend_from_slice(&(signed.len() as u32).to_le_bytes());
    out.extend_from_slice(&signed);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(END_MAGIC);
    out
}

#[test]
fn an_unknown_format_version_and_a_foreign_file_are_named() {
    let keys = keys();
    let error = check(&keys, b"PK\x03\x04 a zip file, not an export").unwrap_err();
    assert!(matches!(error, ArchiveError::NotAnExport), "{error}");
    let bytes = incremental(&keys, |_| {});
    // The writer stamps its own version: a header of version 2 is put together by hand.
    let mut header = Archive::open(Cursor::new(bytes.clone()))
        .unwrap()
        .header()
        .clone();
    header.format_version = 2;
    let mut out = MAGIC.to_vec();
    let encoded = prost::Message::encode_to_vec(&header);
    out.push(b'H');
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    let error = check(&keys, &out).unwrap_err();
    assert!(
        matches!(error, ArchiveError::UnknownVersion { found: 2, known: 1 }),
        "{error}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever bytes a file holds, reading it never panics: it is refused or it verifies.
    #[test]
    fn reading_any_bytes_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        cut_it in any::<bool>(),
    ) {
        let bytes = FILE.with(Clone::clone);
        let mut damaged = bytes.clone();
        for (at, value) in edits {
            let at = at.index(damaged.len());
            damaged[at] = value;
        }
        if cut_it {
            damaged.truncate(cut.index(damaged.len() + 1));
        }
        let ca = KEYS.with(|k| k.ca.clone());
        let result = check_with(&ca, &damaged);
        if damaged == bytes {
            prop_assert!(result.is_ok());
        }
    }

    /// Random bytes after the magic never panic either.
    #[test]
    fn random_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&tail);
        let ca = KEYS.with(|k| k.ca.clone());
        let _ = check_with(&ca, &bytes);
    }
}

thread_local! {
    static KEYS: Keys = keys();
    static FILE: Vec<u8> = KEYS.with(|keys| incremental(keys, |_| {}));
}
