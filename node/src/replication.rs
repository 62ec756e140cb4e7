//! The child side of inter-site replication (S7): a child site's site database follows its
//! parent's through `SiteReplication.Replicate`.
//!
//! [`replicate_until`] reads the child's position in the parent's log from the site
//! database's own metadata ([`ANCHOR_KEY`]), subscribes from it, and then for each batch:
//! checks that it starts exactly at that position (the gap-and-duplicate check), applies it
//! in one atomic, flushed write *together with the batch's resume anchor*, and only then
//! acknowledges it. Batch checking and application are the same code as a child update
//! server's pull ([`crate::upstream::parent`]), snapshot parts included: a child on another
//! log or behind the parent's retained log receives a snapshot, which also removes what it
//! should no longer hold, then the tail.
//!
//! So the stored anchor is always exactly what the site database holds. After a crash of
//! the child, or of the parent, or a dropped stream, the next call subscribes from it and
//! the parent continues from there: no gap and no duplicate (SPEC invariants 2 and 3). The
//! child's own change log gets one record per change it applied, in order.
//!
//! A call ends when the child has reached its [`ReplicationTarget`] *and* stands exactly on
//! the parent's newest position, as the parent states in a heartbeat or in
//! `GetSiteDatabaseInfo`; the child's digest must then equal the parent's, or the call
//! fails with [`ReplicationError::DigestMismatch`]. A parent silent for three heartbeat
//! intervals is treated as gone ([`ReplicationError::Silent`]); the caller reconnects.

use std::ops::ControlFlow;
use std::time::Duration;

use sitesync_metadata::{CatalogDigest, ParseLimits};
use sitesync_proto::ConversionError;
use sitesync_proto::v1::site_replication_client::SiteReplicationClient;
use sitesync_proto::v1::{self, replication_message, replication_request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::store::{CatalogStore, StoreError};
use crate::upstream::journal::Journal;
use crate::upstream::parent::{
    IncomingBatch, ParentAnchor, PullError, PullOutcome, apply_batch, stored_anchor_at,
};

/// The site-database metadata key holding the child's position in the parent's
/// site-database log.
pub const ANCHOR_KEY: &str = "replication.parent-anchor";

/// How long the child waits for the parent's first heartbeat (then three of the parent's
/// stated intervals).
const FIRST_HEARTBEAT_WAIT: Duration = Duration::from_secs(30);

/// What the child asks of the parent.
#[derive(Debug, Clone, Default)]
pub struct ReplicationLimits {
    /// Most unacknowledged batches; 0 for the protocol's default.
    pub window: u32,
    /// Preferred batch size in bytes; 0 for the protocol's default.
    pub max_batch_bytes: u32,
    /// Limits for parsing the documents the parent sends.
    pub parse: ParseLimits,
    /// Keep an undo journal of what is applied ([`crate::upstream::journal`]), so that a
    /// catalog that turns out not to be the signed one can be taken back.
    pub journal: bool,
}

/// How far a [`replicate_until`] call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationTarget {
    /// The parent's position when the stream opened (its first heartbeat).
    ParentPosition,
    /// At least this sequence number of the parent's site-database log, for example the
    /// position a sync request names.
    Sequence(u64),
}

/// What a [`replicate_until`] call did.
#[derive(Debug, Clone, Default)]
pub struct ReplicationOutcome {
    /// The changes applied, batches and bytes received, and whether a snapshot came.
    pub changes: PullOutcome,
    /// The child's position in the parent's log now (also stored under [`ANCHOR_KEY`]).
    pub position: Option<ParentAnchor>,
    /// Whether the call reached its target with equal digests; `false` when the caller's
    /// progress callback stopped it first.
    pub reached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("the parent's site replication is unreachable or failed: {0}")]
    Transport(#[from] tonic::Status),
    #[error("a replicated batch was refused: {0}")]
    Batch(#[from] PullError),
    #[error("the parent sent an invalid message: {0}")]
    Invalid(#[from] ConversionError),
    #[error("the parent broke the replication protocol: {0}")]
    Protocol(String),
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The child's position in the parent's site-database log, if it has one.
pub fn stored_anchor(site_database: &CatalogStore) -> Result<Option<ParentAnchor>, StoreError> {
    stored_anchor_at(site_database, ANCHOR_KEY)
}

/// Replicates the parent's site database into `site_database` until `target` (see the
/// module documentation). `progress` is called after each applied and acknowledged batch;
/// returning `Break` ends the call there (the stored anchor says where to resume).
pub async fn replicate_until(
    client: &mut SiteReplicationClient<Channel>,
    site_database: &CatalogStore,
    site_code: &str,
    target: ReplicationTarget,
    limits: &ReplicationLimits,
    progress: impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
) -> Result<ReplicationOutcome, ReplicationError> {
    let stores = Stores {
        site_database,
        parsed_in: None,
    };
    replicate(client, stores, site_code, target, limits, progress).await
}

/// [`replicate_until`] at a site whose update-server store has just synced from the same
/// parent (phase 1 of its sync). The parent names the revisions its own update-server store
/// holds instead of sending them, and the site database takes their documents and summaries
/// from `update_server`; a document sent all the same that `update_server` holds with the
/// same bytes, as its update's latest revision, takes its summary from there instead of a
/// second parse. Should `update_server` lack a named revision (it changed since it synced),
/// the call subscribes again for documents from the last batch applied.
pub async fn replicate_after_update_server(
    client: &mut SiteReplicationClient<Channel>,
    site_database: &CatalogStore,
    update_server: &CatalogStore,
    site_code: &str,
    target: ReplicationTarget,
    limits: &ReplicationLimits,
    progress: impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
) -> Result<ReplicationOutcome, ReplicationError> {
    let stores = Stores {
        site_database,
        parsed_in: Some(update_server),
    };
    replicate(client, stores, site_code, target, limits, progress).await
}

/// The store a replication writes, and where it may find documents already parsed.
struct Stores<'a> {
    site_database: &'a CatalogStore,
    parsed_in: Option<&'a CatalogStore>,
}

async fn replicate(
    client: &mut SiteReplicationClient<Channel>,
    stores: Stores<'_>,
    site_code: &str,
    target: ReplicationTarget,
    limits: &ReplicationLimits,
    mut progress: impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
) -> Result<ReplicationOutcome, ReplicationError> {
    let mut outcome = ReplicationOutcome {
        position: stored_anchor(stores.site_database)?,
        ..ReplicationOutcome::default()
    };
    let mut target = match target {
        ReplicationTarget::ParentPosition => None,
        ReplicationTarget::Sequence(sequence) => Some(sequence),
    };
    let mut by_reference = stores.parsed_in.is_some();
    loop {
        let stream = Stream {
            stores: &stores,
            site_code,
            limits,
            by_reference,
        };
        match stream
            .run(client, &mut target, &mut outcome, &mut progress)
            .await
        {
            Err(ReplicationError::Batch(e)) if by_reference && e.is_unresolved_reference() => {
                tracing::warn!(
                    error = %e,
                    "a revision the parent named is not in the update-server store; asking for documents instead"
                );
                by_reference = false;
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(outcome),
        }
    }
}

/// One `Replicate` call of a [`replicate`].
struct Stream<'a> {
    stores: &'a Stores<'a>,
    site_code: &'a str,
    limits: &'a ReplicationLimits,
    by_reference: bool,
}

impl Stream<'_> {
    /// Streams until the target is reached, `progress` breaks, or an error; `outcome` says
    /// what was applied, also when it fails.
    async fn run(
        self,
        client: &mut SiteReplicationClient<Channel>,
        target: &mut Option<u64>,
        outcome: &mut ReplicationOutcome,
        progress: &mut impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
    ) -> Result<(), ReplicationError> {
        let Self {
            stores,
            site_code,
            limits,
            by_reference,
        } = self;
        let site_database = stores.site_database;
        // One Ack per batch in flight, at most the window, plus the Subscribe.
        let window = match limits.window {
            0 => sitesync_proto::DEFAULT_REPLICATION_WINDOW,
            n => n.min(sitesync_proto::MAX_REPLICATION_WINDOW),
        } as usize;
        let (requests, outbound) = mpsc::channel(window + 1);
        request(
            &requests,
            replication_request::Kind::Subscribe(v1::Subscribe {
                site_code: site_code.to_owned(),
                from: outcome.position.map(ParentAnchor::to_wire),
                max_batch_bytes: limits.max_batch_bytes,
                window: limits.window,
                by_reference,
                accept_lz4: true,
            }),
        )
        .await;
        let mut stream = client
            .replicate(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        let mut silence = FIRST_HEARTBEAT_WAIT;
        let mut heard = false;
        loop {
            let message = tokio::time::timeout(silence, stream.message())
                .await
                .map_err(|_| ReplicationError::Silent(silence))??
                .ok_or_else(|| {
                    ReplicationError::Protocol(
                        "the parent ended the stream; the next call resumes from the last batch applied"
                            .into(),
                    )
                })?;
            match message.kind {
                Some(replication_message::Kind::Heartbeat(heartbeat)) => {
                    heard = true;
                    if let Some(interval) = heartbeat.interval {
                        let interval = Duration::try_from(interval).map_err(|_| {
                            ReplicationError::Protocol("a negative heartbeat interval".into())
                        })?;
                        silence = (interval * 3).max(Duration::from_millis(100));
                    }
                    let parent = heartbeat
                        .site_database
                        .ok_or_else(|| ConversionError::missing("heartbeat.site_database"))?;
                    let latest = latest_of(&parent)?;
                    let wanted = *target.get_or_insert(latest.sequence);
                    if reached(outcome.position, latest, wanted) {
                        check_digest(site_database, &parent, latest)?;
                        outcome.changes.digest = site_database.digest();
                        outcome.reached = true;
                        return Ok(());
                    }
                }
                Some(replication_message::Kind::Batch(batch)) if heard => {
                    let journal = limits
                        .journal
                        .then(|| Journal::new(site_database, ANCHOR_KEY));
                    let batch = IncomingBatch {
                        batch,
                        limits: &limits.parse,
                        parsed_in: stores.parsed_in,
                    };
                    let resume = apply_batch(
                        site_database,
                        (ANCHOR_KEY, journal.as_ref()),
                        outcome.position,
                        batch,
                        &mut outcome.changes,
                    )?;
                    outcome.position = Some(resume);
                    outcome.changes.digest = site_database.digest();
                    request(
                        &requests,
                        replication_request::Kind::Ack(v1::Ack {
                            applied: Some(resume.to_wire()),
                        }),
                    )
                    .await;
                    if progress(outcome).is_break() {
                        return Ok(());
                    }
                    let wanted = (*target).expect("the first heartbeat sets the target");
                    if resume.snapshot_through.is_none() && resume.sequence >= wanted {
                        let parent = client
                            .get_site_database_info(v1::GetSiteDatabaseInfoRequest {})
                            .await?
                            .into_inner();
                        let latest = latest_of(&parent)?;
                        if reached(outcome.position, latest, wanted) {
                            check_digest(site_database, &parent, latest)?;
                            outcome.reached = true;
                            return Ok(());
                        }
                    }
                }
                _ => {
                    return Err(ReplicationError::Protocol(
                        "messages out of order: a heartbeat first, then batches and heartbeats"
                            .into(),
                    ));
                }
            }
        }
    }
}

/// Queues a message to the parent. A failure means the call is over, which the response
/// stream reports.
async fn request(requests: &mpsc::Sender<v1::ReplicationRequest>, kind: replication_request::Kind) {
    let _ = requests
        .send(v1::ReplicationRequest { kind: Some(kind) })
        .await;
}

fn latest_of(parent: &v1::StoreInfo) -> Result<ParentAnchor, ReplicationError> {
    let latest = parent
        .latest
        .clone()
        .ok_or_else(|| ConversionError::missing("site_database.latest"))?;
    Ok(ParentAnchor::from_wire(latest)?)
}

/// Whether the child stands exactly on the parent's newest position, at or past `wanted`.
fn reached(position: Option<ParentAnchor>, latest: ParentAnchor, wanted: u64) -> bool {
    position == Some(latest) && latest.snapshot_through.is_none() && latest.sequence >= wanted
}

fn check_digest(
    site_database: &CatalogStore,
    parent: &v1::StoreInfo,
    latest: ParentAnchor,
) -> Result<(), ReplicationError> {
    let parents = CatalogDigest::try_from(
        parent
            .digest
            .clone()
            .ok_or_else(|| ConversionError::missing("site_database.digest"))?,
    )?;
    let ours = site_database.digest();
    if ours != parents {
        return Err(ReplicationError::DigestMismatch {
            sequence: latest.sequence,
            ours,
            parents,
        });
    }
    Ok(())
}
