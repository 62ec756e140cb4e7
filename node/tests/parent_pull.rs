//! A child's update-server store pulling its parent's over real gRPC: the first pull is a
//! snapshot, later ones the log tail; a parent whose log changed is re-snapshotted, which
//! removes what the child should no longer hold; the digests match at the end every time.

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_metadata::{ParseLimits, parse_update};
use sitesync_node::feed::follow::{
    PULL_ANCHOR_KEY as ANCHOR_KEY, pull, stored_pull_anchor as stored_anchor,
};
use sitesync_node::feed::{Anchor as ParentAnchor, FeedError as PullError};
use sitesync_node::grpc::client::parent::GrpcParent;
use sitesync_node::store::{CatalogChange, NodeDatabase};
use sitesync_proto::v1;

mod common;

use common::TestNode;

/// A client of the parent's update server as its registered child site `PR1`, the only
/// kind of caller (with an internet-facing node) that may pull. Keep the directory (the
/// child's certificate) alive with the client.
async fn client(node: &TestNode) -> (tempfile::TempDir, GrpcParent) {
    let (pki, channel) = common::registered_child(node, "PR1", v1::SiteRole::Site).await;
    (pki, GrpcParent::new(node.address(), channel))
}

#[tokio::test]
async fn a_child_pulls_a_snapshot_then_the_tail_and_matches_its_parent() {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(500, 31);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    let mut parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;
    let parent_store = parent.started.node.clone();
    let (_pki, client) = client(&parent).await;
    let child = NodeDatabase::in_memory().unwrap();
    let limits = ParseLimits::default();

    let first = pull(&client, child.update_server(), &limits, false, None, |_| {})
        .await
        .unwrap();
    assert!(first.snapshot);
    assert_eq!(first.digest, parent_store.database.update_server().digest());
    assert_eq!(child.update_server().digest(), first.digest);
    assert_eq!(
        child.update_server().state().revisions,
        parent_store.database.update_server().state().revisions
    );
    let anchor = stored_anchor(child.update_server()).unwrap().unwrap();
    assert_eq!(
        anchor.sequence,
        parent_store.database.update_server().last_sequence()
    );
    assert_eq!(anchor.snapshot_through, None);

    // Five of each change kind upstream, a parent sync, then the child's tail.
    CatalogChanges::derive(&spec, 5, 2)
        .apply_to_dir(upstream.path())
        .unwrap();
    let (id, _) = parent.run_sync(v1::SyncKind::Full).await;
    parent.finished(id).await;
    let tail = pull(&client, child.update_server(), &limits, false, None, |_| {})
        .await
        .unwrap();
    assert!(!tail.snapshot);
    assert_eq!(
        (tail.new, tail.changed, tail.expired, tail.deleted),
        (5, 5, 5, 5)
    );
    assert_eq!(
        child.update_server().digest(),
        parent_store.database.update_server().digest()
    );
    assert!(child.update_server().verify().unwrap().is_consistent());

    // Nothing new: no batch at all.
    let idle = pull(&client, child.update_server(), &limits, false, None, |_| {})
        .await
        .unwrap();
    assert_eq!((idle.batches, idle.new), (0, 0));
}

#[tokio::test]
async fn a_child_on_another_log_gets_a_snapshot_that_removes_what_it_should_not_hold() {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(300, 41), |_| {}).unwrap();
    let parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;
    let (_pki, client) = client(&parent).await;

    // The child holds updates of another catalog, anchored on a log that no longer exists.
    let child = NodeDatabase::in_memory().unwrap();
    let stale: Vec<CatalogChange> = CatalogSpec::new(120, 42)
        .documents()
        .skip(60)
        .map(|d| CatalogChange::Put(parse_update(&d.xml, &ParseLimits::default()).unwrap()))
        .collect();
    let foreign = ParentAnchor {
        log_id: [7; 16],
        sequence: 9_999,
        snapshot_through: None,
    };
    child
        .update_server()
        .apply(
            stale,
            &[(ANCHOR_KEY, postcard::to_allocvec(&foreign).unwrap())],
        )
        .unwrap();

    let outcome = pull(
        &client,
        child.update_server(),
        &ParseLimits::default(),
        false,
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert!(outcome.snapshot);
    assert!(outcome.deleted > 0, "the other catalog's updates must go");
    let served = parent.started.node.database.update_server();
    assert_eq!(child.update_server().digest(), served.digest());
    assert_eq!(
        child.update_server().state().updates,
        served.state().updates
    );
}

#[tokio::test]
async fn a_child_anchored_ahead_of_its_parent_is_refused_and_keeps_its_store() {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(100, 43), |_| {}).unwrap();
    let parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;
    let (_pki, client) = client(&parent).await;
    let child = NodeDatabase::in_memory().unwrap();
    pull(
        &client,
        child.update_server(),
        &ParseLimits::default(),
        false,
        None,
        |_| {},
    )
    .await
    .unwrap();

    // The parent's store restored from an older copy would look like this to the child.
    let mut anchor = stored_anchor(child.update_server()).unwrap().unwrap();
    anchor.sequence += 50;
    child
        .update_server()
        .apply(
            Vec::new(),
            &[(ANCHOR_KEY, postcard::to_allocvec(&anchor).unwrap())],
        )
        .unwrap();
    let before = child.update_server().state();
    let error = pull(
        &client,
        child.update_server(),
        &ParseLimits::default(),
        false,
        None,
        |_| {},
    )
    .await
    .unwrap_err();
    match error {
        // The parent's FailedPrecondition: a refusal, not a failure to reach it.
        PullError::Refused(message) => {
            assert!(message.contains("ahead of its upstream"), "{message}");
        }
        other => panic!("expected the parent's refusal, got {other}"),
    }
    assert_eq!(
        child.update_server().state(),
        before,
        "a refused pull changes nothing"
    );
}

/// The undo journal: a pull's changes (new, changed, expired, deleted) taken back return
/// the store to its previous digest and anchor with sequence numbers still rising, and the
/// next pull brings the same changes again.
#[tokio::test]
async fn a_journalled_pull_is_taken_back_exactly_and_pulled_again() {
    use sitesync_node::feed::journal::Journal;
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(300, 57);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    let mut parent = TestNode::start(upstream.path(), "").await;
    parent.finished(1).await;
    let parent_store = parent.started.node.clone();
    let (_pki, client) = client(&parent).await;
    let child = NodeDatabase::in_memory().unwrap();
    let limits = ParseLimits::default();
    pull(&client, child.update_server(), &limits, true, None, |_| {})
        .await
        .unwrap();
    let journal = Journal::new(child.update_server(), ANCHOR_KEY);
    journal.close().unwrap();
    let before = child.update_server().state();
    let anchor_before = stored_anchor(child.update_server()).unwrap();

    CatalogChanges::derive(&spec, 7, 3)
        .apply_to_dir(upstream.path())
        .unwrap();
    let (id, _) = parent.run_sync(v1::SyncKind::Full).await;
    parent.finished(id).await;
    let tail = pull(&client, child.update_server(), &limits, true, None, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (tail.new, tail.changed, tail.expired, tail.deleted),
        (7, 7, 7, 7)
    );
    assert_ne!(child.update_server().digest(), before.digest);
    assert!(journal.batches().unwrap() > 0);

    let restored = journal.undo(&limits).unwrap();
    assert_eq!(restored, 28, "every touched update is put back");
    let after = child.update_server().state();
    assert_eq!(after.digest, before.digest);
    assert_eq!(after.revisions, before.revisions);
    assert!(
        after.last_sequence > before.last_sequence,
        "the log only grows"
    );
    assert_eq!(stored_anchor(child.update_server()).unwrap(), anchor_before);
    assert_eq!(journal.batches().unwrap(), 0);
    assert!(child.update_server().verify().unwrap().is_consistent());

    // The same changes come again.
    pull(&client, child.update_server(), &limits, true, None, |_| {})
        .await
        .unwrap();
    assert_eq!(
        child.update_server().digest(),
        parent_store.database.update_server().digest()
    );
}

/// A parent that answers `GetChanges` with one snapshot part of compressed documents: each
/// a valid document padded to the largest size, so each one alone is acceptable.
struct InflatingParent {
    documents: Vec<v1::UpdateDocument>,
}

#[tonic::async_trait]
impl v1::update_server_server::UpdateServer for InflatingParent {
    async fn get_catalog_info(
        &self,
        _: tonic::Request<v1::GetCatalogInfoRequest>,
    ) -> Result<tonic::Response<v1::CatalogInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    type GetChangesStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<v1::GetChangesResponse, tonic::Status>>>;

    async fn get_changes(
        &self,
        _: tonic::Request<v1::GetChangesRequest>,
    ) -> Result<tonic::Response<Self::GetChangesStream>, tonic::Status> {
        let anchor = v1::Anchor {
            log_id: "6f2d0c3e-8a5b-4c1d-9e7f-0a1b2c3d4e5f".to_owned(),
            sequence: 1,
            snapshot_through: None,
        };
        let message = |kind| Ok(v1::GetChangesResponse { kind: Some(kind) });
        let messages = vec![
            message(v1::get_changes_response::Kind::Plan(v1::ChangesPlan {
                target: Some(anchor.clone()),
                snapshot: true,
                estimated_changes: self.documents.len() as u64,
            })),
            message(v1::get_changes_response::Kind::Batch(v1::ChangeBatch {
                from: None,
                body: Some(v1::change_batch::Body::Snapshot(v1::SnapshotPart {
                    as_of_sequence: 1,
                    after: None,
                    through: None,
                    revisions: self.documents.clone(),
                    references: Vec::new(),
                })),
                resume_anchor: Some(anchor),
            })),
            message(v1::get_changes_response::Kind::Complete(
                v1::ChangesComplete::default(),
            )),
        ];
        Ok(tonic::Response::new(tokio_stream::iter(messages)))
    }

    type GetUpdateDocumentsStream =
        tokio_stream::Empty<Result<v1::UpdateDocumentBatch, tonic::Status>>;

    async fn get_update_documents(
        &self,
        _: tonic::Request<v1::GetUpdateDocumentsRequest>,
    ) -> Result<tonic::Response<Self::GetUpdateDocumentsStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

/// Compressed documents that together decompress to more than any batch may hold (each
/// alone within the document limit, the whole message a fraction of the message limit)
/// stop the pull with an error naming the cause, and nothing is applied.
#[tokio::test]
async fn compressed_documents_beyond_what_a_batch_may_hold_are_refused() {
    let documents: Vec<v1::UpdateDocument> = CatalogSpec::new(400, 3)
        .documents()
        .skip(300)
        .take(5)
        .map(|document| {
            let mut padded = document.xml;
            padded.resize(sitesync_proto::MAX_DOCUMENT_BYTES, b' ');
            v1::UpdateDocument {
                id: Some(document.id.into()),
                document: Vec::new(),
                lz4_document: sitesync_proto::compress_document(&padded),
            }
        })
        .collect();
    let sent: usize = documents.iter().map(|d| d.lz4_document.len()).sum();
    assert!(sent < sitesync_proto::MAX_MESSAGE_BYTES / 16, "{sent}");

    let channel = common::serve_plaintext(
        tonic::transport::Server::builder().add_service(
            v1::update_server_server::UpdateServerServer::new(InflatingParent { documents })
                .max_decoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES),
        ),
    )
    .await;
    let client = GrpcParent::new("a stand-in parent", channel);
    let child = NodeDatabase::in_memory().unwrap();
    let error = pull(
        &client,
        child.update_server(),
        &ParseLimits::default(),
        false,
        None,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(error, PullError::Protocol(_)), "{error}");
    assert!(
        error.to_string().contains("more than 16 MiB of documents"),
        "{error}"
    );
    assert_eq!(child.update_server().state().revisions, 0);
    assert_eq!(stored_anchor(child.update_server()).unwrap(), None);
}
