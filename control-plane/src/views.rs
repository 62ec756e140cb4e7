//! What node responses look like to operators: JSON views for scripts and the names tables
//! show, shared by `status`, `sync`, `messages` and (later) `tree`.
//!
//! These are view types over the wire messages, not the wire messages themselves: the JSON
//! stays stable and readable while the contract evolves. Conventions: enums in lower
//! snake case (`full`, `site_database`, `succeeded`), times in RFC 3339 (null when absent),
//! digests as 64 lower-case hex characters, a missing required part of a response as null
//! rather than an invented zero.

use serde::Serialize;
use sitesync_proto::v1;
use sitesync_security::signing;
use sitesync_security::{Identity, TlsContext};
use std::time::SystemTime;

use crate::client::printable;
use crate::output::hex;
use crate::units::{rfc3339, rfc3339_opt};

/// How many hex characters of a digest tables show: enough to tell catalogs apart by eye.
pub const SHORT_DIGEST: usize = 16;

/// A store (update-server store or site database) at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    /// The catalog digest, 64 hex characters; null if the node sent none.
    pub digest: Option<String>,
    /// Revisions held.
    pub revisions: u64,
    /// Updates (distinct ids) held.
    pub updates: u64,
    /// The newest change-log sequence number.
    pub sequence: u64,
    /// The change log's identity.
    pub log_id: Option<String>,
    /// The oldest sequence still in the log.
    pub first_retained_sequence: u64,
}

impl StoreView {
    pub fn new(store: &v1::StoreInfo) -> Self {
        let latest = store.latest.as_ref();
        Self {
            digest: store.digest.as_ref().map(|d| hex(&d.value)),
            revisions: store.revision_count,
            updates: store.update_count,
            sequence: latest.map_or(0, |a| a.sequence),
            log_id: latest.map(|a| a.log_id.clone()).filter(|id| !id.is_empty()),
            first_retained_sequence: store.first_retained_sequence,
        }
    }

    /// The digest cut to [`SHORT_DIGEST`] characters, `-` when absent.
    pub fn short_digest(&self) -> String {
        short_digest(self.digest.as_deref())
    }
}

/// The first [`SHORT_DIGEST`] characters of a hex digest, `-` when absent.
pub fn short_digest(digest: Option<&str>) -> String {
    match digest {
        Some(digest) => digest.chars().take(SHORT_DIGEST).collect(),
        None => "-".to_owned(),
    }
}

/// What a sync changed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CountsView {
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped_documents: u64,
    pub bytes_received: u64,
}

impl CountsView {
    pub fn new(counts: Option<&v1::SyncCounts>) -> Self {
        counts.map_or_else(Self::default, |c| Self {
            new: c.new,
            changed: c.changed,
            expired: c.expired,
            deleted: c.deleted,
            unchanged: c.unchanged,
            skipped_documents: c.skipped_documents,
            bytes_received: c.bytes_received,
        })
    }

    /// `new 12, changed 3, expired 1, deleted 0, skipped 0`.
    pub fn summary(&self) -> String {
        format!(
            "new {}, changed {}, expired {}, deleted {}, skipped {}",
            self.new, self.changed, self.expired, self.deleted, self.skipped_documents
        )
    }
}

/// Progress within a phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    pub phase: &'static str,
    pub done: u64,
    /// 0 when not known yet.
    pub total: u64,
}

/// One sync run.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRunView {
    pub sync_id: String,
    /// `full` or `manual`.
    pub kind: &'static str,
    /// `schedule`, `operator`, `parent_request`, `retry`; null when not given.
    pub trigger: Option<&'static str>,
    /// `queued`, `started`, `update_server`, `site_database`, `internet_update_server`,
    /// `verifying`, `finished`.
    pub phase: &'static str,
    /// What the phase is doing, for people (`syncing the update server`).
    #[serde(skip)]
    pub phase_description: &'static str,
    /// `succeeded` or `failed`; null until finished.
    pub result: Option<&'static str>,
    pub requested: Option<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub counts: CountsView,
    pub progress: Option<ProgressView>,
    pub failure_reason: Option<String>,
    pub retry_at: Option<String>,
    pub sync_request_id: Option<String>,
}

impl SyncRunView {
    pub fn new(run: &v1::SyncRun) -> Self {
        Self {
            sync_id: run.sync_id.clone(),
            kind: sync_kind_name(run.kind),
            trigger: sync_trigger_name(run.trigger),
            phase: sync_phase_name(run.phase),
            phase_description: sync_phase_description(run.phase),
            result: sync_result_name(run.result),
            requested: rfc3339_opt(run.requested_at.as_ref()),
            started: rfc3339_opt(run.started_at.as_ref()),
            finished: rfc3339_opt(run.finished_at.as_ref()),
            counts: CountsView::new(run.counts.as_ref()),
            progress: run.progress.as_ref().map(|p| ProgressView {
                phase: sync_phase_name(p.phase),
                done: p.done,
                total: p.total,
            }),
            failure_reason: non_empty(&run.failure_reason).map(|r| printable(&r)),
            retry_at: rfc3339_opt(run.retry_at.as_ref()),
            sync_request_id: non_empty(&run.sync_request_id),
        }
    }
}

/// One status message.
#[derive(Debug, Clone, Serialize)]
pub struct StatusMessageView {
    pub time: Option<String>,
    pub site_code: String,
    pub sequence: u64,
    /// The number (6701...), kept even when this build does not know it.
    pub message_id: i32,
    /// The id's name (`sync_started`), null for ids this build does not know.
    pub message_name: Option<&'static str>,
    /// `informational`, `warning`, `error`.
    pub severity: &'static str,
    pub component: String,
    pub text: String,
    pub sync_id: Option<String>,
    /// The trace the message was raised in (32 hex digits), null when none.
    pub trace_id: Option<String>,
    pub properties: std::collections::BTreeMap<String, String>,
}

impl StatusMessageView {
    pub fn new(message: &v1::StatusMessage) -> Self {
        Self {
            time: message.time.as_ref().map(rfc3339),
            site_code: message.site_code.clone(),
            sequence: message.sequence,
            message_id: message.message_id,
            message_name: status_message_name(message.message_id),
            severity: severity_name(message.severity),
            component: message.component.clone(),
            text: printable(&message.text),
            sync_id: non_empty(&message.sync_id),
            trace_id: non_empty(&message.trace_id),
            properties: message
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The signed catalog version, decoded for display; `policy` also checks its signature.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogVersionView {
    pub version: u64,
    pub top_site_code: String,
    pub update_server_digest: Option<String>,
    pub site_database_digest: Option<String>,
    pub revision_count: u64,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub signature_algorithm: &'static str,
    /// `valid`, or why not, when checked against the operator's CA; null when not checked.
    pub signature: Option<String>,
}

impl CatalogVersionView {
    /// `None` when the carried bytes do not decode (the node would not serve such a
    /// version; this is display only).
    pub fn new(signed: &v1::SignedCatalogVersion) -> Option<Self> {
        let version = signed.decode_catalog_version().ok()?;
        Some(Self {
            version: version.version,
            top_site_code: version.top_site_code,
            update_server_digest: version.update_server_digest.map(|d| hex(&d.value)),
            site_database_digest: version.site_database_digest.map(|d| hex(&d.value)),
            revision_count: version.revision_count,
            issued_at: rfc3339_opt(version.issued_at.as_ref()),
            expires_at: rfc3339_opt(version.expires_at.as_ref()),
            signature_algorithm: match signed.algorithm() {
                v1::SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa_p256_sha256",
                v1::SignatureAlgorithm::Ed25519 => "ed25519",
                v1::SignatureAlgorithm::Unspecified => "unspecified",
            },
            signature: None,
        })
    }

    /// Checks the signature as a client would: it chains to the hierarchy CA the operator
    /// trusts, is not revoked, is the named top site's, and has not expired.
    pub fn check(&mut self, signed: &v1::SignedCatalogVersion, trust: &TlsContext) {
        let material = trust.current();
        let verified = match signed.algorithm() {
            v1::SignatureAlgorithm::EcdsaP256Sha256 => signing::verify(
                &material.ca,
                |der| material.is_revoked(der),
                &signed.signed_bytes(),
                signing::Algorithm::EcdsaP256Sha256,
                &signed.signature,
                &signed.signer_certificate,
                SystemTime::now(),
            )
            .map_err(|e| e.to_string()),
            other => Err(format!(
                "{} signatures are not checked here",
                other.as_str_name()
            )),
        };
        let expired = signed
            .decode_catalog_version()
            .ok()
            .and_then(|v| v.expires_at)
            .is_some_and(|at| {
                SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(at.seconds).unwrap_or(0))
                    <= SystemTime::now()
            });
        self.signature = Some(match verified {
            Ok(Identity::Site(code)) if code == self.top_site_code && !expired => "valid".into(),
            Ok(_) if expired => "expired".into(),
            Ok(signer) => format!(
                "signed by {signer}, not by the top site {}",
                self.top_site_code
            ),
            Err(reason) => reason,
        });
    }
}

/// A change-log position.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorView {
    pub log_id: String,
    pub sequence: u64,
}

impl AnchorView {
    pub fn new(anchor: &v1::Anchor) -> Self {
        Self {
            log_id: anchor.log_id.clone(),
            sequence: anchor.sequence,
        }
    }
}

pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

pub fn role_name(raw: i32) -> &'static str {
    match v1::SiteRole::try_from(raw) {
        Ok(v1::SiteRole::Site) => "site",
        Ok(v1::SiteRole::Internet) => "internet",
        _ => "unknown",
    }
}

pub fn sync_kind_name(raw: i32) -> &'static str {
    match v1::SyncKind::try_from(raw) {
        Ok(v1::SyncKind::Full) => "full",
        Ok(v1::SyncKind::Manual) => "manual",
        _ => "unknown",
    }
}

pub fn sync_trigger_name(raw: i32) -> Option<&'static str> {
    match v1::SyncTrigger::try_from(raw).ok()? {
        v1::SyncTrigger::Schedule => Some("schedule"),
        v1::SyncTrigger::Operator => Some("operator"),
        v1::SyncTrigger::ParentRequest => Some("parent_request"),
        v1::SyncTrigger::Retry => Some("retry"),
        v1::SyncTrigger::Import => Some("import"),
        v1::SyncTrigger::Unspecified => None,
    }
}

pub fn sync_phase_name(raw: i32) -> &'static str {
    match v1::SyncPhase::try_from(raw) {
        Ok(v1::SyncPhase::Queued) => "queued",
        Ok(v1::SyncPhase::Started) => "started",
        Ok(v1::SyncPhase::UpdateServer) => "update_server",
        Ok(v1::SyncPhase::SiteDatabase) => "site_database",
        Ok(v1::SyncPhase::InternetUpdateServer) => "internet_update_server",
        Ok(v1::SyncPhase::Verifying) => "verifying",
        Ok(v1::SyncPhase::Finished) => "finished",
        _ => "unknown",
    }
}

/// What a phase is doing, for progress bars and tables.
pub fn sync_phase_description(raw: i32) -> &'static str {
    match v1::SyncPhase::try_from(raw) {
        Ok(v1::SyncPhase::Queued) => "waiting for the sync in progress",
        Ok(v1::SyncPhase::Started) => "starting",
        Ok(v1::SyncPhase::UpdateServer) => "syncing the update server",
        Ok(v1::SyncPhase::SiteDatabase) => "syncing the site database",
        Ok(v1::SyncPhase::InternetUpdateServer) => "syncing the internet-facing update server",
        Ok(v1::SyncPhase::Verifying) => "verifying digests",
        Ok(v1::SyncPhase::Finished) => "finished",
        _ => "in an unknown phase",
    }
}

pub fn sync_result_name(raw: i32) -> Option<&'static str> {
    match v1::SyncResult::try_from(raw).ok()? {
        v1::SyncResult::Succeeded => Some("succeeded"),
        v1::SyncResult::Failed => Some("failed"),
        v1::SyncResult::Unspecified => None,
    }
}

pub fn severity_name(raw: i32) -> &'static str {
    match v1::Severity::try_from(raw) {
        Ok(v1::Severity::Informational) => "informational",
        Ok(v1::Severity::Warning) => "warning",
        Ok(v1::Severity::Error) => "error",
        _ => "unknown",
    }
}

pub fn status_message_name(raw: i32) -> Option<&'static str> {
    use v1::StatusMessageId as Id;
    Some(match Id::try_from(raw).ok()? {
        Id::SyncStarted => "sync_started",
        Id::SyncDone => "sync_done",
        Id::SyncFailed => "sync_failed",
        Id::SyncUpdateServer => "sync_update_server",
        Id::SyncSiteDatabase => "sync_site_database",
        Id::SyncInternetUpdateServer => "sync_internet_update_server",
        Id::DocumentSkipped => "document_skipped",
        Id::LegacyCatalogBuildStarted => "legacy_catalog_build_started",
        Id::LegacyCatalogBuilt => "legacy_catalog_built",
        Id::LegacyCatalogBuildFailed => "legacy_catalog_build_failed",
        Id::LegacyCatalogReceived => "legacy_catalog_received",
        Id::LegacyCatalogFetchFailed => "legacy_catalog_fetch_failed",
        Id::Unspecified => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_view_keeps_the_whole_digest_and_shortens_for_tables() {
        let store = v1::StoreInfo {
            latest: Some(v1::Anchor {
                log_id: "log-1".into(),
                sequence: 42,
                snapshot_through: None,
            }),
            first_retained_sequence: 1,
            digest: Some(v1::CatalogDigest {
                value: (0u8..32).collect(),
            }),
            revision_count: 10,
            update_count: 7,
        };
        let view = StoreView::new(&store);
        assert_eq!(view.digest.as_deref().unwrap().len(), 64);
        assert_eq!(view.short_digest(), "0001020304050607");
        assert_eq!(view.sequence, 42);
        let empty = StoreView::new(&v1::StoreInfo::default());
        assert_eq!(empty.digest, None);
        assert_eq!(empty.short_digest(), "-");
        assert_eq!(empty.log_id, None);
    }

    #[test]
    fn unknown_enum_values_are_named_not_dropped() {
        assert_eq!(sync_phase_name(99), "unknown");
        assert_eq!(sync_result_name(0), None);
        assert_eq!(status_message_name(6702), Some("sync_done"));
        assert_eq!(status_message_name(6799), None);
        let message = v1::StatusMessage {
            site_code: "CEN".into(),
            sequence: 3,
            message_id: 6799,
            severity: 2,
            ..Default::default()
        };
        let view = StatusMessageView::new(&message);
        assert_eq!(view.message_id, 6799);
        assert_eq!(view.severity, "warning");
        assert_eq!(view.time, None);
    }
}
