//! `sitesyncctl demo`: a whole hierarchy of real `sitesync-node` processes on loopback,
//! synced from a generated catalog, watched until every site holds the top site's catalog.
//!
//! The flow, in order:
//! 1. [`WorkDir`]: a fresh temporary directory, or `--dir`. It holds the generated catalog
//!    (`catalog/`, the top site's upstream directory) and one directory per site with its
//!    database (`data/`), its log (`node.log`, the node's stdout and stderr) and its
//!    `address` file.
//! 2. [`Nodes`] starts the sites of [`SITES`] top down, each on port 0 with
//!    `--address-file`, a child as soon as its parent listens. The top site's first
//!    scheduled sync runs at start; its cascade (S10) reaches the children registered by
//!    then, and a parent that has synced sends a child that registers later a request of
//!    its own, so every site syncs without an operator (S2). [`Nodes`] is also the guard
//!    that stops every process it started — SIGTERM, a grace period, then SIGKILL — when
//!    dropped, so an error, a panic or Ctrl-C leaves no node behind; `--keep` detaches
//!    them instead.
//! 3. [`follow_top_sync`] follows that sync with `Admin.WatchSync`: a progress bar on a
//!    terminal, the status messages (with their counts) as lines otherwise.
//! 4. [`wait_for_convergence`] polls every node's `Admin.GetSiteStatus` until each one's
//!    update-server digest (and site-database digest, at a `site` node) equals the top
//!    site's, printing each site's 6702 as it arrives, and fails after `--timeout` naming
//!    the sites that did not get there and their logs.
//! 5. The final tree is the `tree` command's own output; then a summary (stdout), or with
//!    `--output json` one [`DemoReport`] for scripts.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_security::Identity;
use sitesync_security::pki::Authority;

use super::sync::{bar_style, message_text};
use super::tree;
use crate::cli::{ClientTlsArgs, DemoArgs, NodeArgs};
use crate::client::{self, Node, printable, unary};
use crate::output::{self, OutputFormat};
use crate::units::{self, human_duration};
use crate::views::{StoreView, SyncRunView, short_digest};

/// The node binary's name, without the platform's executable suffix.
const NODE_BINARY: &str = "sitesync-node";

/// How long a node may take to listen after it was started (a debug build opening sled).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the top site may take to begin its first scheduled sync once it listens.
const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often the sites' states are polled while waiting for them.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long to wait for the top site's view of the tree (built from the reports sites send
/// up) to show every site in step before drawing it as it is.
const TREE_SETTLE: Duration = Duration::from_secs(10);

/// How many lines of a node's log an error quotes.
const LOG_TAIL_LINES: usize = 15;

/// A node's role, as `--role` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Site,
    Internet,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Internet => "internet",
        }
    }
}

/// One site of the demo's hierarchy.
#[derive(Debug)]
struct SiteSpec {
    code: &'static str,
    role: Role,
    /// The site whose node this one's `--parent` names; `None` for the top site.
    parent: Option<&'static str>,
}

/// The demo's hierarchy, parents before their children: the top site, two primary sites,
/// a secondary site under PR1, and PR1's internet-facing update point (S11).
const SITES: [SiteSpec; 5] = [
    SiteSpec {
        code: "CEN",
        role: Role::Site,
        parent: None,
    },
    SiteSpec {
        code: "PR1",
        role: Role::Site,
        parent: Some("CEN"),
    },
    SiteSpec {
        code: "PR2",
        role: Role::Site,
        parent: Some("CEN"),
    },
    SiteSpec {
        code: "SE1",
        role: Role::Site,
        parent: Some("PR1"),
    },
    SiteSpec {
        code: "IN1",
        role: Role::Internet,
        parent: Some("PR1"),
    },
];

pub fn run(args: &DemoArgs, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let binary = find_node_binary(args.node_binary.as_deref())?;
    let mut work = WorkDir::new(args.dir.as_deref())?;
    let catalog = work.path.join("catalog");
    generate_catalog(&catalog, args.updates as usize, args.seed)?;

    // Declared after `work`, so dropped (the nodes stopped) before the directory goes.
    let mut nodes = Nodes::default();
    let runtime = client::runtime()?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = demo(args, output, &binary, &work, &catalog, &mut nodes) => result.map(Some),
            signal = interrupted() => signal.map(|()| None),
        }
    });
    // Closes the demo's connections to the nodes: a node stopping gracefully waits for its
    // open connections, and a runtime that is no longer driven would never close them.
    drop(runtime);
    let report = match outcome {
        Ok(Some(report)) => report,
        Ok(None) => {
            eprintln!("interrupted: stopping the nodes…");
            nodes.stop();
            return Ok(ExitCode::from(130));
        }
        Err(error) => {
            eprintln!("stopping the nodes…");
            nodes.stop();
            work.keep();
            eprintln!("the logs of the nodes are kept in {}", work.path.display());
            return Err(error);
        }
    };

    if args.keep {
        work.keep();
        nodes.detach();
        let report = report.finish(None, true);
        match output {
            OutputFormat::Json => output::print_json(&report)?,
            OutputFormat::Table | OutputFormat::Dot => print_kept(&report)?,
        }
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!("stopping the nodes…");
    let stopped = nodes.stop();
    let report = report.finish(Some(&stopped), !work.is_temporary());
    if let Some(unclean) = stopped.iter().find(|s| !s.clean) {
        eprintln!(
            "warning: {} did not stop cleanly: {}; its log: {}",
            unclean.site_code, unclean.how, unclean.log
        );
    }
    match output {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table | OutputFormat::Dot => {
            eprintln!(
                "stopped {} nodes{}",
                stopped.len(),
                if work.is_temporary() {
                    String::new()
                } else {
                    format!("; their data and logs are in {}", work.path.display())
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo until every site converged: start the nodes, follow the top site's sync and the
/// cascade, print the tree and the summary (table output). Everything it starts is in
/// `nodes`, which the caller stops.
async fn demo(
    args: &DemoArgs,
    output: OutputFormat,
    binary: &Path,
    work: &WorkDir,
    catalog: &Path,
    nodes: &mut Nodes,
) -> anyhow::Result<Summary> {
    let began = Instant::now();
    eprintln!(
        "starting {} nodes ({}) in {}",
        SITES.len(),
        binary.display(),
        work.path.display()
    );
    let pki = make_pki(&work.path)?;
    // Top down, each generation as soon as its parents listen, so most children are
    // registered when their parent's sync cascades.
    for generation in [&SITES[..1], &SITES[1..3], &SITES[3..]] {
        let first = nodes.sites.len();
        for spec in generation {
            let parent = spec.parent.map(|code| nodes.address_of(code)).transpose()?;
            nodes.start(binary, spec, &work.path, parent.as_deref(), catalog, &pki)?;
        }
        for index in first..nodes.sites.len() {
            nodes.wait_listening(index).await?;
            let site = &nodes.sites[index];
            eprintln!(
                "  {} {:<8} {:<21} pid {:<7} log {}",
                site.spec.code,
                site.spec.role.name(),
                site.address,
                site.child.id(),
                site.log.display()
            );
        }
    }

    let mut clients = Vec::with_capacity(nodes.sites.len());
    for site in &nodes.sites {
        let node = Node::connect(&NodeArgs {
            address: site.address.clone(),
            tls: ClientTlsArgs {
                pki_dir: Some(pki.clone()),
                operator: DEMO_OPERATOR.to_owned(),
                ..ClientTlsArgs::default()
            },
        })
        .await
        .with_context(|| format!("cannot connect to {}", site.spec.code))?;
        clients.push(node);
    }

    let deadline = Instant::now() + args.timeout;
    let top_run = follow_top_sync(&mut clients[0], nodes, deadline).await?;
    let converged =
        wait_for_convergence(&mut clients, nodes, &top_run, (deadline, args.timeout)).await?;
    let summary = Summary::new(args, work, catalog, nodes, converged, began);

    if output != OutputFormat::Json {
        settle_tree(&mut clients[0]).await;
        tree::run(clients[0].clone(), OutputFormat::Table).await?;
        output::print_table(&summary.table())?;
    }
    Ok(summary)
}

/// Ctrl-C, or SIGTERM on Unix: either ends the demo (and stops the nodes).
async fn interrupted() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}

/// `--node-binary`, else `sitesync-node` next to this executable (where cargo puts both),
/// else the first on PATH.
fn find_node_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        bail!(
            "--node-binary {}: no such file; give the path of a built `{NODE_BINARY}`",
            path.display()
        );
    }
    let name = format!("{NODE_BINARY}{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    if let Some(path) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(path.clone());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let beside = beside.map_or_else(
        || "this sitesyncctl".to_owned(),
        |p| p.display().to_string(),
    );
    bail!(
        "cannot find the node binary: there is no {beside} and no `{NODE_BINARY}` on PATH; \
         build it first with `cargo build --release` (then run `./target/release/sitesyncctl \
         demo`), or give --node-binary PATH"
    )
}

/// Where the demo keeps its files: `--dir`, or a temporary directory removed at the end.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    /// Set when the directory is temporary: dropping it removes the directory, unless
    /// [`WorkDir::keep`] was called (after a failure, for the logs; with `--keep`).
    temporary: Option<tempfile::TempDir>,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = dir else {
            let temporary = tempfile::Builder::new()
                .prefix("sitesync-demo-")
                .tempdir()
                .context("cannot create a temporary work directory")?;
            return Ok(Self {
                path: temporary.path().to_owned(),
                temporary: Some(temporary),
            });
        };
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    bail!(
                        "--dir {}: the directory is not empty; give a new or empty directory \
                         (the demo starts fresh nodes), or remove it first",
                        dir.display()
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)
                    .with_context(|| format!("--dir {}: cannot create it", dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("--dir {}", dir.display())),
        }
        let path = dir
            .canonicalize()
            .with_context(|| format!("--dir {}", dir.display()))?;
        Ok(Self {
            path,
            temporary: None,
        })
    }

    fn is_temporary(&self) -> bool {
        self.temporary.is_some()
    }

    /// Keeps a temporary directory on disk after the demo.
    fn keep(&mut self) {
        if let Some(temporary) = &mut self.temporary {
            temporary.disable_cleanup(true);
        }
    }
}

/// The operator the demo acts as.
const DEMO_OPERATOR: &str = "admin";

/// The demo hierarchy's own CA in `<work>/pki`, with a certificate for each site and for
/// the operator: the nodes speak mutual TLS, as they do by default.
fn make_pki(work: &Path) -> anyhow::Result<PathBuf> {
    let dir = work.join("pki");
    let authority =
        Authority::init(&dir, "sitesync demo").context("cannot create the demo's CA")?;
    let operator = Identity::operator(DEMO_OPERATOR)?;
    let sites = SITES.iter().map(|spec| Identity::site(spec.code));
    for identity in sites.chain([Ok(operator)]) {
        let identity = identity?;
        authority
            .issue(&identity, &[], DEMO_CERTIFICATE_VALIDITY)
            .with_context(|| format!("cannot issue the demo's certificate for {identity}"))?;
    }
    Ok(dir)
}

/// The demo's certificates outlive any demo run, even one kept running with `--keep`.
const DEMO_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

fn generate_catalog(dir: &Path, updates: usize, seed: u64) -> anyhow::Result<()> {
    eprintln!(
        "generating a catalog of {updates} update documents in {}",
        dir.display()
    );
    let bar = ProgressBar::with_draw_target(Some(updates as u64), ProgressDrawTarget::stderr())
        .with_style(
            ProgressStyle::with_template("  [{bar:30}] {pos}/{len} documents")?
                .progress_chars("=> "),
        );
    write_catalog(dir, &CatalogSpec::new(updates, seed), |progress| {
        bar.set_position(progress.written as u64);
    })
    .with_context(|| format!("cannot write the catalog into {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(())
}

/// A node process the demo started.
#[derive(Debug)]
struct SiteProcess {
    spec: &'static SiteSpec,
    child: Child,
    /// The site's directory: `data/`, `node.log`, `address`.
    dir: PathBuf,
    log: PathBuf,
    /// `host:port`, once the node wrote its address file.
    address: String,
}

/// How one node ended when the demo stopped it.
#[derive(Debug, Clone, Serialize)]
struct Stopped {
    #[serde(skip)]
    site_code: &'static str,
    /// `exited with exit status: 0`, `killed after 10 s`.
    how: String,
    /// Whether it stopped on SIGTERM with success.
    clean: bool,
    #[serde(skip)]
    log: String,
}

/// The node processes the demo started: the guard that stops them all when dropped.
#[derive(Debug, Default)]
struct Nodes {
    sites: Vec<SiteProcess>,
}

impl Nodes {
    /// Starts the node of `spec`; it is owned by `self` from then on, so it is stopped
    /// even if it never comes up.
    fn start(
        &mut self,
        binary: &Path,
        spec: &'static SiteSpec,
        work: &Path,
        parent: Option<&str>,
        catalog: &Path,
        pki: &Path,
    ) -> anyhow::Result<()> {
        let dir = work.join(spec.code);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = dir.join("node.log");
        let stdout =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let stderr = stdout
            .try_clone()
            .with_context(|| format!("cannot open {} twice", log.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("--site-code")
            .arg(spec.code)
            .arg("--role")
            .arg(spec.role.name())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--address-file")
            .arg(dir.join("address"))
            .arg("--pki-dir")
            .arg(pki);
        match parent {
            Some(parent) => command.arg("--parent").arg(parent),
            None => command.arg("--upstream-dir").arg(catalog),
        };
        // Each node is configured by its flags alone: no setting of the operator's
        // environment (SITESYNC_*) reaches it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SITESYNC_") {
                command.env_remove(name);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // Its own process group: Ctrl-C at the terminal reaches the demo, which stops the
        // nodes in order, and kept nodes outlive the terminal's job control.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} for {}", binary.display(), spec.code))?;
        self.sites.push(SiteProcess {
            spec,
            child,
            dir,
            log,
            address: String::new(),
        });
        Ok(())
    }

    /// Waits until node `index` wrote its address file.
    async fn wait_listening(&mut self, index: usize) -> anyhow::Result<()> {
        let site = &mut self.sites[index];
        let address_file = site.dir.join("address");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = fs::read_to_string(&address_file) {
                site.address = address.trim().to_owned();
                return Ok(());
            }
            if let Some(status) = site.child.try_wait()? {
                bail!(
                    "the node of {} exited ({status}) before it listened; its log {}:\n{}",
                    site.spec.code,
                    site.log.display(),
                    log_tail(&site.log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the node of {} did not listen within {}; its log {}:\n{}",
                    site.spec.code,
                    human_duration(START_TIMEOUT),
                    site.log.display(),
                    log_tail(&site.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn address_of(&self, code: &str) -> anyhow::Result<String> {
        self.sites
            .iter()
            .find(|s| s.spec.code == code && !s.address.is_empty())
            .map(|s| s.address.clone())
            .ok_or_else(|| anyhow!("{code} is not listening yet"))
    }

    /// Fails if a node exited while the demo needs it.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for site in &mut self.sites {
            if let Some(status) = site.child.try_wait()? {
                bail!(
                    "the node of {} exited unexpectedly ({status}); its log {}:\n{}",
                    site.spec.code,
                    site.log.display(),
                    log_tail(&site.log)
                );
            }
        }
        Ok(())
    }

    /// Stops every node: SIGTERM to all, up to [`STOP_GRACE`] for them to exit, then SIGKILL
    /// for any left. Idempotent: a node already reaped is reported as it ended.
    fn stop(&mut self) -> Vec<Stopped> {
        let mut endings: Vec<Option<(String, bool)>> = self
            .sites
            .iter_mut()
            .map(|site| match site.child.try_wait() {
                Ok(Some(status)) => Some((format!("had exited ({status})"), false)),
                Ok(None) => {
                    terminate(&mut site.child);
                    None
                }
                Err(e) => Some((format!("cannot be waited for: {e}"), false)),
            })
            .collect();
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            for (site, ending) in self.sites.iter_mut().zip(endings.iter_mut()) {
                if ending.is_none()
                    && let Ok(Some(status)) = site.child.try_wait()
                {
                    *ending = Some((format!("exited ({status})"), status.success()));
                }
            }
            if endings.iter().all(Option::is_some) {
                break;
            }
            if Instant::now() > deadline {
                for (site, ending) in self.sites.iter_mut().zip(endings.iter_mut()) {
                    if ending.is_none() {
                        let _ = site.child.kill();
                        let _ = site.child.wait();
                        *ending = Some((
                            format!(
                                "killed: it did not stop within {}",
                                human_duration(STOP_GRACE)
                            ),
                            false,
                        ));
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.sites
            .iter()
            .zip(endings)
            .map(|(site, ending)| {
                let (how, clean) = ending.unwrap_or_default();
                Stopped {
                    site_code: site.spec.code,
                    how,
                    clean,
                    log: site.log.display().to_string(),
                }
            })
            .collect()
    }

    /// Leaves the nodes running (`--keep`): the guard no longer stops them. Dropping a
    /// `Child` neither kills nor waits for it.
    fn detach(&mut self) {
        self.sites.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let running = self
            .sites
            .iter_mut()
            .any(|site| matches!(site.child.try_wait(), Ok(None)));
        if running {
            self.stop();
        }
    }
}

/// Asks a node to stop (SIGTERM; it finishes what it is writing and exits).
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process};
        if kill_process(Pid::from_child(child), Signal::TERM).is_err() {
            let _ = child.kill();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

/// The last lines of a log file, indented, for error messages.
fn log_tail(log: &Path) -> String {
    let Ok(file) = File::open(log) else {
        return "  (the log cannot be read)".to_owned();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        return "  (the log is empty)".to_owned();
    }
    tail.iter()
        .map(|line| format!("  {}", printable(line)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A progress bar on stderr when it is a terminal; otherwise lines, so logs get the counts.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(prefix: &str) -> Self {
        let bar = ProgressBar::hidden()
            .with_style(bar_style(false))
            .with_prefix(prefix.to_owned());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    fn is_terminal(&self) -> bool {
        !self.bar.is_hidden()
    }

    fn line(&self, text: &str) {
        if self.is_terminal() {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Follows the top site's first scheduled sync (it starts by itself when the node starts)
/// with `Admin.WatchSync` until it finishes, and returns it; an error if it failed.
async fn follow_top_sync(
    top: &mut Node,
    nodes: &mut Nodes,
    deadline: Instant,
) -> anyhow::Result<v1::SyncRun> {
    let code = SITES[0].code;
    let log = nodes.sites[0].log.display().to_string();
    let sync_id = first_sync_id(top, nodes).await?;
    let progress = Progress::new(code);
    let mut stream = top
        .admin
        .watch_sync(v1::WatchSyncRequest {
            sync_id: sync_id.clone(),
        })
        .await
        .map_err(|status| top.failed("Admin.WatchSync", status))?
        .into_inner();
    // Without a terminal, a line per phase once its size is known: the counts for logs.
    let mut phase_printed = None;
    let mut bounded = None;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.message())
            .await
            .map_err(|_| {
                anyhow!("{code}'s sync {sync_id} did not finish within the timeout; its log: {log}")
            })?
            .map_err(|status| top.failed("Admin.WatchSync", status))?;
        let Some(update) = next else {
            bail!("{code} ended the watch of sync {sync_id} before it finished; its log: {log}");
        };
        for message in &update.messages {
            progress.line(&message_text(message));
        }
        let Some(run) = update.run else { continue };
        let view = SyncRunView::new(&run);
        let (done, total) = run
            .progress
            .as_ref()
            .filter(|p| p.phase == run.phase)
            .map_or((0, 0), |p| (p.done, p.total));
        if !progress.is_terminal() && phase_printed != Some(run.phase) && total > 0 {
            progress.line(&format!(
                "{code} {}: {done}/{total} · {}",
                view.phase_description,
                view.counts.summary()
            ));
            phase_printed = Some(run.phase);
        }
        if bounded != Some(total > 0) {
            progress.bar.set_style(bar_style(total > 0));
            bounded = Some(total > 0);
        }
        if total > 0 {
            progress.bar.set_length(total);
        } else {
            progress.bar.unset_length();
        }
        progress.bar.set_position(done);
        progress.bar.set_message(format!(
            "{} · {} new, {} changed, {} expired",
            view.phase.replace('_', " "),
            view.counts.new,
            view.counts.changed,
            view.counts.expired
        ));
        if run.phase() == v1::SyncPhase::Finished {
            if run.result() == v1::SyncResult::Succeeded {
                return Ok(run);
            }
            bail!(
                "{code}'s scheduled sync failed: {}; its log: {log}",
                view.failure_reason
                    .as_deref()
                    .unwrap_or("the node gave no reason")
            );
        }
    }
}

/// The id of the top site's first sync: the one running or queued, or the one that already
/// finished (a small catalog syncs before the children are up).
async fn first_sync_id(top: &mut Node, nodes: &mut Nodes) -> anyhow::Result<String> {
    let deadline = Instant::now() + FIRST_SYNC_TIMEOUT;
    loop {
        nodes.check_running()?;
        let state = site_status(top).await?;
        let site = state.site.unwrap_or_default();
        if let Some(run) = site
            .current_sync
            .or_else(|| state.queued_syncs.into_iter().next())
            .or(site.last_sync)
        {
            return Ok(run.sync_id);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not start its scheduled sync within {} of starting; its log: {}",
                SITES[0].code,
                human_duration(FIRST_SYNC_TIMEOUT),
                nodes.sites[0].log.display()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn site_status(node: &mut Node) -> anyhow::Result<v1::SiteStatus> {
    Ok(node
        .admin
        .get_site_status(unary(v1::GetSiteStatusRequest {}))
        .await
        .map_err(|status| node.failed("Admin.GetSiteStatus", status))?
        .into_inner())
}

/// A site that reached the top site's catalog.
#[derive(Debug, Clone)]
struct Converged {
    state: v1::SiteState,
    /// The sync that brought it there (its 6702).
    run: v1::SyncRun,
}

/// The stores of every site at the end, and when each got there.
#[derive(Debug)]
struct Convergence {
    /// The top site's sync the demo followed (the one that cascaded).
    top_run: v1::SyncRun,
    /// Per site, in [`SITES`] order; the top site included.
    sites: Vec<Converged>,
}

/// Polls every node until its stores hold the top site's catalog; prints each site's 6702 as
/// it arrives. Fails at `deadline` naming the sites that did not get there.
async fn wait_for_convergence(
    clients: &mut [Node],
    nodes: &mut Nodes,
    top_run: &v1::SyncRun,
    (deadline, timeout): (Instant, Duration),
) -> anyhow::Result<Convergence> {
    let top_code = SITES[0].code;
    let top_run = top_run.clone();
    let top_done = top_run.finished_at.unwrap_or_default();
    let progress = Progress::new("cascade");
    let mut converged: Vec<Option<Converged>> = vec![None; SITES.len()];
    let mut states: Vec<Option<v1::SiteStatus>> = vec![None; SITES.len()];
    loop {
        nodes.check_running()?;
        for (index, client) in clients.iter_mut().enumerate() {
            // A node that does not answer now may answer at the next poll; one that died is
            // caught by `check_running`.
            states[index] = site_status(client).await.ok();
        }
        let Some(top) = states[0].as_ref().and_then(|s| s.site.clone()) else {
            bail!(
                "{top_code} stopped answering; its log: {}",
                nodes.sites[0].log.display()
            );
        };
        converged[0] = Some(Converged {
            state: top.clone(),
            run: top_run.clone(),
        });
        for index in 1..SITES.len() {
            if converged[index].is_some() {
                continue;
            }
            let Some(state) = states[index].as_ref().and_then(|s| s.site.clone()) else {
                continue;
            };
            let Some(run) = in_step(&SITES[index], &state, &top) else {
                continue;
            };
            let message = sync_done_text(&mut clients[index], &run.sync_id).await;
            let after = run
                .finished_at
                .as_ref()
                .and_then(|done| units::between(&top_done, done))
                .map(|d| format!("+{}", human_duration(d)))
                .unwrap_or_else(|| "+0.0 s".to_owned());
            progress.line(&format!(
                "{} 6702 {after} after {top_code}'s · {}",
                SITES[index].code,
                message.unwrap_or_else(|| describe_stores(&state))
            ));
            converged[index] = Some(Converged { state, run });
        }
        let pending: Vec<usize> = (1..SITES.len())
            .filter(|&i| converged[i].is_none())
            .collect();
        if pending.is_empty() {
            let sites = converged.into_iter().flatten().collect();
            return Ok(Convergence { top_run, sites });
        }
        if Instant::now() > deadline {
            drop(progress);
            bail!(not_converged(&pending, &states, &top, nodes, timeout));
        }
        progress.bar.set_message(
            pending
                .iter()
                .map(|&i| pending_state(&SITES[i], states[i].as_ref()))
                .collect::<Vec<_>>()
                .join(" · "),
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The sync that brought `state` to the top site's catalog, if it is there: the same
/// update-server digest and, at a site node, the same site-database digest, after a
/// successful sync.
fn in_step(spec: &SiteSpec, state: &v1::SiteState, top: &v1::SiteState) -> Option<v1::SyncRun> {
    let digest = |store: &Option<v1::StoreInfo>| store.as_ref().and_then(|s| s.digest.clone());
    let update_server = digest(&state.update_server);
    if update_server.is_none() || update_server != digest(&top.update_server) {
        return None;
    }
    if spec.role == Role::Site && digest(&state.site_database) != digest(&top.site_database) {
        return None;
    }
    state
        .last_sync
        .clone()
        .filter(|run| run.result() == v1::SyncResult::Succeeded)
}

/// The text of the 6702 a site raised for `sync_id`, from the site itself.
async fn sync_done_text(node: &mut Node, sync_id: &str) -> Option<String> {
    let response = node
        .admin
        .list_status_messages(unary(v1::ListStatusMessagesRequest {
            message_ids: vec![v1::StatusMessageId::SyncDone.into()],
            sync_id: sync_id.to_owned(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .ok()?
        .into_inner();
    response
        .messages
        .first()
        .map(|message| printable(&message.text))
}

/// `update server 2000 rev ecd56cd6cd8c7648, site database 2000 rev ecd56cd6cd8c7648`.
fn describe_stores(state: &v1::SiteState) -> String {
    let store = |name: &str, store: &Option<v1::StoreInfo>| {
        store.as_ref().map(|s| {
            let view = StoreView::new(s);
            format!("{name} {} rev {}", view.revisions, view.short_digest())
        })
    };
    [
        store("update server", &state.update_server),
        store("site database", &state.site_database),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

/// `PR1 update server 1200/2000`, `SE1 waiting`: short, as a progress line has one row.
fn pending_state(spec: &SiteSpec, status: Option<&v1::SiteStatus>) -> String {
    let Some(state) = status.and_then(|s| s.site.as_ref()) else {
        return format!("{} not answering", spec.code);
    };
    let Some(run) = &state.current_sync else {
        return format!("{} waiting", spec.code);
    };
    let phase = SyncRunView::new(run).phase.replace('_', " ");
    match run.progress.as_ref().filter(|p| p.total > 0) {
        Some(p) => format!("{} {phase} {}/{}", spec.code, p.done, p.total),
        None => format!("{} {phase}", spec.code),
    }
}

/// The error for sites that did not reach the top site's catalog in time.
fn not_converged(
    pending: &[usize],
    states: &[Option<v1::SiteStatus>],
    top: &v1::SiteState,
    nodes: &Nodes,
    timeout: Duration,
) -> String {
    let top_store = top.update_server.as_ref().map(StoreView::new);
    let mut text = format!(
        "{} of {} sites did not reach {}'s catalog (update server {} rev {}) within {} \
         (--timeout):",
        pending.len(),
        SITES.len(),
        SITES[0].code,
        top_store.as_ref().map_or(0, |s| s.revisions),
        short_digest(top_store.as_ref().and_then(|s| s.digest.as_deref())),
        human_duration(timeout),
    );
    for &index in pending {
        let spec = &SITES[index];
        let state = states[index].as_ref().and_then(|s| s.site.as_ref());
        let stores = state.map_or_else(|| "not answering".to_owned(), describe_stores);
        let sync = match state {
            None => String::new(),
            Some(state) => match (&state.current_sync, &state.last_sync) {
                (Some(run), _) => format!("; syncing: {}", SyncRunView::new(run).phase_description),
                (None, Some(run)) => {
                    let view = SyncRunView::new(run);
                    match view.failure_reason {
                        Some(reason) => format!("; its last sync failed: {reason}"),
                        None => format!(
                            "; its last sync {} ({})",
                            view.result.unwrap_or("finished"),
                            view.trigger.unwrap_or("unknown trigger")
                        ),
                    }
                }
                (None, None) => "; it has not synced".to_owned(),
            },
        };
        let _ = write!(
            text,
            "\n  {} ({}, parent {}): {stores}{sync}; log: {}",
            spec.code,
            spec.role.name(),
            spec.parent.unwrap_or("-"),
            nodes.sites[index].log.display()
        );
    }
    text
}

/// Waits (at most [`TREE_SETTLE`]) until the top site's view of the hierarchy, built from
/// the states sites report upward every few seconds, shows every site in step with the top,
/// so the tree drawn next is the final one; it is drawn as it is otherwise.
async fn settle_tree(top: &mut Node) {
    let deadline = Instant::now() + TREE_SETTLE;
    while Instant::now() < deadline {
        let Ok(hierarchy) = top
            .admin
            .get_hierarchy(unary(v1::GetHierarchyRequest { stale_after: None }))
            .await
        else {
            return;
        };
        let states: Vec<&v1::SiteState> = hierarchy
            .get_ref()
            .sites
            .iter()
            .filter_map(|node| node.state.as_ref())
            .collect();
        let state_of = |code: &str| states.iter().copied().find(|s| s.site_code == code);
        let settled = state_of(SITES[0].code).is_some_and(|top| {
            SITES[1..].iter().all(|spec| {
                state_of(spec.code).is_some_and(|state| in_step(spec, state, top).is_some())
            })
        });
        if settled {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What the demo found, before the nodes are stopped or kept.
#[derive(Debug)]
struct Summary {
    work_dir: PathBuf,
    catalog: CatalogReport,
    update_server_digest: Option<String>,
    site_database_digest: Option<String>,
    revisions: u64,
    timings: Timings,
    sites: Vec<SiteReport>,
}

/// What `demo --output json` prints.
#[derive(Debug, Serialize)]
struct DemoReport {
    /// The catalog, and each site's data and log (`<dir>/<site code>/`).
    work_dir: String,
    /// False when the work directory was temporary and is removed by now.
    work_dir_kept: bool,
    /// Whether the nodes are still running (`--keep`).
    nodes_running: bool,
    catalog: CatalogReport,
    top_site_code: &'static str,
    /// The digests every site reached.
    update_server_digest: Option<String>,
    site_database_digest: Option<String>,
    revisions: u64,
    /// Every site's update server (and site database, at a site node) equals the top's.
    converged: bool,
    timings: Timings,
    sites: Vec<SiteReport>,
}

#[derive(Debug, Clone, Serialize)]
struct CatalogReport {
    directory: String,
    documents: usize,
    seed: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Timings {
    /// The top site's sync, from its start to its 6702.
    top_sync_seconds: Option<f64>,
    /// From the top site's 6702 to the last site's 6702.
    cascade_seconds: Option<f64>,
    /// The site whose 6702 came last.
    last_site_code: Option<&'static str>,
    /// From the start of the first node to the last site's 6702 seen here.
    total_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
struct SiteReport {
    site_code: &'static str,
    /// `site` or `internet`.
    role: &'static str,
    parent_site_code: Option<&'static str>,
    address: String,
    pid: u32,
    data_dir: String,
    log: String,
    update_server: Option<StoreView>,
    /// Null at an internet-facing node, which has none.
    site_database: Option<StoreView>,
    /// The sync whose 6702 brought the site to the top's catalog.
    sync: SyncRunView,
    /// Seconds from the top site's 6702 to this site's.
    seconds_after_top: Option<f64>,
    /// How the node ended; null while it runs (`--keep`).
    stopped: Option<Stopped>,
}

impl Summary {
    fn new(
        args: &DemoArgs,
        work: &WorkDir,
        catalog: &Path,
        nodes: &Nodes,
        convergence: Convergence,
        began: Instant,
    ) -> Self {
        let total_seconds = began.elapsed().as_secs_f64();
        let top_run = &convergence.top_run;
        let top_done = top_run.finished_at.unwrap_or_default();
        let digest =
            |store: &Option<v1::StoreInfo>| store.as_ref().and_then(|s| StoreView::new(s).digest);
        let top = &convergence.sites[0].state;
        let seconds = |from: &prost_types::Timestamp, to: &prost_types::Timestamp| {
            units::between(from, to).map(|d| d.as_secs_f64())
        };
        let sites: Vec<SiteReport> = convergence
            .sites
            .iter()
            .zip(&nodes.sites)
            .map(|(converged, process)| SiteReport {
                site_code: process.spec.code,
                role: process.spec.role.name(),
                parent_site_code: process.spec.parent,
                address: process.address.clone(),
                pid: process.child.id(),
                data_dir: process.dir.join("data").display().to_string(),
                log: process.log.display().to_string(),
                update_server: converged.state.update_server.as_ref().map(StoreView::new),
                site_database: converged.state.site_database.as_ref().map(StoreView::new),
                sync: SyncRunView::new(&converged.run),
                seconds_after_top: converged
                    .run
                    .finished_at
                    .as_ref()
                    .and_then(|done| seconds(&top_done, done)),
                stopped: None,
            })
            .collect();
        let last = sites
            .iter()
            .skip(1)
            .filter_map(|s| s.seconds_after_top.map(|t| (s.site_code, t)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Self {
            work_dir: work.path.clone(),
            catalog: CatalogReport {
                directory: catalog.display().to_string(),
                documents: args.updates as usize,
                seed: args.seed,
            },
            update_server_digest: digest(&top.update_server),
            site_database_digest: digest(&top.site_database),
            revisions: top.update_server.as_ref().map_or(0, |s| s.revision_count),
            timings: Timings {
                top_sync_seconds: top_run
                    .started_at
                    .as_ref()
                    .zip(top_run.finished_at.as_ref())
                    .and_then(|(start, done)| seconds(start, done)),
                cascade_seconds: last.map(|(_, t)| t),
                last_site_code: last.map(|(code, _)| code),
                total_seconds,
            },
            sites,
        }
    }

    /// The summary table printed after the tree.
    fn table(&self) -> comfy_table::Table {
        let top = SITES[0].code;
        let seconds = |s: Option<f64>| {
            s.map_or_else(
                || "-".to_owned(),
                |s| human_duration(Duration::from_secs_f64(s.max(0.0))),
            )
        };
        let mut rows: Vec<(&str, String)> = vec![
            (
                "catalog",
                format!(
                    "{} revisions, update server {}, site database {}",
                    self.revisions,
                    short_digest(self.update_server_digest.as_deref()),
                    short_digest(self.site_database_digest.as_deref())
                ),
            ),
            (
                "in step",
                format!(
                    "all {} sites: {}",
                    self.sites.len(),
                    self.sites
                        .iter()
                        .map(|s| s.site_code)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "top site's sync",
                format!("{top}: {}", seconds(self.timings.top_sync_seconds)),
            ),
            (
                "cascade",
                format!(
                    "{} from {top}'s 6702 to the last site's 6702 ({})",
                    seconds(self.timings.cascade_seconds),
                    self.timings.last_site_code.unwrap_or("-")
                ),
            ),
            (
                "whole demo",
                human_duration(Duration::from_secs_f64(self.timings.total_seconds)),
            ),
        ];
        for site in &self.sites[1..] {
            rows.push((
                site.site_code,
                format!(
                    "6702 +{} after {top}'s ({} sync {})",
                    seconds(site.seconds_after_top),
                    site.sync.trigger.unwrap_or("unknown"),
                    site.sync.sync_id
                ),
            ));
        }
        output::name_value_table(rows)
    }

    /// The report, with the nodes' endings (`None` while they run).
    fn finish(self, stopped: Option<&[Stopped]>, work_dir_kept: bool) -> DemoReport {
        let mut sites = self.sites;
        if let Some(stopped) = stopped {
            for (site, ending) in sites.iter_mut().zip(stopped) {
                site.stopped = Some(ending.clone());
            }
        }
        DemoReport {
            work_dir: self.work_dir.display().to_string(),
            work_dir_kept,
            nodes_running: stopped.is_none(),
            catalog: self.catalog,
            top_site_code: SITES[0].code,
            update_server_digest: self.update_server_digest,
            site_database_digest: self.site_database_digest,
            revisions: self.revisions,
            converged: true,
            timings: self.timings,
            sites,
        }
    }
}

/// With `--keep`: where the nodes are and how to stop them.
fn print_kept(report: &DemoReport) -> io::Result<()> {
    let mut table = output::table();
    table.set_header(["site", "role", "address", "pid", "log"]);
    for site in &report.sites {
        table.add_row([
            site.site_code.to_owned(),
            site.role.to_owned(),
            site.address.clone(),
            site.pid.to_string(),
            site.log.clone(),
        ]);
    }
    output::print_table(&table)?;
    let pids: Vec<String> = report.sites.iter().map(|s| s.pid.to_string()).collect();
    let top = report.sites.first().map_or("", |s| s.address.as_str());
    println!(
        "The nodes keep running; their data and logs are in {}.\n\
         Look at them:  sitesyncctl --node {top} --pki-dir {}/pki tree\n\
         Stop them:     kill {}",
        report.work_dir,
        report.work_dir,
        pids.join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command as CliCommand};

    fn store(digest: u8, revisions: u64) -> Option<v1::StoreInfo> {
        Some(v1::StoreInfo {
            digest: Some(v1::CatalogDigest {
                value: vec![digest; 32],
            }),
            revision_count: revisions,
            ..Default::default()
        })
    }

    fn state(code: &str, update_server: u8, site_database: Option<u8>) -> v1::SiteState {
        v1::SiteState {
            site_code: code.into(),
            update_server: store(update_server, 10),
            site_database: site_database.and_then(|d| store(d, 10)),
            last_sync: Some(v1::SyncRun {
                sync_id: "1".into(),
                result: v1::SyncResult::Succeeded.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_site_is_in_step_when_its_stores_match_the_top_sites() {
        let top = state("CEN", 7, Some(7));
        let [_, pr1, _, _, in1] = &SITES;
        assert!(in_step(pr1, &state("PR1", 7, Some(7)), &top).is_some());
        // The site database lags: not yet.
        assert!(in_step(pr1, &state("PR1", 7, Some(1)), &top).is_none());
        assert!(in_step(pr1, &state("PR1", 7, None), &top).is_none());
        // An internet-facing node has no site database to compare.
        assert!(in_step(in1, &state("IN1", 7, None), &top).is_some());
        assert!(in_step(in1, &state("IN1", 1, None), &top).is_none());
        // Equal stores after a failed sync are not a 6702.
        let mut failed = state("PR1", 7, Some(7));
        failed.last_sync.as_mut().unwrap().result = v1::SyncResult::Failed.into();
        assert!(in_step(pr1, &failed, &top).is_none());
    }

    #[test]
    fn pending_sites_read_in_one_short_line() {
        let mut status = v1::SiteStatus {
            site: Some(state("PR1", 0, Some(0))),
            ..Default::default()
        };
        assert_eq!(pending_state(&SITES[1], Some(&status)), "PR1 waiting");
        status.site.as_mut().unwrap().current_sync = Some(v1::SyncRun {
            phase: v1::SyncPhase::UpdateServer.into(),
            progress: Some(v1::PhaseProgress {
                phase: v1::SyncPhase::UpdateServer.into(),
                done: 12,
                total: 200,
            }),
            ..Default::default()
        });
        assert_eq!(
            pending_state(&SITES[1], Some(&status)),
            "PR1 update server 12/200"
        );
        assert_eq!(pending_state(&SITES[3], None), "SE1 not answering");
    }

    #[test]
    fn the_hierarchy_lists_parents_before_children() {
        for (index, site) in SITES.iter().enumerate() {
            if let Some(parent) = site.parent {
                let parent_index = SITES.iter().position(|s| s.code == parent).unwrap();
                assert!(parent_index < index, "{} before {parent}", site.code);
            }
        }
        assert!(SITES[0].parent.is_none());
    }

    #[test]
    fn a_missing_node_binary_and_a_used_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("sitesync-node");
        let error = find_node_binary(Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("no such file"), "{error}");

        std::fs::write(dir.path().join("left-over"), "x").unwrap();
        let error = WorkDir::new(Some(dir.path())).unwrap_err().to_string();
        assert!(error.contains("not empty"), "{error}");
        let fresh = dir.path().join("new");
        let work = WorkDir::new(Some(&fresh)).unwrap();
        assert!(!work.is_temporary() && fresh.is_dir());
    }

    #[test]
    fn demo_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["sitesyncctl", "demo"]).unwrap();
        let CliCommand::Demo(args) = cli.command else {
            panic!("not the demo: {:?}", cli.command);
        };
        assert_eq!(args.updates, 2_000);
        assert_eq!(args.timeout, Duration::from_secs(300));
        assert!(!args.keep && args.dir.is_none() && args.node_binary.is_none());
        let cli = Cli::try_parse_from([
            "sitesyncctl",
            "-o",
            "json",
            "demo",
            "--updates",
            "200",
            "--timeout",
            "90s",
            "--keep",
        ])
        .unwrap();
        let CliCommand::Demo(args) = cli.command else {
            panic!("not the demo");
        };
        assert_eq!((args.updates, args.timeout), (200, Duration::from_secs(90)));
        assert!(args.keep);
        assert!(Cli::try_parse_from(["sitesyncctl", "demo", "--updates", "0"]).is_err());
    }
}
