//! Site states flowing up the hierarchy, so the top site can draw the whole tree
//! (`Admin.GetHierarchy`, `sitesyncctl tree`) even for sites it cannot reach directly.
//!
//! - [`SiteStates`]: the latest [`HeldState`] of each site below this node, durable in the
//!   key space `site-states`. A state observed later replaces an earlier one; an older or
//!   equally old report of a site changes nothing, so a delayed or replayed report cannot
//!   roll a site back.
//! - [`SiteStateReport`]: a child's report, checked at the receiving edge: the reporter's
//!   own state first, then the sites below it, each naming a parent inside the report.
//! - [`spawn_reporting`]: the task of every node with a parent: every [`REPORT_INTERVAL`],
//!   and soon after each of its own syncs finishes, it sends its own state and those it holds
//!   to the parent (`Hierarchy.ReportSiteStates`), with backoff while the parent fails.
//! - [`assemble`]: the tree a node answers `GetHierarchy` with: itself, then every site it
//!   holds or has registered, parents before children, each flagged unreachable when its
//!   last report is stale and with its lag behind its parent.
//!
//! Freshness is judged by when a newer state *arrived here*, read on the store's clock, not
//! by the sender's `observed_at`: nodes' clocks need not agree, and a grandchild that stops
//! reporting stops producing newer states even though its parent keeps relaying the last one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sitesync_metadata::Timestamp;
use sitesync_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use sitesync_proto::v1;
use tracing::{debug, warn};

use crate::clock::{Clock, SystemClock, TimestampExt};
use crate::config::{SiteCode, UpstreamConfig};
use crate::hierarchy::{ChildRecord, FIRST_BACKOFF, MAX_BACKOFF};
use crate::node::NodeState;
use crate::store::{Backend, BackendError, NodeDatabase, StoreError, WriteBatch};
use crate::sync::manager::SyncManager;

/// How often a child reports its subtree to its parent when nothing else prompts it.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(3);
/// A site whose last report is older than this many report intervals is unreachable,
/// unless the operator asks for another threshold.
pub const STALE_REPORTS: u32 = 3;
/// The key space the states live in.
pub const SPACE: &str = "site-states";
/// How long one report call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The parent's `next_report_within` is followed within these bounds, so a parent cannot
/// make a child report in a tight loop or fall silent for hours.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(300);
/// How far ahead of this node's clock an `observed_at` may be: beyond it, a skewed clock
/// would pin the site's state until real time catches up.
const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(300);
/// More sites than any real hierarchy has in one report: a bound on what one call stores.
const MAX_SITES_PER_REPORT: usize = 10_000;

/// The default `stale_after` of `GetHierarchy`.
pub fn default_stale_after() -> Duration {
    REPORT_INTERVAL * STALE_REPORTS
}

#[derive(Debug, thiserror::Error)]
pub enum SiteStatesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored site state is unreadable: {0}; the next report of that site replaces it")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<BackendError> for SiteStatesError {
    fn from(e: BackendError) -> Self {
        Self::Store(StoreError::from(e))
    }
}

/// A store's position, as a site reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorePosition {
    pub log_id: String,
    pub sequence: u64,
    pub first_retained_sequence: u64,
    pub digest: Vec<u8>,
    pub revisions: u64,
    pub updates: u64,
}

impl StorePosition {
    fn from_wire(wire: &v1::StoreInfo, field: &str) -> Result<Self, String> {
        let latest = wire
            .latest
            .as_ref()
            .ok_or_else(|| format!("{field}.latest is missing"))?;
        let digest = wire
            .digest
            .as_ref()
            .ok_or_else(|| format!("{field}.digest is missing"))?;
        Ok(Self {
            log_id: latest.log_id.clone(),
            sequence: latest.sequence,
            first_retained_sequence: wire.first_retained_sequence,
            digest: digest.value.clone(),
            revisions: wire.revision_count,
            updates: wire.update_count,
        })
    }

    fn to_wire(&self) -> v1::StoreInfo {
        v1::StoreInfo {
            latest: Some(v1::Anchor {
                log_id: self.log_id.clone(),
                sequence: self.sequence,
                snapshot_through: None,
            }),
            first_retained_sequence: self.first_retained_sequence,
            digest: Some(v1::CatalogDigest {
                value: self.digest.clone(),
            }),
            revision_count: self.revisions,
            update_count: self.updates,
        }
    }
}

/// Where a child's site database stands in its parent's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPosition {
    pub log_id: String,
    pub applied: u64,
    pub applied_at: Option<Timestamp>,
    pub parent_latest_sequence: u64,
}

/// One sync run as a site reported it. Enumerations keep their wire numbers: this node
/// relays them and does not act on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedRun {
    pub sync_id: String,
    pub kind: i32,
    pub trigger: i32,
    pub phase: i32,
    pub result: i32,
    pub requested_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// new, changed, expired, deleted, unchanged, skipped documents, bytes received.
    pub counts: [u64; 7],
    /// Phase, done, total.
    pub progress: (i32, u64, u64),
    pub failure_reason: String,
    pub retry_at: Option<Timestamp>,
    pub sync_request_id: String,
}

fn optional_time(
    wire: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<Timestamp>, String> {
    wire.map(timestamp_from_wire)
        .transpose()
        .map_err(|e| format!("{field}: {e}"))
}

impl ReportedRun {
    fn from_wire(wire: &v1::SyncRun, field: &str) -> Result<Self, String> {
        let counts = wire.counts.unwrap_or_default();
        let progress = wire.progress.unwrap_or_default();
        Ok(Self {
            sync_id: wire.sync_id.clone(),
            kind: wire.kind,
            trigger: wire.trigger,
            phase: wire.phase,
            result: wire.result,
            requested_at: optional_time(wire.requested_at, &format!("{field}.requested_at"))?,
            started_at: optional_time(wire.started_at, &format!("{field}.started_at"))?,
            finished_at: optional_time(wire.finished_at, &format!("{field}.finished_at"))?,
            counts: [
                counts.new,
                counts.changed,
                counts.expired,
                counts.deleted,
                counts.unchanged,
                counts.skipped_documents,
                counts.bytes_received,
            ],
            progress: (progress.phase, progress.done, progress.total),
            failure_reason: wire.failure_reason.clone(),
            retry_at: optional_time(wire.retry_at, &format!("{field}.retry_at"))?,
            sync_request_id: wire.sync_request_id.clone(),
        })
    }

    fn to_wire(&self) -> v1::SyncRun {
        let [
            new,
            changed,
            expired,
            deleted,
            unchanged,
            skipped_documents,
            bytes_received,
        ] = self.counts;
        v1::SyncRun {
            sync_id: self.sync_id.clone(),
            kind: self.kind,
            trigger: self.trigger,
            phase: self.phase,
            result: self.result,
            requested_at: self.requested_at.map(timestamp_to_wire),
            started_at: self.started_at.map(timestamp_to_wire),
            finished_at: self.finished_at.map(timestamp_to_wire),
            counts: Some(v1::SyncCounts {
                new,
                changed,
                expired,
                deleted,
                unchanged,
                skipped_documents,
                bytes_received,
            }),
            progress: Some(v1::PhaseProgress {
                phase: self.progress.0,
                done: self.progress.1,
                total: self.progress.2,
            }),
            failure_reason: self.failure_reason.clone(),
            retry_at: self.retry_at.map(timestamp_to_wire),
            sync_request_id: self.sync_request_id.clone(),
        }
    }
}

/// What a node is, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedRole {
    Site,
    Internet,
}

/// One site's state as it reported it (the contract's `SiteState`, checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedState {
    pub site_code: String,
    pub role: ReportedRole,
    /// Empty only in the reporter's own state as sent; this node fills in itself.
    pub parent_site_code: String,
    pub address: String,
    pub update_server: StorePosition,
    /// Absent for an internet node.
    pub site_database: Option<StorePosition>,
    pub replication: Option<ReplicationPosition>,
    pub last_sync: Option<ReportedRun>,
    pub current_sync: Option<ReportedRun>,
    pub next_sync_at: Option<Timestamp>,
    pub observed_at: Timestamp,
    pub node_version: String,
    /// The signed catalog version the site holds, as it reported it (encoded, relayed as
    /// it came; nodes verify versions where they apply them, not here).
    pub catalog_version: Option<Vec<u8>>,
}

impl ReportedState {
    /// Checks one wire state: a site code, a role, the stores its role has, a valid
    /// `observed_at`.
    pub fn from_wire(wire: &v1::SiteState) -> Result<Self, String> {
        let code: SiteCode = wire.site_code.parse()?;
        let field = format!("the state of {code}");
        let role = match wire.role() {
            v1::SiteRole::Site => ReportedRole::Site,
            v1::SiteRole::Internet => ReportedRole::Internet,
            v1::SiteRole::Unspecified => {
                return Err(format!("{field}: the role is missing (SITE or INTERNET)"));
            }
        };
        let update_server = StorePosition::from_wire(
            wire.update_server
                .as_ref()
                .ok_or_else(|| format!("{field}: update_server is missing"))?,
            &format!("{field}: update_server"),
        )?;
        let site_database = match (role, &wire.site_database) {
            (ReportedRole::Site, None) => {
                return Err(format!(
                    "{field}: site_database is missing (a SITE node has one)"
                ));
            }
            (_, Some(db)) => Some(StorePosition::from_wire(
                db,
                &format!("{field}: site_database"),
            )?),
            (ReportedRole::Internet, None) => None,
        };
        let replication = match &wire.replication {
            Some(r) => Some(ReplicationPosition {
                log_id: r
                    .applied
                    .as_ref()
                    .map(|a| a.log_id.clone())
                    .unwrap_or_default(),
                applied: r.applied.as_ref().map_or(0, |a| a.sequence),
                applied_at: optional_time(
                    r.applied_at,
                    &format!("{field}: replication.applied_at"),
                )?,
                parent_latest_sequence: r.parent_latest_sequence,
            }),
            None => None,
        };
        let observed_at = optional_time(wire.observed_at, &format!("{field}: observed_at"))?
            .ok_or_else(|| format!("{field}: observed_at is missing"))?;
        let parent_site_code = if wire.parent_site_code.is_empty() {
            String::new()
        } else {
            let parent: SiteCode = wire
                .parent_site_code
                .parse()
                .map_err(|e| format!("{field}: parent_site_code: {e}"))?;
            parent.to_string()
        };
        Ok(Self {
            site_code: code.to_string(),
            role,
            parent_site_code,
            address: wire.address.clone(),
            update_server,
            site_database,
            replication,
            last_sync: wire
                .last_sync
                .as_ref()
                .map(|r| ReportedRun::from_wire(r, &format!("{field}: last_sync")))
                .transpose()?,
            current_sync: wire
                .current_sync
                .as_ref()
                .map(|r| ReportedRun::from_wire(r, &format!("{field}: current_sync")))
                .transpose()?,
            next_sync_at: optional_time(wire.next_sync_at, &format!("{field}: next_sync_at"))?,
            observed_at,
            node_version: wire.node_version.clone(),
            catalog_version: wire
                .catalog_version
                .as_ref()
                .map(prost::Message::encode_to_vec),
        })
    }

    pub fn to_wire(&self) -> v1::SiteState {
        v1::SiteState {
            site_code: self.site_code.clone(),
            role: match self.role {
                ReportedRole::Site => v1::SiteRole::Site,
                ReportedRole::Internet => v1::SiteRole::Internet,
            } as i32,
            parent_site_code: self.parent_site_code.clone(),
            address: self.address.clone(),
            update_server: Some(self.update_server.to_wire()),
            site_database: self.site_database.as_ref().map(StorePosition::to_wire),
            replication: self.replication.as_ref().map(|r| v1::ReplicationState {
                applied: Some(v1::Anchor {
                    log_id: r.log_id.clone(),
                    sequence: r.applied,
                    snapshot_through: None,
                }),
                applied_at: r.applied_at.map(timestamp_to_wire),
                parent_latest_sequence: r.parent_latest_sequence,
            }),
            last_sync: self.last_sync.as_ref().map(ReportedRun::to_wire),
            current_sync: self.current_sync.as_ref().map(ReportedRun::to_wire),
            next_sync_at: self.next_sync_at.map(timestamp_to_wire),
            catalog_version: self
                .catalog_version
                .as_deref()
                .and_then(|bytes| prost::Message::decode(bytes).ok()),
            observed_at: Some(timestamp_to_wire(self.observed_at)),
            node_version: self.node_version.clone(),
        }
    }
}

/// A child's report, checked: every state is well formed, the first is the reporter's and
/// names this node (or nothing) as its parent, and every other state is a distinct site
/// whose chain of parents inside the report leads to the reporter.
#[derive(Debug, Clone)]
pub struct SiteStateReport {
    pub reporter: String,
    /// The reporter's own state first; its parent is this node.
    pub sites: Vec<ReportedState>,
}

impl SiteStateReport {
    /// Checks `wire` as received by the site `receiver` at `now`.
    pub fn from_wire(
        wire: &v1::SiteStateReport,
        receiver: &str,
        now: Timestamp,
    ) -> Result<Self, SiteStatesError> {
        let invalid = SiteStatesError::Invalid;
        let reporter: SiteCode = wire
            .reporter_site_code
            .parse()
            .map_err(|e| invalid(format!("reporter_site_code: {e}")))?;
        let reporter = reporter.to_string();
        if reporter == receiver {
            return Err(invalid(format!(
                "reporter_site_code: {reporter} is this site itself; a site reports to its parent"
            )));
        }
        let Some(first) = wire.sites.first() else {
            return Err(invalid(format!(
                "the report of {reporter} holds no state: send the reporter's own state first"
            )));
        };
        if wire.sites.len() > MAX_SITES_PER_REPORT {
            return Err(invalid(format!(
                "the report of {reporter} holds {} states, more than the {MAX_SITES_PER_REPORT} one report may carry",
                wire.sites.len()
            )));
        }
        if !first.site_code.eq_ignore_ascii_case(&reporter) {
            return Err(invalid(format!(
                "the first state of a report must be the reporter's own ({reporter}), not `{}`",
                first.site_code
            )));
        }
        let mut sites = Vec::with_capacity(wire.sites.len());
        let mut seen = HashSet::new();
        let latest_allowed = now.saturating_add(MAX_CLOCK_AHEAD);
        for (index, state) in wire.sites.iter().enumerate() {
            let mut state = ReportedState::from_wire(state).map_err(invalid)?;
            if state.site_code == receiver {
                return Err(invalid(format!(
                    "the report of {reporter} holds a state of {receiver}, the receiving site itself: a site below {reporter} has this site's code"
                )));
            }
            if !seen.insert(state.site_code.clone()) {
                return Err(invalid(format!(
                    "the report of {reporter} holds {} twice",
                    state.site_code
                )));
            }
            if state.observed_at > latest_allowed {
                return Err(invalid(format!(
                    "the state of {} was observed at {} ms, more than {:?} ahead of this site's clock; correct that site's clock",
                    state.site_code,
                    state.observed_at.unix_millis(),
                    MAX_CLOCK_AHEAD
                )));
            }
            if index == 0 {
                if !state.parent_site_code.is_empty() && state.parent_site_code != receiver {
                    return Err(invalid(format!(
                        "{reporter} reports {} as its parent, but it reports to {receiver}; check its upstream address",
                        state.parent_site_code
                    )));
                }
                receiver.clone_into(&mut state.parent_site_code);
            } else if state.parent_site_code.is_empty() || state.parent_site_code == state.site_code
            {
                return Err(invalid(format!(
                    "the state of {} below {reporter} names no parent site",
                    state.site_code
                )));
            }
            sites.push(state);
        }
        // Every site below the reporter must hang under it through sites of the report.
        let parents: HashMap<&str, &str> = sites
            .iter()
            .map(|s| (s.site_code.as_str(), s.parent_site_code.as_str()))
            .collect();
        for state in &sites[1..] {
            let mut at = state.site_code.as_str();
            let mut steps = 0;
            while at != reporter {
                at = match parents.get(at) {
                    Some(parent) if steps <= sites.len() => parent,
                    _ => {
                        return Err(invalid(format!(
                            "the state of {} does not lead to {reporter} through the sites of the report (its parent is {})",
                            state.site_code, state.parent_site_code
                        )));
                    }
                };
                steps += 1;
            }
        }
        Ok(Self { reporter, sites })
    }
}

/// One site's latest state as held here, with what this node saw of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldState {
    pub state: ReportedState,
    /// When this state (the newest observed) arrived here.
    pub received_at: Timestamp,
    /// When the first state of this site arrived here.
    pub first_received_at: Timestamp,
    /// The last arrival at which the site's stores matched its parent's, for its lag.
    pub in_step_at: Option<Timestamp>,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// States stored because they were observed later than the one held.
    pub stored: usize,
    /// States ignored because the one held was observed at the same time or later.
    pub ignored: usize,
}

/// Merges are read-compare-write; reports are few, so one lock for the process is enough.
static MERGE: Mutex<()> = Mutex::new(());

/// The latest state of each site below this node.
#[derive(Debug)]
pub struct SiteStates {
    space: Box<dyn Backend>,
    /// Arrival times and staleness follow the wall clock: they measure the network, which
    /// runs in real time, as the hierarchy's retry timers do.
    clock: Arc<dyn Clock>,
}

impl SiteStates {
    /// The node's site states, on the system clock.
    pub fn open(database: &NodeDatabase) -> Result<Self, SiteStatesError> {
        Ok(Self::new(
            database.space(SPACE)?,
            Arc::new(SystemClock::new()),
        ))
    }

    pub fn new(space: Box<dyn Backend>, clock: Arc<dyn Clock>) -> Self {
        Self { space, clock }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn get(&self, site_code: &str) -> Result<Option<HeldState>, SiteStatesError> {
        self.space
            .get(site_code.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every held state, by site code.
    pub fn list(&self) -> Result<Vec<HeldState>, SiteStatesError> {
        let mut out = Vec::new();
        let mut from = Vec::new();
        loop {
            let page = self.space.scan(b"", &from, 1_000, &|_| true)?;
            for entry in page.entries {
                out.push(decode(&entry.1)?);
            }
            match page.resume_after {
                Some(mut last) => {
                    last.push(0);
                    from = last;
                }
                None => return Ok(out),
            }
        }
    }

    /// Stores each state of `report` observed later than the one held, durably when it
    /// returns. `own` is this node's own state, to tell whether the reporter is in step.
    pub fn merge(
        &self,
        report: &SiteStateReport,
        own: &ReportedState,
    ) -> Result<MergeOutcome, SiteStatesError> {
        let _guard = MERGE.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        let in_report: HashMap<&str, &ReportedState> = report
            .sites
            .iter()
            .map(|s| (s.site_code.as_str(), s))
            .collect();
        let mut outcome = MergeOutcome::default();
        let mut batch = WriteBatch::default();
        for state in &report.sites {
            let held = self.get(&state.site_code).unwrap_or_else(|e| {
                warn!(site = %state.site_code, error = %e, "replacing an unreadable site state");
                None
            });
            if held
                .as_ref()
                .is_some_and(|h| h.state.observed_at >= state.observed_at)
            {
                outcome.ignored += 1;
                continue;
            }
            let parent = if state.parent_site_code == own.site_code {
                Some(own.clone())
            } else if let Some(parent) = in_report.get(state.parent_site_code.as_str()) {
                Some((*parent).clone())
            } else {
                self.get(&state.parent_site_code)?.map(|h| h.state)
            };
            let matched = parent.as_ref().is_some_and(|p| in_step(state, p));
            let record = HeldState {
                state: state.clone(),
                received_at: now,
                first_received_at: held.as_ref().map_or(now, |h| h.first_received_at),
                in_step_at: if matched {
                    Some(now)
                } else {
                    held.and_then(|h| h.in_step_at)
                },
            };
            batch.put(state.site_code.as_bytes().to_vec(), encode(&record)?);
            outcome.stored += 1;
        }
        if outcome.stored > 0 {
            self.space.apply(batch)?;
            self.space.flush()?;
        }
        Ok(outcome)
    }
}

/// Whether `site`'s stores hold what its parent's hold: the update-server digests, and for
/// a site the site-database digests too.
pub fn in_step(site: &ReportedState, parent: &ReportedState) -> bool {
    let update_server = site.update_server.digest == parent.update_server.digest;
    match site.role {
        ReportedRole::Internet => update_server,
        ReportedRole::Site => {
            update_server
                && matches!((&site.site_database, &parent.site_database),
                    (Some(a), Some(b)) if a.digest == b.digest)
        }
    }
}

/// How far `held` is behind `parent` at `now`.
///
/// Revisions: for a site, the parent's newest site-database sequence minus the one the
/// site's replication has applied (all of the parent's log when it replicates from another
/// log or not yet at all). An internet node has no site database and no replication
/// position in its site's log, so its lag is the difference in update-server revisions.
/// Time: zero when the stores match, else the time since they last matched as seen here
/// (since the site's first report when they never did).
pub fn lag(held: &HeldState, parent: &ReportedState, now: Timestamp) -> v1::SiteLag {
    let site = &held.state;
    if in_step(site, parent) {
        return v1::SiteLag {
            revisions: 0,
            behind: Some(prost_types::Duration::default()),
        };
    }
    let revisions = match (site.role, &parent.site_database) {
        (ReportedRole::Site, Some(parent_db)) => match &site.replication {
            Some(r) if r.log_id == parent_db.log_id => parent_db.sequence.saturating_sub(r.applied),
            _ => parent_db.sequence,
        },
        _ => parent
            .update_server
            .revisions
            .saturating_sub(site.update_server.revisions),
    };
    let since = held.in_step_at.unwrap_or(held.first_received_at);
    let behind = now.saturating_duration_since(since);
    v1::SiteLag {
        revisions,
        behind: Some(wire_duration(behind)),
    }
}

pub(crate) fn wire_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// The tree a node answers `GetHierarchy` with: `own` (this node) first, then every held
/// state and every registered child that never reported, parents before their children
/// (depth first, siblings by site code); sites whose parent is unknown come last, so none
/// is hidden.
pub fn assemble(
    own: v1::SiteState,
    held: Vec<HeldState>,
    registered: &[ChildRecord],
    now: Timestamp,
    stale_after: Duration,
) -> v1::HierarchyTree {
    let root = own.site_code.clone();
    // This node's own state is built here and always valid; without it, no lag is shown.
    let own_reported = ReportedState::from_wire(&own).ok();
    let mut nodes: BTreeMap<String, v1::HierarchyNode> = BTreeMap::new();
    let mut parents: BTreeMap<String, String> = BTreeMap::new();
    let states: HashMap<String, ReportedState> = held
        .iter()
        .map(|h| (h.state.site_code.clone(), h.state.clone()))
        .collect();
    for held in held.iter().filter(|h| h.state.site_code != root) {
        let state = &held.state;
        let parent_state = if state.parent_site_code == root {
            own_reported.as_ref()
        } else {
            states.get(&state.parent_site_code)
        };
        let fresh = now.saturating_duration_since(held.received_at) <= stale_after;
        parents.insert(state.site_code.clone(), state.parent_site_code.clone());
        nodes.insert(
            state.site_code.clone(),
            v1::HierarchyNode {
                state: Some(state.to_wire()),
                reachable: fresh,
                last_report_at: Some(timestamp_to_wire(held.received_at)),
                lag: parent_state.map(|p| lag(held, p, now)),
            },
        );
    }
    for child in registered {
        if child.site_code == root || nodes.contains_key(&child.site_code) {
            continue;
        }
        let role = if child.role == "internet" {
            v1::SiteRole::Internet
        } else {
            v1::SiteRole::Site
        };
        parents.insert(child.site_code.clone(), root.clone());
        nodes.insert(
            child.site_code.clone(),
            v1::HierarchyNode {
                state: Some(v1::SiteState {
                    site_code: child.site_code.clone(),
                    role: role as i32,
                    parent_site_code: root.clone(),
                    address: child.address.clone(),
                    ..v1::SiteState::default()
                }),
                reachable: false,
                last_report_at: None,
                lag: None,
            },
        );
    }
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (site, parent) in &parents {
        children
            .entry(parent.as_str())
            .or_default()
            .push(site.as_str());
    }
    let mut order: Vec<String> = Vec::with_capacity(nodes.len());
    let mut placed: HashSet<String> = HashSet::new();
    let mut stack: Vec<&str> = children
        .get(root.as_str())
        .map(|c| c.iter().rev().copied().collect())
        .unwrap_or_default();
    while let Some(site) = stack.pop() {
        if !placed.insert(site.to_owned()) {
            continue;
        }
        order.push(site.to_owned());
        if let Some(below) = children.get(site) {
            stack.extend(below.iter().rev().copied());
        }
    }
    let orphans: Vec<String> = nodes
        .keys()
        .filter(|site| !placed.contains(*site))
        .cloned()
        .collect();
    order.extend(orphans);
    let mut sites = Vec::with_capacity(order.len() + 1);
    sites.push(v1::HierarchyNode {
        state: Some(own),
        reachable: true,
        last_report_at: None,
        lag: None,
    });
    sites.extend(order.iter().filter_map(|site| nodes.remove(site)));
    v1::HierarchyTree {
        root_site_code: root,
        sites,
        as_of: Some(timestamp_to_wire(now)),
    }
}

/// Starts the reporting task when this node has a parent: its own state and the states it
/// holds, to the parent.
pub fn spawn_reporting(node: Arc<NodeState>, sync: SyncManager) {
    if let UpstreamConfig::Parent(parent) = &node.config.upstream {
        let parent = parent.clone();
        node.clone()
            .spawn_background(report_loop(node, sync, parent));
    }
}

async fn report_loop(node: Arc<NodeState>, sync: SyncManager, parent: String) {
    let channel = match crate::grpc::connect::channel(&node.transport, &parent, Some(CALL_TIMEOUT))
    {
        Ok(channel) => channel,
        Err(e) => {
            warn!(parent = %parent, error = %e, "cannot report site states: the parent address is invalid");
            return;
        }
    };
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel)
        .max_encoding_message_size(sitesync_proto::MAX_MESSAGE_BYTES);
    let states = match SiteStates::open(&node.database) {
        Ok(states) => states,
        Err(e) => {
            warn!(error = %e, "cannot report site states: the site-state store does not open");
            return;
        }
    };
    let states = Arc::new(states);
    let mut watch = sync.watch();
    let last_finished = |view: &crate::sync::manager::ManagerView| view.last.as_ref().map(|r| r.id);
    let mut reported_finish = last_finished(&watch.borrow_and_update());
    let mut last_observed = Timestamp::from_unix_millis(i64::MIN);
    let mut backoff = FIRST_BACKOFF;
    loop {
        // Strictly later than the last report even if the clock stands still or steps back,
        // so the parent never takes a new state for a replay.
        let now = states.now();
        let observed_at = if now > last_observed {
            now
        } else {
            Timestamp::from_unix_millis(last_observed.unix_millis().saturating_add(1))
        };
        last_observed = observed_at;
        let view = sync.watch().borrow().clone();
        let report = {
            let node = node.clone();
            let states = states.clone();
            tokio::task::spawn_blocking(move || {
                let own = crate::grpc::wire::own_site_state(&node, &view, observed_at);
                let held = states.list()?;
                let mut sites = Vec::with_capacity(held.len() + 1);
                let code = own.site_code.clone();
                sites.push(own);
                sites.extend(
                    held.iter()
                        .filter(|h| h.state.site_code != code)
                        .map(|h| h.state.to_wire()),
                );
                Ok::<_, SiteStatesError>(v1::SiteStateReport {
                    reporter_site_code: code,
                    sites,
                })
            })
            .await
        };
        let outcome = match report {
            Ok(Ok(report)) => {
                let count = report.sites.len();
                client
                    .report_site_states(report)
                    .await
                    .map(|r| (count, r.into_inner()))
                    .map_err(|s| format!("{}: {}", s.code(), s.message()))
            }
            Ok(Err(e)) => Err(format!("cannot read the site states held here: {e}")),
            Err(e) => Err(format!("the report task failed: {e}")),
        };
        match outcome {
            Ok((count, receipt)) => {
                debug!(parent = %parent, sites = count, "site states reported to the parent");
                backoff = FIRST_BACKOFF;
                let interval = receipt
                    .next_report_within
                    .and_then(|d| u64::try_from(d.seconds).ok().map(Duration::from_secs))
                    .map_or(REPORT_INTERVAL, |d| d.clamp(MIN_INTERVAL, MAX_INTERVAL));
                // Sleep until the interval passes or one of this node's syncs finishes.
                let deadline = tokio::time::Instant::now() + interval;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => break,
                        changed = watch.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep_until(deadline).await;
                                break;
                            }
                            let finished = last_finished(&watch.borrow_and_update());
                            if finished != reported_finish {
                                reported_finish = finished;
                                break;
                            }
                        }
                    }
                }
            }
            Err(reason) => {
                warn!(parent = %parent, %reason, retry_in = ?backoff, "cannot report site states to the parent site");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn encode(record: &HeldState) -> Result<Vec<u8>, SiteStatesError> {
    postcard::to_allocvec(record).map_err(|e| SiteStatesError::Corrupt(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<HeldState, SiteStatesError> {
    postcard::from_bytes(bytes).map_err(|e| SiteStatesError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::MemoryBackend;

    const T0: Timestamp = Timestamp(1_767_225_600_000);

    fn store(sequence: u64, digest: u8) -> v1::StoreInfo {
        v1::StoreInfo {
            latest: Some(v1::Anchor {
                log_id: "log-a".into(),
                sequence,
                snapshot_through: None,
            }),
            first_retained_sequence: 1,
            digest: Some(v1::CatalogDigest {
                value: vec![digest; 32],
            }),
            revision_count: sequence,
            update_count: sequence,
        }
    }

    fn state(code: &str, parent: &str, digest: u8, observed_ms: i64) -> v1::SiteState {
        v1::SiteState {
            site_code: code.into(),
            role: v1::SiteRole::Site as i32,
            parent_site_code: parent.into(),
            address: format!("{}.example:7443", code.to_lowercase()),
            update_server: Some(store(10, digest)),
            site_database: Some(store(10, digest)),
            replication: Some(v1::ReplicationState {
                applied: Some(v1::Anchor {
                    log_id: "log-a".into(),
                    sequence: if digest == 1 { 10 } else { 4 },
                    snapshot_through: None,
                }),
                ..Default::default()
            }),
            observed_at: Some(timestamp_to_wire(Timestamp(T0.0 + observed_ms))),
            ..Default::default()
        }
    }

    fn report(sites: Vec<v1::SiteState>) -> v1::SiteStateReport {
        v1::SiteStateReport {
            reporter_site_code: sites
                .first()
                .map(|s| s.site_code.clone())
                .unwrap_or_default(),
            sites,
        }
    }

    fn own() -> ReportedState {
        ReportedState::from_wire(&state("CEN", "", 1, 0)).unwrap()
    }

    fn refused(wire: &v1::SiteStateReport, needle: &str) {
        match SiteStateReport::from_wire(wire, "CEN", T0) {
            Err(SiteStatesError::Invalid(reason)) => {
                assert!(reason.contains(needle), "`{reason}` lacks `{needle}`");
            }
            other => panic!("expected a refusal naming `{needle}`, got {other:?}"),
        }
    }

    #[test]
    fn malformed_reports_are_refused_with_the_reason() {
        let mut no_reporter = report(vec![state("PR1", "", 1, 1)]);
        no_reporter.reporter_site_code = String::new();
        refused(&no_reporter, "reporter_site_code");
        let mut empty = report(vec![]);
        empty.reporter_site_code = "PR1".into();
        refused(&empty, "holds no state");
        let mut wrong_first = report(vec![state("PR1", "", 1, 1)]);
        wrong_first.reporter_site_code = "PR2".into();
        refused(&wrong_first, "reporter's own (PR2)");
        refused(
            &report(vec![state("PR1", "", 1, 1), state("TOOLONG", "PR1", 1, 1)]),
            "not a site code",
        );
        refused(
            &report(vec![
                state("PR1", "", 1, 1),
                state("SE1", "PR1", 1, 1),
                state("SE1", "PR1", 1, 2),
            ]),
            "twice",
        );
        refused(
            &report(vec![state("PR1", "", 1, 1), state("CEN", "PR1", 1, 1)]),
            "receiving site",
        );
        refused(
            &report(vec![state("PR1", "", 1, 1), state("SE1", "ZZZ", 1, 1)]),
            "does not lead to PR1",
        );
        refused(
            &report(vec![state("PR1", "PR9", 1, 1)]),
            "reports PR9 as its parent",
        );
        let mut no_stores = state("PR1", "", 1, 1);
        no_stores.update_server = None;
        refused(&report(vec![no_stores]), "update_server is missing");
        let mut unobserved = state("PR1", "", 1, 1);
        unobserved.observed_at = None;
        refused(&report(vec![unobserved]), "observed_at is missing");
        refused(
            &report(vec![state("PR1", "", 1, 3_600_000)]),
            "correct that site's clock",
        );
        let ok = SiteStateReport::from_wire(
            &report(vec![state("pr1", "", 1, 1), state("SE1", "PR1", 1, 1)]),
            "CEN",
            T0,
        )
        .unwrap();
        assert_eq!(ok.reporter, "PR1");
        assert_eq!(ok.sites[0].parent_site_code, "CEN");
    }

    #[test]
    fn a_newer_observation_wins_and_an_older_one_changes_nothing() {
        let clock = ManualClock::new(T0);
        let states = SiteStates::new(Box::new(MemoryBackend::default()), Arc::new(clock.clone()));
        let newer =
            SiteStateReport::from_wire(&report(vec![state("PR1", "", 1, 2_000)]), "CEN", T0)
                .unwrap();
        assert_eq!(states.merge(&newer, &own()).unwrap().stored, 1);
        clock.advance(Duration::from_secs(5));
        let older =
            SiteStateReport::from_wire(&report(vec![state("PR1", "", 2, 1_000)]), "CEN", T0)
                .unwrap();
        let outcome = states.merge(&older, &own()).unwrap();
        assert_eq!(
            outcome,
            MergeOutcome {
                stored: 0,
                ignored: 1
            }
        );
        let held = states.get("PR1").unwrap().unwrap();
        assert_eq!(held.state.update_server.digest, vec![1; 32]);
        assert_eq!(
            held.received_at, T0,
            "an ignored report does not refresh the arrival"
        );
        assert_eq!(held.in_step_at, Some(T0));
    }

    #[test]
    fn the_tree_lists_parents_before_children_with_lag_and_staleness() {
        let clock = ManualClock::new(T0);
        let states = SiteStates::new(Box::new(MemoryBackend::default()), Arc::new(clock.clone()));
        let first = SiteStateReport::from_wire(
            &report(vec![state("PR1", "", 1, 1), state("SE1", "PR1", 1, 1)]),
            "CEN",
            T0,
        )
        .unwrap();
        states.merge(&first, &own()).unwrap();
        clock.advance(Duration::from_secs(60));
        // PR1 falls behind (digest 2, applied 4 of the top's 10) and keeps reporting; SE1
        // stops: PR1 relays only its old state.
        let second = SiteStateReport::from_wire(
            &report(vec![state("PR1", "", 2, 60_000), state("SE1", "PR1", 1, 1)]),
            "CEN",
            T0,
        )
        .unwrap();
        assert_eq!(
            states.merge(&second, &own()).unwrap(),
            MergeOutcome {
                stored: 1,
                ignored: 1
            }
        );
        let now = T0.saturating_add(Duration::from_secs(61));
        let registered = [ChildRecord {
            site_code: "PR2".into(),
            role: "site".into(),
            address: "pr2.example:7443".into(),
            registered_at: T0,
            last_seen: T0,
        }];
        let tree = assemble(
            state("CEN", "", 1, 61_000),
            states.list().unwrap(),
            &registered,
            now,
            Duration::from_secs(10),
        );
        let order: Vec<(&str, &str, bool)> = tree
            .sites
            .iter()
            .map(|n| {
                let s = n.state.as_ref().unwrap();
                (
                    s.site_code.as_str(),
                    s.parent_site_code.as_str(),
                    n.reachable,
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("CEN", "", true),
                ("PR1", "CEN", true),
                ("SE1", "PR1", false),
                ("PR2", "CEN", false)
            ]
        );
        let pr1 = tree.sites[1].lag.unwrap();
        assert_eq!(pr1.revisions, 6);
        assert_eq!(pr1.behind.unwrap().seconds, 61);
        // SE1 matched PR1 when it last reported; against PR1's newer state it does not.
        assert!(tree.sites[2].lag.is_some());
        assert!(tree.sites[3].lag.is_none());
        assert!(tree.sites[3].last_report_at.is_none());
    }
}
