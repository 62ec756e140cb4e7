//! Following a parent's feeds: a child's update-server pull (phase 1 of its sync, S10) and
//! its site database's replication (phase 2, S7), over any [`ParentFeed`].
//!
//! **The pull** ([`pull`]) reads the parent's change stream from the anchor the store last
//! applied ([`PULL_ANCHOR_KEY`]) to the parent's position when the stream opened, applying
//! batch by batch ([`super::apply`]). At the end the parent states its digest at the
//! stream's target; when the child's differs (the parent was written to meanwhile), the
//! child pulls again, up to [`MAX_ROUNDS`] times.
//!
//! **The replication** ([`replicate`]) subscribes from the site database's own anchor
//! ([`REPLICATION_ANCHOR_KEY`]), applies each batch and only then acknowledges it. A call
//! ends when the child has reached its [`ReplicationTarget`] *and* stands exactly on the
//! parent's newest position, as the parent states in a heartbeat or when asked; the child's
//! digest must then equal the parent's, or the call fails with
//! [`FeedError::DigestMismatch`]. A parent silent for three heartbeat intervals is treated
//! as gone ([`FeedError::Silent`]); the caller reconnects.
//!
//! So a stored anchor is always exactly what its store holds. After a crash of the child,
//! or of the parent, or a dropped stream, the next call resumes from it: no gap and no
//! duplicate (SPEC invariants 2 and 3).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use sitesync_metadata::{CatalogDigest, ParseLimits};

use super::apply::{self, DocumentReader, FeedOutcome, ReadBatch, Target};
use super::journal::Journal;
use super::{
    Anchor, ChangesMessage, FeedError, ParentFeed, StorePosition, SubscribeRequest,
    SubscriptionMessage,
};
use crate::publishing::CustomCheck;
use crate::store::{CatalogStore, StoreError};

/// The update-server store's metadata key holding its anchor in the parent's log.
pub const PULL_ANCHOR_KEY: &str = "upstream.parent-anchor";

/// The site-database metadata key holding the child's position in the parent's
/// site-database log.
pub const REPLICATION_ANCHOR_KEY: &str = "replication.parent-anchor";

/// How many times a pull starts over when the parent changed during the stream.
pub const MAX_ROUNDS: usize = 5;

/// How long the child waits for the parent's first heartbeat (then three of the parent's
/// stated intervals).
const FIRST_HEARTBEAT_WAIT: Duration = Duration::from_secs(30);

/// The update-server store's anchor in the parent's log, if any.
pub fn stored_pull_anchor(store: &CatalogStore) -> Result<Option<Anchor>, StoreError> {
    apply::stored_anchor(store, PULL_ANCHOR_KEY)
}

/// The site database's position in the parent's site-database log, if any.
pub fn stored_replication_anchor(
    site_database: &CatalogStore,
) -> Result<Option<Anchor>, StoreError> {
    apply::stored_anchor(site_database, REPLICATION_ANCHOR_KEY)
}

/// Brings `store` up to the parent's update-server store, until both digests match. With
/// `journal`, what is applied can be taken back ([`super::journal`]).
pub async fn pull(
    parent: &dyn ParentFeed,
    store: &CatalogStore,
    limits: &ParseLimits,
    journal: bool,
    custom: Option<Arc<CustomCheck>>,
    mut progress: impl FnMut(&FeedOutcome),
) -> Result<FeedOutcome, FeedError> {
    let mut outcome = FeedOutcome::default();
    let journal = journal.then(|| Journal::new(store, PULL_ANCHOR_KEY));
    let target = Target {
        store,
        anchor_key: PULL_ANCHOR_KEY,
        journal: journal.as_ref(),
    };
    for _ in 0..MAX_ROUNDS {
        let batches_before = outcome.batches;
        let target_digest = pull_once(
            parent,
            target,
            limits,
            custom.clone(),
            &mut outcome,
            &mut progress,
        )
        .await?;
        if store.digest() == target_digest {
            outcome.digest = target_digest;
            return Ok(outcome);
        }
        if outcome.batches == batches_before {
            // Nothing came, yet the digests differ: what the parent serves is not what it
            // states it holds.
            return Err(FeedError::Mismatch {
                stated: target_digest,
                pulled: store.digest(),
            });
        }
    }
    Err(FeedError::Unsettled { rounds: MAX_ROUNDS })
}

/// One change stream; returns the parent's digest at the stream's target.
async fn pull_once(
    parent: &dyn ParentFeed,
    target: Target<'_>,
    limits: &ParseLimits,
    custom: Option<Arc<CustomCheck>>,
    outcome: &mut FeedOutcome,
    progress: &mut impl FnMut(&FeedOutcome),
) -> Result<CatalogDigest, FeedError> {
    let mut position = stored_pull_anchor(target.store)?;
    let mut stream = parent.changes(position).await?;
    let mut planned = false;
    // The batch being read on the blocking pool while the one before it is applied here:
    // parsing and writing overlap, and batches are still applied one at a time, in order.
    let mut reading: Option<tokio::task::JoinHandle<Result<ReadBatch, FeedError>>> = None;
    loop {
        let message = match stream.next().await {
            Ok(message) => message,
            Err(error) => {
                // What was received before the failure is still applied: less to redo.
                if let Some(previous) = reading.take() {
                    apply::commit(target, position, joined(previous).await?, outcome)?;
                    progress(outcome);
                }
                return Err(error);
            }
        };
        match message {
            Some(ChangesMessage::Plan(plan)) if !planned => {
                planned = true;
                outcome.snapshot |= plan.snapshot;
            }
            Some(ChangesMessage::Batch(batch)) if planned => {
                let limits = *limits;
                let custom = custom.clone();
                let next = tokio::task::spawn_blocking(move || {
                    let reader = DocumentReader {
                        limits: &limits,
                        parsed_in: None,
                        custom: custom.as_deref(),
                    };
                    apply::read(batch, &reader)
                });
                if let Some(previous) = reading.replace(next) {
                    let read = joined(previous).await?;
                    position = Some(apply::commit(target, position, read, outcome)?);
                    progress(outcome);
                }
            }
            Some(ChangesMessage::Complete { digest }) if planned => {
                if let Some(previous) = reading.take() {
                    apply::commit(target, position, joined(previous).await?, outcome)?;
                    progress(outcome);
                }
                return Ok(digest);
            }
            Some(_) => {
                return Err(FeedError::Protocol(
                    "messages out of order: a plan first, then batches, then completion".into(),
                ));
            }
            None => {
                return Err(FeedError::Protocol(
                    "the stream ended without completion; the next pull resumes from the last batch applied"
                        .into(),
                ));
            }
        }
    }
}

/// The batch a reading task produced. A panic while reading is a bug and goes on as one.
async fn joined(
    task: tokio::task::JoinHandle<Result<ReadBatch, FeedError>>,
) -> Result<ReadBatch, FeedError> {
    match task.await {
        Ok(read) => read,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(FeedError::Transport("the node is shutting down".into())),
    }
}

/// What a replication asks of the parent and how it applies what comes.
#[derive(Debug, Clone, Default)]
pub struct ReplicationLimits {
    /// Most unacknowledged batches; 0 for the protocol's default.
    pub window: u32,
    /// Preferred batch size in bytes; 0 for the protocol's default.
    pub max_batch_bytes: u32,
    /// Limits for parsing the documents the parent sends.
    pub parse: ParseLimits,
    /// Keep an undo journal of what is applied ([`super::journal`]), so that a catalog
    /// that turns out not to be the signed one can be taken back.
    pub journal: bool,
    /// With signed catalog versions: what custom updates are checked against (S6).
    pub custom: Option<Arc<CustomCheck>>,
}

/// How far a [`replicate`] call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationTarget {
    /// The parent's position when the stream opened (its first heartbeat).
    ParentPosition,
    /// At least this sequence number of the parent's site-database log, for example the
    /// position a sync request names.
    Sequence(u64),
}

/// What a [`replicate`] call did.
#[derive(Debug, Clone, Default)]
pub struct ReplicationOutcome {
    /// The changes applied, batches and bytes received, and whether a snapshot came.
    pub changes: FeedOutcome,
    /// The child's position in the parent's log now (also stored under
    /// [`REPLICATION_ANCHOR_KEY`]).
    pub position: Option<Anchor>,
    /// Whether the call reached its target with equal digests; `false` when the caller's
    /// progress callback stopped it first.
    pub reached: bool,
}

/// The stores a replication works with.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaStores<'a> {
    /// The store replicated into.
    pub site_database: &'a CatalogStore,
    /// The node's update-server store when it has just synced from the same parent (phase
    /// 1 of its sync): the parent names the revisions its own update-server store holds
    /// instead of sending them, and they are taken from here. Should it lack a named
    /// revision (it changed since it synced), the call subscribes again for documents from
    /// the last batch applied.
    pub update_server: Option<&'a CatalogStore>,
}

/// Replicates the parent's site database until `target` (see the module documentation).
/// `progress` is called after each applied and acknowledged batch; returning `Break` ends
/// the call there (the stored anchor says where to resume).
pub async fn replicate(
    parent: &dyn ParentFeed,
    stores: ReplicaStores<'_>,
    site_code: &str,
    target: ReplicationTarget,
    limits: &ReplicationLimits,
    mut progress: impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
) -> Result<ReplicationOutcome, FeedError> {
    let mut outcome = ReplicationOutcome {
        position: stored_replication_anchor(stores.site_database)?,
        ..ReplicationOutcome::default()
    };
    let mut target = match target {
        ReplicationTarget::ParentPosition => None,
        ReplicationTarget::Sequence(sequence) => Some(sequence),
    };
    let mut by_reference = stores.update_server.is_some();
    loop {
        let stream = Stream {
            stores,
            site_code,
            limits,
            by_reference,
        };
        match stream
            .run(parent, &mut target, &mut outcome, &mut progress)
            .await
        {
            Err(e) if by_reference && e.is_unresolved_reference() => {
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

/// One subscription of a [`replicate`].
struct Stream<'a> {
    stores: ReplicaStores<'a>,
    site_code: &'a str,
    limits: &'a ReplicationLimits,
    by_reference: bool,
}

impl Stream<'_> {
    /// Streams until the target is reached, `progress` breaks, or an error; `outcome` says
    /// what was applied, also when it fails.
    async fn run(
        self,
        parent: &dyn ParentFeed,
        target: &mut Option<u64>,
        outcome: &mut ReplicationOutcome,
        progress: &mut impl FnMut(&ReplicationOutcome) -> ControlFlow<()>,
    ) -> Result<(), FeedError> {
        let Self {
            stores,
            site_code,
            limits,
            by_reference,
        } = self;
        let site_database = stores.site_database;
        let journal = limits
            .journal
            .then(|| Journal::new(site_database, REPLICATION_ANCHOR_KEY));
        let apply_to = Target {
            store: site_database,
            anchor_key: REPLICATION_ANCHOR_KEY,
            journal: journal.as_ref(),
        };
        let reader = DocumentReader {
            limits: &limits.parse,
            parsed_in: stores.update_server,
            custom: limits.custom.as_deref(),
        };
        let mut subscription = parent
            .subscribe(SubscribeRequest {
                site_code: site_code.to_owned(),
                from: outcome.position,
                max_batch_bytes: limits.max_batch_bytes,
                window: limits.window,
                by_reference,
            })
            .await?;
        let mut silence = FIRST_HEARTBEAT_WAIT;
        let mut heard = false;
        loop {
            let message = tokio::time::timeout(silence, subscription.next())
                .await
                .map_err(|_| FeedError::Silent(silence))??
                .ok_or_else(|| {
                    FeedError::Protocol(
                        "the parent ended the stream; the next call resumes from the last batch applied"
                            .into(),
                    )
                })?;
            match message {
                SubscriptionMessage::Heartbeat { position, interval } => {
                    heard = true;
                    if let Some(interval) = interval {
                        silence = (interval * 3).max(Duration::from_millis(100));
                    }
                    let wanted = *target.get_or_insert(position.latest.sequence);
                    if reached(outcome.position, position.latest, wanted) {
                        check_digest(site_database, position)?;
                        outcome.changes.digest = site_database.digest();
                        outcome.reached = true;
                        return Ok(());
                    }
                }
                SubscriptionMessage::Batch(batch) if heard => {
                    let read = apply::read(batch, &reader)?;
                    let resume =
                        apply::commit(apply_to, outcome.position, read, &mut outcome.changes)?;
                    outcome.position = Some(resume);
                    outcome.changes.digest = site_database.digest();
                    subscription.ack(resume).await?;
                    if progress(outcome).is_break() {
                        return Ok(());
                    }
                    let wanted = (*target).expect("the first heartbeat sets the target");
                    if resume.snapshot_through.is_none() && resume.sequence >= wanted {
                        let position = parent.site_database().await?;
                        if reached(outcome.position, position.latest, wanted) {
                            check_digest(site_database, position)?;
                            outcome.reached = true;
                            return Ok(());
                        }
                    }
                }
                SubscriptionMessage::Batch(_) => {
                    return Err(FeedError::Protocol(
                        "messages out of order: a heartbeat first, then batches and heartbeats"
                            .into(),
                    ));
                }
            }
        }
    }
}

/// Whether the child stands exactly on the parent's newest position, at or past `wanted`.
fn reached(position: Option<Anchor>, latest: Anchor, wanted: u64) -> bool {
    position == Some(latest) && latest.snapshot_through.is_none() && latest.sequence >= wanted
}

fn check_digest(site_database: &CatalogStore, parent: StorePosition) -> Result<(), FeedError> {
    let ours = site_database.digest();
    if ours != parent.digest {
        return Err(FeedError::DigestMismatch {
            sequence: parent.latest.sequence,
            ours,
            parents: parent.digest,
        });
    }
    Ok(())
}
