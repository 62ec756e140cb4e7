//! The running hierarchy as the tests see it: each node's Admin service over mutual TLS
//! (as the operator `admin`, on the port Compose publishes on the host's loopback), polled
//! fast enough to act in the middle of a sync; and a watch on every store's change-log
//! sequence, so that one going backwards anywhere in a run (SPEC invariant 3) is caught.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use sitesync_proto::v1;
use sitesync_proto::v1::admin_client::AdminClient;
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::docker::Compose;

/// Every node of the Compose hierarchy, parents before children.
pub const SITES: [&str; 5] = ["CEN", "PR1", "PR2", "SE1", "IN1"];

/// How long one status call may take (a paused node never answers).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The service name of a site (its code in lower case).
pub fn service(site: &str) -> String {
    site.to_ascii_lowercase()
}

/// Where one store stands: its log's identity and newest sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub log_id: String,
    pub sequence: u64,
}

/// What was last seen of one node's stores and replication.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub update_server: Option<Position>,
    pub site_database: Option<Position>,
    pub replication_applied: Option<u64>,
}

pub struct Cluster {
    pub compose: Compose,
    transport: Transport,
    /// Site code → (published address, channel); refreshed when a container starts again.
    channels: Mutex<BTreeMap<String, (String, Channel)>>,
    seen: Mutex<BTreeMap<String, Seen>>,
    /// Every time a sequence was seen to go backwards.
    violations: Mutex<Vec<String>>,
}

impl Cluster {
    /// `pki` holds a copy of the hierarchy's CA certificate and the operator's certificate.
    pub fn new(compose: Compose, pki: &Path) -> anyhow::Result<Self> {
        let files = TlsFiles::in_pki_dir(pki, &Identity::operator("admin")?);
        let context = TlsContext::load(files).context("the operator's certificate")?;
        Ok(Self {
            compose,
            transport: Transport::Tls(context),
            channels: Mutex::default(),
            seen: Mutex::default(),
            violations: Mutex::default(),
        })
    }

    /// Forgets the address of `site`: its container started again on another port.
    pub fn forget(&self, site: &str) {
        self.channels.lock().unwrap().remove(site);
    }

    fn admin(&self, site: &str) -> anyhow::Result<AdminClient<Channel>> {
        let mut channels = self.channels.lock().unwrap();
        if let Some((_, channel)) = channels.get(site) {
            return Ok(AdminClient::new(channel.clone()));
        }
        let address = self.compose.published(&service(site))?;
        let channel = self.transport.channel(&address, |e| {
            e.connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT)
        })?;
        channels.insert(site.to_owned(), (address, channel.clone()));
        Ok(AdminClient::new(channel))
    }

    /// The node's status, watched for sequences going backwards.
    pub async fn status(&self, site: &str) -> anyhow::Result<v1::SiteStatus> {
        let mut admin = self.admin(site)?;
        let answer = admin
            .get_site_status(v1::GetSiteStatusRequest::default())
            .await;
        let status = match answer {
            Ok(status) => status.into_inner(),
            Err(e) => {
                // The port may have changed under a lazy channel: look it up again next time.
                if e.code() == tonic::Code::Unavailable {
                    self.forget(site);
                }
                bail!("{site}: {}: {}", e.code(), e.message());
            }
        };
        self.observe(site, &status);
        Ok(status)
    }

    /// Status messages `ids` of `site` (all sites' when asked at the top), newest first.
    pub async fn messages(
        &self,
        site: &str,
        ids: &[v1::StatusMessageId],
        sync_id: &str,
    ) -> anyhow::Result<Vec<v1::StatusMessage>> {
        let mut admin = self.admin(site)?;
        let answer = admin
            .list_status_messages(v1::ListStatusMessagesRequest {
                message_ids: ids.iter().map(|id| *id as i32).collect(),
                sync_id: sync_id.to_owned(),
                page_size: 200,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{site}: {}: {}", e.code(), e.message()))?;
        Ok(answer.into_inner().messages)
    }

    fn observe(&self, site: &str, status: &v1::SiteStatus) {
        let Some(state) = &status.site else { return };
        let position = |store: &Option<v1::StoreInfo>| {
            store
                .as_ref()
                .and_then(|s| s.latest.as_ref())
                .map(|a| Position {
                    log_id: a.log_id.clone(),
                    sequence: a.sequence,
                })
        };
        let now = Seen {
            update_server: position(&state.update_server),
            site_database: position(&state.site_database),
            replication_applied: state
                .replication
                .as_ref()
                .and_then(|r| r.applied.as_ref())
                .map(|a| a.sequence),
        };
        let mut seen = self.seen.lock().unwrap();
        let before = seen.entry(site.to_owned()).or_default();
        let mut violations = Vec::new();
        for (what, old, new) in [
            ("update server", &before.update_server, &now.update_server),
            ("site database", &before.site_database, &now.site_database),
        ] {
            if let (Some(old), Some(new)) = (old, new) {
                if old.log_id != new.log_id && !old.log_id.is_empty() {
                    violations.push(format!(
                        "{site}'s {what} has a new change log ({} at {} became {} at {}): it started again from zero",
                        old.log_id, old.sequence, new.log_id, new.sequence
                    ));
                } else if new.sequence < old.sequence {
                    violations.push(format!(
                        "{site}'s {what} went back from sequence {} to {}",
                        old.sequence, new.sequence
                    ));
                }
            }
        }
        if let (Some(old), Some(new)) = (before.replication_applied, now.replication_applied)
            && new < old
        {
            violations.push(format!(
                "{site}'s applied replication position went back from {old} to {new}"
            ));
        }
        // Keep the highest seen, so one bad answer is reported once.
        let keep = |old: &Option<Position>, new: Option<Position>| match (old, new) {
            (Some(old), Some(new)) if new.sequence < old.sequence => Some(old.clone()),
            (old, None) => old.clone(),
            (_, new) => new,
        };
        before.update_server = keep(&before.update_server, now.update_server);
        before.site_database = keep(&before.site_database, now.site_database);
        before.replication_applied = before.replication_applied.max(now.replication_applied);
        drop(seen);
        if !violations.is_empty() {
            for v in &violations {
                eprintln!("VIOLATION (invariant 3): {v}");
            }
            self.violations.lock().unwrap().extend(violations);
        }
    }

    /// What was last seen of `site`.
    pub fn seen(&self, site: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .get(site)
            .cloned()
            .unwrap_or_default()
    }

    /// Every sequence seen going backwards so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Polls `site` until `done` holds for its status; fails after `timeout`, with the
    /// last status or error. Returns the status.
    pub async fn wait_for(
        &self,
        site: &str,
        what: &str,
        timeout: Duration,
        every: Duration,
        done: impl Fn(&v1::SiteStatus) -> bool,
    ) -> anyhow::Result<v1::SiteStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status(site).await {
                Ok(status) if done(&status) => return Ok(status),
                Ok(status) => summary(&status),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("{site} did not reach \"{what}\" within {timeout:?}; last seen: {last}");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The update-server and site-database digests of a status, as hex.
pub fn digests(status: &v1::SiteStatus) -> (String, String) {
    let hex = |store: Option<&v1::StoreInfo>| {
        store
            .and_then(|s| s.digest.as_ref())
            .map(|d| d.value.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    };
    let site = status.site.as_ref();
    (
        hex(site.and_then(|s| s.update_server.as_ref())),
        hex(site.and_then(|s| s.site_database.as_ref())),
    )
}

pub fn last_sync(status: &v1::SiteStatus) -> Option<&v1::SyncRun> {
    status.site.as_ref().and_then(|s| s.last_sync.as_ref())
}

pub fn current_sync(status: &v1::SiteStatus) -> Option<&v1::SyncRun> {
    status.site.as_ref().and_then(|s| s.current_sync.as_ref())
}

/// Idle, and the last sync succeeded.
pub fn settled(status: &v1::SiteStatus) -> bool {
    current_sync(status).is_none()
        && last_sync(status).is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
}

/// The newest sequence of both stores.
pub fn sequences(status: &v1::SiteStatus) -> (u64, u64) {
    let sequence = |store: Option<&v1::StoreInfo>| {
        store
            .and_then(|s| s.latest.as_ref())
            .map_or(0, |a| a.sequence)
    };
    let site = status.site.as_ref();
    (
        sequence(site.and_then(|s| s.update_server.as_ref())),
        sequence(site.and_then(|s| s.site_database.as_ref())),
    )
}

/// One line about a status, for progress and failure messages.
pub fn summary(status: &v1::SiteStatus) -> String {
    let (u, s) = sequences(status);
    let (du, ds) = digests(status);
    let run = |r: Option<&v1::SyncRun>| match r {
        None => "none".to_owned(),
        Some(r) => format!(
            "{} {:?}/{:?} {}{}",
            r.sync_id,
            r.phase(),
            r.result(),
            r.progress
                .as_ref()
                .map(|p| format!("{}/{} ", p.done, p.total))
                .unwrap_or_default(),
            r.failure_reason
        ),
    };
    format!(
        "update server seq {u} digest {}, site database seq {s} digest {}, current [{}], last [{}]",
        short(&du),
        short(&ds),
        run(current_sync(status)),
        run(last_sync(status))
    )
}

pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(16)]
}
