//! [`Peers`] over the `Hierarchy` service: registration, sync requests, status forwarding
//! and state reports, encoded here and nowhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sitesync_proto::MAX_MESSAGE_BYTES;
use sitesync_proto::convert::timestamp_to_wire;
use sitesync_proto::v1::{self, hierarchy_client::HierarchyClient};
use tonic::Status;
use tonic::transport::Channel;

use super::super::connect;
use super::super::trace::traced;
use super::super::wire::{own_site_state, store_info, wire_message, wire_role};
use crate::hierarchy::RequestReason;
use crate::hierarchy::peers::{
    OutgoingSyncRequest, PeerFuture, Peers, Registered, StatesReport, SyncDisposition,
};
use crate::node::NodeState;
use crate::sync::status::StatusMessage;

/// How long one call to another node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The hierarchy's peers reached over gRPC with the node's transport.
#[derive(Debug)]
pub struct GrpcPeers {
    node: Arc<NodeState>,
    /// One channel per parent address for the calls that repeat (status forwarding and
    /// state reports), so they share a connection instead of opening one each time.
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcPeers {
    pub fn new(node: Arc<NodeState>) -> Self {
        Self {
            node,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// A new channel to `address` (one connection per call, for calls that are rare).
    fn fresh(&self, address: &str) -> Result<HierarchyClient<Channel>, String> {
        let channel = connect::channel(&self.node.transport, address, Some(CALL_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(HierarchyClient::new(channel))
    }

    /// The shared channel to `address`.
    fn shared(&self, address: &str) -> Result<HierarchyClient<Channel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = connect::channel(&self.node.transport, address, Some(CALL_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                channels.insert(address.to_owned(), channel.clone());
                channel
            }
        };
        Ok(HierarchyClient::new(channel).max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

fn failed(status: Status) -> String {
    format!("{}: {}", status.code(), status.message())
}

fn wire_reason(reason: RequestReason) -> v1::SyncRequestReason {
    match reason {
        RequestReason::Cascade => v1::SyncRequestReason::Cascade,
        RequestReason::InternetUpdatePoint => v1::SyncRequestReason::InternetUpdatePoint,
    }
}

impl Peers for GrpcPeers {
    fn register(&self, parent: &str) -> PeerFuture<'_, Registered> {
        let parent = parent.to_owned();
        Box::pin(async move {
            let mut client = self.fresh(&parent)?;
            let config = &self.node.config;
            let request = v1::RegisterChildRequest {
                site_code: config.site_code.to_string(),
                role: wire_role(config.role) as i32,
                address: config.advertised_address(),
                node_version: env!("CARGO_PKG_VERSION").to_owned(),
                state: None,
            };
            let response = client
                .register_child(traced(request))
                .await
                .map_err(failed)?
                .into_inner();
            Ok(Registered {
                parent_site_code: response.parent_site_code,
                pending_sync_requests: response.pending_sync_requests.into(),
            })
        })
    }

    fn request_sync(
        &self,
        address: &str,
        request: OutgoingSyncRequest,
    ) -> PeerFuture<'_, SyncDisposition> {
        let address = address.to_owned();
        Box::pin(async move {
            let mut client = self.fresh(&address)?;
            let node = &self.node;
            let site_database = request
                .with_site_database
                .then(|| store_info(&node.database.site_database().state()));
            let wire = v1::SyncRequest {
                request_id: request.request_id,
                parent_site_code: node.config.site_code.to_string(),
                kind: v1::SyncKind::Full as i32,
                reason: wire_reason(request.reason) as i32,
                requested_at: Some(timestamp_to_wire(request.requested_at)),
                update_server: Some(store_info(&node.database.update_server().state())),
                site_database,
                catalog_version: node.held_catalog_version(),
                origin_sync_id: request.origin_sync_id.to_string(),
            };
            let receipt = client
                .request_sync(traced(wire))
                .await
                .map_err(|s| format!("{} at {address}: {}", s.code(), s.message()))?
                .into_inner();
            match receipt.disposition() {
                v1::SyncRequestDisposition::Started => Ok(SyncDisposition::Started),
                v1::SyncRequestDisposition::Queued => Ok(SyncDisposition::Queued),
                v1::SyncRequestDisposition::Duplicate => Ok(SyncDisposition::Duplicate),
                v1::SyncRequestDisposition::Unspecified => Err(format!(
                    "the child at {address} answered without a disposition"
                )),
            }
        })
    }

    fn report_status(&self, parent: &str, messages: Vec<StatusMessage>) -> PeerFuture<'_, ()> {
        let parent = parent.to_owned();
        Box::pin(async move {
            let mut client = self.shared(&parent)?;
            let batch = v1::StatusMessageBatch {
                reporter_site_code: self.node.config.site_code.to_string(),
                messages: messages.iter().map(wire_message).collect(),
            };
            client
                .report_status_messages(traced(batch))
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn report_states(
        &self,
        parent: &str,
        report: StatesReport,
    ) -> PeerFuture<'_, (usize, Option<Duration>)> {
        let parent = parent.to_owned();
        Box::pin(async move {
            let mut client = self.shared(&parent)?;
            let node = self.node.clone();
            // Reading the stores is blocking work.
            let wire = tokio::task::spawn_blocking(move || {
                let own = own_site_state(&node, &report.view, report.observed_at);
                let code = own.site_code.clone();
                let mut sites = Vec::with_capacity(report.held.len() + 1);
                sites.push(own);
                sites.extend(
                    report
                        .held
                        .iter()
                        .filter(|h| h.state.site_code != code)
                        .map(|h| h.state.to_wire()),
                );
                v1::SiteStateReport {
                    reporter_site_code: code,
                    sites,
                }
            })
            .await
            .map_err(|e| format!("the report task failed: {e}"))?;
            let count = wire.sites.len();
            let receipt = client
                .report_site_states(traced(wire))
                .await
                .map_err(failed)?
                .into_inner();
            let within = receipt
                .next_report_within
                .and_then(|d| u64::try_from(d.seconds).ok().map(Duration::from_secs));
            Ok((count, within))
        })
    }
}
