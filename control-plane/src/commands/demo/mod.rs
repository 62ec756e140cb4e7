//! `sitesyncctl demo`: a whole hierarchy of real `sitesync-node` processes on loopback,
//! synced from a generated catalog, watched until every site holds the top site's catalog.
//!
//! The flow, in order, and the module of each step:
//! 1. [`WorkDir`] (here): a fresh temporary directory, or `--dir`. It holds the generated
//!    catalog (`catalog/`, the top site's upstream directory), the hierarchy's CA (`pki/`)
//!    and one directory per site with its database (`data/`), its log (`node.log`, the
//!    node's stdout and stderr) and its `address` file.
//! 2. [`upstream`]: [`TopUpstream`](upstream::TopUpstream) is the top site's upstream: the
//!    catalog directory (`--upstream-dir`) or, with `--wsus`, a fake upstream WSUS server
//!    on loopback serving it over [MS-WSUSSS] (`--upstream-wsus`), stopped once every site
//!    converged.
//! 3. [`processes`]: [`Nodes`](processes::Nodes) starts the sites of [`SITES`] top down,
//!    each on port 0 with `--address-file`, a child as soon as its parent listens. The top
//!    site's first scheduled sync runs at start; its cascade (S10) reaches the children
//!    registered by then, and a parent that has synced sends a child that registers later a
//!    request of its own, so every site syncs without an operator (S2). `Nodes` is also the
//!    guard that stops every process it started when dropped, so an error, a panic or
//!    Ctrl-C leaves no node behind; `--keep` detaches them instead.
//! 4. [`converge`]: [`follow_top_sync`](converge::follow_top_sync) follows that sync with
//!    `Admin.WatchSync`, then [`wait_for_convergence`](converge::wait_for_convergence) polls
//!    every node until each one's update-server digest (and site-database digest, at a
//!    `site` node) equals the top site's, printing each site's 6702 as it arrives, and fails
//!    after `--timeout` naming the sites that did not get there and their logs.
//! 5. [`report`]: the final tree is the `tree` command's own output; then a summary
//!    (stdout), or with `--output json` one [`DemoReport`](report::DemoReport) for scripts.
//!
//! [MS-WSUSSS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsusss/

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_security::Identity;
use sitesync_security::pki::Authority;

use super::tree;
use crate::cli::{ClientTlsArgs, DemoArgs, NodeArgs};
use crate::client::{self, Node};
use crate::output::{self, OutputFormat};

mod converge;
mod processes;
mod report;
mod upstream;

use converge::{follow_top_sync, settle_tree, wait_for_convergence};
use processes::{Nodes, find_node_binary};
use report::{Summary, print_kept};
use upstream::TopUpstream;

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
            signal = super::interrupted() => signal.map(|()| None),
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
    let upstream = TopUpstream::start(catalog, args.wsus).await?;
    if let Some(url) = upstream.wsus_url() {
        eprintln!(
            "serving the catalog from a fake upstream WSUS server at {url}: {} syncs from it \
             over [MS-WSUSSS] (--upstream-wsus {url})",
            SITES[0].code
        );
    }
    // Top down, each generation as soon as its parents listen, so most children are
    // registered when their parent's sync cascades.
    for generation in [&SITES[..1], &SITES[1..3], &SITES[3..]] {
        let first = nodes.sites.len();
        for spec in generation {
            let parent = spec.parent.map(|code| nodes.address_of(code)).transpose()?;
            nodes.start(binary, spec, &work.path, parent.as_deref(), &upstream, &pki)?;
        }
        for index in first..nodes.sites.len() {
            nodes.wait_listening(index).await?;
            let site = &nodes.sites[index];
            eprintln!(
                "  {} {:<8} {:<21} pid {:<7} log {}",
                site.spec.code,
                site.spec.role.name(),
                site.address,
                site.node.pid(),
                site.node.log().display()
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
    let summary = Summary::new(
        args,
        work,
        catalog,
        upstream.report(),
        nodes,
        converged,
        began,
    );
    if let Some(url) = upstream.wsus_url() {
        eprintln!("stopping the upstream WSUS server at {url}…");
    }
    upstream.shutdown().await;

    if output != OutputFormat::Json {
        settle_tree(&mut clients[0]).await;
        tree::run(clients[0].clone(), OutputFormat::Table).await?;
        output::print_table(&summary.table())?;
    }
    Ok(summary)
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command as CliCommand};

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
        assert!(!args.keep && !args.wsus && args.dir.is_none() && args.node_binary.is_none());
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
        let cli = Cli::try_parse_from(["sitesyncctl", "demo", "--wsus"]).unwrap();
        let CliCommand::Demo(args) = cli.command else {
            panic!("not the demo");
        };
        assert!(args.wsus);
        // The fake upstream WSUS server lives in this process: it cannot outlast the demo.
        assert!(Cli::try_parse_from(["sitesyncctl", "demo", "--wsus", "--keep"]).is_err());
    }
}
