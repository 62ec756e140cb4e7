//! A top site's sync from an upstream WSUS server ([MS-WSUSSS] over HTTP on loopback)
//! against its sync from a catalog directory holding the same catalog, with real
//! `sitesync-node` processes (release builds): is the WSUS path nearly as fast, in bounded
//! memory, and is a manual sync after a few changes cheap?
//!
//! ```sh
//! cargo bench -p sitesync-tests --bench wsus_sync
//! # quick: a smaller catalog, one pair of runs
//! SITESYNC_BENCH_REVISIONS=3000 SITESYNC_BENCH_PAIRS=1 cargo bench -p sitesync-tests --bench wsus_sync
//! ```
//!
//! A generated catalog of 100,000 documents (`SITESYNC_BENCH_REVISIONS`) is written to a
//! directory, and the fake upstream WSUS of `sitesync_tests::wsus_upstream` serves that
//! directory from this process, on its multi-thread runtime, with WSUS's defaults (100
//! revisions per GetUpdateData, documents above 5,120 bytes of UTF-16 compressed;
//! `SITESYNC_BENCH_WSUS_COMPRESS_ABOVE=N` changes that bound, `18446744073709551615`
//! compresses none). A real WSUS sends the Cabinets it stored, from another machine; the fake
//! server shares this machine's cores with the node, so the bench has it build every Cabinet
//! before anything is timed (`FakeWsus::precompress`), and its answers only copy them. Then:
//!
//! 1. **First syncs, in turns** (`SITESYNC_BENCH_PAIRS` pairs, 3 by default, in the order
//!    directory, WSUS, WSUS, directory, directory, WSUS, ... so drift over the run favours
//!    neither): a fresh top site (`--upstream-dir` or `--upstream-wsus`, default settings,
//!    every product and classification) starts and runs its first sync by itself. Timed from
//!    the sync's own status messages (every node on this machine's clock, so polling adds
//!    nothing): **phase 1, 6704 → 6705** (the update server: scanning the upstream, choosing,
//!    writing the store), which gives revisions/s over the revisions the store then holds, and
//!    the whole sync, 6701 → 6702 (with phase 2, the site database). The node's own log
//!    splits phase 1 into the upstream scan, the selection and the store walk ("upstream
//!    (server) scanned", "selection resolved", "update server synced", each timed from the
//!    phase's start). Per run also: CPU time over the run of the node, of this process (for
//!    a WSUS run, mostly the fake server, which shares the machine's cores with the node) and
//!    of everything else on the machine (`/proc/stat`: other work that competed), the
//!    upstream session's retries in the node's log (loopback needs none: each would add
//!    seconds of backoff), and the node's peak resident memory (VmHWM), read just before it
//!    is stopped. Each node's data is removed after its run, except the last pair's.
//!
//!    A WSUS server lists one revision per update, its highest, where the directory holds
//!    every revision file: the WSUS node ends with fewer revisions (the same updates), so
//!    revisions/s is each node's own count over its own phase 1, and the time ratio is given
//!    too.
//! 2. **A manual sync after 100 changes.** The last pair's two nodes are started again on
//!    their data (a top site does not sync when it restarts). 25 new updates, 25 new
//!    revisions, 25 expirations and 25 deletions are written into the catalog directory, the
//!    fake server rescans it, and the WSUS node runs a manual sync (S4: its lists are asked
//!    with the stored anchors). Its time (6701 → 6702, and phase 1) as a fraction of that
//!    node's first sync. For reference, the WSUS node then runs a full sync (complete lists,
//!    which are what show deletions), and the directory node a manual sync of the same
//!    changes.
//!
//! Printed: every run, the medians, the ratio WSUS ÷ directory of phase-1 revisions/s
//! (target ≥ 0.80) and the highest peak memory (target ≤ 256 MiB), each with PASS or MISS,
//! and the manual sync's fraction. Nothing here is a timed assertion. Nodes log to files in a
//! temporary directory; set `SITESYNC_BENCH_KEEP=1` to keep it.

use std::path::Path;
use std::time::{Duration, Instant};

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess};
use sitesync_tests::measure::{median, peak_mib};
use sitesync_tests::wsus_upstream::{FakeWsus, FakeWsusOptions};
use sitesync_wsus::Operation;

/// How long any one wait may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(1_800);
/// WSUS ÷ directory, phase-1 revisions/s.
const RATE_TARGET: f64 = 0.80;
/// The peak-memory target of one node, MiB.
const MEMORY_TARGET_MIB: f64 = 256.0;
/// Changes of each kind (new updates, new revisions, expirations, deletions): 100 in all.
const CHANGES_PER_KIND: usize = 25;
/// `top_site_sync`'s target for a sync after 100 changes against the first, shown next to
/// the manual sync's fraction for reference.
const AFTER_CHANGES_TARGET: f64 = 0.05;
/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn main() {
    // The fake server answers from this process: on a multi-thread runtime its answers are
    // not held up while the harness polls the nodes.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Where a node syncs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Directory,
    Wsus,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Directory => "directory",
            Source::Wsus => "wsus",
        }
    }

    /// The node's log line that ends the upstream scan.
    fn scanned_line(self) -> &'static str {
        match self {
            Source::Directory => "upstream scanned",
            Source::Wsus => "upstream server scanned",
        }
    }
}

/// Phase 1 as the node's log splits it: each step's end, s after the phase's start.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    scanned: Option<f64>,
    selected: Option<f64>,
    synced: Option<f64>,
}

impl Steps {
    /// The last of each line in the node's log (so after a later sync, that sync's).
    fn from_log(path: &Path, source: Source) -> Self {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        Self {
            scanned: logged_elapsed(&log, source.scanned_line()),
            selected: logged_elapsed(&log, "selection resolved"),
            synced: logged_elapsed(&log, "update server synced"),
        }
    }

    fn scan(&self) -> Option<f64> {
        self.scanned
    }

    fn select(&self) -> Option<f64> {
        Some(self.selected? - self.scanned?)
    }

    fn store(&self) -> Option<f64> {
        Some(self.synced? - self.selected?)
    }
}

/// The `elapsed=` field of the last log line holding `message`, s.
fn logged_elapsed(log: &str, message: &str) -> Option<f64> {
    let line = log.lines().rev().find(|line| line.contains(message))?;
    let value = line.split("elapsed=").nth(1)?.split_whitespace().next()?;
    parse_debug_duration(value)
}

/// A `Duration` as `{:?}` prints it (`1.5s`, `850.2ms`, `12µs`, `7ns`), s.
fn parse_debug_duration(text: &str) -> Option<f64> {
    let units = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        let number = text.strip_suffix(unit)?;
        number.parse::<f64>().ok().map(|n| n * scale)
    })
}

/// How often the node's log says the upstream server did not answer and a request is tried
/// again.
fn retries_in_log(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("did not answer; trying again"))
        .count()
}

/// A process's user + system CPU time so far, s (`/proc/<pid>/stat`; `self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The fields after the command name, which is in parentheses and may hold spaces:
    // utime and stime are the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').expect("a command name") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / USER_HZ
}

/// CPU time the whole machine has spent busy so far, s (`/proc/stat`, every core): what
/// the node and this process did not use of it went to other work on the machine.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("the cpu line");
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().expect("a tick count"))
        .collect();
    (ticks.iter().sum::<f64>() - ticks[3] - ticks[4]) / USER_HZ
}

fn node_pid(node: &NodeProcess) -> String {
    node.pid().expect("the node runs").to_string()
}

/// When a status message was raised, ns since the epoch.
fn nanos(message: &v1::StatusMessage) -> i128 {
    let time = message.time.as_ref().expect("a message has a time");
    i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos)
}

/// The time of one status message of a sync (the first with that id), ns since the epoch.
async fn message_time(node: &NodeProcess, id: v1::StatusMessageId, sync_id: &str) -> i128 {
    let messages = node
        .messages(&[id], sync_id)
        .await
        .expect("status messages");
    let message = messages
        .first()
        .unwrap_or_else(|| panic!("{}: sync {sync_id} raised no {id:?}", node.site_code));
    nanos(message)
}

fn seconds(nanos: i128) -> f64 {
    nanos as f64 / 1e9
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The node's status once it is not syncing and has synced. Fails the benchmark with the
/// reason if that last sync failed.
async fn wait_sync_over(node: &NodeProcess, what: &str) -> v1::SiteStatus {
    let status = node
        .wait_status(what, PATIENCE, |s| {
            s.site
                .as_ref()
                .is_some_and(|site| site.current_sync.is_none() && site.last_sync.is_some())
        })
        .await
        .expect("the sync ends");
    let run = status
        .site
        .as_ref()
        .and_then(|s| s.last_sync.as_ref())
        .expect("a last sync");
    assert_eq!(
        run.result(),
        v1::SyncResult::Succeeded,
        "{}: {what} failed: {}\n{}",
        node.site_code,
        run.failure_reason,
        node.log_tail(40)
    );
    status
}

/// A sync's times from its own status messages, s: (6704 → 6705, 6701 → 6702).
async fn sync_times(node: &NodeProcess, sync_id: &str) -> (f64, f64) {
    let started = message_time(node, v1::StatusMessageId::SyncStarted, sync_id).await;
    let phase1 = message_time(node, v1::StatusMessageId::SyncUpdateServer, sync_id).await;
    let phase2 = message_time(node, v1::StatusMessageId::SyncSiteDatabase, sync_id).await;
    let done = message_time(node, v1::StatusMessageId::SyncDone, sync_id).await;
    (seconds(phase2 - phase1), seconds(done - started))
}

/// What one first sync measured.
#[derive(Debug, Clone)]
struct Run {
    source: Source,
    code: String,
    /// Revisions and updates the update-server store holds after the sync.
    revisions: u64,
    updates: u64,
    digest: Option<v1::CatalogDigest>,
    /// 6704 → 6705, s.
    phase1: f64,
    /// 6701 → 6702, s.
    whole: f64,
    steps: Steps,
    /// The node's CPU time, from its start to the end of the sync, s.
    node_cpu: f64,
    /// This process's CPU time over the run (start to the end of the sync), s.
    harness_cpu: f64,
    /// The CPU time other processes of the machine took over the run, s.
    others_cpu: f64,
    /// GetUpdateData requests the fake server received during the run.
    update_data_requests: u64,
    retries: usize,
    skipped: u64,
    peak_mib: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.revisions as f64 / self.phase1
    }
}

/// A fresh top site on `source` runs its first sync; it is stopped afterwards, and its data
/// removed unless `keep`.
async fn first_sync(
    hierarchy: &mut Hierarchy,
    source: Source,
    code: &str,
    server: &FakeWsus,
    keep: bool,
) -> Run {
    server.reset_counters();
    let machine_before = machine_busy_seconds();
    let harness_before = cpu_seconds("self");
    match source {
        Source::Directory => hierarchy.start_top(code).await,
        Source::Wsus => hierarchy.start_top_wsus(code, &server.url()).await,
    }
    .expect("start the top site");
    let node = hierarchy.node(code);
    let status = wait_sync_over(node, "its first sync").await;
    let harness_cpu = cpu_seconds("self") - harness_before;
    let machine = machine_busy_seconds() - machine_before;
    let site = status.site.expect("a site");
    let run = site.last_sync.expect("a last sync");
    let store = site.update_server.expect("an update server");
    let (phase1, whole) = sync_times(node, &run.sync_id).await;
    let pid = node_pid(node);
    let node_cpu = cpu_seconds(&pid);
    let measured = Run {
        source,
        code: code.to_owned(),
        revisions: store.revision_count,
        updates: store.update_count,
        digest: store.digest,
        phase1,
        whole,
        steps: Steps::from_log(&node.log_path, source),
        node_cpu,
        harness_cpu,
        others_cpu: (machine - node_cpu - harness_cpu).max(0.0),
        update_data_requests: server.requests(Operation::GetUpdateData),
        retries: retries_in_log(&node.log_path),
        skipped: run.counts.map_or(0, |c| c.skipped_documents),
        peak_mib: peak_mib(&pid),
    };
    let node = hierarchy.node_mut(code);
    node.stop().await;
    if !keep {
        let _ = std::fs::remove_dir_all(&node.data_dir);
    }
    measured
}

fn print_header() {
    println!(
        "{:<5} {:<10} {:<5} {:>10} {:>8} {:>14} {:>12} {:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>8} {:>11}",
        "pair",
        "upstream",
        "node",
        "revisions",
        "updates",
        "6704→6705 (s)",
        "revisions/s",
        "6701→6702 (s)",
        "scan (s)",
        "select",
        "store",
        "node CPU",
        "bench CPU",
        "others CPU",
        "GetUD",
        "retries",
        "VmHWM (MiB)"
    );
}

fn print_run(pair: usize, run: &Run) {
    println!(
        "{pair:<5} {:<10} {:<5} {:>10} {:>8} {:>14.2} {:>12.0} {:>14.2} {:>9} {:>9} {:>9} {:>9.1} {:>9.1} {:>10.1} {:>6} {:>8} {:>11.1}",
        run.source.name(),
        run.code,
        run.revisions,
        run.updates,
        run.phase1,
        run.rate(),
        run.whole,
        optional(run.steps.scan(), 2),
        optional(run.steps.select(), 2),
        optional(run.steps.store(), 2),
        run.node_cpu,
        run.harness_cpu,
        run.others_cpu,
        run.update_data_requests,
        run.retries,
        run.peak_mib,
    );
}

async fn run() {
    let revisions = env_usize("SITESYNC_BENCH_REVISIONS").unwrap_or(100_000);
    let pairs = env_usize("SITESYNC_BENCH_PAIRS").unwrap_or(3).max(1);
    // Built (release) before anything is timed.
    let started = Instant::now();
    let binary = sitesync_tests::cluster::node_binary();
    println!(
        "node binary: {} ({:.1?})",
        binary.display(),
        started.elapsed()
    );
    println!();
    println!(
        "a top site's first sync of a catalog of {revisions} documents from an upstream WSUS against a catalog directory, {pairs} pair(s) of runs"
    );

    let mut hierarchy = Hierarchy::new().expect("temporary directory");
    hierarchy.set_log_lines_on_failure(40);
    // Loopback goes straight to the fake server whatever proxy the environment names.
    hierarchy.set_env("NO_PROXY", "127.0.0.1,localhost");
    hierarchy.set_env("no_proxy", "127.0.0.1,localhost");
    let spec = CatalogSpec::new(revisions, CatalogSpec::DEFAULT_SEED);
    let started = Instant::now();
    let summary = write_catalog(hierarchy.catalog(), &spec, |_| {}).expect("write the catalog");
    println!(
        "catalog: {} documents, {:.1} MB (written in {:.1?})",
        summary.documents,
        summary.bytes as f64 / 1e6,
        started.elapsed()
    );
    let options = FakeWsusOptions {
        compress_above: env_usize("SITESYNC_BENCH_WSUS_COMPRESS_ABOVE")
            .unwrap_or(FakeWsusOptions::default().compress_above),
        ..FakeWsusOptions::default()
    };
    let started = Instant::now();
    let server = FakeWsus::start(hierarchy.catalog(), options.clone())
        .await
        .expect("start the fake upstream WSUS");
    println!(
        "fake upstream WSUS at {} ({} revisions per GetUpdateData, compressed above {} bytes; scanned the catalog in {:.1?})",
        server.url(),
        options.max_updates_per_request,
        options.compress_above,
        started.elapsed()
    );
    // Cabinets built before any timing, as a WSUS serves the ones it stored: answers then
    // cost this process (which shares the cores with the node) little more than copying.
    let started = Instant::now();
    let built = server.precompress().await.expect("precompress the blobs");
    println!(
        "fake upstream WSUS built {built} compressed blobs in {:.1?}",
        started.elapsed()
    );

    // Part 1: first syncs, in turns.
    println!();
    print_header();
    let (mut directory, mut wsus) = (Vec::new(), Vec::new());
    for pair in 1..=pairs {
        let mut order = [Source::Directory, Source::Wsus];
        // Directory first, then WSUS first: drift over the run favours neither.
        if pair.is_multiple_of(2) {
            order.reverse();
        }
        for source in order {
            let code = match source {
                Source::Directory => format!("D{pair:02}"),
                Source::Wsus => format!("W{pair:02}"),
            };
            let run = first_sync(&mut hierarchy, source, &code, &server, pair == pairs).await;
            print_run(pair, &run);
            match source {
                Source::Directory => directory.push(run),
                Source::Wsus => wsus.push(run),
            }
        }
    }
    println!(
        "(scan / select / store: phase 1's steps from the node's log, s; CPU, s of one core, over the run: the node's, this process's (for a WSUS run mostly the fake server), and the rest of the machine's; GetUD: GetUpdateData requests served; retries: requests the node tried again)"
    );
    notes(&directory, &wsus);

    let medians =
        |runs: &[Run], value: fn(&Run) -> f64| median(&runs.iter().map(value).collect::<Vec<_>>());
    let (d_rate, w_rate) = (medians(&directory, Run::rate), medians(&wsus, Run::rate));
    let (d_phase1, w_phase1) = (
        medians(&directory, |r| r.phase1),
        medians(&wsus, |r| r.phase1),
    );
    let (d_whole, w_whole) = (
        medians(&directory, |r| r.whole),
        medians(&wsus, |r| r.whole),
    );
    println!();
    println!(
        "median directory: phase 1 {d_phase1:.2} s, {d_rate:.0} revisions/s; whole sync {d_whole:.2} s; node CPU {:.1} s",
        medians(&directory, |r| r.node_cpu)
    );
    println!(
        "median wsus:      phase 1 {w_phase1:.2} s, {w_rate:.0} revisions/s; whole sync {w_whole:.2} s; node CPU {:.1} s, bench CPU {:.1} s",
        medians(&wsus, |r| r.node_cpu),
        medians(&wsus, |r| r.harness_cpu)
    );
    let pair_ratios = directory
        .iter()
        .zip(&wsus)
        .map(|(d, w)| format!("{:.2}", w.rate() / d.rate()))
        .collect::<Vec<_>>()
        .join(", ");
    println!();
    println!(
        "wsus ÷ directory, phase-1 revisions/s (medians) = {:.2} (target >= {RATE_TARGET:.2}): {}",
        w_rate / d_rate,
        verdict(w_rate / d_rate >= RATE_TARGET)
    );
    println!("  per pair: {pair_ratios}");
    println!(
        "  phase-1 time, directory ÷ wsus (the same catalog, whatever each holds) = {:.2}; whole sync = {:.2}",
        d_phase1 / w_phase1,
        d_whole / w_whole
    );
    let highest = |runs: &[Run]| runs.iter().map(|r| r.peak_mib).fold(0.0, f64::max);
    let peaks = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("{} {:.1}", r.code, r.peak_mib))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "peak memory (VmHWM) of the wsus nodes: {} MiB; highest {:.1} MiB (target <= {MEMORY_TARGET_MIB:.0} MiB): {}",
        peaks(&wsus),
        highest(&wsus),
        verdict(highest(&wsus) <= MEMORY_TARGET_MIB)
    );
    println!(
        "  directory nodes: {} MiB; highest {:.1} MiB: {}",
        peaks(&directory),
        highest(&directory),
        verdict(highest(&directory) <= MEMORY_TARGET_MIB)
    );

    // Part 2: a manual sync after 100 changes, on the last pair's nodes.
    let last_wsus = wsus.last().expect("a wsus run").clone();
    let last_directory = directory.last().expect("a directory run").clone();
    after_changes(&mut hierarchy, &spec, &server, &last_wsus, &last_directory).await;

    println!();
    println!(
        "this process (harness and fake server): peak memory {:.1} MiB",
        peak_mib("self")
    );
    for code in [&last_wsus.code, &last_directory.code] {
        hierarchy.node_mut(code).stop().await;
    }
    server.shutdown().await;
    if std::env::var_os("SITESYNC_BENCH_KEEP").is_some() {
        println!("logs kept in {}", hierarchy.dir().display());
        hierarchy.keep_dir();
    }
}

/// Anything unexpected across the runs: differing stores, retries, skipped documents.
fn notes(directory: &[Run], wsus: &[Run]) {
    for runs in [directory, wsus] {
        if runs.iter().any(|r| r.digest != runs[0].digest) {
            println!(
                "note: the {} nodes' update-server digests differ between runs",
                runs[0].source.name()
            );
        }
    }
    if let (Some(d), Some(w)) = (directory.first(), wsus.first()) {
        if d.updates != w.updates {
            println!(
                "note: the directory nodes hold {} updates, the wsus nodes {}",
                d.updates, w.updates
            );
        }
        if d.revisions != w.revisions {
            println!(
                "note: the directory nodes hold {} revisions (every revision file), the wsus nodes {} (the highest revision of each update, as a WSUS lists them)",
                d.revisions, w.revisions
            );
        }
    }
    for run in directory.iter().chain(wsus) {
        if run.retries > 0 || run.skipped > 0 {
            println!(
                "note: {}: {} retried requests, {} skipped documents (see its log)",
                run.code, run.retries, run.skipped
            );
        }
    }
}

/// A sync run by hand, measured.
struct ByHand {
    phase1: f64,
    whole: f64,
    wall: f64,
    counts: v1::SyncCounts,
    steps: Steps,
}

/// Runs a sync of `kind` at `code` and measures it.
async fn sync_by_hand(
    hierarchy: &Hierarchy,
    code: &str,
    source: Source,
    kind: v1::SyncKind,
) -> ByHand {
    let node = hierarchy.node(code);
    let started = Instant::now();
    let sync_id = node.run_sync(kind).await.expect("RunSync");
    let end = node.sync_finished(&sync_id, PATIENCE).await.expect("ends");
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncDone,
        "{code}: {}",
        end.text
    );
    let status = wait_sync_over(node, "a sync by hand").await;
    let run = status.site.and_then(|s| s.last_sync).expect("a last sync");
    assert_eq!(run.sync_id, sync_id, "{code}: another sync ran");
    let (phase1, whole) = sync_times(node, &sync_id).await;
    ByHand {
        phase1,
        whole,
        wall,
        counts: run.counts.unwrap_or_default(),
        steps: Steps::from_log(&node.log_path, source),
    }
}

fn print_by_hand(what: &str, first: &Run, by_hand: &ByHand) {
    let c = &by_hand.counts;
    println!(
        "{what}: 6701→6702 {:.3} s ({:.2}% of its first sync's {:.2} s), 6704→6705 {:.3} s ({:.2}% of {:.2} s); scan {} s, select {} s, store {} s; call to 6702 seen {:.2} s",
        by_hand.whole,
        100.0 * by_hand.whole / first.whole,
        first.whole,
        by_hand.phase1,
        100.0 * by_hand.phase1 / first.phase1,
        first.phase1,
        optional(by_hand.steps.scan(), 3),
        optional(by_hand.steps.select(), 3),
        optional(by_hand.steps.store(), 3),
        by_hand.wall,
    );
    println!(
        "  update server: {} new, {} changed, {} expired, {} deleted, {} unchanged, {} skipped",
        c.new, c.changed, c.expired, c.deleted, c.unchanged, c.skipped_documents
    );
}

/// Part 2: 100 changes upstream, then a manual sync at the WSUS node (and, for reference, a
/// full sync there and a manual sync at the directory node).
async fn after_changes(
    hierarchy: &mut Hierarchy,
    spec: &CatalogSpec,
    server: &FakeWsus,
    wsus: &Run,
    directory: &Run,
) {
    println!();
    println!(
        "after {} changes ({CHANGES_PER_KIND} new updates, new revisions, expirations and deletions each):",
        4 * CHANGES_PER_KIND
    );
    for run in [wsus, directory] {
        let node = hierarchy.node_mut(&run.code);
        node.restart().await.expect("restart");
        // A restarted top site holds its last sync and runs none until its schedule is due.
        wait_sync_over(node, "the restart").await;
    }
    let changes = CatalogChanges::derive(spec, CHANGES_PER_KIND, 7);
    changes
        .apply_to_dir(hierarchy.catalog())
        .expect("apply the changes");
    let started = Instant::now();
    let scan = server.reload().await.expect("rescan the catalog");
    server
        .precompress()
        .await
        .expect("precompress the changed blobs");
    println!(
        "fake server rescanned in {:.1?}: generation {}, {} revisions, {} new or changed, {} removed",
        started.elapsed(),
        scan.generation,
        scan.revisions,
        scan.new_or_changed,
        scan.removed
    );

    let manual = sync_by_hand(hierarchy, &wsus.code, Source::Wsus, v1::SyncKind::Manual).await;
    print_by_hand(&format!("wsus manual sync ({})", wsus.code), wsus, &manual);
    let fraction = manual.whole / wsus.whole;
    println!(
        "  manual sync after 100 changes ÷ first sync (6701→6702) = {:.2}% (reference: top_site_sync's <= {:.0}% for a directory's sync after 100 changes): {}",
        100.0 * fraction,
        100.0 * AFTER_CHANGES_TARGET,
        verdict(fraction <= AFTER_CHANGES_TARGET)
    );
    let full = sync_by_hand(hierarchy, &wsus.code, Source::Wsus, v1::SyncKind::Full).await;
    print_by_hand(
        &format!("wsus full sync after it ({}, reference)", wsus.code),
        wsus,
        &full,
    );
    let reference = sync_by_hand(
        hierarchy,
        &directory.code,
        Source::Directory,
        v1::SyncKind::Manual,
    )
    .await;
    print_by_hand(
        &format!("directory manual sync ({}, reference)", directory.code),
        directory,
        &reference,
    );
}
