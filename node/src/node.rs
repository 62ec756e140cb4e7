//! A running node's shared state: its configuration, its database, and the signal that it
//! is stopping. Services and the sync manager hold it behind an `Arc`.

use std::future::Future;
use std::time::Duration;

use sitesync_proto::v1;

use crate::catalog_version::{self, CatalogVersions};
use crate::config::{NodeConfig, Role, UpstreamConfig};
use crate::service::store_info;
use crate::store::{NodeDatabase, StoreError, StoreState};
use sitesync_security::Transport;
use sitesync_security::transport::TransportError;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[derive(Debug)]
pub struct NodeState {
    pub config: NodeConfig,
    pub database: NodeDatabase,
    /// Mutual TLS (or, only when asked for, plaintext) for every connection it makes.
    pub transport: Transport,
    /// The signed catalog version this node holds (signs, at the top site); `None` with
    /// plaintext, which has no keys.
    pub catalog_versions: Option<CatalogVersions>,
    /// Cancelled when the node stops: every background task ends with it.
    stopping: CancellationToken,
}

/// How long connecting to another node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl NodeState {
    pub fn new(
        config: NodeConfig,
        database: NodeDatabase,
        transport: Transport,
    ) -> Result<Self, StoreError> {
        let catalog_versions = match &transport {
            Transport::Tls(tls) => {
                let top_site = config.role == Role::Site
                    && !matches!(config.upstream, UpstreamConfig::Parent(_));
                Some(CatalogVersions::open(
                    database.space("catalog-version")?,
                    tls.clone(),
                    top_site,
                    None,
                    catalog_version::DEFAULT_VALIDITY,
                )?)
            }
            Transport::Plaintext => None,
        };
        Ok(Self {
            config,
            database,
            transport,
            catalog_versions,
            stopping: CancellationToken::new(),
        })
    }

    /// The signed catalog version this node holds, as carried on the wire.
    pub fn held_catalog_version(&self) -> Option<v1::SignedCatalogVersion> {
        self.catalog_versions.as_ref().and_then(|c| c.held_wire())
    }

    /// A channel to the node at `address` (`host:port`) over this node's transport, with
    /// a connect timeout and HTTP/2 keep-alive so a peer that vanished is noticed; it
    /// connects on first use. `call_timeout` bounds each call (streams set none).
    pub fn channel(
        &self,
        address: &str,
        call_timeout: Option<Duration>,
    ) -> Result<Channel, TransportError> {
        self.transport.channel(address, |endpoint| {
            let endpoint = endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            match call_timeout {
                Some(timeout) => endpoint.timeout(timeout),
                None => endpoint,
            }
        })
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

    pub fn wire_role(&self) -> v1::SiteRole {
        match self.config.role {
            Role::Site => v1::SiteRole::Site,
            Role::Internet => v1::SiteRole::Internet,
        }
    }

    /// The update-server store as downstream nodes see it now.
    pub fn catalog_info(&self) -> v1::CatalogInfo {
        self.catalog_info_at(&self.database.update_server().state())
    }

    /// The update-server store as of a given state.
    pub fn catalog_info_at(&self, state: &StoreState) -> v1::CatalogInfo {
        v1::CatalogInfo {
            site_code: self.config.site_code.to_string(),
            role: self.wire_role() as i32,
            store: Some(store_info(state)),
            catalog_version: self.held_catalog_version(),
        }
    }
}
