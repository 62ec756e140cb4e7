//! The hierarchy (SPEC S2, S10, invariant 4): the children a node keeps, the sync requests
//! it received from its parent, and the outbox of sync requests it sends to its children.
//!
//! - [`Children`]: site code → role, address, registered and last-seen times, durable in
//!   the key space `children`.
//! - [`ReceivedRequests`]: the request ids a child has accepted from its parent, durable in
//!   `sync-requests`, so a redelivered request starts nothing new.
//! - [`Outbox`]: one entry per (child, request id), durable in `outbox`, removed once the
//!   child answers. Entries are written before the 6702 of the sync that cascades to the
//!   child sites (S10); after phase 1, before 6706, for the site's internet-facing nodes
//!   (S11); and when a child registers with a node that has synced successfully, so a new
//!   or returning child catches up without an operator (S2: a child syncs only when asked).
//! - [`Hierarchy`]: the three together plus the background tasks — registration with the
//!   parent and status forwarding (a child), delivery of the outbox (a parent) — each
//!   retrying with [`crate::clock::Backoff`].
//! - [`peers`]: how those tasks reach other nodes (the [`peers::Peers`] trait; the gRPC edge
//!   implements it). [`site_states`] holds the states of the sites below, which
//!   [`reporting`] sends up.

pub mod peers;
pub mod reporting;
pub mod site_states;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sitesync_metadata::Timestamp;
use tokio::sync::Notify;
use tracing::{Instrument, info, info_span, warn};

use crate::clock::{Backoff, Clock};
use crate::config::{Role, SiteCode, UpstreamConfig, validate_address};
use crate::node::NodeState;
use crate::store::{Backend, StoreError, WriteBatch};
use crate::sync::manager::{InternetUpdateServer, SyncManager, SyncRun};
use crate::telemetry::TraceContext;
pub use peers::RequestReason;
use peers::{OutgoingSyncRequest, Peers, SyncDisposition};

/// How often a child looks for new status messages to forward.
const FORWARD_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored hierarchy record is unreadable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    /// The request cannot be served in this node's role or state.
    #[error("{0}")]
    Refused(String),
    /// The caller is not a site this node may take as a child.
    #[error("{0}")]
    NotDeclared(String),
}

impl From<crate::store::BackendError> for HierarchyError {
    fn from(e: crate::store::BackendError) -> Self {
        Self::Store(StoreError::from(e))
    }
}

/// A registered child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRecord {
    pub site_code: String,
    /// `site` or `internet`.
    pub role: String,
    /// `host:port`, where the parent calls `RequestSync`.
    pub address: String,
    pub registered_at: Timestamp,
    pub last_seen: Timestamp,
}

impl ChildRecord {
    /// Whether the child is the site's internet-facing node rather than a child site.
    pub fn is_internet_node(&self) -> bool {
        self.role == Role::Internet.to_string()
    }

    /// Why this child is sent sync requests: the cascade for a child site, the site's own
    /// phase 1 for an internet-facing node.
    fn request_reason(&self) -> RequestReason {
        if self.is_internet_node() {
            RequestReason::InternetUpdatePoint
        } else {
            RequestReason::Cascade
        }
    }
}

/// The children a parent keeps.
#[derive(Debug)]
pub struct Children {
    space: Box<dyn Backend>,
}

impl Children {
    pub fn new(space: Box<dyn Backend>) -> Self {
        Self { space }
    }

    /// Registers or refreshes a child; durable when it returns.
    pub fn register(
        &self,
        site_code: &str,
        role: &str,
        address: &str,
        now: Timestamp,
    ) -> Result<ChildRecord, HierarchyError> {
        let code: SiteCode = site_code.parse().map_err(HierarchyError::Invalid)?;
        let address = validate_address(address).map_err(HierarchyError::Invalid)?;
        let registered_at = self
            .get(code.as_str())?
            .map_or(now, |previous| previous.registered_at);
        let record = ChildRecord {
            site_code: code.to_string(),
            role: role.to_owned(),
            address,
            registered_at,
            last_seen: now,
        };
        let mut batch = WriteBatch::default();
        batch.put(code.as_str().as_bytes().to_vec(), encode(&record)?);
        self.space.apply(batch)?;
        self.space.flush()?;
        Ok(record)
    }

    pub fn get(&self, site_code: &str) -> Result<Option<ChildRecord>, HierarchyError> {
        self.space
            .get(site_code.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every registered child, by site code.
    pub fn list(&self) -> Result<Vec<ChildRecord>, HierarchyError> {
        scan_all(&*self.space, b"")?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }
}

/// The sync requests a child accepted: request id → the sync it started or joined.
#[derive(Debug)]
pub struct ReceivedRequests {
    space: Box<dyn Backend>,
    /// Serializes check-and-record, so two deliveries of one id cannot both start a sync.
    lock: Mutex<()>,
}

/// What a child did with a sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Started(u64),
    Queued(u64),
    Duplicate(u64),
}

impl ReceivedRequests {
    pub fn new(space: Box<dyn Backend>) -> Self {
        Self {
            space,
            lock: Mutex::new(()),
        }
    }

    /// The key of the request that started sync `id`: a zero byte first, so it can never
    /// be a request id (those are printable text).
    fn by_sync_key(id: u64) -> Vec<u8> {
        let mut key = b"\0sync\0".to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        key
    }

    /// The id of the parent's request that started (or joined) sync `id`, if one did.
    pub fn request_for_sync(&self, id: u64) -> Result<Option<String>, HierarchyError> {
        Ok(self
            .space
            .get(&Self::by_sync_key(id))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Runs `start` unless `request_id` was accepted before; records the sync id durably
    /// before answering.
    pub fn accept<E: From<HierarchyError>>(
        &self,
        request_id: &str,
        start: impl FnOnce() -> Result<crate::sync::manager::Disposition, E>,
    ) -> Result<Receipt, E> {
        use crate::sync::manager::Disposition;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = self
            .space
            .get(request_id.as_bytes())
            .map_err(HierarchyError::from)?
        {
            let id: u64 = decode(&bytes)?;
            return Ok(Receipt::Duplicate(id));
        }
        let (receipt, id) = match start()? {
            Disposition::Started(id) => (Receipt::Started(id), id),
            Disposition::Queued(id) => (Receipt::Queued(id), id),
        };
        let mut batch = WriteBatch::default();
        batch.put(request_id.as_bytes().to_vec(), encode(&id)?);
        batch.put(Self::by_sync_key(id), request_id.as_bytes().to_vec());
        self.space.apply(batch).map_err(HierarchyError::from)?;
        self.space.flush().map_err(HierarchyError::from)?;
        Ok(receipt)
    }
}

/// One sync request waiting to be delivered to a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub child: String,
    pub request_id: String,
    pub requested_at: Timestamp,
    /// The sync of this node the request follows: the one that cascades or whose phase 1
    /// finished, or, for a child that registered, the last one that succeeded.
    pub sync_id: u64,
    /// Sent as the request's `reason`; the child checks it matches its role.
    pub reason: RequestReason,
    /// The trace of the sync that queued it: the delivery, and the child's sync, continue
    /// it, however late the child comes back.
    pub trace: Option<TraceContext>,
}

/// An outbox entry as written before requests carried a trace context.
#[derive(Serialize, Deserialize)]
struct OutboxEntryWithoutTrace {
    child: String,
    request_id: String,
    requested_at: Timestamp,
    sync_id: u64,
    reason: RequestReason,
}

/// An outbox entry as written before requests had a reason: all were cascades.
#[derive(Deserialize)]
struct OutboxEntryWithoutReason {
    child: String,
    request_id: String,
    requested_at: Timestamp,
    sync_id: u64,
}

impl OutboxEntry {
    fn decode(bytes: &[u8]) -> Result<Self, HierarchyError> {
        // postcard has no field tags: an older entry is shorter, and is tried after.
        decode::<Self>(bytes)
            .or_else(|error| match decode::<OutboxEntryWithoutTrace>(bytes) {
                Ok(old) => Ok(Self {
                    child: old.child,
                    request_id: old.request_id,
                    requested_at: old.requested_at,
                    sync_id: old.sync_id,
                    reason: old.reason,
                    trace: None,
                }),
                Err(_) => Err(error),
            })
            .or_else(|error| match decode::<OutboxEntryWithoutReason>(bytes) {
                Ok(old) => Ok(Self {
                    child: old.child,
                    request_id: old.request_id,
                    requested_at: old.requested_at,
                    sync_id: old.sync_id,
                    reason: RequestReason::Cascade,
                    trace: None,
                }),
                Err(_) => Err(error),
            })
    }
}

/// The sync requests a parent has accepted to send, keyed `child \0 request id`.
#[derive(Debug)]
pub struct Outbox {
    space: Box<dyn Backend>,
}

impl Outbox {
    pub fn new(space: Box<dyn Backend>) -> Self {
        Self { space }
    }

    fn key(child: &str, request_id: &str) -> Vec<u8> {
        let mut key = child.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(request_id.as_bytes());
        key
    }

    /// Puts the entries in one atomic write and flushes.
    pub fn push(&self, entries: &[OutboxEntry]) -> Result<(), HierarchyError> {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put(Self::key(&entry.child, &entry.request_id), encode(entry)?);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.space.apply(batch)?;
        self.space.flush()?;
        Ok(())
    }

    pub fn remove(&self, entry: &OutboxEntry) -> Result<(), HierarchyError> {
        let mut batch = WriteBatch::default();
        batch.delete(Self::key(&entry.child, &entry.request_id));
        self.space.apply(batch)?;
        self.space.flush()?;
        Ok(())
    }

    /// Every waiting entry, by child then request id.
    pub fn list(&self) -> Result<Vec<OutboxEntry>, HierarchyError> {
        scan_all(&*self.space, b"")?
            .into_iter()
            .map(|(_, v)| OutboxEntry::decode(&v))
            .collect()
    }

    pub fn pending_for(&self, child: &str) -> Result<usize, HierarchyError> {
        let mut prefix = child.as_bytes().to_vec();
        prefix.push(0);
        Ok(scan_all(&*self.space, &prefix)?.len())
    }
}

/// The node's side of the hierarchy. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Hierarchy {
    pub node: Arc<NodeState>,
    pub clock: Arc<dyn Clock>,
    pub children: Children,
    pub received: ReceivedRequests,
    pub outbox: Outbox,
    /// Wakes the delivery task (new entries, a child registered).
    deliver: Notify,
    /// Per child: the backoff before its next attempt, reset when it registers.
    backoff: Mutex<HashMap<String, Backoff>>,
    /// Status messages flowing up (issue 4 item 6).
    pub forwarding: StatusForwarding,
    /// Where the parent's site code is kept (space `parent`).
    parent_space: Box<dyn Backend>,
    parent_site_code: Mutex<Option<String>>,
    /// Wakes the registration task to register again.
    reregister: Notify,
    /// The last syncs whose requests were queued for the child sites and for the
    /// internet-facing nodes; its lock serializes registration with queueing.
    queued_for: Mutex<QueuedFor>,
}

#[derive(Debug, Default)]
struct QueuedFor {
    sites: Option<u64>,
    internet: Option<u64>,
}

const KEY_PARENT_SITE_CODE: &[u8] = b"site-code";

impl Relations for Hierarchy {
    fn parent_site_code(&self) -> Option<String> {
        Hierarchy::parent_site_code(self)
    }

    fn child(&self, site_code: &str) -> Option<ChildKind> {
        match self.children.get(site_code) {
            Ok(Some(child)) if child.is_internet_node() => Some(ChildKind::Internet),
            Ok(Some(_)) => Some(ChildKind::Site),
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, site_code, "cannot read the registered children");
                None
            }
        }
    }
}

/// What a node keeps to forward status messages to its parent: the sites below it whose
/// messages it holds (space `status-sites`), and per site the last sequence the parent
/// acknowledged (space `status-forward`).
#[derive(Debug)]
pub struct StatusForwarding {
    sites: Box<dyn Backend>,
    cursors: Box<dyn Backend>,
}

/// Messages forwarded per `ReportStatusMessages` call (the protocol's maximum).
pub const STATUS_BATCH: usize = 1_000;

impl StatusForwarding {
    pub fn new(sites: Box<dyn Backend>, cursors: Box<dyn Backend>) -> Self {
        Self { sites, cursors }
    }

    /// Remembers the sites of messages forwarded to this node, so it forwards them on.
    pub fn note_sites<'a>(
        &self,
        site_codes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), HierarchyError> {
        let mut batch = WriteBatch::default();
        for code in site_codes {
            if self.sites.get(code.as_bytes())?.is_none() {
                batch.put(code.as_bytes().to_vec(), Vec::new());
            }
        }
        if !batch.is_empty() {
            self.sites.apply(batch)?;
            self.sites.flush()?;
        }
        Ok(())
    }

    /// The sites below this node whose messages it holds.
    pub fn sites(&self) -> Result<Vec<String>, HierarchyError> {
        Ok(scan_all(&*self.sites, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    pub fn acknowledged(&self, site_code: &str) -> Result<u64, HierarchyError> {
        self.cursors
            .get(site_code.as_bytes())?
            .map_or(Ok(0), |bytes| decode(&bytes))
    }

    pub fn acknowledge(&self, site_code: &str, sequence: u64) -> Result<(), HierarchyError> {
        let mut batch = WriteBatch::default();
        batch.put(site_code.as_bytes().to_vec(), encode(&sequence)?);
        self.cursors.apply(batch)?;
        self.cursors.flush()?;
        Ok(())
    }
}

impl Hierarchy {
    pub fn new(
        node: Arc<NodeState>,
        clock: Arc<dyn Clock>,
        children: Children,
        received: ReceivedRequests,
        outbox: Outbox,
        forwarding: StatusForwarding,
        parent_space: Box<dyn Backend>,
    ) -> Self {
        let parent_site_code = match parent_space.get(KEY_PARENT_SITE_CODE) {
            Ok(code) => code.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => {
                warn!(error = %e, "the parent's site code is unreadable; it is learned again at registration");
                None
            }
        };
        Self {
            forwarding,
            node,
            clock,
            children,
            received,
            outbox,
            deliver: Notify::new(),
            backoff: Mutex::new(HashMap::new()),
            parent_space,
            parent_site_code: Mutex::new(parent_site_code),
            queued_for: Mutex::default(),
            reregister: Notify::new(),
        }
    }

    /// The configured parent's site code, as it answered at registration: the only site
    /// whose sync requests this node accepts (SPEC invariant 6).
    pub fn parent_site_code(&self) -> Option<String> {
        self.parent_site_code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps the site code the configured parent answered with, durably.
    fn learn_parent(&self, site_code: &str) -> Result<(), HierarchyError> {
        let code: SiteCode = site_code.parse().map_err(HierarchyError::Invalid)?;
        let code = code.to_string();
        let mut held = self
            .parent_site_code
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if held.as_deref() == Some(code.as_str()) {
            return Ok(());
        }
        if let Some(previous) = held.as_deref() {
            warn!(previous, now = %code, "the parent at the configured address answers with another site code; sync requests are now accepted from it");
        }
        let mut batch = WriteBatch::default();
        batch.put(KEY_PARENT_SITE_CODE.to_vec(), code.as_bytes().to_vec());
        self.parent_space.apply(batch)?;
        self.parent_space.flush()?;
        *held = Some(code);
        Ok(())
    }

    /// Whether this node is a child site (syncs from a parent).
    pub fn has_parent(&self) -> bool {
        matches!(self.node.config.upstream, UpstreamConfig::Parent(_))
    }

    /// Whether this node is an internet-facing node, which has no children (S11).
    pub fn is_internet_node(&self) -> bool {
        self.node.config.role == Role::Internet
    }

    /// Called when a sync succeeded, before its 6702: one request per registered child
    /// site in the outbox, durably (S10). Internet-facing nodes are not among them: they
    /// were asked when phase 1 finished ([`Hierarchy::request_internet_syncs`]).
    pub fn cascade(&self, run: &SyncRun) -> Result<usize, HierarchyError> {
        let mut queued_for = self.queued_for.lock().unwrap_or_else(|p| p.into_inner());
        let children: Vec<ChildRecord> = self
            .children
            .list()?
            .into_iter()
            .filter(|c| !c.is_internet_node())
            .collect();
        let queued = self.queue_requests(&children, run.id)?;
        queued_for.sites = Some(run.id);
        if queued > 0 {
            info!(
                sync_id = run.id,
                children = queued,
                "sync requests queued for the child sites"
            );
        }
        Ok(queued)
    }

    /// Called when phase 1 of a sync succeeded: one request per registered internet-facing
    /// node in the outbox, durably, delivered at once while phase 2 runs (S11). Returns the
    /// nodes asked, which the sync manager reports with 6706.
    pub fn request_internet_syncs(
        &self,
        run: &SyncRun,
    ) -> Result<Vec<InternetUpdateServer>, HierarchyError> {
        let mut queued_for = self.queued_for.lock().unwrap_or_else(|p| p.into_inner());
        let internet: Vec<ChildRecord> = self
            .children
            .list()?
            .into_iter()
            .filter(ChildRecord::is_internet_node)
            .collect();
        let queued = self.queue_requests(&internet, run.id)?;
        queued_for.internet = Some(run.id);
        if queued > 0 {
            info!(
                sync_id = run.id,
                nodes = internet.len(),
                "sync requests queued for the internet-facing update servers"
            );
        }
        Ok(internet
            .into_iter()
            .map(|c| InternetUpdateServer {
                site_code: c.site_code,
                address: c.address,
            })
            .collect())
    }

    fn queue_requests(
        &self,
        children: &[ChildRecord],
        sync_id: u64,
    ) -> Result<usize, HierarchyError> {
        let now = self.clock.now();
        // Called inside the sync's span: each request continues its trace.
        let trace = TraceContext::current();
        let entries: Vec<OutboxEntry> = children
            .iter()
            .map(|child| OutboxEntry {
                child: child.site_code.clone(),
                request_id: uuid::Uuid::new_v4().hyphenated().to_string(),
                requested_at: now,
                sync_id,
                reason: child.request_reason(),
                trace: trace.clone(),
            })
            .collect();
        self.outbox.push(&entries)?;
        if !entries.is_empty() {
            self.deliver.notify_one();
        }
        Ok(entries.len())
    }

    /// Registers or refreshes a child. If this node has something to offer — a successful
    /// sync (`last_succeeded`), or a sync whose requests were already queued for children
    /// of this kind — and nothing waits for the child yet, a request is queued so that it
    /// catches up, since a child syncs only when asked (S2). Then what waits for it is
    /// delivered at once. Serialized with [`Hierarchy::cascade`] and
    /// [`Hierarchy::request_internet_syncs`], so a child registering while they run is
    /// either among their children or caught up here. Returns the record and how many
    /// requests wait for the child.
    pub fn register_child(
        &self,
        site_code: &str,
        role: &str,
        address: &str,
        now: Timestamp,
        last_succeeded: Option<u64>,
    ) -> Result<(ChildRecord, usize), HierarchyError> {
        let config = &self.node.config;
        if self.is_internet_node() {
            return Err(HierarchyError::Refused(format!(
                "this is an internet-facing node ({}): it has no children; register child sites and internet-facing nodes with their site's `site` node",
                config.site_code
            )));
        }
        if let Some(children) = &config.children
            && !children
                .iter()
                .any(|code| code.as_str().eq_ignore_ascii_case(site_code))
        {
            let declared: Vec<&str> = children.iter().map(|c| c.as_str()).collect();
            warn!(site = %site_code, "a site that is not a declared child tried to register");
            return Err(HierarchyError::NotDeclared(format!(
                "site {site_code} is not a declared child of {} (children = {declared:?}): add it to `children` in the node's config or to --children",
                config.site_code
            )));
        }
        if site_code.eq_ignore_ascii_case(config.site_code.as_str()) {
            return Err(HierarchyError::Invalid(format!(
                "the child's site code {} is this node's own: every node needs a site code of its own, an internet-facing node too",
                config.site_code
            )));
        }
        let queued_for = self.queued_for.lock().unwrap_or_else(|p| p.into_inner());
        let child = self.children.register(site_code, role, address, now)?;
        let queued_already = if child.is_internet_node() {
            queued_for.internet
        } else {
            queued_for.sites
        };
        let mut pending = self.outbox.pending_for(&child.site_code)?;
        if let Some(sync_id) = last_succeeded.max(queued_already)
            && pending == 0
        {
            pending += self.queue_requests(std::slice::from_ref(&child), sync_id)?;
            info!(child = %child.site_code, sync_id, "a sync request queued for the child that registered");
        }
        drop(queued_for);
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&child.site_code);
        self.deliver.notify_one();
        Ok((child, pending))
    }

    /// Starts the background tasks on the current runtime: delivery of the outbox, and
    /// registration with the parent at a child.
    pub fn spawn_tasks(self: &Arc<Self>, sync: SyncManager, peers: Arc<dyn Peers>) {
        self.node
            .spawn_background(self.clone().delivery_loop(peers.clone()));
        if let UpstreamConfig::Parent(parent) = &self.node.config.upstream {
            self.node
                .spawn_background(self.clone().register_loop(parent.clone(), peers.clone()));
            self.node
                .spawn_background(self.clone().forward_loop(parent.clone(), sync, peers));
        }
    }

    /// Forwards status messages to the parent, at least once, from the last sequence the
    /// parent acknowledged per site: this node's own and those of the sites below it.
    async fn forward_loop(
        self: Arc<Self>,
        parent: String,
        sync: SyncManager,
        peers: Arc<dyn Peers>,
    ) {
        let mut backoff = Backoff::reconnect();
        loop {
            match self.forward_once(&*peers, &parent, &sync).await {
                Ok(()) => {
                    backoff.reset();
                    tokio::time::sleep(FORWARD_INTERVAL).await;
                }
                Err(reason) => {
                    let delay = backoff.next_delay();
                    warn!(parent = %parent, %reason, retry_in = ?delay, "cannot forward status messages to the parent site");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn forward_once(
        &self,
        peers: &dyn Peers,
        parent: &str,
        sync: &SyncManager,
    ) -> Result<(), String> {
        let own = self.node.config.site_code.to_string();
        let mut sites = self.forwarding.sites().map_err(|e| e.to_string())?;
        sites.retain(|s| *s != own);
        sites.insert(0, own.clone());
        for site in sites {
            loop {
                let after = self
                    .forwarding
                    .acknowledged(&site)
                    .map_err(|e| e.to_string())?;
                let messages = sync
                    .status_log()
                    .messages_after(&site, after, STATUS_BATCH)
                    .map_err(|e| e.to_string())?;
                let Some(last) = messages.last().map(|m| m.sequence) else {
                    break;
                };
                let full = messages.len() == STATUS_BATCH;
                let span = info_span!(
                    "status.forward",
                    otel.name = "forward status messages",
                    otel.kind = "client",
                    site = %site,
                    messages = messages.len(),
                    through_sequence = last,
                    otel.status_code = tracing::field::Empty,
                );
                peers
                    .report_status(parent, messages)
                    .instrument(span.clone())
                    .await
                    .inspect_err(|_| {
                        span.record("otel.status_code", "ERROR");
                    })?;
                self.forwarding
                    .acknowledge(&site, last)
                    .map_err(|e| e.to_string())?;
                if !full {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Registers with the parent again (after a sync that lost the parent): a parent that
    /// restarted then asks this child to catch up.
    pub fn register_again(&self) {
        self.reregister.notify_one();
    }

    /// Registers at start and again whenever [`Hierarchy::register_again`] asks, each time
    /// retrying with backoff until the parent answers.
    async fn register_loop(self: Arc<Self>, parent: String, peers: Arc<dyn Peers>) {
        // Syncs that keep failing against a parent that answers registration would
        // otherwise loop at once: each registration soon after the last waits twice as long.
        let mut pause = Backoff::reconnect();
        let mut last = tokio::time::Instant::now();
        loop {
            self.register_until_answered(&*peers, &parent).await;
            self.reregister.notified().await;
            if last.elapsed() > pause.max() * 10 {
                pause.reset();
            }
            tokio::time::sleep(pause.next_delay()).await;
            last = tokio::time::Instant::now();
        }
    }

    async fn register_until_answered(&self, peers: &dyn Peers, parent: &str) {
        let mut backoff = Backoff::reconnect();
        loop {
            match peers.register(parent).await {
                Ok(response) => {
                    match self.learn_parent(&response.parent_site_code) {
                        Ok(()) => {
                            info!(
                                parent = %parent,
                                parent_site = %response.parent_site_code,
                                pending = response.pending_sync_requests,
                                "registered with the parent site"
                            );
                            return;
                        }
                        Err(e) => {
                            warn!(parent = %parent, error = %e, retry_in = ?backoff.peek(), "the parent's registration answer is unusable")
                        }
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(reason) => {
                    warn!(parent = %parent, %reason, retry_in = ?backoff.peek(), "cannot register with the parent site");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Delivers the outbox: each round, the children whose backoff has passed are tried
    /// at the same time (one task per child, its requests in order), so a child that is
    /// down or slow does not hold back the others.
    async fn delivery_loop(self: Arc<Self>, peers: Arc<dyn Peers>) {
        // When each child may be tried next.
        let mut next_try: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            let entries = match self.outbox.list() {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(error = %e, "cannot read the outbox; trying again in a minute");
                    tokio::select! {
                        () = self.deliver.notified() => {}
                        () = tokio::time::sleep(Backoff::RECONNECT_MAX) => {}
                    }
                    continue;
                }
            };
            {
                // A child that registered again is tried at once.
                let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
                next_try.retain(|child, _| backoff.contains_key(child));
            }
            let now = tokio::time::Instant::now();
            let mut due: std::collections::BTreeMap<String, Vec<OutboxEntry>> =
                std::collections::BTreeMap::new();
            for entry in entries {
                if next_try.get(&entry.child).is_none_or(|at| *at <= now) {
                    due.entry(entry.child.clone()).or_default().push(entry);
                }
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (child, entries) in due {
                let me = self.clone();
                let peers = peers.clone();
                tasks.spawn(async move {
                    let outcome = me.deliver_all(&*peers, &entries).await;
                    (child, outcome)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((child, Ok(()))) => {
                        self.backoff
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&child);
                        next_try.remove(&child);
                    }
                    Ok((child, Err((request_id, reason)))) => {
                        let delay = {
                            let mut backoff =
                                self.backoff.lock().unwrap_or_else(|p| p.into_inner());
                            backoff
                                .entry(child.clone())
                                .or_insert_with(Backoff::reconnect)
                                .next_delay()
                        };
                        warn!(%child, %request_id, %reason, retry_in = ?delay, "cannot deliver a sync request to a child site");
                        next_try.insert(child, tokio::time::Instant::now() + delay);
                    }
                    Err(e) => warn!(error = %e, "a sync request delivery task failed"),
                }
            }
            let remaining = self.outbox.list().map(|e| !e.is_empty()).unwrap_or(true);
            let wake_at = next_try.values().min().copied();
            match (remaining, wake_at) {
                (true, Some(at)) => {
                    tokio::select! {
                        () = self.deliver.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                (true, None) => {}
                (false, _) => self.deliver.notified().await,
            }
        }
    }

    /// Delivers one child's requests in order; stops at the first failure.
    async fn deliver_all(
        &self,
        peers: &dyn Peers,
        entries: &[OutboxEntry],
    ) -> Result<(), (String, String)> {
        for entry in entries {
            let span = info_span!(
                "outbox.deliver",
                otel.name = format!("deliver sync request to {}", entry.child),
                otel.kind = "client",
                child = %entry.child,
                request_id = %entry.request_id,
                origin_sync_id = entry.sync_id,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
            );
            if let Some(trace) = &entry.trace {
                trace.adopt(&span);
            }
            let disposition = self
                .deliver_one(peers, entry)
                .instrument(span.clone())
                .await
                .map_err(|reason| {
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_description", reason.as_str());
                    (entry.request_id.clone(), reason)
                })?;
            info!(child = %entry.child, request_id = %entry.request_id, ?disposition, "sync request delivered");
            if let Err(e) = self.outbox.remove(entry) {
                warn!(error = %e, "cannot remove a delivered sync request from the outbox");
            }
        }
        Ok(())
    }

    async fn deliver_one(
        &self,
        peers: &dyn Peers,
        entry: &OutboxEntry,
    ) -> Result<SyncDisposition, String> {
        let child = self
            .children
            .get(&entry.child)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the child site {} is not registered", entry.child))?;
        let request = OutgoingSyncRequest {
            request_id: entry.request_id.clone(),
            reason: entry.reason,
            requested_at: entry.requested_at,
            origin_sync_id: entry.sync_id,
            // An internet-facing node has no site database to bring up to this one's.
            with_site_database: !child.is_internet_node(),
        };
        peers.request_sync(&child.address, request).await
    }
}

fn scan_all(
    space: &dyn Backend,
    prefix: &[u8],
) -> Result<Vec<crate::store::backend::Entry>, HierarchyError> {
    let mut out = Vec::new();
    let mut from = prefix.to_vec();
    loop {
        let page = space.scan(prefix, &from, 1_000, &|_| true)?;
        out.extend(page.entries);
        match page.resume_after {
            Some(mut last) => {
                last.push(0);
                from = last;
            }
            None => return Ok(out),
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, HierarchyError> {
    postcard::to_allocvec(value).map_err(|e| HierarchyError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, HierarchyError> {
    postcard::from_bytes(bytes).map_err(|e| HierarchyError::Corrupt(e.to_string()))
}

/// What the rules need to know about the hierarchy, answered by the node.
pub trait Relations: Send + Sync + std::fmt::Debug {
    /// The site code of the configured parent, once known.
    fn parent_site_code(&self) -> Option<String>;
    /// Whether `site_code` is a registered child, and whether it is an internet-facing node.
    fn child(&self, site_code: &str) -> Option<ChildKind>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Site,
    Internet,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hierarchy() -> Hierarchy {
        let config =
            crate::config::NodeConfig::load(None, &crate::config::Overrides::default()).unwrap();
        let space = || -> Box<dyn Backend> { Box::new(crate::store::MemoryBackend::new()) };
        let node = Arc::new(
            NodeState::new(
                config,
                crate::store::NodeDatabase::in_memory().unwrap(),
                sitesync_security::Transport::Plaintext,
                Arc::new(crate::clock::SystemClock::new()),
            )
            .unwrap(),
        );
        Hierarchy::new(
            node,
            Arc::new(crate::clock::ManualClock::new(Timestamp(0))),
            Children::new(space()),
            ReceivedRequests::new(space()),
            Outbox::new(space()),
            StatusForwarding::new(space(), space()),
            space(),
        )
    }

    #[test]
    fn a_child_registering_after_the_cascade_of_a_sync_not_yet_recorded_still_catches_up() {
        let hierarchy = hierarchy();
        let run = SyncRun {
            id: 7,
            kind: crate::sync::manager::SyncKind::Full,
            trigger: crate::sync::manager::SyncTrigger::Schedule,
            phase: crate::sync::manager::SyncPhase::SiteDatabase,
            result: None,
            requested_at: Timestamp(0),
            started_at: Some(Timestamp(0)),
            finished_at: None,
            counts: crate::sync::manager::SyncCounts::default(),
            progress: (0, 0),
            failure_reason: None,
            retry_at: None,
            trace: None,
        };
        // The cascade of sync 7 ran (no child yet); its success is not recorded yet.
        assert_eq!(hierarchy.cascade(&run).unwrap(), 0);
        let (_, pending) = hierarchy
            .register_child("PR1", "site", "127.0.0.1:7001", Timestamp(1), None)
            .unwrap();
        assert_eq!(pending, 1);
        let waiting = hierarchy.outbox.list().unwrap();
        assert_eq!((waiting[0].child.as_str(), waiting[0].sync_id), ("PR1", 7));
        // Registering again while that request waits queues nothing more.
        let (_, pending) = hierarchy
            .register_child("PR1", "site", "127.0.0.1:7001", Timestamp(2), Some(7))
            .unwrap();
        assert_eq!(pending, 1);
        // An internet-facing node is caught up by what was queued for its kind only.
        let (_, pending) = hierarchy
            .register_child("IN1", "internet", "127.0.0.1:7002", Timestamp(3), None)
            .unwrap();
        assert_eq!(pending, 0);
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            validate_address("127.0.0.1:7000").unwrap(),
            "127.0.0.1:7000"
        );
        assert_eq!(validate_address("https://h:1/").unwrap(), "h:1");
        assert!(validate_address("").is_err());
        assert!(validate_address("host").unwrap_err().contains("host:port"));
        assert!(validate_address("0.0.0.0:7000").is_err());
        assert!(validate_address("a b:1").is_err());
    }

    #[derive(Serialize)]
    struct EntryWithoutReason {
        child: String,
        request_id: String,
        requested_at: Timestamp,
        sync_id: u64,
    }

    #[test]
    fn outbox_entries_written_before_reasons_read_as_cascades() {
        let old = postcard::to_allocvec(&EntryWithoutReason {
            child: "PR1".into(),
            request_id: "r1".into(),
            requested_at: Timestamp(5),
            sync_id: 7,
        })
        .unwrap();
        let entry = OutboxEntry::decode(&old).unwrap();
        assert_eq!(entry.reason, RequestReason::Cascade);
        assert_eq!((entry.child.as_str(), entry.sync_id), ("PR1", 7));

        let new = OutboxEntry {
            reason: RequestReason::InternetUpdatePoint,
            ..entry
        };
        assert_eq!(OutboxEntry::decode(&encode(&new).unwrap()).unwrap(), new);
        assert!(OutboxEntry::decode(&[0xff]).is_err());
    }

    #[test]
    fn outbox_entries_written_before_traces_keep_their_reason_and_carry_none() {
        let old = postcard::to_allocvec(&OutboxEntryWithoutTrace {
            child: "IN1".into(),
            request_id: "r2".into(),
            requested_at: Timestamp(6),
            sync_id: 8,
            reason: RequestReason::InternetUpdatePoint,
        })
        .unwrap();
        let entry = OutboxEntry::decode(&old).unwrap();
        assert_eq!(entry.reason, RequestReason::InternetUpdatePoint);
        assert_eq!(entry.trace, None);
        assert_eq!((entry.child.as_str(), entry.sync_id), ("IN1", 8));

        let traced = OutboxEntry {
            trace: Some(TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: String::new(),
            }),
            ..entry
        };
        assert_eq!(
            OutboxEntry::decode(&encode(&traced).unwrap()).unwrap(),
            traced
        );
    }
}
