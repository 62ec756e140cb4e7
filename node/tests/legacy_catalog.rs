//! The legacy scan catalog (S13) over real TCP and mutual TLS: the catalog host (the top
//! site) builds it after its first sync, every refresh on the manual clock and on demand;
//! the catalog follows the hierarchy to a leaf site, which serves the same index; a rebuild
//! after 100 changes writes only the shards those changes fall in, and a client fetches
//! only those; an interrupted download resumes from the bytes it holds.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use sitesync_node::clock::Clock as _;

use sitesync_legacy::fetch::{FetchReport, fetch};
use sitesync_legacy::verify::check_index;
use sitesync_metadata::UpdateId;
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_node::config::Overrides;
use sitesync_proto::v1;
use sitesync_proto::v1::client_policy_client::ClientPolicyClient;

mod common;

use common::TestNode;

const HOST: &str = "[legacy_catalog]\nhost = true\n";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn catalog(count: usize, seed: u64) -> (tempfile::TempDir, CatalogSpec) {
    let upstream = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(count, seed);
    write_catalog(upstream.path(), &spec, |_| {}).unwrap();
    (upstream, spec)
}

async fn legacy_status(node: &mut TestNode) -> v1::LegacyCatalogStatus {
    node.admin
        .get_legacy_catalog_status(v1::GetLegacyCatalogStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `node` holds build `build`, and returns its status.
async fn wait_build(node: &mut TestNode, build: u64) -> v1::LegacyCatalogStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = legacy_status(node).await;
        if status.index.as_ref().is_some_and(|i| i.build >= build) {
            assert_eq!(status.index.as_ref().unwrap().build, build, "{status:?}");
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "build {build} did not come: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids of the status messages `node` raised with an id in 6791..=6795, oldest first.
async fn legacy_message_ids(node: &mut TestNode) -> Vec<i32> {
    let response = node
        .admin
        .list_status_messages(v1::ListStatusMessagesRequest {
            page_size: 1_000,
            oldest_first: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    response
        .messages
        .iter()
        .map(|m| m.message_id)
        .filter(|id| (6791..=6795).contains(id))
        .collect()
}

/// [`legacy_message_ids`] once `until` holds of them (or after 30 s): a build's or fetch's
/// message is recorded just after its index is in place, where a test may see it first.
async fn legacy_messages_once(node: &mut TestNode, until: impl Fn(&[i32]) -> bool) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ids = legacy_message_ids(node).await;
        if until(&ids) || tokio::time::Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Downloads `node`'s catalog into `dir` as a client does, checking the index against the
/// hierarchy's CA at the node's time.
async fn download(node: &TestNode, dir: &Path) -> FetchReport {
    let versions = node.started.node.catalog_versions.as_ref().unwrap();
    let (cas, is_revoked) = versions.trust();
    // The node's (manual) clock: the index expires two refreshes after it.
    let now = node.clock.now();
    let mut client = ClientPolicyClient::new(node.channel.clone());
    fetch(
        &mut client,
        dir,
        sitesync_legacy::fetch::HeldShards::Hashed,
        |signed, held| check_index(signed, &cas, is_revoked, now, held),
        |_| {},
    )
    .await
    .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_host_builds_after_its_first_sync_every_refresh_and_on_demand() {
    let (upstream, _) = catalog(400, 5);
    let mut top = TestNode::start(upstream.path(), HOST).await;
    top.finished(1).await;

    // After the first sync, at once: build 1, with 6791 and 6792.
    let first = wait_build(&mut top, 1).await;
    let index = first.index.clone().unwrap();
    assert!(first.host);
    assert!(
        index.revision_count > 0 && !index.shards.is_empty(),
        "{index:?}"
    );
    assert_eq!(index.top_site_code, "CEN");
    let built_at = sitesync_legacy::built_at(&index).unwrap();
    assert_eq!(built_at, common::T0, "built on the node's (manual) clock");
    assert_eq!(
        sitesync_legacy::expires_at(&index).unwrap().0 - built_at.0,
        14 * DAY.as_millis() as i64,
        "an index is valid for two refreshes"
    );
    assert_eq!(
        first.next_build_at.unwrap().seconds * 1000,
        built_at.0 + 7 * DAY.as_millis() as i64,
        "the next build is 7 days later"
    );
    assert_eq!(
        legacy_messages_once(&mut top, |ids| ids.contains(&6792)).await,
        vec![6791, 6792]
    );

    // Nothing before the 7 days are up...
    top.clock.advance(7 * DAY - Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(legacy_status(&mut top).await.index.unwrap().build, 1);
    // ...then build 2, which writes no shard: nothing changed.
    top.clock.advance(Duration::from_secs(60));
    let second = wait_build(&mut top, 2).await;
    assert_eq!(second.shards_written, 0, "{second:?}");
    assert_eq!(second.shards_reused as usize, index.shards.len());
    assert_eq!(second.index.as_ref().unwrap().shards, index.shards);

    // On demand: build 3 at once, answered when done.
    let third = top
        .admin
        .build_legacy_catalog(v1::BuildLegacyCatalogRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.index.unwrap().build, 3);
    assert_eq!(
        legacy_message_ids(&mut top).await,
        vec![6791, 6792, 6791, 6792, 6791, 6792]
    );

    // A shorter refresh set by the operator moves the next build.
    let settings = top
        .admin
        .get_sync_settings(v1::GetSyncSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        settings.legacy_catalog_refresh.unwrap().seconds,
        7 * 86_400,
        "the settings show the refresh"
    );
    top.admin
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(v1::SyncSettings {
                legacy_catalog_refresh: Some(prost_types::Duration {
                    seconds: 86_400,
                    nanos: 0,
                }),
                ..settings
            }),
            expected_revision: 0,
        })
        .await
        .unwrap();
    let now = top.clock.now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = legacy_status(&mut top).await;
        let expected = now.0 + DAY.as_millis() as i64;
        if status.next_build_at.map(|t| t.seconds * 1000) == Some(expected) {
            assert_eq!(status.refresh.unwrap().seconds, 86_400);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    top.clock.advance(DAY);
    wait_build(&mut top, 4).await;

    // Only the host builds; a refresh of zero is refused.
    let refused = top
        .admin
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(v1::SyncSettings {
                legacy_catalog_refresh: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            expected_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    let mut child = TestNode::start_child(&top.address(), "PR1").await;
    let refused = child
        .admin
        .build_legacy_catalog(v1::BuildLegacyCatalogRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("host"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_reaches_a_leaf_site_which_serves_the_same_index() {
    let (upstream, _) = catalog(300, 9);
    let mut top = TestNode::start(upstream.path(), HOST).await;
    top.finished(1).await;
    let built = wait_build(&mut top, 1).await;

    let poll = "[legacy_catalog]\npoll = \"1s\"\n";
    let child = |parent: String, code: &'static str| Overrides {
        parent: Some(parent),
        site_code: Some(code.to_owned()),
        ..Overrides::default()
    };
    let mut middle = TestNode::start_with(child(top.address(), "PR1"), poll).await;
    let mut leaf = TestNode::start_with(child(middle.address(), "SE1"), poll).await;
    let at_leaf = wait_build(&mut leaf, 1).await;
    assert_eq!(at_leaf.index_sha256, built.index_sha256);
    assert!(!at_leaf.host);
    assert_eq!(
        at_leaf.shards_written as usize,
        built.index.unwrap().shards.len()
    );
    let has_6794 = |ids: &[i32]| ids.contains(&6794);
    assert!(
        legacy_messages_once(&mut middle, has_6794)
            .await
            .contains(&6794)
    );
    assert_eq!(legacy_messages_once(&mut leaf, has_6794).await, vec![6794]);

    // A client of the leaf downloads the same index, and every shard checks.
    let client = tempfile::tempdir().unwrap();
    let report = download(&leaf, client.path()).await;
    assert_eq!(report.index_sha256, built.index_sha256);
    assert_eq!(report.shards_held, 0);
    assert_eq!(report.shards_fetched, report.index.shards.len());
    let index_file = std::fs::read(client.path().join("index.bin")).unwrap();
    assert_eq!(
        sha256_hex(&index_file),
        sha256_hex(&std::fs::read(top.started.legacy.dir().join("index.bin")).unwrap())
    );

    // A new build at the host reaches the leaf too.
    top.admin
        .build_legacy_catalog(v1::BuildLegacyCatalogRequest {})
        .await
        .unwrap();
    let rebuilt = wait_build(&mut leaf, 2).await;
    assert_eq!(rebuilt.shards_written, 0, "nothing changed: {rebuilt:?}");
    assert_eq!(
        legacy_status(&mut top).await.index_sha256,
        rebuilt.index_sha256
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_after_100_changes_writes_only_their_shards_and_a_client_fetches_only_those() {
    // Small shards, so that 100 changes fall in few of them in a small catalog.
    let (upstream, spec) = catalog(6_000, 21);
    let mut top = TestNode::start(upstream.path(), &format!("{HOST}shard_updates = 8\n")).await;
    top.finished(1).await;
    let first = wait_build(&mut top, 1).await.index.unwrap();
    let client = tempfile::tempdir().unwrap();
    let whole = download(&top, client.path()).await;
    assert_eq!(whole.shards_fetched, first.shards.len());

    // 100 changes: 25 each of new updates, new revisions, expiries and removals.
    let changes = CatalogChanges::derive(&spec, 25, 3);
    changes.apply_to_dir(upstream.path()).unwrap();
    let touched: BTreeSet<UpdateId> = changes
        .new_updates
        .iter()
        .chain(&changes.new_revisions)
        .chain(&changes.expired)
        .map(|d| d.id.update_id)
        .chain(changes.deleted.iter().copied())
        .collect();
    assert_eq!(touched.len(), 100);
    let (sync_id, _) = top.run_sync(v1::SyncKind::Manual).await;
    top.finished(sync_id).await;
    let rebuilt = top
        .admin
        .build_legacy_catalog(v1::BuildLegacyCatalogRequest {})
        .await
        .unwrap()
        .into_inner();
    let second = rebuilt.index.clone().unwrap();
    assert_eq!(second.build, 2);

    // Shards are named by their content: the new ones are exactly those written, and
    // each change lands in one shard, so far fewer are written than the catalog holds.
    let old: HashSet<&[u8]> = first.shards.iter().map(|s| s.sha256.as_slice()).collect();
    let written: Vec<_> = second
        .shards
        .iter()
        .filter(|s| !old.contains(s.sha256.as_slice()))
        .collect();
    assert_eq!(written.len(), rebuilt.shards_written as usize);
    assert_eq!(
        second.shards.len() - written.len(),
        rebuilt.shards_reused as usize
    );
    assert!(
        !written.is_empty() && written.len() <= touched.len(),
        "{} shards written for {} changes",
        written.len(),
        touched.len()
    );
    assert!(
        written.len() < second.shards.len() / 2,
        "{} of {} shards written",
        written.len(),
        second.shards.len()
    );

    // The client fetches exactly the new shards.
    let again = download(&top, client.path()).await;
    let new_bytes: u64 = written.iter().map(|s| s.bytes).sum();
    assert_eq!(again.shards_fetched, written.len());
    assert_eq!(again.bytes_fetched, new_bytes);
    assert_eq!(again.shards_held, second.shards.len() - written.len());
    assert_eq!(again.previous_build, Some(1));
    assert!(
        new_bytes < again.total_bytes / 2,
        "{new_bytes} of {}",
        again.total_bytes
    );
    // Shards neither build names are gone from the client's directory.
    let on_disk = std::fs::read_dir(client.path().join("shards"))
        .unwrap()
        .count();
    assert!(on_disk <= first.shards.len() + written.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_download_resumes_from_the_bytes_it_holds() {
    let (upstream, _) = catalog(2_000, 33);
    let mut top = TestNode::start(upstream.path(), HOST).await;
    top.finished(1).await;
    let index = wait_build(&mut top, 1).await.index.unwrap();

    // A download cut off halfway through the largest shard: its first half is there.
    let shard = index.shards.iter().max_by_key(|s| s.bytes).unwrap();
    let name = sitesync_legacy::shard_file_name(&shard.sha256);
    let served = std::fs::read(top.started.legacy.dir().join("shards").join(&name)).unwrap();
    let client = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(client.path().join("shards")).unwrap();
    let half = served.len() / 2;
    std::fs::write(
        client.path().join("shards").join(format!("{name}.partial")),
        &served[..half],
    )
    .unwrap();

    let report = download(&top, client.path()).await;
    assert_eq!(report.shards_resumed, 1);
    assert_eq!(report.bytes_resumed, half as u64);
    let all: u64 = index.shards.iter().map(|s| s.bytes).sum();
    assert_eq!(
        report.bytes_fetched,
        all - half as u64,
        "only the rest is sent"
    );
    assert_eq!(
        std::fs::read(client.path().join("shards").join(&name)).unwrap(),
        served
    );
    assert!(
        !client
            .path()
            .join("shards")
            .join(format!("{name}.partial"))
            .exists()
    );

    // The node refuses an offset beyond the end, and streams a shard from any offset.
    let mut policy = ClientPolicyClient::new(top.channel.clone());
    let beyond = policy
        .get_legacy_scan_catalog(v1::GetLegacyScanCatalogRequest {
            shard: shard.sha256.clone(),
            resume_offset: shard.bytes + 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), tonic::Code::InvalidArgument, "{beyond}");
    let mut stream = policy
        .get_legacy_scan_catalog(v1::GetLegacyScanCatalogRequest {
            shard: shard.sha256.clone(),
            resume_offset: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut tail = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        match message.kind.unwrap() {
            v1::legacy_scan_catalog_chunk::Kind::Header(header) => {
                assert_eq!(header.start_offset, 10);
                assert_eq!(header.total_bytes, shard.bytes);
                assert_eq!(header.version, 1);
            }
            v1::legacy_scan_catalog_chunk::Kind::Chunk(chunk) => {
                assert_eq!(chunk.offset, 10 + tail.len() as u64);
                tail.extend_from_slice(&chunk.data);
            }
            v1::legacy_scan_catalog_chunk::Kind::Trailer(trailer) => {
                assert_eq!(trailer.total_bytes, shard.bytes);
                assert_eq!(
                    trailer.sha256, shard.sha256,
                    "the trailer hashes the whole file"
                );
            }
        }
    }
    assert_eq!(tail, served[10..]);
    let missing = policy
        .get_legacy_scan_catalog(v1::GetLegacyScanCatalogRequest {
            shard: vec![7; 32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
}
