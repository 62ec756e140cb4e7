//! The top site's upstream in the demo: the generated catalog directory itself
//! (`--upstream-dir`), or with `--wsus` a fake upstream WSUS server (`sitesync-wsus-fake`)
//! serving that directory over [MS-WSUSSS] on loopback (`--upstream-wsus`), so the top site's
//! sync runs the real protocol — the handshake, the category and update lists, the update
//! documents in batches — and the summary shows what the server answered. The server runs on
//! the demo's runtime; [`TopUpstream::shutdown`] stops it once every site converged, and
//! dropping it (an error, Ctrl-C) stops it too.
//!
//! [MS-WSUSSS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsusss/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use sitesync_supervise::NodeCommand;
use sitesync_wsus::Operation;
use sitesync_wsus_fake::{FakeWsus, FakeWsusOptions};

/// Where the top site syncs from.
#[derive(Debug)]
pub enum TopUpstream {
    /// The catalog directory, read by the top site itself.
    Directory(PathBuf),
    /// The fake upstream WSUS server serving the catalog directory.
    Wsus(FakeWsus),
}

impl TopUpstream {
    /// The catalog directory as it is or, with `wsus`, a fake upstream WSUS server serving it
    /// on a free loopback port, on the current runtime.
    pub async fn start(catalog: &Path, wsus: bool) -> anyhow::Result<Self> {
        if !wsus {
            return Ok(Self::Directory(catalog.to_owned()));
        }
        let server = FakeWsus::start(catalog, FakeWsusOptions::default())
            .await
            .context("cannot start the fake upstream WSUS server")?;
        Ok(Self::Wsus(server))
    }

    /// Gives the top site's node the flag that names this upstream.
    pub fn configure(&self, command: &mut NodeCommand) {
        match self {
            Self::Directory(dir) => command.arg("--upstream-dir").arg(dir),
            Self::Wsus(server) => command
                .arg("--upstream-wsus")
                .arg(server.url())
                // The node reads its proxy from the environment, and a proxy cannot reach
                // this machine's loopback.
                .env("NO_PROXY", "127.0.0.1"),
        };
    }

    /// The fake server's URL; `None` for the directory.
    pub fn wsus_url(&self) -> Option<String> {
        match self {
            Self::Directory(_) => None,
            Self::Wsus(server) => Some(server.url()),
        }
    }

    /// What the upstream was and, for the fake server, what it answered so far.
    pub fn report(&self) -> UpstreamReport {
        match self {
            Self::Directory(dir) => UpstreamReport {
                kind: "directory",
                location: dir.display().to_string(),
                requests: None,
                documents_served: None,
            },
            Self::Wsus(server) => UpstreamReport {
                kind: "wsus",
                location: server.url(),
                requests: Some(
                    Operation::ALL
                        .into_iter()
                        .map(|operation| (operation.name(), server.requests(operation)))
                        .collect(),
                ),
                documents_served: Some(server.served().len()),
            },
        }
    }

    /// Stops the fake server and waits until its port is closed; nothing for the directory.
    pub async fn shutdown(self) {
        if let Self::Wsus(server) = self {
            server.shutdown().await;
        }
    }
}

/// The top site's upstream, in the summary and in `demo --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamReport {
    /// `directory` (`--upstream-dir`) or `wsus` (`--upstream-wsus`, with `--wsus`).
    pub kind: &'static str,
    /// The catalog directory, or the fake WSUS server's URL (`http://127.0.0.1:<port>`).
    pub location: String,
    /// With `wsus`: the requests the server received, by [MS-WSUSSS] operation.
    ///
    /// [MS-WSUSSS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsusss/
    pub requests: Option<BTreeMap<&'static str, u64>>,
    /// With `wsus`: the update documents GetUpdateData sent, counting each time one was sent.
    pub documents_served: Option<usize>,
}

impl UpstreamReport {
    /// The summary table's rows: where the top site synced from and, for the fake server,
    /// its requests in the order a sync makes them.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let Some(requests) = &self.requests else {
            return vec![("upstream", format!("the directory {}", self.location))];
        };
        let counts: Vec<String> = Operation::ALL
            .into_iter()
            .map(|operation| {
                let count = requests.get(operation.name()).copied().unwrap_or(0);
                format!("{count} {}", operation.name())
            })
            .collect();
        vec![
            (
                "upstream",
                format!("fake WSUS server {} ([MS-WSUSSS])", self.location),
            ),
            (
                "WSUS requests",
                format!(
                    "{}; {} update documents sent",
                    counts.join(", "),
                    self.documents_served.unwrap_or(0)
                ),
            ),
        ]
    }
}
