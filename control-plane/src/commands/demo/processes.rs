//! The demo's node processes, started, watched and stopped with `sitesync-supervise`: where
//! the node binary is, one node per site of [`SITES`](super::SITES) in
//! `<work dir>/<site code>/`, and [`Nodes`], the guard that stops them all — SIGTERM, a grace
//! period, then SIGKILL — when dropped, so an error, a panic or Ctrl-C leaves no node behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;
use sitesync_supervise::{NODE_BINARY, NodeCommand, SupervisedNode, stop_all};

use super::SiteSpec;
use super::upstream::TopUpstream;

/// How long a node may take to listen after it was started (a debug build opening sled).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `--node-binary`, else `sitesync-node` next to this executable (where cargo puts both),
/// else the first on PATH.
pub fn find_node_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
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

/// A node process the demo started.
#[derive(Debug)]
pub struct SiteProcess {
    pub spec: &'static SiteSpec,
    pub node: SupervisedNode,
    /// The node's `--data-dir`, for the report.
    pub data_dir: PathBuf,
    /// `host:port`, once the node wrote its address file.
    pub address: String,
    /// Where the node serves `/metrics` (on loopback), once it listens.
    pub metrics_address: String,
}

/// How one node ended when the demo stopped it.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    #[serde(skip)]
    pub site_code: &'static str,
    /// `exited (exit status: 0)`, `killed: it did not stop within 10.0 s`.
    pub how: String,
    /// Whether it stopped on SIGTERM with success.
    pub clean: bool,
    #[serde(skip)]
    pub log: String,
}

/// The node processes the demo started, in the order of [`SITES`](super::SITES): the guard
/// that stops them all when dropped.
#[derive(Debug, Default)]
pub struct Nodes {
    pub sites: Vec<SiteProcess>,
}

impl Nodes {
    /// Starts the node of `spec` in `<work>/<site code>/`, a child of `parent` or else the
    /// top site syncing from `upstream`; it is owned by `self` from then on, so it is
    /// stopped even if it never comes up.
    pub fn start(
        &mut self,
        binary: &Path,
        spec: &'static SiteSpec,
        work: &Path,
        parent: Option<&str>,
        upstream: &TopUpstream,
        pki: &Path,
    ) -> anyhow::Result<()> {
        let mut command = NodeCommand::new(binary, spec.code, &work.join(spec.code));
        command
            .arg("--site-code")
            .arg(spec.code)
            .arg("--role")
            .arg(spec.role.name())
            .arg("--pki-dir")
            .arg(pki)
            // Metrics on loopback, so a Prometheus on this machine can watch the demo.
            .arg("--metrics-listen")
            .arg("127.0.0.1:0");
        match parent {
            Some(parent) => {
                command.arg("--parent").arg(parent);
            }
            None => upstream.configure(&mut command),
        }
        let node = command.own_process_group().spawn()?;
        self.sites.push(SiteProcess {
            spec,
            node,
            data_dir: command.data_dir(),
            address: String::new(),
            metrics_address: String::new(),
        });
        Ok(())
    }

    /// Waits until node `index` wrote its address file.
    pub async fn wait_listening(&mut self, index: usize) -> anyhow::Result<()> {
        let site = &mut self.sites[index];
        site.address = site.node.wait_listening(START_TIMEOUT).await?.to_string();
        site.metrics_address = site
            .node
            .metrics_address()
            .map(|address| address.to_string())
            .unwrap_or_default();
        Ok(())
    }

    pub fn address_of(&self, code: &str) -> anyhow::Result<String> {
        self.sites
            .iter()
            .find(|s| s.spec.code == code && !s.address.is_empty())
            .map(|s| s.address.clone())
            .ok_or_else(|| anyhow!("{code} is not listening yet"))
    }

    /// Fails if a node exited while the demo needs it.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for site in &mut self.sites {
            site.node.check_running()?;
        }
        Ok(())
    }

    /// Stops every node at once (see [`stop_all`]). Idempotent: a node already reaped is
    /// reported as it ended.
    pub fn stop(&mut self) -> Vec<Stopped> {
        let endings = stop_all(self.sites.iter_mut().map(|site| &mut site.node), STOP_GRACE);
        self.sites
            .iter()
            .zip(endings)
            .map(|(site, ending)| Stopped {
                site_code: site.spec.code,
                how: ending.to_string(),
                clean: ending.is_clean(),
                log: site.node.log().display().to_string(),
            })
            .collect()
    }

    /// Leaves the nodes running (`--keep`): the guard no longer stops them.
    pub fn detach(&mut self) {
        for site in self.sites.drain(..) {
            site.node.detach();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}
