//! A running node's shared state: its configuration, its database, its clock, its metrics,
//! and the signal that it is stopping. Services and the sync manager hold it behind an `Arc`.

use std::future::Future;
use std::sync::Arc;

use crate::catalog_version::{self, CatalogVersions, SignedVersion};
use crate::clock::{Clock, SystemClock};
use crate::config::{NodeConfig, Role, UpstreamConfig};
use crate::metrics::Metrics;
use crate::store::{NodeDatabase, StoreError};
use sitesync_security::Transport;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct NodeState {
    pub config: NodeConfig,
    pub database: NodeDatabase,
    /// Mutual TLS (or, only when asked for, plaintext) for every connection it makes.
    pub transport: Transport,
    /// The signed catalog version this node holds (signs, at the top site); `None` with
    /// plaintext, which has no keys.
    pub catalog_versions: Option<CatalogVersions>,
    /// The sync clock: schedules, retries, runs and status messages read it (tests move it
    /// by hand).
    pub clock: Arc<dyn Clock>,
    /// The network's clock: when reports arrive and go stale, heartbeats, a node's state as
    /// it reports it. The network runs in real time whatever the sync clock says, as the
    /// hierarchy's retry timers do, so this is the system clock.
    pub network_clock: Arc<dyn Clock>,
    /// What every layer counts for `/metrics`; shared with the metrics listener, which may
    /// serve a little longer than the node.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the node stops: every background task ends with it.
    stopping: CancellationToken,
}

impl NodeState {
    pub fn new(
        config: NodeConfig,
        database: NodeDatabase,
        transport: Transport,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let catalog_versions = match &transport {
            Transport::Tls(tls) => {
                let top_site = config.role == Role::Site
                    && !matches!(config.upstream, UpstreamConfig::Parent(_));
                // Read at load already, so only a file changed since can fail here.
                let trusted = config
                    .import_trust
                    .iter()
                    .flat_map(|path| {
                        crate::config::read_trusted_cas(path).unwrap_or_else(|reason| {
                            tracing::warn!(%reason, "a CA trusted for imports is skipped");
                            Vec::new()
                        })
                    })
                    .collect();
                Some(
                    CatalogVersions::open(
                        database.space("catalog-version")?,
                        tls.clone(),
                        top_site,
                        None,
                        catalog_version::DEFAULT_VALIDITY,
                    )?
                    .trusting_imports_from(trusted),
                )
            }
            Transport::Plaintext => None,
        };
        let metrics = Arc::new(Metrics::new(
            config.site_code.as_str(),
            &config.role.to_string(),
        ));
        Ok(Self {
            config,
            database,
            transport,
            catalog_versions,
            clock,
            network_clock: Arc::new(SystemClock::new()),
            metrics,
            stopping: CancellationToken::new(),
        })
    }

    /// The signed catalog version this node holds, as it travels.
    pub fn held_catalog_version(&self) -> Option<SignedVersion> {
        self.catalog_versions.as_ref().and_then(|c| c.held_wire())
    }

    /// Runs `task` on the current runtime until it ends or the node stops.
    pub fn spawn_background(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Stops the background tasks: the sync manager's loop, registration, the outbox's
    /// delivery, status forwarding and state reports. A sync already running finishes or
    /// is redone at the next start.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }
}
