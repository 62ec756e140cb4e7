//! Helpers for sitesync's multi-process tests.
//!
//! - [`CrashWorkload`]: a deterministic sequence of store batches (generated update
//!   documents, parsed, plus deletions) that a writer process applies and a test replays
//!   into a model to know exactly what a store must hold after a crash.
//! - [`ChildGuard`]: kills a child process when a test ends, passing or failing, so no test
//!   leaves a process behind.
//! - [`cluster`]: real `sitesync-node` processes on loopback ([`cluster::Hierarchy`],
//!   [`cluster::NodeProcess`]), started, killed and restarted on the same data directory and
//!   port, and driven through the Admin client; shared by `tests/hierarchy.rs` and
//!   `benches/hierarchy.rs`.
//! - [`measure`]: peak resident memory of a process, and medians, for the benchmarks.
//! - [`metrics`]: a node's `/metrics`, scraped and parsed as Prometheus does.
//! - [`otlp`]: an OTLP trace collector the tracing tests send spans to.
//! - [`wsus_upstream`]: a fake upstream WSUS server over real HTTP or HTTPS, speaking the
//!   server-to-server protocol as the recorded exchanges show, with faults and hostile
//!   answers on demand; the crate `sitesync-wsus-fake`, which `sitesyncctl demo --wsus`
//!   runs too, under the name the tests know it by; [`highest_revisions`] is what it offers
//!   of a catalog directory.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod measure;
pub mod metrics;
pub mod otlp;
pub use sitesync_wsus_fake as wsus_upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use sitesync_metadata::generate::{CatalogGenerator, CatalogSpec};
use sitesync_metadata::{ParseLimits, RevisionId, UpdateId, parse_update};
use sitesync_node::store::CatalogChange;

/// The store metadata key under which the writer records how many batches it applied; it
/// moves in the same atomic write as the batch itself.
pub const BATCHES_APPLIED_KEY: &str = "crash-test.batches-applied";

/// Documents per batch.
const BATCH_DOCUMENTS: usize = 64;

/// Batch `i` puts the next 64 generated documents and, from batch 4 on, deletes the first
/// update that batch `i - 3` put, so the workload exercises every change kind.
#[derive(Debug)]
pub struct CrashWorkload {
    documents: CatalogGenerator,
    first_of_batch: Vec<sitesync_metadata::UpdateId>,
}

impl CrashWorkload {
    pub fn new(seed: u64) -> Self {
        Self {
            // Far more documents than any trial writes.
            documents: CatalogSpec::new(10_000_000, seed).documents(),
            first_of_batch: Vec::new(),
        }
    }

    /// The next batch, or an error if a generated document does not parse.
    pub fn next_batch(&mut self) -> anyhow::Result<Vec<CatalogChange>> {
        let mut changes = Vec::with_capacity(BATCH_DOCUMENTS + 1);
        for document in self.documents.by_ref().take(BATCH_DOCUMENTS) {
            let revision = parse_update(&document.xml, &ParseLimits::default())?;
            changes.push(CatalogChange::Put(revision));
        }
        let index = self.first_of_batch.len();
        if let Some(CatalogChange::Put(first)) = changes.first() {
            self.first_of_batch.push(first.id.update_id);
        }
        if index >= 3 {
            changes.push(CatalogChange::Delete(self.first_of_batch[index - 3]));
        }
        Ok(changes)
    }
}

/// Kills and reaps the child when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The highest revision of each update in a catalog directory of `<update id>-r<revision>.xml`
/// files: what an upstream WSUS serving it lists (other files are passed over).
pub fn highest_revisions(catalog: &Path) -> std::io::Result<BTreeSet<RevisionId>> {
    let mut highest: BTreeMap<UpdateId, u32> = BTreeMap::new();
    for entry in std::fs::read_dir(catalog)? {
        let name = entry?.file_name();
        let Some((update, revision)) = name
            .to_str()
            .and_then(|name| name.strip_suffix(".xml"))
            .and_then(|stem| stem.split_once("-r"))
            .and_then(|(guid, revision)| Some((guid.parse().ok()?, revision.parse().ok()?)))
        else {
            continue;
        };
        let entry = highest.entry(update).or_default();
        *entry = (*entry).max(revision);
    }
    Ok(highest
        .into_iter()
        .map(|(update_id, revision)| RevisionId {
            update_id,
            revision,
        })
        .collect())
}

/// A WSUS session's settings for `url` with waits short enough for tests: `attempts` tries of
/// a request, 5 ms doubling up to `max_delay`, one second in all; never through a proxy the
/// environment may name.
pub fn fast_wsus_settings(
    url: &str,
    attempts: u32,
    max_delay: Duration,
) -> sitesync_node::upstream::wsus::WsusSettings {
    use sitesync_node::upstream::wsus::{ProxySetting, RetryPolicy, WsusSettings};
    WsusSettings {
        proxy: ProxySetting::Direct,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        retry: RetryPolicy {
            attempts,
            first_delay: Duration::from_millis(5),
            max_delay,
            budget: Duration::from_secs(1),
        },
        ..WsusSettings::for_server(sitesync_wsus::ServerRoot::parse(url).unwrap())
    }
}
