//! A child site syncs from its parent (S1, S5, S7): its update server pulls the parent's
//! over gRPC, its site database replicates the parent's, both end with the parent's digests;
//! manual syncs are refused at a child. A child starts a sync only when its parent asks
//! (S2): it runs no schedule, and a parent that has synced asks a child that registers.

use std::time::Duration;

use sitesync_node::clock::Clock as _;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::config::{NodeConfig, Overrides};
use sitesync_node::sync::manager::{SyncResult, SyncTrigger};
use sitesync_proto::v1;
use sitesync_proto::v1::hierarchy_client::HierarchyClient;

mod common;

use common::TestNode;

#[tokio::test]
async fn a_child_site_syncs_its_update_server_from_its_parent() {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(400, 51);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    let mut parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;

    let mut child = TestNode::start_child(&parent.address(), "PR1").await;
    let first = child.finished(1).await;
    assert_eq!(
        first.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        first.failure_reason
    );
    // Asked by the parent when the child registered.
    assert_eq!(first.trigger, SyncTrigger::ParentRequest);
    let parent_state = parent.started.node.database.update_server().state();
    let child_state = child.started.node.database.update_server().state();
    assert_eq!(child_state.digest, parent_state.digest);
    assert_eq!(child_state.revisions, parent_state.revisions);
    assert_eq!(first.counts.update_server.new, parent_state.updates);
    // Its site database is the parent's, replicated.
    assert_eq!(
        child.started.node.database.site_database().digest(),
        parent.started.node.database.site_database().digest()
    );
    assert_eq!(child.message_ids(1).await, vec![6701, 6704, 6705, 6702]);

    // The child has registered with its parent (it does so in the background at start).
    while parent
        .started
        .hierarchy
        .children
        .get("PR1")
        .unwrap()
        .is_none()
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The child keeps its parent's site code from the registration answer, and its status
    // shows where it stands in the tree.
    while child
        .status()
        .await
        .site
        .unwrap()
        .parent_site_code
        .is_empty()
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(child.status().await.site.unwrap().parent_site_code, "CEN");
    assert!(
        parent
            .status()
            .await
            .site
            .unwrap()
            .parent_site_code
            .is_empty()
    );

    // The parent syncs changes; the child's next sync brings exactly them.
    CatalogChanges::derive(&spec, 3, 5)
        .apply_to_dir(upstream.path())
        .unwrap();
    let (id, _) = parent.run_sync(v1::SyncKind::Full).await;
    parent.finished(id).await;
    // The parent's 6702 sends the child a sync request (S10): the child syncs by itself.
    let second = child.requested_run(first.id).await;
    assert_eq!(
        second.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        second.failure_reason
    );
    let c = second.counts.update_server;
    assert_eq!((c.new, c.changed, c.expired, c.deleted), (3, 3, 3, 3));
    assert_eq!(
        child.started.node.database.update_server().digest(),
        parent.started.node.database.update_server().digest()
    );
    assert_eq!(
        child.started.node.database.site_database().digest(),
        parent.started.node.database.site_database().digest()
    );
    let s = second.counts.site_database;
    assert_eq!((s.new, s.changed, s.expired, s.deleted), (3, 3, 3, 3));

    // S5: a child always runs a full sync; an operator's manual sync is refused.
    let refused = child
        .admin
        .run_sync(v1::RunSyncRequest {
            kind: v1::SyncKind::Manual as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("child"), "{}", refused.message());
    // A full sync by hand too: a child syncs only when its parent asks (S2).
    let refused = child
        .admin
        .run_sync(v1::RunSyncRequest {
            kind: v1::SyncKind::Full as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("top site"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn a_child_whose_parent_is_down_fails_with_6703_naming_the_parent() {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(20, 53), |_| {}).unwrap();
    let parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;
    let parent_address = parent.address();
    let mut child = TestNode::start_child(&parent_address, "PR2").await;
    // Registered (so it knows its parent's site code) and caught up.
    assert_eq!(child.finished(1).await.result, Some(SyncResult::Succeeded));
    // The parent asked, then went away (the test speaks for it: only the configured parent
    // may ask).
    drop(parent);
    let (_pki, as_parent) = common::site_channel(&child.address(), "CEN");
    let receipt = HierarchyClient::new(as_parent)
        .request_sync(v1::SyncRequest {
            request_id: "8d0e6f1a-0000-4000-8000-000000000002".into(),
            parent_site_code: "CEN".into(),
            kind: v1::SyncKind::Full as i32,
            reason: v1::SyncRequestReason::Cascade as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.sync_id, "2");
    let run = child.finished(2).await;
    assert_eq!(run.result, Some(SyncResult::Failed));
    let reason = run.failure_reason.unwrap();
    assert!(reason.contains(&parent_address), "{reason}");
    assert_eq!(child.message_ids(2).await, vec![6701, 6704, 6703]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_runs_no_scheduled_sync_but_catches_up_when_it_registers() {
    // The parent's port is bound from the start but serves nothing yet: the child's
    // registration waits in its backlog until the parent is up.
    let parent_socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let parent_address = parent_socket.local_addr().unwrap();
    let mut child = TestNode::start_child(&parent_address.to_string(), "PR5").await;

    // Past the 7-day schedule, twice: the child starts nothing by itself (S2).
    let site = child.status().await.site.unwrap();
    assert_eq!(
        site.next_sync_at, None,
        "a child shows no next scheduled sync"
    );
    for _ in 0..2 {
        child.clock.advance(Duration::from_secs(8 * 24 * 60 * 60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = child.started.sync.watch().borrow().clone();
    assert!(
        view.current.is_none() && view.queued.is_empty() && view.recent.is_empty(),
        "{view:?}"
    );
    assert_eq!(view.next_scheduled_at, None);
    assert!(child.clock.pending_deadlines().is_empty());
    assert!(child.message_ids(1).await.is_empty());
    assert_eq!(child.status().await.site.unwrap().next_sync_at, None);

    // The parent syncs, then starts serving: the child registers, the parent asks it to
    // catch up, and it syncs to the parent's digests.
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(120, 52), |_| {}).unwrap();
    let data = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::load(
        None,
        &Overrides {
            data_dir: Some(data.path().to_owned()),
            upstream_dir: Some(upstream.path().to_owned()),
            cache_mib: Some(16),
            // The tests' CA, which the child trusts.
            pki_dir: Some(common::site_pki_dir(pki.path(), "CEN")),
            ..Overrides::default()
        },
    )
    .unwrap();
    config.listen = parent_address;
    // The parent's clock agrees with the child's, which moved on 16 days: a signed
    // catalog version is valid for 14.
    let (serve, listen) = tokio::sync::oneshot::channel();
    let (parent, _parent_thread) = common::NodeThread::start(
        config,
        sitesync_node::clock::ManualClock::new(child.clock.now()),
        async { listen.await.ok() },
    )
    .await;
    let mut watch = parent.sync.watch();
    tokio::time::timeout(Duration::from_secs(60), async {
        while watch.borrow_and_update().last_succeeded.is_none() {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the parent did not sync");
    serve.send(parent_socket).unwrap();

    let run = child.finished(1).await;
    assert_eq!(
        run.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        run.failure_reason
    );
    assert_eq!(run.trigger, SyncTrigger::ParentRequest);
    assert_eq!(
        child.started.node.database.update_server().digest(),
        parent.node.database.update_server().digest()
    );
    assert_eq!(
        child.started.node.database.site_database().digest(),
        parent.node.database.site_database().digest()
    );
    assert_eq!(child.message_ids(1).await, vec![6701, 6704, 6705, 6702]);
    assert!(parent.hierarchy.children.get("PR5").unwrap().is_some());
}
