//! Site-database replication over real gRPC: a parent node (filled by its own syncs) and a
//! child site database in memory. The first replication is a snapshot, later ones the tail;
//! the child's own log gets exactly the parent's changes, once each, in order, also across a
//! dropped stream; a window of one keeps one batch in flight; a bad Ack is refused; a
//! caught-up child hears heartbeats and then the parent's next changes as they are logged.
//! After its update-server store has synced from the parent, a child receives revisions by
//! reference instead of documents, and falls back to documents when it lacks one.

use std::ops::ControlFlow;
use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::feed::FeedError;
use sitesync_node::feed::follow::{
    self, ReplicaStores, ReplicationLimits, ReplicationOutcome, ReplicationTarget,
    stored_replication_anchor as stored_anchor,
};
use sitesync_node::grpc::client::parent::GrpcParent;
use sitesync_node::grpc::services::site_replication::SiteReplicationService;
use sitesync_node::store::{CatalogStore, ChangeKind, NodeDatabase};
use sitesync_proto::v1::site_replication_client::SiteReplicationClient;
use sitesync_proto::v1::{self, replication_message, replication_request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

mod common;

use common::TestNode;

/// A client of the parent's site replication as its registered child site `CHD`: only
/// registered child sites may replicate. Keep the directory (the child's certificate)
/// alive with the client.
async fn client(node: &TestNode) -> (tempfile::TempDir, Parent) {
    let (pki, channel) = common::registered_child(node, "CHD", v1::SiteRole::Site).await;
    let raw = SiteReplicationClient::new(channel.clone())
        .max_decoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES);
    let feed = GrpcParent::new(node.address(), channel);
    (pki, Parent { feed, raw })
}

/// The parent as a child follows it, and a raw client for the protocol's own tests.
#[derive(Clone)]
struct Parent {
    feed: GrpcParent,
    raw: SiteReplicationClient<Channel>,
}

/// A child's replication into `child` alone (no update-server store beside it).
async fn replicate_until(
    parent: &mut Parent,
    child: &CatalogStore,
    site_code: &str,
    target: ReplicationTarget,
    limits: &ReplicationLimits,
    progress: impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
) -> Result<ReplicationOutcome, FeedError> {
    let stores = ReplicaStores {
        site_database: child,
        update_server: None,
    };
    follow::replicate(&parent.feed, stores, site_code, target, limits, progress).await
}

/// A parent node whose site database holds a generated catalog of `updates` updates.
async fn parent_with(updates: usize) -> (tempfile::TempDir, CatalogSpec, TestNode) {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(updates, 41);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    let parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;
    (upstream, spec, parent)
}

/// Changes the parent's upstream and runs a full sync at the parent.
async fn parent_changes(parent: &mut TestNode, upstream: &tempfile::TempDir, spec: &CatalogSpec) {
    CatalogChanges::derive(spec, 5, 2)
        .apply_to_dir(upstream.path())
        .unwrap();
    let (id, _) = parent.run_sync(v1::SyncKind::Full).await;
    parent.finished(id).await;
}

fn parent_site_database(parent: &TestNode) -> &CatalogStore {
    parent.started.node.database.site_database()
}

/// Every log record after `after`: (sequence, kind, revision).
fn log_after(
    store: &CatalogStore,
    after: u64,
) -> Vec<(u64, ChangeKind, sitesync_metadata::RevisionId)> {
    store
        .changes_since(after, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|c| (c.sequence, c.kind, c.revision))
        .collect()
}

/// Checks that the child's log after `child_from` has exactly the parent's records after
/// `parent_from`, once each and in order, numbered on from `child_from`.
fn assert_same_tail(
    child: &CatalogStore,
    child_from: u64,
    parent: &CatalogStore,
    parent_from: u64,
) {
    let child_log = log_after(child, child_from);
    let parent_log = log_after(parent, parent_from);
    let expected_sequences: Vec<u64> = (child_from + 1..=child.last_sequence()).collect();
    assert_eq!(
        child_log.iter().map(|r| r.0).collect::<Vec<_>>(),
        expected_sequences,
        "the child's log is numbered without gaps"
    );
    assert_eq!(
        child_log.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
        parent_log.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
        "the child logs exactly the parent's changes, once each"
    );
}

async fn replicate(
    client: &mut Parent,
    child: &CatalogStore,
    limits: &ReplicationLimits,
) -> ReplicationOutcome {
    replicate_until(
        client,
        child,
        "CHD",
        ReplicationTarget::ParentPosition,
        limits,
        |_| ControlFlow::Continue(()),
    )
    .await
    .unwrap()
}

/// Phase 1 of a child's sync: its update-server store pulls the parent's.
async fn pull_update_server(parent: &TestNode, child: &NodeDatabase) {
    let (_pki, channel) = common::registered_child(parent, "CHD", v1::SiteRole::Site).await;
    let feed = GrpcParent::new(parent.address(), channel);
    let store: &CatalogStore = child.update_server();
    follow::pull(
        &feed,
        store,
        &sitesync_metadata::ParseLimits::default(),
        false,
        None,
        |_| {},
    )
    .await
    .unwrap();
    let parents: &CatalogStore = parent.started.node.database.update_server();
    assert_eq!(store.digest(), parents.digest());
}

/// Phase 2 of a child's sync: its site database replicates after its update server.
async fn replicate_after(client: &mut Parent, child: &NodeDatabase) -> ReplicationOutcome {
    let stores = ReplicaStores {
        site_database: child.site_database(),
        update_server: Some(child.update_server()),
    };
    follow::replicate(
        &client.feed,
        stores,
        "CHD",
        ReplicationTarget::ParentPosition,
        &ReplicationLimits::default(),
        |_| ControlFlow::Continue(()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn after_its_update_server_a_child_gets_the_site_database_by_reference() {
    let (upstream, spec, mut parent) = parent_with(200).await;
    let (_pki, mut client) = client(&parent).await;
    let child_database = NodeDatabase::in_memory().unwrap();
    let child = child_database.site_database();
    pull_update_server(&parent, &child_database).await;
    let documents = child_database.documents().count().unwrap();

    let first = replicate_after(&mut client, &child_database).await;
    assert!(first.reached);
    assert!(first.changes.snapshot);
    let parent_store = parent_site_database(&parent);
    assert_eq!(child.digest(), parent_store.digest());
    assert_eq!(child.state().revisions, parent_store.state().revisions);
    assert_eq!(
        first.changes.bytes_received, 0,
        "every revision came by reference, no document"
    );
    assert_eq!(
        child_database.documents().count().unwrap(),
        documents,
        "the site database holds the update server's documents, not copies"
    );
    assert!(child.verify().unwrap().is_consistent());

    // The parent syncs again; the child's sync brings the tail the same way.
    let (child_from, parent_from) = (child.last_sequence(), parent_store.last_sequence());
    parent_changes(&mut parent, &upstream, &spec).await;
    pull_update_server(&parent, &child_database).await;
    let tail = replicate_after(&mut client, &child_database).await;
    let parent_store = parent_site_database(&parent);
    assert!(tail.reached);
    assert!(!tail.changes.snapshot);
    assert!(tail.changes.new + tail.changes.changed > 0);
    assert_eq!(tail.changes.bytes_received, 0);
    assert_eq!(child.digest(), parent_store.digest());
    assert_same_tail(child, child_from, parent_store, parent_from);
    assert!(child.verify().unwrap().is_consistent());
}

#[tokio::test]
async fn a_child_lacking_a_named_revision_gets_the_documents_instead() {
    let (upstream, spec, mut parent) = parent_with(120).await;
    let (_pki, mut client) = client(&parent).await;
    let child_database = NodeDatabase::in_memory().unwrap();
    let child = child_database.site_database();
    // The update server synced, then the parent moved on: the tail names revisions the
    // child's update server does not hold.
    pull_update_server(&parent, &child_database).await;
    let first = replicate_after(&mut client, &child_database).await;
    assert_eq!(first.changes.bytes_received, 0);
    let (child_from, parent_from) = (
        child.last_sequence(),
        parent_site_database(&parent).last_sequence(),
    );
    parent_changes(&mut parent, &upstream, &spec).await;

    let tail = replicate_after(&mut client, &child_database).await;
    let parent_store = parent_site_database(&parent);
    assert!(tail.reached);
    assert!(
        tail.changes.bytes_received > 0,
        "the revisions the update server lacks came as documents"
    );
    assert_eq!(child.digest(), parent_store.digest());
    assert_same_tail(child, child_from, parent_store, parent_from);
    assert!(child.verify().unwrap().is_consistent());

    // With no update server at all, a whole snapshot falls back the same way.
    let empty = NodeDatabase::in_memory().unwrap();
    let snapshot = replicate_after(&mut client, &empty).await;
    assert!(snapshot.reached && snapshot.changes.snapshot);
    assert!(snapshot.changes.bytes_received > 0);
    assert_eq!(empty.site_database().digest(), parent_store.digest());
    assert!(empty.site_database().verify().unwrap().is_consistent());
}

#[tokio::test]
async fn a_child_replicates_a_snapshot_then_the_tail_with_no_gap_or_duplicate() {
    let (upstream, spec, mut parent) = parent_with(200).await;
    let (_pki, mut client) = client(&parent).await;
    let child_database = NodeDatabase::in_memory().unwrap();
    let child = child_database.site_database();
    let limits = ReplicationLimits::default();

    let first = replicate(&mut client, child, &limits).await;
    assert!(first.reached);
    assert!(first.changes.snapshot);
    let parent_store = parent_site_database(&parent);
    assert!(parent_store.state().revisions > 0);
    assert_eq!(child.digest(), parent_store.digest());
    assert_eq!(child.state().revisions, parent_store.state().revisions);
    let anchor = stored_anchor(child).unwrap().unwrap();
    assert_eq!(anchor.sequence, parent_store.last_sequence());
    assert_eq!(anchor.snapshot_through, None);
    assert!(child.verify().unwrap().is_consistent());

    // The parent syncs again: the child gets the tail, nothing twice.
    let (child_from, parent_from) = (child.last_sequence(), parent_store.last_sequence());
    parent_changes(&mut parent, &upstream, &spec).await;
    let parent_store = parent_site_database(&parent);
    assert!(parent_store.last_sequence() > parent_from);
    let tail = replicate(&mut client, child, &limits).await;
    assert!(tail.reached);
    assert!(!tail.changes.snapshot);
    assert_eq!(child.digest(), parent_store.digest());
    assert_same_tail(child, child_from, parent_store, parent_from);
    assert_eq!(
        stored_anchor(child).unwrap().unwrap().sequence,
        parent_store.last_sequence()
    );
    assert!(child.verify().unwrap().is_consistent());

    // Nothing new: the first heartbeat already says the child is there.
    let idle = replicate(&mut client, child, &limits).await;
    assert!(idle.reached);
    assert_eq!(idle.changes.batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_child_with_window_one_converges() {
    let (_upstream, _spec, parent) = parent_with(60).await;
    let (_pki, mut client) = client(&parent).await;
    let child_database = NodeDatabase::in_memory().unwrap();
    let child = child_database.site_database();
    let limits = ReplicationLimits {
        window: 1,
        max_batch_bytes: 16 << 10,
        ..ReplicationLimits::default()
    };
    let outcome = replicate_until(
        &mut client,
        child,
        "CHD",
        ReplicationTarget::ParentPosition,
        &limits,
        |_| {
            std::thread::sleep(Duration::from_millis(5));
            ControlFlow::Continue(())
        },
    )
    .await
    .unwrap();
    assert!(outcome.reached);
    assert!(
        outcome.changes.batches > 3,
        "small batches: several of them"
    );
    assert_eq!(child.digest(), parent_site_database(&parent).digest());
    assert!(child.verify().unwrap().is_consistent());
}

/// A raw `Replicate` stream: the request sender and the response stream.
async fn open(
    client: &mut Parent,
    subscribe: v1::Subscribe,
) -> (
    mpsc::Sender<v1::ReplicationRequest>,
    tonic::Streaming<v1::ReplicationMessage>,
) {
    let (requests, outbound) = mpsc::channel(8);
    requests
        .send(v1::ReplicationRequest {
            kind: Some(replication_request::Kind::Subscribe(subscribe)),
        })
        .await
        .unwrap();
    let stream = client
        .raw
        .replicate(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    (requests, stream)
}

async fn ack(requests: &mpsc::Sender<v1::ReplicationRequest>, applied: v1::Anchor) {
    requests
        .send(v1::ReplicationRequest {
            kind: Some(replication_request::Kind::Ack(v1::Ack {
                applied: Some(applied),
            })),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn with_window_one_the_parent_waits_for_each_ack() {
    let (_upstream, _spec, parent) = parent_with(30).await;
    let (_pki, mut client) = client(&parent).await;
    let latest = parent_site_database(&parent).last_sequence();
    let (requests, mut stream) = open(
        &mut client,
        v1::Subscribe {
            site_code: "CHD".into(),
            from: None,
            max_batch_bytes: 8 << 10,
            window: 1,
            by_reference: false,
            accept_lz4: false,
        },
    )
    .await;
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.kind,
        Some(replication_message::Kind::Heartbeat(_))
    ));
    let mut position: Option<v1::Anchor> = None;
    let mut batches = 0;
    loop {
        let message = stream.message().await.unwrap().unwrap();
        let Some(replication_message::Kind::Batch(batch)) = message.kind else {
            panic!("only batches while the child is behind");
        };
        assert_eq!(
            batch.from, position,
            "each batch starts where the last ended"
        );
        let resume = batch.resume_anchor.unwrap();
        batches += 1;
        // With one batch unacknowledged the parent sends nothing more, however long the
        // child takes.
        let more = tokio::time::timeout(Duration::from_millis(150), stream.message()).await;
        assert!(more.is_err(), "the parent sent beyond its window: {more:?}");
        ack(&requests, resume.clone()).await;
        let done = resume.snapshot_through.is_none() && resume.sequence == latest;
        position = Some(resume);
        if done {
            break;
        }
    }
    assert!(batches > 2, "small batches: several of them");
}

#[tokio::test]
async fn a_child_that_drops_the_stream_resumes_from_its_anchor() {
    let (upstream, spec, mut parent) = parent_with(200).await;
    let (_pki, mut client) = client(&parent).await;
    let child_database = NodeDatabase::in_memory().unwrap();
    let child = child_database.site_database();
    let limits = ReplicationLimits {
        window: 2,
        max_batch_bytes: 32 << 10,
        ..ReplicationLimits::default()
    };
    let stop_after = |n: u64| {
        move |outcome: &ReplicationOutcome| {
            if outcome.changes.batches == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    };

    // Cut off in the middle of the snapshot; the parent syncs meanwhile.
    let cut = replicate_until(
        &mut client,
        child,
        "CHD",
        ReplicationTarget::ParentPosition,
        &limits,
        stop_after(3),
    )
    .await
    .unwrap();
    assert!(!cut.reached);
    let anchor = stored_anchor(child).unwrap().unwrap();
    assert!(anchor.snapshot_through.is_some(), "stopped mid-snapshot");
    assert_eq!(cut.position, Some(anchor));
    parent_changes(&mut parent, &upstream, &spec).await;
    let resumed = replicate(&mut client, child, &limits).await;
    assert!(resumed.reached);
    let parent_store = parent_site_database(&parent);
    assert_eq!(child.digest(), parent_store.digest());
    assert!(child.verify().unwrap().is_consistent());

    // Cut off in the middle of a tail.
    let (child_from, parent_from) = (child.last_sequence(), parent_store.last_sequence());
    CatalogChanges::derive(&spec, 40, 9)
        .apply_to_dir(upstream.path())
        .unwrap();
    let (id, _) = parent.run_sync(v1::SyncKind::Full).await;
    parent.finished(id).await;
    let parent_store = parent_site_database(&parent);
    let small = ReplicationLimits {
        max_batch_bytes: 4 << 10,
        ..limits.clone()
    };
    let cut = replicate_until(
        &mut client,
        child,
        "CHD",
        ReplicationTarget::ParentPosition,
        &small,
        stop_after(2),
    )
    .await
    .unwrap();
    assert!(!cut.reached);
    let anchor = stored_anchor(child).unwrap().unwrap();
    assert!(anchor.sequence > parent_from && anchor.sequence < parent_store.last_sequence());
    let resumed = replicate(&mut client, child, &small).await;
    assert!(resumed.reached);
    assert!(!resumed.changes.snapshot);
    assert_eq!(child.digest(), parent_store.digest());
    assert_same_tail(child, child_from, parent_store, parent_from);
    assert!(child.verify().unwrap().is_consistent());
}

#[tokio::test]
async fn an_ack_for_a_position_never_sent_is_refused() {
    let (_upstream, _spec, parent) = parent_with(20).await;
    let (_pki, mut client) = client(&parent).await;
    let state = parent_site_database(&parent).state();
    let (requests, mut stream) = open(
        &mut client,
        v1::Subscribe {
            site_code: "CHD".into(),
            from: None,
            max_batch_bytes: 0,
            window: 1,
            by_reference: false,
            accept_lz4: false,
        },
    )
    .await;
    let first = stream.message().await.unwrap().unwrap();
    let Some(replication_message::Kind::Heartbeat(heartbeat)) = first.kind else {
        panic!("a heartbeat comes first");
    };
    let latest = heartbeat.site_database.unwrap().latest.unwrap();
    assert_eq!(latest.sequence, state.last_sequence);
    ack(
        &requests,
        v1::Anchor {
            sequence: state.last_sequence + 100,
            ..latest
        },
    )
    .await;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
}

#[tokio::test]
async fn the_first_message_must_be_a_subscribe() {
    let (_upstream, _spec, parent) = parent_with(5).await;
    let (_pki, mut client) = client(&parent).await;
    let (requests, outbound) = mpsc::channel(1);
    requests
        .send(v1::ReplicationRequest {
            kind: Some(replication_request::Kind::Ack(v1::Ack { applied: None })),
        })
        .await
        .unwrap();
    let status = client
        .raw
        .replicate(ReceiverStream::new(outbound))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn site_database_info_reports_the_parent_site_database() {
    let (_upstream, _spec, parent) = parent_with(5).await;
    let (_pki, mut client) = client(&parent).await;
    let info = client
        .raw
        .get_site_database_info(v1::GetSiteDatabaseInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let state = parent_site_database(&parent).state();
    assert_eq!(info.latest.unwrap().sequence, state.last_sequence);
    assert_eq!(info.revision_count, state.revisions);
    assert_eq!(
        sitesync_metadata::CatalogDigest::try_from(info.digest.unwrap()).unwrap(),
        state.digest
    );
}

#[tokio::test]
async fn a_caught_up_child_gets_heartbeats_then_new_changes_as_the_parent_syncs() {
    let (upstream, spec, mut parent) = parent_with(20).await;
    // The parent's site database served with a short heartbeat interval.
    let service = SiteReplicationService::new(parent.started.node.clone())
        .with_heartbeat_interval(Duration::from_millis(200));
    let channel = common::serve_plaintext(tonic::transport::Server::builder().add_service(
        v1::site_replication_server::SiteReplicationServer::new(service),
    ))
    .await;
    let mut client = Parent {
        feed: GrpcParent::new("a stand-in parent", channel.clone()),
        raw: SiteReplicationClient::new(channel),
    };
    let child_database = NodeDatabase::in_memory().unwrap();
    let child = child_database.site_database();
    replicate(&mut client, child, &ReplicationLimits::default()).await;

    // Caught up: only heartbeats, each stating the parent's unchanged position.
    let position = stored_anchor(child).unwrap().unwrap();
    let (_requests, mut stream) = open(
        &mut client,
        v1::Subscribe {
            site_code: "CHD".into(),
            from: Some(position.into()),
            max_batch_bytes: 0,
            window: 0,
            by_reference: false,
            accept_lz4: false,
        },
    )
    .await;
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a heartbeat within the interval")
            .unwrap()
            .unwrap();
        let Some(replication_message::Kind::Heartbeat(heartbeat)) = message.kind else {
            panic!("nothing but heartbeats while the parent's log stands still");
        };
        let latest = heartbeat.site_database.unwrap().latest.unwrap();
        assert_eq!(latest.sequence, position.sequence);
    }
    drop(stream);

    // A child waiting for the parent's next changes gets them as soon as they are logged.
    let target = ReplicationTarget::Sequence(position.sequence + 1);
    let waiting = {
        let mut client = client.clone();
        let child = NodeDatabase::in_memory().unwrap();
        tokio::spawn(async move {
            // Starts from nothing: a snapshot first, then it waits on the parent's log.
            let outcome = replicate_until(
                &mut client,
                child.site_database(),
                "CHD",
                target,
                &ReplicationLimits::default(),
                |_| ControlFlow::Continue(()),
            )
            .await
            .unwrap();
            (outcome, child.site_database().digest())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing to reach before the parent syncs"
    );
    parent_changes(&mut parent, &upstream, &spec).await;
    let (outcome, digest) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting child reaches the new position")
        .unwrap();
    assert!(outcome.reached);
    assert_eq!(digest, parent_site_database(&parent).digest());
    replicate(&mut client, child, &ReplicationLimits::default()).await;
    assert_eq!(child.digest(), parent_site_database(&parent).digest());
}
