//! `sitesync.v1.SiteReplication`: a parent streams its site database to each child (S7).
//!
//! One `Replicate` call is one task. It reads the child's `Subscribe`, decides with the
//! feed's `ChangesStart` rule, as `UpdateServer.GetChanges` does, whether the child gets the log
//! tail or a snapshot first, sends a heartbeat, and then produces batches with the same
//! `BatchProducer` (on blocking tasks, since store reads are synchronous), one at a time:
//! never more than `window` beyond the child's last acknowledgement, so a slow child holds
//! the parent at about `window` batches of memory. When the child has everything, the task
//! waits on the site database's sequence watch and resumes as the log grows; when nothing
//! has been sent for a heartbeat interval it sends a heartbeat. The call ends when the
//! child closes its side or goes away, or on a protocol error.
//!
//! An internet-facing node has no site database (S11): it refuses both calls.
//!
//! Which child may call is decided by the access layer from the peer certificate
//! ([`super::super::access`]); the `site_code` of a `Subscribe` must be the caller's own.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use sitesync_proto::v1::{self, replication_message, replication_request};
use sitesync_proto::{DEFAULT_REPLICATION_WINDOW, MAX_REPLICATION_WINDOW, TARGET_BATCH_BYTES};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::super::access::Caller;
use super::super::wire::store_info;
use crate::config::Role;
use crate::feed::Anchor;
use crate::feed::produce::{BatchProducer, ChangesStart};
use crate::node::NodeState;
use crate::store::CatalogStore;

/// How long a `Replicate` stream may stay silent before the parent sends a heartbeat.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct SiteReplicationService {
    node: Arc<NodeState>,
    /// See [`DEFAULT_HEARTBEAT_INTERVAL`]; tests shorten it.
    heartbeat_interval: Duration,
}

impl SiteReplicationService {
    pub fn new(node: Arc<NodeState>) -> Self {
        Self {
            node,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        }
    }

    /// The same service with another heartbeat interval.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Refuses the call at an internet-facing node, which has no site database.
    fn has_site_database(&self) -> Result<(), Status> {
        if self.node.config.role == Role::Internet {
            return Err(Status::failed_precondition(format!(
                "an internet-facing node has no site database: {} holds only an update server; replicate the site database from its site's node",
                self.node.config.site_code
            )));
        }
        Ok(())
    }
}

type MessageSender = mpsc::Sender<Result<v1::ReplicationMessage, Status>>;

#[tonic::async_trait]
impl v1::site_replication_server::SiteReplication for SiteReplicationService {
    type ReplicateStream = ReceiverStream<Result<v1::ReplicationMessage, Status>>;

    async fn replicate(
        &self,
        request: Request<Streaming<v1::ReplicationRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        self.has_site_database()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let mut inbound = request.into_inner();
        let subscribe = match inbound.message().await? {
            Some(v1::ReplicationRequest {
                kind: Some(replication_request::Kind::Subscribe(subscribe)),
            }) => subscribe,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message of Replicate must be a Subscribe",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "the stream ended before its Subscribe",
                ));
            }
        };
        if let Some(caller) = &caller {
            caller.acts_for(&subscribe.site_code, "replicate the site database")?;
        }
        let subscription = Subscription::of(subscribe, &self.node)?;
        tracing::info!(
            child = %subscription.site_code,
            window = subscription.window,
            snapshot = subscription.producer.snapshot_pending(),
            "a child subscribed to site-database replication"
        );
        // Room for the whole window plus a heartbeat: the window, not the channel, is what
        // bounds what is in flight.
        let (sender, receiver) = mpsc::channel(subscription.window + 1);
        let node = self.node.clone();
        let interval = self.heartbeat_interval;
        tokio::spawn(async move {
            let child = subscription.site_code.clone();
            if let Err(status) = serve(node, subscription, inbound, &sender, interval).await {
                tracing::warn!(%child, %status, "site-database replication to a child ended");
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_site_database_info(
        &self,
        _request: Request<v1::GetSiteDatabaseInfoRequest>,
    ) -> Result<Response<v1::StoreInfo>, Status> {
        self.has_site_database()?;
        Ok(Response::new(store_info(
            &self.node.database.site_database().state(),
        )))
    }
}

/// A validated `Subscribe`.
struct Subscription {
    site_code: String,
    window: usize,
    producer: BatchProducer,
    /// Revisions this node's update-server store holds with the same bytes go as
    /// references: the child's update-server store synced from it just before.
    by_reference: bool,
}

impl Subscription {
    fn of(subscribe: v1::Subscribe, node: &NodeState) -> Result<Self, Status> {
        let window = match subscribe.window {
            0 => DEFAULT_REPLICATION_WINDOW,
            n => n.min(MAX_REPLICATION_WINDOW),
        } as usize;
        let max_batch = match subscribe.max_batch_bytes as usize {
            0 => TARGET_BATCH_BYTES,
            n => n.min(TARGET_BATCH_BYTES),
        };
        let state = node.database.site_database().state();
        let from = subscribe
            .from
            .map(Anchor::try_from)
            .transpose()
            .map_err(|e| e.within("subscribe.from"))?;
        let start = ChangesStart::of(from, &state)?;
        Ok(Self {
            site_code: subscribe.site_code,
            window,
            producer: BatchProducer::new(&start, max_batch, subscribe.accept_lz4),
            by_reference: subscribe.by_reference,
        })
    }
}

/// Why [`serve`] stopped without an error to report: the child went away.
struct Gone;

/// Runs one subscription until the child goes away (`Ok`) or breaks the protocol.
async fn serve(
    node: Arc<NodeState>,
    subscription: Subscription,
    mut inbound: Streaming<v1::ReplicationRequest>,
    sender: &MessageSender,
    interval: Duration,
) -> Result<(), Status> {
    let Subscription {
        window,
        mut producer,
        by_reference,
        ..
    } = subscription;
    let mut sequence = node.database.site_database().watch_sequence();
    // The resume anchors sent and not yet acknowledged, oldest first.
    let mut unacked: VecDeque<v1::Anchor> = VecDeque::with_capacity(window);
    // Whether the producer has nothing more up to the newest sequence it was shown.
    let mut caught_up = false;
    if heartbeat(&node, sender, interval).await.is_err() {
        return Ok(());
    }
    let mut quiet_until = Instant::now() + interval;
    loop {
        if !caught_up && unacked.len() < window {
            // Marks the value seen, so a write after this point wakes the wait below.
            let target = *sequence.borrow_and_update();
            let (returned, batch) = {
                let node = node.clone();
                tokio::task::spawn_blocking(move || {
                    let database = &node.database;
                    let update_server: &CatalogStore = database.update_server();
                    let held_by_reader = by_reference.then_some(update_server);
                    let batch =
                        producer.next_batch(database.site_database(), held_by_reader, target);
                    (producer, batch)
                })
                .await
                .map_err(|e| Status::internal(format!("the replication producer failed: {e}")))?
            };
            producer = returned;
            match batch? {
                Some(batch) => {
                    unacked.push_back(batch.resume.into());
                    if send(sender, replication_message::Kind::Batch(batch.into()))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    quiet_until = Instant::now() + interval;
                }
                None => caught_up = true,
            }
            continue;
        }
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(v1::ReplicationRequest { kind: Some(replication_request::Kind::Ack(ack)) })) => {
                    acknowledge(&mut unacked, ack)?;
                }
                Ok(Some(_)) => {
                    return Err(Status::invalid_argument(
                        "after its Subscribe a child sends only Acks",
                    ));
                }
                // The child closed its side or went away: nothing to report to it.
                Ok(None) | Err(_) => return Ok(()),
            },
            changed = sequence.changed(), if caught_up => {
                if changed.is_err() {
                    return Ok(());
                }
                caught_up = false;
            }
            () = tokio::time::sleep_until(quiet_until) => {
                if heartbeat(&node, sender, interval).await.is_err() {
                    return Ok(());
                }
                quiet_until = Instant::now() + interval;
            }
            () = sender.closed() => return Ok(()),
        }
    }
}

/// Accepts an acknowledgement of a batch sent and not yet acknowledged; acknowledging a
/// later batch acknowledges the earlier ones too.
fn acknowledge(unacked: &mut VecDeque<v1::Anchor>, ack: v1::Ack) -> Result<(), Status> {
    let applied = ack
        .applied
        .ok_or_else(|| Status::invalid_argument("ack.applied is required"))?;
    match unacked.iter().position(|sent| *sent == applied) {
        Some(index) => {
            unacked.drain(..=index);
            Ok(())
        }
        None => Err(Status::failed_precondition(format!(
            "the child acknowledged log {} sequence {}{}, which this parent did not send or was already acknowledged; the child must resubscribe from what it has applied",
            applied.log_id,
            applied.sequence,
            if applied.snapshot_through.is_some() {
                " (mid-snapshot)"
            } else {
                ""
            },
        ))),
    }
}

async fn send(sender: &MessageSender, kind: replication_message::Kind) -> Result<(), Gone> {
    sender
        .send(Ok(v1::ReplicationMessage { kind: Some(kind) }))
        .await
        .map_err(|_| Gone)
}

async fn heartbeat(
    node: &NodeState,
    sender: &MessageSender,
    interval: Duration,
) -> Result<(), Gone> {
    send(
        sender,
        replication_message::Kind::Heartbeat(v1::ReplicationHeartbeat {
            site_database: Some(store_info(&node.database.site_database().state())),
            interval: Some(prost_types::Duration {
                seconds: interval.as_secs() as i64,
                nanos: interval.subsec_nanos() as i32,
            }),
            sent_at: Some(sitesync_proto::convert::timestamp_to_wire(
                node.network_clock.now(),
            )),
        }),
    )
    .await
}
