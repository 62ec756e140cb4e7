//! The hierarchy's calls to other nodes, as the domain sees them: register with the parent,
//! ask a child to sync, forward status messages and report site states up. The gRPC edge
//! implements [`Peers`]; the hierarchy's loops decide when to call and how long to wait
//! after a failure ([`crate::clock::Backoff`]), and never see the transport.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sitesync_metadata::Timestamp;

use super::site_states::HeldState;
use crate::sync::manager::ManagerView;
use crate::sync::status::StatusMessage;

/// Why a sync request is sent (kept in the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestReason {
    /// To a child site: this node synced successfully (S10), or the child registered.
    Cascade,
    /// To the site's internet-facing node: the site's update server synced (S11).
    InternetUpdatePoint,
}

/// A future a peer call returns; its error says why, for the log.
pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The parent's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub parent_site_code: String,
    /// Sync requests waiting in the parent's outbox for this node.
    pub pending_sync_requests: u64,
}

/// A sync request as this node sends it to a child.
#[derive(Debug, Clone)]
pub struct OutgoingSyncRequest {
    pub request_id: String,
    pub reason: RequestReason,
    pub requested_at: Timestamp,
    /// The sync of this node that queued it.
    pub origin_sync_id: u64,
    /// The child has a site database to bring up to this node's (not an internet-facing
    /// node).
    pub with_site_database: bool,
}

/// What a child did with a sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncDisposition {
    Started,
    Queued,
    /// The child had received this request before; nothing new started.
    Duplicate,
}

/// This node's state and the states it holds, for the parent.
#[derive(Debug, Clone)]
pub struct StatesReport {
    /// This node's sync manager, for its own state.
    pub view: ManagerView,
    /// When this node's own state is observed; strictly later than the last report.
    pub observed_at: Timestamp,
    /// The states held of the sites below (this node's own excluded).
    pub held: Vec<HeldState>,
}

/// The other nodes of the hierarchy, as this node calls them.
pub trait Peers: Send + Sync + fmt::Debug {
    /// Registers this node with its parent at `parent` (`host:port`).
    fn register(&self, parent: &str) -> PeerFuture<'_, Registered>;
    /// Asks the child at `address` to sync.
    fn request_sync(
        &self,
        address: &str,
        request: OutgoingSyncRequest,
    ) -> PeerFuture<'_, SyncDisposition>;
    /// Forwards status messages (of `reporter` and the sites below it) to the parent; `Ok`
    /// means the parent stored them durably.
    fn report_status(&self, parent: &str, messages: Vec<StatusMessage>) -> PeerFuture<'_, ()>;
    /// Reports this node's state and the states it holds to the parent; returns how soon
    /// the parent wants the next report, if it says.
    fn report_states(
        &self,
        parent: &str,
        report: StatesReport,
    ) -> PeerFuture<'_, (usize, Option<Duration>)>;
}
