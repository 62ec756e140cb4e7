//! What the gRPC edge records: calls and their latency by method and gRPC status code,
//! TLS handshakes that failed, and calls refused by an authorization rule.
//!
//! The edge ([`crate::grpc`]) names the method and the code; this file takes them as
//! words and so knows nothing of tonic. Methods are only those of the node's contract
//! (anything else is `unknown`), so a caller cannot grow the label set without bound.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    rule: &'static str,
}

#[derive(Debug)]
pub struct ServerMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<CallLabels, Histogram, fn() -> Histogram>,
    handshake_failures: Family<HandshakeLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
}

/// From a millisecond to about an hour: a status read to a first sync's change stream.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

impl ServerMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            handshake_failures: Family::default(),
            refusals: Family::default(),
        };
        registry.register(
            "sitesync_grpc_server_requests",
            "gRPC calls this node served, by method (/package.Service/Method) and gRPC status code",
            metrics.calls.clone(),
        );
        registry.register(
            "sitesync_grpc_server_request_duration_seconds",
            "How long gRPC calls took, from the request to the end of the answer (a stream's last message), by method and gRPC status code",
            metrics.latency.clone(),
        );
        registry.register(
            "sitesync_tls_handshake_failures",
            "Incoming connections whose TLS handshake failed, by reason (refused: no valid certificate of the hierarchy or a protocol error; timeout)",
            metrics.handshake_failures.clone(),
        );
        registry.register(
            "sitesync_authorization_refusals",
            "Calls refused by the authorization rule of their method, by rule",
            metrics.refusals.clone(),
        );
        metrics
    }

    /// A call to `method` ended with the gRPC status `code` after `elapsed`.
    pub fn call(&self, method: &str, code: &'static str, elapsed: Duration) {
        let labels = CallLabels {
            method: method.to_owned(),
            code,
        };
        self.calls.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A TLS handshake failed, for `reason` (`refused` or `timeout`).
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// A call was refused by `rule`.
    pub fn refused(&self, rule: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { rule }).inc();
    }
}
