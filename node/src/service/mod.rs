//! gRPC adapters: each service decodes the request, calls the domain, and encodes the
//! answer. Nothing here decides anything the domain could decide.
//!
//! - [`update_server`]: `sitesync.v1.UpdateServer`, the node's update-server store served
//!   to downstream nodes.
//! - [`site_replication`]: `sitesync.v1.SiteReplication`, the node's site database
//!   streamed to child sites, batches made by the same producer as `update_server`'s.
//! - [`admin`]: `sitesync.v1.Admin`, the operator's surface.
//! - [`client_policy`]: `sitesync.v1.ClientPolicy`, what clients fetch (S8).
//! - [`hierarchy`]: `sitesync.v1.Hierarchy`, registration, sync requests, status upward.

pub mod admin;
pub mod client_policy;
pub mod hierarchy;
pub mod site_replication;
pub mod update_server;

use sitesync_proto::v1;
use tonic::Status;

use crate::store::{StoreError, StoreState};

/// The one place that picks a gRPC code for a store failure.
impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::ReservedMeta(_) => Status::invalid_argument(error.to_string()),
            StoreError::DocumentNotShared { .. } => Status::failed_precondition(error.to_string()),
            StoreError::Backend(_) | StoreError::Corrupt { .. } | StoreError::Format { .. } => {
                tracing::error!(%error, "store failure while serving a request");
                Status::internal(format!("the node's store failed: {error}"))
            }
        }
    }
}

/// The wire form of a log identity: the UUID's hyphenated text.
pub(crate) fn log_id_text(log_id: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(log_id).hyphenated().to_string()
}

pub(crate) fn anchor(log_id: [u8; 16], sequence: u64) -> v1::Anchor {
    v1::Anchor {
        log_id: log_id_text(log_id),
        sequence,
        snapshot_through: None,
    }
}

pub(crate) fn store_info(state: &StoreState) -> v1::StoreInfo {
    v1::StoreInfo {
        latest: Some(anchor(state.log_id, state.last_sequence)),
        first_retained_sequence: state.first_retained_sequence,
        digest: Some(state.digest.into()),
        revision_count: state.revisions,
        update_count: state.updates,
    }
}
