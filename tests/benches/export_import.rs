//! Export and import (S12) between real `sitesync-node` processes (release builds) on
//! loopback: is a disconnected node's import of an export file at least as fast as a
//! connected node's pull of the same catalog, in bounded memory?
//!
//! ```sh
//! cargo bench -p sitesync-tests --bench export_import
//! # quick: a smaller catalog, one pair of turns
//! SITESYNC_BENCH_REVISIONS=3000 SITESYNC_BENCH_PAIRS=1 cargo bench -p sitesync-tests --bench export_import
//! ```
//!
//! A top site `CEN` syncs a generated catalog of 100,000 revisions
//! (`SITESYNC_BENCH_REVISIONS`) from its upstream directory. Then:
//!
//! - **Export.** A full file is exported from `CEN` (`Admin.ExportCatalog`): the wall time
//!   from the call to the file written and synced to disk, its size, MB/s, and its size
//!   against the raw documents (the generated XML files in the catalog directory).
//! - **Pull and import, in turns** (`SITESYNC_BENCH_PAIRS` pairs, 3 by default, in the order
//!   pull, import, import, pull, pull, import, ... so drift over the run favours neither):
//!   - *pull*: a fresh internet-facing node under `CEN` syncs its update server from it
//!     when it registers. Its sync that brought the catalog is timed from its 6704 to its
//!     6702.
//!   - *import*: a fresh node started with `--upstream import` (role internet) imports the
//!     file (`Admin.ImportCatalog`, the file streamed from disk). The import runs as its
//!     sync (trigger IMPORT), timed from its 6704 to its 6702 like the pull; the wall time of
//!     the whole call (sending the file, the node spooling and verifying it, the sync) is
//!     given as well.
//!
//!   Times in the nodes are the status messages' own timestamps (every node on this
//!   machine's clock), so polling does not add to them. Each node is stopped after its turn
//!   and its data removed.
//! - **Memory.** The peak resident memory (VmHWM) of each measured node, read right before
//!   it stops, and `CEN`'s before the export (after its own sync) and after it, against the
//!   256 MiB target.
//!
//! Every turn is printed, then the medians and the ratio import ÷ pull (target ≥ 1.0).
//! Nodes log to files in a temporary directory; set `SITESYNC_BENCH_KEEP=1` to keep it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, Role};
use sitesync_tests::measure::{median, peak_mib};

/// How long any one wait may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(1_800);
/// The peak-memory target of one node, MiB.
const MEMORY_TARGET_MIB: f64 = 256.0;

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

fn settled(status: &v1::SiteStatus) -> bool {
    let site = status.site.as_ref();
    site.is_some_and(|s| {
        s.current_sync.is_none()
            && s.last_sync
                .as_ref()
                .is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
    })
}

fn update_server(status: &v1::SiteStatus) -> v1::StoreInfo {
    status
        .site
        .as_ref()
        .and_then(|s| s.update_server.clone())
        .expect("a status has an update server")
}

fn digest(info: &v1::StoreInfo) -> Option<v1::CatalogDigest> {
    info.digest.clone()
}

/// When a status message was raised, ns since the epoch.
fn nanos(message: &v1::StatusMessage) -> i128 {
    let time = message.time.as_ref().expect("a message has a time");
    i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos)
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as i128
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

fn node_peak_mib(node: &NodeProcess) -> f64 {
    peak_mib(node.pid().expect("the node runs"))
}

/// The total size of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read the catalog directory")
        .map(|entry| entry.expect("an entry").metadata().expect("metadata").len())
        .sum()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// What one turn measured.
#[derive(Debug, Clone)]
struct Turn {
    code: String,
    revisions: u64,
    /// The node's sync, 6704 → 6702, s.
    sync: f64,
    /// Import only: the whole `Admin.ImportCatalog` call, s.
    wall: Option<f64>,
    /// Import only: from the call to the sync's 6701 (sending, spooling, verifying), s.
    before_sync: Option<f64>,
    peak_mib: f64,
    /// Anything unexpected, printed after the table.
    note: Option<String>,
}

impl Turn {
    fn rate(&self) -> f64 {
        self.revisions as f64 / self.sync
    }

    fn wall_rate(&self) -> Option<f64> {
        self.wall.map(|w| self.revisions as f64 / w)
    }
}

/// Stops a measured node and removes its data (its log stays).
async fn retire(hierarchy: &mut Hierarchy, code: &str) {
    let node = hierarchy.node_mut(code);
    node.stop().await;
    let _ = std::fs::remove_dir_all(&node.data_dir);
}

/// A fresh internet-facing node under `CEN` pulls the catalog when it registers.
async fn pull_turn(hierarchy: &mut Hierarchy, code: &str, reference: &v1::StoreInfo) -> Turn {
    hierarchy
        .start_internet(code, "CEN")
        .await
        .expect("start the internet-facing node");
    let node = hierarchy.node(code);
    let wanted = digest(reference);
    let status = node
        .wait_status("CEN's update-server catalog", PATIENCE, |s| {
            settled(s) && digest(&update_server(s)) == wanted
        })
        .await
        .expect("the internet-facing node pulls the catalog");
    let held = update_server(&status).revision_count;
    // The sync that brought the catalog: the one that added the most (registration may
    // start a second, empty one).
    let done = node
        .messages(&[v1::StatusMessageId::SyncDone], "")
        .await
        .expect("status messages");
    // What a sync wrote to the update server: a snapshot's later revisions count as changed.
    let added = |m: &v1::StatusMessage| -> u64 {
        ["new", "changed", "expired"]
            .iter()
            .filter_map(|kind| m.properties.get(&format!("update_server.{kind}")))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    };
    let pulled = done
        .iter()
        .max_by_key(|m| added(m))
        .expect("the node synced");
    let note = (added(pulled) != held || done.len() > 1).then(|| {
        format!(
            "{code}: {} successful syncs; timed: sync {}, which wrote {} of the {held} revisions it holds",
            done.len(),
            pulled.sync_id,
            added(pulled)
        )
    });
    let id = pulled.sync_id.clone();
    let started = message_time(node, v1::StatusMessageId::SyncUpdateServer, &id).await;
    let finished = nanos(pulled);
    let peak_mib = node_peak_mib(node);
    retire(hierarchy, code).await;
    Turn {
        code: code.to_owned(),
        revisions: held,
        sync: seconds(finished - started),
        wall: None,
        before_sync: None,
        peak_mib,
        note,
    }
}

/// A fresh node whose upstream is export files imports `file`.
async fn import_turn(
    hierarchy: &mut Hierarchy,
    code: &str,
    file: &Path,
    reference: &v1::StoreInfo,
) -> Turn {
    hierarchy
        .start_importer(code, Role::Internet)
        .await
        .expect("start the importer");
    let node = hierarchy.node(code);
    let called = now_nanos();
    let started = Instant::now();
    let imported = node.import(file, false).await.expect("the import");
    let wall = started.elapsed().as_secs_f64();
    assert!(!imported.already_held, "{code} held the file already");
    let store = imported.update_server.expect("the update server after");
    assert_eq!(digest(&store), digest(reference), "{code}: digests differ");
    let id = imported.sync_id.to_string();
    let sync_started = message_time(node, v1::StatusMessageId::SyncStarted, &id).await;
    let phase = message_time(node, v1::StatusMessageId::SyncUpdateServer, &id).await;
    let done = message_time(node, v1::StatusMessageId::SyncDone, &id).await;
    let status = node.status().await.expect("status");
    let run = status.site.and_then(|s| s.last_sync).expect("a last sync");
    assert_eq!(run.trigger(), v1::SyncTrigger::Import, "{code}");
    let peak_mib = node_peak_mib(node);
    retire(hierarchy, code).await;
    Turn {
        code: code.to_owned(),
        revisions: store.revision_count,
        sync: seconds(done - phase),
        wall: Some(wall),
        before_sync: Some(seconds(sync_started - called)),
        peak_mib,
        note: None,
    }
}

fn print_turn(pair: usize, kind: &str, turn: &Turn) {
    let optional = |value: Option<f64>, digits: usize| {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    println!(
        "{pair:<5} {kind:<7} {:<5} {:>10} {:>14.2} {:>12.0} {:>16} {:>10} {:>14} {:>11.1}",
        turn.code,
        turn.revisions,
        turn.sync,
        turn.rate(),
        optional(turn.before_sync, 2),
        optional(turn.wall, 2),
        optional(turn.wall_rate(), 0),
        turn.peak_mib,
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
        "export/import of a full file of {revisions} revisions against a pull, {pairs} pair(s) of turns"
    );

    let mut hierarchy = Hierarchy::new().expect("temporary directory");
    hierarchy.set_log_lines_on_failure(40);
    let spec = CatalogSpec::new(revisions, CatalogSpec::DEFAULT_SEED);
    let started = Instant::now();
    let summary = write_catalog(hierarchy.catalog(), &spec, |_| {}).expect("write the catalog");
    let raw_bytes = dir_bytes(hierarchy.catalog());
    println!(
        "catalog: {} documents, {:.1} MB of XML in the catalog directory (written in {:.1?})",
        summary.documents,
        mb(raw_bytes),
        started.elapsed()
    );

    let started = Instant::now();
    let top = hierarchy.start_top("CEN").await.expect("start CEN");
    let top_status = top
        .wait_status("first sync", PATIENCE, settled)
        .await
        .expect("the top site syncs");
    let reference = update_server(&top_status);
    println!(
        "CEN synced {} revisions in {:.1?}",
        reference.revision_count,
        started.elapsed()
    );

    // The export.
    let top = hierarchy.node("CEN");
    let cen_before = node_peak_mib(top);
    let file = hierarchy.dir().join("full.ssx");
    let started = Instant::now();
    let header = top.export(&file, None).await.expect("the export");
    let export_time = started.elapsed().as_secs_f64();
    let cen_after = node_peak_mib(top);
    let file_bytes = std::fs::metadata(&file).expect("the file").len();
    assert_eq!(header.kind(), v1::ArchiveKind::Full);
    assert_eq!(header.revision_count, reference.revision_count);
    println!();
    println!(
        "export (CEN, full): {} revisions, {:.3} s, {:.1} MB, {:.1} MB/s, {:.0} revisions/s",
        header.revision_count,
        export_time,
        mb(file_bytes),
        mb(file_bytes) / export_time,
        header.revision_count as f64 / export_time,
    );
    println!(
        "file / raw documents: {:.1} MB / {:.1} MB = {:.1}%",
        mb(file_bytes),
        mb(raw_bytes),
        100.0 * file_bytes as f64 / raw_bytes as f64
    );

    // The turns.
    println!();
    println!(
        "{:<5} {:<7} {:<5} {:>10} {:>14} {:>12} {:>16} {:>10} {:>14} {:>11}",
        "pair",
        "turn",
        "node",
        "revisions",
        "6704→6702 (s)",
        "revisions/s",
        "call→6701 (s)",
        "wall (s)",
        "wall rev/s",
        "VmHWM (MiB)"
    );
    let (mut pulls, mut imports) = (Vec::new(), Vec::new());
    for pair in 1..=pairs {
        let mut order = ["pull", "import"];
        // Pull first, then import first: drift over the run favours neither.
        if pair.is_multiple_of(2) {
            order.reverse();
        }
        for kind in order {
            let turn = if kind == "pull" {
                let code = format!("P{pair:02}");
                pull_turn(&mut hierarchy, &code, &reference).await
            } else {
                let code = format!("I{pair:02}");
                import_turn(&mut hierarchy, &code, &file, &reference).await
            };
            print_turn(pair, kind, &turn);
            if kind == "pull" {
                pulls.push(turn);
            } else {
                imports.push(turn);
            }
        }
    }
    let cen_end = node_peak_mib(hierarchy.node("CEN"));
    for note in pulls.iter().chain(&imports).filter_map(|t| t.note.as_ref()) {
        println!("note: {note}");
    }

    let medians = |turns: &[Turn], value: fn(&Turn) -> f64| {
        median(&turns.iter().map(value).collect::<Vec<_>>())
    };
    let pull_rate = medians(&pulls, Turn::rate);
    let pull_sync = medians(&pulls, |t| t.sync);
    let import_rate = medians(&imports, Turn::rate);
    let import_sync = medians(&imports, |t| t.sync);
    let import_wall = medians(&imports, |t| t.wall.unwrap_or(f64::NAN));
    let import_wall_rate = medians(&imports, |t| t.wall_rate().unwrap_or(f64::NAN));
    let import_before = medians(&imports, |t| t.before_sync.unwrap_or(f64::NAN));
    println!(
        "(call→6701: sending the file, the node spooling and verifying it; wall: the whole import call)"
    );
    println!();
    println!("median pull:   sync {pull_sync:.2} s, {pull_rate:.0} revisions/s (6704→6702)");
    println!(
        "median import: sync {import_sync:.2} s, {import_rate:.0} revisions/s (6704→6702); call→6701 {import_before:.2} s; whole call {import_wall:.2} s, {import_wall_rate:.0} revisions/s, {:.1} MB/s of file",
        mb(file_bytes) / import_wall
    );
    println!(
        "export: {export_time:.3} s, {:.1} MB/s of file",
        mb(file_bytes) / export_time
    );
    println!();
    println!(
        "import revisions/s ÷ pull revisions/s = {:.2} (6704→6702 both) (target >= 1.0)",
        import_rate / pull_rate
    );
    println!(
        "import (whole call) revisions/s ÷ pull (6704→6702) revisions/s = {:.2}",
        import_wall_rate / pull_rate
    );
    println!();
    println!("peak memory (VmHWM), target <= {MEMORY_TARGET_MIB:.0} MiB:");
    println!("  CEN after its sync, before the export: {cen_before:.1} MiB");
    println!(
        "  CEN after the export:                  {cen_after:.1} MiB (+{:.1} MiB)",
        cen_after - cen_before
    );
    println!("  CEN at the end (after serving the pulls): {cen_end:.1} MiB");
    let peaks = |turns: &[Turn]| {
        turns
            .iter()
            .map(|t| format!("{} {:.1}", t.code, t.peak_mib))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let max = |turns: &[Turn]| turns.iter().map(|t| t.peak_mib).fold(0.0, f64::max);
    println!(
        "  pulling nodes:   {} MiB (max {:.1})",
        peaks(&pulls),
        max(&pulls)
    );
    println!(
        "  importing nodes: {} MiB (max {:.1})",
        peaks(&imports),
        max(&imports)
    );
    let worst = [cen_before, cen_after, cen_end, max(&pulls), max(&imports)]
        .into_iter()
        .fold(0.0, f64::max);
    println!(
        "  highest: {worst:.1} MiB = {:.0}% of the target",
        100.0 * worst / MEMORY_TARGET_MIB
    );

    if std::env::var_os("SITESYNC_BENCH_KEEP").is_some() {
        println!("logs kept in {}", hierarchy.dir().display());
        hierarchy.keep_dir();
    }
}
