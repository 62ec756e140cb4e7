//! A hierarchy of real `sitesync-node` processes (release builds) on loopback.
//!
//! **(a) Cascade latency.** A tree of 21 sites (the top, 4 children, 16 grandchildren) syncs
//! a generated catalog of 10,000 revisions and settles. Then 1,000 new updates appear
//! upstream and the top site runs a full sync. Measured: from the top site's 6702 to each
//! site's 6702 of the sync its parent asked for, per level, and to the last leaf (target
//! ≤ 2 s). Times are the status messages' own timestamps (every node on this machine's
//! clock), so polling does not add to them.
//!
//! **(b) Per-hop throughput.** A top site syncs 100,000 revisions; then a fresh child
//! syncs them from it (phase 1: update server, phase 2: site database). Its revisions/s,
//! overall and per phase (6704 → 6705 → 6702), are compared with a baseline measured in the
//! same run: the same document bytes streamed over loopback gRPC by a minimal
//! server-streaming service defined here (batches of about the size the nodes send), parsed
//! and ingested into a fresh store, receiving, parsing and ingesting overlapped (one thread
//! each) — the least time one hop's work takes here (target ≥ 50%). A child's sync writes
//! two stores (phase 1 and phase 2), so the table gives each phase's ratio as well.
//!
//! **(c) Tracing overhead.** Two trees of 21 sites as in (a), one exporting every span over
//! OTLP to a collector in this process (on loopback), the other exporting nothing. They take
//! turns (on, off, off, on, on, off, ...): each turn, 1,000 new updates appear in that tree's
//! catalog and its top site runs a full sync. Measured per turn: the top site's sync (6701 →
//! 6702) and the cascade (top site 6702 → last leaf 6702). Reported: every turn, the medians
//! and the ratio on / off (target: at most 5% more).
//!
//! ```sh
//! cargo bench -p sitesync-tests --bench hierarchy
//! # quick: a smaller catalog for (b) (and for (a)'s base catalog, at most 10,000)
//! SITESYNC_BENCH_REVISIONS=5000 cargo bench -p sitesync-tests --bench hierarchy
//! # one part only
//! SITESYNC_BENCH_PARTS=a cargo bench -p sitesync-tests --bench hierarchy
//! # the tracing overhead, with 5 pairs of turns
//! SITESYNC_BENCH_PARTS=c SITESYNC_BENCH_PAIRS=5 cargo bench -p sitesync-tests --bench hierarchy
//! ```
//!
//! Nodes log to files in a temporary directory; set `SITESYNC_BENCH_KEEP=1` to keep it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_metadata::{ParseLimits, UpdateRevision, parse_update};
use sitesync_node::store::{CatalogChange, DEFAULT_CACHE_BYTES, NodeDatabase};
use sitesync_proto::v1;
use sitesync_proto::v1::update_server_client::UpdateServerClient;
use sitesync_proto::v1::update_server_server::{UpdateServer, UpdateServerServer};
use sitesync_tests::cluster::{Hierarchy, NodeProcess};
use sitesync_tests::measure::median;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

// The allocator the node binary uses, so the baseline runs as the product would.
sitesync_node::node_allocator!();

/// How long any one wait may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(1_800);

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn run() {
    let revisions = env_usize("SITESYNC_BENCH_REVISIONS").unwrap_or(100_000);
    let parts = std::env::var("SITESYNC_BENCH_PARTS").unwrap_or_else(|_| "abc".into());
    // Built (release) before anything is timed.
    let started = Instant::now();
    let binary = sitesync_tests::cluster::node_binary();
    println!(
        "node binary: {} ({:.1?})",
        binary.display(),
        started.elapsed()
    );
    if parts.contains('a') {
        cascade_latency(revisions.min(10_000), 1_000).await;
    }
    if parts.contains('b') {
        per_hop_throughput(revisions).await;
    }
    if parts.contains('c') {
        let pairs = env_usize("SITESYNC_BENCH_PAIRS").unwrap_or(3);
        tracing_overhead(revisions.min(10_000), 1_000, pairs).await;
    }
}

fn new_hierarchy() -> Hierarchy {
    let mut hierarchy = Hierarchy::new().expect("temporary directory");
    hierarchy.set_log_lines_on_failure(40);
    hierarchy
}

/// Keeps the hierarchy's directory when asked, so the logs can be read afterwards.
fn finish(mut hierarchy: Hierarchy) {
    if std::env::var_os("SITESYNC_BENCH_KEEP").is_some() {
        println!("logs kept in {}", hierarchy.dir().display());
        hierarchy.keep_dir();
    }
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

fn settled(status: &v1::SiteStatus) -> bool {
    let site = status.site.as_ref();
    site.is_some_and(|s| {
        s.current_sync.is_none()
            && s.last_sync
                .as_ref()
                .is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
    })
}

async fn wait_converged(node: &NodeProcess, reference: &v1::SiteStatus) -> v1::SiteStatus {
    let wanted = digests(reference);
    node.wait_status("the top site's digests", PATIENCE, |s| {
        settled(s) && digests(s) == wanted
    })
    .await
    .expect("converged")
}

/// The time of one status message of a sync (the first with that id).
async fn message_time(node: &NodeProcess, id: v1::StatusMessageId, sync_id: &str) -> i128 {
    let messages = node
        .messages(&[id], sync_id)
        .await
        .expect("status messages");
    let time = messages
        .first()
        .unwrap_or_else(|| panic!("{}: sync {sync_id} raised no {id:?}", node.site_code))
        .time
        .expect("a message has a time");
    i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos)
}

fn seconds(nanos: i128) -> f64 {
    nanos as f64 / 1e9
}

/// Starts a tree of 21 sites (the top `CEN`, `P01`..`P04`, `S01`..`S16`) on a generated
/// base catalog and waits until every site holds it; returns the sites by level.
async fn start_tree(hierarchy: &mut Hierarchy, spec: &CatalogSpec) -> BTreeMap<u32, Vec<String>> {
    write_catalog(hierarchy.catalog(), spec, |_| {}).expect("write the catalog");
    hierarchy.start_top("CEN").await.expect("start CEN");
    let mut levels: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for child in 1..=4 {
        let code = format!("P{child:02}");
        hierarchy.start_child(&code, "CEN").await.expect("start");
        levels.entry(1).or_default().push(code);
    }
    for grandchild in 1..=16 {
        let code = format!("S{grandchild:02}");
        let parent = format!("P{:02}", (grandchild - 1) / 4 + 1);
        hierarchy.start_child(&code, &parent).await.expect("start");
        levels.entry(2).or_default().push(code);
    }
    let top = hierarchy.node("CEN");
    let initial = top
        .wait_status("first sync", PATIENCE, settled)
        .await
        .expect("the top site syncs");
    for node in hierarchy.nodes() {
        wait_converged(node, &initial).await;
    }
    levels
}

async fn cascade_latency(base: usize, new_updates: usize) {
    println!();
    println!(
        "(a) cascade of {new_updates} new updates through 21 sites (1 + 4 + 16), base catalog {base} revisions"
    );
    let mut hierarchy = new_hierarchy();
    let spec = CatalogSpec::new(base, CatalogSpec::DEFAULT_SEED);
    let started = Instant::now();
    let levels = start_tree(&mut hierarchy, &spec).await;
    println!(
        "tree started and synced the base catalog in {:.1?}",
        started.elapsed()
    );

    // Only new updates: what a release day adds.
    let changes = CatalogChanges::derive(&spec, new_updates, 21);
    let TopSync {
        started: top_started,
        done: top_done,
        after,
    } = sync_new_updates(&hierarchy, &changes).await;

    let mut done: BTreeMap<u32, Vec<(String, i128, i128)>> = BTreeMap::new();
    for (level, codes) in &levels {
        for code in codes {
            let node = hierarchy.node(code);
            let status = wait_converged(node, &after).await;
            let run = status.site.unwrap().last_sync.unwrap();
            assert_eq!(run.trigger(), v1::SyncTrigger::ParentRequest, "{code}");
            let started = message_time(node, v1::StatusMessageId::SyncStarted, &run.sync_id).await;
            let finished = message_time(node, v1::StatusMessageId::SyncDone, &run.sync_id).await;
            done.entry(*level).or_default().push((
                code.clone(),
                started - top_done,
                finished - top_done,
            ));
        }
    }

    println!(
        "top site: sync of {} new updates {:.3} s (6701 → 6702)",
        changes.new_updates.len(),
        seconds(top_done - top_started)
    );
    println!();
    println!(
        "{:<7} {:>6} {:>16} {:>16} {:>16} {:>16}",
        "level", "sites", "first 6701 (s)", "first 6702 (s)", "median 6702 (s)", "last 6702 (s)"
    );
    let mut last_leaf = 0;
    for (level, sites) in &done {
        let mut finished: Vec<i128> = sites.iter().map(|s| s.2).collect();
        finished.sort();
        let first_start = sites.iter().map(|s| s.1).min().unwrap_or(0);
        let last = *finished.last().unwrap_or(&0);
        last_leaf = last_leaf.max(last);
        println!(
            "{:<7} {:>6} {:>16.3} {:>16.3} {:>16.3} {:>16.3}",
            level,
            sites.len(),
            seconds(first_start),
            seconds(finished[0]),
            seconds(finished[finished.len() / 2]),
            seconds(last),
        );
    }
    println!("(times after the top site's 6702)");
    println!();
    println!(
        "top site 6702 → last leaf 6702 = {:.3} s (target <= 2 s)",
        seconds(last_leaf)
    );
    finish(hierarchy);
}

/// The top site's sync of new updates: when it started and finished (its 6701 and 6702,
/// ns since the epoch) and its status once idle.
struct TopSync {
    started: i128,
    done: i128,
    after: v1::SiteStatus,
}

/// Writes `changes`' new updates into the catalog and runs a full sync at the top site `CEN`.
async fn sync_new_updates(hierarchy: &Hierarchy, changes: &CatalogChanges) -> TopSync {
    for document in &changes.new_updates {
        std::fs::write(hierarchy.catalog().join(&document.file_name), &document.xml)
            .expect("write a new update");
    }
    let top = hierarchy.node("CEN");
    let sync_id = top.run_sync(v1::SyncKind::Full).await.expect("RunSync");
    let end = top.sync_finished(&sync_id, PATIENCE).await.expect("synced");
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncDone,
        "{}",
        end.text
    );
    TopSync {
        started: message_time(top, v1::StatusMessageId::SyncStarted, &sync_id).await,
        done: message_time(top, v1::StatusMessageId::SyncDone, &sync_id).await,
        after: top
            .wait_status("idle", PATIENCE, settled)
            .await
            .expect("idle"),
    }
}

/// One turn of (c): new updates in the tree's catalog, a full sync at its top site, and the
/// cascade to every site. Returns (top site 6701 → 6702, top 6702 → last site's 6702), s.
async fn one_cascade(hierarchy: &Hierarchy, changes: &CatalogChanges) -> (f64, f64) {
    let TopSync {
        started: top_started,
        done: top_done,
        after,
    } = sync_new_updates(hierarchy, changes).await;
    let mut last = top_done;
    for node in hierarchy.nodes().filter(|n| n.site_code != "CEN") {
        let status = wait_converged(node, &after).await;
        let run = status.site.unwrap().last_sync.unwrap();
        last = last.max(message_time(node, v1::StatusMessageId::SyncDone, &run.sync_id).await);
    }
    (seconds(top_done - top_started), seconds(last - top_done))
}

async fn tracing_overhead(base: usize, new_updates: usize, pairs: usize) {
    println!();
    println!(
        "(c) tracing overhead: two trees of 21 sites, spans exported over OTLP to a collector on loopback or not at all, {pairs} pairs of turns of {new_updates} new updates (base catalog {base} revisions)"
    );
    let collector = sitesync_tests::otlp::Collector::default();
    let endpoint = collector.start().await;
    let spec = CatalogSpec::new(base, CatalogSpec::DEFAULT_SEED);
    let mut on = new_hierarchy();
    on.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    let mut off = new_hierarchy();
    let started = Instant::now();
    start_tree(&mut on, &spec).await;
    start_tree(&mut off, &spec).await;
    println!(
        "both trees synced the base catalog in {:.1?}",
        started.elapsed()
    );

    // Each turn adds updates the tree has not seen: the same count, from one sequence of
    // seeds, so the two trees do the same work turn by turn.
    let (mut top_on, mut cascade_on, mut top_off, mut cascade_off) =
        (vec![], vec![], vec![], vec![]);
    println!();
    println!(
        "{:<6} {:<9} {:>14} {:>14}",
        "pair", "exporter", "top sync (s)", "cascade (s)"
    );
    for pair in 1..=pairs {
        // New updates under a seed of their own: ids neither tree holds yet.
        let changes = CatalogChanges::derive(&spec, new_updates, 100 + pair as u64);
        let mut turns = [
            ("on", &on, &mut top_on, &mut cascade_on),
            ("off", &off, &mut top_off, &mut cascade_off),
        ];
        // On first, then off first: drift over the run favours neither.
        if pair.is_multiple_of(2) {
            turns.reverse();
        }
        for (name, hierarchy, top, cascade) in turns {
            let (t, c) = one_cascade(hierarchy, &changes).await;
            println!("{pair:<6} {name:<9} {t:>14.3} {c:>14.3}");
            top.push(t);
            cascade.push(c);
        }
    }
    let (t_on, t_off) = (median(&top_on), median(&top_off));
    let (c_on, c_off) = (median(&cascade_on), median(&cascade_off));
    println!();
    println!(
        "median top sync: on {t_on:.3} s, off {t_off:.3} s, on/off {:.1}%",
        100.0 * t_on / t_off
    );
    println!(
        "median cascade:  on {c_on:.3} s, off {c_off:.3} s, on/off {:.1}%",
        100.0 * c_on / c_off
    );
    println!("spans received by the collector: {}", collector.len());
    println!("(target: on/off at most 105%)");
    finish(on);
    finish(off);
}

/// The baseline's server: the same document bytes, in batches, over a server stream.
#[derive(Debug)]
struct BaselineServer {
    batches: Arc<Vec<v1::UpdateDocumentBatch>>,
}

#[tonic::async_trait]
impl UpdateServer for BaselineServer {
    async fn get_catalog_info(
        &self,
        _request: Request<v1::GetCatalogInfoRequest>,
    ) -> Result<Response<v1::CatalogInfo>, Status> {
        Err(Status::unimplemented("the baseline streams documents only"))
    }

    type GetChangesStream = ReceiverStream<Result<v1::GetChangesResponse, Status>>;

    async fn get_changes(
        &self,
        _request: Request<v1::GetChangesRequest>,
    ) -> Result<Response<Self::GetChangesStream>, Status> {
        Err(Status::unimplemented("the baseline streams documents only"))
    }

    type GetUpdateDocumentsStream = ReceiverStream<Result<v1::UpdateDocumentBatch, Status>>;

    async fn get_update_documents(
        &self,
        _request: Request<v1::GetUpdateDocumentsRequest>,
    ) -> Result<Response<Self::GetUpdateDocumentsStream>, Status> {
        let (sender, receiver) = mpsc::channel(4);
        let batches = self.batches.clone();
        tokio::spawn(async move {
            for batch in batches.iter() {
                if sender.send(Ok(batch.clone())).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Documents in batches of about `TARGET_BATCH_BYTES`, as the nodes' streams cut them.
fn baseline_batches(spec: &CatalogSpec) -> (Vec<v1::UpdateDocumentBatch>, usize, u64) {
    let mut batches = Vec::new();
    let mut batch = v1::UpdateDocumentBatch::default();
    let mut batch_bytes = 0;
    let (mut count, mut bytes) = (0, 0u64);
    for document in spec.documents() {
        count += 1;
        bytes += document.xml.len() as u64;
        batch_bytes += document.xml.len();
        batch.documents.push(v1::UpdateDocument {
            id: Some(document.id.into()),
            document: document.xml,
            lz4_document: Vec::new(),
        });
        if batch_bytes >= sitesync_proto::TARGET_BATCH_BYTES {
            batches.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
    }
    if !batch.documents.is_empty() {
        batches.push(batch);
    }
    (batches, count, bytes)
}

/// What a baseline run does with the batches it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    /// Nothing: the transport alone.
    StreamOnly,
    /// Parses each batch and applies it to the store before receiving the next.
    Sequential,
    /// Receiving, parsing and applying overlap (one thread each, two batches between
    /// stages): the least time this work takes on this machine.
    Pipelined,
}

fn parse_batch(batch: &v1::UpdateDocumentBatch, limits: &ParseLimits) -> Vec<CatalogChange> {
    batch
        .documents
        .iter()
        .map(|d| {
            let revision: UpdateRevision =
                parse_update(&d.document, limits).expect("generated documents parse");
            CatalogChange::Put(revision)
        })
        .collect()
}

/// Streams every batch from the baseline server into a fresh store as `mode` says; returns
/// the time from the call to the last batch applied.
async fn baseline_run(address: &str, mode: Baseline) -> Duration {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).expect("open");
    let mut client = UpdateServerClient::connect(format!("http://{address}"))
        .await
        .expect("connect")
        .max_decoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES);
    let limits = ParseLimits::default();
    let started = Instant::now();
    let mut stream = client
        .get_update_documents(v1::GetUpdateDocumentsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let mut received = 0usize;
    let database = match mode {
        Baseline::StreamOnly | Baseline::Sequential => {
            while let Some(batch) = stream.message().await.expect("a batch") {
                received += batch.documents.len();
                if mode == Baseline::Sequential {
                    let changes = parse_batch(&batch, &limits);
                    database.update_server().apply(changes, &[]).expect("apply");
                }
            }
            database
        }
        Baseline::Pipelined => {
            let (to_parse, mut parse_queue) = mpsc::channel::<v1::UpdateDocumentBatch>(2);
            let (to_apply, apply_queue) = std::sync::mpsc::sync_channel::<Vec<CatalogChange>>(2);
            let parser = std::thread::spawn(move || {
                while let Some(batch) = parse_queue.blocking_recv() {
                    if to_apply.send(parse_batch(&batch, &limits)).is_err() {
                        return;
                    }
                }
            });
            let applier = std::thread::spawn(move || {
                for changes in apply_queue {
                    database.update_server().apply(changes, &[]).expect("apply");
                }
                database
            });
            while let Some(batch) = stream.message().await.expect("a batch") {
                received += batch.documents.len();
                to_parse.send(batch).await.expect("the parser runs");
            }
            drop(to_parse);
            parser.join().expect("the parser finishes");
            applier.join().expect("the applier finishes")
        }
    };
    let elapsed = started.elapsed();
    assert!(received > 0);
    if mode != Baseline::StreamOnly {
        assert_eq!(
            database.update_server().state().revisions as usize,
            received
        );
    }
    elapsed
}

async fn per_hop_throughput(revisions: usize) {
    println!();
    println!("(b) per-hop throughput: a child's initial sync of {revisions} revisions");
    let mut hierarchy = new_hierarchy();
    let spec = CatalogSpec::new(revisions, CatalogSpec::DEFAULT_SEED);
    write_catalog(hierarchy.catalog(), &spec, |_| {}).expect("write the catalog");
    let started = Instant::now();
    let top = hierarchy.start_top("CEN").await.expect("start CEN");
    let top_status = top
        .wait_status("first sync", PATIENCE, settled)
        .await
        .expect("the top site syncs");
    println!("top site synced in {:.1?}", started.elapsed());

    hierarchy
        .start_child("PR1", "CEN")
        .await
        .expect("start PR1");
    let child = hierarchy.node("PR1");
    let status = wait_converged(child, &top_status).await;
    let site = status.site.unwrap();
    let run = site.last_sync.unwrap();
    let held = site.update_server.unwrap().revision_count as f64;
    let id = &run.sync_id;
    let t_started = message_time(child, v1::StatusMessageId::SyncStarted, id).await;
    let t_phase1 = message_time(child, v1::StatusMessageId::SyncUpdateServer, id).await;
    let t_phase2 = message_time(child, v1::StatusMessageId::SyncSiteDatabase, id).await;
    let t_done = message_time(child, v1::StatusMessageId::SyncDone, id).await;
    hierarchy.kill_all();

    // The baseline, with the nodes gone so it has the machine to itself.
    let (batches, count, bytes) = baseline_batches(&spec);
    let batch_count = batches.len();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                UpdateServerServer::new(BaselineServer {
                    batches: Arc::new(batches),
                })
                .max_encoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let stream_only = baseline_run(&address, Baseline::StreamOnly).await;
    let sequential = baseline_run(&address, Baseline::Sequential).await;
    let baseline = baseline_run(&address, Baseline::Pipelined).await;
    server.abort();

    let n = count as f64;
    let rate = |count: f64, time: Duration| count / time.as_secs_f64();
    let base_rate = rate(n, baseline);
    println!(
        "catalog: {count} revisions, {:.1} MB of documents, {batch_count} baseline batches",
        bytes as f64 / 1e6
    );
    println!();
    println!(
        "{:<48} {:>10} {:>12} {:>10}",
        "", "time (s)", "revisions/s", "ratio"
    );
    let row = |name: &str, count: f64, time: Duration| {
        println!(
            "{name:<48} {:>10.2} {:>12.0} {:>9.0}%",
            time.as_secs_f64(),
            rate(count, time),
            100.0 * rate(count, time) / base_rate
        );
    };
    let nanos = |from: i128, to: i128| Duration::from_nanos((to - from).max(1) as u64);
    row("baseline: loopback gRPC stream only", n, stream_only);
    row(
        "baseline: stream, then parse + ingest, in turn",
        n,
        sequential,
    );
    row("baseline: stream | parse | ingest, pipelined", n, baseline);
    row(
        "child sync, phase 1: update server (6704→6705)",
        held,
        nanos(t_phase1, t_phase2),
    );
    row(
        "child sync, phase 2: site database (6705→6702)",
        held,
        nanos(t_phase2, t_done),
    );
    row(
        "child sync, whole (6701→6702, both stores)",
        held,
        nanos(t_started, t_done),
    );
    println!();
    println!(
        "per-hop throughput / baseline = {:.0}% for the whole sync, {:.0}% per store (mean of the phases) (target >= 50%)",
        100.0 * rate(held, nanos(t_started, t_done)) / base_rate,
        100.0 * rate(2.0 * held, nanos(t_phase1, t_done)) / base_rate,
    );
    finish(hierarchy);
}
