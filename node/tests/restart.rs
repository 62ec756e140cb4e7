//! A node killed with SIGKILL in the middle of a sync finishes that sync when it starts
//! again, with nothing lost and nothing applied twice.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_metadata::{CatalogDigest, ParseLimits, parse_update};
use sitesync_node::store::{DEFAULT_CACHE_BYTES, NodeDatabase};
use sitesync_proto::v1;
use sitesync_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

mod common;

/// Kills the node when the test ends, however it ends.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the node binary on `data` with the site certificate in `pki` (`--pki-dir`).
fn spawn(data: &Path, pki: &Path, catalog: &Path) -> (NodeProcess, std::path::PathBuf) {
    let address_file = data.join("address");
    let _ = std::fs::remove_file(&address_file);
    let child = Command::new(env!("CARGO_BIN_EXE_sitesync-node"))
        .arg("--data-dir")
        .arg(data)
        .arg("--pki-dir")
        .arg(pki)
        .arg("--upstream-dir")
        .arg(catalog)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--address-file")
        .arg(&address_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (NodeProcess(child), address_file)
}

async fn connect(address_file: &Path) -> AdminClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        if let Ok(address) = std::fs::read_to_string(address_file) {
            break address;
        }
        assert!(Instant::now() < deadline, "the node did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    AdminClient::new(common::operator_channel(&address))
}

async fn status(admin: &mut AdminClient<Channel>) -> v1::SiteState {
    admin
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .site
        .unwrap()
}

#[tokio::test]
async fn a_node_killed_mid_sync_redoes_the_sync_without_losing_or_duplicating_metadata() {
    let catalog = tempfile::tempdir().unwrap();
    let spec = CatalogSpec::new(4_000, 17);
    write_catalog(catalog.path(), &spec, |_| {}).unwrap();
    let expected = CatalogDigest::of(spec.documents().map(|d| {
        let revision = parse_update(&d.xml, &ParseLimits::default()).unwrap();
        (revision.id, revision.content_hash())
    }));
    let data = tempfile::tempdir().unwrap();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = common::site_pki_dir(pki_dir.path(), "CEN");

    // Start, wait until the first sync has made some progress, then kill -9.
    let (mut node, address_file) = spawn(data.path(), &pki, catalog.path());
    let mut admin = connect(&address_file).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let interrupted = loop {
        let site = status(&mut admin).await;
        if let Some(current) = site.current_sync
            && (current.phase() == v1::SyncPhase::SiteDatabase
                || (current.phase() == v1::SyncPhase::UpdateServer
                    && current.progress.as_ref().is_some_and(|p| p.done > 0)))
        {
            break current;
        }
        assert!(
            site.last_sync.is_none(),
            "the sync finished before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the sync never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    drop(node);

    // Start again: the interrupted sync is redone without an operator.
    let (node, address_file) = spawn(data.path(), &pki, catalog.path());
    let mut admin = connect(&address_file).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let site = loop {
        let site = status(&mut admin).await;
        if site
            .last_sync
            .as_ref()
            .is_some_and(|s| s.phase() == v1::SyncPhase::Finished)
        {
            break site;
        }
        assert!(Instant::now() < deadline, "the redone sync did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = site.last_sync.unwrap();
    assert_eq!(
        last.result(),
        v1::SyncResult::Succeeded,
        "{}",
        last.failure_reason
    );
    assert_ne!(last.sync_id, interrupted.sync_id);
    assert_eq!(last.trigger(), v1::SyncTrigger::Retry);
    let update_server = site.update_server.unwrap();
    let site_database = site.site_database.unwrap();
    assert_eq!(update_server.revision_count, 4_000);
    assert_eq!(update_server.digest, Some(expected.into()));
    assert_eq!(site_database.digest, Some(expected.into()));

    // Both sync starts are on record, the interrupted one without an end.
    let messages = admin
        .list_status_messages(v1::ListStatusMessagesRequest {
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    let count = |id: i32| messages.iter().filter(|m| m.message_id == id).count();
    assert_eq!(count(6701), 2);
    assert_eq!(count(6702), 1);
    // The redo continues the interrupted sync's trace.
    let traces: std::collections::BTreeSet<&str> =
        messages.iter().map(|m| m.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "{messages:#?}");
    assert_eq!(traces.first().unwrap().len(), 32, "{messages:#?}");
    drop(admin);
    drop(node);

    // The stores themselves: digests recomputed from the documents, logs without gaps, and
    // every revision logged once in each store.
    let database = NodeDatabase::open(&data.path().join("db"), DEFAULT_CACHE_BYTES).unwrap();
    for store in [&**database.update_server(), &**database.site_database()] {
        let report = store.verify().unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(report.recomputed_digest, expected);
        assert_eq!(
            store.state().last_sequence,
            4_000,
            "each revision is logged exactly once"
        );
    }
}
