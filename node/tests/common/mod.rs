//! A node for tests: real TCP gRPC on a free port, a catalog directory upstream, a manual
//! clock. Shared by the test files that need one.
#![allow(dead_code)]

pub mod pki;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sitesync_metadata::Timestamp;
use sitesync_node::clock::ManualClock;
use sitesync_node::config::{NodeConfig, Overrides, SecurityConfig};
use sitesync_node::startup::{Started, start};
use sitesync_node::sync::manager::{SyncPhase, SyncResult, SyncRun, SyncTrigger};
use sitesync_proto::v1;
use sitesync_proto::v1::admin_client::AdminClient;
use sitesync_proto::v1::hierarchy_client::HierarchyClient;
use sitesync_security::{Identity, Transport};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const T0: Timestamp = Timestamp(1_767_225_600_000); // 2026-01-01T00:00:00Z

/// A node on a catalog directory, serving on a free port, with a manual clock.
pub struct TestNode {
    pub clock: ManualClock,
    pub started: Started,
    pub admin: AdminClient<Channel>,
    pub channel: Channel,
    _thread: NodeThread,
    // Last: removed only once the node has stopped and let go of its stores.
    _data: tempfile::TempDir,
}

/// A node on a runtime and thread of its own, as its process would be. Dropping it stops
/// the node and waits until every one of its tasks has ended, so that whoever holds the
/// last [`Started`] closes the stores before their directory is removed: sled flushes when
/// its last handle goes, and a flush into a removed directory never returns.
pub struct NodeThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeThread {
    /// Starts the node `config` describes with `clock`; it serves on the listener `listen`
    /// gives, once it gives one. Drop the returned [`Started`] and the thread before the
    /// node's data directory.
    pub async fn start(
        config: NodeConfig,
        clock: ManualClock,
        listen: impl Future<Output = Option<std::net::TcpListener>> + Send + 'static,
    ) -> (Started, Self) {
        let (ready, started) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("node {}", config.site_code))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let started = match start(config, Arc::new(clock)) {
                        Ok(started) => started,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(started.clone()));
                    let serve = async move {
                        let Some(listener) = listen.await else {
                            return std::future::pending().await;
                        };
                        listener.set_nonblocking(true).unwrap();
                        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                        let _ = sitesync_node::grpc::server::serve(
                            started,
                            listener,
                            std::future::pending(),
                        )
                        .await;
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                // Ends every task the node still runs; the last one to hold its stores
                // closes them.
                drop(runtime);
            })
            .unwrap();
        let node = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        let started = started
            .await
            .expect("the node's thread ended before it started")
            .expect("the node did not start");
        (started, node)
    }
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestNode {
    /// Starts a node whose upstream is `catalog`; the first scheduled sync runs at once.
    pub async fn start(catalog: &Path, config_toml: &str) -> Self {
        Self::start_with(
            Overrides {
                upstream_dir: Some(catalog.to_owned()),
                ..Overrides::default()
            },
            config_toml,
        )
        .await
    }

    /// A child site of the node listening at `parent`; it runs no schedule and syncs when
    /// its parent asks (the parent asks when the child registers, if it has synced).
    pub async fn start_child(parent: &str, site_code: &str) -> Self {
        Self::start_with(
            Overrides {
                parent: Some(parent.to_owned()),
                site_code: Some(site_code.to_owned()),
                ..Overrides::default()
            },
            "",
        )
        .await
    }

    /// An internet-facing node (role `internet`, S11) of the site whose node listens at
    /// `site`; it syncs when that site asks.
    pub async fn start_internet(site: &str, site_code: &str) -> Self {
        Self::start_with(
            Overrides {
                parent: Some(site.to_owned()),
                site_code: Some(site_code.to_owned()),
                role: Some("internet".to_owned()),
                ..Overrides::default()
            },
            "",
        )
        .await
    }

    /// A child site of the node listening at `parent`, serving on `listener` (so a test
    /// can know, or reuse, the child's address before it starts).
    pub async fn start_child_on(
        parent: &str,
        site_code: &str,
        listener: std::net::TcpListener,
    ) -> Self {
        Self::start_on(
            Overrides {
                parent: Some(parent.to_owned()),
                site_code: Some(site_code.to_owned()),
                ..Overrides::default()
            },
            "",
            Some(listener),
        )
        .await
    }

    /// Where this node listens.
    pub fn address(&self) -> String {
        self.started.node.config.listen.to_string()
    }

    /// A node configured by `overrides` and `config_toml` (on a free port, with a data
    /// directory of its own and, unless the test configures security itself, a
    /// certificate from the tests' CA).
    pub async fn start_with(overrides: Overrides, config_toml: &str) -> Self {
        Self::start_on(overrides, config_toml, None).await
    }

    async fn start_on(
        overrides: Overrides,
        config_toml: &str,
        listener: Option<std::net::TcpListener>,
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config_path = data.path().join("node.toml");
        std::fs::write(&config_path, config_toml).unwrap();
        // Mutual TLS with the tests' CA, unless the test configures security itself.
        let pki_dir = (!overrides.insecure && !config_toml.contains("[tls]")).then(|| {
            let dir = data.path().join("pki");
            let code = overrides.site_code.as_deref().unwrap_or("CEN");
            pki::issue_into(&dir, &Identity::site(code).unwrap());
            dir
        });
        let config = NodeConfig::load(
            Some(&config_path),
            &Overrides {
                data_dir: Some(data.path().join("data")),
                listen: Some("127.0.0.1:0".into()),
                cache_mib: Some(16),
                pki_dir: overrides.pki_dir.clone().or(pki_dir),
                ..overrides
            },
        )
        .unwrap();
        let listener = match listener {
            Some(listener) => listener,
            None => std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        };
        let address = listener.local_addr().unwrap();
        let mut config = config;
        config.listen = address;
        let clock = ManualClock::new(T0);
        let (started, thread) =
            NodeThread::start(config, clock.clone(), async { Some(listener) }).await;
        // An operator's channel, or a plaintext one to a node told to run without TLS.
        let channel = match started.node.config.security {
            SecurityConfig::Insecure => Transport::Plaintext
                .channel(&address.to_string(), |e| e.timeout(Duration::from_secs(60)))
                .unwrap(),
            _ => operator_channel(&address.to_string()),
        };
        Self {
            clock,
            admin: AdminClient::new(channel.clone()),
            channel,
            started,
            _thread: thread,
            _data: data,
        }
    }

    /// The highest sync id the node has seen so far (queued, running or finished).
    pub fn last_run_id(&self) -> u64 {
        let view = self.started.sync.watch().borrow().clone();
        view.recent
            .iter()
            .chain(view.queued.iter())
            .chain(view.current.iter())
            .map(|r| r.id)
            .max()
            .unwrap_or(0)
    }

    /// Waits for the first run after `after` that the node's parent (or, at an
    /// internet-facing node, its site) asked for to finish, and returns it.
    pub async fn requested_run(&self, after: u64) -> SyncRun {
        self.finished_run("no sync requested by the parent finished", |r| {
            r.id > after && r.trigger == SyncTrigger::ParentRequest
        })
        .await
    }

    /// Waits (up to a minute) for a finished run that `matches`; panics with `missing`.
    async fn finished_run(&self, missing: &str, matches: impl Fn(&SyncRun) -> bool) -> SyncRun {
        let mut watch = self.started.sync.watch();
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let found = watch
                    .borrow_and_update()
                    .recent
                    .iter()
                    .find(|r| r.phase == SyncPhase::Finished && matches(r))
                    .cloned();
                if let Some(run) = found {
                    return run;
                }
                watch.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{missing} within a minute"))
    }

    /// Waits until runs its parent asked for after `after` leave this node with both of
    /// `reference`'s digests; each such run must succeed.
    pub async fn converges_by_parent_request(&self, reference: &TestNode, mut after: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let run = tokio::time::timeout_at(deadline, self.requested_run(after))
                .await
                .expect("the node did not converge by its parent's requests in time");
            assert_eq!(
                run.result,
                Some(SyncResult::Succeeded),
                "{:?}",
                run.failure_reason
            );
            let db = &self.started.node.database;
            let reference = &reference.started.node.database;
            if db.update_server().digest() == reference.update_server().digest()
                && db.site_database().digest() == reference.site_database().digest()
            {
                return;
            }
            after = run.id;
        }
    }

    /// Waits until `child` is registered with this node.
    pub async fn wait_registered(&self, child: &str) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while self
                .started
                .hierarchy
                .children
                .get(child)
                .unwrap()
                .is_none()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the child did not register with this node");
    }

    /// Waits until sync `id` has finished and returns its result.
    pub async fn finished(&self, id: u64) -> SyncRun {
        self.finished_run("the sync did not finish", |r| r.id == id)
            .await
    }

    pub async fn run_sync(&mut self, kind: v1::SyncKind) -> (u64, v1::RunSyncDisposition) {
        let response = self
            .admin
            .run_sync(v1::RunSyncRequest { kind: kind as i32 })
            .await
            .unwrap()
            .into_inner();
        (response.sync_id.parse().unwrap(), response.disposition())
    }

    /// The ids of the status messages of one sync, oldest first.
    pub async fn message_ids(&mut self, sync_id: u64) -> Vec<i32> {
        let response = self
            .admin
            .list_status_messages(v1::ListStatusMessagesRequest {
                sync_id: sync_id.to_string(),
                page_size: 1_000,
                oldest_first: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        response.messages.iter().map(|m| m.message_id).collect()
    }

    pub async fn status(&mut self) -> v1::SiteStatus {
        self.admin
            .get_site_status(v1::GetSiteStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

/// A channel to the node at `address` as the tests' operator, over mutual TLS.
pub fn operator_channel(address: &str) -> Channel {
    pki::operator()
        .channel(address, |e| e.timeout(Duration::from_secs(60)))
        .unwrap()
}

/// A channel to the node at `address` acting as site `code`, over mutual TLS. Keep the
/// directory (the site's certificate) alive as long as the channel.
pub fn site_channel(address: &str, code: &str) -> (tempfile::TempDir, Channel) {
    let (dir, transport) = pki::site(code);
    let channel = transport
        .channel(address, |e| e.timeout(Duration::from_secs(60)))
        .unwrap();
    (dir, channel)
}

/// Serves `router` without TLS on a free loopback port, for the lifetime of the test's
/// runtime, and returns a channel to it: a stand-in peer built in the test itself.
pub async fn serve_plaintext(router: tonic::transport::server::Router) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An address nobody listens on: a registered child that is down.
pub fn unreachable_address() -> String {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

/// Registers site `code` as a child of `node` with `role` (the way a child node does, over
/// a channel acting as that site) and returns the channel, for calls only registered
/// children may make. The child's address is one nobody listens on.
pub async fn registered_child(
    node: &TestNode,
    code: &str,
    role: v1::SiteRole,
) -> (tempfile::TempDir, Channel) {
    let (dir, channel) = site_channel(&node.address(), code);
    HierarchyClient::new(channel.clone())
        .register_child(v1::RegisterChildRequest {
            site_code: code.to_owned(),
            role: role as i32,
            address: unreachable_address(),
            ..Default::default()
        })
        .await
        .unwrap();
    (dir, channel)
}

/// A PKI directory at `dir` holding the tests' CA and a certificate for site `code`: what
/// a node's `--pki-dir` points at.
pub fn site_pki_dir(dir: &Path, code: &str) -> std::path::PathBuf {
    pki::issue_into(dir, &Identity::site(code).unwrap());
    dir.to_owned()
}
