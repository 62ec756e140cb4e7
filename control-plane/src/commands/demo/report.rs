//! What the demo found, for people and scripts: [`Summary`] is gathered once every site
//! converged; its table is printed after the tree, and [`DemoReport`] (with how each node
//! ended, or that they still run) is what `--output json` prints.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use sitesync_proto::v1;

use super::converge::Convergence;
use super::processes::{Nodes, Stopped};
use super::upstream::UpstreamReport;
use super::{SITES, WorkDir};
use crate::cli::DemoArgs;
use crate::output;
use crate::units::{self, human_duration};
use crate::views::{StoreView, SyncRunView, short_digest};

/// What the demo found, before the nodes are stopped or kept.
#[derive(Debug)]
pub struct Summary {
    work_dir: PathBuf,
    catalog: CatalogReport,
    upstream: UpstreamReport,
    update_server_digest: Option<String>,
    site_database_digest: Option<String>,
    revisions: u64,
    timings: Timings,
    sites: Vec<SiteReport>,
}

/// What `demo --output json` prints.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// The catalog, and each site's data and log (`<dir>/<site code>/`).
    work_dir: String,
    /// False when the work directory was temporary and is removed by now.
    work_dir_kept: bool,
    /// Whether the nodes are still running (`--keep`).
    nodes_running: bool,
    catalog: CatalogReport,
    /// Where the top site synced from: the catalog directory, or the fake upstream WSUS
    /// server serving it (`--wsus`) with the requests it answered.
    upstream: UpstreamReport,
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
    /// Where the node serves its metrics for Prometheus: `http://<this>/metrics`.
    metrics_address: String,
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
    pub fn new(
        args: &DemoArgs,
        work: &WorkDir,
        catalog: &Path,
        upstream: UpstreamReport,
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
                metrics_address: process.metrics_address.clone(),
                pid: process.node.pid(),
                data_dir: process.data_dir.display().to_string(),
                log: process.node.log().display().to_string(),
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
            upstream,
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
    pub fn table(&self) -> comfy_table::Table {
        let top = SITES[0].code;
        let seconds = |s: Option<f64>| {
            s.map_or_else(
                || "-".to_owned(),
                |s| human_duration(Duration::from_secs_f64(s.max(0.0))),
            )
        };
        let mut rows: Vec<(&str, String)> = self.upstream.rows();
        rows.extend([
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
        ]);
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
    pub fn finish(self, stopped: Option<&[Stopped]>, work_dir_kept: bool) -> DemoReport {
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
            upstream: self.upstream,
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
pub fn print_kept(report: &DemoReport) -> io::Result<()> {
    let mut table = output::table();
    table.set_header(["site", "role", "address", "metrics", "pid", "log"]);
    for site in &report.sites {
        table.add_row([
            site.site_code.to_owned(),
            site.role.to_owned(),
            site.address.clone(),
            format!("http://{}/metrics", site.metrics_address),
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
