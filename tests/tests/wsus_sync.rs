//! A top site syncing from an upstream WSUS server (S1) between real processes: a
//! `sitesync-node` with `--upstream-wsus` against the fake upstream server over HTTP on
//! loopback. The first sync reaches the same store as the directory upstream of the same
//! catalog; a manual sync takes only the changes and a full one deletes what is gone; every
//! fault is ridden out or reported with 6703 and retried; a hostile answer changes nothing; a
//! node killed mid-sync resumes without fetching again what it stored; the settings' products
//! and classifications are asked of the server by name; and a WSUS-synced top site cascades
//! to every leaf.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_metadata::{ParseLimits, PublicationState, RevisionId};
use sitesync_node::clock::SystemClock;
use sitesync_node::store::NodeDatabase;
use sitesync_node::upstream::wsus::catalog::IN_FLIGHT;
use sitesync_node::upstream::wsus::{Session, WsusSettings, WsusUpstream};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, digest_hex, idle_after_success};
use sitesync_tests::highest_revisions;
use sitesync_tests::wsus_upstream::{FakeWsus, FakeWsusOptions, Fault, Hostile};
use sitesync_wsus::{Operation, ServerRoot};

/// One sync of a small catalog, or a cascade, in debug builds on a loaded machine.
const SYNC: Duration = Duration::from_secs(240);
const SEED: u64 = 23;
/// GetUpdateData's batch size the fake announces: small, so a sync takes many batches.
const BATCH: u32 = 10;

fn options() -> FakeWsusOptions {
    FakeWsusOptions {
        max_updates_per_request: BATCH,
        // Both blob forms: small documents plain, larger ones in a Cabinet.
        compress_above: 2048,
        ..FakeWsusOptions::default()
    }
}

/// A generated catalog in the hierarchy's catalog directory, served by the fake upstream.
async fn serve(hierarchy: &Hierarchy, documents: usize) -> (CatalogSpec, FakeWsus) {
    let spec = CatalogSpec::new(documents, SEED);
    write_catalog(hierarchy.catalog(), &spec, |_| {}).unwrap();
    let server = FakeWsus::start(hierarchy.catalog(), options())
        .await
        .unwrap();
    (spec, server)
}

fn site(status: &v1::SiteStatus) -> &v1::SiteState {
    status.site.as_ref().expect("a status names its site")
}

fn update_server_digest(status: &v1::SiteStatus) -> String {
    digest_hex(site(status).update_server.as_ref())
}

/// What the catalog directory offers through the server: the highest revision of each update.
fn offered(catalog: &Path) -> BTreeSet<RevisionId> {
    highest_revisions(catalog).unwrap()
}

/// A top site `CEN` syncing from `server` and, as the reference, a top site `DIR` syncing the
/// same catalog from the directory, each after its first sync.
async fn beside_the_directory(
    hierarchy: &mut Hierarchy,
    server: &FakeWsus,
) -> (v1::SiteStatus, v1::SiteStatus) {
    hierarchy
        .start_top_wsus("CEN", &server.url())
        .await
        .unwrap();
    hierarchy.start_top("DIR").await.unwrap();
    let mut first = Vec::new();
    for site_code in ["CEN", "DIR"] {
        first.push(
            hierarchy
                .node(site_code)
                .wait_status("its first sync", SYNC, idle_after_success)
                .await
                .unwrap(),
        );
    }
    let dir = first.pop().unwrap();
    (first.pop().unwrap(), dir)
}

/// The latest revision of every update the node's update-server store holds, with its state.
async fn held(node: &NodeProcess) -> BTreeMap<RevisionId, PublicationState> {
    let latest = node.latest_updates().await.unwrap();
    latest
        .into_iter()
        .map(|(id, state)| {
            let state = match state {
                v1::PublicationState::Expired => PublicationState::Expired,
                _ => PublicationState::Published,
            };
            (id, state)
        })
        .collect()
}

/// Revisions served, checking that none was served twice.
fn served_once(server: &FakeWsus) -> BTreeSet<RevisionId> {
    let served = server.served();
    let set: BTreeSet<RevisionId> = served.iter().copied().collect();
    assert_eq!(set.len(), served.len(), "a revision was fetched twice");
    set
}

/// Runs an operator's sync of `kind` and returns how it ended (6702 or 6703).
async fn sync(node: &NodeProcess, kind: v1::SyncKind) -> v1::StatusMessage {
    let id = node.run_sync(kind).await.unwrap();
    let end = node.sync_finished(&id, SYNC).await.unwrap();
    node.wait_status("idle after its sync", SYNC, |s| {
        site(s).current_sync.is_none()
    })
    .await
    .unwrap();
    end
}

async fn sync_done(node: &NodeProcess, kind: v1::SyncKind) -> v1::StatusMessage {
    let end = sync(node, kind).await;
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncDone,
        "{}",
        end.text
    );
    end
}

async fn sync_failed(node: &NodeProcess, kind: v1::SyncKind) -> v1::StatusMessage {
    let end = sync(node, kind).await;
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncFailed,
        "{}",
        end.text
    );
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_site_syncs_from_the_server_as_from_the_directory_and_then_only_the_changes() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let (spec, server) = serve(&hierarchy, 400).await;
    let url = server.url();
    let (cen, dir) = beside_the_directory(&mut hierarchy, &server).await;
    // The server lists each update's highest revision only, so older revisions the directory
    // holds are not fetched; the updates and their latest revisions are the same.
    let node = hierarchy.node("CEN");
    assert_eq!(
        held(node).await,
        held(hierarchy.node("DIR")).await,
        "the same updates as from the directory"
    );
    assert_eq!(
        site(&cen).update_server.as_ref().unwrap().revision_count,
        site(&cen).site_database.as_ref().unwrap().revision_count
    );
    let all = offered(hierarchy.catalog());
    assert_eq!(served_once(&server), all, "every revision fetched once");
    assert_eq!(
        held(node).await.keys().copied().collect::<BTreeSet<_>>(),
        all
    );
    assert!(site(&dir).update_server.is_some());
    // 6704 names the server.
    let first = site(&cen).last_sync.as_ref().unwrap().sync_id.clone();
    let phase = node
        .messages(&[v1::StatusMessageId::SyncUpdateServer], &first)
        .await
        .unwrap();
    assert!(phase[0].text.contains(&url), "{}", phase[0].text);

    // Every kind of change upstream.
    let changes = CatalogChanges::derive(&spec, 4, 1);
    changes.apply_to_dir(hierarchy.catalog()).unwrap();
    server.reload().await.unwrap();
    server.reset_counters();
    let changed: BTreeSet<RevisionId> = changes.documents().map(|d| d.id).collect();
    assert!(
        !changes.new_updates.is_empty()
            && !changes.new_revisions.is_empty()
            && !changes.expired.is_empty()
            && !changes.deleted.is_empty()
    );

    // Manual (S4): asked with the anchors; only what changed is fetched.
    sync_done(node, v1::SyncKind::Manual).await;
    assert_eq!(served_once(&server), changed, "only the changes fetched");
    assert_eq!(
        server.requests(Operation::GetRevisionIdList),
        2,
        "one list of each kind"
    );
    let after_manual = held(node).await;
    for document in &changes.new_updates {
        assert!(
            after_manual.contains_key(&document.id),
            "new {}",
            document.id
        );
    }
    for document in &changes.new_revisions {
        assert!(
            after_manual.contains_key(&document.id),
            "revised {}",
            document.id
        );
    }
    for document in &changes.expired {
        assert_eq!(
            after_manual.get(&document.id),
            Some(&PublicationState::Expired),
            "expired {}",
            document.id
        );
    }
    // An anchored list cannot tell what is gone.
    for gone in &changes.deleted {
        assert!(after_manual.keys().any(|id| id.update_id == *gone));
    }

    // Full (S3): the complete lists; nothing fetched again; what is gone is deleted.
    server.reset_counters();
    let done = sync_done(node, v1::SyncKind::Full).await;
    assert!(server.served().is_empty(), "nothing fetched again");
    assert_eq!(
        held(node).await.keys().copied().collect::<BTreeSet<_>>(),
        offered(hierarchy.catalog())
    );
    assert_eq!(
        done.properties
            .get("update_server.deleted")
            .map(String::as_str),
        Some(changes.deleted.len().to_string().as_str()),
        "{:?}",
        done.properties
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_ridden_out_or_reported_with_6703_and_a_hostile_server_changes_nothing() {
    let mut hierarchy = Hierarchy::new().unwrap();
    // One retry of a request, after 2 s: a fault that persists fails the sync quickly.
    hierarchy.set_config("[upstream]\nkind = \"wsus\"\nretries = 1\n");
    let (spec, server) = serve(&hierarchy, 120).await;
    let url = server.url();
    hierarchy.start_top_wsus("CEN", &url).await.unwrap();
    let node = hierarchy.node("CEN");
    node.wait_status("its first sync", SYNC, idle_after_success)
        .await
        .unwrap();

    // InvalidCookie: a new handshake, and the sync goes on.
    server.reset_counters();
    server.fail_next(Operation::GetRevisionIdList, 1, Fault::InvalidCookie);
    sync_done(node, v1::SyncKind::Manual).await;
    assert_eq!(server.requests(Operation::GetAuthorizationCookie), 1);
    assert_eq!(server.requests(Operation::GetCookie), 1);

    // ServerChanged: the anchors are dropped and the sync runs full.
    let changes = CatalogChanges::derive(&spec, 2, 2);
    changes.apply_to_dir(hierarchy.catalog()).unwrap();
    server.reload().await.unwrap();
    server.reset_counters();
    server.fail_next(Operation::GetRevisionIdList, 1, Fault::ServerChanged);
    sync_done(node, v1::SyncKind::Manual).await;
    assert_eq!(
        held(node).await.keys().copied().collect::<BTreeSet<_>>(),
        offered(hierarchy.catalog()),
        "a full scan: the deleted are gone too"
    );
    assert_eq!(
        served_once(&server),
        changes.documents().map(|d| d.id).collect(),
        "nothing held fetched again"
    );

    // InvalidParameters for the anchor: dropped, the list asked in full.
    server.reset_counters();
    server.fail_next(
        Operation::GetRevisionIdList,
        1,
        Fault::InvalidParameters("filter".into()),
    );
    sync_done(node, v1::SyncKind::Manual).await;
    assert_eq!(server.requests(Operation::GetRevisionIdList), 3);

    // InternalServerError on the batches holding one revision: isolated, skipped with 6790
    // naming it, the rest kept; asked again by the next sync.
    let changes = CatalogChanges::derive(&spec, 3, 3);
    changes.apply_to_dir(hierarchy.catalog()).unwrap();
    server.reload().await.unwrap();
    let bad = changes.new_updates[0].id;
    server.fail_update_data_containing(bad);
    let done = sync_done(node, v1::SyncKind::Manual).await;
    assert_eq!(
        done.properties.get("skipped").map(String::as_str),
        Some("1")
    );
    let skipped = node
        .messages(&[v1::StatusMessageId::DocumentSkipped], &done.sync_id)
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0].text.contains(&bad.update_id.to_string())
            && skipped[0].text.contains("InternalServerError"),
        "{}",
        skipped[0].text
    );
    let now = held(node).await;
    assert!(!now.contains_key(&bad));
    for document in changes.documents().filter(|d| d.id != bad) {
        assert!(now.contains_key(&document.id), "{}", document.id);
    }
    server.clear_failing_revisions();
    server.reset_counters();
    sync_done(node, v1::SyncKind::Manual).await;
    assert_eq!(served_once(&server), BTreeSet::from([bad]));
    assert!(held(node).await.contains_key(&bad));

    // A server busy beyond the retries, unreachable (HTTP 503), or answering nonsense: 6703
    // naming the server, a retry scheduled, the store unchanged, the node running. Each
    // injection is exactly what one failing sync uses up (a try and its one retry).
    let changes = CatalogChanges::derive(&spec, 2, 4);
    changes.apply_to_dir(hierarchy.catalog()).unwrap();
    server.reload().await.unwrap();
    let before = update_server_digest(&node.status().await.unwrap());
    type Inject<'a> = Box<dyn Fn() + 'a>;
    let failures: [(&str, &str, Inject); 3] = [
        (
            "busy",
            "busy",
            Box::new(|| server.fail_next(Operation::GetRevisionIdList, 2, Fault::ServerBusy)),
        ),
        (
            "unavailable",
            "503",
            Box::new(|| server.unavailable_next(2)),
        ),
        (
            "malformed",
            "GetRevisionIdList",
            Box::new(|| {
                server.hostile_next(Operation::GetRevisionIdList, 1, Hostile::MalformedSoap)
            }),
        ),
    ];
    for (what, names, inject) in failures {
        inject();
        let failed = sync_failed(node, v1::SyncKind::Manual).await;
        assert!(
            failed.text.contains(&url)
                && failed.text.contains(names)
                && failed.text.contains("A new sync is scheduled"),
            "{what}: {}",
            failed.text
        );
        let status = node.status().await.unwrap();
        assert_eq!(
            update_server_digest(&status),
            before,
            "{what}: store unchanged"
        );
        let last = site(&status).last_sync.clone().unwrap();
        assert_eq!(last.result(), v1::SyncResult::Failed, "{what}");
    }

    // Documents in Cabinets that claim 4 GiB: each refused (6790), the rest of the sync
    // goes on, and they are asked for again by the next sync.
    server.reset_counters();
    server.hostile_next(Operation::GetUpdateData, 1, Hostile::HugeCabinet);
    let done = sync_done(node, v1::SyncKind::Manual).await;
    let skipped = node
        .messages(&[v1::StatusMessageId::DocumentSkipped], &done.sync_id)
        .await
        .unwrap();
    assert!(!skipped.is_empty());
    for message in &skipped {
        assert!(
            message.text.contains("cannot be decoded"),
            "{}",
            message.text
        );
    }
    sync_done(node, v1::SyncKind::Manual).await;
    let now = held(node).await;
    for document in changes.documents() {
        assert!(now.contains_key(&document.id), "{}", document.id);
    }
}

/// What the killed node's tracker holds: read from its database while it is down.
fn tracked_while_down(node: &NodeProcess) -> BTreeSet<RevisionId> {
    let database = NodeDatabase::open(&node.data_dir.join("db"), 8 << 20).unwrap();
    let session = Session::new(
        WsusSettings::for_server(ServerRoot::parse("http://127.0.0.1:1").unwrap()),
        Arc::new(SystemClock::new()),
    )
    .unwrap();
    let upstream = WsusUpstream::open(
        session,
        database.space("upstream-wsus").unwrap(),
        &node.data_dir.join("upstream-wsus"),
        ParseLimits::default(),
    )
    .unwrap();
    upstream.revisions().map(|r| r.unwrap().id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_site_killed_mid_sync_resumes_without_fetching_again_what_it_stored() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let (_spec, server) = serve(&hierarchy, 3_000).await;
    let all = offered(hierarchy.catalog());
    hierarchy
        .start_top_wsus("CEN", &server.url())
        .await
        .unwrap();
    // Kill it once about a third has been fetched.
    let deadline = Instant::now() + SYNC;
    while server.served().len() < all.len() / 3 {
        assert!(Instant::now() < deadline, "the first sync did not get far");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hierarchy.node_mut("CEN").kill();
    // Batches the server was still answering when the client died.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = server.served();
    assert!(first.len() < all.len(), "killed before the end");
    let stored = tracked_while_down(hierarchy.node("CEN"));
    assert!(
        !stored.is_empty(),
        "some batches were stored before the kill"
    );

    server.reset_counters();
    hierarchy.node_mut("CEN").restart().await.unwrap();
    let node = hierarchy.node("CEN");
    node.wait_status("the redone sync", SYNC, idle_after_success)
        .await
        .unwrap();
    assert_eq!(
        held(node).await.keys().copied().collect::<BTreeSet<_>>(),
        all
    );
    let second = served_once(&server);
    assert!(
        second.is_disjoint(&stored),
        "nothing stored before the kill was fetched again"
    );
    // Fetched before the kill but not yet stored: at most the batches in flight.
    let again = second.iter().filter(|id| first.contains(id)).count();
    assert!(
        again <= IN_FLIGHT * BATCH as usize,
        "{again} revisions fetched twice"
    );
    let restart = node
        .messages(&[v1::StatusMessageId::SyncStarted], "")
        .await
        .unwrap();
    assert!(
        restart
            .iter()
            .any(|m| m.text.contains("interrupted by a restart")),
        "{restart:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_and_classifications_are_asked_of_the_server_by_name() {
    let mut hierarchy = Hierarchy::new().unwrap();
    hierarchy.set_config(
        "[sync]\nproducts = [\"Windows\", \"Office 2010\"]\nclassifications = [\"Security Updates\", \"Critical Updates\"]\n",
    );
    let (_spec, server) = serve(&hierarchy, 600).await;
    // The directory upstream of the same catalog with the same settings filters locally.
    let (cen, dir) = beside_the_directory(&mut hierarchy, &server).await;
    assert!(site(&dir).update_server.is_some());
    assert_eq!(
        held(hierarchy.node("CEN")).await,
        held(hierarchy.node("DIR")).await,
        "the server chose what the settings choose"
    );
    let all = offered(hierarchy.catalog());
    let served = served_once(&server);
    let held_now = held(hierarchy.node("CEN")).await;
    assert!(
        served.len() < all.len() / 2,
        "only the chosen were fetched: {} of {}",
        served.len(),
        all.len()
    );
    assert!(held_now.len() > CatalogSpec::category_documents());

    // A name the upstream does not know fails the sync with a reason, changing nothing.
    let node = hierarchy.node("CEN");
    let unknown = v1::SyncSettings {
        products: vec![v1::CategorySelector {
            by: Some(v1::category_selector::By::Name("Windows 95".into())),
        }],
        ..Default::default()
    };
    node.admin()
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(unknown),
            expected_revision: 0,
        })
        .await
        .unwrap();
    let failed = sync_failed(node, v1::SyncKind::Full).await;
    assert!(failed.text.contains("Windows 95"), "{}", failed.text);
    assert_eq!(
        update_server_digest(&node.status().await.unwrap()),
        update_server_digest(&cen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wsus_synced_top_site_cascades_to_every_leaf() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let (_spec, server) = serve(&hierarchy, 300).await;
    hierarchy
        .start_top_wsus("CEN", &server.url())
        .await
        .unwrap();
    let top = hierarchy
        .node("CEN")
        .wait_status("its first sync", SYNC, idle_after_success)
        .await
        .unwrap();
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    hierarchy.start_child("PR2", "CEN").await.unwrap();
    hierarchy.start_child("SE1", "PR1").await.unwrap();
    hierarchy.start_internet("IN1", "PR1").await.unwrap();
    let digest = update_server_digest(&top);
    let top_site_database = digest_hex(site(&top).site_database.as_ref());
    for leaf in ["PR1", "PR2", "SE1", "IN1"] {
        let node = hierarchy.node(leaf);
        let status = node
            .wait_status("the top site's catalog", SYNC, |s| {
                idle_after_success(s) && update_server_digest(s) == digest
            })
            .await
            .unwrap();
        if leaf != "IN1" {
            assert_eq!(
                digest_hex(site(&status).site_database.as_ref()),
                top_site_database,
                "{leaf}"
            );
        }
    }
}
