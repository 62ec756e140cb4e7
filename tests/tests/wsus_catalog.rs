//! The WSUS upstream as a catalog (`sitesync_node::upstream::wsus::WsusUpstream`) against the
//! fake upstream server over real HTTP, with its tracker in a real on-disk node database: what
//! a scan tracks, what an anchored scan fetches again (nothing it holds), removals by a full
//! scan, the product and classification filter, and the faults a scan works around.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, GeneratedDocument, write_catalog};
use sitesync_metadata::{CategoryType, ParseLimits, RevisionId, UpdateId};
use sitesync_node::clock::SystemClock;
use sitesync_node::store::NodeDatabase;
use sitesync_node::upstream::wsus::{DocumentLogOptions, Session, WsusScanReport, WsusUpstream};
use sitesync_node::upstream::{ScanProgress, TrackedRevision};
use sitesync_tests::wsus_upstream::{FakeWsus, FakeWsusOptions, Fault, Hostile};
use sitesync_wsus::Operation;
use tempfile::TempDir;

const SEED: u64 = 7;

/// A generated catalog served by the fake, and a node database for trackers.
struct Fixture {
    catalog: TempDir,
    spec: CatalogSpec,
    server: FakeWsus,
    data: TempDir,
    database: NodeDatabase,
}

impl Fixture {
    async fn start(updates: usize, options: FakeWsusOptions) -> Self {
        let catalog = tempfile::tempdir().unwrap();
        let spec = CatalogSpec::new(CatalogSpec::category_documents() + updates, SEED);
        write_catalog(catalog.path(), &spec, |_| {}).unwrap();
        let server = FakeWsus::start(catalog.path(), options).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let database = NodeDatabase::open(&data.path().join("db"), 8 << 20).unwrap();
        Self {
            catalog,
            spec,
            server,
            data,
            database,
        }
    }

    /// An upstream over the tracker in key space `space` (its documents in a directory of
    /// that name), with a session of its own.
    fn upstream(&self, space: &str) -> WsusUpstream {
        self.upstream_with(space, DocumentLogOptions::default())
    }

    fn upstream_with(&self, space: &str, options: DocumentLogOptions) -> WsusUpstream {
        let settings =
            sitesync_tests::fast_wsus_settings(&self.server.url(), 2, Duration::from_millis(10));
        let session = Session::new(settings, Arc::new(SystemClock::new())).unwrap();
        WsusUpstream::open_with(
            session,
            self.database.space(space).unwrap(),
            &self.data.path().join(space),
            options,
            ParseLimits::default(),
        )
        .unwrap()
    }

    /// What the catalog offers: the highest revision of every update in the directory.
    fn offered(&self) -> BTreeSet<RevisionId> {
        sitesync_tests::highest_revisions(self.catalog.path()).unwrap()
    }

    fn file(&self, id: RevisionId) -> Vec<u8> {
        std::fs::read(
            self.catalog
                .path()
                .join(GeneratedDocument::file_name_for(id)),
        )
        .unwrap()
    }

    /// The segment files of the tracker in key space `space`, by number, with their sizes.
    fn segments(&self, space: &str) -> Vec<(u32, u64)> {
        let mut segments: Vec<(u32, u64)> = std::fs::read_dir(self.data.path().join(space))
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().unwrap();
                let number = name.strip_suffix(".seg")?.parse().ok()?;
                Some((number, entry.metadata().unwrap().len()))
            })
            .collect();
        segments.sort_unstable();
        segments
    }

    fn segment_bytes(&self, space: &str) -> u64 {
        self.segments(space).iter().map(|(_, size)| size).sum()
    }

    /// Served revisions, checking that none was served twice.
    fn served_once(&self) -> BTreeSet<RevisionId> {
        let served = self.server.served();
        let set: BTreeSet<RevisionId> = served.iter().copied().collect();
        assert_eq!(set.len(), served.len(), "a revision was fetched twice");
        set
    }
}

async fn scan(upstream: &WsusUpstream, full: bool) -> WsusScanReport {
    upstream.scan(full, &[], &[], &mut |_| {}).await.unwrap()
}

fn tracked(upstream: &WsusUpstream) -> BTreeMap<RevisionId, TrackedRevision> {
    upstream
        .revisions()
        .map(|r| {
            let r = r.unwrap();
            (r.id, r)
        })
        .collect()
}

fn ids(upstream: &WsusUpstream) -> BTreeSet<RevisionId> {
    tracked(upstream).into_keys().collect()
}

fn small_batches() -> FakeWsusOptions {
    FakeWsusOptions {
        max_updates_per_request: 7,
        // Both blob forms: small documents plain, larger ones compressed.
        compress_above: 2048,
        ..FakeWsusOptions::default()
    }
}

#[tokio::test]
async fn a_first_full_scan_tracks_every_offered_revision_with_its_document() {
    let fixture = Fixture::start(60, small_batches()).await;
    let upstream = fixture.upstream("wsus");
    let mut calls = 0;
    let report = upstream
        .scan(true, &[], &[], &mut |_| calls += 1)
        .await
        .unwrap();

    let offered = fixture.offered();
    assert_eq!(ids(&upstream), offered);
    assert_eq!(report.listed, offered.len());
    assert_eq!(report.fetched, offered.len());
    assert_eq!(report.tracked, offered.len());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(report.complete);
    assert!(calls > 2, "progress after every batch");
    for id in &offered {
        assert_eq!(upstream.document(*id).unwrap(), fixture.file(*id), "{id}");
        assert_eq!(upstream.update_revision(*id).unwrap().id, *id);
    }
    assert_eq!(fixture.served_once(), offered);
    assert!(fixture.server.requests(Operation::GetUpdateData) >= (offered.len() / 7) as u64);

    // Nothing new: nothing fetched, and a scan that holds everything fetches nothing.
    fixture.server.reset_counters();
    let again = scan(&upstream, false).await;
    assert_eq!((again.fetched, again.unchanged), (0, 0));
    let full = scan(&upstream, true).await;
    assert_eq!(
        (full.fetched, full.unchanged, full.removed),
        (0, offered.len(), 0)
    );
    assert!(fixture.server.served().is_empty());
}

#[tokio::test]
async fn an_anchored_scan_fetches_only_the_changes_and_a_full_scan_removes_the_gone() {
    let fixture = Fixture::start(80, small_batches()).await;
    let upstream = fixture.upstream("wsus");
    scan(&upstream, true).await;
    let before = ids(&upstream);

    let changes = CatalogChanges::derive(&fixture.spec, 3, 11);
    changes.apply_to_dir(fixture.catalog.path()).unwrap();
    fixture.server.reload().await.unwrap();
    fixture.server.reset_counters();

    let report = scan(&upstream, false).await;
    let changed: BTreeSet<RevisionId> = changes.documents().map(|d| d.id).collect();
    assert!(!changed.is_empty() && !changes.deleted.is_empty());
    assert_eq!(fixture.served_once(), changed, "only the changed revisions");
    assert_eq!(report.fetched, changed.len());
    assert!(!report.complete);
    let after = ids(&upstream);
    assert!(changed.is_subset(&after));
    // A newer revision replaces the older one of its update.
    for document in changes.new_revisions.iter().chain(&changes.expired) {
        let of_update = after
            .iter()
            .filter(|id| id.update_id == document.id.update_id)
            .count();
        assert_eq!(of_update, 1, "{}", document.id);
    }
    // An anchored list cannot tell what is gone: the deleted are still tracked.
    for gone in &changes.deleted {
        assert!(before.iter().any(|id| id.update_id == *gone));
        assert!(after.iter().any(|id| id.update_id == *gone));
    }

    fixture.server.reset_counters();
    let full = scan(&upstream, true).await;
    assert!(fixture.server.served().is_empty(), "nothing fetched twice");
    assert_eq!(full.removed, changes.deleted.len());
    assert_eq!(ids(&upstream), fixture.offered());
}

#[tokio::test]
async fn a_damaged_document_is_refused_and_the_next_scan_fetches_everything_again() {
    let fixture = Fixture::start(40, small_batches()).await;
    let upstream = fixture.upstream("wsus");
    scan(&upstream, true).await;
    let held = ids(&upstream);
    let victim = *held.iter().next().unwrap();
    assert_eq!(upstream.document(victim).unwrap(), fixture.file(victim));

    // Change every byte of the segment files' contents, as a failing disk might.
    for (number, _) in fixture.segments("wsus") {
        let path = fixture
            .data
            .path()
            .join("wsus")
            .join(format!("{number:08}.seg"));
        let bytes: Vec<u8> = std::fs::read(&path).unwrap().iter().map(|b| !b).collect();
        std::fs::write(&path, bytes).unwrap();
    }
    let err = upstream.document(victim).unwrap_err().to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("the next sync fetches everything again"),
        "{err}"
    );

    // An anchored scan would fetch nothing; the damage makes it start over.
    fixture.server.reset_counters();
    let report = scan(&upstream, false).await;
    assert_eq!(
        fixture.served_once(),
        fixture.offered(),
        "everything fetched again"
    );
    assert!(report.complete, "{report:?}");
    assert_eq!(ids(&upstream), held);
    for id in held {
        assert_eq!(upstream.document(id).unwrap(), fixture.file(id), "{id}");
    }
}

#[tokio::test]
async fn dead_documents_are_reclaimed_and_the_live_ones_stay_readable() {
    let fixture = Fixture::start(200, small_batches()).await;
    // Small segments, reclaimed from the first dead byte.
    let options = DocumentLogOptions {
        segment_bytes: 8 << 10,
        reclaim_above: 0,
    };
    let upstream = fixture.upstream_with("wsus", options);
    scan(&upstream, true).await;
    let all = tracked(&upstream);
    let bytes_before = fixture.segment_bytes("wsus");
    let kept_in = |files: &[(u32, u64)]| files.iter().map(|(n, _)| *n).collect::<BTreeSet<_>>();
    let segments_before = kept_in(&fixture.segments("wsus"));

    // A narrow filter: a full scan removes most updates, so most bytes are dead.
    let products = category_ids(&all, CategoryType::Product);
    let classifications = category_ids(&all, CategoryType::UpdateClassification);
    let (product, classification) = all
        .values()
        .filter(|r| r.category_type.is_none())
        .find_map(|r| {
            let p = r.categories.iter().find(|c| products.contains(c))?;
            let c = r.categories.iter().find(|c| classifications.contains(c))?;
            Some((*p, *c))
        })
        .unwrap();
    let report = upstream
        .scan(true, &[product], &[classification], &mut |_| {})
        .await
        .unwrap();
    assert!(report.removed > all.len() / 2, "{report:?}");

    let bytes_after = fixture.segment_bytes("wsus");
    assert!(
        bytes_after * 2 < bytes_before,
        "{bytes_after} bytes on disk after removing {} of {} revisions, {bytes_before} before",
        report.removed,
        all.len()
    );
    let segments_after = kept_in(&fixture.segments("wsus"));
    assert!(
        !segments_after.is_superset(&segments_before),
        "segments were deleted"
    );
    // Every tracked revision, moved or not, still reads back as the server's document.
    let left = ids(&upstream);
    assert_eq!(left.len(), report.tracked);
    for id in left {
        assert_eq!(upstream.document(id).unwrap(), fixture.file(id), "{id}");
    }
    // And after a restart of the upstream on the same files.
    drop(upstream);
    let reopened = fixture.upstream_with("wsus", options);
    for id in ids(&reopened) {
        assert_eq!(reopened.document(id).unwrap(), fixture.file(id), "{id}");
    }
}

/// The products and classifications of the catalog's categories, by tracked record.
fn category_ids(
    tracked: &BTreeMap<RevisionId, TrackedRevision>,
    kind: CategoryType,
) -> BTreeSet<UpdateId> {
    tracked
        .values()
        .filter(|r| r.category_type == Some(kind))
        .map(|r| r.id.update_id)
        .collect()
}

/// Updates of `all` in a product of `products` and a classification of `classifications`.
fn in_filter(
    all: &BTreeMap<RevisionId, TrackedRevision>,
    products: &[UpdateId],
    classifications: &[UpdateId],
) -> BTreeSet<RevisionId> {
    all.values()
        .filter(|r| r.category_type.is_none())
        .filter(|r| products.iter().any(|p| r.categories.contains(p)))
        .filter(|r| classifications.iter().any(|c| r.categories.contains(c)))
        .map(|r| r.id)
        .collect()
}

#[tokio::test]
async fn the_filter_chooses_the_updates_and_newly_selected_ones_come_in_full() {
    let fixture = Fixture::start(120, small_batches()).await;
    let everything = fixture.upstream("all");
    scan(&everything, true).await;
    let all = tracked(&everything);
    let products = category_ids(&all, CategoryType::Product);
    let classifications = category_ids(&all, CategoryType::UpdateClassification);

    // The product and classification of some update, then a second classification.
    let (product, classification, other) = all
        .values()
        .filter(|r| r.category_type.is_none())
        .find_map(|r| {
            let p = r.categories.iter().find(|c| products.contains(c))?;
            let c = r.categories.iter().find(|c| classifications.contains(c))?;
            let other = classifications.iter().find(|o| *o != c)?;
            Some((*p, *c, *other))
        })
        .unwrap();

    let filtered = fixture.upstream("filtered");
    filtered
        .scan(true, &[product], &[classification], &mut |_| {})
        .await
        .unwrap();
    let tracked_now = ids(&filtered);
    let wanted = in_filter(&all, &[product], &[classification]);
    let categories: BTreeSet<RevisionId> = all
        .values()
        .filter(|r| r.category_type.is_some())
        .map(|r| r.id)
        .collect();
    assert!(!wanted.is_empty());
    assert!(wanted.is_subset(&tracked_now));
    assert!(
        categories.is_subset(&tracked_now),
        "categories come whatever the filter"
    );
    let bundled: HashSet<UpdateId> = wanted
        .iter()
        .flat_map(|id| all[id].bundled.iter().copied())
        .collect();
    for id in &tracked_now {
        assert!(
            categories.contains(id) || wanted.contains(id) || bundled.contains(&id.update_id),
            "{id} is outside the filter"
        );
    }
    assert!(tracked_now.len() < all.len());

    // A newly selected classification: anchored, its updates come in full (Delta false).
    fixture.server.reset_counters();
    let report = filtered
        .scan(false, &[product], &[classification, other], &mut |_| {})
        .await
        .unwrap();
    let wanted_now = in_filter(&all, &[product], &[classification, other]);
    assert!(wanted_now.is_subset(&ids(&filtered)));
    let served = fixture.served_once();
    assert!(served.is_disjoint(&tracked_now), "nothing fetched twice");
    assert_eq!(report.fetched, served.len());
}

#[tokio::test]
async fn a_revision_the_server_fails_on_is_isolated_and_skipped_and_the_rest_kept() {
    let fixture = Fixture::start(60, small_batches()).await;
    let offered = fixture.offered();
    let bad = *offered.iter().nth(offered.len() / 2).unwrap();
    fixture.server.fail_update_data_containing(bad);

    let upstream = fixture.upstream("wsus");
    let report = scan(&upstream, true).await;
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].revision, bad);
    assert!(report.skipped[0].reason.contains("InternalServerError"));
    let mut rest = offered.clone();
    rest.remove(&bad);
    assert_eq!(ids(&upstream), rest);
    assert_eq!(fixture.served_once(), rest);

    // The list's anchor moved past it, yet the next scan asks for it again.
    fixture.server.clear_failing_revisions();
    fixture.server.reset_counters();
    let report = scan(&upstream, false).await;
    assert_eq!((report.retried, report.fetched), (1, 1));
    assert_eq!(fixture.served_once(), BTreeSet::from([bad]));
    assert_eq!(ids(&upstream), offered);
    fixture.server.reset_counters();
    assert_eq!(
        scan(&upstream, false).await.retried,
        0,
        "asked for once only"
    );
}

#[tokio::test]
async fn server_changed_drops_the_anchors_and_scans_in_full() {
    let fixture = Fixture::start(60, small_batches()).await;
    let upstream = fixture.upstream("wsus");
    scan(&upstream, true).await;
    let changes = CatalogChanges::derive(&fixture.spec, 2, 5);
    changes.apply_to_dir(fixture.catalog.path()).unwrap();
    fixture.server.reload().await.unwrap();
    fixture.server.reset_counters();

    fixture
        .server
        .fail_next(Operation::GetRevisionIdList, 1, Fault::ServerChanged);
    let report = scan(&upstream, false).await;
    assert!(report.complete, "continued as a full scan");
    assert_eq!(
        report.removed,
        changes.deleted.len() + changes.new_revisions.len() + changes.expired.len()
    );
    assert_eq!(ids(&upstream), fixture.offered());
    assert_eq!(fixture.server.requests(Operation::GetRevisionIdList), 3);
    let changed: BTreeSet<RevisionId> = changes.documents().map(|d| d.id).collect();
    assert_eq!(
        fixture.served_once(),
        changed,
        "a full list refetches nothing held"
    );
}

#[tokio::test]
async fn a_refused_anchor_is_dropped_and_the_list_asked_in_full() {
    let fixture = Fixture::start(30, small_batches()).await;
    let upstream = fixture.upstream("wsus");
    scan(&upstream, true).await;
    fixture.server.reset_counters();
    fixture.server.fail_next(
        Operation::GetRevisionIdList,
        1,
        Fault::InvalidParameters("filter".into()),
    );
    let report = scan(&upstream, false).await;
    assert_eq!(report.fetched, 0);
    assert_eq!(report.unchanged, CatalogSpec::category_documents());
    assert_eq!(fixture.server.requests(Operation::GetRevisionIdList), 3);
}

#[tokio::test]
async fn a_scan_cut_in_the_middle_resumes_without_fetching_again_what_it_stored() {
    let fixture = Fixture::start(150, small_batches()).await;
    let upstream = fixture.upstream("wsus");
    let cut = tokio::sync::Notify::new();
    let mut cut_after_60 = |p: ScanProgress| {
        if p.read >= 60 {
            cut.notify_one()
        }
    };
    tokio::select! {
        _ = upstream.scan(true, &[], &[], &mut cut_after_60) => {
            panic!("the scan was to be cut")
        }
        () = cut.notified() => {}
    }
    let held = ids(&upstream);
    assert!(!held.is_empty() && held.len() < fixture.offered().len());
    // The batches in flight at the cut were abandoned by the client, not by the server, which
    // still answers them: let it finish before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = fixture.server.served();

    fixture.server.reset_counters();
    let report = scan(&upstream, false).await;
    assert!(report.skipped.is_empty());
    assert_eq!(ids(&upstream), fixture.offered());
    let second = fixture.served_once();
    assert!(
        second.is_disjoint(&held),
        "nothing stored was fetched again"
    );
    // Fetched in the first run but not stored: at most the batches in flight at the cut.
    let refetched = second.iter().filter(|id| first.contains(id)).count();
    assert!(refetched <= 7 * sitesync_node::upstream::wsus::catalog::IN_FLIGHT);
}

#[tokio::test]
async fn a_document_served_under_another_id_is_skipped_naming_it() {
    let fixture = Fixture::start(40, small_batches()).await;
    fixture.server.hostile_next(
        Operation::GetUpdateData,
        1,
        Hostile::DocumentOfAnotherRevision,
    );
    let upstream = fixture.upstream("wsus");
    let report = scan(&upstream, true).await;
    assert!(!report.skipped.is_empty());
    for skipped in &report.skipped {
        assert!(
            skipped.reason.contains("another revision"),
            "{}",
            skipped.reason
        );
        assert!(upstream.revision(skipped.revision).unwrap().is_none());
    }
    let mut rest = fixture.offered();
    for skipped in &report.skipped {
        rest.remove(&skipped.revision);
    }
    assert_eq!(ids(&upstream), rest);
}
