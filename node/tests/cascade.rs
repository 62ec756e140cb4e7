//! The cascade (S2, S10, invariant 4) over real TCP: children register with their parent,
//! a parent's successful sync sends a sync request to each child through a durable outbox,
//! a child's sync so triggered cascades to its own children, a child that was down gets its
//! request when it returns, and a redelivered request starts nothing new. Status messages
//! flow up to the top site.
//!
//! A child runs no schedule of its own (S2): its first sync is the one its parent asks for
//! when it registers, once the parent has synced. The waits below look only at runs
//! triggered by the parent after a known point.

use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::sync::manager::{SyncPhase, SyncResult, SyncRun, SyncTrigger};
use sitesync_proto::v1;
use sitesync_proto::v1::hierarchy_client::HierarchyClient;

mod common;

use common::TestNode;

async fn wait_outbox_empty(node: &TestNode) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !node.started.hierarchy.outbox.list().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the outbox did not empty");
}

fn catalog(count: usize, seed: u64) -> (tempfile::TempDir, CatalogSpec) {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(count, seed);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    (upstream, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parents_sync_cascades_to_its_child_and_grandchild() {
    let (upstream, spec) = catalog(200, 71);
    let mut top = TestNode::start(upstream.path(), "").await;
    top.finished(1).await;

    let child = TestNode::start_child(&top.address(), "PR1").await;
    top.wait_registered("PR1").await;
    let record = top.started.hierarchy.children.get("PR1").unwrap().unwrap();
    assert_eq!(record.address, child.address());
    assert_eq!(record.role, "site");
    child.finished(1).await;

    let grandchild = TestNode::start_child(&child.address(), "SE1").await;
    child.wait_registered("SE1").await;
    grandchild.finished(1).await;

    // The top site syncs changes; nobody touches the child or the grandchild.
    CatalogChanges::derive(&spec, 4, 6)
        .apply_to_dir(upstream.path())
        .unwrap();
    let child_before = child.last_run_id();
    let grandchild_before = grandchild.last_run_id();
    let (id, _) = top.run_sync(v1::SyncKind::Full).await;
    let run = top.finished(id).await;
    assert_eq!(run.result, Some(SyncResult::Succeeded));
    assert_eq!(*top.message_ids(id).await.last().unwrap(), 6702);

    child.converges_by_parent_request(&top, child_before).await;
    grandchild
        .converges_by_parent_request(&top, grandchild_before)
        .await;
    wait_outbox_empty(&top).await;
    wait_outbox_empty(&child).await;

    // Status messages flow up: the top site holds the child's and the grandchild's 6702s.
    for site in ["PR1", "SE1"] {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let held = top
                    .started
                    .sync
                    .status_log()
                    .messages_after(site, 0, 1_000)
                    .unwrap();
                if held.iter().any(|m| m.id.code() == 6702) {
                    assert!(held.windows(2).all(|w| w[0].sequence < w[1].sequence));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the top site never received {site}'s status messages"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_that_was_down_gets_its_request_when_it_returns() {
    let (upstream, _spec) = catalog(150, 72);
    let mut top = TestNode::start(upstream.path(), "").await;
    top.finished(1).await;

    // A child is registered at an address where no node serves yet. The port stays bound
    // (nothing accepts) so no other test can take it before the child returns.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    // Registered the way PR7's node registers: over a channel acting as PR7.
    let (_pki, pr7) = common::site_channel(&top.address(), "PR7");
    HierarchyClient::new(pr7)
        .register_child(v1::RegisterChildRequest {
            site_code: "PR7".into(),
            role: v1::SiteRole::Site as i32,
            address: address.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();

    let (id, _) = top.run_sync(v1::SyncKind::Full).await;
    assert_eq!(top.finished(id).await.result, Some(SyncResult::Succeeded));
    // The requests wait in the outbox while the child is down: the one queued when it
    // registered (the top site had synced) and the one of the cascade.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = top.started.hierarchy.outbox.list().unwrap();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert!(waiting.iter().all(|e| e.child == "PR7"), "{waiting:?}");
    assert!(waiting.iter().any(|e| e.sync_id == id), "{waiting:?}");

    // The child comes back at that address; no operator does anything.
    let child = TestNode::start_child_on(&top.address(), "PR7", reserved).await;
    child.converges_by_parent_request(&top, 0).await;
    wait_outbox_empty(&top).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_request_is_a_duplicate_and_a_top_site_refuses_requests() {
    let (upstream, _spec) = catalog(50, 73);
    let top = TestNode::start(upstream.path(), "").await;
    top.finished(1).await;
    let child = TestNode::start_child(&top.address(), "PR3").await;
    // Its first sync is the catch-up the top site queued when it registered.
    assert_eq!(child.finished(1).await.trigger, SyncTrigger::ParentRequest);
    wait_outbox_empty(&top).await;
    let before = child.last_run_id();

    // The test speaks for the child's configured parent, CEN: only it may ask for a sync.
    let (_pki, as_parent) = common::site_channel(&child.address(), "CEN");
    let mut client = HierarchyClient::new(as_parent);
    let request = v1::SyncRequest {
        request_id: "3f1c9a52-0000-4000-8000-000000000001".into(),
        parent_site_code: "CEN".into(),
        kind: v1::SyncKind::Full as i32,
        reason: v1::SyncRequestReason::Cascade as i32,
        ..Default::default()
    };
    let first = client
        .request_sync(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            first.disposition(),
            v1::SyncRequestDisposition::Started | v1::SyncRequestDisposition::Queued
        ),
        "{first:?}"
    );
    let second = client
        .request_sync(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.disposition(), v1::SyncRequestDisposition::Duplicate);
    assert_eq!(second.sync_id, first.sync_id);
    let run = child.finished(first.sync_id.parse().unwrap()).await;
    assert_eq!(run.trigger, SyncTrigger::ParentRequest);
    assert_eq!(
        run.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        run.failure_reason
    );
    // Still a duplicate after that sync finished, and nothing new was queued.
    let third = client.request_sync(request).await.unwrap().into_inner();
    assert_eq!(third.disposition(), v1::SyncRequestDisposition::Duplicate);
    let view = child.started.sync.watch().borrow().clone();
    let by_parent = view
        .recent
        .iter()
        .chain(view.queued.iter())
        .chain(view.current.iter())
        .filter(|r| r.id > before && r.trigger == SyncTrigger::ParentRequest)
        .count();
    assert_eq!(by_parent, 1, "{view:?}");

    // A top site has no parent: it refuses sync requests, from its own child too.
    let (_pki, pr3) = common::site_channel(&top.address(), "PR3");
    let refused = HierarchyClient::new(pr3)
        .request_sync(v1::SyncRequest {
            request_id: "x".into(),
            kind: v1::SyncKind::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("only the configured parent"),
        "{}",
        refused.message()
    );

    // Registration checks what it stores: a site registers only under its own code (the
    // one in its certificate, always well formed), and gives an address to reach it at.
    let (_pki, pr4) = common::site_channel(&top.address(), "PR4");
    let bad = HierarchyClient::new(pr4.clone())
        .register_child(v1::RegisterChildRequest {
            site_code: "TOO-LONG".into(),
            role: v1::SiteRole::Site as i32,
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::PermissionDenied);
    assert!(
        bad.message().contains("acts only for itself"),
        "{}",
        bad.message()
    );
    let bad = HierarchyClient::new(pr4)
        .register_child(v1::RegisterChildRequest {
            site_code: "PR4".into(),
            role: v1::SiteRole::Site as i32,
            address: "nowhere".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("host:port"), "{}", bad.message());
}

/// Starts a top site on `data` with the certificates in `pki`, serving on `listener`, on a
/// thread of its own. Drop both before `data`.
async fn start_top(
    data: &std::path::Path,
    pki: &std::path::Path,
    catalog: &std::path::Path,
    listener: std::net::TcpListener,
) -> (sitesync_node::startup::Started, common::NodeThread) {
    use sitesync_node::config::{NodeConfig, Overrides};
    let mut config = NodeConfig::load(
        None,
        &Overrides {
            data_dir: Some(data.to_owned()),
            upstream_dir: Some(catalog.to_owned()),
            cache_mib: Some(16),
            pki_dir: Some(pki.to_owned()),
            ..Overrides::default()
        },
    )
    .unwrap();
    config.listen = listener.local_addr().unwrap();
    let clock = sitesync_node::clock::ManualClock::new(common::T0);
    common::NodeThread::start(config, clock, async { Some(listener) }).await
}

async fn wait_finished(started: &sitesync_node::startup::Started, id: u64) -> SyncRun {
    let mut watch = started.sync.watch();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let found = watch
                .borrow_and_update()
                .recent
                .iter()
                .find(|r| r.id == id && r.phase == SyncPhase::Finished)
                .cloned();
            if let Some(run) = found {
                return run;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the sync did not finish within a minute")
}

/// Invariant 4 across a restart of the parent: the outbox is durable and re-read at start.
#[test]
fn a_request_waiting_in_the_outbox_survives_a_restart_of_the_parent() {
    let (upstream, _spec) = catalog(80, 74);
    let data = tempfile::tempdir().unwrap();
    // The tests' CA, so the child trusts its parent and the parent its child.
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = common::site_pki_dir(pki_dir.path(), "CEN");
    // Both ports stay bound across the restart, so no other test can take them.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let child_address = reserved.local_addr().unwrap();
    let top_socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let top_address = top_socket.local_addr().unwrap();

    // First life: the top site syncs with a registered child that is down.
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        let listener = top_socket.try_clone().unwrap();
        let (top, _thread) = start_top(data.path(), &pki, upstream.path(), listener).await;
        wait_finished(&top, 1).await;
        top.hierarchy
            .children
            .register("PR8", "site", &child_address.to_string(), common::T0)
            .unwrap();
        // Started, or queued for the moment the first run's loop iteration takes to end.
        let (sitesync_node::sync::manager::Disposition::Started(id)
        | sitesync_node::sync::manager::Disposition::Queued(id)) = top
            .sync
            .request(
                sitesync_node::sync::manager::SyncKind::Full,
                SyncTrigger::Operator,
            )
            .unwrap();
        assert_eq!(
            wait_finished(&top, id).await.result,
            Some(SyncResult::Succeeded)
        );
        assert_eq!(top.hierarchy.outbox.list().unwrap().len(), 1);
    });
    first.shutdown_timeout(Duration::from_secs(5));

    // Second life on the same data; the child returns. Nobody re-sends anything.
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let (top, _thread) = start_top(data.path(), &pki, upstream.path(), top_socket).await;
        assert_eq!(top.hierarchy.outbox.list().unwrap().len(), 1);
        let child = TestNode::start_child_on(&top_address.to_string(), "PR8", reserved).await;
        let run = child.requested_run(0).await;
        assert_eq!(
            run.result,
            Some(SyncResult::Succeeded),
            "{:?}",
            run.failure_reason
        );
        assert_eq!(
            child.started.node.database.update_server().digest(),
            top.node.database.update_server().digest()
        );
        tokio::time::timeout(Duration::from_secs(30), async {
            while !top.hierarchy.outbox.list().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the outbox did not empty");
    });
}
