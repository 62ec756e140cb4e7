//! `sitesync.v1.ClientPolicy`: the site-wide machine policy clients fetch (S8).

use std::sync::Arc;

use sitesync_proto::v1;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::super::wire::machine_policy;
use crate::node::NodeState;
use crate::sync::manager::SyncManager;

#[derive(Debug, Clone)]
pub struct ClientPolicyService {
    node: Arc<NodeState>,
    sync: SyncManager,
}

impl ClientPolicyService {
    pub fn new(node: Arc<NodeState>, sync: SyncManager) -> Self {
        Self { node, sync }
    }
}

#[tonic::async_trait]
impl v1::client_policy_server::ClientPolicy for ClientPolicyService {
    async fn get_machine_policy(
        &self,
        _request: Request<v1::GetMachinePolicyRequest>,
    ) -> Result<Response<v1::MachinePolicy>, Status> {
        machine_policy(&self.node, &self.sync).map(Response::new)
    }

    type GetLegacyScanCatalogStream = ReceiverStream<Result<v1::LegacyScanCatalogChunk, Status>>;

    async fn get_legacy_scan_catalog(
        &self,
        _request: Request<v1::GetLegacyScanCatalogRequest>,
    ) -> Result<Response<Self::GetLegacyScanCatalogStream>, Status> {
        Err(Status::unimplemented(
            "the legacy scan catalog is not available in this version of sitesync",
        ))
    }
}
