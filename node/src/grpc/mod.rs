//! The gRPC edge: the one module that names tonic or the generated wire types.
//!
//! - [`server`]: serves [`services`] with health and reflection, behind [`access`] (who may
//!   call which method, from the peer's certificate) and [`metrics_layer`] (every call
//!   counted for the node's metrics).
//! - [`services`]: thin adapters: decode the request, call the domain, encode the answer.
//! - [`client`]: the node's calls to other nodes, as implementations of the domain's
//!   traits ([`crate::feed::ParentFeed`], [`crate::hierarchy::peers::Peers`]).
//! - [`wire`]: every conversion between the node's domain types and the wire types;
//!   [`site_states`] those of the site states reported up the hierarchy.
//! - [`connect`]: channels to other nodes over the node's transport.
//! - [`trace`]: the W3C trace context on every call, in and out.
//!
//! Below, the one deliberate mapping of domain errors to gRPC codes.

pub mod access;
pub mod archive;
pub mod client;
pub mod connect;
pub mod metrics_layer;
pub mod server;
pub mod services;
pub mod site_states;
pub mod trace;
pub mod wire;

use tonic::{Code, Status};

use crate::feed::FeedError;
use crate::feed::produce::ProduceError;
use crate::grpc::archive::ArchiveFailure;
use crate::hierarchy::HierarchyError;
use crate::hierarchy::site_states::SiteStatesError;
use crate::store::StoreError;
use crate::sync::manager::SyncError;

/// A store failure, as a caller sees it.
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

/// A change stream that cannot start or continue.
impl From<ProduceError> for Status {
    fn from(error: ProduceError) -> Self {
        match error {
            ProduceError::ReaderAhead { .. } => Status::failed_precondition(error.to_string()),
            ProduceError::Store(error) => error.into(),
        }
    }
}

/// A request the sync manager refuses, or a failure while it served one.
impl From<SyncError> for Status {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::SettingsConflict { .. } => Status::aborted(error.to_string()),
            SyncError::ManualAtChild
            | SyncError::ManualAtInternetNode
            | SyncError::OperatorAtChild
            | SyncError::ImportOnly => Status::failed_precondition(error.to_string()),
            SyncError::Settings(_) => Status::invalid_argument(error.to_string()),
            SyncError::Store(e) => e.into(),
            other => Status::internal(other.to_string()),
        }
    }
}

/// A registration or sync request the hierarchy refuses, or its store failing.
impl From<HierarchyError> for Status {
    fn from(error: HierarchyError) -> Self {
        match error {
            HierarchyError::Invalid(reason) => Status::invalid_argument(reason),
            HierarchyError::Refused(reason) => Status::failed_precondition(reason),
            HierarchyError::NotDeclared(reason) => Status::permission_denied(reason),
            HierarchyError::Store(e) => e.into(),
            HierarchyError::Corrupt(_) => {
                tracing::error!(%error, "hierarchy store failure while serving a request");
                Status::internal(error.to_string())
            }
        }
    }
}

/// A site-state report refused at the receiving edge, or the site-state store failing.
impl From<SiteStatesError> for Status {
    fn from(error: SiteStatesError) -> Self {
        match error {
            SiteStatesError::Invalid(reason) => Status::invalid_argument(reason),
            SiteStatesError::Store(e) => e.into(),
            SiteStatesError::Corrupt(_) => {
                tracing::error!(%error, "site-state store failure while serving a request");
                Status::internal(error.to_string())
            }
        }
    }
}

/// A parent's answer as the feed sees it: a refusal the parent chose (the request cannot
/// succeed as it is) or a failure to reach it (worth retrying).
impl From<Status> for FeedError {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented => FeedError::Refused(status.message().to_owned()),
            code => FeedError::Transport(format!("{code}: {}", status.message())),
        }
    }
}

/// An export or import refused, or failed.
impl From<ArchiveFailure> for Status {
    fn from(error: ArchiveFailure) -> Self {
        match error {
            ArchiveFailure::File(_) => Status::invalid_argument(error.to_string()),
            ArchiveFailure::Precondition(_) | ArchiveFailure::Refused(_) => {
                Status::failed_precondition(error.to_string())
            }
            ArchiveFailure::Busy(_) => Status::unavailable(error.to_string()),
            ArchiveFailure::Failed(_) => Status::aborted(error.to_string()),
            ArchiveFailure::Store(e) => e.into(),
        }
    }
}
