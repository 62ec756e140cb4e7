//! Store ingest against raw sled, measured in the same run.
//!
//! Generates a catalog in memory (100,000 revisions by default; `SITESYNC_BENCH_REVISIONS`
//! changes it), then, in alternating rounds:
//! - **raw sled**: the documents' bytes inserted under 20-byte keys, one `apply_batch` and
//!   one flush per 1,000 documents — the least a durable store of these bytes can do;
//! - **store ingest**: the same documents, parsed (timed separately), applied to the
//!   update-server store in batches of 1,000, each flushed before it returns.
//!
//! It prints revisions/s, MB/s (document bytes), the ratio of store ingest to raw sled, and
//! the peak resident memory of each phase. Run with:
//!
//! ```sh
//! cargo bench -p sitesync-node --bench store_ingest
//! ```

mod common;

use common::{mib, reset_peak, resident_kib};
use std::time::{Duration, Instant};

use sitesync_metadata::generate::CatalogSpec;
use sitesync_metadata::{CatalogDigest, ParseLimits, UpdateRevision, parse_update};
use sitesync_node::store::backend::open_sled;
use sitesync_node::store::{CatalogChange, DEFAULT_CACHE_BYTES, NodeDatabase};

// The allocator the node binary uses, so the figures are the product's.
sitesync_node::node_allocator!();

const BATCH: usize = 1_000;
const ROUNDS: usize = 2;

struct Document {
    key: [u8; 20],
    xml: Vec<u8>,
}

fn main() {
    let revisions: usize = std::env::var("SITESYNC_BENCH_REVISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);

    let started = Instant::now();
    let documents: Vec<Document> = CatalogSpec::new(revisions, CatalogSpec::DEFAULT_SEED)
        .documents()
        .map(|d| {
            let mut key = [0u8; 20];
            key[..16].copy_from_slice(d.id.update_id.as_bytes());
            key[16..].copy_from_slice(&d.id.revision.to_be_bytes());
            Document { key, xml: d.xml }
        })
        .collect();
    let bytes: usize = documents.iter().map(|d| d.xml.len()).sum();
    println!(
        "catalog: {} revisions, {:.1} MB of documents, generated in {:.2?}; resident after generation {}",
        documents.len(),
        mb(bytes),
        started.elapsed(),
        mib(resident_kib().0),
    );

    let mut raw_best = Duration::MAX;
    let mut store_best = Duration::MAX;
    let mut parse_best = Duration::MAX;
    let (mut raw_peak, mut store_peak) = (0, 0);
    for round in 1..=ROUNDS {
        reset_peak();
        let raw = raw_sled(&documents);
        raw_peak = raw_peak.max(resident_kib().1);
        reset_peak();
        let (parse, store) = store_ingest(&documents);
        store_peak = store_peak.max(resident_kib().1);
        println!(
            "round {round}: raw sled {raw:.2?}, store ingest {store:.2?} (+ parse {parse:.2?})"
        );
        raw_best = raw_best.min(raw);
        store_best = store_best.min(store);
        parse_best = parse_best.min(parse);
    }

    let n = documents.len();
    println!();
    println!(
        "{:<28} {:>12} {:>10} {:>14}",
        "phase (best of rounds)", "revisions/s", "MB/s", "peak RSS"
    );
    row("raw sled batch insert", n, bytes, raw_best, Some(raw_peak));
    row("store ingest", n, bytes, store_best, Some(store_peak));
    row("parse (not in ingest)", n, bytes, parse_best, None);
    row(
        "parse + store ingest",
        n,
        bytes,
        parse_best + store_best,
        None,
    );
    println!();
    println!(
        "store ingest / raw sled = {:.2} (target >= 0.50)",
        raw_best.as_secs_f64() / store_best.as_secs_f64()
    );
    println!(
        "parse + store ingest / raw sled = {:.2}",
        raw_best.as_secs_f64() / (parse_best + store_best).as_secs_f64()
    );
}

fn raw_sled(documents: &[Document]) -> Duration {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = open_sled(dir.path(), DEFAULT_CACHE_BYTES).expect("open sled");
    let tree = db.open_tree("raw").expect("open tree");
    let started = Instant::now();
    for chunk in documents.chunks(BATCH) {
        let mut batch = sled::Batch::default();
        for d in chunk {
            batch.insert(&d.key[..], d.xml.as_slice());
        }
        tree.apply_batch(batch).expect("apply batch");
        tree.flush().expect("flush");
    }
    started.elapsed()
}

/// Returns (time spent parsing, time spent in the store).
fn store_ingest(documents: &[Document]) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).expect("open store");
    let store = db.update_server();
    let limits = ParseLimits::default();
    let (mut parse, mut ingest) = (Duration::ZERO, Duration::ZERO);
    let mut expected = CatalogDigest::EMPTY;
    for chunk in documents.chunks(BATCH) {
        let started = Instant::now();
        let parsed: Vec<UpdateRevision> = chunk
            .iter()
            .map(|d| parse_update(&d.xml, &limits).expect("generated documents parse"))
            .collect();
        parse += started.elapsed();
        for revision in &parsed {
            expected.add(revision.id, revision.content_hash());
        }
        let changes: Vec<CatalogChange> = parsed.into_iter().map(CatalogChange::Put).collect();
        let started = Instant::now();
        store.apply(changes, &[]).expect("apply");
        ingest += started.elapsed();
    }
    assert_eq!(
        store.digest(),
        expected,
        "the store's digest must match the catalog's"
    );
    (parse, ingest)
}

fn row(name: &str, n: usize, bytes: usize, time: Duration, peak_kib: Option<u64>) {
    let secs = time.as_secs_f64();
    println!(
        "{:<28} {:>12.0} {:>10.1} {:>14}",
        name,
        n as f64 / secs,
        mb(bytes) / secs,
        peak_kib.map(mib).unwrap_or_default()
    );
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}
