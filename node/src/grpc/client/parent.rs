//! [`ParentFeed`] over gRPC: the parent's `UpdateServer.GetChanges` stream and its
//! `SiteReplication.Replicate` subscription, decoded into the feed's domain types here and
//! nowhere else.

use std::time::Duration;

use sitesync_proto::v1::site_replication_client::SiteReplicationClient;
use sitesync_proto::v1::update_server_client::UpdateServerClient;
use sitesync_proto::v1::{self, get_changes_response, replication_message, replication_request};
use sitesync_proto::{ConversionError, MAX_MESSAGE_BYTES, MAX_REPLICATION_WINDOW};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::super::trace::traced;
use super::super::wire::stated_digest;
use crate::feed::{
    Anchor, Batch, ChangeStream, ChangesMessage, ChangesPlan, FeedError, FeedFuture, ParentCatalog,
    ParentFeed, StorePosition, SubscribeRequest, Subscription, SubscriptionMessage,
};

/// A parent reached over a gRPC channel. The channel connects lazily and reconnects by
/// itself, so a parent that is down at start costs nothing but failed syncs until it is back.
#[derive(Debug, Clone)]
pub struct GrpcParent {
    /// `host:port`, for messages.
    address: String,
    channel: Channel,
}

impl GrpcParent {
    pub fn new(address: impl Into<String>, channel: Channel) -> Self {
        Self {
            address: address.into(),
            channel,
        }
    }

    fn update_server(&self) -> UpdateServerClient<Channel> {
        UpdateServerClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn site_replication(&self) -> SiteReplicationClient<Channel> {
        SiteReplicationClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl ParentFeed for GrpcParent {
    fn address(&self) -> &str {
        &self.address
    }

    fn catalog(&self) -> FeedFuture<'_, ParentCatalog> {
        Box::pin(async move {
            let info = self
                .update_server()
                .get_catalog_info(traced(v1::GetCatalogInfoRequest {}))
                .await?
                .into_inner();
            Ok(ParentCatalog {
                digest: stated_digest(&info),
                catalog_version: info.catalog_version,
            })
        })
    }

    fn changes(&self, since: Option<Anchor>) -> FeedFuture<'_, Box<dyn ChangeStream>> {
        Box::pin(async move {
            let stream = self
                .update_server()
                .get_changes(traced(v1::GetChangesRequest {
                    since: since.map(Into::into),
                    max_batch_bytes: 0,
                    accept_lz4: true,
                }))
                .await?
                .into_inner();
            Ok(Box::new(Changes(stream)) as Box<dyn ChangeStream>)
        })
    }

    fn subscribe(&self, request: SubscribeRequest) -> FeedFuture<'_, Box<dyn Subscription>> {
        Box::pin(async move {
            // One Ack per batch in flight, at most the window, plus the Subscribe.
            let window = match request.window {
                0 => sitesync_proto::DEFAULT_REPLICATION_WINDOW,
                n => n.min(MAX_REPLICATION_WINDOW),
            } as usize;
            let (requests, outbound) = mpsc::channel(window + 1);
            send(
                &requests,
                replication_request::Kind::Subscribe(v1::Subscribe {
                    site_code: request.site_code,
                    from: request.from.map(Into::into),
                    max_batch_bytes: request.max_batch_bytes,
                    window: request.window,
                    by_reference: request.by_reference,
                    accept_lz4: true,
                }),
            )
            .await;
            let stream = self
                .site_replication()
                .replicate(traced(ReceiverStream::new(outbound)))
                .await?
                .into_inner();
            Ok(Box::new(Replication { requests, stream }) as Box<dyn Subscription>)
        })
    }

    fn site_database(&self) -> FeedFuture<'_, StorePosition> {
        Box::pin(async move {
            let info = self
                .site_replication()
                .get_site_database_info(traced(v1::GetSiteDatabaseInfoRequest {}))
                .await?
                .into_inner();
            Ok(StorePosition::try_from(info).map_err(|e| e.within("site_database"))?)
        })
    }
}

/// A `GetChanges` response stream.
struct Changes(Streaming<v1::GetChangesResponse>);

impl ChangeStream for Changes {
    fn next(&mut self) -> FeedFuture<'_, Option<ChangesMessage>> {
        Box::pin(async move {
            let Some(message) = self.0.message().await? else {
                return Ok(None);
            };
            Ok(Some(match message.kind {
                Some(get_changes_response::Kind::Plan(plan)) => ChangesMessage::Plan(ChangesPlan {
                    target: plan
                        .target
                        .map(Anchor::try_from)
                        .transpose()
                        .map_err(|e| e.within("plan.target"))?,
                    snapshot: plan.snapshot,
                    estimated_changes: plan.estimated_changes,
                }),
                Some(get_changes_response::Kind::Batch(batch)) => {
                    ChangesMessage::Batch(Batch::try_from(batch)?)
                }
                Some(get_changes_response::Kind::Complete(complete)) => {
                    let digest = complete
                        .at_target
                        .and_then(|info| info.store)
                        .and_then(|store| store.digest)
                        .ok_or_else(|| {
                            ConversionError::missing("complete.at_target.store.digest")
                        })?;
                    ChangesMessage::Complete {
                        digest: digest.try_into()?,
                    }
                }
                None => return Err(ConversionError::missing("kind").into()),
            }))
        })
    }
}

/// A `Replicate` call: the requests the child sends and the parent's messages.
struct Replication {
    requests: mpsc::Sender<v1::ReplicationRequest>,
    stream: Streaming<v1::ReplicationMessage>,
}

impl Subscription for Replication {
    fn next(&mut self) -> FeedFuture<'_, Option<SubscriptionMessage>> {
        Box::pin(async move {
            let Some(message) = self.stream.message().await? else {
                return Ok(None);
            };
            Ok(Some(match message.kind {
                Some(replication_message::Kind::Heartbeat(heartbeat)) => {
                    let interval = heartbeat
                        .interval
                        .map(|interval| {
                            Duration::try_from(interval).map_err(|_| {
                                FeedError::Protocol("a negative heartbeat interval".into())
                            })
                        })
                        .transpose()?;
                    let position = heartbeat
                        .site_database
                        .ok_or_else(|| ConversionError::missing("heartbeat.site_database"))?;
                    SubscriptionMessage::Heartbeat {
                        position: StorePosition::try_from(position)
                            .map_err(|e| e.within("site_database"))?,
                        interval,
                    }
                }
                Some(replication_message::Kind::Batch(batch)) => {
                    SubscriptionMessage::Batch(Batch::try_from(batch)?)
                }
                None => return Err(ConversionError::missing("kind").into()),
            }))
        })
    }

    fn ack(&mut self, applied: Anchor) -> FeedFuture<'_, ()> {
        Box::pin(async move {
            send(
                &self.requests,
                replication_request::Kind::Ack(v1::Ack {
                    applied: Some(applied.into()),
                }),
            )
            .await;
            Ok(())
        })
    }
}

/// Queues a message to the parent. A failure means the call is over, which the response
/// stream reports.
async fn send(requests: &mpsc::Sender<v1::ReplicationRequest>, kind: replication_request::Kind) {
    let _ = requests
        .send(v1::ReplicationRequest { kind: Some(kind) })
        .await;
}
