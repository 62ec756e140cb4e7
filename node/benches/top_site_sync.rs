//! A top site's full sync against the store-ingest baseline of the same run.
//!
//! 1. Writes a generated catalog of 100,000 revisions to a directory
//!    (`SITESYNC_BENCH_REVISIONS` changes the size).
//! 2. A node syncs it from scratch (both phases), timed from the request to 6702; its peak
//!    resident memory is measured over the sync.
//! 3. 100 changes (25 new updates, 25 new revisions, 25 expirations, 25 deletions) are
//!    made upstream and the node runs another full sync: its time as a fraction of the
//!    first sync's.
//! 4. The baseline: the same documents read, parsed and ingested into a fresh store in
//!    batches of 1,000 — the least any sync of this catalog must do once.
//!
//! ```sh
//! cargo bench -p sitesync-node --bench top_site_sync
//! ```

mod common;

use common::{mib, reset_peak, resident_kib};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_metadata::{ParseLimits, parse_update};
use sitesync_node::clock::SystemClock;
use sitesync_node::config::{NodeConfig, Overrides};
use sitesync_node::startup::{Started, start};
use sitesync_node::store::{CatalogChange, DEFAULT_CACHE_BYTES, NodeDatabase};
use sitesync_node::sync::manager::{SyncKind, SyncPhase, SyncResult, SyncRun, SyncTrigger};

// The allocator the node binary uses, so the figures are the product's.
sitesync_node::node_allocator!();

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

async fn run() {
    // The node's own progress lines (phases, counts, times) on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let revisions: usize = std::env::var("SITESYNC_BENCH_REVISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let work = tempfile::tempdir().expect("temporary directory");
    let catalog = work.path().join("catalog");
    let spec = CatalogSpec::new(revisions, CatalogSpec::DEFAULT_SEED);
    let started = Instant::now();
    let summary = write_catalog(&catalog, &spec, |_| {}).expect("write the catalog");
    println!(
        "catalog: {} revisions, {:.1} MB, written in {:.2?}",
        summary.documents,
        summary.bytes as f64 / 1e6,
        started.elapsed()
    );

    // The upstream re-hashes, at its next scan, files modified within a few seconds before
    // a scan (their modification time cannot prove them unchanged). An upstream is not
    // usually written the moment before it is synced; let this one settle so the second
    // sync measures a rescan, not that safety net.
    std::thread::sleep(Duration::from_secs(4));

    let config = NodeConfig::load(
        None,
        &Overrides {
            data_dir: Some(work.path().join("node")),
            upstream_dir: Some(catalog.clone()),
            listen: Some("127.0.0.1:0".into()),
            cache_mib: std::env::var("SITESYNC_BENCH_CACHE_MIB")
                .ok()
                .and_then(|v| v.parse().ok()),
            ..Overrides::default()
        },
    )
    .expect("config");

    // The first sync starts by itself: the node has never synced.
    reset_peak();
    let baseline_rss = resident_kib().0;
    let node = start(config, Arc::new(SystemClock)).expect("start the node");
    let first = wait_for(&node, 1).await;
    let first_peak = resident_kib().1;
    assert_eq!(
        first.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        first.failure_reason
    );
    let first_time = duration(&first);
    let state = node.node.database.update_server().state();
    println!(
        "first full sync: {} revisions in {first_time:.2?} ({:.0} revisions/s); peak RSS {} (process before start {})",
        state.revisions,
        state.revisions as f64 / first_time.as_secs_f64(),
        mib(first_peak),
        mib(baseline_rss),
    );

    let changes = CatalogChanges::derive(&spec, 25, 7);
    changes.apply_to_dir(&catalog).expect("apply the changes");
    reset_peak();
    let second_id = match node.sync.request(SyncKind::Full, SyncTrigger::Operator) {
        Ok(sitesync_node::sync::manager::Disposition::Started(id))
        | Ok(sitesync_node::sync::manager::Disposition::Queued(id)) => id,
        Err(e) => panic!("cannot request a sync: {e}"),
    };
    let second = wait_for(&node, second_id).await;
    let second_peak = resident_kib().1;
    assert_eq!(
        second.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        second.failure_reason
    );
    let second_time = duration(&second);
    let c = second.counts.update_server;
    println!(
        "full sync after 100 changes: {second_time:.2?} (update server: {} new, {} changed, {} expired, {} deleted); peak RSS {}",
        c.new,
        c.changed,
        c.expired,
        c.deleted,
        mib(second_peak)
    );

    // The baseline: read, parse and ingest the same documents once.
    let baseline_dir = work.path().join("baseline");
    let database = NodeDatabase::open(&baseline_dir, DEFAULT_CACHE_BYTES).expect("open");
    let mut files: Vec<_> = std::fs::read_dir(&catalog)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let started = Instant::now();
    let mut ingest = Duration::ZERO;
    for chunk in files.chunks(1_000) {
        let parsed: Vec<CatalogChange> = chunk
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path).expect("read");
                CatalogChange::Put(parse_update(&bytes, &ParseLimits::default()).expect("parse"))
            })
            .collect();
        let t = Instant::now();
        database.update_server().apply(parsed, &[]).expect("apply");
        ingest += t.elapsed();
    }
    let baseline = started.elapsed();
    let n = database.update_server().state().revisions as f64;

    println!();
    println!("{:<44} {:>10} {:>13}", "", "time", "revisions/s");
    let row = |name: &str, time: Duration, count: f64| {
        println!(
            "{name:<44} {:>10.2?} {:>13.0}",
            time,
            count / time.as_secs_f64()
        );
    };
    row("baseline: store ingest only", ingest, n);
    row("baseline: read + parse + store ingest", baseline, n);
    row(
        "top-site full sync (both phases)",
        first_time,
        state.revisions as f64,
    );
    println!();
    println!(
        "full sync / store ingest            = {:.2} (revisions/s ratio)",
        ingest.as_secs_f64() / first_time.as_secs_f64()
    );
    println!(
        "full sync / read + parse + ingest   = {:.2} (revisions/s ratio)",
        baseline.as_secs_f64() / first_time.as_secs_f64()
    );
    println!(
        "sync after 100 changes / first sync = {:.1}% (target <= 5%)",
        100.0 * second_time.as_secs_f64() / first_time.as_secs_f64()
    );
    println!(
        "peak RSS during the first sync      = {} (target <= 256 MiB)",
        mib(first_peak)
    );
}

async fn wait_for(node: &Started, id: u64) -> SyncRun {
    let mut watch = node.sync.watch();
    loop {
        let found = watch
            .borrow_and_update()
            .recent
            .iter()
            .find(|r| r.id == id && r.phase == SyncPhase::Finished)
            .cloned();
        if let Some(run) = found {
            return run;
        }
        watch.changed().await.expect("the sync manager stopped");
    }
}

fn duration(run: &SyncRun) -> Duration {
    let started = run.started_at.expect("started").unix_millis();
    let finished = run.finished_at.expect("finished").unix_millis();
    Duration::from_millis((finished - started).max(0) as u64)
}
