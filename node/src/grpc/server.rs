//! The node's gRPC server: its services plus the standard health and reflection services,
//! so stock gRPC tools work against it.
//!
//! The listener comes from outside (`serve` takes a bound `TcpListener`), so tests bind port
//! 0 and read the address back, and the same code can run on other transports.

use std::future::Future;

use sitesync_proto::{FILE_DESCRIPTOR_SET, MAX_MESSAGE_BYTES, v1};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use std::sync::Arc;
use std::time::Duration;

use sitesync_security::{Transport, tls_incoming_observed};

use super::access::{Access, AccessLayer, Relations};
use super::metrics_layer::MetricsLayer;
use super::services::admin::AdminService;
use super::services::client_policy::ClientPolicyService;
use super::services::hierarchy::HierarchyService;
use super::services::site_replication::SiteReplicationService;
use super::services::update_server::UpdateServerService;
use crate::config::SecurityConfig;
use crate::startup::Started;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// How long a unary call may take; streams are bounded by keep-alive instead.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Calls in progress at once: per connection, and over the whole node (more wait).
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
const MAX_CALLS_PER_CONNECTION: usize = 64;
const MAX_CALLS: usize = 512;

/// Serves every service on `listener` until `shutdown` completes, then drains in-flight
/// calls, stops the node's background tasks and returns.
pub async fn serve(
    started: Started,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_health_listener(started, listener, None, shutdown).await
}

/// [`serve`], plus, on `health_listener` when given, `grpc.health.v1` alone in plaintext:
/// for probes that cannot present a certificate (Kubernetes' gRPC probes). It answers only
/// whether the node serves, and stops when the main server does.
pub async fn serve_with_health_listener(
    started: Started,
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let health_only = health_listener.map(|listener| {
        let router = tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
            .add_service(health.clone());
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)))
    });
    let Started {
        node,
        sync,
        hierarchy,
        legacy,
    } = started;
    let relations: Arc<dyn Relations> = hierarchy.clone();
    health_reporter
        .set_serving::<v1::update_server_server::UpdateServerServer<UpdateServerService>>()
        .await;
    health_reporter
        .set_serving::<v1::site_replication_server::SiteReplicationServer<SiteReplicationService>>()
        .await;
    health_reporter
        .set_serving::<v1::admin_server::AdminServer<AdminService>>()
        .await;
    health_reporter
        .set_serving::<v1::client_policy_server::ClientPolicyServer<ClientPolicyService>>()
        .await;
    health_reporter
        .set_serving::<v1::hierarchy_server::HierarchyServer<HierarchyService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // One maximal document must fit in one message; tonic's 4 MiB default would refuse it.
    let update_server =
        v1::update_server_server::UpdateServerServer::new(UpdateServerService::new(node.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let site_replication = v1::site_replication_server::SiteReplicationServer::new(
        SiteReplicationService::new(node.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = v1::admin_server::AdminServer::new(AdminService::new(
        node.clone(),
        sync.clone(),
        hierarchy.clone(),
        legacy.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hierarchy =
        v1::hierarchy_server::HierarchyServer::new(HierarchyService::new(hierarchy, sync.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let client_policy = v1::client_policy_server::ClientPolicyServer::new(
        ClientPolicyService::new(node.clone(), sync, legacy),
    );
    let (tls, client_policy_needs_certificate) = match (&node.transport, &node.config.security) {
        (
            Transport::Tls(context),
            SecurityConfig::Tls {
                client_policy_needs_certificate,
                ..
            }
            | SecurityConfig::SelfProvisioned {
                client_policy_needs_certificate,
            },
        ) => (Some(context.clone()), *client_policy_needs_certificate),
        _ => (None, false),
    };
    let access = Access::new(tls.clone(), relations, client_policy_needs_certificate)
        .with_metrics(node.metrics.clone());

    let router = tonic::transport::Server::builder()
        // Limits against hostile or broken peers: a deadline on every unary call, HTTP/2
        // pings so a vanished peer's streams end, and bounded concurrency.
        .timeout(CALL_TIMEOUT)
        .http2_keepalive_interval(Some(KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEP_ALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .layer(MetricsLayer(node.metrics.clone()))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_CALLS))
        // Outside the access check, so a refused call has its span too.
        .layer(super::trace::TraceLayer)
        .layer(AccessLayer(access))
        .add_service(health)
        .add_service(reflection)
        .add_service(update_server)
        .add_service(site_replication)
        .add_service(admin)
        .add_service(client_policy)
        .add_service(hierarchy);
    let served = match tls {
        Some(context) => {
            let metrics = node.metrics.clone();
            let incoming = tls_incoming_observed(listener, context, move |failure| {
                metrics.server.handshake_failed(failure.as_str())
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
        }
    };
    node.stop();
    if let Some(task) = health_only {
        task.abort();
    }
    served?;
    Ok(())
}
