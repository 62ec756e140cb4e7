//! The catalog-directory upstream: what a scan finds (new documents, new revisions, expired
//! revisions, removed files), per-document isolation (malformed, misnamed, duplicate and
//! oversized files are skipped with a reason and tried again), what is not re-read, and the
//! content check of `document`. The semantic tests run on both the in-memory and the sled
//! backends, with the real fixture documents and generated catalogs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, GeneratedDocument, write_catalog};
use sitesync_metadata::{
    CategoryType, ContentHash, ParseLimits, PublicationState, RevisionId, UpdateType, parse_update,
};
use sitesync_node::store::backend::open_sled;
use sitesync_node::store::{Backend, DEFAULT_CACHE_BYTES, MemoryBackend, SledBackend};
use sitesync_node::upstream::{
    DirectoryUpstream, ScanProgress, ScanReport, TrackedRevision, UpstreamError,
};
use tempfile::TempDir;

// The allocator the node binary uses, so the timing run measures the product.
sitesync_node::node_allocator!();

const DEFENDER: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml";
const MICROSOFT: &str = "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml";
const WINDOWS: &str = "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d-r100.xml";
const DELTAS: &str = "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml";
const STUB: &str = "ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml";
const FIXTURES: [&str; 5] = [MICROSOFT, WINDOWS, DELTAS, DEFENDER, STUB];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../metadata/tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    fs::read(fixtures_dir().join(name)).unwrap()
}

/// Copies the fixtures by content (the originals are read-only).
fn copy_fixtures(dir: &Path) {
    for name in FIXTURES {
        fs::write(dir.join(name), fixture(name)).unwrap();
    }
}

fn id_of(name: &str) -> RevisionId {
    let (guid, revision) = name.trim_end_matches(".xml").split_at(36);
    RevisionId {
        update_id: guid.parse().unwrap(),
        revision: revision.trim_start_matches("-r").parse().unwrap(),
    }
}

/// Sets a file's modification time, as a copy tool preserving times would.
fn set_modified(path: &Path, time: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// Makes every file of `dir` look written an hour ago, so size and time alone prove it
/// unchanged at the next scan (recent files are re-hashed; see `RACY_WINDOW`).
fn age_files(dir: &Path) {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for entry in fs::read_dir(dir).unwrap() {
        set_modified(&entry.unwrap().path(), an_hour_ago);
    }
}

/// A tracker key space and what keeps it alive.
struct Tracker {
    name: &'static str,
    backend: Box<dyn Backend>,
    _db: Option<(sled::Db, TempDir)>,
}

fn trackers() -> Vec<Tracker> {
    let dir = TempDir::new().unwrap();
    let db = open_sled(dir.path(), 8 << 20).unwrap();
    let tree = db.open_tree("upstream.directory").unwrap();
    vec![
        Tracker {
            name: "memory",
            backend: Box::new(MemoryBackend::new()),
            _db: None,
        },
        Tracker {
            name: "sled",
            backend: Box::new(SledBackend::new(tree)),
            _db: Some((db, dir)),
        },
    ]
}

/// Runs `test` once per backend, each with a fresh catalog directory.
fn on_every_backend(test: impl Fn(&str, &Path, Box<dyn Backend>)) {
    for tracker in trackers() {
        let catalog = TempDir::new().unwrap();
        test(tracker.name, catalog.path(), tracker.backend);
    }
}

fn open(dir: &Path, tracker: Box<dyn Backend>) -> DirectoryUpstream {
    DirectoryUpstream::open(dir.to_owned(), tracker, ParseLimits::default()).unwrap()
}

fn scan(upstream: &DirectoryUpstream) -> ScanReport {
    upstream.scan(&mut |_| {}).unwrap()
}

fn all(upstream: &DirectoryUpstream) -> Vec<TrackedRevision> {
    upstream.revisions().collect::<Result<_, _>>().unwrap()
}

fn skipped_names(report: &ScanReport) -> Vec<String> {
    report
        .skipped
        .iter()
        .map(|s| s.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn real_documents_are_tracked_with_what_filtering_needs() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let upstream = open(dir, tracker);
        let report = scan(&upstream);
        assert_eq!(
            (
                report.listed,
                report.parsed,
                report.unchanged,
                report.removed,
                report.tracked
            ),
            (5, 5, 0, 0, 5),
            "{backend}"
        );
        assert!(report.skipped.is_empty(), "{backend}: {:?}", report.skipped);

        let revisions = all(&upstream);
        let mut expected: Vec<RevisionId> = FIXTURES.iter().map(|n| id_of(n)).collect();
        expected.sort();
        assert_eq!(revisions.iter().map(|r| r.id).collect::<Vec<_>>(), expected);

        for name in FIXTURES {
            let document = fixture(name);
            let parsed = parse_update(&document, &ParseLimits::default()).unwrap();
            let tracked = upstream.revision(parsed.id).unwrap().unwrap();
            assert_eq!(
                tracked,
                TrackedRevision::of(&parsed, ContentHash::of(&document), name.to_owned())
            );
            assert_eq!(upstream.document(parsed.id).unwrap(), document, "{name}");
            assert_eq!(upstream.update_revision(parsed.id).unwrap(), parsed);
        }

        let defender = upstream.revision(id_of(DEFENDER)).unwrap().unwrap();
        assert_eq!(defender.update_type, UpdateType::Software);
        assert_eq!(defender.publication_state, PublicationState::Published);
        assert!(defender.bundled.len() > 100, "{}", defender.bundled.len());
        assert!(!defender.categories.is_empty());
        assert!(defender.languages.len() > 20, "{:?}", defender.languages);
        assert!(defender.languages.iter().any(|l| l == "en"));
        assert!(defender.title.contains("KB2267602"), "{}", defender.title);
        assert_eq!(defender.category_type, None);

        // The fixture writes its own id in upper case; the name is lower case.
        let microsoft = upstream.revision(id_of(MICROSOFT)).unwrap().unwrap();
        assert_eq!(microsoft.update_type, UpdateType::Category);
        assert_eq!(microsoft.category_type, Some(CategoryType::Company));
        assert_eq!(microsoft.file_name, MICROSOFT);

        let stub = upstream.revision(id_of(STUB)).unwrap().unwrap();
        assert_eq!(
            upstream.revisions_of(stub.id.update_id).unwrap(),
            vec![stub]
        );
    });
}

#[test]
fn a_rescan_without_changes_parses_nothing() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let upstream = open(dir, tracker);
        scan(&upstream);

        // Just written: size and time are not conclusive, so the files are hashed again,
        // but nothing is parsed.
        let report = scan(&upstream);
        assert_eq!((report.parsed, report.unchanged, report.tracked), (0, 5, 5));

        // Old files: size and time prove them unchanged; nothing is even read.
        age_files(dir);
        scan(&upstream);
        let mut last = ScanProgress::default();
        let report = upstream.scan(&mut |p| last = p).unwrap();
        assert_eq!(
            (
                report.parsed,
                report.unchanged,
                report.removed,
                report.tracked
            ),
            (0, 5, 0, 5),
            "{backend}"
        );
        assert_eq!(
            (last.listed, last.to_read, last.read),
            (5, 0, 0),
            "{backend}"
        );

        // Touched but not changed: read and hashed, not parsed.
        set_modified(&dir.join(STUB), SystemTime::now() - Duration::from_secs(60));
        let report = upstream.scan(&mut |p| last = p).unwrap();
        assert_eq!((report.parsed, report.unchanged), (0, 5));
        assert_eq!(last.to_read, 1);
    });
}

#[test]
fn the_tracker_survives_a_restart() {
    let data = TempDir::new().unwrap();
    let catalog = TempDir::new().unwrap();
    copy_fixtures(catalog.path());
    age_files(catalog.path());
    let open_sled_upstream = || {
        let db = open_sled(data.path(), 8 << 20).unwrap();
        let tree = db.open_tree("upstream.directory").unwrap();
        (open(catalog.path(), Box::new(SledBackend::new(tree))), db)
    };
    {
        let (upstream, _db) = open_sled_upstream();
        assert_eq!(scan(&upstream).parsed, 5);
    }
    let (upstream, _db) = open_sled_upstream();
    assert_eq!(all(&upstream).len(), 5);
    let report = scan(&upstream);
    assert_eq!((report.parsed, report.unchanged), (0, 5));
}

#[test]
fn a_corrupt_record_is_reported_and_the_next_scan_reads_every_file_again() {
    let data = TempDir::new().unwrap();
    let catalog = TempDir::new().unwrap();
    copy_fixtures(catalog.path());
    age_files(catalog.path());
    let db = open_sled(data.path(), 8 << 20).unwrap();
    let tree = db.open_tree("upstream.directory").unwrap();
    let upstream = open(catalog.path(), Box::new(SledBackend::new(tree.clone())));
    assert_eq!(scan(&upstream).parsed, 5);

    // A revision record that no longer decodes, as a damaged disk might leave it.
    let (key, _) = tree.scan_prefix(b"R").next().unwrap().unwrap();
    tree.insert(key, &[0xFF; 3][..]).unwrap();
    let err = upstream.revisions_after(None, 100).unwrap_err();
    assert!(matches!(err, UpstreamError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the next sync rebuilds it from the directory"),
        "{err}"
    );

    let report = scan(&upstream);
    assert_eq!(report.parsed, 5, "every file read again: {report:?}");
    assert_eq!(all(&upstream).len(), 5);
}

#[test]
fn new_updates_new_revisions_expirations_and_deletions_are_seen() {
    let spec = CatalogSpec::new(400, 11);
    let changes = CatalogChanges::derive(&spec, 3, 5);
    assert_eq!(
        (
            changes.new_updates.len(),
            changes.new_revisions.len(),
            changes.expired.len(),
            changes.deleted.len()
        ),
        (3, 3, 3, 3)
    );
    on_every_backend(|backend, dir, tracker| {
        write_catalog(dir, &spec, |_| {}).unwrap();
        let upstream = open(dir, tracker);
        let first = scan(&upstream);
        assert_eq!((first.parsed, first.tracked), (400, 400), "{backend}");
        assert!(first.skipped.is_empty(), "{:?}", first.skipped);

        let deleted_revisions: usize = changes
            .deleted
            .iter()
            .map(|u| upstream.revisions_of(*u).unwrap().len())
            .sum();
        assert!(deleted_revisions >= 3);
        changes.apply_to_dir(dir).unwrap();

        let report = scan(&upstream);
        assert_eq!(report.parsed, 9, "{backend}");
        assert_eq!(report.removed, deleted_revisions, "{backend}");
        assert_eq!(report.tracked, 400 + 9 - deleted_revisions);
        assert_eq!(all(&upstream).len(), report.tracked);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);

        let tracked = |document: &GeneratedDocument| upstream.revision(document.id).unwrap();
        for new in &changes.new_updates {
            let revisions = upstream.revisions_of(new.id.update_id).unwrap();
            assert_eq!(revisions.len(), 1);
            assert_eq!(revisions[0].publication_state, PublicationState::Published);
        }
        for revised in &changes.new_revisions {
            let revisions = upstream.revisions_of(revised.id.update_id).unwrap();
            assert!(
                revisions.len() >= 2,
                "the earlier revision is still offered"
            );
            assert_eq!(revisions.last().unwrap().id, revised.id);
            assert_eq!(
                tracked(revised).unwrap().publication_state,
                PublicationState::Published
            );
        }
        for expired in &changes.expired {
            assert_eq!(
                tracked(expired).unwrap().publication_state,
                PublicationState::Expired
            );
            assert_eq!(upstream.document(expired.id).unwrap(), expired.xml);
        }
        for deleted in &changes.deleted {
            assert!(upstream.revisions_of(*deleted).unwrap().is_empty());
        }
    });
}

#[test]
fn a_removed_file_is_forgotten() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let upstream = open(dir, tracker);
        scan(&upstream);
        fs::remove_file(dir.join(STUB)).unwrap();
        let report = scan(&upstream);
        assert_eq!((report.removed, report.tracked), (1, 4), "{backend}");
        assert_eq!(upstream.revision(id_of(STUB)).unwrap(), None);
        assert!(matches!(
            upstream.document(id_of(STUB)),
            Err(UpstreamError::NotTracked { .. })
        ));
        assert_eq!(all(&upstream).len(), 4);
    });
}

#[test]
fn a_malformed_document_is_skipped_and_taken_once_fixed() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let stub = fixture(STUB);
        fs::write(dir.join(STUB), &stub[..stub.len() / 2]).unwrap();
        let upstream = open(dir, tracker);

        let report = scan(&upstream);
        assert_eq!((report.parsed, report.tracked), (4, 4), "{backend}");
        assert_eq!(report.skipped.len(), 1);
        let skipped = &report.skipped[0];
        assert_eq!(skipped.file, dir.join(STUB));
        assert_eq!(skipped.revision, Some(id_of(STUB)));
        assert!(
            skipped.reason.contains("not a valid update document")
                && skipped.reason.contains("truncated"),
            "{}",
            skipped.reason
        );
        assert_eq!(upstream.revision(id_of(STUB)).unwrap(), None);

        // Not recorded, so it is tried again, and skipped again.
        let report = scan(&upstream);
        assert_eq!((report.parsed, report.skipped.len()), (0, 1));

        fs::write(dir.join(STUB), &stub).unwrap();
        let report = scan(&upstream);
        assert_eq!((report.parsed, report.tracked), (1, 5));
        assert!(report.skipped.is_empty());
        assert_eq!(upstream.document(id_of(STUB)).unwrap(), stub);
    });
}

#[test]
fn a_tracked_document_that_turns_bad_keeps_its_record_until_fixed() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let upstream = open(dir, tracker);
        scan(&upstream);
        let before = upstream.revision(id_of(DELTAS)).unwrap().unwrap();

        fs::write(dir.join(DELTAS), b"<upd:Update").unwrap();
        let report = scan(&upstream);
        assert_eq!(skipped_names(&report), vec![DELTAS], "{backend}");
        assert_eq!((report.parsed, report.tracked), (0, 5));
        assert_eq!(upstream.revision(id_of(DELTAS)).unwrap(), Some(before));
        assert!(matches!(
            upstream.document(id_of(DELTAS)),
            Err(UpstreamError::DocumentChanged { .. })
        ));

        fs::write(dir.join(DELTAS), fixture(DELTAS)).unwrap();
        let report = scan(&upstream);
        assert!(report.skipped.is_empty());
        assert_eq!(
            (report.parsed, report.unchanged),
            (0, 5),
            "the same bytes again"
        );
        assert_eq!(upstream.document(id_of(DELTAS)).unwrap(), fixture(DELTAS));
    });
}

#[test]
fn misnamed_and_duplicate_files_are_skipped_with_a_reason() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        // A real document under another update's name.
        let other = "11111111-2222-4333-8444-555555555555-r100.xml";
        fs::write(dir.join(other), fixture(STUB)).unwrap();
        // Names that cannot be a revision.
        fs::write(dir.join("catalog.xml"), fixture(STUB)).unwrap();
        fs::write(
            dir.join("ccb78947-6453-4ecc-9de8-bc0305c98f2d-r0200.xml"),
            fixture(STUB),
        )
        .unwrap();
        // The same revision twice, under two spellings of its name.
        let upper = STUB
            .to_uppercase()
            .replace("-R", "-r")
            .replace(".XML", ".xml");
        fs::write(dir.join(&upper), fixture(STUB)).unwrap();
        // Not documents at all.
        fs::write(dir.join("README.md"), "notes").unwrap();
        fs::create_dir(dir.join("old.xml")).unwrap();

        let upstream = open(dir, tracker);
        let report = scan(&upstream);
        assert_eq!(report.listed, 9, "{backend}");
        assert_eq!((report.parsed, report.tracked), (5, 5));
        let reasons: Vec<(String, &str)> = skipped_names(&report)
            .into_iter()
            .zip(report.skipped.iter().map(|s| s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:#?}");
        let reason = |name: &str| {
            reasons
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} not skipped: {reasons:#?}"))
                .1
        };
        assert!(
            reason(other).contains("the file name says"),
            "{}",
            reason(other)
        );
        assert!(
            reason(other).contains("rename the file ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml")
        );
        assert!(reason("catalog.xml").contains("<update id>-r<revision>.xml"));
        assert!(
            reason("ccb78947-6453-4ecc-9de8-bc0305c98f2d-r0200.xml")
                .contains("<update id>-r<revision>.xml")
        );
        // The lower-case name sorts after the upper-case one, but neither was tracked, so
        // the first name wins and the other is the duplicate.
        let (first, second) = if upper.as_str() < STUB {
            (upper.as_str(), STUB)
        } else {
            (STUB, upper.as_str())
        };
        assert!(
            reason(second).contains(&format!("is also in {first}")),
            "{}",
            reason(second)
        );
        assert_eq!(
            upstream.revision(id_of(STUB)).unwrap().unwrap().file_name,
            first
        );

        // Once the tracked file goes, the remaining spelling takes over.
        fs::remove_file(dir.join(first)).unwrap();
        let report = scan(&upstream);
        assert_eq!((report.removed, report.parsed), (1, 1));
        assert_eq!(
            upstream.revision(id_of(STUB)).unwrap().unwrap().file_name,
            second
        );
        assert_eq!(upstream.document(id_of(STUB)).unwrap(), fixture(STUB));
    });
}

#[test]
fn an_oversized_document_is_skipped_without_being_read() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let limits = ParseLimits {
            max_document_bytes: 20_000,
            ..ParseLimits::default()
        };
        let upstream = DirectoryUpstream::open(dir.to_owned(), tracker, limits).unwrap();
        let report = scan(&upstream);
        assert_eq!(skipped_names(&report), vec![DEFENDER], "{backend}");
        assert!(
            report.skipped[0]
                .reason
                .contains("more than the limit of 20000 bytes")
        );
        assert_eq!(report.tracked, 4);
    });
}

#[test]
fn an_unreachable_directory_fails_the_scan() {
    on_every_backend(|backend, dir, tracker| {
        let missing = dir.join("not-mounted");
        let upstream =
            DirectoryUpstream::open(missing.clone(), tracker, ParseLimits::default()).unwrap();
        match upstream.scan(&mut |_| {}) {
            Err(UpstreamError::Unreachable { path, .. }) => assert_eq!(path, missing),
            other => panic!("{backend}: {other:?}"),
        }
        let message = upstream.scan(&mut |_| {}).unwrap_err().to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(!upstream.scan(&mut |_| {}).unwrap_err().is_per_document());

        // A file where the directory should be.
        fs::write(&missing, "").unwrap();
        assert!(matches!(
            upstream.scan(&mut |_| {}),
            Err(UpstreamError::Unreachable { .. })
        ));
    });
}

#[test]
fn an_emptied_directory_is_refused_until_reset() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        let upstream = open(dir, tracker);
        scan(&upstream);
        for name in FIXTURES {
            fs::remove_file(dir.join(name)).unwrap();
        }
        match upstream.scan(&mut |_| {}) {
            Err(UpstreamError::Emptied { tracked, .. }) => assert_eq!(tracked, 5, "{backend}"),
            other => panic!("{backend}: {other:?}"),
        }
        assert_eq!(all(&upstream).len(), 5, "nothing was forgotten");
        upstream.reset().unwrap();
        let report = scan(&upstream);
        assert_eq!((report.listed, report.tracked), (0, 0));
    });
}

#[test]
fn a_document_changed_after_the_scan_is_an_error_and_read_again() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        age_files(dir);
        let upstream = open(dir, tracker);
        scan(&upstream);
        let path = dir.join(DELTAS);
        let id = id_of(DELTAS);
        let old_time = fs::metadata(&path).unwrap().modified().unwrap();

        // Same size, same time, other bytes: nothing a listing can see.
        let original = fixture(DELTAS);
        let changed = String::from_utf8(original.clone())
            .unwrap()
            .replacen("Defender", "Defendor", 1)
            .into_bytes();
        assert_eq!(changed.len(), original.len());
        fs::write(&path, &changed).unwrap();
        set_modified(&path, old_time);
        assert_eq!(scan(&upstream).parsed, 0, "{backend}");

        let error = upstream.document(id).unwrap_err();
        assert!(matches!(&error, UpstreamError::DocumentChanged { file, .. } if *file == path));
        assert!(error.is_per_document());
        assert!(error.to_string().contains(&path.display().to_string()));

        // The failed read marked the record, so the next scan reads the file again.
        let report = scan(&upstream);
        assert_eq!(report.parsed, 1, "{backend}");
        assert_eq!(upstream.document(id).unwrap(), changed);
        assert_eq!(
            upstream.revision(id).unwrap().unwrap().content_hash,
            ContentHash::of(&changed)
        );

        // A file that is gone since the scan.
        fs::remove_file(dir.join(STUB)).unwrap();
        assert!(matches!(
            upstream.document(id_of(STUB)),
            Err(UpstreamError::DocumentUnreadable { .. })
        ));
    });
}

#[test]
fn reset_makes_the_next_scan_read_everything() {
    on_every_backend(|backend, dir, tracker| {
        copy_fixtures(dir);
        age_files(dir);
        let upstream = open(dir, tracker);
        scan(&upstream);
        upstream.reset().unwrap();
        assert!(all(&upstream).is_empty());
        assert!(matches!(
            upstream.document(id_of(STUB)),
            Err(UpstreamError::NotTracked { .. })
        ));
        let report = scan(&upstream);
        assert_eq!(
            (report.parsed, report.unchanged, report.tracked),
            (5, 0, 5),
            "{backend}"
        );
    });
}

#[test]
fn revisions_page_through_a_catalog_larger_than_a_page() {
    let catalog = TempDir::new().unwrap();
    let spec = CatalogSpec::new(2_100, 3);
    write_catalog(catalog.path(), &spec, |_| {}).unwrap();
    let upstream = open(catalog.path(), Box::new(MemoryBackend::new()));
    let mut progress = Vec::new();
    let report = upstream.scan(&mut |p| progress.push(p)).unwrap();
    assert_eq!(report.tracked, 2_100);
    let last = progress.last().unwrap();
    assert_eq!(
        (last.listed, last.to_read, last.read, last.parsed),
        (2_100, 2_100, 2_100, 2_100)
    );

    let mut expected: Vec<RevisionId> = spec.documents().map(|d| d.id).collect();
    expected.sort();
    let listed: Vec<RevisionId> = upstream.revisions().map(|r| r.unwrap().id).collect();
    assert_eq!(listed, expected);
    let after = expected[1_500];
    let page = upstream.revisions_after(Some(after), 10).unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        expected[1_501..1_511]
    );
}

/// Timing and peak memory of a first scan, a rescan without changes, and a rescan after
/// about 100 new documents (34 new updates, 34 new revisions, 34 expirations) and 34 deleted
/// updates, on sled with the node's cache size. Not a test of speed; run with
/// `SITESYNC_SCAN_DOCUMENTS=100000 cargo test --release -p sitesync-node --test
/// upstream_directory -- --ignored --nocapture scan_timing`.
#[test]
#[ignore = "timing run, see its documentation"]
fn scan_timing() {
    let documents: usize = std::env::var("SITESYNC_SCAN_DOCUMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let catalog = TempDir::new().unwrap();
    let data = TempDir::new().unwrap();
    let spec = CatalogSpec::new(documents, 1);
    let started = Instant::now();
    let summary = write_catalog(catalog.path(), &spec, |_| {}).unwrap();
    eprintln!(
        "generated {} documents, {} MB, in {:.1?}",
        summary.documents,
        summary.bytes >> 20,
        started.elapsed()
    );
    let changes = CatalogChanges::derive(&spec, 34, 2);
    // Let the files age past the racy window, as a real catalog has.
    age_files(catalog.path());

    let db = open_sled(data.path(), DEFAULT_CACHE_BYTES).unwrap();
    let tree = db.open_tree("upstream.directory").unwrap();
    let upstream = open(catalog.path(), Box::new(SledBackend::new(tree)));
    let timed = |what: &str| {
        reset_peak_memory();
        let started = Instant::now();
        let report = scan(&upstream);
        let elapsed = started.elapsed();
        eprintln!(
            "{what}: {elapsed:.2?} (listed {}, parsed {}, unchanged {}, removed {}, skipped {}, tracked {}; {:.0} documents/s parsed)",
            report.listed,
            report.parsed,
            report.unchanged,
            report.removed,
            report.skipped.len(),
            report.tracked,
            report.parsed as f64 / elapsed.as_secs_f64()
        );
        eprintln!("    peak RSS {} MB", peak_memory_kb() >> 10);
        elapsed
    };
    eprintln!(
        "before the first scan: peak RSS {} MB",
        peak_memory_kb() >> 10
    );
    let first = timed("first scan");
    let quiet = timed("rescan, no changes");
    changes.apply_to_dir(catalog.path()).unwrap();
    let changed = timed("rescan after the changes");
    let started = Instant::now();
    let listed = upstream.revisions().count();
    eprintln!("revisions(): {listed} in {:.2?}", started.elapsed());
    eprintln!(
        "rescans as a fraction of the first: {:.2}% (no changes), {:.2}% (changes)",
        100.0 * quiet.as_secs_f64() / first.as_secs_f64(),
        100.0 * changed.as_secs_f64() / first.as_secs_f64()
    );
}

/// The peak resident memory since the last reset, where Linux reports it.
fn peak_memory_kb() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn reset_peak_memory() {
    // Linux resets the peak to the current resident size on "5"; elsewhere, nothing.
    let _ = fs::write("/proc/self/clear_refs", "5");
}
