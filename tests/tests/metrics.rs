//! The metrics of real `sitesync-node` processes, scraped from `/metrics` and read with a
//! Prometheus text-format parser: a stopped child's replication lag rises at its parent as
//! a new catalog syncs at the top and returns to zero once the child caught up; the
//! families operators chart appear with their labels; metrics are off unless configured,
//! and a bad listen address stops the node with the key named.
//!
//! Nothing waits a fixed time: every wait polls with a generous deadline, for a loaded
//! two-core machine running debug builds.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_proto::v1::admin_client::AdminClient;
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};
use sitesync_tests::cluster::{Hierarchy, NodeProcess};
use sitesync_tests::metrics::{get, samples, scrape, value};
use tokio::io::AsyncWriteExt;

/// A sync of a small catalog, or its cascade, through debug-build nodes.
const SYNC: Duration = Duration::from_secs(240);

const METRICS_ON: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

fn last_sync(status: &v1::SiteStatus) -> Option<&v1::SyncRun> {
    status.site.as_ref().and_then(|s| s.last_sync.as_ref())
}

/// Idle, and the last sync succeeded.
fn settled(status: &v1::SiteStatus) -> bool {
    status
        .site
        .as_ref()
        .is_some_and(|s| s.current_sync.is_none())
        && last_sync(status).is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
}

fn digests(status: &v1::SiteStatus) -> (Option<v1::CatalogDigest>, Option<v1::CatalogDigest>) {
    let site = status.site.as_ref();
    (
        site.and_then(|s| s.update_server.as_ref())
            .and_then(|s| s.digest.clone()),
        site.and_then(|s| s.site_database.as_ref())
            .and_then(|s| s.digest.clone()),
    )
}

/// Waits until `node` is settled with the stores of `reference`.
async fn wait_converged(node: &NodeProcess, reference: &v1::SiteStatus) -> v1::SiteStatus {
    let want = digests(reference);
    node.wait_status("the reference's catalog", SYNC, |status| {
        settled(status) && digests(status) == want
    })
    .await
    .unwrap()
}

/// Scrapes `address` until `done` holds of the parsed metrics; panics with `what` and the
/// last scrape.
async fn wait_metrics(address: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + SYNC;
    loop {
        let scraped = scrape(address).await.unwrap();
        if done(&scraped) {
            return scraped;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {SYNC:?}; last scrape: {:#?}",
            scraped.samples
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn lag(scrape: &Scrape, child: &str) -> (Option<f64>, Option<f64>) {
    (
        value(
            scrape,
            "sitesync_replication_lag_revisions",
            &[("child", child)],
        ),
        value(
            scrape,
            "sitesync_replication_lag_seconds",
            &[("child", child)],
        ),
    )
}

/// The number of observations of a histogram's series with `labels`.
fn observations(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, metric, labels)
        .filter_map(|s| match &s.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_childs_lag_rises_at_its_parent_and_returns_to_zero_once_it_caught_up() {
    let mut hierarchy = Hierarchy::new().unwrap();
    hierarchy.set_config(METRICS_ON);
    let spec = CatalogSpec::new(150, 21);
    write_catalog(hierarchy.catalog(), &spec, |_| {}).unwrap();
    let top = hierarchy.start_top("CEN").await.unwrap();
    let initial = top
        .wait_status("the first sync", SYNC, settled)
        .await
        .unwrap();
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    wait_converged(hierarchy.node("PR1"), &initial).await;
    let top_metrics = hierarchy.node("CEN").metrics_address().unwrap();

    // In step: the child reported the parent's digests.
    let in_step = wait_metrics(top_metrics, "PR1 in step", |s| {
        lag(s, "PR1") == (Some(0.0), Some(0.0))
    })
    .await;
    assert_eq!(
        value(&in_step, "sitesync_outbox_requests", &[("child", "PR1")]),
        Some(0.0)
    );

    hierarchy.node_mut("PR1").stop().await;
    CatalogChanges::derive(&spec, 5, 4)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let top = hierarchy.node("CEN");
    let sync_id = top.run_sync(v1::SyncKind::Full).await.unwrap();
    let end = top.sync_finished(&sync_id, SYNC).await.unwrap();
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncDone,
        "{}",
        end.text
    );
    let after = top
        .wait_status("idle after its sync", SYNC, settled)
        .await
        .unwrap();

    // The stopped child lags by the revisions the new catalog logged, for longer and
    // longer, and its sync request waits in the outbox.
    let behind = wait_metrics(
        top_metrics,
        "PR1 behind",
        |s| matches!(lag(s, "PR1"), (Some(r), Some(t)) if r > 0.0 && t > 0.0),
    )
    .await;
    let (revisions, seconds) = lag(&behind, "PR1");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = scrape(top_metrics).await.unwrap();
    assert_eq!(lag(&later, "PR1").0, revisions);
    assert!(lag(&later, "PR1").1 > seconds, "{later:#?}");
    assert_eq!(
        value(&later, "sitesync_outbox_requests", &[("child", "PR1")]),
        Some(1.0)
    );

    // The child returns, takes the waiting request and catches up: no lag, empty outbox.
    hierarchy.node_mut("PR1").restart().await.unwrap();
    wait_converged(hierarchy.node("PR1"), &after).await;
    wait_metrics(top_metrics, "PR1 caught up", |s| {
        lag(s, "PR1") == (Some(0.0), Some(0.0))
            && value(s, "sitesync_outbox_requests", &[("child", "PR1")]) == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_families_appear_with_their_labels_after_a_sync() {
    let mut hierarchy = Hierarchy::new().unwrap();
    hierarchy.set_config(METRICS_ON);
    write_catalog(hierarchy.catalog(), &CatalogSpec::new(60, 22), |_| {}).unwrap();
    let top = hierarchy.start_top("CEN").await.unwrap();
    let initial = top
        .wait_status("the first sync", SYNC, settled)
        .await
        .unwrap();
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    wait_converged(hierarchy.node("PR1"), &initial).await;
    let top = hierarchy.node("CEN");
    let address = top.metrics_address().unwrap();

    // A connection that is not TLS, and a site calling an operator's method: a failed
    // handshake and a refusal to count.
    let mut plaintext = tokio::net::TcpStream::connect(top.address()).await.unwrap();
    plaintext
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(plaintext);
    let site = Transport::Tls(
        TlsContext::load(TlsFiles::in_pki_dir(
            hierarchy.pki_dir(),
            &Identity::site("PR1").unwrap(),
        ))
        .unwrap(),
    );
    let refused = AdminClient::new(site.channel(&top.address(), |e| e).unwrap())
        .run_sync(v1::RunSyncRequest {
            kind: v1::SyncKind::Full as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let s = wait_metrics(address, "the handshake failure counted", |s| {
        value(
            s,
            "sitesync_tls_handshake_failures_total",
            &[("reason", "refused")],
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    let positive = |metric: &str, labels: &[(&str, &str)]| {
        let found = value(&s, metric, labels);
        assert!(
            found.is_some_and(|v| v > 0.0),
            "{metric}{labels:?} = {found:?}; scrape: {:#?}",
            s.samples
        );
    };
    for phase in ["update_server", "site_database", "total"] {
        assert!(
            observations(&s, "sitesync_sync_duration_seconds", &[("phase", phase)]) >= 1.0,
            "{phase}: {:#?}",
            s.samples
        );
    }
    positive(
        "sitesync_syncs_total",
        &[
            ("kind", "full"),
            ("trigger", "schedule"),
            ("result", "succeeded"),
        ],
    );
    positive(
        "sitesync_revisions_applied_total",
        &[("store", "update_server"), ("change", "new")],
    );
    positive(
        "sitesync_revisions_applied_total",
        &[("store", "site_database"), ("change", "new")],
    );
    assert!(
        value(
            &s,
            "sitesync_revisions_applied_total",
            &[("store", "update_server"), ("change", "expired")]
        )
        .is_some()
    );
    for id in ["6701", "6704", "6705", "6702"] {
        positive("sitesync_status_messages_total", &[("id", id)]);
    }
    let revisions = initial
        .site
        .as_ref()
        .and_then(|s| s.update_server.as_ref())
        .map(|s| s.revision_count as f64);
    assert_eq!(
        value(
            &s,
            "sitesync_store_revisions",
            &[("store", "update_server")]
        ),
        revisions
    );
    positive("sitesync_store_revisions", &[("store", "site_database")]);
    positive("sitesync_store_bytes", &[("store", "update_server")]);
    assert_eq!(
        value(&s, "sitesync_outbox_requests", &[("child", "PR1")]),
        Some(0.0)
    );
    positive(
        "sitesync_grpc_server_requests_total",
        &[
            ("method", "/sitesync.v1.Admin/GetSiteStatus"),
            ("code", "OK"),
        ],
    );
    positive(
        "sitesync_grpc_server_requests_total",
        &[
            ("method", "/sitesync.v1.UpdateServer/GetChanges"),
            ("code", "OK"),
        ],
    );
    positive(
        "sitesync_grpc_server_requests_total",
        &[
            ("method", "/sitesync.v1.Admin/RunSync"),
            ("code", "PERMISSION_DENIED"),
        ],
    );
    assert!(
        observations(
            &s,
            "sitesync_grpc_server_request_duration_seconds",
            &[("method", "/sitesync.v1.Hierarchy/RegisterChild")]
        ) >= 1.0
    );
    positive(
        "sitesync_authorization_refusals_total",
        &[("rule", "operator")],
    );
    assert_eq!(
        value(
            &s,
            "sitesync_node_info",
            &[("site", "CEN"), ("role", "site")]
        ),
        Some(1.0)
    );
    for metric in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        positive(metric, &[]);
    }

    // The child counts the syncs its parent asked for.
    let child = scrape(hierarchy.node("PR1").metrics_address().unwrap())
        .await
        .unwrap();
    assert!(
        value(
            &child,
            "sitesync_syncs_total",
            &[("trigger", "parent_request"), ("result", "succeeded")]
        )
        .is_some_and(|v| v >= 1.0),
        "{:#?}",
        child.samples
    );

    // The listener speaks the Prometheus text format, and only at /metrics.
    let answer = get(address, "/metrics").await.unwrap();
    assert!(
        answer.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        answer.content_type
    );
    assert_eq!(get(address, "/").await.unwrap().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_unless_configured_and_a_bad_address_stops_the_node() {
    let mut hierarchy = Hierarchy::new().unwrap();
    write_catalog(hierarchy.catalog(), &CatalogSpec::new(10, 23), |_| {}).unwrap();
    let top = hierarchy.start_top("CEN").await.unwrap();
    assert_eq!(top.metrics_address(), None);
    let log = std::fs::read_to_string(&top.log_path).unwrap();
    assert!(!log.contains("metrics at"), "{log}");

    hierarchy.set_config("[metrics]\nlisten = \"metrics.example:9530\"\n");
    let error = format!(
        "{:#}",
        hierarchy.start_child("PR1", "CEN").await.unwrap_err()
    );
    assert!(error.contains("exited"), "{error}");
    // The node says why first, before any backtrace the environment asks for.
    let log = std::fs::read_to_string(hierarchy.dir().join("PR1").join("node.log")).unwrap();
    let first = log.lines().next().unwrap_or_default();
    assert!(first.contains("metrics.listen (from "), "{log}");
    assert!(first.contains("is not an address to listen on"), "{log}");
}
