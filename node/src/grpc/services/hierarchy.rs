//! `sitesync.v1.Hierarchy`: children register with their parent, a parent requests syncs
//! from its children, children forward status messages up.
//!
//! An internet-facing node (S11) takes sync requests from its own site, with the reason
//! `INTERNET_UPDATE_POINT`, and has no children: it refuses registrations.

use std::sync::Arc;

use sitesync_proto::convert::timestamp_from_wire;
use sitesync_proto::v1;
use tonic::{Request, Response, Status};
use tracing::info;

use super::super::access::Caller;
use crate::hierarchy::{Hierarchy, HierarchyError, Receipt};
use crate::sync::manager::{SyncKind, SyncManager, SyncTrigger};
use crate::sync::status::{Severity, StatusMessage, StatusMessageId};
use crate::telemetry::TraceContext;

#[derive(Debug)]
pub struct HierarchyService {
    hierarchy: Arc<Hierarchy>,
    sync: SyncManager,
}

impl HierarchyService {
    pub fn new(hierarchy: Arc<Hierarchy>, sync: SyncManager) -> Self {
        Self { hierarchy, sync }
    }
}

/// Lets [`crate::hierarchy::ReceivedRequests::accept`] carry either failure.
enum AcceptError {
    Hierarchy(HierarchyError),
    Status(Status),
}

impl From<HierarchyError> for AcceptError {
    fn from(e: HierarchyError) -> Self {
        Self::Hierarchy(e)
    }
}

fn message_from_wire(wire: v1::StatusMessage) -> Result<StatusMessage, Status> {
    let id = u32::try_from(wire.message_id)
        .ok()
        .and_then(StatusMessageId::from_code)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "status message {} of site {}: {} is not a known message id",
                wire.sequence, wire.site_code, wire.message_id
            ))
        })?;
    let severity = match wire.severity() {
        v1::Severity::Warning => Severity::Warning,
        v1::Severity::Error => Severity::Error,
        _ => Severity::Informational,
    };
    let time = wire
        .time
        .map(timestamp_from_wire)
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("status message time: {e}")))?
        .ok_or_else(|| Status::invalid_argument("a status message needs its time"))?;
    let sync_id = if wire.sync_id.is_empty() {
        0
    } else {
        wire.sync_id
            .parse()
            .map_err(|_| Status::invalid_argument(format!("`{}` is not a sync id", wire.sync_id)))?
    };
    if !crate::sync::status::valid_trace_id(&wire.trace_id) {
        return Err(Status::invalid_argument(format!(
            "`{}` is not a trace id (32 lowercase hex digits, or empty)",
            wire.trace_id
        )));
    }
    Ok(StatusMessage {
        trace_id: wire.trace_id,
        site_code: wire.site_code,
        sequence: wire.sequence,
        id,
        severity,
        component: wire.component,
        time,
        sync_id,
        text: wire.text,
        properties: wire.properties.into_iter().collect(),
    })
}

#[tonic::async_trait]
impl v1::hierarchy_server::Hierarchy for HierarchyService {
    async fn register_child(
        &self,
        request: Request<v1::RegisterChildRequest>,
    ) -> Result<Response<v1::RegisterChildResponse>, Status> {
        Caller::must_be_site(
            &request,
            &request.get_ref().site_code,
            "register as a child",
        )?;
        let request = request.into_inner();
        let role = match request.role() {
            v1::SiteRole::Site => "site",
            v1::SiteRole::Internet => "internet",
            _ => {
                return Err(Status::invalid_argument(
                    "the child's role is missing: send SITE for a child site or INTERNET for the site's internet-facing node",
                ));
            }
        };
        let hierarchy = self.hierarchy.clone();
        let now = hierarchy.clock.now();
        let last_succeeded = self
            .sync
            .watch()
            .borrow()
            .last_succeeded
            .as_ref()
            .map(|run| run.id);
        let (record, pending) = tokio::task::spawn_blocking(move || {
            hierarchy.register_child(
                &request.site_code,
                role,
                &request.address,
                now,
                last_succeeded,
            )
        })
        .await
        .map_err(|e| Status::internal(format!("the registration task failed: {e}")))??;
        info!(child = %record.site_code, address = %record.address, role = %record.role, pending, "child site registered");
        let site_code = self.hierarchy.node.config.site_code.to_string();
        Ok(Response::new(v1::RegisterChildResponse {
            parent_site_code: site_code.clone(),
            // Known exactly only at the top site; a child answers with its own code.
            top_site_code: if self.hierarchy.has_parent() {
                String::new()
            } else {
                site_code
            },
            report_interval: Some(super::super::site_states::wire_duration(
                crate::hierarchy::site_states::REPORT_INTERVAL,
            )),
            pending_sync_requests: u32::try_from(pending).unwrap_or(u32::MAX),
        }))
    }

    async fn request_sync(
        &self,
        request: Request<v1::SyncRequest>,
    ) -> Result<Response<v1::SyncRequestReceipt>, Status> {
        Caller::must_be_site(
            &request,
            &request.get_ref().parent_site_code,
            "ask for a sync",
        )?;
        let request = request.into_inner();
        if !self.hierarchy.has_parent() {
            return Err(Status::failed_precondition(
                "this is a top site: it has no parent to take sync requests from; start its sync with `sitesyncctl sync` instead",
            ));
        }
        if request.request_id.is_empty() {
            return Err(Status::invalid_argument(
                "a sync request needs a request_id (the parent's de-duplication key)",
            ));
        }
        let internet = self.hierarchy.is_internet_node();
        match (request.reason(), internet) {
            (v1::SyncRequestReason::Cascade, false)
            | (v1::SyncRequestReason::InternetUpdatePoint, true) => {}
            (v1::SyncRequestReason::Cascade, true) => {
                return Err(Status::failed_precondition(
                    "this is an internet-facing node: it syncs when its own site's update server has synced (S11); send reason INTERNET_UPDATE_POINT",
                ));
            }
            (v1::SyncRequestReason::InternetUpdatePoint, false) => {
                return Err(Status::failed_precondition(
                    "this is a child site, not an internet-facing node: send reason CASCADE",
                ));
            }
            (v1::SyncRequestReason::Unspecified, _) => {
                return Err(Status::invalid_argument(if internet {
                    "a sync request needs its reason: INTERNET_UPDATE_POINT"
                } else {
                    "a sync request needs its reason: CASCADE"
                }));
            }
        }
        match request.kind() {
            v1::SyncKind::Full => {}
            v1::SyncKind::Manual => {
                return Err(Status::failed_precondition(
                    "a child site always runs a full sync (S5): send kind FULL",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(
                    "a sync request needs its kind: FULL",
                ));
            }
        }
        let hierarchy = self.hierarchy.clone();
        let sync = self.sync.clone();
        let request_id = request.request_id.clone();
        // The child's sync continues the parent's trace, which this call's span joined.
        let trace = TraceContext::current();
        let receipt = tokio::task::spawn_blocking(move || {
            hierarchy.received.accept(&request_id, || {
                sync.request_traced(SyncKind::Full, SyncTrigger::ParentRequest, trace)
                    .map_err(|e| AcceptError::Status(e.into()))
            })
        })
        .await
        .map_err(|e| Status::internal(format!("the sync request task failed: {e}")))?
        .map_err(|e| match e {
            AcceptError::Hierarchy(e) => Status::from(e),
            AcceptError::Status(s) => s,
        })?;
        let (disposition, id) = match receipt {
            Receipt::Started(id) => (v1::SyncRequestDisposition::Started, id),
            Receipt::Queued(id) => (v1::SyncRequestDisposition::Queued, id),
            Receipt::Duplicate(id) => (v1::SyncRequestDisposition::Duplicate, id),
        };
        info!(request_id = %request.request_id, parent = %request.parent_site_code, ?disposition, sync_id = id, "sync request from the parent site");
        Ok(Response::new(v1::SyncRequestReceipt {
            disposition: disposition as i32,
            sync_id: id.to_string(),
        }))
    }

    async fn report_status_messages(
        &self,
        request: Request<v1::StatusMessageBatch>,
    ) -> Result<Response<v1::StatusMessageReceipt>, Status> {
        Caller::must_be_site(
            &request,
            &request.get_ref().reporter_site_code,
            "report status messages",
        )?;
        let batch = request.into_inner();
        let messages = batch
            .messages
            .into_iter()
            .map(message_from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let count = messages.len();
        let sync = self.sync.clone();
        let hierarchy = self.hierarchy.clone();
        let accepted = tokio::task::spawn_blocking(move || {
            let own = hierarchy.node.config.site_code.to_string();
            let sites: Vec<String> = messages
                .iter()
                .map(|m| m.site_code.clone())
                .filter(|code| *code != own)
                .collect();
            let accepted = sync
                .status_log()
                .insert_forwarded(messages)
                .map_err(|e| match e {
                    crate::sync::status::StatusError::Backend(_) => {
                        Status::internal(format!("cannot store the status messages: {e}"))
                    }
                    e => Status::invalid_argument(format!("status messages refused: {e}")),
                })?;
            // After storing, on every call (duplicates too), so a failure here is mended by
            // the sender's retry: these sites' messages are forwarded on to this node's parent.
            hierarchy
                .forwarding
                .note_sites(sites.iter().map(String::as_str))
                .map_err(Status::from)?;
            Ok::<_, Status>(accepted)
        })
        .await
        .map_err(|e| Status::internal(format!("the status message task failed: {e}")))??;
        Ok(Response::new(v1::StatusMessageReceipt {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            duplicates: u32::try_from(count - accepted).unwrap_or(u32::MAX),
        }))
    }

    async fn report_site_states(
        &self,
        request: Request<v1::SiteStateReport>,
    ) -> Result<Response<v1::SiteStateReceipt>, Status> {
        Caller::must_be_site(
            &request,
            &request.get_ref().reporter_site_code,
            "report site states",
        )?;
        let wire = request.into_inner();
        let hierarchy = self.hierarchy.clone();
        let view = self.sync.watch().borrow().clone();
        let (reporter, outcome) = tokio::task::spawn_blocking(move || {
            use crate::hierarchy::site_states::{ReportedState, SiteStateReport, SiteStates};
            let node = &hierarchy.node;
            let receiver = node.config.site_code.to_string();
            let states = SiteStates::open(node)?;
            let now = states.now();
            let report = SiteStateReport::from_wire(&wire, &receiver, now)?;
            if hierarchy.children.get(&report.reporter)?.is_none() {
                return Err(Status::failed_precondition(format!(
                    "{} is not a registered child of {receiver}: a child registers itself (RegisterChild) when it starts, then reports",
                    report.reporter
                )));
            }
            let own = super::super::wire::own_site_state(node, &view, now);
            let own = ReportedState::from_wire(&own).map_err(|reason| {
                Status::internal(format!("this site's own state is not valid: {reason}"))
            })?;
            let outcome = states.merge(&report, &own)?;
            Ok::<_, Status>((report.reporter, outcome))
        })
        .await
        .map_err(|e| Status::internal(format!("the site state task failed: {e}")))??;
        tracing::debug!(%reporter, stored = outcome.stored, ignored = outcome.ignored, "site states reported");
        Ok(Response::new(v1::SiteStateReceipt {
            next_report_within: Some(super::super::site_states::wire_duration(
                crate::hierarchy::site_states::REPORT_INTERVAL,
            )),
        }))
    }
}
