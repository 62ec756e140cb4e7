//! Hierarchies of real `sitesync-node` processes on loopback (SPEC S2, S5, S10, S11 and
//! invariants 1–4): the cascade reaches every leaf, crashes of a child or of its parent in
//! the middle of a sync lose nothing and duplicate nothing, a child that was down gets its
//! sync request when it returns, the internet-facing node follows its own site only, and a
//! child refuses a manual sync.
//!
//! Each test has its own temporary directory, generated catalog and ports (port 0), so the
//! tests run in parallel. Nothing waits a fixed time: every wait polls the nodes' Admin
//! status with a generous deadline, for a loaded two-core machine running debug builds.
//! When a test fails, every node's log is printed (see `sitesync_tests::cluster`).

use std::collections::BTreeSet;
use std::time::Duration;

use sitesync_metadata::RevisionId;
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::store::{CatalogStore, ChangeKind, DEFAULT_CACHE_BYTES, NodeDatabase};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, digest_hex};

/// A cascade of a small catalog through a few debug-build nodes.
const CONVERGE: Duration = Duration::from_secs(240);
/// One sync at the top site.
const TOP_SYNC: Duration = Duration::from_secs(240);
/// A catalog whose replication takes long enough, in a debug build, to be interrupted.
const LARGE_CATALOG: usize = 6_000;

fn digests(status: &v1::SiteStatus) -> (Option<v1::CatalogDigest>, Option<v1::CatalogDigest>) {
    let site = status.site.as_ref();
    (
        site.and_then(|s| s.update_server.as_ref())
            .and_then(|s| s.digest.clone()),
        site.and_then(|s| s.site_database.as_ref())
            .and_then(|s| s.digest.clone()),
    )
}

fn last_sync(status: &v1::SiteStatus) -> Option<&v1::SyncRun> {
    status.site.as_ref().and_then(|s| s.last_sync.as_ref())
}

fn current_sync(status: &v1::SiteStatus) -> Option<&v1::SyncRun> {
    status.site.as_ref().and_then(|s| s.current_sync.as_ref())
}

/// Idle, and the last sync succeeded.
fn settled(status: &v1::SiteStatus) -> bool {
    current_sync(status).is_none()
        && last_sync(status).is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
}

/// Writes a generated catalog into the hierarchy's upstream directory.
fn write_generated(hierarchy: &Hierarchy, documents: usize, seed: u64) -> CatalogSpec {
    let spec = CatalogSpec::new(documents, seed);
    write_catalog(hierarchy.catalog(), &spec, |_| {}).unwrap();
    spec
}

/// Starts the top site `CEN` and waits for its first sync (a fresh top site syncs at once).
async fn start_top(hierarchy: &mut Hierarchy) -> v1::SiteStatus {
    let top = hierarchy.start_top("CEN").await.unwrap();
    top.wait_status("first sync of the top site", TOP_SYNC, settled)
        .await
        .unwrap()
}

/// Runs a full sync at the top site by hand and returns its status once it succeeded.
async fn sync_top(top: &NodeProcess) -> v1::SiteStatus {
    let sync_id = top.run_sync(v1::SyncKind::Full).await.unwrap();
    let end = top.sync_finished(&sync_id, TOP_SYNC).await.unwrap();
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncDone,
        "the top site's sync failed: {}",
        end.text
    );
    top.wait_status("idle after its sync", TOP_SYNC, settled)
        .await
        .unwrap()
}

/// Waits until `node` holds the reference's catalog in both stores and is idle after a
/// successful sync; returns its status.
async fn wait_converged(node: &NodeProcess, reference: &v1::SiteStatus) -> v1::SiteStatus {
    let (update_server, site_database) = digests(reference);
    let reference_site = reference.site.as_ref().unwrap();
    let what = format!(
        "update server {} and site database {} as {}",
        digest_hex(reference_site.update_server.as_ref()),
        digest_hex(reference_site.site_database.as_ref()),
        reference_site.site_code
    );
    node.wait_status(&what, CONVERGE, |status| {
        let (u, s) = digests(status);
        settled(status) && u == update_server && s == site_database
    })
    .await
    .unwrap()
}

/// Waits until `child` appears in `parent`'s hierarchy view as its direct child (a child
/// appears there once it registered, before it reports anything); returns that entry.
async fn wait_registered(parent: &NodeProcess, child: &str) -> v1::SiteState {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let tree = parent
            .admin()
            .get_hierarchy(v1::GetHierarchyRequest::default())
            .await
            .map(tonic::Response::into_inner);
        if let Ok(tree) = &tree
            && let Some(state) = tree
                .sites
                .iter()
                .filter_map(|n| n.state.as_ref())
                .find(|s| s.site_code == child)
        {
            assert_eq!(
                state.parent_site_code, parent.site_code,
                "{child} is in {}'s tree under another parent: {tree:#?}",
                parent.site_code
            );
            return state.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{child} never appeared in {}'s hierarchy: {tree:#?}",
            parent.site_code
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sync at `node` that its parent asked for (S2, S10): a full sync (S5) naming the
/// parent's request, with both phases' status messages (one phase for an internet node).
async fn assert_parent_requested(node: &NodeProcess, status: &v1::SiteStatus) {
    let run = last_sync(status).unwrap();
    let site = &node.site_code;
    assert_eq!(
        run.trigger(),
        v1::SyncTrigger::ParentRequest,
        "{site} synced without its parent's request: {run:#?}"
    );
    assert_eq!(run.kind(), v1::SyncKind::Full, "{site} (S5)");
    let ids: Vec<i32> = node
        .messages(&[], &run.sync_id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    let internet = status.site.as_ref().unwrap().role() == v1::SiteRole::Internet;
    let expected: &[i32] = if internet {
        &[6701, 6704, 6702]
    } else {
        &[6701, 6704, 6705, 6702]
    };
    for id in expected {
        assert!(ids.contains(id), "{site}'s sync raised {ids:?}");
    }
    if internet {
        assert!(
            !ids.contains(&6705),
            "{site} has no site-database phase: {ids:?}"
        );
    }
}

/// Waits until `node`'s current sync is in `phase` with some of it done, polling as fast as
/// the node answers; returns the progress seen. Fails if the sync finishes first.
async fn wait_in_phase(node: &NodeProcess, phases: &[v1::SyncPhase]) -> v1::SyncRun {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        if let Ok(status) = node.status().await {
            if let Some(run) = current_sync(&status)
                && phases.contains(&run.phase())
                && run.progress.as_ref().is_some_and(|p| p.done > 0)
            {
                return run.clone();
            }
            assert!(
                !settled(&status),
                "{} finished its sync before it was seen in {phases:?}; make the catalog larger: {status:#?}",
                node.site_code
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never reached {phases:?}",
            node.site_code
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The store's change log has every sequence number from 1 to its newest exactly once and
/// names each revision once (a deletion names a revision logged before), and the store's
/// own consistency check passes.
fn assert_log_without_gap_or_duplicate(store: &CatalogStore, what: &str) -> BTreeSet<RevisionId> {
    let state = store.state();
    assert_eq!(
        state.first_retained_sequence, 1,
        "{what}: log was compacted"
    );
    let log = store.changes_since(0, usize::MAX).unwrap();
    let sequences: Vec<u64> = log.iter().map(|c| c.sequence).collect();
    let expected: Vec<u64> = (1..=state.last_sequence).collect();
    if sequences != expected {
        let missing: Vec<u64> = expected
            .iter()
            .filter(|s| !sequences.contains(s))
            .take(10)
            .copied()
            .collect();
        panic!(
            "{what}: the log is not 1..={} without gaps: {} records, first missing {missing:?}",
            state.last_sequence,
            sequences.len()
        );
    }
    let mut seen = BTreeSet::new();
    for change in log.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        assert!(
            seen.insert(change.revision),
            "{what}: {:?} logged twice (again at sequence {})",
            change.revision,
            change.sequence
        );
    }
    let report = store.verify().unwrap();
    assert!(report.is_consistent(), "{what}: {:?}", report.problems);
    seen
}

/// Every revision a store holds, in snapshot order.
fn held_revisions(store: &CatalogStore) -> Vec<RevisionId> {
    let mut out = Vec::new();
    loop {
        let page = store.revisions_after(out.last().copied(), 10_000).unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Opens a stopped node's database.
fn open_database(node: &NodeProcess) -> NodeDatabase {
    NodeDatabase::open(&node.data_dir.join("db"), DEFAULT_CACHE_BYTES).unwrap()
}

/// A child site's site database after a crash and convergence: no gap, no duplicate, and
/// exactly the parent's revisions. Both nodes must be stopped.
fn assert_replicated_exactly(child: &NodeProcess, parent: &NodeProcess) {
    let child_db = open_database(child);
    let parent_db = open_database(parent);
    for (name, store, parent_store) in [
        (
            "update server",
            &**child_db.update_server(),
            &**parent_db.update_server(),
        ),
        (
            "site database",
            &**child_db.site_database(),
            &**parent_db.site_database(),
        ),
    ] {
        let what = format!("{}'s {name}", child.site_code);
        let logged = assert_log_without_gap_or_duplicate(store, &what);
        let held = held_revisions(store);
        assert_eq!(
            held,
            held_revisions(parent_store),
            "{what} holds other revisions than {}'s",
            parent.site_code
        );
        // A fresh child logged each revision it holds once, and nothing else.
        assert_eq!(
            logged,
            held.iter().copied().collect::<BTreeSet<_>>(),
            "{what}: the log names other revisions than the store holds"
        );
        assert_eq!(store.digest(), parent_store.digest(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cascade_reaches_every_leaf_with_the_top_sites_digests() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let spec = write_generated(&hierarchy, 300, 11);
    start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    hierarchy.start_child("PR2", "CEN").await.unwrap();
    hierarchy.start_child("SE1", "PR1").await.unwrap();
    let top = hierarchy.node("CEN");
    let initial = top.status().await.unwrap();
    // A child's first sync is its parent's answer to its registration.
    for site in ["PR1", "PR2", "SE1"] {
        let node = hierarchy.node(site);
        let status = wait_converged(node, &initial).await;
        assert_parent_requested(node, &status).await;
    }
    let registered = wait_registered(top, "PR1").await;
    assert_eq!(registered.role(), v1::SiteRole::Site);
    assert_eq!(registered.address, hierarchy.node("PR1").address());
    wait_registered(top, "PR2").await;
    wait_registered(hierarchy.node("PR1"), "SE1").await;

    // The catalog changes upstream and the top site syncs; nobody touches the others.
    CatalogChanges::derive(&spec, 5, 3)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let after = sync_top(top).await;
    assert_ne!(
        digests(&after),
        digests(&initial),
        "the changes changed nothing"
    );
    for site in ["PR1", "PR2", "SE1"] {
        let node = hierarchy.node(site);
        let status = wait_converged(node, &after).await;
        assert_parent_requested(node, &status).await;
        assert_eq!(held_version(&status), held_version(&after), "{site}");
    }
    // The top site sees every site holding its signed version, passed down unchanged.
    let signed = after.site.as_ref().unwrap().catalog_version.clone();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let tree = top
            .admin()
            .get_hierarchy(v1::GetHierarchyRequest::default())
            .await
            .unwrap()
            .into_inner();
        let versions: Vec<_> = tree
            .sites
            .iter()
            .filter_map(|n| n.state.as_ref())
            .map(|s| (s.site_code.clone(), s.catalog_version == signed))
            .collect();
        if versions.len() == 4 && versions.iter().all(|(_, same)| *same) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every site reports the top site's signed version: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_while_replicating_converges_without_gap_or_duplicate() {
    let mut hierarchy = Hierarchy::new().unwrap();
    write_generated(&hierarchy, LARGE_CATALOG, 12);
    let top_status = start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();

    let child = hierarchy.node("PR1");
    let seen = wait_in_phase(child, &[v1::SyncPhase::SiteDatabase]).await;
    hierarchy.node_mut("PR1").kill();
    let progress = seen.progress.unwrap();
    assert!(
        progress.total == 0 || progress.done < progress.total,
        "killed after replication: {progress:?}"
    );

    hierarchy.node_mut("PR1").restart().await.unwrap();
    wait_converged(hierarchy.node("PR1"), &top_status).await;

    hierarchy.node_mut("PR1").stop().await;
    hierarchy.node_mut("CEN").stop().await;
    assert_replicated_exactly(hierarchy.node("PR1"), hierarchy.node("CEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_was_down_during_the_cascade_gets_its_request_when_it_returns() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let spec = write_generated(&hierarchy, 250, 13);
    let initial = start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    let before = wait_converged(hierarchy.node("PR1"), &initial).await;
    let first_run = last_sync(&before).unwrap().sync_id.clone();

    hierarchy.node_mut("PR1").stop().await;
    CatalogChanges::derive(&spec, 5, 4)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let after = sync_top(hierarchy.node("CEN")).await;
    assert_ne!(
        digests(&after),
        digests(&initial),
        "the changes changed nothing"
    );

    // The child returns; no operator does anything. The request the top site queued while
    // the child was down starts a new sync there.
    hierarchy.node_mut("PR1").restart().await.unwrap();
    let child = hierarchy.node("PR1");
    let status = wait_converged(child, &after).await;
    assert_parent_requested(child, &status).await;
    assert_ne!(last_sync(&status).unwrap().sync_id, first_run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_killed_mid_stream_and_restarted_leaves_its_child_converged() {
    let mut hierarchy = Hierarchy::new().unwrap();
    // The child's sync fails (6703) when its parent dies. Its retry is an hour away (S9);
    // instead the child registers again, and its parent, once back, asks it to sync.
    write_generated(&hierarchy, LARGE_CATALOG, 14);
    let top_status = start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();

    wait_in_phase(
        hierarchy.node("PR1"),
        &[v1::SyncPhase::UpdateServer, v1::SyncPhase::SiteDatabase],
    )
    .await;
    hierarchy.node_mut("CEN").kill();
    hierarchy.node_mut("CEN").restart().await.unwrap();
    let top_after = hierarchy
        .node("CEN")
        .wait_status("back after the crash", TOP_SYNC, settled)
        .await
        .unwrap();
    assert_eq!(
        digests(&top_after),
        digests(&top_status),
        "the top site's catalog changed across its crash"
    );

    let status = wait_converged(hierarchy.node("PR1"), &top_status).await;
    assert_parent_requested(hierarchy.node("PR1"), &status).await;
    hierarchy.node_mut("PR1").stop().await;
    hierarchy.node_mut("CEN").stop().await;
    assert_replicated_exactly(hierarchy.node("PR1"), hierarchy.node("CEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internet_node_syncs_from_its_own_site_only() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let spec = write_generated(&hierarchy, 250, 15);
    let initial = start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    let site = wait_converged(hierarchy.node("PR1"), &initial).await;
    hierarchy.start_internet("IN1", "PR1").await.unwrap();

    let internet = hierarchy.node("IN1");
    let assert_follows = |status: &v1::SiteStatus, reference: &v1::SiteStatus| {
        let state = status.site.as_ref().unwrap();
        let reference = reference.site.as_ref().unwrap();
        state.update_server.as_ref().and_then(|s| s.digest.as_ref())
            == reference
                .update_server
                .as_ref()
                .and_then(|s| s.digest.as_ref())
            && settled(status)
    };
    let status = internet
        .wait_status("PR1's update-server catalog", CONVERGE, |s| {
            assert_follows(s, &site)
        })
        .await
        .unwrap();
    let state = status.site.as_ref().unwrap();
    assert_eq!(state.role(), v1::SiteRole::Internet);
    // No site database (S11): none at all, or an empty one.
    assert!(
        state
            .site_database
            .as_ref()
            .is_none_or(|s| s.revision_count == 0),
        "{state:#?}"
    );
    let registered = wait_registered(hierarchy.node("PR1"), "IN1").await;
    assert_eq!(registered.role(), v1::SiteRole::Internet);
    assert_eq!(registered.address, internet.address());
    assert_parent_requested(internet, &status).await;

    // A change at the top reaches the internet node through its site (S10, S11).
    CatalogChanges::derive(&spec, 5, 5)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let after = sync_top(hierarchy.node("CEN")).await;
    let site = wait_converged(hierarchy.node("PR1"), &after).await;
    internet
        .wait_status("PR1's new update-server catalog", CONVERGE, |s| {
            assert_follows(s, &site)
        })
        .await
        .unwrap();
    // It starts once its site's update server has synced (S11: PR1 reports 6706 when its
    // phase 1 is over and it asks IN1), from the site, never from the top: the top site's
    // tree shows it, if at all, below PR1.
    let internet_status = internet.status().await.unwrap();
    assert_parent_requested(internet, &internet_status).await;
    let site_done = hierarchy
        .node("PR1")
        .messages(
            &[v1::StatusMessageId::SyncInternetUpdateServer],
            &last_sync(&site).unwrap().sync_id,
        )
        .await
        .unwrap();
    let internet_started = internet
        .messages(
            &[v1::StatusMessageId::SyncStarted],
            &last_sync(&internet_status).unwrap().sync_id,
        )
        .await
        .unwrap();
    let time = |m: &[v1::StatusMessage]| {
        let t = m[0].time.unwrap();
        (t.seconds, t.nanos)
    };
    assert!(
        time(&internet_started) >= time(&site_done),
        "IN1 started syncing before PR1's update server had synced: {internet_started:?} {site_done:?}"
    );
    let tree = hierarchy
        .node("CEN")
        .admin()
        .get_hierarchy(v1::GetHierarchyRequest::default())
        .await
        .unwrap()
        .into_inner();
    for state in tree.sites.iter().filter_map(|n| n.state.as_ref()) {
        if state.site_code == "IN1" {
            assert_eq!(state.parent_site_code, "PR1", "{tree:#?}");
        }
    }
}

/// What `GetSiteStatus` promises about the hierarchy (admin.proto, site.proto): a node names
/// its parent site (for an internet node, its own site), a run started by a parent names
/// the parent's request, and a parent lists its registered children with the sync requests
/// waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_status_names_parents_children_and_waiting_requests() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let spec = write_generated(&hierarchy, 150, 17);
    let initial = start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    wait_converged(hierarchy.node("PR1"), &initial).await;
    hierarchy.start_internet("IN1", "PR1").await.unwrap();

    let child = hierarchy
        .node("PR1")
        .wait_status("its parent's code", CONVERGE, |s| {
            s.site.as_ref().is_some_and(|s| s.parent_site_code == "CEN")
        })
        .await
        .unwrap();
    let run = last_sync(&child).unwrap();
    assert!(!run.sync_request_id.is_empty(), "{run:#?}");
    // The internet node learns its site's code from the registration answer.
    hierarchy
        .node("IN1")
        .wait_status("its site's code", CONVERGE, |s| {
            s.site.as_ref().is_some_and(|s| s.parent_site_code == "PR1")
        })
        .await
        .unwrap();
    let registered = |status: &v1::SiteStatus, site: &str| {
        status
            .children
            .iter()
            .find(|c| c.site_code == site)
            .cloned()
    };
    let status = hierarchy
        .node("PR1")
        .wait_status("IN1 listed", CONVERGE, |s| registered(s, "IN1").is_some())
        .await
        .unwrap();
    assert_eq!(
        registered(&status, "IN1").unwrap().role(),
        v1::SiteRole::Internet
    );

    // A request waits in the outbox while the child is down, and is gone once delivered.
    hierarchy.node_mut("PR1").stop().await;
    CatalogChanges::derive(&spec, 3, 6)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    sync_top(hierarchy.node("CEN")).await;
    let top = hierarchy.node("CEN").status().await.unwrap();
    let waiting = registered(&top, "PR1").expect("PR1 is listed");
    assert_eq!(waiting.address, hierarchy.node("PR1").address());
    assert!(waiting.pending_sync_requests >= 1, "{waiting:#?}");
    hierarchy.node_mut("PR1").restart().await.unwrap();
    hierarchy
        .node("CEN")
        .wait_status("the request delivered", CONVERGE, |s| {
            registered(s, "PR1").is_some_and(|c| c.pending_sync_requests == 0)
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_sync_at_a_child_is_refused() {
    let mut hierarchy = Hierarchy::new().unwrap();
    write_generated(&hierarchy, 120, 16);
    start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    let error = hierarchy
        .node("PR1")
        .run_sync(v1::SyncKind::Manual)
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("full sync"), "{}", error.message());
}

/// The catalog version a node holds, by number.
fn held_version(status: &v1::SiteStatus) -> u64 {
    use prost::Message as _;
    let signed = status
        .site
        .as_ref()
        .and_then(|s| s.catalog_version.as_ref())
        .expect("the node holds a signed catalog version");
    v1::CatalogVersion::decode(signed.catalog_version.as_slice())
        .unwrap()
        .version
}

/// Copies a directory tree (a stopped node's data).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces the stored bytes of revision `id` in a stopped node's documents space (which
/// both its stores read), underneath the stores: their digests and change logs still
/// describe the original, as they would at a middle site whose disk an attacker edited.
/// Returns the original bytes.
fn replace_document(node: &NodeProcess, id: RevisionId, bytes: Option<Vec<u8>>) -> Vec<u8> {
    use sitesync_node::store::{DOCUMENTS_TREE, document_from_stored, keys, stored_document_form};
    let db = sled::open(node.data_dir.join("db")).unwrap();
    let documents = db.open_tree(DOCUMENTS_TREE).unwrap();
    let (key, original) = documents
        .iter()
        .map(Result::unwrap)
        .find(|(key, _)| keys::parse_document_key(key).is_some_and(|(_, held)| held == id))
        .expect("the document is stored");
    let original = document_from_stored(original.to_vec()).unwrap();
    let altered = bytes.unwrap_or_else(|| {
        // Still a valid document of the same revision, with one more byte.
        let mut altered = original.clone();
        altered.push(b'\n');
        altered
    });
    documents
        .insert(key, stored_document_form(&altered))
        .unwrap();
    db.flush().unwrap();
    original
}

/// The reason of the last sync at `node`, once it failed.
async fn wait_failed(node: &NodeProcess, after_run: &str) -> String {
    let status = node
        .wait_status("a failed sync", CONVERGE, |status| {
            current_sync(status).is_none()
                && last_sync(status)
                    .is_some_and(|r| r.sync_id != after_run && r.result() == v1::SyncResult::Failed)
        })
        .await
        .unwrap();
    last_sync(&status).unwrap().failure_reason.clone()
}

/// A middle site that serves altered documents, or an older catalog, is caught by its
/// child (issue 5): what it offers is not the top site's signed catalog version, so the
/// child reports 6703 with the reason and keeps the catalog it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_site_that_alters_a_revision_or_replays_an_older_catalog_is_caught() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let spec = write_generated(&hierarchy, 200, 19);
    let initial = start_top(&mut hierarchy).await;
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    wait_converged(hierarchy.node("PR1"), &initial).await;
    hierarchy.start_child("SE1", "PR1").await.unwrap();
    let first = wait_converged(hierarchy.node("SE1"), &initial).await;
    let first_version = held_version(&first);
    assert_eq!(first_version, held_version(&initial));

    // PR1 as it is now, to be replayed later.
    let old_pr1 = hierarchy.dir().join("PR1-old-data");
    hierarchy.node_mut("PR1").stop().await;
    copy_dir(&hierarchy.node("PR1").data_dir, &old_pr1);
    hierarchy.node_mut("PR1").restart().await.unwrap();

    // A second catalog reaches PR1 while SE1 is down.
    hierarchy.node_mut("SE1").stop().await;
    CatalogChanges::derive(&spec, 5, 4)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let second = sync_top(hierarchy.node("CEN")).await;
    let second_version = held_version(&second);
    assert!(second_version > first_version);
    wait_converged(hierarchy.node("PR1"), &second).await;

    // PR1's disk is edited: a revision of the new catalog gets other bytes, while its
    // store still states the signed digest.
    hierarchy.node_mut("PR1").stop().await;
    let newest = {
        let db = open_database(hierarchy.node("PR1"));
        let store = db.update_server();
        let changes = store.changes_since(0, usize::MAX).unwrap();
        changes
            .iter()
            .rev()
            .find(|c| c.kind == ChangeKind::New)
            .map(|c| c.revision)
            .unwrap()
    };
    let original = replace_document(hierarchy.node("PR1"), newest, None);
    hierarchy.node_mut("PR1").restart().await.unwrap();

    // SE1 returns and is asked to catch up: it pulls the altered revision, finds its store
    // off the signed digest, takes the pull back and reports why.
    let last_good = last_sync(&first).unwrap().sync_id.clone();
    hierarchy.node_mut("SE1").restart().await.unwrap();
    let reason = wait_failed(hierarchy.node("SE1"), &last_good).await;
    assert!(
        reason.contains(&format!(
            "does not hold the top site's signed catalog version {second_version}"
        )) && reason.contains("keeps the catalog it had"),
        "{reason}"
    );
    let kept = hierarchy.node("SE1").status().await.unwrap();
    assert_eq!(digests(&kept), digests(&first), "SE1 kept its catalog");
    assert_eq!(held_version(&kept), first_version);
    let failures = hierarchy
        .node("SE1")
        .messages(&[v1::StatusMessageId::SyncFailed], "")
        .await
        .unwrap();
    assert!(
        failures
            .iter()
            .any(|m| m.text.contains("signed catalog version")),
        "6703 names the signed version: {failures:#?}"
    );

    // PR1's disk is repaired; SE1 restarted redoes its failed sync and converges.
    hierarchy.node_mut("PR1").stop().await;
    replace_document(hierarchy.node("PR1"), newest, Some(original));
    hierarchy.node_mut("PR1").restart().await.unwrap();
    hierarchy.node_mut("SE1").stop().await;
    hierarchy.node_mut("SE1").restart().await.unwrap();
    let repaired = wait_converged(hierarchy.node("SE1"), &second).await;
    assert_eq!(held_version(&repaired), second_version);

    // PR1 is put back to its data from before the second catalog (and kept from catching
    // up, as a compromised site would be): it offers the older signed version, which SE1
    // refuses as a rollback, keeping the newer catalog.
    hierarchy.node_mut("CEN").stop().await;
    hierarchy.node_mut("PR1").stop().await;
    let pr1_data = hierarchy.node("PR1").data_dir.clone();
    std::fs::remove_dir_all(&pr1_data).unwrap();
    copy_dir(&old_pr1, &pr1_data);
    hierarchy.node_mut("PR1").restart().await.unwrap();
    let last_good = last_sync(&repaired).unwrap().sync_id.clone();
    hierarchy.node_mut("SE1").stop().await;
    hierarchy.node_mut("SE1").restart().await.unwrap();
    let reason = wait_failed(hierarchy.node("SE1"), &last_good).await;
    assert!(
        reason.contains(&format!(
            "catalog version {first_version} is older than version {second_version}"
        )) && reason.contains("rollback"),
        "{reason}"
    );
    let kept = hierarchy.node("SE1").status().await.unwrap();
    assert_eq!(
        digests(&kept),
        digests(&second),
        "SE1 kept the newer catalog"
    );
    assert_eq!(held_version(&kept), second_version);
}
