//! The sync manager (ConfigMgr's `SMS_WSUS_SYNC_MANAGER`): runs one sync at a time, on the
//! schedule, by hand, or again after a failure or a restart.
//!
//! A sync has the two phases of S7:
//! 1. **the update server** (6704): the upstream is scanned, the sync settings decide which
//!    updates are wanted, and the update-server store is brought to exactly those — new
//!    revisions, changed bytes, expirations (new revisions whose state is Expired) and
//!    deletions (updates no longer offered, or no longer selected). The comparison is by
//!    content hash against what the store holds, so it needs no memory of earlier syncs and
//!    redoing it after a crash changes nothing twice.
//! 2. **the site database** (6705): the update-server store's change log is replayed into
//!    the site database from the position of the last *full* sync. A full sync (scheduled,
//!    S3) applies every record and moves that position; a manual sync (S4) applies only
//!    updates that are new and leaves the rest, and the position, for the next full sync.
//!
//! Status messages 6701, 6704, 6705, 6702 / 6703 mark the way (S9); a document that cannot
//! be used is skipped with a 6790 warning and tried again next time. After a failure the
//! next sync is scheduled `retry` later (60 minutes by default). A sync that was running
//! when the node stopped is run again when it starts. After success a new client policy is
//! published (S8).
//!
//! Who starts a sync depends on where the node is (S2): a top site runs its schedule and
//! its operators' requests; a node whose upstream is a parent (a child site, or an
//! internet-facing node under its site) runs no schedule and syncs when its upstream asks,
//! plus its own retries and the redo after a restart.
//!
//! An internet-facing node (role `internet`, S11) has phase 1 only: 6701, 6704, 6702.
//!
//! A node whose upstream is export files (S12) syncs when an operator imports one
//! ([`SyncManager::request_import`]): the file, already verified, is phase 1; it runs no
//! schedule and no retries, and an import cut off by a stop is reported, not redone (the
//! operator imports the file again, which resumes where it stopped).
//!
//! Two [`SyncHooks`] let the node's hierarchy act without the manager knowing of it: one
//! after phase 1 (a site starts its internet-facing nodes' syncs, each reported with 6706)
//! and one after both phases, before 6702 (the cascade to child sites).
//!
//! Blocking work (the stores, the upstream's files) runs on tokio's blocking pool; the
//! manager's loop only decides what runs next and waits on the clock seam.
//!
//! This file holds the queue, the loop, retries and the orchestration of a sync's phases;
//! the phases themselves are in `top.rs` (phase 1 at a top site, from a catalog directory
//! or an upstream WSUS server), `replay.rs` (phase 2
//! at a top site and at a node fed by export files), `parent.rs` (both phases at a node with
//! a parent, over the change feed) and `import.rs` (phase 1 from an export file, over the
//! same feed), and `signing.rs` signs and checks catalog versions around them; `recording.rs`
//! tells the node's metrics.

mod import;
mod parent;
mod recording;
mod replay;
mod signing;
mod top;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sitesync_metadata::Timestamp;
use tokio::sync::{Notify, watch};
use tracing::field::Empty;
use tracing::{info, info_span, warn};

use super::settings::SyncSettings;
use super::status::{StatusLog, StatusMessageId};
use crate::clock::Clock;
use crate::config::Role;
use crate::feed::apply::FeedOutcome;
use crate::feed::{FeedError, ParentFeed};
use crate::node::NodeState;
use crate::policy::PolicyStore;
use crate::store::{ApplyOutcome, Backend, StoreError, WriteBatch};
use crate::telemetry::TraceContext;
use crate::telemetry::context::{current_trace_id, trace_id};
use crate::upstream::{DirectoryUpstream, UpstreamError, WsusUpstream, WsusUpstreamError};

/// Log records read per step of phase 2.
const LOG_PAGE: usize = 500;

/// The site-database metadata key holding the update-server log position of the last
/// full sync's phase 2; it moves in the same write as the batch that reaches it.
const FULL_SYNC_POSITION: &str = "sync.full-position";

const KEY_SETTINGS: &[u8] = b"settings";
const KEY_IN_PROGRESS: &[u8] = b"in-progress";
const KEY_LAST_RUN: &[u8] = b"last-run";
const KEY_LAST_SUCCEEDED: &[u8] = b"last-succeeded";
const KEY_LAST_SCHEDULED: &[u8] = b"last-scheduled-start";
const KEY_RETRY_AT: &[u8] = b"retry-at";
const KEY_NEXT_SYNC_ID: &[u8] = b"next-sync-id";
const KEY_SYNCED_SELECTION: &[u8] = b"synced-selection-revision";
/// The trace context of the last failed sync, which its retry continues.
const KEY_RETRY_TRACE: &[u8] = b"retry-trace";

/// The key of the trace context sync `id` continues.
fn trace_key(id: u64) -> Vec<u8> {
    let mut key = b"trace/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncKind {
    /// Every change since the last full sync (S3); what schedules, retries and parents run.
    Full,
    /// Only new updates (S4); started by an operator at the top site.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncTrigger {
    Schedule,
    Operator,
    Retry,
    /// A sync that was running when the node stopped.
    Restart,
    /// A sync request from the parent site (S2, S10), or, at an internet-facing node, from
    /// its own site (S11).
    ParentRequest,
    /// An export file imported by an operator, at a node whose upstream is imports (S12).
    Import,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncPhase {
    Queued,
    Starting,
    UpdateServer,
    SiteDatabase,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResult {
    Succeeded,
    Failed,
}

/// What one store phase changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
}

impl PhaseCounts {
    /// Adds what a pull or a replication from the parent changed.
    fn add_pulled(&mut self, outcome: &FeedOutcome) {
        self.new += outcome.new;
        self.changed += outcome.changed;
        self.expired += outcome.expired;
        self.deleted += outcome.deleted;
    }

    fn add(&mut self, outcome: &ApplyOutcome) {
        self.new += outcome.new;
        self.changed += outcome.changed;
        self.expired += outcome.expired;
        self.deleted += outcome.deleted;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    pub update_server: PhaseCounts,
    pub site_database: PhaseCounts,
    /// Documents skipped with a 6790 warning.
    pub skipped: u64,
    /// Bytes of documents taken from the upstream.
    pub bytes_received: u64,
}

/// One sync, queued, running or finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRun {
    pub id: u64,
    pub kind: SyncKind,
    pub trigger: SyncTrigger,
    pub phase: SyncPhase,
    pub result: Option<SyncResult>,
    pub requested_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub counts: SyncCounts,
    /// Work done and to do in the current phase (0 of 0 when unknown).
    pub progress: (u64, u64),
    pub failure_reason: Option<String>,
    pub retry_at: Option<Timestamp>,
    /// The trace the sync continues (the parent's sync request, the run a retry or a
    /// restart redoes); `None` starts a trace of its own. Kept under its own key
    /// ([`trace_key`]), so runs stored before traces still read.
    #[serde(skip)]
    pub trace: Option<TraceContext>,
}

/// How many finished runs [`ManagerView::recent`] keeps.
pub const RECENT_RUNS: usize = 32;

/// What the manager is doing: for status, progress bars and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerView {
    pub current: Option<SyncRun>,
    pub queued: Vec<SyncRun>,
    pub last: Option<SyncRun>,
    /// The last sync that succeeded: a parent asks a child that registers to catch up only
    /// once it has something to offer.
    pub last_succeeded: Option<SyncRun>,
    /// The most recent finished runs, newest last (at most [`RECENT_RUNS`]), so a watcher
    /// that arrives after its run finished still finds it.
    pub recent: Vec<SyncRun>,
    /// When the schedule runs the next sync; `None` at a node whose upstream is a parent,
    /// which runs no schedule (S2).
    pub next_scheduled_at: Option<Timestamp>,
    pub retry_at: Option<Timestamp>,
}

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Started(u64),
    Queued(u64),
}

/// Where the node's update server syncs from.
#[derive(Debug)]
pub enum UpstreamSource {
    /// A top site: a catalog directory.
    Directory(DirectoryUpstream),
    /// A top site: Microsoft Update or an existing WSUS server (S1).
    Wsus(WsusUpstream),
    /// A child site: the parent site's node, as a feed.
    Parent(Arc<dyn ParentFeed>),
    /// Export files (S12): each import hands its verified file, as a feed, to the sync it
    /// runs ([`SyncManager::request_import`]).
    Import,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Wsus(#[from] WsusUpstreamError),
    #[error("status messages: {0}")]
    Status(#[from] super::status::StatusError),
    #[error("sync settings: {0}")]
    Settings(String),
    /// An upstream document posing as a local publisher's (S6); skipped per document, so
    /// this only names it should it reach a sync's end.
    #[error("{0}")]
    ForeignCustom(String),
    #[error(
        "settings changed meanwhile (now at revision {current}, the change was made against {expected}); read them again and retry"
    )]
    SettingsConflict { current: u64, expected: u64 },
    #[error("the sync task stopped unexpectedly: {0}")]
    Task(String),
    #[error("syncing from the parent site {parent}: {source}")]
    Parent { parent: String, source: FeedError },
    #[error("replicating the site database from the parent site {parent}: {source}")]
    Replication { parent: String, source: FeedError },
    #[error(
        "the catalog of the parent site {parent} is refused: {source}; this node keeps the catalog it had"
    )]
    CatalogVersion {
        parent: String,
        source: crate::catalog_version::VersionError,
    },
    #[error("the top site cannot sign the catalog version: {0}")]
    Signing(crate::catalog_version::VersionError),
    #[error("cannot queue the sync requests for the child sites: {0}")]
    Cascade(String),
    #[error("cannot queue the sync requests for the internet-facing update servers: {0}")]
    InternetUpdateServers(String),
    #[error(
        "a manual sync is refused at a child site: child sites always run a full sync (S5), when their parent asks for one"
    )]
    ManualAtChild,
    #[error(
        "a manual sync is refused at an internet-facing node: it syncs from its own site's update server each time that one has synced (S11); run the sync at its site instead"
    )]
    ManualAtInternetNode,
    #[error(
        "a sync started by an operator is refused at a node with a parent: it syncs when its parent asks (S2); run the sync at the top site and it cascades down"
    )]
    OperatorAtChild,
    #[error(
        "this node's upstream is export files: it syncs by import (`sitesyncctl import FILE`), not on request"
    )]
    ImportOnly,
    #[error(
        "the import was cut off (the node stopped or the file went away); import the file again to complete it"
    )]
    ImportLost,
    #[error("importing {file}: {source}")]
    Import {
        file: String,
        source: Box<FeedError>,
    },
    #[error("the export file {file} is refused: {source}; this node keeps the catalog it had")]
    ImportVersion {
        file: String,
        source: Box<crate::catalog_version::VersionError>,
    },
}

/// The handle services and the node hold. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: Arc<NodeState>,
    clock: Arc<dyn Clock>,
    upstream: UpstreamSource,
    status: StatusLog,
    policy: PolicyStore,
    /// The manager's own durable state (settings, last run, in-progress marker).
    space: Box<dyn Backend>,
    queue: Mutex<Queue>,
    wake: Notify,
    view: watch::Sender<ManagerView>,
    hooks: SyncHooks,
    /// The files of queued and running imports, by sync id.
    imports: Mutex<HashMap<u64, Arc<dyn ParentFeed>>>,
}

/// What the node runs at two points of a successful sync. Either may fail the sync.
#[derive(Clone, Default)]
pub struct SyncHooks {
    /// After phase 1 succeeded, before phase 2: asks the site's internet-facing update
    /// servers to sync from it (S11). Each one asked is reported with 6706.
    pub after_update_server: Option<Arc<AfterUpdateServerFn>>,
    /// After every phase succeeded, before 6702: the cascade to the child sites (S10).
    pub on_success: Option<Arc<SuccessFn>>,
    /// After a sync failed because the parent could not be reached or broke off: the
    /// child registers again, so that a parent that restarted asks it again as soon as it
    /// is back instead of at the retry (S9) an hour later.
    pub on_parent_lost: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// The function of [`SyncHooks::after_update_server`]: the internet-facing update servers
/// it asked to sync.
pub type AfterUpdateServerFn =
    dyn Fn(&SyncRun) -> Result<Vec<InternetUpdateServer>, String> + Send + Sync;

/// The function of [`SyncHooks::on_success`].
pub type SuccessFn = dyn Fn(&SyncRun) -> Result<(), String> + Send + Sync;

/// An internet-facing node asked to sync from this site's update server (reported by 6706).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternetUpdateServer {
    pub site_code: String,
    /// `host:port`, for the message.
    pub address: String,
}

impl std::fmt::Debug for SyncHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHooks")
            .field("after_update_server", &self.after_update_server.is_some())
            .field("on_success", &self.on_success.is_some())
            .field("on_parent_lost", &self.on_parent_lost.is_some())
            .finish()
    }
}

/// What [`SyncManager::next_due`] found.
struct NextSync {
    /// The next sync that starts on its own, and why; `None` when only a request can
    /// start one.
    due: Option<(Timestamp, SyncTrigger)>,
    /// When the schedule runs its next sync (for status), `None` without a schedule.
    scheduled: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct Queue {
    running: bool,
    waiting: VecDeque<SyncRun>,
}

impl SyncManager {
    /// Opens the manager's state (initializing the settings from `initial_settings` on a
    /// node's first start) and starts its loop on the current tokio runtime.
    pub fn start(
        node: Arc<NodeState>,
        clock: Arc<dyn Clock>,
        upstream: UpstreamSource,
        status: StatusLog,
        policy: PolicyStore,
        space: Box<dyn Backend>,
        initial_settings: SyncSettings,
    ) -> Result<Self, SyncError> {
        Self::start_with_hooks(
            node,
            clock,
            upstream,
            status,
            policy,
            space,
            initial_settings,
            SyncHooks::default(),
        )
    }

    /// [`SyncManager::start`] with the hierarchy's [`SyncHooks`].
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_hooks(
        node: Arc<NodeState>,
        clock: Arc<dyn Clock>,
        upstream: UpstreamSource,
        status: StatusLog,
        policy: PolicyStore,
        space: Box<dyn Backend>,
        initial_settings: SyncSettings,
        hooks: SyncHooks,
    ) -> Result<Self, SyncError> {
        if space.get(KEY_SETTINGS).map_err(StoreError::from)?.is_none() {
            put(&*space, KEY_SETTINGS, &initial_settings)?;
        }
        let inner = Arc::new(Inner {
            node,
            clock,
            upstream,
            status,
            policy,
            space,
            queue: Mutex::default(),
            wake: Notify::new(),
            view: watch::Sender::new(ManagerView::default()),
            hooks,
            imports: Mutex::default(),
        });
        // History only: a record another version wrote is dropped, not a reason to stop.
        let last: Option<SyncRun> = get(&*inner.space, KEY_LAST_RUN).unwrap_or_else(|e| {
            warn!(error = %e, "the last sync's record is unreadable; it is forgotten");
            None
        });
        let last_succeeded: Option<SyncRun> = get(&*inner.space, KEY_LAST_SUCCEEDED)
            .unwrap_or_else(|e| {
                warn!(error = %e, "the last successful sync's record is unreadable; it is forgotten");
                None
            })
            // Written by a version that kept only the last run.
            .or_else(|| {
                last.clone()
                    .filter(|r| r.result == Some(SyncResult::Succeeded))
            });
        let retry_at: Option<Timestamp> = get(&*inner.space, KEY_RETRY_AT)?;
        inner.view.send_modify(|v| {
            v.recent = last.iter().cloned().collect();
            v.last = last;
            v.last_succeeded = last_succeeded;
            v.retry_at = retry_at;
        });
        let manager = Self { inner };
        match get::<SyncRun>(&*manager.inner.space, KEY_IN_PROGRESS) {
            // An import cannot be redone without its file: it is reported, and the operator
            // imports the file again (which resumes where it was cut off).
            Ok(Some(interrupted)) if manager.imports_only() => {
                manager.message(
                    StatusMessageId::SyncFailed,
                    interrupted.id,
                    format!("Synchronization failed: {}.", SyncError::ImportLost),
                    BTreeMap::new(),
                );
                delete(&*manager.inner.space, &[KEY_IN_PROGRESS])?;
            }
            Ok(Some(interrupted)) => {
                info!(
                    sync_id = interrupted.id,
                    "redoing the sync that was running when the node stopped"
                );
                let trace = manager.stored_trace(interrupted.id);
                manager.request_traced(interrupted.kind, SyncTrigger::Restart, trace)?;
            }
            Ok(None) => {}
            // A sync was running but its record is unreadable: redoing a full sync is
            // always safe.
            Err(e) => {
                warn!(error = %e, "the interrupted sync's record is unreadable; running a full sync");
                manager.request(SyncKind::Full, SyncTrigger::Restart)?;
            }
        }
        manager
            .inner
            .node
            .spawn_background(manager.clone().run_loop());
        Ok(manager)
    }

    /// Follows the manager's state.
    pub fn watch(&self) -> watch::Receiver<ManagerView> {
        self.inner.view.subscribe()
    }

    pub fn settings(&self) -> Result<SyncSettings, SyncError> {
        Ok(get(&*self.inner.space, KEY_SETTINGS)?.unwrap_or_default())
    }

    /// Replaces the settings if they are still at `expected_revision` (any, when 0). A change of what is
    /// selected makes the next sync full (S1).
    pub fn set_settings(
        &self,
        mut settings: SyncSettings,
        expected_revision: u64,
    ) -> Result<SyncSettings, SyncError> {
        // Under the queue lock so two operators cannot both pass the revision check.
        let _queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.settings()?;
        // 0: unconditionally, as the Admin API documents.
        if expected_revision != 0 && current.revision != expected_revision {
            return Err(SyncError::SettingsConflict {
                current: current.revision,
                expected: expected_revision,
            });
        }
        settings.revision = current.revision + 1;
        put(&*self.inner.space, KEY_SETTINGS, &settings)?;
        self.inner.wake.notify_one();
        Ok(settings)
    }

    /// Asks for a sync. It starts at once when the manager is idle, else it waits behind
    /// the running one; an identical request already waiting is not queued twice. The sync
    /// starts a trace of its own.
    pub fn request(&self, kind: SyncKind, trigger: SyncTrigger) -> Result<Disposition, SyncError> {
        self.request_traced(kind, trigger, None)
    }

    /// [`SyncManager::request`] continuing `trace`, or starting a trace when `None`.
    pub fn request_traced(
        &self,
        kind: SyncKind,
        trigger: SyncTrigger,
        trace: Option<TraceContext>,
    ) -> Result<Disposition, SyncError> {
        let inner = &self.inner;
        if self.imports_only() && trigger != SyncTrigger::Import {
            return Err(SyncError::ImportOnly);
        }
        if trigger == SyncTrigger::Operator && kind == SyncKind::Full && self.has_parent() {
            return Err(SyncError::OperatorAtChild);
        }
        if kind == SyncKind::Manual {
            if self.is_internet_node() {
                return Err(SyncError::ManualAtInternetNode);
            }
            if self.has_parent() {
                return Err(SyncError::ManualAtChild);
            }
        }
        let mut queue = inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        // A manual sync right after a settings change would leave the stores half-filtered:
        // it runs as a full sync instead.
        let kind = if kind == SyncKind::Manual && self.selection_changed()? {
            SyncKind::Full
        } else {
            kind
        };
        // Each import is its own sync, with its own file.
        if let Some(waiting) = queue.waiting.iter().find(|r| {
            r.kind == kind && trigger != SyncTrigger::Import && r.trigger != SyncTrigger::Import
        }) {
            return Ok(Disposition::Queued(waiting.id));
        }
        let id: u64 = get(&*inner.space, KEY_NEXT_SYNC_ID)?.unwrap_or(1);
        if let Some(trace) = &trace {
            // Before the id is taken, so a queued sync never lacks the trace it continues.
            put(&*inner.space, &trace_key(id), trace)?;
        }
        put(&*inner.space, KEY_NEXT_SYNC_ID, &(id + 1))?;
        let run = SyncRun {
            id,
            kind,
            trigger,
            phase: SyncPhase::Queued,
            result: None,
            requested_at: inner.clock.now(),
            started_at: None,
            finished_at: None,
            counts: SyncCounts::default(),
            progress: (0, 0),
            failure_reason: None,
            retry_at: None,
            trace,
        };
        let disposition = if queue.running || !queue.waiting.is_empty() {
            Disposition::Queued(id)
        } else {
            Disposition::Started(id)
        };
        queue.waiting.push_back(run);
        let waiting: Vec<SyncRun> = queue.waiting.iter().cloned().collect();
        inner.view.send_modify(|v| v.queued = waiting);
        drop(queue);
        inner.wake.notify_one();
        Ok(disposition)
    }

    /// Queues the import of an export file, verified and opened as `file` (a feed), as this
    /// node's next sync; returns its id. Only at a node whose upstream is imports.
    pub fn request_import(
        &self,
        file: Arc<dyn ParentFeed>,
        trace: Option<TraceContext>,
    ) -> Result<u64, SyncError> {
        if !self.imports_only() {
            return Err(SyncError::Settings(
                "this node's upstream is not export files: start it with --upstream import (or [upstream] kind = \"import\") to import".into(),
            ));
        }
        let mut imports = self.inner.imports.lock().unwrap_or_else(|p| p.into_inner());
        let id = match self.request_traced(SyncKind::Full, SyncTrigger::Import, trace)? {
            Disposition::Started(id) | Disposition::Queued(id) => id,
        };
        imports.insert(id, file);
        Ok(id)
    }

    /// Whether the upstream is a parent node: such a node runs no schedule (S2).
    fn has_parent(&self) -> bool {
        matches!(self.inner.upstream, UpstreamSource::Parent(_))
    }

    /// Whether the upstream is export files: syncs are imports, with no schedule and no
    /// retries (a retry would have no file).
    fn imports_only(&self) -> bool {
        matches!(self.inner.upstream, UpstreamSource::Import)
    }

    /// Whether syncs start on their own (a schedule, retries): not at a node with a parent,
    /// which syncs when asked, nor at one whose upstream is imports.
    fn starts_on_its_own(&self) -> bool {
        !self.has_parent() && !self.imports_only()
    }

    /// Whether this is an internet-facing node: no site database, no phase 2 (S11).
    fn is_internet_node(&self) -> bool {
        self.inner.node.config.role == Role::Internet
    }

    /// The trace sync `id` continued, if it was stored.
    fn stored_trace(&self, id: u64) -> Option<TraceContext> {
        get(&*self.inner.space, &trace_key(id)).unwrap_or_else(|e| {
            warn!(error = %e, sync_id = id, "a sync's trace context is unreadable; its redo starts a new trace");
            None
        })
    }

    /// The trace a retry continues: the failed run's.
    fn retry_trace(&self) -> Option<TraceContext> {
        get(&*self.inner.space, KEY_RETRY_TRACE).unwrap_or_else(|e| {
            warn!(error = %e, "the failed sync's trace context is unreadable; the retry starts a new trace");
            None
        })
    }

    fn selection_changed(&self) -> Result<bool, SyncError> {
        let synced: Option<u64> = get(&*self.inner.space, KEY_SYNCED_SELECTION)?;
        Ok(synced != Some(self.settings()?.revision))
    }

    async fn run_loop(self) {
        loop {
            let next = {
                let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
                let next = queue.waiting.pop_front();
                queue.running = next.is_some();
                let waiting: Vec<SyncRun> = queue.waiting.iter().cloned().collect();
                // In one change, so a watcher never sees the run in neither place.
                self.inner.view.send_modify(|v| {
                    v.queued = waiting;
                    if let Some(run) = &next {
                        v.current = Some(run.clone());
                    }
                });
                next
            };
            let Some(run) = next else {
                self.wait_for_work().await;
                continue;
            };
            let worker = self.clone();
            let finished = tokio::task::spawn_blocking(move || worker.execute(run)).await;
            if let Err(e) = finished {
                warn!(error = %e, "a sync task panicked; the sync will be retried");
            }
            let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.running = false;
        }
    }

    /// Sleeps until a request arrives, the schedule is due, or a retry is due; queues the
    /// scheduled or retried sync when its time comes. With nothing due (a child with no
    /// retry pending), only a request wakes it.
    async fn wait_for_work(&self) {
        let next = match self.next_due() {
            Ok(next) => next,
            Err(e) => {
                warn!(error = %e, "cannot read the sync schedule; trying again in a minute");
                let again = Timestamp(self.inner.clock.now().0 + 60_000);
                if !self.starts_on_its_own() {
                    // A child starts nothing on its own: it only reads its retry again.
                    tokio::select! {
                        () = self.inner.wake.notified() => {}
                        () = self.inner.clock.sleep_until(again) => {}
                    }
                    return;
                }
                NextSync {
                    due: Some((again, SyncTrigger::Schedule)),
                    scheduled: None,
                }
            }
        };
        self.inner
            .view
            .send_modify(|v| v.next_scheduled_at = next.scheduled);
        let Some((due, trigger)) = next.due else {
            self.inner.wake.notified().await;
            return;
        };
        tokio::select! {
            () = self.inner.wake.notified() => {}
            () = self.inner.clock.sleep_until(due) => {
                let trace = match trigger {
                    SyncTrigger::Retry => self.retry_trace(),
                    _ => None,
                };
                if let Err(e) = self.request_traced(SyncKind::Full, trigger, trace) {
                    warn!(error = %e, "cannot queue the scheduled sync");
                }
            }
        }
    }

    /// When the next sync is due on its own and why: a pending retry wins over the schedule
    /// when it comes first. A node whose upstream is a parent has no schedule (S2): only
    /// its retry can be due.
    fn next_due(&self) -> Result<NextSync, SyncError> {
        let retry: Option<Timestamp> = get(&*self.inner.space, KEY_RETRY_AT)?;
        if self.imports_only() {
            return Ok(NextSync {
                due: None,
                scheduled: None,
            });
        }
        if self.has_parent() {
            return Ok(NextSync {
                due: retry.map(|at| (at, SyncTrigger::Retry)),
                scheduled: None,
            });
        }
        let settings = self.settings()?;
        let now = self.inner.clock.now();
        let last: Option<Timestamp> = get(&*self.inner.space, KEY_LAST_SCHEDULED)?;
        let scheduled = settings.schedule.next_after(last, now);
        let due = match retry {
            Some(retry) if retry <= scheduled => (retry, SyncTrigger::Retry),
            _ => (scheduled, SyncTrigger::Schedule),
        };
        Ok(NextSync {
            due: Some(due),
            scheduled: Some(scheduled),
        })
    }

    /// Runs one sync to its end, success or failure (on the blocking pool), in its span:
    /// a child of the trace it continues, or the root of a new one.
    fn execute(&self, run: SyncRun) {
        let span = info_span!(
            "sync",
            otel.name = format!("sync {}", kind_label(run.kind)),
            site = %self.inner.node.config.site_code,
            sync_id = run.id,
            kind = kind_label(run.kind),
            trigger = trigger_label(run.trigger),
            trace_id = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        if let Some(trace) = &run.trace {
            trace.adopt(&span);
        }
        if let Some(id) = trace_id(&span) {
            span.record("trace_id", id);
        }
        let space = &*self.inner.space;
        // What a redo after a crash, or a retry after a failure, continues: the trace this
        // run continues, else its own (so a sync the schedule started keeps one trace).
        let trace = match &run.trace {
            Some(trace) => Some(trace.clone()),
            None => {
                let own = TraceContext::of(&span);
                if let Some(own) = &own
                    && let Err(e) = put(space, &trace_key(run.id), own)
                {
                    warn!(error = %e, "cannot record a sync's trace context");
                }
                own
            }
        };
        let _entered = span.enter();
        let run = self.execute_in_span(run);
        let recorded = match (&run.result, &run.failure_reason) {
            (Some(SyncResult::Failed), reason) => {
                span.record("otel.status_code", "ERROR");
                span.record(
                    "otel.status_description",
                    reason.as_deref().unwrap_or("failed"),
                );
                // The retry continues this trace.
                match &trace {
                    Some(trace) => put(space, KEY_RETRY_TRACE, trace),
                    None => delete(space, &[KEY_RETRY_TRACE]),
                }
            }
            _ => delete(space, &[KEY_RETRY_TRACE]),
        };
        // A run's own trace key lives while it is queued or running.
        if let Err(e) = recorded.and_then(|()| delete(space, &[&trace_key(run.id)])) {
            warn!(error = %e, "cannot record a finished sync's trace context");
        }
    }

    /// [`SyncManager::execute`] inside the sync's span; returns the finished run.
    fn execute_in_span(&self, mut run: SyncRun) -> SyncRun {
        let inner = &self.inner;
        let started = inner.clock.now();
        run.started_at = Some(started);
        run.phase = SyncPhase::Starting;
        self.publish(&run);
        let outcome = (|| -> Result<(), SyncError> {
            put(&*inner.space, KEY_IN_PROGRESS, &run)?;
            if run.trigger == SyncTrigger::Schedule {
                put(&*inner.space, KEY_LAST_SCHEDULED, &started)?;
            }
            self.phases(&mut run)?;
            if let Some(hook) = &inner.hooks.on_success {
                hook(&run).map_err(SyncError::Cascade)?;
            }
            Ok(())
        })();
        let finished = inner.clock.now();
        run.finished_at = Some(finished);
        run.phase = SyncPhase::Finished;
        match outcome {
            Ok(()) => {
                run.result = Some(SyncResult::Succeeded);
                let c = run.counts;
                let u = c.update_server;
                let site_database = if self.is_internet_node() {
                    String::new()
                } else {
                    let s = c.site_database;
                    format!(
                        " site database {} new, {} changed, {} expired, {} deleted;",
                        s.new, s.changed, s.expired, s.deleted
                    )
                };
                let text = format!(
                    "Synchronization done ({kind}): update server {} new, {} changed, {} expired, {} deleted;{site_database} {} documents skipped.",
                    u.new,
                    u.changed,
                    u.expired,
                    u.deleted,
                    c.skipped,
                    kind = kind_text(run.kind),
                );
                self.message(
                    StatusMessageId::SyncDone,
                    run.id,
                    text,
                    counts_properties(&c, !self.is_internet_node()),
                );
                let recorded = put(&*inner.space, KEY_LAST_RUN, &run)
                    .and_then(|()| put(&*inner.space, KEY_LAST_SUCCEEDED, &run))
                    .and_then(|()| delete(&*inner.space, &[KEY_IN_PROGRESS, KEY_RETRY_AT]));
                if let Err(e) = recorded {
                    warn!(error = %e, "cannot record the finished sync");
                }
                info!(sync_id = run.id, kind = ?run.kind, "sync done");
            }
            Err(error) if self.imports_only() => {
                // No retry: it would have no file. The operator imports again.
                run.result = Some(SyncResult::Failed);
                run.failure_reason = Some(error.to_string());
                self.message(
                    StatusMessageId::SyncFailed,
                    run.id,
                    format!(
                        "Synchronization failed: {error}. Nothing is retried: import the file again once the cause is fixed."
                    ),
                    BTreeMap::new(),
                );
                let recorded = put(&*inner.space, KEY_LAST_RUN, &run)
                    .and_then(|()| delete(&*inner.space, &[KEY_IN_PROGRESS]));
                if let Err(e) = recorded {
                    warn!(error = %e, "cannot record the failed sync");
                }
                warn!(sync_id = run.id, %error, "import failed");
            }
            Err(error) => {
                let retry_at = self
                    .settings()
                    .map(|s| s.retry.retry_at(finished))
                    .unwrap_or(Timestamp(finished.0 + 3_600_000));
                run.result = Some(SyncResult::Failed);
                run.failure_reason = Some(error.to_string());
                run.retry_at = Some(retry_at);
                self.message(
                    StatusMessageId::SyncFailed,
                    run.id,
                    format!(
                        "Synchronization failed: {error}. A new sync is scheduled for {retry_at}."
                    ),
                    BTreeMap::from([("retry_at".to_owned(), retry_at.to_string())]),
                );
                // The in-progress marker stays: the retry (or a restart) redoes the sync.
                let recorded = put(&*inner.space, KEY_LAST_RUN, &run)
                    .and_then(|()| put(&*inner.space, KEY_RETRY_AT, &retry_at));
                if let Err(e) = recorded {
                    warn!(error = %e, "cannot record the failed sync");
                }
                inner.view.send_modify(|v| v.retry_at = Some(retry_at));
                warn!(sync_id = run.id, %error, %retry_at, "sync failed");
                if matches!(
                    error,
                    SyncError::Parent { .. } | SyncError::Replication { .. }
                ) && let Some(hook) = &inner.hooks.on_parent_lost
                {
                    hook();
                }
            }
        }
        self.record_finished(&run);
        inner.view.send_modify(|v| {
            v.current = None;
            v.last = Some(run.clone());
            if v.recent.len() == RECENT_RUNS {
                v.recent.remove(0);
            }
            v.recent.push(run.clone());
            if run.result == Some(SyncResult::Succeeded) {
                v.retry_at = None;
                v.last_succeeded = Some(run.clone());
            }
        });
        run
    }

    fn phases(&self, run: &mut SyncRun) -> Result<(), SyncError> {
        let inner = &self.inner;
        self.message(
            StatusMessageId::SyncStarted,
            run.id,
            format!(
                "Synchronization started ({}, {}).",
                kind_text(run.kind),
                trigger_text(run.trigger)
            ),
            BTreeMap::new(),
        );
        let settings = self.settings()?;
        // The top site's signed version the parent offers, verified (none without TLS).
        let mut offered = None;
        let import = self
            .imports_only()
            .then(|| {
                self.inner
                    .imports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&run.id)
            })
            .flatten();

        run.phase = SyncPhase::UpdateServer;
        self.publish(run);
        let phase = phase_span("update_server", StatusMessageId::SyncingUpdateServer);
        let upstream_text = match &inner.upstream {
            UpstreamSource::Directory(directory) => {
                format!("the catalog directory {}", directory.dir().display())
            }
            UpstreamSource::Wsus(wsus) => {
                format!("the upstream server {}", wsus.session().server())
            }
            UpstreamSource::Parent(parent) if self.is_internet_node() => {
                format!("its own site's update server at {}", parent.address())
            }
            UpstreamSource::Parent(parent) => {
                format!("the parent site's update server at {}", parent.address())
            }
            UpstreamSource::Import => match &import {
                Some(file) => format!("the export file {}", file.address()),
                None => "an export file".to_owned(),
            },
        };
        self.message(
            StatusMessageId::SyncingUpdateServer,
            run.id,
            format!("Synchronizing the update server with its upstream, {upstream_text}."),
            BTreeMap::new(),
        );
        match &inner.upstream {
            UpstreamSource::Directory(directory) => {
                self.sync_from_directory(run, directory, &settings)?
            }
            UpstreamSource::Wsus(wsus) => self.sync_from_wsus(run, wsus, &settings)?,
            UpstreamSource::Parent(parent) => {
                offered = self.pull_from_parent(run, &**parent)?;
            }
            UpstreamSource::Import => {
                let file = import.as_ref().ok_or(SyncError::ImportLost)?;
                self.import_file(run, &**file)?;
            }
        }
        put(&*inner.space, KEY_SYNCED_SELECTION, &settings.revision)?;
        // The top site's internet-facing node, asked next, checks against this version.
        self.sign(false)?;
        drop(phase);

        if let Some(hook) = &inner.hooks.after_update_server {
            let _phase = phase_span(
                "internet_update_servers",
                StatusMessageId::SyncingInternetUpdateServer,
            );
            for internet in hook(run).map_err(SyncError::InternetUpdateServers)? {
                self.message(
                    StatusMessageId::SyncingInternetUpdateServer,
                    run.id,
                    format!(
                        "Synchronizing the internet-facing update server {} at {} with this site's update server.",
                        internet.site_code, internet.address
                    ),
                    BTreeMap::from([
                        ("internet_site_code".to_owned(), internet.site_code),
                        ("address".to_owned(), internet.address),
                    ]),
                );
            }
        }

        // S11: an internet-facing node has no site database, so no phase 2.
        if !self.is_internet_node() {
            run.phase = SyncPhase::SiteDatabase;
            run.progress = (0, 0);
            self.publish(run);
            let _phase = phase_span("site_database", StatusMessageId::SyncingSiteDatabase);
            match &inner.upstream {
                UpstreamSource::Directory(_) | UpstreamSource::Wsus(_) | UpstreamSource::Import => {
                    self.message(
                        StatusMessageId::SyncingSiteDatabase,
                        run.id,
                        "Synchronizing the site database with the update server.".to_owned(),
                        BTreeMap::new(),
                    );
                    self.sync_site_database(run)?;
                }
                UpstreamSource::Parent(parent) => {
                    self.message(
                        StatusMessageId::SyncingSiteDatabase,
                        run.id,
                        format!(
                            "Synchronizing the site database by replication from the parent site at {}.",
                            parent.address()
                        ),
                        BTreeMap::new(),
                    );
                    self.replicate_from_parent(run, &**parent, offered.as_ref())?;
                }
            }
        }
        // The version the cascade carries: both stores.
        self.sign(true)?;

        let update_server = inner.node.database.update_server().state();
        inner.policy.publish(
            vec![inner.node.config.listen.to_string()],
            update_server.digest,
            update_server.revisions,
            update_server.last_sequence,
            inner.clock.now(),
            run.id,
        )?;
        Ok(())
    }

    fn skipped(&self, run: &mut SyncRun, file: &str, reason: &str) {
        run.counts.skipped += 1;
        self.message(
            StatusMessageId::DocumentSkipped,
            run.id,
            format!("Skipped the update document {file}: {reason}. It will be tried again at the next sync."),
            BTreeMap::from([("file".to_owned(), file.to_owned())]),
        );
    }

    fn message(
        &self,
        id: StatusMessageId,
        sync_id: u64,
        text: String,
        properties: BTreeMap<String, String>,
    ) {
        let site = self.inner.node.config.site_code.to_string();
        let now = self.inner.clock.now();
        self.inner.node.metrics.sync.status_message(id.code());
        if let Err(e) = self.inner.status.append_traced(
            &site,
            id,
            sync_id,
            text,
            properties,
            now,
            &current_trace_id(),
        ) {
            warn!(error = %e, message = %id, "cannot record a status message");
        }
    }

    fn publish(&self, run: &SyncRun) {
        self.record_phase(run);
        let run = run.clone();
        self.inner.view.send_modify(|v| v.current = Some(run));
    }

    /// The status messages.
    pub fn status_log(&self) -> &StatusLog {
        &self.inner.status
    }

    /// The client policy.
    pub fn policy(&self) -> &PolicyStore {
        &self.inner.policy
    }
}

fn kind_text(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::Full => "full",
        SyncKind::Manual => "manual, new updates only",
    }
}

/// A sync phase's span, entered: named for the phase and the status message that opens it.
fn phase_span(phase: &'static str, message: StatusMessageId) -> tracing::span::EnteredSpan {
    info_span!(
        "sync.phase",
        otel.name = format!("{phase} ({})", message.code()),
        phase,
        message_id = message.code(),
    )
    .entered()
}

/// The kind as spans and metrics label it.
pub fn kind_label(kind: SyncKind) -> &'static str {
    match kind {
        SyncKind::Full => "full",
        SyncKind::Manual => "manual",
    }
}

/// The trigger as spans and metrics label it.
pub fn trigger_label(trigger: SyncTrigger) -> &'static str {
    match trigger {
        SyncTrigger::Schedule => "schedule",
        SyncTrigger::Operator => "operator",
        SyncTrigger::Retry => "retry",
        SyncTrigger::Restart => "restart",
        SyncTrigger::ParentRequest => "parent_request",
        SyncTrigger::Import => "import",
    }
}

fn trigger_text(trigger: SyncTrigger) -> &'static str {
    match trigger {
        SyncTrigger::Schedule => "on schedule",
        SyncTrigger::Operator => "requested by an operator",
        SyncTrigger::Retry => "retrying after a failure",
        SyncTrigger::Restart => "redoing the sync interrupted by a restart",
        SyncTrigger::ParentRequest => "requested by the parent site",
        SyncTrigger::Import => "importing an export file",
    }
}

/// The counts of a 6702; `site_database` is false at an internet-facing node, which has none.
fn counts_properties(c: &SyncCounts, site_database: bool) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let phases = [
        ("update_server", c.update_server),
        ("site_database", c.site_database),
    ];
    let phases = if site_database {
        &phases[..]
    } else {
        &phases[..1]
    };
    for &(phase, counts) in phases {
        p.insert(format!("{phase}.new"), counts.new.to_string());
        p.insert(format!("{phase}.changed"), counts.changed.to_string());
        p.insert(format!("{phase}.expired"), counts.expired.to_string());
        p.insert(format!("{phase}.deleted"), counts.deleted.to_string());
    }
    p.insert("skipped".to_owned(), c.skipped.to_string());
    p
}

fn get<T: for<'de> Deserialize<'de>>(
    space: &dyn Backend,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    space
        .get(key)?
        .map(|bytes| {
            postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!(
                    "sync manager record `{}`: {e}",
                    String::from_utf8_lossy(key)
                ),
            })
        })
        .transpose()
}

fn put<T: Serialize>(space: &dyn Backend, key: &[u8], value: &T) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    batch.put(
        key.to_vec(),
        postcard::to_allocvec(value).expect("postcard serializes plain structs into a Vec"),
    );
    space.apply(batch)?;
    space.flush()?;
    Ok(())
}

fn delete(space: &dyn Backend, keys: &[&[u8]]) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    for key in keys {
        batch.delete(key.to_vec());
    }
    space.apply(batch)?;
    space.flush()?;
    Ok(())
}
