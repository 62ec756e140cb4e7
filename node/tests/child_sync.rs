//! A child site syncs from its parent (S1, S5, S7): its update server pulls the parent's
//! over gRPC, its site database replicates the parent's, both end with the parent's digests;
//! manual syncs are refused at a child.

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::sync::manager::{SyncPhase, SyncResult, SyncTrigger};
use sitesync_proto::v1;

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

    // The parent syncs changes; the child's next sync brings exactly them.
    CatalogChanges::derive(&spec, 3, 5)
        .apply_to_dir(upstream.path())
        .unwrap();
    let (id, _) = parent.run_sync(v1::SyncKind::Full).await;
    parent.finished(id).await;
    // The parent's 6702 sends the child a sync request (S10): the child syncs by itself.
    let mut watch = child.started.sync.watch();
    let second = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let found = watch
                .borrow_and_update()
                .recent
                .iter()
                .find(|r| r.trigger == SyncTrigger::ParentRequest && r.phase == SyncPhase::Finished)
                .cloned();
            if let Some(run) = found {
                return run;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the parent's sync request did not start a sync at the child");
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
}

#[tokio::test]
async fn a_child_whose_parent_is_down_fails_with_6703_naming_the_parent() {
    let mut child = TestNode::start_child("127.0.0.1:9", "PR2").await;
    let run = child.finished(1).await;
    assert_eq!(run.result, Some(SyncResult::Failed));
    let reason = run.failure_reason.unwrap();
    assert!(reason.contains("127.0.0.1:9"), "{reason}");
    assert_eq!(child.message_ids(1).await, vec![6701, 6704, 6703]);
}
