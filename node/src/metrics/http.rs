//! The metrics listener: plaintext HTTP/1.1, `GET /metrics` in the Prometheus text format
//! (OpenMetrics when the scraper's `Accept` asks for it), 404 for any other path.
//!
//! It is a listener of its own, like the health probes', so Prometheus scrapes without a
//! certificate of the hierarchy; it tells only figures, never changes anything. The
//! listener comes from outside, bound by the caller, so tests and the demo bind port 0.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{Format, Metrics};

/// Serves `metrics` on `listener` until this future is dropped, which also ends the
/// connections it serves (the node runs it as one of its background tasks, so it stops
/// with the node).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Finished connections are reaped as new ones come, so the set stays small.
        while connections.try_join_next().is_some() {}
        let metrics = metrics.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&request, metrics).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

async fn answer<B>(request: &Request<B>, metrics: Arc<Metrics>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET to read the metrics\n",
        );
    }
    let format = if request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
    {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    // The collectors read the stores.
    match tokio::task::spawn_blocking(move || metrics.encode(format)).await {
        Ok(Ok(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Ok(Err(_)) | Err(_) => {
            warn!("cannot encode the metrics");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded; see the node's log\n",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
