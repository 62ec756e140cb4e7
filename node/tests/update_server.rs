//! The node's gRPC server over real TCP: health and reflection answer, catalog info reports
//! the update-server store, and a reader that pulls `GetChanges` (a snapshot, then the log tail) ends with
//! the same digest as the node.

use std::path::Path;

use sitesync_metadata::generate::CatalogSpec;
use sitesync_metadata::{CatalogDigest, ParseLimits, parse_update};
use sitesync_node::store::{CatalogChange, CatalogStore, NodeDatabase};
use sitesync_proto::v1::update_server_client::UpdateServerClient;
use sitesync_proto::v1::{self, get_changes_response};
use tonic::transport::Channel;

mod common;

use common::TestNode;

/// A node whose upstream holds the first `n` documents of a generated catalog, synced.
async fn synced_node(upstream: &Path, n: usize) -> TestNode {
    write_documents(upstream, CatalogSpec::new(n, 5).documents());
    let node = TestNode::start(upstream, "").await;
    node.finished(1).await;
    node
}

fn write_documents(
    dir: &Path,
    documents: impl Iterator<Item = sitesync_metadata::generate::GeneratedDocument>,
) {
    for document in documents {
        std::fs::write(dir.join(&document.file_name), &document.xml).unwrap();
    }
}

/// Removes every revision file of an update from the upstream: it is no longer offered.
fn withdraw(upstream: &Path, update: sitesync_metadata::UpdateId) {
    for entry in std::fs::read_dir(upstream).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&update.to_string())
        {
            std::fs::remove_file(path).unwrap();
        }
    }
}

/// A client of the node's update server as its registered child site `PR1`: only registered
/// children may pull. Keep the directory (the child's certificate) alive with the client.
async fn update_server_client(node: &TestNode) -> (tempfile::TempDir, UpdateServerClient<Channel>) {
    let (pki, channel) = common::registered_child(node, "PR1", v1::SiteRole::Site).await;
    let client = UpdateServerClient::new(channel)
        .max_decoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES);
    (pki, client)
}

/// Pulls every change after `since` into `store`, the way a child's update server will:
/// each batch must start where the reader stands. Returns the anchor it ends at.
async fn pull(
    client: &mut UpdateServerClient<Channel>,
    store: &CatalogStore,
    since: Option<v1::Anchor>,
    max_batch_bytes: u32,
) -> (Option<v1::Anchor>, v1::ChangesPlan, v1::CatalogInfo, usize) {
    let (anchor, plan, info, batches) =
        pull_some(client, store, since, max_batch_bytes, usize::MAX).await;
    (
        anchor,
        plan,
        info.expect("the stream ended without ChangesComplete"),
        batches,
    )
}

/// Like [`pull`], but stops (as if cut off) after `stop_after` batches.
async fn pull_some(
    client: &mut UpdateServerClient<Channel>,
    store: &CatalogStore,
    since: Option<v1::Anchor>,
    max_batch_bytes: u32,
    stop_after: usize,
) -> (
    Option<v1::Anchor>,
    v1::ChangesPlan,
    Option<v1::CatalogInfo>,
    usize,
) {
    let mut stream = client
        .get_changes(v1::GetChangesRequest {
            since: since.clone(),
            max_batch_bytes,
            accept_lz4: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut position = since;
    let mut plan = None;
    let mut batches = 0;
    while let Some(message) = stream.message().await.unwrap() {
        match message.kind.unwrap() {
            get_changes_response::Kind::Plan(p) => plan = Some(p),
            get_changes_response::Kind::Batch(batch) => {
                assert_eq!(
                    batch.from, position,
                    "a batch must start where the reader stands"
                );
                let documents: Vec<v1::UpdateDocument> = match batch.body.unwrap() {
                    v1::change_batch::Body::Snapshot(part) => part.revisions,
                    v1::change_batch::Body::Log(log) => {
                        let mut documents = Vec::new();
                        for change in log.changes {
                            match change.payload.unwrap() {
                                v1::catalog_change::Payload::Revision(d) => documents.push(d),
                                v1::catalog_change::Payload::Reference(_) => {
                                    panic!("GetChanges never sends references")
                                }
                                v1::catalog_change::Payload::Deleted(id) => {
                                    let id = sitesync_metadata::RevisionId::try_from(id).unwrap();
                                    store
                                        .apply([CatalogChange::Delete(id.update_id)], &[])
                                        .unwrap();
                                }
                            }
                        }
                        documents
                    }
                };
                let changes: Vec<CatalogChange> = documents
                    .into_iter()
                    .map(|d| {
                        let revision = parse_update(&d.document, &ParseLimits::default()).unwrap();
                        assert_eq!(
                            Some(v1::RevisionId::from(revision.id)),
                            d.id,
                            "a document must be filed under its own identity"
                        );
                        CatalogChange::Put(revision)
                    })
                    .collect();
                store.apply(changes, &[]).unwrap();
                position = batch.resume_anchor;
                batches += 1;
                if batches == stop_after {
                    return (position, plan.unwrap(), None, batches);
                }
            }
            get_changes_response::Kind::Complete(complete) => {
                return (position, plan.unwrap(), complete.at_target, batches);
            }
        }
    }
    (position, plan.unwrap(), None, batches)
}

/// A reader that accepts compressed documents gets every document in that form only, each
/// decompressing to the served store's bytes; batches are still sized by the documents' own
/// lengths, so the reader holds no more per batch than it asked for.
#[tokio::test]
async fn documents_go_compressed_to_a_reader_that_asks() {
    let upstream = tempfile::tempdir().unwrap();
    let node = synced_node(upstream.path(), 200).await;
    let served = node.started.node.clone();
    let (_pki, mut client) = update_server_client(&node).await;
    let max_batch_bytes = 64 * 1024;
    let mut stream = client
        .get_changes(v1::GetChangesRequest {
            since: None,
            max_batch_bytes,
            accept_lz4: true,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut documents, mut document_bytes, mut sent_bytes) = (0, 0, 0);
    while let Some(message) = stream.message().await.unwrap() {
        let Some(get_changes_response::Kind::Batch(batch)) = message.kind else {
            continue;
        };
        let Some(v1::change_batch::Body::Snapshot(part)) = batch.body else {
            panic!("an empty reader gets a snapshot");
        };
        let (mut batch_bytes, in_batch) = (0, part.revisions.len());
        for sent in part.revisions {
            assert!(sent.document.is_empty(), "only the compressed form is sent");
            assert_eq!(sitesync_proto::sent_document_len(&sent), {
                let length: [u8; 4] = sent.lz4_document[..4].try_into().unwrap();
                u32::from_le_bytes(length) as usize
            });
            sent_bytes += sent.lz4_document.len();
            let received = sitesync_proto::RevisionDocument::try_from(sent).unwrap();
            let held = served
                .database
                .update_server()
                .document(received.id)
                .unwrap();
            assert_eq!(Some(&received.document), held.as_ref());
            batch_bytes += received.document.len();
            document_bytes += received.document.len();
            documents += 1;
        }
        // A document larger than the batch size travels alone.
        assert!(
            batch_bytes <= max_batch_bytes as usize || in_batch == 1,
            "{batch_bytes} bytes in {in_batch} documents"
        );
    }
    assert_eq!(documents, served.database.update_server().state().revisions);
    assert!(
        sent_bytes * 2 < document_bytes,
        "{sent_bytes} bytes sent for {document_bytes} bytes of documents"
    );
}

#[tokio::test]
async fn a_reader_pulls_a_snapshot_then_the_tail_and_matches_the_digest() {
    let upstream = tempfile::tempdir().unwrap();
    let mut node = synced_node(upstream.path(), 300).await;
    let served = node.started.node.clone();
    let (_pki, mut client) = update_server_client(&node).await;

    let info = client
        .get_catalog_info(v1::GetCatalogInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let state = served.database.update_server().state();
    assert_eq!(info.site_code, "CEN");
    let store_info = info.store.unwrap();
    assert_eq!(store_info.revision_count, state.revisions);
    assert_eq!(
        CatalogDigest::try_from(store_info.digest.unwrap()).unwrap(),
        state.digest
    );

    // An empty reader gets a snapshot, in batches no larger than it asked for.
    let reader = NodeDatabase::in_memory().unwrap();
    let (anchor, plan, at_target, batches) =
        pull(&mut client, reader.update_server(), None, 64 * 1024).await;
    assert!(plan.snapshot);
    assert!(
        batches > 5,
        "64 KiB batches should split the catalog, got {batches}"
    );
    assert_eq!(reader.update_server().digest(), state.digest);
    assert_eq!(at_target.store.unwrap().digest, Some(state.digest.into()));
    let anchor = anchor.unwrap();
    assert_eq!(anchor.sequence, state.last_sequence);
    assert!(anchor.snapshot_through.is_none());

    // More upstream, one update withdrawn, another sync: the reader gets the tail only.
    write_documents(
        upstream.path(),
        CatalogSpec::new(400, 5).documents().skip(300),
    );
    let withdrawn = served.database.update_server().summaries(None, 1).unwrap()[0]
        .id
        .update_id;
    withdraw(upstream.path(), withdrawn);
    let (id, _) = node.run_sync(v1::SyncKind::Full).await;
    node.finished(id).await;
    let now = served.database.update_server().state();
    let (anchor, plan, _, _) = pull(&mut client, reader.update_server(), Some(anchor), 0).await;
    assert!(!plan.snapshot);
    assert_eq!(
        plan.estimated_changes,
        now.last_sequence - state.last_sequence
    );
    assert_eq!(reader.update_server().digest(), now.digest);
    assert!(reader.update_server().latest(withdrawn).unwrap().is_none());

    // Up to date: no batch, straight to completion.
    let (same, _, _, batches) = pull(&mut client, reader.update_server(), anchor.clone(), 0).await;
    assert_eq!(batches, 0);
    assert_eq!(same, anchor);

    // An anchor from the future is refused with an actionable message.
    let mut future = anchor.unwrap();
    future.sequence += 10;
    let refused = client
        .get_changes(v1::GetChangesRequest {
            since: Some(future),
            max_batch_bytes: 0,
            accept_lz4: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("ahead of its upstream"),
        "{}",
        refused.message()
    );
}

/// A snapshot cut off midway resumes where it stopped; a deletion made in between, of an
/// update the reader had already installed, still reaches the reader through the tail.
#[tokio::test]
async fn an_interrupted_snapshot_resumes_without_missing_changes() {
    let upstream = tempfile::tempdir().unwrap();
    let mut node = synced_node(upstream.path(), 200).await;
    let served = node.started.node.clone();
    let (_pki, mut client) = update_server_client(&node).await;
    let reader = NodeDatabase::in_memory().unwrap();

    let (anchor, plan, complete, _) =
        pull_some(&mut client, reader.update_server(), None, 32 * 1024, 2).await;
    assert!(plan.snapshot && complete.is_none());
    let anchor = anchor.unwrap();
    let through =
        sitesync_metadata::RevisionId::try_from(anchor.snapshot_through.clone().unwrap()).unwrap();

    // Withdraw an update the reader already holds, and sync.
    let installed = reader.update_server().summaries(None, 1).unwrap()[0]
        .id
        .update_id;
    assert!(installed <= through.update_id);
    withdraw(upstream.path(), installed);
    let (id, _) = node.run_sync(v1::SyncKind::Full).await;
    node.finished(id).await;
    assert!(
        served
            .database
            .update_server()
            .latest(installed)
            .unwrap()
            .is_none()
    );

    let (end, _, complete, _) =
        pull(&mut client, reader.update_server(), Some(anchor), 32 * 1024).await;
    assert!(complete.store.is_some());
    assert!(end.unwrap().snapshot_through.is_none());
    assert!(reader.update_server().latest(installed).unwrap().is_none());
    assert_eq!(
        reader.update_server().digest(),
        served.database.update_server().digest()
    );
}

#[tokio::test]
async fn health_and_reflection_answer_for_stock_grpc_tools() {
    let upstream = tempfile::tempdir().unwrap();
    let node = synced_node(upstream.path(), 60).await;
    let channel = node.channel.clone();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sitesync.v1.UpdateServer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"sitesync.v1.UpdateServer".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // The descriptor of our service resolves, so tools can call it by name.
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "sitesync.v1.UpdateServer".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()
    ));
}
