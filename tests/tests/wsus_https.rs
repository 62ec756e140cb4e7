//! A top site syncing from an upstream WSUS over HTTPS, between real processes: the fake
//! upstream serves TLS itself with a certificate from a private CA, as a WSUS on 8531 does.
//! A `sitesync-node` given that CA (`[upstream] ca_file`) completes its first sync and holds
//! what the server offers; one without it fails its sync with 6703 naming the server and the
//! certificate problem, stores nothing and keeps running.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sitesync_metadata::RevisionId;
use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_security::Identity;
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_tests::cluster::{Hierarchy, NodeProcess, idle_after_success};
use sitesync_tests::highest_revisions;
use sitesync_tests::wsus_upstream::{FakeTls, FakeWsus, FakeWsusOptions};
use sitesync_wsus::Operation;

/// One sync of a small catalog in a debug build on a loaded machine.
const SYNC: Duration = Duration::from_secs(240);

fn site(status: &v1::SiteStatus) -> &v1::SiteState {
    status.site.as_ref().expect("a status names its site")
}

/// The `[upstream]` section of a WSUS-synced top site, trusting `ca_file` if given.
fn upstream_config(ca_file: Option<&Path>) -> String {
    let mut toml = String::from("[upstream]\nkind = \"wsus\"\n");
    if let Some(path) = ca_file {
        // A TOML basic string: the temporary directory's path has nothing to escape but
        // what `{:?}` escapes the same way.
        toml.push_str(&format!("ca_file = {:?}\n", path.display().to_string()));
    }
    toml
}

/// Every revision the node's update-server store holds (the latest of each update).
async fn held(node: &NodeProcess) -> BTreeSet<RevisionId> {
    node.latest_updates().await.unwrap().into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_site_syncs_over_https_with_the_private_ca_and_fails_as_tls_without_it() {
    let mut hierarchy = Hierarchy::new().unwrap();
    // The nodes reach the fake on loopback directly, whatever proxy the environment names.
    for name in ["NO_PROXY", "no_proxy"] {
        hierarchy.set_env(name, "127.0.0.1,localhost");
    }
    write_catalog(hierarchy.catalog(), &CatalogSpec::new(150, 31), |_| {}).unwrap();

    // The upstream's own CA, not the hierarchy's: the nodes trust it only through `ca_file`.
    let pki = tempfile::tempdir().unwrap();
    let authority = Authority::init(pki.path(), "upstream WSUS").unwrap();
    let issued = authority
        .issue(&Identity::site("WSU").unwrap(), &[], DEFAULT_VALIDITY)
        .unwrap();
    let server = FakeWsus::start(
        hierarchy.catalog(),
        FakeWsusOptions {
            max_updates_per_request: 20,
            // Both blob forms over TLS: small documents plain, larger ones in a Cabinet.
            compress_above: 2048,
            tls: Some(FakeTls::read(&issued.certificate, &issued.key).unwrap()),
            ..FakeWsusOptions::default()
        },
    )
    .await
    .unwrap();
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Trusting the private CA: the first sync completes with what the server offers.
    hierarchy.set_config(&upstream_config(Some(&authority.certificate_path())));
    hierarchy.start_top_wsus("CEN", &url).await.unwrap();
    let trusting = hierarchy.node("CEN");
    let status = trusting
        .wait_status("its first sync", SYNC, idle_after_success)
        .await
        .unwrap();
    let offered = highest_revisions(hierarchy.catalog()).unwrap();
    assert_eq!(held(trusting).await, offered, "the server's whole offer");
    let served: BTreeSet<RevisionId> = server.served().into_iter().collect();
    assert_eq!(served, offered, "every revision fetched over HTTPS");
    assert_eq!(
        site(&status).update_server.as_ref().unwrap().revision_count,
        offered.len() as u64
    );
    let first = site(&status).last_sync.as_ref().unwrap().sync_id.clone();
    let phase = trusting
        .messages(&[v1::StatusMessageId::SyncUpdateServer], &first)
        .await
        .unwrap();
    assert!(phase[0].text.contains(&url), "{}", phase[0].text);

    // Not trusting it (the system's roots only): 6703 naming the server and the certificate
    // problem; not one request got through the handshake; nothing stored; still running.
    server.reset_counters();
    hierarchy.set_config(&upstream_config(None));
    hierarchy.start_top_wsus("UNT", &url).await.unwrap();
    let untrusting = hierarchy.node("UNT");
    let status = untrusting
        .wait_status("its first sync to fail", SYNC, |status| {
            let site = site(status);
            site.current_sync.is_none()
                && site
                    .last_sync
                    .as_ref()
                    .is_some_and(|last| last.result() == v1::SyncResult::Failed)
        })
        .await
        .unwrap();
    let failed_sync = site(&status).last_sync.as_ref().unwrap().sync_id.clone();
    let failed = untrusting
        .messages(&[v1::StatusMessageId::SyncFailed], &failed_sync)
        .await
        .unwrap();
    let [failed] = failed.as_slice() else {
        panic!("one 6703 for the sync, not {failed:?}");
    };
    assert!(
        failed.text.contains(&url)
            && failed.text.contains("TLS")
            && failed.text.contains("certificate"),
        "{}",
        failed.text
    );
    for operation in Operation::ALL {
        assert_eq!(server.requests(operation), 0, "{operation} got through");
    }
    assert!(held(untrusting).await.is_empty(), "nothing stored");
    assert_eq!(
        site(&status)
            .update_server
            .as_ref()
            .map_or(0, |store| store.revision_count),
        0
    );
    assert!(hierarchy.node_mut("UNT").is_running(), "still running");
    hierarchy.node("UNT").status().await.unwrap();

    server.shutdown().await;
}
