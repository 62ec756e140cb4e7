//! The tower layer that counts every call the server answers, for the node's metrics
//! ([`crate::metrics::server`]): by method and gRPC status code, with its latency.
//!
//! A call's code is in the `grpc-status` header when it fails at once (a "trailers-only"
//! answer) and otherwise in the trailers after the last message, so the answer's body is
//! wrapped to read them; the call is counted when that body ends or is dropped, so a stream
//! counts for as long as it streams. A body dropped before its trailers is a call the
//! client gave up on: `CANCELLED`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http;

use super::access::rule_for;
use crate::metrics::Metrics;

/// Counts the calls of the services it wraps.
#[derive(Debug, Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Body + Send + 'static,
{
    type Response = http::Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        // Only the contract's methods become labels: a caller inventing paths must not
        // grow the metrics without bound.
        let method = if rule_for(path, false).is_some() {
            path.to_owned()
        } else {
            "unknown".to_owned()
        };
        let call = Call {
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
            code: None,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            match answer.await {
                Ok(response) => {
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map(code_name);
                    Ok(response.map(|body| MeteredBody {
                        inner: Box::pin(body),
                        call: Some(Call { code, ..call }),
                    }))
                }
                Err(error) => {
                    call.record("UNKNOWN");
                    Err(error)
                }
            }
        })
    }
}

/// A call being answered, counted once when its answer ends.
#[derive(Debug)]
struct Call {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    /// The status code, once the headers or the trailers gave it.
    code: Option<&'static str>,
}

impl Call {
    fn record(self, code: &'static str) {
        self.metrics
            .server
            .call(&self.method, code, self.started.elapsed());
    }
}

/// An answer's body that reads the status in its trailers and counts the call at its end.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: Pin<Box<B>>,
    /// Taken when the call is counted.
    call: Option<Call>,
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let code = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .map(code_name);
                if let (Some(code), Some(call)) = (code, this.call.as_mut()) {
                    call.code = Some(code);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    // An answer that ended without a status is not one gRPC defines.
                    let code = call.code.unwrap_or("UNKNOWN");
                    call.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let code = call.code.unwrap_or("CANCELLED");
            call.record(code);
        }
    }
}

/// The name of the gRPC status code `value` (as `grpc-status` carries it).
fn code_name(value: &str) -> &'static str {
    match value.trim().parse::<u8>() {
        Ok(0) => "OK",
        Ok(1) => "CANCELLED",
        Ok(2) => "UNKNOWN",
        Ok(3) => "INVALID_ARGUMENT",
        Ok(4) => "DEADLINE_EXCEEDED",
        Ok(5) => "NOT_FOUND",
        Ok(6) => "ALREADY_EXISTS",
        Ok(7) => "PERMISSION_DENIED",
        Ok(8) => "RESOURCE_EXHAUSTED",
        Ok(9) => "FAILED_PRECONDITION",
        Ok(10) => "ABORTED",
        Ok(11) => "OUT_OF_RANGE",
        Ok(12) => "UNIMPLEMENTED",
        Ok(13) => "INTERNAL",
        Ok(14) => "UNAVAILABLE",
        Ok(15) => "DATA_LOSS",
        Ok(16) => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::code_name;

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("7"), "PERMISSION_DENIED");
        assert_eq!(code_name("16"), "UNAUTHENTICATED");
        assert_eq!(code_name("99"), "UNKNOWN");
        assert_eq!(code_name("x"), "UNKNOWN");
    }
}
