//! Site states flowing up the hierarchy, so the top site can draw the whole tree
//! (`Admin.GetHierarchy`, `sitesyncctl tree`) even for sites it cannot reach directly.
//!
//! - [`SiteStates`]: the latest [`HeldState`] of each site below this node, durable in the
//!   key space `site-states`. A state observed later replaces an earlier one; an older or
//!   equally old report of a site changes nothing, so a delayed or replayed report cannot
//!   roll a site back.
//! - [`SiteStateReport`]: a child's report, checked at the receiving edge: the reporter's
//!   own state first, then the sites below it, each naming a parent inside the report.
//! - [`super::reporting`]: the task of every node with a parent: every [`REPORT_INTERVAL`],
//!   and soon after each of its own syncs finishes, it sends its own state and those it holds
//!   to the parent, with backoff while the parent fails.
//! - [`lag`]: how far a site is behind its parent, in revisions and in time; the tree a
//!   node answers `GetHierarchy` with (assembled at the gRPC edge) and the replication-lag
//!   metrics both show it.
//!
//! Freshness is judged by when a newer state *arrived here*, read on the store's clock, not
//! by the sender's `observed_at`: nodes' clocks need not agree, and a grandchild that stops
//! reporting stops producing newer states even though its parent keeps relaying the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sitesync_metadata::Timestamp;
use tracing::warn;

use crate::clock::{Clock, TimestampExt};
use crate::config::Role;
use crate::node::NodeState;
use crate::store::{Backend, BackendError, StoreError, StoreState, WriteBatch};

/// How often a child reports its subtree to its parent when nothing else prompts it.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(3);
/// A site whose last report is older than this many report intervals is unreachable,
/// unless the operator asks for another threshold.
pub const STALE_REPORTS: u32 = 3;
/// The key space the states live in.
pub const SPACE: &str = "site-states";
/// The parent's `next_report_within` is followed within these bounds, so a parent cannot
/// make a child report in a tight loop or fall silent for hours.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(300);
/// How far ahead of this node's clock an `observed_at` may be: beyond it, a skewed clock
/// would pin the site's state until real time catches up.
pub(crate) const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(300);
/// More sites than any real hierarchy has in one report: a bound on what one call stores.
pub(crate) const MAX_SITES_PER_REPORT: usize = 10_000;

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
    /// A store's position as this node reports it.
    pub fn of(state: &StoreState) -> Self {
        Self {
            log_id: crate::feed::log_id_text(state.log_id),
            sequence: state.last_sequence,
            first_retained_sequence: state.first_retained_sequence,
            digest: state.digest.0.to_vec(),
            revisions: state.revisions,
            updates: state.updates,
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
    /// This node's own stores as a state, observed at `observed_at`: what the lag of its
    /// children is measured against. Its runs, replication position and catalog version are
    /// left out; the edge adds them where it reports the node's whole state.
    pub fn own_stores(node: &NodeState, observed_at: Timestamp) -> Self {
        let is_site = node.config.role == Role::Site;
        Self {
            site_code: node.config.site_code.to_string(),
            role: if is_site {
                ReportedRole::Site
            } else {
                ReportedRole::Internet
            },
            parent_site_code: String::new(),
            address: node.config.advertised_address(),
            update_server: StorePosition::of(&node.database.update_server().state()),
            site_database: is_site
                .then(|| StorePosition::of(&node.database.site_database().state())),
            replication: None,
            last_sync: None,
            current_sync: None,
            next_sync_at: None,
            observed_at,
            node_version: env!("CARGO_PKG_VERSION").to_owned(),
            catalog_version: None,
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
    /// The node's site states, on its network clock.
    pub fn open(node: &NodeState) -> Result<Self, SiteStatesError> {
        Ok(Self::new(
            node.database.space(SPACE)?,
            node.network_clock.clone(),
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

/// How far a site is behind its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Revisions of the parent's log the site has not applied.
    pub revisions: u64,
    /// Zero when the site's stores match its parent's, else how long they have not.
    pub behind: Duration,
}

/// How far `held` is behind `parent` at `now`.
///
/// Revisions: for a site, the parent's newest site-database sequence minus the one the
/// site's replication has applied (all of the parent's log when it replicates from another
/// log or not yet at all). An internet node has no site database and no replication
/// position in its site's log, so its lag is the difference in update-server revisions.
/// Time: zero when the stores match, else the time since they last matched as seen here
/// (since the site's first report when they never did).
pub fn lag(held: &HeldState, parent: &ReportedState, now: Timestamp) -> Lag {
    let site = &held.state;
    if in_step(site, parent) {
        return Lag::default();
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
    Lag {
        revisions,
        behind: now.saturating_duration_since(since),
    }
}

/// The lag of a child registered at `registered_at` that has not reported yet: it is taken
/// to hold nothing, so it lags by all its parent holds (the parent's site-database log for a
/// site, its update-server revisions for an internet-facing node), since it registered;
/// no lag at all while the parent holds nothing either.
pub fn lag_unreported(
    internet_node: bool,
    parent: &ReportedState,
    registered_at: Timestamp,
    now: Timestamp,
) -> Lag {
    let revisions = match (&parent.site_database, internet_node) {
        (Some(parent_db), false) => parent_db.sequence,
        _ => parent.update_server.revisions,
    };
    if revisions == 0 {
        return Lag::default();
    }
    Lag {
        revisions,
        behind: now.saturating_duration_since(registered_at),
    }
}

fn encode(record: &HeldState) -> Result<Vec<u8>, SiteStatesError> {
    postcard::to_allocvec(record).map_err(|e| SiteStatesError::Corrupt(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<HeldState, SiteStatesError> {
    postcard::from_bytes(bytes).map_err(|e| SiteStatesError::Corrupt(e.to_string()))
}
