//! `sitesyncctl status`: the node's state from `Admin.GetSiteStatus` — both stores, the
//! last, current and queued syncs, the next scheduled sync, the client policy version and
//! the registered children.

use std::process::ExitCode;

use anyhow::Context as _;
use comfy_table::Table;
use serde::Serialize;
use sitesync_metadata::Timestamp;
use sitesync_proto::v1;

use crate::client::{Node, unary};
use crate::output::{self, OutputFormat};
use crate::units::{self, rfc3339_opt, short_time};
use crate::views::{AnchorView, CatalogVersionView, StoreView, SyncRunView, non_empty, role_name};

pub async fn run(mut node: Node, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let status = node
        .admin
        .get_site_status(unary(v1::GetSiteStatusRequest {}))
        .await
        .map_err(|status| node.failed("Admin.GetSiteStatus", status))?
        .into_inner();
    let view = SiteStatusView::new(&status)?;
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => {
            for table in view.tables(units::now()) {
                output::print_table(&table)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `status --output json` prints.
#[derive(Debug, Serialize)]
pub struct SiteStatusView {
    pub site_code: String,
    /// `site` or `internet`.
    pub role: &'static str,
    /// Null at the top site.
    pub parent_site_code: Option<String>,
    pub address: Option<String>,
    pub node_version: Option<String>,
    /// When the node produced this state.
    pub observed_at: Option<String>,
    /// The update-server store (the WSUS database).
    pub update_server: Option<StoreView>,
    /// The site database; null at an internet-facing node.
    pub site_database: Option<StoreView>,
    /// Replication from the parent; null at the top site.
    pub replication: Option<ReplicationView>,
    /// The last finished sync; null if none has finished.
    pub last_sync: Option<SyncRunView>,
    /// The sync in progress; null when idle.
    pub current_sync: Option<SyncRunView>,
    pub queued_syncs: Vec<SyncRunView>,
    /// The next scheduled sync (top site only).
    pub next_sync_at: Option<String>,
    /// 0 before the first successful sync.
    pub client_policy_version: u64,
    /// The signed catalog version held, decoded but not verified; null when signing is off.
    pub catalog_version: Option<CatalogVersionView>,
    pub children: Vec<ChildView>,
}

#[derive(Debug, Serialize)]
pub struct ReplicationView {
    pub applied: Option<AnchorView>,
    pub applied_at: Option<String>,
    pub parent_latest_sequence: u64,
}

/// A registered child as its parent knows it.
#[derive(Debug, Serialize)]
pub struct ChildView {
    pub site_code: String,
    pub role: &'static str,
    pub address: String,
    pub registered_at: Option<String>,
    pub last_contact_at: Option<String>,
    pub pending_sync_requests: u32,
    pub replication_acked: Option<AnchorView>,
}

impl SiteStatusView {
    pub fn new(status: &v1::SiteStatus) -> anyhow::Result<Self> {
        let site = status
            .site
            .as_ref()
            .context("the node's status has no site state (SiteStatus.site is missing)")?;
        Ok(Self {
            site_code: site.site_code.clone(),
            role: role_name(site.role),
            parent_site_code: non_empty(&site.parent_site_code),
            address: non_empty(&site.address),
            node_version: non_empty(&site.node_version),
            observed_at: rfc3339_opt(site.observed_at.as_ref()),
            update_server: site.update_server.as_ref().map(StoreView::new),
            site_database: site.site_database.as_ref().map(StoreView::new),
            replication: site.replication.as_ref().map(|r| ReplicationView {
                applied: r.applied.as_ref().map(AnchorView::new),
                applied_at: rfc3339_opt(r.applied_at.as_ref()),
                parent_latest_sequence: r.parent_latest_sequence,
            }),
            last_sync: site.last_sync.as_ref().map(SyncRunView::new),
            current_sync: site.current_sync.as_ref().map(SyncRunView::new),
            queued_syncs: status.queued_syncs.iter().map(SyncRunView::new).collect(),
            next_sync_at: rfc3339_opt(site.next_sync_at.as_ref()),
            client_policy_version: status.client_policy_version,
            catalog_version: site
                .catalog_version
                .as_ref()
                .and_then(CatalogVersionView::new),
            children: status
                .children
                .iter()
                .map(|child| ChildView {
                    site_code: child.site_code.clone(),
                    role: role_name(child.role),
                    address: child.address.clone(),
                    registered_at: rfc3339_opt(child.registered_at.as_ref()),
                    last_contact_at: rfc3339_opt(child.last_contact_at.as_ref()),
                    pending_sync_requests: child.pending_sync_requests,
                    replication_acked: child.replication_acked.as_ref().map(AnchorView::new),
                })
                .collect(),
        })
    }
}

impl SiteStatusView {
    /// The tables `status` prints for people: the site and its syncs, the two stores side
    /// by side, and the children when there are any. `now` makes relative times
    /// ("in 6d 22h").
    fn tables(&self, now: Timestamp) -> Vec<Table> {
        let mut tables = vec![self.site_table(now), self.store_table()];
        if !self.children.is_empty() {
            tables.push(self.children_table());
        }
        tables
    }

    fn site_table(&self, now: Timestamp) -> Table {
        let mut rows: Vec<(&str, String)> = Vec::new();
        let position = match (&self.parent_site_code, self.role) {
            (None, "site") => "top site".to_owned(),
            (Some(parent), "internet") => format!("internet-facing update point of {parent}"),
            (Some(parent), _) => format!("child of {parent}"),
            (None, role) => role.to_owned(),
        };
        rows.push(("site", format!("{} ({position})", self.site_code)));
        rows.push(("role", self.role.to_owned()));
        if let Some(address) = &self.address {
            rows.push(("address", address.clone()));
        }
        if let Some(version) = &self.node_version {
            rows.push(("node version", version.clone()));
        }
        match &self.last_sync {
            None => rows.push(("last sync", "none yet".to_owned())),
            Some(run) => {
                let result = run.result.unwrap_or("not finished");
                rows.push(("last sync", format!("{}, {result}", run.kind)));
                rows.push(("  started", time_with_relative(run.started.as_deref(), now)));
                let took = match (&run.started, &run.finished) {
                    (Some(started), Some(finished)) => took(started, finished),
                    _ => None,
                };
                let mut finished = time_with_relative(run.finished.as_deref(), now);
                if let Some(took) = took {
                    match finished.strip_suffix(')') {
                        Some(open) => finished = format!("{open}, took {took})"),
                        None => finished.push_str(&format!(" (took {took})")),
                    }
                }
                rows.push(("  finished", finished));
                rows.push(("  changes", run.counts.summary()));
                if let Some(reason) = &run.failure_reason {
                    rows.push(("  failure", reason.clone()));
                }
                if let Some(retry_at) = &run.retry_at {
                    rows.push(("  retry at", time_with_relative(Some(retry_at), now)));
                }
            }
        }
        rows.push((
            "current sync",
            match &self.current_sync {
                None => "none".to_owned(),
                Some(run) => describe_running(run),
            },
        ));
        if !self.queued_syncs.is_empty() {
            let kinds: Vec<&str> = self.queued_syncs.iter().map(|r| r.kind).collect();
            rows.push((
                "queued syncs",
                format!("{} ({})", kinds.len(), kinds.join(", ")),
            ));
        }
        rows.push((
            "next scheduled sync",
            match &self.next_sync_at {
                Some(at) => time_with_relative(Some(at), now),
                None if self.parent_site_code.is_some() => "on the parent's request".to_owned(),
                None => "none (manual only)".to_owned(),
            },
        ));
        if let Some(replication) = &self.replication {
            let applied = replication.applied.as_ref().map_or(0, |a| a.sequence);
            rows.push((
                "replication",
                format!(
                    "applied {applied} of the parent's {}",
                    replication.parent_latest_sequence
                ),
            ));
        }
        rows.push((
            "client policy version",
            match self.client_policy_version {
                0 => "none yet (no successful sync)".to_owned(),
                version => version.to_string(),
            },
        ));
        if let Some(version) = &self.catalog_version {
            rows.push((
                "catalog version",
                format!("{} (signed by {})", version.version, version.top_site_code),
            ));
        }
        if let Some(observed) = &self.observed_at {
            rows.push(("as of", observed.clone()));
        }
        output::name_value_table(rows)
    }

    fn store_table(&self) -> Table {
        let mut table = output::table();
        table.set_header(["", "update server", "site database"]);
        let cells = |store: &Option<StoreView>| match store {
            Some(s) => [
                s.revisions.to_string(),
                s.updates.to_string(),
                s.short_digest(),
                s.sequence.to_string(),
            ],
            None => [
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ],
        };
        let update_server = cells(&self.update_server);
        let site_database = cells(&self.site_database);
        for (i, name) in ["revisions", "updates", "digest", "sequence"]
            .into_iter()
            .enumerate()
        {
            table.add_row([
                name.to_owned(),
                update_server[i].clone(),
                site_database[i].clone(),
            ]);
        }
        table
    }

    fn children_table(&self) -> Table {
        let mut table = output::table();
        table.set_header([
            "child",
            "role",
            "address",
            "last contact",
            "pending requests",
            "acked sequence",
        ]);
        for child in &self.children {
            table.add_row([
                child.site_code.clone(),
                child.role.to_owned(),
                child.address.clone(),
                child.last_contact_at.clone().unwrap_or_else(|| "-".into()),
                child.pending_sync_requests.to_string(),
                child
                    .replication_acked
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |a| a.sequence.to_string()),
            ]);
        }
        table
    }
}

/// `manual sync 7, syncing the update server (120/500)`.
pub fn describe_running(run: &SyncRunView) -> String {
    let mut text = format!("{} sync {}", run.kind, run.sync_id);
    let phase = match &run.progress {
        Some(progress) if progress.total > 0 => format!(
            "{} ({}/{})",
            run.phase_description, progress.done, progress.total
        ),
        Some(progress) if progress.done > 0 => {
            format!("{} ({} done)", run.phase_description, progress.done)
        }
        _ => run.phase_description.to_owned(),
    };
    text.push_str(", ");
    text.push_str(&phase);
    text
}

/// How long from one RFC 3339 time to another (`12.3 s`), when both parse and are in order.
fn took(started: &str, finished: &str) -> Option<String> {
    let from = Timestamp::parse_iso8601(started)?;
    let to = Timestamp::parse_iso8601(finished)?;
    let millis = u64::try_from(to.unix_millis().checked_sub(from.unix_millis())?).ok()?;
    Some(units::human_duration(std::time::Duration::from_millis(
        millis,
    )))
}

/// `2025-01-31T10:00:00Z (3h 2m ago)`, `-` when absent.
fn time_with_relative(time: Option<&str>, now: Timestamp) -> String {
    let Some(time) = time else {
        return "-".to_owned();
    };
    let Some(parsed) = Timestamp::parse_iso8601(time) else {
        return time.to_owned();
    };
    let wire = sitesync_proto::convert::timestamp_to_wire(parsed);
    let shown = short_time(Some(&wire));
    match units::relative(&wire, now) {
        Some(relative) => format!("{shown} ({relative})"),
        None => shown,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn time(text: &str) -> prost_types::Timestamp {
        sitesync_proto::convert::timestamp_to_wire(Timestamp::parse_iso8601(text).unwrap())
    }

    fn store(revisions: u64, digest_byte: u8, sequence: u64) -> v1::StoreInfo {
        v1::StoreInfo {
            latest: Some(v1::Anchor {
                log_id: "6f1c1a9e-0000-4000-8000-000000000001".into(),
                sequence,
                snapshot_through: None,
            }),
            first_retained_sequence: 1,
            digest: Some(v1::CatalogDigest {
                value: vec![digest_byte; 32],
            }),
            revision_count: revisions,
            update_count: revisions - 2,
        }
    }

    pub(crate) fn finished_run() -> v1::SyncRun {
        v1::SyncRun {
            sync_id: "9b2f6c1e-1d5c-4d6e-9a57-3c1f0e6b1a01".into(),
            kind: v1::SyncKind::Full.into(),
            trigger: v1::SyncTrigger::Schedule.into(),
            phase: v1::SyncPhase::Finished.into(),
            result: v1::SyncResult::Succeeded.into(),
            requested_at: Some(time("2025-01-31T08:00:00Z")),
            started_at: Some(time("2025-01-31T08:00:00Z")),
            finished_at: Some(time("2025-01-31T08:00:12.5Z")),
            counts: Some(v1::SyncCounts {
                new: 150,
                changed: 2,
                expired: 1,
                deleted: 1,
                unchanged: 0,
                skipped_documents: 1,
                bytes_received: 123_456,
            }),
            progress: None,
            failure_reason: String::new(),
            retry_at: None,
            sync_request_id: String::new(),
        }
    }

    pub(crate) fn top_site_status() -> v1::SiteStatus {
        v1::SiteStatus {
            site: Some(v1::SiteState {
                site_code: "CEN".into(),
                role: v1::SiteRole::Site.into(),
                parent_site_code: String::new(),
                address: "http://127.0.0.1:8530".into(),
                update_server: Some(store(152, 0xab, 160)),
                site_database: Some(store(150, 0xcd, 158)),
                replication: None,
                last_sync: Some(finished_run()),
                current_sync: None,
                next_sync_at: Some(time("2025-02-07T08:00:00Z")),
                catalog_version: None,
                observed_at: Some(time("2025-01-31T10:00:00Z")),
                node_version: "0.1.0".into(),
            }),
            children: Vec::new(),
            queued_syncs: Vec::new(),
            client_policy_version: 3,
        }
    }

    #[test]
    fn json_has_what_scripts_rely_on() {
        let view = SiteStatusView::new(&top_site_status()).unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["site_code"], "CEN");
        assert_eq!(json["role"], "site");
        assert_eq!(json["parent_site_code"], serde_json::Value::Null);
        for (store, hex_byte, revisions, sequence) in [
            ("update_server", "ab", 152, 160),
            ("site_database", "cd", 150, 158),
        ] {
            assert_eq!(json[store]["digest"], hex_byte.repeat(32), "{store}");
            assert_eq!(json[store]["revisions"], revisions);
            assert_eq!(json[store]["updates"], revisions - 2);
            assert_eq!(json[store]["sequence"], sequence);
        }
        let last = &json["last_sync"];
        assert_eq!(last["kind"], "full");
        assert_eq!(last["result"], "succeeded");
        assert_eq!(last["trigger"], "schedule");
        assert_eq!(last["started"], "2025-01-31T08:00:00Z");
        assert_eq!(last["finished"], "2025-01-31T08:00:12.5Z");
        assert_eq!(last["counts"]["new"], 150);
        assert_eq!(last["failure_reason"], serde_json::Value::Null);
        assert_eq!(json["current_sync"], serde_json::Value::Null);
        assert_eq!(json["next_sync_at"], "2025-02-07T08:00:00Z");
        assert_eq!(json["client_policy_version"], 3);
    }

    #[test]
    fn a_node_that_never_synced_has_null_times() {
        let mut status = top_site_status();
        let site = status.site.as_mut().unwrap();
        site.last_sync = None;
        site.next_sync_at = None;
        let json = serde_json::to_value(SiteStatusView::new(&status).unwrap()).unwrap();
        assert_eq!(json["last_sync"], serde_json::Value::Null);
        assert_eq!(json["next_sync_at"], serde_json::Value::Null);
        assert!(SiteStatusView::new(&v1::SiteStatus::default()).is_err());
    }

    #[test]
    fn the_table_shows_short_digests_and_the_sync() {
        let now = Timestamp::parse_iso8601("2025-01-31T10:00:00Z").unwrap();
        let mut status = top_site_status();
        let site = status.site.as_mut().unwrap();
        site.current_sync = Some(v1::SyncRun {
            sync_id: "run-2".into(),
            kind: v1::SyncKind::Manual.into(),
            phase: v1::SyncPhase::UpdateServer.into(),
            progress: Some(v1::PhaseProgress {
                phase: v1::SyncPhase::UpdateServer.into(),
                done: 120,
                total: 500,
            }),
            ..Default::default()
        });
        let text: String = SiteStatusView::new(&status)
            .unwrap()
            .tables(now)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert!(text.contains("CEN (top site)"), "{text}");
        assert!(text.contains(&"ab".repeat(8)), "{text}");
        assert!(!text.contains(&"ab".repeat(9)), "{text}");
        assert!(text.contains("full, succeeded"), "{text}");
        assert!(
            text.contains("2025-01-31T08:00:12Z (1h 59m ago, took 12.5 s)"),
            "{text}"
        );
        assert!(
            text.contains("manual sync run-2, syncing the update server (120/500)"),
            "{text}"
        );
        assert!(text.contains("2025-02-07T08:00:00Z (in 6d 22h)"), "{text}");
    }
}
