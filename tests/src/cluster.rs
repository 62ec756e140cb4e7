//! Real `sitesync-node` processes on loopback, for multi-site tests and benchmarks.
//!
//! - [`node_binary`] builds the node binary once per test process (cargo builds only a
//!   package's own binaries for its tests), in the profile of the running test or benchmark,
//!   or takes it from `SITESYNC_NODE_BIN`.
//! - [`NodeProcess`] is one node, run by `sitesync-supervise` (the supervisor
//!   `sitesyncctl demo` uses too): started on `127.0.0.1:0`, its data directory and log file
//!   under the hierarchy's temporary directory. It can be killed (SIGKILL), stopped
//!   (SIGTERM) and restarted on the same data directory *and the same address*, so its
//!   parent and children still find it. It talks to the node through the generated Admin
//!   client.
//! - [`Hierarchy`] owns the nodes of one test by site code. Dropping it kills every process,
//!   also when the test panics, and then prints each node's log so a failure explains itself.
//!   It makes its own certificate authority: the nodes speak mutual TLS, as they do by
//!   default, each with its site's certificate, and the harness calls them as an operator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::bail;
use sitesync_proto::v1;
use sitesync_proto::v1::admin_client::AdminClient;
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};
use sitesync_supervise::{NODE_BINARY, NodeCommand, SupervisedNode, log_tail};
use tokio::time::Instant;
use tonic::transport::Channel;

/// How long a node may take to start listening (a cold debug build opening its database on
/// a loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopped node may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`NodeProcess::wait_status`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The `sitesync-node` binary, built once per process.
pub fn node_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SITESYNC_NODE_BIN") {
            return PathBuf::from(path);
        }
        // Tests and benchmarks run as <target>/<profile>/deps/<name>-<hash>.
        let exe = std::env::current_exe().expect("the test knows its own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from <target>/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "sitesync-node",
                "--bin",
                NODE_BINARY,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p sitesync-node failed");
        let binary = profile_dir.join(format!("{NODE_BINARY}{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// What a node is, as its flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Site,
    Internet,
}

impl Role {
    fn flag(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Internet => "internet",
        }
    }
}

/// Where a node syncs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A directory of update documents: the top site.
    Directory(PathBuf),
    /// Another node, `host:port`: a child site, or an internet node's own site.
    Parent(String),
    /// Export files only (`--upstream import`): a disconnected node.
    Import,
    /// An upstream WSUS server's root URL (`--upstream-wsus`): a top site.
    Wsus(String),
}

/// One `sitesync-node` process and everything needed to start it again.
#[derive(Debug)]
pub struct NodeProcess {
    pub site_code: String,
    pub role: Role,
    pub upstream: Upstream,
    /// The node's `--data-dir`; kept across restarts.
    pub data_dir: PathBuf,
    /// stdout and stderr of every start, appended.
    pub log_path: PathBuf,
    /// Its flags and directory; after the first start, also its address.
    command: NodeCommand,
    /// How the harness reaches nodes: mutual TLS as the hierarchy's operator.
    transport: Transport,
    /// Fixed at the first start; restarts listen on it again.
    address: SocketAddr,
    /// `None` while the node is down.
    process: Option<SupervisedNode>,
    /// A lazy channel to the node: it reconnects by itself after a restart on the same address.
    channel: Channel,
}

impl NodeProcess {
    /// Starts a node on `127.0.0.1:0` under `dir` (created), and waits until it listens.
    /// `config_toml`, when not empty, is written to a config file the node reads. `pki_dir`
    /// holds the CA and the site's certificate; `transport` is how the harness calls it.
    pub async fn start(
        dir: &Path,
        site_code: &str,
        role: Role,
        upstream: Upstream,
        config_toml: &str,
        (pki_dir, transport): (&Path, &Transport),
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut command = NodeCommand::new(node_binary(), site_code, dir);
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .arg("--site-code")
            .arg(site_code)
            .arg("--role")
            .arg(role.flag())
            .arg("--pki-dir")
            .arg(pki_dir)
            .log_filter(std::env::var("SITESYNC_TEST_LOG").unwrap_or_else(|_| "info".into()));
        match &upstream {
            Upstream::Directory(dir) => command.arg("--upstream-dir").arg(dir),
            Upstream::Parent(address) => command.arg("--parent").arg(address),
            Upstream::Import => command.arg("--upstream").arg("import"),
            Upstream::Wsus(url) => command.arg("--upstream-wsus").arg(url),
        };
        if !config_toml.is_empty() {
            std::fs::create_dir_all(dir)?;
            let path = dir.join("node.toml");
            std::fs::write(&path, config_toml)?;
            command.arg("--config").arg(path);
        }
        let mut node = Self {
            site_code: site_code.to_owned(),
            role,
            upstream,
            data_dir: command.data_dir(),
            log_path: command.log(),
            command,
            transport: transport.clone(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            process: None,
            channel: transport.channel("127.0.0.1:1", |e| e)?,
        };
        node.spawn_and_wait().await?;
        Ok(node)
    }

    /// Where the node listens (`127.0.0.1:port`), the same across restarts.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(SupervisedNode::is_running)
    }

    /// Where the node serves its metrics while it runs, if they are on (a restart binds a
    /// new port when the configured one is 0).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.process
            .as_ref()
            .and_then(SupervisedNode::metrics_address)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(SupervisedNode::pid)
    }

    /// Kills the node with SIGKILL and reaps it: a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Stops the node with SIGTERM (a clean shutdown), killing it if it does not exit in
    /// time. The wait runs off the runtime, which keeps serving the harness's connections
    /// to the node: a node stopping gracefully waits for them.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = tokio::task::spawn_blocking(move || process.stop(STOP_TIMEOUT)).await;
        }
    }

    /// Starts the node again on the same data directory and address. The port may be taken
    /// for a moment (by an outgoing connection's ephemeral port), so binding is retried.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.process.is_none(),
            "{} is still running",
            self.site_code
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(e)
                    if Instant::now() < deadline && format!("{e:#}").contains("cannot listen") =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let mut process = self.command.spawn()?;
        // A process that does not listen is killed when `process` is dropped.
        let address = process.wait_listening(START_TIMEOUT).await?;
        self.process = Some(process);
        if self.address.port() == 0 {
            self.address = address;
            self.command.listen(address);
            self.channel = self.transport.channel(&address.to_string(), |endpoint| {
                endpoint
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(30))
            })?;
        } else {
            anyhow::ensure!(
                address == self.address,
                "{} restarted on {address}, not {}",
                self.site_code,
                self.address
            );
        }
        Ok(())
    }

    /// Exports this node's update server into `path` (over `Admin.ExportCatalog`), the
    /// changes after `since` or the whole catalog. Returns the header the node announced.
    pub async fn export(
        &self,
        path: &Path,
        since: Option<v1::Anchor>,
    ) -> anyhow::Result<v1::ArchiveHeader> {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = self
            .admin()
            .export_catalog(v1::ExportCatalogRequest { since })
            .await?
            .into_inner();
        let mut file = tokio::fs::File::create(path).await?;
        let mut header = None;
        let mut written = 0u64;
        while let Some(message) = stream.message().await? {
            match message.kind {
                Some(v1::export_catalog_chunk::Kind::Start(start)) => header = start.header,
                Some(v1::export_catalog_chunk::Kind::Chunk(chunk)) => {
                    anyhow::ensure!(chunk.offset == written, "chunks out of order");
                    file.write_all(&chunk.data).await?;
                    written += chunk.data.len() as u64;
                }
                Some(v1::export_catalog_chunk::Kind::End(end)) => {
                    anyhow::ensure!(end.total_bytes == written, "the export's length differs");
                    file.sync_all().await?;
                    return header.ok_or_else(|| anyhow::anyhow!("the export had no header"));
                }
                None => bail!("an empty export message"),
            }
        }
        bail!("the export stream ended before its end")
    }

    /// Imports the file at `path` into this node (over `Admin.ImportCatalog`). The file is
    /// streamed from disk in `FILE_CHUNK_BYTES` chunks, a few at a time: bounded memory
    /// whatever its size.
    pub async fn import(
        &self,
        path: &Path,
        dry_run: bool,
    ) -> Result<v1::ImportCatalogResponse, tonic::Status> {
        use tokio::io::AsyncReadExt as _;
        /// Chunks read ahead of the node.
        const WINDOW: usize = 4;
        let local = |e: std::io::Error| {
            tonic::Status::internal(format!("cannot read {}: {e}", path.display()))
        };
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let total_bytes = file.metadata().await.map_err(local)?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (sender, receiver) = tokio::sync::mpsc::channel(WINDOW);
        let header = v1::ImportCatalogChunk {
            kind: Some(v1::import_catalog_chunk::Kind::Header(v1::ImportHeader {
                file_name: name,
                total_bytes,
                dry_run,
            })),
        };
        // A read error ends the stream early (the node then refuses a cut-off file); it is
        // kept here and reported instead of the node's refusal.
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
        let reader = {
            let failure = failure.clone();
            tokio::spawn(async move {
                if sender.send(header).await.is_err() {
                    return;
                }
                let mut offset = 0u64;
                loop {
                    // A whole chunk unless the file ends first.
                    let mut data = Vec::with_capacity(sitesync_proto::FILE_CHUNK_BYTES);
                    let limit = sitesync_proto::FILE_CHUNK_BYTES as u64;
                    match (&mut file).take(limit).read_to_end(&mut data).await {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                    let length = data.len() as u64;
                    let chunk = v1::ImportCatalogChunk {
                        kind: Some(v1::import_catalog_chunk::Kind::Chunk(v1::FileChunk {
                            offset,
                            data,
                        })),
                    };
                    // The node answered (refused) before taking the whole file.
                    if sender.send(chunk).await.is_err() {
                        return;
                    }
                    offset += length;
                }
            })
        };
        let result = self
            .admin()
            .import_catalog(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .map(tonic::Response::into_inner);
        reader.abort();
        if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(local(e));
        }
        result
    }

    /// The harness's channel to this node (mutual TLS as its operator), for any service.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// An Admin client for this node.
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
            .max_decoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES)
    }

    pub async fn status(&self) -> Result<v1::SiteStatus, tonic::Status> {
        self.admin()
            .get_site_status(v1::GetSiteStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    /// Polls the node's status until `done` holds, for at most `timeout`. A node that does
    /// not answer (restarting, busy) is polled again. Fails with `what`, the last status
    /// seen and the node's log.
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&v1::SiteStatus) -> bool,
    ) -> anyhow::Result<v1::SiteStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status().await {
                Ok(status) if done(&status) => return Ok(status),
                Ok(status) => format!("{status:#?}"),
                Err(e) => format!("no status: {e}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{}: {what}: not within {timeout:?}; last status: {last}",
                    self.site_code
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The latest revision of every update the node's update-server store holds, with its
    /// publication state, through the Admin API.
    pub async fn latest_updates(
        &self,
    ) -> Result<BTreeMap<sitesync_metadata::RevisionId, v1::PublicationState>, tonic::Status> {
        let mut out = BTreeMap::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .admin()
                .list_updates(v1::ListUpdatesRequest {
                    store: v1::StoreSelector::UpdateServer as i32,
                    page_size: 1_000,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            for update in page.updates {
                let state = update.publication_state();
                let id = update
                    .id
                    .ok_or_else(|| tonic::Status::internal("an update without its id"))?;
                let revision = sitesync_metadata::RevisionId::try_from(id)
                    .map_err(|e| tonic::Status::internal(format!("an update id: {e}")))?;
                out.insert(revision, state);
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Asks the node to sync (an operator's RunSync) and returns the run's id.
    pub async fn run_sync(&self, kind: v1::SyncKind) -> Result<String, tonic::Status> {
        self.admin()
            .run_sync(v1::RunSyncRequest { kind: kind as i32 })
            .await
            .map(|r| r.into_inner().sync_id)
    }

    /// The status messages of this node (not those forwarded from below) with these ids,
    /// oldest first.
    pub async fn messages(
        &self,
        ids: &[v1::StatusMessageId],
        sync_id: &str,
    ) -> Result<Vec<v1::StatusMessage>, tonic::Status> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .admin()
                .list_status_messages(v1::ListStatusMessagesRequest {
                    site_codes: vec![self.site_code.clone()],
                    message_ids: ids.iter().map(|id| *id as i32).collect(),
                    sync_id: sync_id.to_owned(),
                    page_size: 1_000,
                    page_token,
                    oldest_first: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            out.extend(page.messages);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Waits until sync `sync_id` has raised 6702 or 6703 and returns that message.
    pub async fn sync_finished(
        &self,
        sync_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<v1::StatusMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let ends = [
                v1::StatusMessageId::SyncDone,
                v1::StatusMessageId::SyncFailed,
            ];
            if let Ok(messages) = self.messages(&ends, sync_id).await
                && let Some(end) = messages.into_iter().next()
            {
                return Ok(end);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: sync {sync_id} did not finish within {timeout:?}",
                    self.site_code
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs a full sync as an operator, expects it to end with 6702, and waits until the
    /// node is idle after it ([`idle_after_success`]); returns that status.
    pub async fn sync_to_the_end(&self, timeout: Duration) -> anyhow::Result<v1::SiteStatus> {
        let sync_id = self.run_sync(v1::SyncKind::Full).await?;
        let end = self.sync_finished(&sync_id, timeout).await?;
        anyhow::ensure!(
            end.message_id() == v1::StatusMessageId::SyncDone,
            "{}: sync {sync_id} failed: {}",
            self.site_code,
            end.text
        );
        self.wait_status("idle after its sync", timeout, idle_after_success)
            .await
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }
}

/// The nodes of one test, by site code, under one temporary directory.
#[derive(Debug)]
pub struct Hierarchy {
    /// Every node's data directory and log; removed when the hierarchy is dropped.
    dir: tempfile::TempDir,
    nodes: BTreeMap<String, NodeProcess>,
    /// The top site's upstream catalog directory.
    catalog: PathBuf,
    /// Written into every node's config file (for example `[sync]\nretry = "1m"`).
    config_toml: String,
    /// Log lines printed per node when the test fails.
    log_lines_on_failure: usize,
    /// Environment variables of nodes started from now on.
    env: Vec<(String, String)>,
    /// The hierarchy's CA, in `<dir>/pki`: it issues each site's certificate as it starts.
    authority: Authority,
    /// Mutual TLS as the operator [`HARNESS_OPERATOR`].
    transport: Transport,
}

/// The operator the harness calls nodes as.
pub const HARNESS_OPERATOR: &str = "harness";

impl Hierarchy {
    /// An empty hierarchy whose top site will sync from a catalog directory it creates.
    pub fn new() -> anyhow::Result<Self> {
        let mut dir = tempfile::Builder::new().prefix("sitesync-hier").tempdir()?;
        // For reading the nodes' logs after a run.
        if std::env::var_os("SITESYNC_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let catalog = dir.path().join("catalog");
        std::fs::create_dir_all(&catalog)?;
        let authority = Authority::init(&dir.path().join("pki"), "test hierarchy")?;
        let operator = Identity::operator(HARNESS_OPERATOR)?;
        authority.issue(&operator, &[], DEFAULT_VALIDITY)?;
        let files = TlsFiles::in_pki_dir(authority.dir(), &operator);
        let transport = Transport::Tls(TlsContext::load(files)?);
        Ok(Self {
            dir,
            nodes: BTreeMap::new(),
            catalog,
            config_toml: String::new(),
            log_lines_on_failure: 60,
            env: Vec::new(),
            authority,
            transport,
        })
    }

    /// Sets the config file content of nodes started from now on.
    pub fn set_config(&mut self, toml: &str) {
        self.config_toml = toml.to_owned();
    }

    /// Sets an environment variable of nodes started from now on (and their restarts).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// The top site's upstream directory.
    pub fn catalog(&self) -> &Path {
        &self.catalog
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The hierarchy's PKI directory: its CA, every site's certificate, and the operator
    /// [`HARNESS_OPERATOR`]'s.
    pub fn pki_dir(&self) -> &Path {
        self.authority.dir()
    }

    /// Starts the top site, syncing from [`Self::catalog`].
    pub async fn start_top(&mut self, site_code: &str) -> anyhow::Result<&mut NodeProcess> {
        let upstream = Upstream::Directory(self.catalog.clone());
        self.start(site_code, Role::Site, upstream).await
    }

    /// Starts the top site, syncing from the upstream WSUS server at `url`
    /// ([`crate::wsus_upstream::FakeWsus::url`]).
    pub async fn start_top_wsus(
        &mut self,
        site_code: &str,
        url: &str,
    ) -> anyhow::Result<&mut NodeProcess> {
        self.start(site_code, Role::Site, Upstream::Wsus(url.to_owned()))
            .await
    }

    /// Starts a child site of `parent` (a site code of this hierarchy).
    pub async fn start_child(
        &mut self,
        site_code: &str,
        parent: &str,
    ) -> anyhow::Result<&mut NodeProcess> {
        let upstream = Upstream::Parent(self.node(parent).address());
        self.start(site_code, Role::Site, upstream).await
    }

    /// Starts the internet-facing node of `site` (a site code of this hierarchy).
    pub async fn start_internet(
        &mut self,
        site_code: &str,
        site: &str,
    ) -> anyhow::Result<&mut NodeProcess> {
        let upstream = Upstream::Parent(self.node(site).address());
        self.start(site_code, Role::Internet, upstream).await
    }

    /// Starts a node whose upstream is export files (`--upstream import`), with `role`: a
    /// disconnected top site, or an internet-facing node with no path to its site.
    pub async fn start_importer(
        &mut self,
        site_code: &str,
        role: Role,
    ) -> anyhow::Result<&mut NodeProcess> {
        self.start(site_code, role, Upstream::Import).await
    }

    async fn start(
        &mut self,
        site_code: &str,
        role: Role,
        upstream: Upstream,
    ) -> anyhow::Result<&mut NodeProcess> {
        anyhow::ensure!(
            !self.nodes.contains_key(site_code),
            "{site_code} already exists"
        );
        let dir = self.dir.path().join(site_code);
        self.authority
            .issue(&Identity::site(site_code)?, &[], DEFAULT_VALIDITY)?;
        let tls = (self.authority.dir(), &self.transport);
        let node = NodeProcess::start(
            &dir,
            site_code,
            role,
            upstream,
            &self.config_toml,
            tls,
            &self.env,
        )
        .await?;
        Ok(self.nodes.entry(site_code.to_owned()).or_insert(node))
    }

    pub fn node(&self, site_code: &str) -> &NodeProcess {
        self.nodes
            .get(site_code)
            .unwrap_or_else(|| panic!("no node {site_code}"))
    }

    pub fn node_mut(&mut self, site_code: &str) -> &mut NodeProcess {
        self.nodes
            .get_mut(site_code)
            .unwrap_or_else(|| panic!("no node {site_code}"))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.values()
    }

    /// How many log lines per node are printed when the test fails.
    pub fn set_log_lines_on_failure(&mut self, lines: usize) {
        self.log_lines_on_failure = lines;
    }

    /// Leaves the directory (data and logs) in place when the hierarchy is dropped.
    pub fn keep_dir(&mut self) {
        self.dir.disable_cleanup(true);
    }

    /// Kills every node now.
    pub fn kill_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill();
        }
    }
}

impl Drop for Hierarchy {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            for node in self.nodes.values() {
                eprintln!(
                    "===== {} ({}) log, last {} lines, {} =====\n{}",
                    node.site_code,
                    node.address(),
                    self.log_lines_on_failure,
                    node.log_path.display(),
                    node.log_tail(self.log_lines_on_failure)
                );
            }
        }
    }
}

/// Idle, and the last sync succeeded.
pub fn idle_after_success(status: &v1::SiteStatus) -> bool {
    status.site.as_ref().is_some_and(|site| {
        site.current_sync.is_none()
            && site
                .last_sync
                .as_ref()
                .is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
    })
}

/// A store's digest as lower-case hex, for messages.
pub fn digest_hex(store: Option<&v1::StoreInfo>) -> String {
    store
        .and_then(|s| s.digest.as_ref())
        .map(|d| d.value.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_else(|| "-".into())
}
