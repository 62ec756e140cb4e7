//! Site states flowing up the hierarchy, over real TCP: every child reports its own state
//! and its subtree's to its parent, so the top site's `GetHierarchy` draws the whole tree
//! with equal digests and no lag after a cascade; a grandchild that stops is flagged
//! unreachable once its last report is stale; a late report never rolls a site back; a
//! malformed report is refused and stores nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::sync::manager::SyncResult;
use sitesync_proto::v1;
use sitesync_proto::v1::hierarchy_client::HierarchyClient;

mod common;

use common::TestNode;

fn catalog(count: usize, seed: u64) -> (tempfile::TempDir, CatalogSpec) {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(count, seed);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    (upstream, spec)
}

async fn hierarchy(node: &mut TestNode, stale_after: Option<Duration>) -> v1::HierarchyTree {
    node.admin
        .get_hierarchy(v1::GetHierarchyRequest {
            stale_after: stale_after.map(|d| prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

fn site<'a>(tree: &'a v1::HierarchyTree, code: &str) -> Option<&'a v1::HierarchyNode> {
    tree.sites
        .iter()
        .find(|n| n.state.as_ref().is_some_and(|s| s.site_code == code))
}

fn codes(tree: &v1::HierarchyTree) -> Vec<String> {
    tree.sites
        .iter()
        .map(|n| n.state.as_ref().unwrap().site_code.clone())
        .collect()
}

fn digest(store: &Option<v1::StoreInfo>) -> Vec<u8> {
    store
        .as_ref()
        .and_then(|s| s.digest.as_ref())
        .map(|d| d.value.clone())
        .unwrap_or_default()
}

/// Asks the top site until `check` accepts its hierarchy.
async fn until(
    top: &mut TestNode,
    stale_after: Option<Duration>,
    within: Duration,
    what: &str,
    check: impl Fn(&v1::HierarchyTree) -> bool,
) -> v1::HierarchyTree {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let tree = hierarchy(top, stale_after).await;
        if check(&tree) {
            return tree;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}; the last hierarchy was {tree:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_top_site_sees_its_grandchild_in_step_and_then_unreachable() {
    let (upstream, spec) = catalog(120, 81);
    let mut top = TestNode::start(upstream.path(), "").await;
    top.finished(1).await;
    let child = TestNode::start_child(&top.address(), "PR1").await;
    top.wait_registered("PR1").await;
    child.finished(1).await;
    let grandchild = TestNode::start_child(&child.address(), "SE1").await;
    grandchild.finished(1).await;
    child.wait_registered("SE1").await;

    // A cascade from the top.
    CatalogChanges::derive(&spec, 3, 5)
        .apply_to_dir(upstream.path())
        .unwrap();
    let child_before = child.last_run_id();
    let (id, _) = top.run_sync(v1::SyncKind::Full).await;
    assert_eq!(top.finished(id).await.result, Some(SyncResult::Succeeded));
    child.converges_by_parent_request(&top, child_before).await;

    let top_db = &top.started.node.database;
    let update_server = top_db.update_server().digest().0.to_vec();
    let site_database = top_db.site_database().digest().0.to_vec();
    let in_step = |tree: &v1::HierarchyTree| {
        codes(tree) == ["CEN", "PR1", "SE1"]
            && tree.sites.iter().all(|n| {
                let s = n.state.as_ref().unwrap();
                n.reachable
                    && digest(&s.update_server) == update_server
                    && digest(&s.site_database) == site_database
            })
            && tree.sites[1..].iter().all(|n| {
                n.lag.is_some_and(|l| {
                    l.revisions == 0 && l.behind.is_some_and(|b| b.seconds == 0 && b.nanos == 0)
                })
            })
    };
    let tree = until(
        &mut top,
        None,
        Duration::from_secs(90),
        "the top site did not see PR1 and SE1 in step after the cascade",
        in_step,
    )
    .await;
    assert_eq!(tree.root_site_code, "CEN");
    assert!(tree.as_of.is_some());
    let parents: Vec<&str> = tree
        .sites
        .iter()
        .map(|n| n.state.as_ref().unwrap().parent_site_code.as_str())
        .collect();
    assert_eq!(parents, ["", "CEN", "PR1"]);
    let pr1 = site(&tree, "PR1").unwrap();
    let pr1_state = pr1.state.as_ref().unwrap();
    assert_eq!(pr1_state.address, child.address());
    assert_eq!(pr1_state.role(), v1::SiteRole::Site);
    assert!(pr1.last_report_at.is_some());
    assert!(tree.sites[0].lag.is_none(), "the root has no parent to lag");
    let se1 = site(&tree, "SE1").unwrap().state.as_ref().unwrap();
    assert_eq!(se1.address, grandchild.address());
    assert_eq!(
        se1.last_sync.as_ref().map(|r| r.result()),
        Some(v1::SyncResult::Succeeded)
    );
    let applied = se1
        .replication
        .as_ref()
        .and_then(|r| r.applied.as_ref())
        .expect("a child site reports its replication position");
    assert_eq!(
        applied.sequence,
        pr1_state
            .site_database
            .as_ref()
            .unwrap()
            .latest
            .as_ref()
            .unwrap()
            .sequence
    );

    // The grandchild goes away; its parent keeps relaying its last state, which goes stale.
    // Stopping it ends every task it runs (its server, sync manager and reporting), as
    // stopping its process would.
    drop(grandchild);
    let tree = until(
        &mut top,
        None,
        Duration::from_secs(40),
        "the top site did not flag SE1 unreachable",
        |tree| site(tree, "SE1").is_some_and(|n| !n.reachable),
    )
    .await;
    assert!(site(&tree, "PR1").unwrap().reachable, "{tree:#?}");
    assert!(tree.sites[0].reachable);
    // With a longer threshold the same report still counts as fresh.
    let lenient = hierarchy(&mut top, Some(Duration::from_secs(3_600))).await;
    assert!(site(&lenient, "SE1").unwrap().reachable);
}

fn wall_clock_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn store(sequence: u64, digest: u8) -> v1::StoreInfo {
    v1::StoreInfo {
        latest: Some(v1::Anchor {
            log_id: "0b7e8f0a-6c1e-4a43-9d7c-2b1e3c4d5e6f".into(),
            sequence,
            snapshot_through: None,
        }),
        first_retained_sequence: 1,
        digest: Some(v1::CatalogDigest {
            value: vec![digest; 32],
        }),
        revision_count: sequence,
        update_count: sequence,
    }
}

fn state(code: &str, parent: &str, digest: u8, observed_at_millis: i64) -> v1::SiteState {
    v1::SiteState {
        site_code: code.into(),
        role: v1::SiteRole::Site as i32,
        parent_site_code: parent.into(),
        address: format!("127.0.0.1:{}", 40_000 + u32::from(digest)),
        update_server: Some(store(u64::from(digest), digest)),
        site_database: Some(store(u64::from(digest), digest)),
        observed_at: Some(prost_types::Timestamp {
            seconds: observed_at_millis.div_euclid(1_000),
            nanos: (observed_at_millis.rem_euclid(1_000) * 1_000_000) as i32,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_malformed_reports_change_nothing() {
    let (upstream, _spec) = catalog(20, 82);
    let mut top = TestNode::start(upstream.path(), "").await;
    // Each child registers and reports over a channel acting as itself.
    let (_pki_pr5, pr5) = common::site_channel(&top.address(), "PR5");
    let (_pki_pr7, pr7) = common::site_channel(&top.address(), "PR7");
    for (code, port, channel) in [("PR5", 1, pr5.clone()), ("PR7", 2, pr7)] {
        HierarchyClient::new(channel)
            .register_child(v1::RegisterChildRequest {
                site_code: code.into(),
                role: v1::SiteRole::Site as i32,
                address: format!("127.0.0.1:{port}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut client = HierarchyClient::new(pr5);
    let report = |sites: Vec<v1::SiteState>| v1::SiteStateReport {
        reporter_site_code: "PR5".into(),
        sites,
    };
    let now = wall_clock_millis();

    let receipt = client
        .report_site_states(report(vec![
            state("PR5", "", 7, now),
            state("SE5", "PR5", 7, now),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.next_report_within.is_some_and(|d| d.seconds > 0));

    // A report observed earlier arrives late: accepted, but nothing rolls back.
    client
        .report_site_states(report(vec![
            state("PR5", "", 3, now - 10_000),
            state("SE5", "PR5", 3, now - 10_000),
        ]))
        .await
        .unwrap();
    let tree = hierarchy(&mut top, None).await;
    assert_eq!(codes(&tree), ["CEN", "PR5", "SE5", "PR7"]);
    for code in ["PR5", "SE5"] {
        let held = site(&tree, code).unwrap().state.as_ref().unwrap();
        assert_eq!(digest(&held.update_server), vec![7; 32], "{code}");
    }
    assert_eq!(
        site(&tree, "SE5")
            .unwrap()
            .state
            .as_ref()
            .unwrap()
            .parent_site_code,
        "PR5"
    );
    // A child that registered and never reported is shown with what is known, unreachable.
    let pr7 = site(&tree, "PR7").unwrap();
    assert!(!pr7.reachable);
    assert!(pr7.last_report_at.is_none());
    let pr7 = pr7.state.as_ref().unwrap();
    assert_eq!(pr7.address, "127.0.0.1:2");
    assert_eq!(pr7.parent_site_code, "CEN");

    // A newer observation replaces the held one.
    client
        .report_site_states(report(vec![state("PR5", "", 9, now + 1_000)]))
        .await
        .unwrap();
    let tree = hierarchy(&mut top, None).await;
    let pr5 = site(&tree, "PR5").unwrap().state.as_ref().unwrap();
    assert_eq!(digest(&pr5.update_server), vec![9; 32]);

    // Malformed reports: refused with the reason, nothing stored.
    let mut no_time = state("PR5", "", 11, now + 2_000);
    no_time.observed_at = None;
    let malformed = [
        (report(vec![]), "holds no state"),
        (
            report(vec![state("SE5", "PR5", 11, now + 2_000)]),
            "reporter's own (PR5)",
        ),
        (report(vec![no_time]), "observed_at is missing"),
        (
            report(vec![
                state("PR5", "", 11, now + 2_000),
                state("SE6", "XX9", 11, now + 2_000),
            ]),
            "does not lead to PR5",
        ),
        (
            report(vec![
                state("PR5", "", 11, now + 2_000),
                state("SE6", "PR5", 11, now + 2_000),
                state("SE6", "PR5", 11, now + 2_000),
            ]),
            "twice",
        ),
    ];
    for (bad, reason) in malformed {
        let status = client.report_site_states(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(reason),
            "{status:?} lacks `{reason}`"
        );
    }
    // A child reports only as itself, whatever code it writes in the report.
    let mut not_its_own = report(vec![state("PR5", "", 11, now + 2_000)]);
    not_its_own.reporter_site_code = "PR7".into();
    let status = client.report_site_states(not_its_own).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("acts only for itself"),
        "{status:?}"
    );
    // A site that is not a registered child is refused before its report is read.
    let (_pki_pr9, pr9) = common::site_channel(&top.address(), "PR9");
    let mut stranger = report(vec![state("PR9", "", 11, now + 2_000)]);
    stranger.reporter_site_code = "PR9".into();
    let status = HierarchyClient::new(pr9)
        .report_site_states(stranger)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("only registered child"),
        "{status:?}"
    );

    let after = hierarchy(&mut top, None).await;
    assert_eq!(codes(&after), ["CEN", "PR5", "SE5", "PR7"]);
    let pr5 = site(&after, "PR5").unwrap().state.as_ref().unwrap();
    assert_eq!(digest(&pr5.update_server), vec![9; 32]);

    let status = top
        .admin
        .get_hierarchy(v1::GetHierarchyRequest {
            stale_after: Some(prost_types::Duration::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}
