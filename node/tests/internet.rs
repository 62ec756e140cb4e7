//! Internet-facing update points (S11) over real TCP: a top site, a child site, and the
//! child site's internet-facing node. When the child's update server has synced (phase 1),
//! the child reports 6706 and asks its internet-facing node to sync from it; that node has
//! only an update server (6701, 6704, 6702, never 6705), no site database, no children, and
//! never talks to the top site.

use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::config::{Role, UpstreamConfig};
use sitesync_node::sync::manager::{SyncResult, SyncRun, SyncTrigger};
use sitesync_node::sync::status::StatusMessageId;
use sitesync_proto::v1;
use sitesync_proto::v1::hierarchy_client::HierarchyClient;
use sitesync_proto::v1::site_replication_client::SiteReplicationClient;

mod common;

use common::TestNode;

/// The ids of the status messages one site raised in one of its syncs, oldest first (a
/// node also holds the messages its children forwarded, whose sync ids may be the same).
fn own_message_ids(node: &TestNode, sync_id: u64) -> Vec<u32> {
    let site = node.started.node.config.site_code.to_string();
    node.started
        .sync
        .status_log()
        .messages_after(&site, 0, 1_000)
        .unwrap()
        .iter()
        .filter(|m| m.sync_id == sync_id)
        .map(|m| m.id.code())
        .collect()
}

fn succeeded(run: &SyncRun) {
    assert_eq!(
        run.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        run.failure_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sites_internet_facing_node_syncs_from_its_site_after_phase_one() {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(200, 81);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    let mut top = TestNode::start(upstream.path(), "").await;
    succeeded(&top.finished(1).await);
    let mut child = TestNode::start_child(&top.address(), "PR1").await;
    succeeded(&child.finished(1).await);

    // The internet-facing node registers with its own site, which has synced: it is asked
    // to catch up at once.
    let mut internet = TestNode::start_internet(&child.address(), "PI1").await;
    assert_eq!(internet.started.node.config.role, Role::Internet);
    child.wait_registered("PI1").await;
    let record = child
        .started
        .hierarchy
        .children
        .get("PI1")
        .unwrap()
        .unwrap();
    assert_eq!(record.role, "internet");
    assert_eq!(record.address, internet.address());
    let first = internet.finished(1).await;
    succeeded(&first);
    assert_eq!(first.trigger, SyncTrigger::ParentRequest);
    assert_eq!(own_message_ids(&internet, 1), vec![6701, 6704, 6702]);

    // The top site syncs changes; nobody touches the child or the internet-facing node.
    CatalogChanges::derive(&spec, 4, 6)
        .apply_to_dir(upstream.path())
        .unwrap();
    let child_before = child.last_run_id();
    let internet_before = internet.last_run_id();
    let (id, _) = top.run_sync(v1::SyncKind::Full).await;
    succeeded(&top.finished(id).await);

    let child_run = child.requested_run(child_before).await;
    succeeded(&child_run);
    let internet_run = internet.requested_run(internet_before).await;
    succeeded(&internet_run);

    // The internet-facing node holds its site's update server, which is the top site's.
    let top_db = &top.started.node.database;
    let child_db = &child.started.node.database;
    let internet_db = &internet.started.node.database;
    assert_eq!(
        child_db.update_server().digest(),
        top_db.update_server().digest()
    );
    assert_eq!(
        internet_db.update_server().digest(),
        child_db.update_server().digest()
    );
    // It took exactly the changes its site took.
    assert_eq!(
        internet_run.counts.update_server,
        child_run.counts.update_server
    );
    assert!(internet_run.counts.update_server.new > 0);
    // It has no site database (S11).
    let site_database = internet_db.site_database().state();
    assert_eq!(
        (
            site_database.updates,
            site_database.revisions,
            site_database.last_sequence
        ),
        (0, 0, 0)
    );
    assert_eq!(internet_run.counts.site_database, Default::default());
    assert_eq!(
        own_message_ids(&internet, internet_run.id),
        vec![6701, 6704, 6702]
    );

    // The site reported 6706, naming its internet-facing node, between its two phases.
    assert_eq!(
        own_message_ids(&child, child_run.id),
        vec![6701, 6704, 6706, 6705, 6702]
    );
    let messages = child
        .started
        .sync
        .status_log()
        .messages_after("PR1", 0, 1_000)
        .unwrap();
    let announced = messages
        .iter()
        .find(|m| m.sync_id == child_run.id && m.id == StatusMessageId::SyncingInternetUpdateServer)
        .expect("the child reported no 6706");
    assert_eq!(announced.properties["internet_site_code"], "PI1");
    assert_eq!(announced.component, "SMS_WSUS_SYNC_MANAGER");
    // The top site has no internet-facing node: its syncs report no 6706.
    assert_eq!(own_message_ids(&top, id), vec![6701, 6704, 6705, 6702]);

    // The internet-facing node's sync came from its own site, never from the top site: it
    // is configured with the child as its upstream, registered only there, and the top
    // site's only child is PR1.
    assert_eq!(
        internet.started.node.config.upstream,
        UpstreamConfig::Parent(child.address())
    );
    let top_children: Vec<String> = top
        .started
        .hierarchy
        .children
        .list()
        .unwrap()
        .into_iter()
        .map(|c| c.site_code)
        .collect();
    assert_eq!(top_children, vec!["PR1".to_owned()]);
    // The child's cascade went to child sites only: nothing waits for PI1 at the top.
    assert!(
        top.started
            .hierarchy
            .outbox
            .list()
            .unwrap()
            .iter()
            .all(|e| e.child != "PI1")
    );

    // Its status messages still reach the top site, through its site.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let held = top
                .started
                .sync
                .status_log()
                .messages_after("PI1", 0, 1_000)
                .unwrap();
            if held
                .iter()
                .any(|m| m.sync_id == internet_run.id && m.id == StatusMessageId::SyncDone)
            {
                assert!(
                    held.iter()
                        .all(|m| m.id != StatusMessageId::SyncingSiteDatabase)
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the top site never received the internet-facing node's messages");

    // Its status has no site database and no next scheduled sync.
    let site = internet.status().await.site.unwrap();
    assert_eq!(site.role(), v1::SiteRole::Internet);
    assert!(site.site_database.is_none());
    assert_eq!(site.next_sync_at, None);

    // It has no children: registration is refused.
    let (_pki, pr9) = common::site_channel(&internet.address(), "PR9");
    let refused = HierarchyClient::new(pr9)
        .register_child(v1::RegisterChildRequest {
            site_code: "PR9".into(),
            role: v1::SiteRole::Site as i32,
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("internet-facing node"),
        "{}",
        refused.message()
    );

    // It serves no site database to replicate: it has no child sites, so no site may,
    // its own site neither.
    let (_pki, pr1) = common::site_channel(&internet.address(), "PR1");
    let refused = SiteReplicationClient::new(pr1.clone())
        .get_site_database_info(v1::GetSiteDatabaseInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("only registered child sites"),
        "{}",
        refused.message()
    );

    // Manual syncs are refused at the child and at the internet-facing node.
    for (node, says) in [
        (&mut child, "child site"),
        (&mut internet, "internet-facing"),
    ] {
        let refused = node
            .admin
            .run_sync(v1::RunSyncRequest {
                kind: v1::SyncKind::Manual as i32,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains(says), "{}", refused.message());
    }

    // A cascade request is not for an internet-facing node, even from its own site.
    let refused = HierarchyClient::new(pr1)
        .request_sync(v1::SyncRequest {
            request_id: "5b1f0c3e-0000-4000-8000-000000000003".into(),
            parent_site_code: "PR1".into(),
            kind: v1::SyncKind::Full as i32,
            reason: v1::SyncRequestReason::Cascade as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("INTERNET_UPDATE_POINT"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn a_site_refuses_a_child_with_its_own_site_code() {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(20, 82), |_| {}).unwrap();
    let top = TestNode::start(upstream.path(), "").await;
    // A node given a certificate for the top site's own code, as a misconfigured
    // internet-facing node would be.
    let (_pki, same_code) = common::site_channel(&top.address(), "CEN");
    let refused = HierarchyClient::new(same_code)
        .register_child(v1::RegisterChildRequest {
            site_code: "CEN".into(),
            role: v1::SiteRole::Internet as i32,
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("own"), "{}", refused.message());
}
