//! The change feed: how metadata moves from one store to another, as batches with anchors.
//!
//! Everything that moves metadata between nodes is a feed: a store's change log served to a
//! child ([`produce`]), a parent's feed followed by a child ([`follow`]) and applied to its
//! store with the continuity, digest and signature checks ([`apply`], undone by
//! [`journal`] when the catalog turns out not to be the signed one). A source is anything
//! that implements [`ParentFeed`]: a parent over gRPC today (the `grpc` edge), an export
//! file or another upstream protocol next. Nothing here knows the transport.
//!
//! A batch starts exactly where the one before it left the reader ([`Batch::from`]) and
//! says where the reader stands once it is applied ([`Batch::resume`]). A reader on another
//! log, or further behind than its source retains, first receives a snapshot: the catalog
//! in (update id, revision) order, in parts; then the log tail follows.

pub mod apply;
pub mod follow;
pub mod journal;
pub mod produce;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sitesync_metadata::{CatalogDigest, RevisionId};
use sitesync_proto::{ConversionError, HeldReference};

use crate::catalog_version::SignedVersion;
use crate::store::{ChangeKind, StoreError, StoreState};

/// A future a feed source returns (sources are trait objects).
pub type FeedFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FeedError>> + Send + 'a>>;

/// A position in a store's change log (the contract's `Anchor`). Kept in the reader's store
/// metadata (postcard), so its shape is part of the store format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub log_id: [u8; 16],
    pub sequence: u64,
    /// Set while a snapshot is being installed: everything up to this revision is in.
    pub snapshot_through: Option<RevisionId>,
}

impl Anchor {
    /// The position at `sequence` of log `log_id`, outside any snapshot.
    pub fn at(log_id: [u8; 16], sequence: u64) -> Self {
        Self {
            log_id,
            sequence,
            snapshot_through: None,
        }
    }

    /// The log identity as text (a UUID), as operators and the contract see it.
    pub fn log_id_text(&self) -> String {
        log_id_text(self.log_id)
    }
}

/// A log identity as text: the UUID's hyphenated form.
pub fn log_id_text(log_id: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(log_id).hyphenated().to_string()
}

/// A store's position and contents as its source states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorePosition {
    pub latest: Anchor,
    pub digest: CatalogDigest,
}

impl From<&StoreState> for StorePosition {
    fn from(state: &StoreState) -> Self {
        Self {
            latest: Anchor::at(state.log_id, state.last_sequence),
            digest: state.digest,
        }
    }
}

/// A document as it travels: its declared identity and its bytes, plain or compressed
/// (a 4-byte little-endian length, then an LZ4 block: the form stores keep).
#[derive(Clone, PartialEq, Eq)]
pub struct SentDocument {
    pub id: RevisionId,
    pub form: DocumentForm,
}

#[derive(Clone, PartialEq, Eq)]
pub enum DocumentForm {
    Plain(Vec<u8>),
    Lz4(Vec<u8>),
}

impl DocumentForm {
    /// The document's own length, compressed or not: what a batch's size counts.
    pub fn len(&self) -> usize {
        match self {
            Self::Plain(bytes) => bytes.len(),
            Self::Lz4(bytes) => bytes
                .first_chunk::<4>()
                .map_or(0, |length| u32::from_le_bytes(*length) as usize),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for DocumentForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (form, bytes) = match self {
            Self::Plain(bytes) => ("Plain", bytes.len()),
            Self::Lz4(bytes) => ("Lz4", bytes.len()),
        };
        f.debug_struct(form).field("bytes", &bytes).finish()
    }
}

impl fmt::Debug for SentDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentDocument")
            .field("id", &self.id)
            .field("form", &self.form)
            .field("document_bytes", &self.form.len())
            .finish()
    }
}

/// A revision in a batch: carried, or named because the reader holds its bytes already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentRevision {
    Document(SentDocument),
    Reference(HeldReference),
}

/// One record of a log part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub sequence: u64,
    pub kind: ChangeKind,
    pub payload: ChangePayload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangePayload {
    Revision(SentRevision),
    Deleted(RevisionId),
}

/// A part of a snapshot: the revisions after `after` through `through` (the last part names
/// no `through`), as of log position `as_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPart {
    pub as_of: u64,
    pub after: Option<RevisionId>,
    pub through: Option<RevisionId>,
    pub revisions: Vec<SentDocument>,
    pub references: Vec<HeldReference>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchBody {
    Log(Vec<Change>),
    Snapshot(SnapshotPart),
}

/// One batch of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Where the reader must stand to apply it: exactly where the previous batch left it.
    pub from: Option<Anchor>,
    /// Where the reader stands once it is applied.
    pub resume: Anchor,
    pub body: BatchBody,
}

/// What a source says before a change stream's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesPlan {
    pub target: Option<Anchor>,
    pub snapshot: bool,
    pub estimated_changes: u64,
}

/// One message of a change stream: a plan, then batches, then completion with the
/// source's digest at the stream's target.
#[derive(Debug)]
pub enum ChangesMessage {
    Plan(ChangesPlan),
    Batch(Batch),
    Complete { digest: CatalogDigest },
}

/// One message of a subscription: heartbeats (the source's position, and how often it
/// speaks) and batches.
#[derive(Debug)]
pub enum SubscriptionMessage {
    Heartbeat {
        position: StorePosition,
        interval: Option<Duration>,
    },
    Batch(Batch),
}

/// What a subscriber asks of its source.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub site_code: String,
    pub from: Option<Anchor>,
    /// Preferred batch size in bytes; 0 for the source's default.
    pub max_batch_bytes: u32,
    /// Most unacknowledged batches; 0 for the source's default.
    pub window: u32,
    /// Revisions the subscriber's update-server store holds may be named, not carried.
    pub by_reference: bool,
}

/// The parent's update server as it states it: its digest and the signed catalog version
/// it holds.
#[derive(Debug, Clone)]
pub struct ParentCatalog {
    pub digest: CatalogDigest,
    pub catalog_version: Option<SignedVersion>,
}

/// A change stream being read.
pub trait ChangeStream: Send {
    /// The next message; `None` when the source ended the stream.
    fn next(&mut self) -> FeedFuture<'_, Option<ChangesMessage>>;
}

/// A subscription being followed.
pub trait Subscription: Send {
    /// The next message; `None` when the source ended the subscription.
    fn next(&mut self) -> FeedFuture<'_, Option<SubscriptionMessage>>;
    /// Tells the source that everything up to `applied` is applied, so it may send more.
    fn ack(&mut self, applied: Anchor) -> FeedFuture<'_, ()>;
}

/// Where a child's stores follow from: its parent (S10), over whatever carries the calls.
pub trait ParentFeed: Send + Sync + fmt::Debug {
    /// Where the source is, for messages (`host:port`).
    fn address(&self) -> &str;
    /// The parent's update server as it stands now.
    fn catalog(&self) -> FeedFuture<'_, ParentCatalog>;
    /// The parent's update-server change stream from `since`, to its position now.
    fn changes(&self, since: Option<Anchor>) -> FeedFuture<'_, Box<dyn ChangeStream>>;
    /// Follows the parent's site database from `request.from`.
    fn subscribe(&self, request: SubscribeRequest) -> FeedFuture<'_, Box<dyn Subscription>>;
    /// The parent's site database as it stands now.
    fn site_database(&self) -> FeedFuture<'_, StorePosition>;
}

/// Why following or applying a feed failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the parent is unreachable or failed: {0}")]
    Transport(String),
    #[error("the parent refused the request: {0}")]
    Refused(String),
    #[error("the parent sent an invalid message: {0}")]
    Invalid(#[from] ConversionError),
    #[error("the parent broke the change-stream protocol: {0}")]
    Protocol(String),
    #[error("the parent sent a document that does not parse ({id}): {reason}")]
    Document { id: RevisionId, reason: String },
    /// A custom update whose publisher signature, delegation or vendor namespace does not
    /// hold (S6).
    #[error("the parent sent a custom update this node refuses: {0}")]
    Custom(Box<crate::publishing::CustomError>),
    #[error(
        "the parent sent {id} by reference, but this node's update-server store does not hold it with the same bytes"
    )]
    Unresolved { id: RevisionId },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the catalog kept changing at the parent while it was pulled ({rounds} rounds); the next sync will try again"
    )]
    Unsettled { rounds: usize },
    #[error(
        "the parent states digest {stated} for its catalog, but what it served adds up to {pulled}: its store and its documents disagree"
    )]
    Mismatch {
        stated: CatalogDigest,
        pulled: CatalogDigest,
    },
    #[error(
        "at the parent's position {sequence} the site database's digest is {ours} but the parent's is {parents}; resync the child's site database"
    )]
    DigestMismatch {
        sequence: u64,
        ours: CatalogDigest,
        parents: CatalogDigest,
    },
    #[error("the parent sent nothing for {0:?}; reconnect")]
    Silent(Duration),
    /// An export file that cannot be applied where the store stands, or cannot be read.
    #[error("{0}")]
    File(String),
}

impl From<crate::publishing::CustomError> for FeedError {
    fn from(error: crate::publishing::CustomError) -> Self {
        Self::Custom(Box::new(error))
    }
}

impl FeedError {
    /// Whether a revision sent by reference could not be taken from the node's own
    /// update-server store: asking again for documents resolves it.
    pub fn is_unresolved_reference(&self) -> bool {
        matches!(
            self,
            Self::Unresolved { .. } | Self::Store(StoreError::DocumentNotShared { .. })
        )
    }
}
