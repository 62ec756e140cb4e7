//! The node's metrics, for Prometheus: served in its text format at `/metrics` on a plaintext
//! listener of their own (`--metrics-listen`, `[metrics] listen`), off unless configured.
//!
//! Two kinds of figures, kept apart by how they are made:
//! - Events, counted as they happen into the families of [`Metrics`], which the node's
//!   shared state holds so every layer reaches them: [`sync`] (sync durations by phase,
//!   syncs, revisions applied, status messages; the sync manager records) and [`server`]
//!   (gRPC requests and their latency, TLS handshake failures, authorization refusals; the
//!   gRPC edge records).
//! - State, read at scrape time by collectors, so a figure is never older than the scrape:
//!   [`state`] (each store's size, each registered child's outbox and replication lag) and
//!   [`process`] (resident memory, CPU, open files, from `/proc`).
//!
//! [`http`] serves them. Every name is written out in full here (`sitesync_…`, and the
//! standard `process_…`), so a name in a dashboard can be found with grep.

pub mod http;
pub mod process;
pub mod server;
pub mod state;
pub mod sync;

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use self::server::ServerMetrics;
use self::sync::SyncMetrics;

/// The families the node records into, and the registry that encodes them with the
/// collectors' figures.
#[derive(Debug)]
pub struct Metrics {
    /// Collectors are registered after the node's parts exist (the hierarchy is built on the
    /// node's state), so the registry changes after it is made; a scrape holds the lock only
    /// while it encodes.
    registry: Mutex<Registry>,
    pub sync: SyncMetrics,
    pub server: ServerMetrics,
}

/// The encodings `/metrics` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what every scraper reads.
    Prometheus,
    /// OpenMetrics text, for a scraper that asks for it.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// The families of the node of site `site_code` in `role`, and the process collector.
    /// `sitesync_node_info` names the site, so dashboards can label any series of the node
    /// with its site code (`* on (instance) group_left (site) sitesync_node_info`).
    pub fn new(site_code: &str, role: &str) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "sitesync_node",
            "The node: its site code, role and version",
            Info::new(vec![
                ("site", site_code.to_owned()),
                ("role", role.to_owned()),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ]),
        );
        let sync = SyncMetrics::register(&mut registry);
        let server = ServerMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Self {
            registry: Mutex::new(registry),
            sync,
            server,
        }
    }

    /// Adds figures read at each scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.lock().register_collector(collector);
    }

    /// Everything, encoded as `format` says. Collectors read the stores, so call it off the
    /// async workers.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let registry = self.lock();
        let mut text = String::new();
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry)?,
        }
        Ok(text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}
