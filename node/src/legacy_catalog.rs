//! The legacy scan catalog (S13): the whole catalog in one signed index and shards by
//! revision range (crate `sitesync-legacy`), for older clients that scan offline.
//!
//! - At the **host** (the top site, `[legacy_catalog] host = true`) a background task
//!   builds it from the site database every `refresh` (7 days by default) and on demand
//!   (`Admin.BuildLegacyCatalog`). Syncs never wait for it: the build reads the site
//!   database on a blocking thread while syncs go on, and writes only the shards whose
//!   content changed.
//! - At **every other site** a background task asks the parent every `poll` whether it
//!   holds a newer build, and takes it (the index checked against the hierarchy's CA, then
//!   only the shards it lacks), so each site serves its own clients.
//! - Every site serves what it holds from `<data_dir>/legacy-catalog` over
//!   `ClientPolicy.GetLegacyScanCatalog`.
//!
//! Status messages: 6791 a build started, 6792 a build is done, 6793 a build failed, 6794
//! a site took a new build from its parent, 6795 taking it failed.
//!
//! What a build holds: the latest revision of every update that is not expired and belongs
//! to one of the configured classifications (`Security Updates`, `Update Rollups` and
//! `Service Packs` by default, as Microsoft's file), with every update those name as a
//! category, prerequisite or bundled update, transitively (unless expired).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sitesync_legacy::build::{BuildError, IndexMeta, ShardPolicy};
use sitesync_legacy::verify::{CatalogError, HeldIndex, held_index};
use sitesync_metadata::{CategoryType, PublicationState, RevisionId, Timestamp, UpdateId};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::clock::TimestampExt as _;
use crate::node::NodeState;
use crate::store::{Backend, CatalogStore, StoreError, WriteBatch};
use crate::sync::manager::SyncManager;
use crate::sync::settings::{CategorySelector, categories_in_store};
use crate::sync::status::StatusMessageId;

/// The catalog's directory under the data directory.
pub const DIR: &str = "legacy-catalog";

/// How long after its build an index stays valid, in refresh periods: clients keep
/// scanning through one missed refresh, never against a catalog frozen for longer.
const VALID_REFRESHES: u32 = 2;

/// After a failed fetch from the parent, the next try waits this long (or `poll`, if
/// shorter).
const FETCH_RETRY: Duration = Duration::from_secs(60);

const KEY_REFRESH: &[u8] = b"refresh";

/// Why a build or a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error(
        "only the catalog host builds the legacy scan catalog: set [legacy_catalog] host = true at the top site"
    )]
    NotHost,
    #[error(
        "the site database holds no signed catalog yet: the first build follows the first successful sync"
    )]
    NothingSynced,
    #[error("the legacy scan catalog is being stopped with the node")]
    Stopping,
    #[error("reading the site database: {0}")]
    Store(#[from] StoreError),
    #[error("building the catalog: {0}")]
    Build(String),
}

/// What the latest build (at the host) or fetch (elsewhere) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub shards_written: usize,
    pub bytes_written: u64,
    pub shards_reused: usize,
}

/// The catalog a site holds, for `Admin.GetLegacyCatalogStatus`.
#[derive(Debug, Clone)]
pub struct CatalogStatus {
    pub host: bool,
    /// The index held, as served (encoded), and its decoded form.
    pub held: Option<HeldIndex>,
    pub next_build_at: Option<Timestamp>,
    pub refresh: Duration,
    pub last_error: Option<String>,
    pub outcome: Outcome,
}

/// What a site's parent gives: its catalog, fetched into a directory (implemented over
/// gRPC at the edge). `check` judges the offered index given the build held.
pub trait ParentLegacyCatalog: Send + Sync + std::fmt::Debug + 'static {
    fn fetch<'a>(&'a self, dir: &'a Path, check: Check) -> FetchFuture<'a>;
}

/// The index check a fetch applies.
pub type Check = Box<
    dyn FnOnce(
            &sitesync_legacy::SignedIndex,
            Option<u64>,
        ) -> Result<sitesync_legacy::Index, CatalogError>
        + Send,
>;

/// What [`ParentLegacyCatalog::fetch`] returns.
pub type FetchFuture<'a> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    sitesync_legacy::fetch::FetchReport,
                    sitesync_legacy::fetch::FetchError,
                >,
            > + Send
            + 'a,
    >,
>;

/// A node's legacy scan catalog: what it holds, and the task that builds or fetches it.
#[derive(Debug, Clone)]
pub struct LegacyCatalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: Arc<NodeState>,
    dir: PathBuf,
    space: Box<dyn Backend>,
    /// On-demand builds, answered when done.
    requests: mpsc::Sender<oneshot::Sender<Result<Outcome, String>>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_error: Option<String>,
    outcome: Outcome,
}

impl LegacyCatalog {
    /// Opens the catalog of `node` and starts its task: building at the host, fetching
    /// from `parent` elsewhere (no task when there is neither).
    pub fn start(
        node: Arc<NodeState>,
        sync: SyncManager,
        parent: Option<Arc<dyn ParentLegacyCatalog>>,
    ) -> Result<Self, StoreError> {
        let dir = node.config.data_dir.join(DIR);
        let space = node.database.space("legacy-catalog")?;
        let (requests, received) = mpsc::channel(16);
        let catalog = Self {
            inner: Arc::new(Inner {
                node: node.clone(),
                dir,
                space,
                requests,
                state: Mutex::new(State::default()),
            }),
        };
        if node.config.legacy_catalog.host {
            let host = catalog.clone();
            node.spawn_background(async move { host.build_loop(sync, received).await });
        } else if let Some(parent) = parent {
            let site = catalog.clone();
            node.spawn_background(async move { site.fetch_loop(sync, parent).await });
        }
        Ok(catalog)
    }

    /// Where the catalog is kept and served from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn is_host(&self) -> bool {
        self.inner.node.config.legacy_catalog.host
    }

    /// How often the host builds: the operator's setting, else the configuration's.
    pub fn refresh(&self) -> Duration {
        self.inner
            .space
            .get(KEY_REFRESH)
            .ok()
            .flatten()
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(|bytes| Duration::from_secs(u64::from_be_bytes(bytes)))
            .unwrap_or(self.inner.node.config.legacy_catalog.refresh)
    }

    /// Changes how often the host builds (`sitesyncctl settings set
    /// --legacy-catalog-refresh`); the next build is due `refresh` after the last.
    pub fn set_refresh(&self, refresh: Duration) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(
            KEY_REFRESH.to_vec(),
            refresh.as_secs().to_be_bytes().to_vec(),
        );
        self.inner.space.apply(batch)?;
        self.inner.space.flush()?;
        // Wake the task with a request nobody waits for: it computes the next build again
        // rather than build.
        let (answer, _) = oneshot::channel();
        let _ = self.inner.requests.try_send(answer);
        Ok(())
    }

    /// Builds now, at the host, and returns once the build is done.
    pub async fn build_now(&self) -> Result<Outcome, LegacyError> {
        if !self.is_host() {
            return Err(LegacyError::NotHost);
        }
        let (answer, done) = oneshot::channel();
        self.inner
            .requests
            .send(answer)
            .await
            .map_err(|_| LegacyError::Stopping)?;
        match done.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(reason)) => Err(LegacyError::Build(reason)),
            Err(_) => Err(LegacyError::Stopping),
        }
    }

    /// The index this site holds, if any (read from disk: what is served).
    pub fn held(&self) -> Option<HeldIndex> {
        held_index(&self.inner.dir)
    }

    pub fn status(&self) -> CatalogStatus {
        let state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        CatalogStatus {
            host: self.is_host(),
            held: self.held(),
            next_build_at: self.next_build_at(),
            refresh: self.refresh(),
            last_error: state.last_error.clone(),
            outcome: state.outcome.clone(),
        }
    }

    /// At the host: when the next build is due — `refresh` after the last, or now when
    /// there is none and the site has synced; `None` before the first sync and elsewhere.
    pub fn next_build_at(&self) -> Option<Timestamp> {
        if !self.is_host() {
            return None;
        }
        match self.held() {
            Some(held) => Some(
                sitesync_legacy::built_at(&held.index)
                    .unwrap_or(Timestamp(0))
                    .saturating_add(self.refresh()),
            ),
            None => has_synced(&self.inner.node).then(|| self.inner.node.clock.now()),
        }
    }

    /// The path of the shard named by `sha256` (32 bytes), if this site holds it.
    pub fn shard_path(&self, sha256: &[u8]) -> Option<PathBuf> {
        if sha256.len() != 32 {
            return None;
        }
        let path = self
            .inner
            .dir
            .join(sitesync_legacy::SHARDS_DIR)
            .join(sitesync_legacy::shard_file_name(sha256));
        path.is_file().then_some(path)
    }

    fn record(&self, result: &Result<Outcome, String>) {
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(outcome) => {
                state.outcome = outcome.clone();
                state.last_error = None;
            }
            Err(reason) => state.last_error = Some(reason.clone()),
        }
    }

    fn message(
        &self,
        sync: &SyncManager,
        id: StatusMessageId,
        text: String,
        properties: BTreeMap<String, String>,
    ) {
        let node = &self.inner.node;
        if let Err(e) = sync.status_log().append(
            node.config.site_code.as_str(),
            id,
            0,
            text,
            properties,
            node.clock.now(),
        ) {
            warn!(error = %e, "cannot record a legacy catalog status message");
        }
    }

    /// At the host: builds when due (`refresh` after the last build, or at once when there
    /// is none and the site has synced) and when asked.
    async fn build_loop(
        self,
        sync: SyncManager,
        mut requests: mpsc::Receiver<oneshot::Sender<Result<Outcome, String>>>,
    ) {
        let node = self.inner.node.clone();
        let mut synced = sync.watch();
        loop {
            let due = self.next_build_at();
            let answer = tokio::select! {
                () = node.clock.sleep_until(due.unwrap_or(Timestamp(i64::MAX))) => None,
                request = requests.recv() => match request {
                    Some(answer) if answer.is_closed() => continue,
                    Some(answer) => Some(answer),
                    None => return,
                },
                // Before the first build: a sync that completes makes it due.
                changed = synced.changed(), if due.is_none() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let trigger = if answer.is_some() {
                "operator"
            } else {
                "schedule"
            };
            let result = self.build(&sync, trigger).await;
            if let Some(answer) = answer {
                let _ = answer.send(result);
            } else if result.is_err() {
                // A scheduled build that failed is tried again after a while, not at once.
                tokio::select! {
                    () = node.clock.sleep(FETCH_RETRY) => {}
                    request = requests.recv() => match request {
                        Some(answer) if !answer.is_closed() => {
                            let result = self.build(&sync, "operator").await;
                            let _ = answer.send(result);
                        }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
        }
    }

    async fn build(&self, sync: &SyncManager, trigger: &str) -> Result<Outcome, String> {
        let node = self.inner.node.clone();
        let dir = self.inner.dir.clone();
        let refresh = self.refresh();
        self.message(
            sync,
            StatusMessageId::LegacyCatalogBuildStarted,
            format!("Legacy scan catalog build started ({trigger})"),
            BTreeMap::from([("trigger".to_owned(), trigger.to_owned())]),
        );
        let started = std::time::Instant::now();
        let result =
            tokio::task::spawn_blocking(move || build_from_site_database(&node, &dir, refresh))
                .await
                .map_err(|e| LegacyError::Build(format!("the build stopped: {e}")))
                .and_then(|r| r);
        let result = match result {
            Ok(report) => {
                let index = &report.index;
                info!(
                    build = index.build,
                    revisions = index.revision_count,
                    updates = index.update_count,
                    shards = index.shards.len(),
                    written = report.written,
                    reused = report.reused,
                    bytes_written = report.bytes_written,
                    total_bytes = report.total_bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "legacy scan catalog built"
                );
                self.message(
                    sync,
                    StatusMessageId::LegacyCatalogBuilt,
                    format!(
                        "Legacy scan catalog build {} is done: {} revisions of {} updates in {} shards ({} new, {} unchanged), {} bytes in all",
                        index.build,
                        index.revision_count,
                        index.update_count,
                        index.shards.len(),
                        report.written,
                        report.reused,
                        report.total_bytes
                    ),
                    BTreeMap::from([
                        ("build".to_owned(), index.build.to_string()),
                        ("revisions".to_owned(), index.revision_count.to_string()),
                        ("shards".to_owned(), index.shards.len().to_string()),
                        ("shards_written".to_owned(), report.written.to_string()),
                        ("bytes_written".to_owned(), report.bytes_written.to_string()),
                        ("total_bytes".to_owned(), report.total_bytes.to_string()),
                    ]),
                );
                Ok(Outcome {
                    shards_written: report.written,
                    bytes_written: report.bytes_written,
                    shards_reused: report.reused,
                })
            }
            Err(e) => {
                warn!(error = %e, "legacy scan catalog build failed");
                self.message(
                    sync,
                    StatusMessageId::LegacyCatalogBuildFailed,
                    format!("Legacy scan catalog build failed: {e}"),
                    BTreeMap::new(),
                );
                Err(e.to_string())
            }
        };
        self.record(&result);
        result
    }

    /// Elsewhere: asks the parent every `poll` for a newer build (a failed attempt is tried
    /// again within a minute).
    async fn fetch_loop(self, sync: SyncManager, parent: Arc<dyn ParentLegacyCatalog>) {
        let node = self.inner.node.clone();
        let poll = node.config.legacy_catalog.poll;
        loop {
            let wait = match self.fetch(&sync, parent.as_ref()).await {
                Ok(_) => poll,
                Err(_) => poll.min(FETCH_RETRY),
            };
            node.network_clock.sleep(wait).await;
        }
    }

    async fn fetch(
        &self,
        sync: &SyncManager,
        parent: &dyn ParentLegacyCatalog,
    ) -> Result<Outcome, String> {
        let node = self.inner.node.clone();
        let Some(versions) = node.catalog_versions.as_ref() else {
            return Err(
                "this node runs without TLS and cannot check the catalog's signature".into(),
            );
        };
        let (cas, is_revoked) = versions.trust();
        // The sync clock, as catalog versions are judged by.
        let now = node.clock.now();
        let held_before = self.held().map(|h| h.index.build);
        let check: Check = Box::new(move |signed, held| {
            sitesync_legacy::verify::check_index(signed, &cas, is_revoked, now, held)
        });
        let result = parent.fetch(&self.inner.dir, check).await;
        let result = match result {
            Ok(report) => {
                if held_before != Some(report.index.build) {
                    info!(
                        build = report.index.build,
                        shards = report.shards_fetched,
                        bytes = report.bytes_fetched,
                        held = report.shards_held,
                        "took the parent's legacy scan catalog"
                    );
                    self.message(
                        sync,
                        StatusMessageId::LegacyCatalogReceived,
                        format!(
                            "Took legacy scan catalog build {} from the parent: {} shards fetched ({} bytes), {} already held",
                            report.index.build,
                            report.shards_fetched,
                            report.bytes_fetched,
                            report.shards_held
                        ),
                        BTreeMap::from([
                            ("build".to_owned(), report.index.build.to_string()),
                            ("shards_fetched".to_owned(), report.shards_fetched.to_string()),
                            ("bytes_fetched".to_owned(), report.bytes_fetched.to_string()),
                        ]),
                    );
                }
                Ok(Outcome {
                    shards_written: report.shards_fetched,
                    bytes_written: report.bytes_fetched,
                    shards_reused: report.shards_held,
                })
            }
            // The parent has none yet: nothing to take, nothing wrong here.
            Err(sitesync_legacy::fetch::FetchError::NotFound(_)) => Ok(Outcome::default()),
            Err(e) => {
                let reason = e.to_string();
                let was = self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error
                    .clone();
                // One message per new failure, not one per poll.
                if was.as_deref() != Some(reason.as_str()) {
                    warn!(error = %reason, "cannot take the parent's legacy scan catalog");
                    self.message(
                        sync,
                        StatusMessageId::LegacyCatalogFetchFailed,
                        format!("Taking the parent's legacy scan catalog failed: {reason}"),
                        BTreeMap::new(),
                    );
                }
                Err(reason)
            }
        };
        self.record(&result);
        result
    }
}

/// The signed catalog version of the last completed sync (one that covers the site
/// database): the first build waits for it rather than build from a half-synced site.
fn synced_version(node: &NodeState) -> Option<crate::catalog_version::Held> {
    node.catalog_versions
        .as_ref()
        .and_then(|v| v.held())
        .filter(|held| held.site_database_digest().is_some())
}

fn has_synced(node: &NodeState) -> bool {
    synced_version(node).is_some()
}

/// Builds the catalog into `dir` from the site database (see the module documentation).
fn build_from_site_database(
    node: &NodeState,
    dir: &Path,
    refresh: Duration,
) -> Result<sitesync_legacy::build::BuildReport, LegacyError> {
    let versions = node.catalog_versions.as_ref().ok_or(LegacyError::NotHost)?;
    let held = synced_version(node).ok_or(LegacyError::NothingSynced)?;
    let signer = versions
        .signer()
        .map_err(|e| LegacyError::Build(format!("the catalog key: {e}")))?;
    let store: &CatalogStore = node.database.site_database();
    let selected = select(store, &node.config.legacy_catalog.classifications)?;
    let now = node.clock.now();
    let meta = IndexMeta {
        top_site_code: node.config.site_code.as_str().to_owned(),
        build: sitesync_legacy::fetch::held_build(dir).unwrap_or(0) + 1,
        catalog_version: held.number(),
        built_at: now,
        expires_at: now.saturating_add(refresh.saturating_mul(VALID_REFRESHES)),
    };
    let revisions = selected
        .into_iter()
        .map(|id| -> Result<(RevisionId, Vec<u8>), StoreError> {
            let document = store.document(id)?.ok_or_else(|| StoreError::Corrupt {
                what: format!("revision {id} is held but its document is missing"),
            })?;
            Ok((id, document))
        });
    let policy = ShardPolicy {
        span: node.config.legacy_catalog.shard_updates,
        ..ShardPolicy::default()
    };
    sitesync_legacy::build::build(dir, revisions, meta, &signer, policy).map_err(|e| match e {
        BuildError::Source(e) => LegacyError::Store(e),
        other => LegacyError::Build(other.to_string()),
    })
}

/// The revisions a build holds, in (update id, revision) order.
fn select(store: &CatalogStore, classifications: &[String]) -> Result<Vec<RevisionId>, StoreError> {
    const PAGE: usize = 4096;
    // The classification categories named, by id or title (validated with the config).
    let selectors: Vec<CategorySelector> = classifications
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let classes = categories_in_store(store, &selectors, |t| {
        t == Some(CategoryType::UpdateClassification)
    })?;
    // Updates of those classifications, not expired.
    let mut chosen: BTreeMap<UpdateId, RevisionId> = BTreeMap::new();
    let mut queue = Vec::new();
    let mut after = None;
    loop {
        let page = store.summaries(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.update_id);
        for summary in page {
            if summary.publication_state != PublicationState::Expired
                && summary.categories.iter().any(|c| classes.contains(c))
            {
                chosen.insert(summary.id.update_id, summary.id);
                queue.push(summary.id);
            }
        }
    }
    // And what they name, transitively.
    while let Some(id) = queue.pop() {
        let Some(revision) = store.revision(id)? else {
            continue;
        };
        let named = revision
            .prerequisites
            .iter()
            .chain(&revision.bundled)
            .flat_map(|r| r.members())
            .map(|m| m.update_id);
        for update in named {
            if chosen.contains_key(&update) {
                continue;
            }
            if let Some(summary) = store.latest(update)?
                && summary.publication_state != PublicationState::Expired
            {
                chosen.insert(update, summary.id);
                queue.push(summary.id);
            }
        }
    }
    Ok(chosen.into_values().collect())
}
