//! The legacy scan catalog (S13) at a real `sitesync-node` process (release build): how
//! long the catalog host takes to build it from its site database and in how much memory,
//! how fast a client downloads it over mutual TLS on loopback, and what a client fetches
//! again after 100 changes.
//!
//! ```sh
//! cargo bench -p sitesync-tests --bench legacy_catalog
//! SITESYNC_BENCH_REVISIONS=300000 cargo bench -p sitesync-tests --bench legacy_catalog
//! ```
//!
//! 1. A top site syncs a generated catalog of `SITESYNC_BENCH_REVISIONS` documents (100,000
//!    by default) without hosting the catalog; it is then restarted as the catalog host
//!    (`[legacy_catalog] host = true`), and builds at once. The build is timed from its
//!    status messages (6791 → 6792); the process's peak resident memory (VmHWM) is read
//!    after it, so it covers start-up and the build, not the sync; for reference, the same
//!    node started once without building and its peak read after 3 s.
//! 2. A client (this process, the same code as `sitesyncctl catalog download`) downloads
//!    the whole catalog into an empty directory, three times; each is timed, and set
//!    against copying the node's catalog files on the same disk (the baseline, in turns
//!    with the downloads): the ratio is what the network path costs. The node's VmHWM after
//!    the downloads covers serving too.
//! 3. 25 new updates, 25 new revisions, 25 expiries and 25 removals are written into the
//!    catalog directory; the top site runs a manual sync and an on-demand build, which is
//!    timed, and the client downloads again: the bytes it fetched against the whole
//!    catalog.
//!
//! The node's peak memory is reset (`/proc/<pid>/clear_refs`) before the downloads and
//! before the rebuild, so each step's peak is its own; the manual sync's is printed apart
//! (it is a sync's, not the catalog's).
//!
//! Printed: every run and the medians; the memory target (≤ 256 MiB) with PASS or MISS.
//! Nothing here is a timed assertion.

use std::path::Path;
use std::time::{Duration, Instant};

use sitesync_legacy::fetch::{FetchReport, fetch};
use sitesync_legacy::verify::check_index;
use sitesync_metadata::Timestamp;
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_proto::v1::client_policy_client::ClientPolicyClient;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, idle_after_success};
use sitesync_tests::measure::{median, peak_mib, reset_peak};

const PATIENCE: Duration = Duration::from_secs(3_600);
const MEMORY_TARGET_MIB: f64 = 256.0;
const DOWNLOADS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    Timestamp(i64::try_from(millis).expect("in range"))
}

async fn legacy_status(node: &NodeProcess) -> v1::LegacyCatalogStatus {
    node.admin()
        .get_legacy_catalog_status(v1::GetLegacyCatalogStatusRequest {})
        .await
        .expect("GetLegacyCatalogStatus")
        .into_inner()
}

/// The seconds from the last 6791 to the last 6792 the node raised.
async fn build_seconds(node: &NodeProcess) -> f64 {
    let time = |messages: Vec<v1::StatusMessage>| {
        let message = messages.into_iter().next().expect("a message");
        let time = message.time.expect("a time");
        time.seconds as f64 + f64::from(time.nanos) / 1e9
    };
    let started = node
        .messages(&[v1::StatusMessageId::LegacyCatalogBuildStarted], "")
        .await
        .expect("messages");
    let done = node
        .messages(&[v1::StatusMessageId::LegacyCatalogBuilt], "")
        .await
        .expect("messages");
    time(done) - time(started)
}

async fn download(
    node: &NodeProcess,
    dir: &Path,
    cas: &[rustls::pki_types::CertificateDer<'static>],
) -> (FetchReport, f64) {
    let mut client = ClientPolicyClient::new(node.channel());
    let started = Instant::now();
    let report = fetch(
        &mut client,
        dir,
        sitesync_legacy::fetch::HeldShards::Hashed,
        |signed, held| check_index(signed, cas, |_| false, now(), held),
        |_| {},
    )
    .await
    .expect("the download");
    (report, started.elapsed().as_secs_f64())
}

/// Copies the node's catalog files into `to`: the baseline of a download.
fn copy_locally(from: &Path, to: &Path) -> f64 {
    let started = Instant::now();
    std::fs::create_dir_all(to.join("shards")).expect("a directory");
    std::fs::copy(from.join("index.bin"), to.join("index.bin")).expect("the index");
    for entry in std::fs::read_dir(from.join("shards"))
        .expect("shards")
        .flatten()
    {
        std::fs::copy(entry.path(), to.join("shards").join(entry.file_name())).expect("a shard");
    }
    let file = std::fs::File::open(to.join("index.bin")).expect("the index");
    file.sync_all().expect("synced");
    started.elapsed().as_secs_f64()
}

async fn run() {
    let revisions: usize = std::env::var("SITESYNC_BENCH_REVISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut hierarchy = Hierarchy::new().expect("a hierarchy");
    let spec = CatalogSpec::new(revisions, 7);
    write_catalog(hierarchy.catalog(), &spec, |_| {}).expect("the catalog");
    hierarchy.set_config("[legacy_catalog]\nhost = false\n");
    let top = hierarchy.start_top("CEN").await.expect("the top site");
    top.wait_status("the first sync", PATIENCE, idle_after_success)
        .await
        .expect("synced");
    let held = top.status().await.expect("status");
    println!(
        "legacy catalog benchmark: {revisions} documents generated; the site database holds {} revisions",
        held.site
            .as_ref()
            .and_then(|s| s.site_database.as_ref())
            .map_or(0, |s| s.revision_count)
    );

    // 1. The build, in a process that does nothing else; first, for reference, the same
    //    node started without building (its peak memory of opening its stores).
    top.stop().await;
    let top = hierarchy.node_mut("CEN");
    top.restart().await.expect("restarted");
    top.status().await.expect("status");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start_peak = peak_mib(top.pid().expect("the node runs"));
    top.stop().await;
    let config = hierarchy.dir().join("CEN").join("node.toml");
    std::fs::write(&config, "[legacy_catalog]\nhost = true\n").expect("the config");
    let top = hierarchy.node_mut("CEN");
    top.restart().await.expect("restarted");
    let top = hierarchy.node("CEN");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let status = legacy_status(top).await;
        if status.index.is_some() {
            break status;
        }
        assert!(Instant::now() < deadline, "no build");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let index = status.index.clone().expect("an index");
    let build = build_seconds(top).await;
    let build_peak = peak_mib(top.pid().expect("the node runs"));
    println!(
        "build 1: {:.2} s; {} revisions of {} updates in {} shards, {:.1} MiB; node VmHWM after start and build {:.1} MiB (started without building: {start_peak:.1} MiB)",
        build,
        index.revision_count,
        index.update_count,
        index.shards.len(),
        mib(status.total_bytes),
        build_peak
    );

    // 2. Downloads against local copies, in turns.
    let cas = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::pem_file_iter(hierarchy.pki_dir().join("ca.pem"))
            .expect("the CA")
            .collect::<Result<Vec<_>, _>>()
            .expect("the CA")
    };
    let served = top.data_dir.join("legacy-catalog");
    reset_peak(top.pid().expect("the node runs"));
    let scratch = tempfile::tempdir().expect("a directory");
    let (mut copies, mut downloads) = (Vec::new(), Vec::new());
    for turn in 0..DOWNLOADS {
        let copy = copy_locally(&served, &scratch.path().join(format!("copy-{turn}")));
        let (report, seconds) =
            download(top, &scratch.path().join(format!("client-{turn}")), &cas).await;
        assert_eq!(report.shards_fetched, index.shards.len());
        let rate = mib(report.total_bytes) / seconds;
        println!(
            "download {}: {:.2} s, {:.1} MiB/s; local copy {:.2} s, {:.1} MiB/s; ratio download ÷ copy (rates) {:.2}",
            turn + 1,
            seconds,
            rate,
            copy,
            mib(report.total_bytes) / copy,
            copy / seconds
        );
        copies.push(copy);
        downloads.push(seconds);
    }
    let serve_peak = peak_mib(top.pid().expect("the node runs"));
    println!("node VmHWM while serving the downloads: {serve_peak:.1} MiB");
    let total = status.total_bytes;
    println!(
        "download median {:.2} s ({:.1} MiB/s), local copy median {:.2} s ({:.1} MiB/s): ratio {:.2}",
        median(&downloads),
        mib(total) / median(&downloads),
        median(&copies),
        mib(total) / median(&copies),
        median(&copies) / median(&downloads)
    );

    // 3. 100 changes, a manual sync, a build, a client's download.
    CatalogChanges::derive(&spec, 25, 11)
        .apply_to_dir(hierarchy.catalog())
        .expect("the changes");
    top.run_sync(v1::SyncKind::Manual).await.expect("a sync");
    top.wait_status("the manual sync", PATIENCE, idle_after_success)
        .await
        .expect("synced");
    let sync_peak = peak_mib(top.pid().expect("the node runs"));
    reset_peak(top.pid().expect("the node runs"));
    let started = Instant::now();
    let rebuilt = top
        .admin()
        .build_legacy_catalog(v1::BuildLegacyCatalogRequest {})
        .await
        .expect("a build")
        .into_inner();
    let rebuild = started.elapsed().as_secs_f64();
    let client = scratch.path().join(format!("client-{}", DOWNLOADS - 1));
    let (report, seconds) = download(top, &client, &cas).await;
    let rebuild_peak = peak_mib(top.pid().expect("the node runs"));
    let peak = rebuild_peak.max(build_peak).max(serve_peak);
    println!(
        "after 100 changes: rebuild {:.2} s wrote {} of {} shards ({:.2} MiB); the client fetched {} shards, {:.2} MiB of {:.1} MiB ({:.1} %) in {:.2} s",
        rebuild,
        rebuilt.shards_written,
        rebuilt.index.as_ref().map_or(0, |i| i.shards.len()),
        mib(rebuilt.bytes_written),
        report.shards_fetched,
        mib(report.bytes_fetched),
        mib(report.total_bytes),
        100.0 * report.bytes_fetched as f64 / report.total_bytes as f64,
        seconds
    );
    println!(
        "node VmHWM: the manual sync {sync_peak:.1} MiB (not the catalog's); the rebuild and a download {rebuild_peak:.1} MiB"
    );
    println!(
        "node peak memory (VmHWM) building and serving (start and build, downloads, rebuild): {:.1} MiB (target <= {MEMORY_TARGET_MIB:.0} MiB): {}",
        peak,
        if peak <= MEMORY_TARGET_MIB {
            "PASS"
        } else {
            "MISS"
        }
    );
}
