//! The wire forms of the site states that flow up the hierarchy
//! ([`crate::hierarchy::site_states`]): each record's conversion, the check of a received
//! report at the receiving edge, and the tree `GetHierarchy` answers with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sitesync_metadata::Timestamp;
use sitesync_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use sitesync_proto::v1;

use crate::clock::TimestampExt;
use crate::config::SiteCode;
use crate::hierarchy::ChildRecord;
use crate::hierarchy::site_states::{
    HeldState, Lag, MAX_CLOCK_AHEAD, MAX_SITES_PER_REPORT, ReplicationPosition, ReportedRole,
    ReportedRun, ReportedState, SiteStateReport, SiteStatesError, StorePosition, lag,
};

impl StorePosition {
    pub(crate) fn from_wire(wire: &v1::StoreInfo, field: &str) -> Result<Self, String> {
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

    pub(crate) fn to_wire(&self) -> v1::StoreInfo {
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

fn optional_time(
    wire: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<Timestamp>, String> {
    wire.map(timestamp_from_wire)
        .transpose()
        .map_err(|e| format!("{field}: {e}"))
}

impl ReportedRun {
    pub(crate) fn from_wire(wire: &v1::SyncRun, field: &str) -> Result<Self, String> {
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

    pub(crate) fn to_wire(&self) -> v1::SyncRun {
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

/// A site's lag behind its parent, in its wire form.
pub fn wire_lag(lag: Lag) -> v1::SiteLag {
    v1::SiteLag {
        revisions: lag.revisions,
        behind: Some(wire_duration(lag.behind)),
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
                lag: parent_state.map(|p| wire_lag(lag(held, p, now))),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::hierarchy::site_states::{MergeOutcome, SiteStates};
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
