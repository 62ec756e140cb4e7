//! Starting a node: the one path the binary and the tests share, from a validated
//! configuration to a running sync manager and the state the services need.

use std::path::PathBuf;
use std::sync::Arc;

use sitesync_metadata::ParseLimits;

use crate::clock::Clock;
use crate::config::{NodeConfig, SecurityConfig, UpstreamConfig};
use crate::grpc::client::legacy::GrpcParentCatalog;
use crate::grpc::client::parent::GrpcParent;
use crate::grpc::client::peers::GrpcPeers;
use crate::grpc::connect;
use crate::hierarchy::peers::Peers;
use crate::hierarchy::{
    Children, Hierarchy, HierarchyError, Outbox, ReceivedRequests, StatusForwarding,
};
use crate::legacy_catalog::{LegacyCatalog, ParentLegacyCatalog};
use crate::metrics::state::StateCollector;
use crate::node::NodeState;
use crate::policy::PolicyStore;
use crate::store::{NodeDatabase, StoreError};
use crate::sync::manager::{SyncError, SyncHooks, SyncManager, UpstreamSource};
use crate::sync::status::{StatusError, StatusLog};
use crate::upstream::wsus::{Session, WsusError};
use crate::upstream::{DirectoryUpstream, UpstreamError, WsusUpstream, WsusUpstreamError};
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the sample catalog to {path}: {source}")]
    Sample {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the status messages: {0}")]
    Status(#[from] StatusError),
    #[error("cannot open the upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("cannot set up the upstream server: {0}")]
    UpstreamServer(#[from] WsusError),
    #[error("cannot open the upstream server's index: {0}")]
    UpstreamIndex(#[from] WsusUpstreamError),
    #[error("cannot start the sync manager: {0}")]
    Sync(#[from] SyncError),
    #[error("the TLS certificates: {0}")]
    Tls(#[from] sitesync_security::tls::TlsError),
    #[error("the node's own certificate authority: {0}")]
    Pki(#[from] sitesync_security::pki::PkiError),
    #[error("cannot open the hierarchy: {0}")]
    Hierarchy(#[from] HierarchyError),
    #[error("sync settings in the configuration: {key}: {reason}")]
    Settings { key: &'static str, reason: String },
}

/// A started node: its shared state and its sync manager.
#[derive(Debug, Clone)]
pub struct Started {
    pub node: Arc<NodeState>,
    pub sync: SyncManager,
    pub hierarchy: Arc<Hierarchy>,
    /// The legacy scan catalog this site builds or takes from its parent (S13).
    pub legacy: LegacyCatalog,
}

/// The transport the configuration asks for: mutual TLS with the configured certificates,
/// or with a CA the node makes for itself under `<data_dir>/pki` on first start (a top site
/// with no certificates configured), or plaintext only when asked for explicitly. The
/// certificate files are watched and reloaded on change or SIGHUP.
fn secure(config: &NodeConfig) -> Result<Transport, StartError> {
    let files = match &config.security {
        SecurityConfig::Insecure => {
            warn!(
                "gRPC is PLAINTEXT (insecure): anyone who reaches {} can call every method; use it in a lab only",
                config.listen
            );
            return Ok(Transport::Plaintext);
        }
        SecurityConfig::Tls { files, .. } => files.clone(),
        SecurityConfig::SelfProvisioned { .. } => self_provision(config)?,
    };
    let context = TlsContext::load(files)?;
    info!(identity = %context.current().identity, ca = %context.files().ca.display(), "mutual TLS");
    context.spawn_watcher(TLS_RELOAD_INTERVAL);
    Ok(Transport::Tls(context))
}

/// How often the certificate files are checked for changes.
const TLS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The operator a self-provisioned CA issues a certificate for at once.
pub const SELF_PROVISIONED_OPERATOR: &str = "admin";

/// A CA of the node's own under `<data_dir>/pki`, with this site's certificate and one for
/// the operator `admin`; made on first start, reused afterwards.
fn self_provision(config: &NodeConfig) -> Result<TlsFiles, StartError> {
    let dir = config.data_dir.join("pki");
    let site = Identity::Site(config.site_code.to_string());
    let files = TlsFiles::in_pki_dir(&dir, &site);
    if files.certificate.exists() && files.key.exists() {
        return Ok(files);
    }
    let authority = if dir.join("ca.key").exists() {
        Authority::open(&dir)?
    } else {
        Authority::init(&dir, config.site_code.as_str())?
    };
    let host = config.listen.ip().to_string();
    authority.issue(&site, &[host], DEFAULT_VALIDITY)?;
    let operator =
        Identity::operator(SELF_PROVISIONED_OPERATOR).map_err(|e| StartError::Pki(e.into()))?;
    if !authority.paths_for(&operator).0.exists() {
        authority.issue(&operator, &[], DEFAULT_VALIDITY)?;
    }
    info!(
        pki = %dir.display(),
        "no certificates were configured, so this top site made its own CA; operators use `sitesyncctl --pki {} --operator {SELF_PROVISIONED_OPERATOR}`",
        dir.display()
    );
    Ok(TlsFiles::in_pki_dir(&dir, &site))
}

/// Opens everything the configuration names and starts the sync manager on the current
/// tokio runtime. The database lives in `<data_dir>/db`; the sample catalog, when it is the
/// upstream, is written to `<data_dir>/sample-catalog`.
pub fn start(config: NodeConfig, clock: Arc<dyn Clock>) -> Result<Started, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let settings = config
        .sync
        .settings()
        .map_err(|(key, reason)| StartError::Settings { key, reason })?;
    let transport = secure(&config)?;
    crate::grpc::archive::remove_stale_spools(&config.data_dir);
    let database = NodeDatabase::open(&config.data_dir.join("db"), config.cache_bytes)?;
    let node = Arc::new(NodeState::new(config, database, transport, clock.clone())?);
    let (config, database) = (&node.config, &node.database);
    let open_directory = |dir: PathBuf| -> Result<UpstreamSource, StartError> {
        Ok(UpstreamSource::Directory(DirectoryUpstream::open(
            dir,
            database.space("upstream")?,
            ParseLimits::default(),
        )?))
    };
    let mut parent_catalog: Option<Arc<dyn ParentLegacyCatalog>> = None;
    let upstream = match &config.upstream {
        UpstreamConfig::Parent(address) => {
            // Calls have no overall time limit (a first sync streams for as long as it
            // takes); keep-alive notices a vanished parent.
            let channel = connect::channel(&node.transport, address, None)
                .map_err(|e| SyncError::Settings(e.to_string()))?;
            parent_catalog = Some(Arc::new(GrpcParentCatalog::new(channel.clone())));
            UpstreamSource::Parent(Arc::new(GrpcParent::new(address.as_str(), channel)))
        }
        UpstreamConfig::Directory(dir) => open_directory(dir.clone())?,
        UpstreamConfig::Import => UpstreamSource::Import,
        UpstreamConfig::Wsus(settings) => {
            let session = Session::new((**settings).clone(), clock.clone())?;
            UpstreamSource::Wsus(WsusUpstream::open(
                session,
                database.space("upstream-wsus")?,
                &config.data_dir.join("upstream-wsus"),
                ParseLimits::default(),
            )?)
        }
        UpstreamConfig::Sample => {
            let dir = config.data_dir.join("sample-catalog");
            sitesync_metadata::sample::write_to(&dir).map_err(|source| StartError::Sample {
                path: dir.clone(),
                source,
            })?;
            open_directory(dir)?
        }
    };
    let status = StatusLog::open(database.space("status-messages")?)?;
    let policy = PolicyStore::new(database.space("client-policy")?);
    let sync_space = database.space("sync-manager")?;
    let children = Children::new(database.space("children")?);
    let received = ReceivedRequests::new(database.space("sync-requests")?);
    let outbox = Outbox::new(database.space("outbox")?);
    let forwarding = StatusForwarding::new(
        database.space("status-sites")?,
        database.space("status-forward")?,
    );
    let hierarchy = Arc::new(Hierarchy::new(
        node.clone(),
        clock.clone(),
        children,
        received,
        outbox,
        forwarding,
        database.space("parent")?,
    ));
    // S11: when phase 1 succeeds, each internet-facing node is asked to sync from this
    // site. S10: a successful sync queues one request per child site before its 6702.
    let internet = hierarchy.clone();
    let cascade = hierarchy.clone();
    let lost = hierarchy.clone();
    let hooks = SyncHooks {
        after_update_server: Some(Arc::new(move |run| {
            internet
                .request_internet_syncs(run)
                .map_err(|e| e.to_string())
        })),
        on_success: Some(Arc::new(move |run| {
            cascade.cascade(run).map(drop).map_err(|e| e.to_string())
        })),
        on_parent_lost: Some(Arc::new(move || lost.register_again())),
    };
    let sync = SyncManager::start_with_hooks(
        node.clone(),
        clock,
        upstream,
        status,
        policy,
        sync_space,
        settings,
        hooks,
    )?;
    let peers: Arc<dyn Peers> = Arc::new(GrpcPeers::new(node.clone()));
    node.metrics
        .register_collector(Box::new(StateCollector::new(&hierarchy)));
    hierarchy.spawn_tasks(sync.clone(), peers.clone());
    let legacy = LegacyCatalog::start(node.clone(), sync.clone(), parent_catalog)?;
    crate::hierarchy::reporting::spawn_reporting(node.clone(), sync.clone(), peers);
    Ok(Started {
        node,
        sync,
        hierarchy,
        legacy,
    })
}
