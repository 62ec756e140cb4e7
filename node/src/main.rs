//! `sitesync-node`: runs one site's node.
//!
//! With no arguments it runs the top site `CEN` with data under `./sitesync-data` and the
//! bundled sample catalog as its upstream. See `--help` for the configuration layers.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sitesync_node::clock::SystemClock;
use sitesync_node::config::{NodeConfig, Overrides};
use sitesync_node::telemetry::{self, LogFormat};
use tracing::{info, warn};

// jemalloc, with the settings of `sitesync_node::allocator`.
sitesync_node::node_allocator!();

/// Runs one sitesync node. Settings come from, in increasing precedence: built-in defaults,
/// the config file, environment variables, flags.
#[derive(Debug, Parser)]
#[command(
    name = "sitesync-node",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
    /// Also serve gRPC health alone (`grpc.health.v1`) in plaintext on this address, for
    /// probes that cannot present a certificate, such as Kubernetes' gRPC probes.
    #[arg(long, env = "SITESYNC_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<std::net::SocketAddr>,
    /// Once listening, write the bound address (host:port) to this file: how scripts and
    /// tests find a node started on port 0.
    #[arg(long)]
    address_file: Option<PathBuf>,
    /// Once listening, write the metrics listener's bound address to this file (before
    /// `--address-file`'s), for a node whose metrics listen on port 0.
    #[arg(long)]
    metrics_address_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Imports an export file (S12) into a stopped node's data directory, as the node's
    /// sync: the same checks and the same status messages as `sitesyncctl import` against
    /// the running node. The node's configuration flags apply (`--data-dir`, `--config`,
    /// `--pki-dir`, `--upstream import`...).
    Import {
        /// The export file; it is only read.
        file: PathBuf,
        /// Verify the file and report what it is and whether it applies, changing nothing.
        #[arg(long)]
        dry_run: bool,
        /// `text` (the default) or `json`.
        #[arg(long, default_value = "text", value_name = "FORMAT")]
        output: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// The node's configuration flags, for running it and for `import`.
#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// A TOML config file.
    #[arg(long, env = "SITESYNC_CONFIG")]
    config: Option<PathBuf>,
    /// This site's code: three letters or digits (default CEN).
    #[arg(long, env = "SITESYNC_SITE_CODE")]
    site_code: Option<String>,
    /// `site` or `internet` (default site).
    #[arg(long, env = "SITESYNC_ROLE")]
    role: Option<String>,
    /// Where the node keeps its database (default ./sitesync-data).
    #[arg(long, env = "SITESYNC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The gRPC listen address (default 127.0.0.1:8530; port 0 picks a free port).
    #[arg(long, env = "SITESYNC_LISTEN")]
    listen: Option<String>,
    /// Where other nodes reach this one (host:port), when not at the listen address: a
    /// node listening on 0.0.0.0 in a container gives its service name here.
    #[arg(long, env = "SITESYNC_ADVERTISE")]
    advertise: Option<String>,
    /// The only site codes that may register as this site's children (child sites and its
    /// internet-facing node), comma-separated; by default any site with a certificate of
    /// the hierarchy's CA may.
    #[arg(long, env = "SITESYNC_CHILDREN", value_delimiter = ',')]
    children: Option<Vec<String>>,
    /// Sync from this directory of update XML documents instead of the sample catalog.
    #[arg(long, env = "SITESYNC_UPSTREAM_DIR")]
    upstream_dir: Option<PathBuf>,
    /// Run as a child site of the node at this address (host:port).
    #[arg(long, env = "SITESYNC_PARENT")]
    parent: Option<String>,
    /// Sync from Microsoft Update (https://sws.update.microsoft.com) or an existing WSUS
    /// server (http://host:8530, https://host:8531) over the server-to-server protocol. The
    /// config file's `[upstream]` keys of kind `wsus` (ca_file, proxy, ...) still apply;
    /// HTTPS_PROXY, HTTP_PROXY and NO_PROXY are honoured unless it sets `proxy`.
    #[arg(long, env = "SITESYNC_UPSTREAM_WSUS", value_name = "URL")]
    upstream_wsus: Option<String>,
    /// The upstream by kind: `import` for a node fed only by export files (S12), imported
    /// with `sitesyncctl import` or `sitesync-node import`; `sample` for the bundled sample;
    /// `wsus` for Microsoft Update (or the server --upstream-wsus names).
    #[arg(long = "upstream", env = "SITESYNC_UPSTREAM", value_name = "KIND")]
    upstream_kind: Option<String>,
    /// The storage engine's page cache in MiB (default 32).
    #[arg(long, env = "SITESYNC_CACHE_MIB")]
    cache_mib: Option<u64>,
    /// The hierarchy's certificates, as `sitesyncctl pki` lays them out: `ca.pem`,
    /// `crl.pem`, `sites/<site code>.pem` and `.key`. Without it (and without `[tls]` in the
    /// config file) a top site makes its own CA under `<data dir>/pki`.
    #[arg(long, env = "SITESYNC_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    /// Plaintext gRPC instead of mutual TLS: for a lab on one machine only.
    #[arg(long, env = "SITESYNC_INSECURE")]
    insecure: bool,
    /// Serve metrics for Prometheus at /metrics, in plaintext, on this address (off by
    /// default).
    #[arg(long, env = "SITESYNC_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// `text` (the default: readable lines) or `json` (one JSON object a line, for log
    /// shippers; lines inside a sync carry `site`, `sync_id` and `trace_id`).
    #[arg(
        long,
        env = "SITESYNC_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

impl NodeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            site_code: self.site_code.clone(),
            role: self.role.clone(),
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            children: self.children.clone(),
            upstream_dir: self.upstream_dir.clone(),
            parent: self.parent.clone(),
            upstream_kind: self.upstream_kind.clone(),
            upstream_wsus: self.upstream_wsus.clone(),
            cache_mib: self.cache_mib,
            pki_dir: self.pki_dir.clone(),
            insecure: self.insecure,
            metrics_listen: self.metrics_listen.clone(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Import {
        file,
        dry_run,
        output,
        node,
    }) = args.command
    {
        let config = NodeConfig::load(node.config.as_deref(), &node.overrides())?;
        let telemetry = telemetry::init(
            node.log_format,
            &telemetry::Source {
                site: config.site_code.to_string(),
                role: config.role.to_string(),
            },
        )?;
        let imported = import(config, &file, dry_run, output == "json").await;
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        return imported;
    }
    let config = NodeConfig::load(args.node.config.as_deref(), &args.node.overrides())?;
    // Spans and log lines name the site, so logging starts once the configuration is read;
    // a configuration that cannot be read is reported on stderr by the error itself.
    let telemetry = telemetry::init(
        args.node.log_format,
        &telemetry::Source {
            site: config.site_code.to_string(),
            role: config.role.to_string(),
        },
    )?;
    let served = serve(
        config,
        args.address_file,
        args.metrics_address_file,
        args.health_listen,
        telemetry.exporting(),
    )
    .await;
    // The last spans (the shutdown's among them) leave before the process does.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    served
}

/// `sitesync-node import`: the node started without serving, the file imported as its
/// sync, the node stopped again. Requests for its children wait in its outbox until it runs.
async fn import(
    config: NodeConfig,
    file: &std::path::Path,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let started = sitesync_node::startup::start(config, Arc::new(SystemClock)).with_context(|| {
        format!(
            "cannot open the node in {}: if it is running, import with `sitesyncctl import` against it instead",
            data_dir.display()
        )
    })?;
    let name = file.display().to_string();
    // Counts on stderr while the file is applied (the verification logs its own).
    let mut view = started.sync.watch();
    let watched = name.clone();
    started.node.spawn_background(async move {
        let mut last = std::time::Instant::now();
        while view.changed().await.is_ok() {
            let current = view.borrow_and_update().current.clone();
            if let Some(run) = current
                && last.elapsed() >= std::time::Duration::from_secs(5)
            {
                last = std::time::Instant::now();
                eprintln!(
                    "{watched}: sync {} applying, {} batches so far",
                    run.id, run.progress.0
                );
            }
        }
    });
    let imported = sitesync_node::grpc::archive::import(
        &started.node,
        &started.sync,
        file,
        &name,
        dry_run,
        None,
    )
    .await;
    let summary = imported
        .as_ref()
        .map(|report| report.summary(&started.node));
    started.node.stop();
    let summary = summary.map_err(|e| anyhow::anyhow!("{name} is not imported: {e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if summary.already_held {
        println!(
            "{name}: this node holds its catalog already (version {} of {}, at {}); nothing changed.",
            summary.catalog_version, summary.top_site, summary.target
        );
    } else if dry_run {
        println!(
            "{name}: verified; a {} file from {} (catalog version {} of {}) that applies here. Nothing changed (dry run).",
            summary.kind, summary.source_site, summary.catalog_version, summary.top_site
        );
    } else {
        println!(
            "{name}: imported as sync {}: {} new, {} changed, {} expired, {} deleted; update server at sequence {}, {} revisions, digest {}.",
            summary.sync_id.unwrap_or_default(),
            summary.new,
            summary.changed,
            summary.expired,
            summary.deleted,
            summary.update_server_sequence,
            summary.revisions,
            summary.update_server_digest
        );
    }
    Ok(())
}

async fn serve(
    mut config: NodeConfig,
    address_file: Option<PathBuf>,
    metrics_address_file: Option<PathBuf>,
    health_listen: Option<std::net::SocketAddr>,
    exporting_traces: bool,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // What the node reports (status, the client policy) is where it really listens.
    let address = listener.local_addr()?;
    config.listen = address;
    let health_listener = match health_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for health probes on {address}"))?,
        ),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?,
        ),
        None => None,
    };
    let started = sitesync_node::startup::start(config, Arc::new(SystemClock))?;
    if let Some(metrics) = metrics_listener {
        let metrics_address = metrics.local_addr()?;
        if let Some(path) = &metrics_address_file {
            write_address(path, metrics_address)?;
        }
        info!(address = %metrics_address, "metrics at /metrics (plaintext, Prometheus text format)");
        started
            .node
            .spawn_background(sitesync_node::metrics::http::serve(
                metrics,
                started.node.metrics.clone(),
            ));
    }
    if let Some(path) = &address_file {
        write_address(path, address)?;
    }
    let config = &started.node.config;
    info!(
        site = %config.site_code,
        role = %config.role,
        %address,
        data_dir = %config.data_dir.display(),
        exporting_traces,
        "node serving"
    );
    if let Some(health) = &health_listener {
        info!(address = %health.local_addr()?, "health probes (plaintext, grpc.health.v1 only)");
    }
    sitesync_node::grpc::server::serve_with_health_listener(
        started,
        listener,
        health_listener,
        shutdown_signal(),
    )
    .await?;
    info!("node stopped");
    Ok(())
}

/// Writes `address` to `path` whole, then renames it, so a reader never sees half an address.
fn write_address(path: &std::path::Path, address: std::net::SocketAddr) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, address.to_string())
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("cannot write the address file {}", path.display()))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    info!("shutting down");
}
