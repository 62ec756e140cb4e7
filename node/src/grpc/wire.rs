//! Every conversion between the node's domain types and the wire types: domain → wire with
//! `From`, wire → domain with `TryFrom` that validates at the receiving edge, so domain
//! types carry no `Option` for a required field.

use sitesync_metadata::{CatalogDigest, RevisionId};
use sitesync_proto::convert::required;
use sitesync_proto::v1;
use sitesync_proto::{ConversionError, HeldReference, checked_document};

use sitesync_proto::convert::timestamp_to_wire;
use tonic::Status;

use crate::config::{Role, UpstreamConfig};
use crate::feed::{
    Anchor, Batch, BatchBody, Change, ChangePayload, DocumentForm, SentDocument, SentRevision,
    SnapshotPart, StorePosition, log_id_text,
};
use crate::node::NodeState;
use crate::store::{ChangeKind, StoreState};
use crate::sync::manager::{
    ManagerView, SyncKind, SyncManager, SyncPhase, SyncResult, SyncRun, SyncTrigger,
};
use crate::sync::status::{Severity, StatusMessage};

impl From<Anchor> for v1::Anchor {
    fn from(anchor: Anchor) -> Self {
        Self {
            log_id: log_id_text(anchor.log_id),
            sequence: anchor.sequence,
            snapshot_through: anchor.snapshot_through.map(Into::into),
        }
    }
}

impl TryFrom<v1::Anchor> for Anchor {
    type Error = ConversionError;

    fn try_from(wire: v1::Anchor) -> Result<Self, Self::Error> {
        let log_id =
            uuid::Uuid::parse_str(&wire.log_id).map_err(|_| ConversionError::OutOfRange {
                field: "log_id".to_owned(),
                reason: "not a log id (a UUID)",
            })?;
        Ok(Self {
            log_id: *log_id.as_bytes(),
            sequence: wire.sequence,
            snapshot_through: wire
                .snapshot_through
                .map(RevisionId::try_from)
                .transpose()
                .map_err(|e| e.within("snapshot_through"))?,
        })
    }
}

/// The wire form of the store's position at `sequence` of log `log_id`.
pub fn anchor(log_id: [u8; 16], sequence: u64) -> v1::Anchor {
    Anchor::at(log_id, sequence).into()
}

pub fn store_info(state: &StoreState) -> v1::StoreInfo {
    v1::StoreInfo {
        latest: Some(anchor(state.log_id, state.last_sequence)),
        first_retained_sequence: state.first_retained_sequence,
        digest: Some(state.digest.into()),
        revision_count: state.revisions,
        update_count: state.updates,
    }
}

impl TryFrom<v1::StoreInfo> for StorePosition {
    type Error = ConversionError;

    fn try_from(wire: v1::StoreInfo) -> Result<Self, Self::Error> {
        Ok(Self {
            latest: required(wire.latest, "latest")?,
            digest: required(wire.digest, "digest")?,
        })
    }
}

pub fn wire_role(role: Role) -> v1::SiteRole {
    match role {
        Role::Site => v1::SiteRole::Site,
        Role::Internet => v1::SiteRole::Internet,
    }
}

/// The update-server store as downstream nodes see it now.
pub fn catalog_info(node: &NodeState) -> v1::CatalogInfo {
    catalog_info_at(node, &node.database.update_server().state())
}

/// The update-server store as of a given state.
pub fn catalog_info_at(node: &NodeState, state: &StoreState) -> v1::CatalogInfo {
    v1::CatalogInfo {
        site_code: node.config.site_code.to_string(),
        role: wire_role(node.config.role) as i32,
        store: Some(store_info(state)),
        catalog_version: node.held_catalog_version(),
    }
}

/// The digest a `CatalogInfo` states, the empty catalog's when it states none.
pub fn stated_digest(info: &v1::CatalogInfo) -> CatalogDigest {
    info.store
        .as_ref()
        .and_then(|s| s.digest.clone())
        .and_then(|d| CatalogDigest::try_from(d).ok())
        .unwrap_or(CatalogDigest::EMPTY)
}

// The client policy.

/// The policy clients fetch, in its wire form.
pub fn machine_policy(node: &NodeState, sync: &SyncManager) -> Result<v1::MachinePolicy, Status> {
    let policy = sync.policy().current()?.ok_or_else(|| {
        Status::failed_precondition(
            "no client policy yet: the site publishes one after its first successful sync",
        )
    })?;
    let state = node.database.update_server().state();
    Ok(v1::MachinePolicy {
        version: policy.version,
        site_code: node.config.site_code.to_string(),
        update_servers: policy
            .update_servers
            .iter()
            .map(|address| v1::UpdateServerEndpoint {
                address: address.clone(),
                internet_facing: false,
            })
            .collect(),
        catalog_digest: Some(policy.catalog_digest.into()),
        revision_count: policy.revisions,
        catalog_version: node.held_catalog_version(),
        created_at: Some(timestamp_to_wire(policy.created_at)),
        sync_id: policy.sync_id.to_string(),
        catalog_position: Some(anchor(state.log_id, policy.catalog_sequence)),
    })
}

// A node's state, runs and status messages.

/// This node's own state as it reports it up, shows in its status and at the root of its
/// hierarchy: its stores, its replication position in its parent's log (a child site), its
/// last and current syncs, and when its next sync starts on its own — the schedule or a
/// pending retry (a child has no schedule, S2). The parent's code is left empty: the
/// parent fills in itself.
pub fn own_site_state(
    node: &NodeState,
    view: &ManagerView,
    observed_at: sitesync_metadata::Timestamp,
) -> v1::SiteState {
    let has_parent = matches!(node.config.upstream, UpstreamConfig::Parent(_));
    let is_site = node.config.role == Role::Site;
    let next_sync_at = match (view.next_scheduled_at, view.retry_at) {
        (Some(scheduled), Some(retry)) => Some(scheduled.min(retry)),
        (scheduled, retry) => scheduled.or(retry),
    };
    let replication = if has_parent && is_site {
        match crate::feed::follow::stored_replication_anchor(node.database.site_database()) {
            Ok(anchor) => Some(v1::ReplicationState {
                applied: Some(anchor.map_or_else(v1::Anchor::default, Into::into)),
                applied_at: None,
                parent_latest_sequence: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the replication position for the site state");
                None
            }
        }
    } else {
        None
    };
    v1::SiteState {
        site_code: node.config.site_code.to_string(),
        role: wire_role(node.config.role) as i32,
        parent_site_code: String::new(),
        address: node.config.advertised_address(),
        update_server: Some(store_info(&node.database.update_server().state())),
        site_database: is_site.then(|| store_info(&node.database.site_database().state())),
        replication,
        last_sync: view.last.as_ref().map(wire_run),
        current_sync: view.current.as_ref().map(wire_run),
        next_sync_at: next_sync_at.map(timestamp_to_wire),
        catalog_version: node.held_catalog_version(),
        observed_at: Some(timestamp_to_wire(observed_at)),
        node_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// A sync run as operators and parents see it.
pub fn wire_run(run: &SyncRun) -> v1::SyncRun {
    let phase = match run.phase {
        SyncPhase::Queued => v1::SyncPhase::Queued,
        SyncPhase::Starting => v1::SyncPhase::Started,
        SyncPhase::UpdateServer => v1::SyncPhase::UpdateServer,
        SyncPhase::SiteDatabase => v1::SyncPhase::SiteDatabase,
        SyncPhase::Finished => v1::SyncPhase::Finished,
    };
    let counts = run.counts.update_server;
    v1::SyncRun {
        sync_id: run.id.to_string(),
        kind: match run.kind {
            SyncKind::Full => v1::SyncKind::Full,
            SyncKind::Manual => v1::SyncKind::Manual,
        } as i32,
        trigger: match run.trigger {
            SyncTrigger::Schedule => v1::SyncTrigger::Schedule,
            SyncTrigger::Operator => v1::SyncTrigger::Operator,
            SyncTrigger::ParentRequest => v1::SyncTrigger::ParentRequest,
            SyncTrigger::Retry | SyncTrigger::Restart => v1::SyncTrigger::Retry,
            SyncTrigger::Import => v1::SyncTrigger::Import,
        } as i32,
        phase: phase as i32,
        result: match run.result {
            None => v1::SyncResult::Unspecified,
            Some(SyncResult::Succeeded) => v1::SyncResult::Succeeded,
            Some(SyncResult::Failed) => v1::SyncResult::Failed,
        } as i32,
        requested_at: Some(timestamp_to_wire(run.requested_at)),
        started_at: run.started_at.map(timestamp_to_wire),
        finished_at: run.finished_at.map(timestamp_to_wire),
        counts: Some(v1::SyncCounts {
            new: counts.new,
            changed: counts.changed,
            expired: counts.expired,
            deleted: counts.deleted,
            unchanged: 0,
            skipped_documents: run.counts.skipped,
            bytes_received: run.counts.bytes_received,
        }),
        progress: Some(v1::PhaseProgress {
            phase: phase as i32,
            done: run.progress.0,
            total: run.progress.1,
        }),
        failure_reason: run.failure_reason.clone().unwrap_or_default(),
        retry_at: run.retry_at.map(timestamp_to_wire),
        sync_request_id: String::new(),
    }
}

/// A status message as it travels up and to operators.
pub fn wire_message(message: &StatusMessage) -> v1::StatusMessage {
    v1::StatusMessage {
        site_code: message.site_code.clone(),
        sequence: message.sequence,
        message_id: message.id.code() as i32,
        component: message.component.clone(),
        severity: match message.severity {
            Severity::Informational => v1::Severity::Informational,
            Severity::Warning => v1::Severity::Warning,
            Severity::Error => v1::Severity::Error,
        } as i32,
        time: Some(timestamp_to_wire(message.time)),
        text: message.text.clone(),
        sync_id: if message.sync_id == 0 {
            String::new()
        } else {
            message.sync_id.to_string()
        },
        properties: message.properties.clone().into_iter().collect(),
        trace_id: message.trace_id.clone(),
    }
}

// The change feed's batches.

impl From<SentDocument> for v1::UpdateDocument {
    fn from(sent: SentDocument) -> Self {
        let (document, lz4_document) = match sent.form {
            DocumentForm::Plain(bytes) => (bytes, Vec::new()),
            DocumentForm::Lz4(bytes) => (Vec::new(), bytes),
        };
        Self {
            id: Some(sent.id.into()),
            document,
            lz4_document,
        }
    }
}

/// The shape of a received document; decompressing and parsing it is the feed's work (on
/// the blocking pool, see `feed::apply`).
impl TryFrom<v1::UpdateDocument> for SentDocument {
    type Error = ConversionError;

    fn try_from(wire: v1::UpdateDocument) -> Result<Self, Self::Error> {
        let id = required(wire.id, "id")?;
        let form = if wire.lz4_document.is_empty() {
            DocumentForm::Plain(checked_document(wire.document, "document")?)
        } else if wire.document.is_empty() {
            DocumentForm::Lz4(wire.lz4_document)
        } else {
            return Err(ConversionError::OutOfRange {
                field: "lz4_document".to_owned(),
                reason: "set together with `document`; a document travels in one form",
            });
        };
        Ok(Self { id, form })
    }
}

fn wire_kind(kind: ChangeKind) -> v1::ChangeKind {
    match kind {
        ChangeKind::New => v1::ChangeKind::New,
        ChangeKind::Changed => v1::ChangeKind::Changed,
        ChangeKind::Expired => v1::ChangeKind::Expired,
        ChangeKind::Deleted => v1::ChangeKind::Deleted,
    }
}

impl From<Change> for v1::CatalogChange {
    fn from(change: Change) -> Self {
        let payload = match change.payload {
            ChangePayload::Deleted(id) => v1::catalog_change::Payload::Deleted(id.into()),
            ChangePayload::Revision(SentRevision::Document(document)) => {
                v1::catalog_change::Payload::Revision(document.into())
            }
            ChangePayload::Revision(SentRevision::Reference(reference)) => {
                v1::catalog_change::Payload::Reference(reference.into())
            }
        };
        Self {
            sequence: change.sequence,
            kind: wire_kind(change.kind) as i32,
            payload: Some(payload),
        }
    }
}

impl TryFrom<v1::CatalogChange> for Change {
    type Error = ConversionError;

    fn try_from(wire: v1::CatalogChange) -> Result<Self, Self::Error> {
        // The receiver applies what the payload says; the kind is for people reading it.
        let kind = match v1::ChangeKind::try_from(wire.kind) {
            Ok(v1::ChangeKind::Changed) => ChangeKind::Changed,
            Ok(v1::ChangeKind::Expired) => ChangeKind::Expired,
            Ok(v1::ChangeKind::Deleted) => ChangeKind::Deleted,
            _ => ChangeKind::New,
        };
        let payload = match wire.payload {
            Some(v1::catalog_change::Payload::Revision(document)) => {
                ChangePayload::Revision(SentRevision::Document(document.try_into()?))
            }
            Some(v1::catalog_change::Payload::Reference(reference)) => ChangePayload::Revision(
                SentRevision::Reference(HeldReference::try_from(reference)?),
            ),
            Some(v1::catalog_change::Payload::Deleted(id)) => {
                ChangePayload::Deleted(RevisionId::try_from(id)?)
            }
            None => return Err(ConversionError::missing("payload")),
        };
        Ok(Self {
            sequence: wire.sequence,
            kind,
            payload,
        })
    }
}

impl From<Batch> for v1::ChangeBatch {
    fn from(batch: Batch) -> Self {
        let body = match batch.body {
            BatchBody::Log(changes) => v1::change_batch::Body::Log(v1::ChangeLogPart {
                changes: changes.into_iter().map(Into::into).collect(),
            }),
            BatchBody::Snapshot(part) => v1::change_batch::Body::Snapshot(v1::SnapshotPart {
                as_of_sequence: part.as_of,
                after: part.after.map(Into::into),
                through: part.through.map(Into::into),
                revisions: part.revisions.into_iter().map(Into::into).collect(),
                references: part.references.into_iter().map(Into::into).collect(),
            }),
        };
        Self {
            from: batch.from.map(Into::into),
            body: Some(body),
            resume_anchor: Some(batch.resume.into()),
        }
    }
}

impl TryFrom<v1::ChangeBatch> for Batch {
    type Error = ConversionError;

    fn try_from(wire: v1::ChangeBatch) -> Result<Self, Self::Error> {
        let from = wire
            .from
            .map(Anchor::try_from)
            .transpose()
            .map_err(|e| e.within("batch.from"))?;
        let resume = Anchor::try_from(
            wire.resume_anchor
                .ok_or_else(|| ConversionError::missing("batch.resume_anchor"))?,
        )
        .map_err(|e| e.within("batch.resume_anchor"))?;
        let body = match wire.body {
            Some(v1::change_batch::Body::Log(log)) => BatchBody::Log(
                log.changes
                    .into_iter()
                    .map(Change::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.within("change"))?,
            ),
            Some(v1::change_batch::Body::Snapshot(part)) => BatchBody::Snapshot(SnapshotPart {
                as_of: part.as_of_sequence,
                after: part.after.map(RevisionId::try_from).transpose()?,
                through: part.through.map(RevisionId::try_from).transpose()?,
                revisions: part
                    .revisions
                    .into_iter()
                    .map(SentDocument::try_from)
                    .collect::<Result<_, _>>()?,
                references: part
                    .references
                    .into_iter()
                    .map(HeldReference::try_from)
                    .collect::<Result<_, _>>()?,
            }),
            None => return Err(ConversionError::missing("batch.body")),
        };
        Ok(Self { from, resume, body })
    }
}
