//! The W3C trace context (`traceparent`, `tracestate`) as the domain keeps it: with a sync
//! request in the outbox, with a queued sync, on the wire between nodes. A trace continues
//! through everything that carries one, across restarts and sites.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A span's place in a trace, as W3C Trace Context headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `version-traceid-parentid-flags`, for example
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub traceparent: String,
    /// Vendor entries, often empty.
    pub tracestate: String,
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

impl TraceContext {
    /// The context of the span the caller is in, if it belongs to a trace.
    pub fn current() -> Option<Self> {
        Self::of(&Span::current())
    }

    /// The context of `span`, if it belongs to a trace (not when tracing is off).
    pub fn of(span: &Span) -> Option<Self> {
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        Some(Self {
            traceparent: carrier.remove(TRACEPARENT)?,
            tracestate: carrier.remove(TRACESTATE).unwrap_or_default(),
        })
    }

    /// Reads a context from headers; `None` when there is none or it is malformed (a
    /// malformed one is ignored, as W3C Trace Context asks: the trace starts anew here).
    pub fn extract(headers: &dyn Extractor) -> Option<Self> {
        let traceparent = headers.get(TRACEPARENT)?.trim();
        let context = Self {
            traceparent: traceparent.to_owned(),
            tracestate: headers
                .get(TRACESTATE)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        context.is_valid().then_some(context)
    }

    /// Writes this context as headers.
    pub fn inject(&self, headers: &mut dyn Injector) {
        headers.set(TRACEPARENT, self.traceparent.clone());
        if !self.tracestate.is_empty() {
            headers.set(TRACESTATE, self.tracestate.clone());
        }
    }

    fn otel(&self) -> opentelemetry::Context {
        TraceContextPropagator::new().extract(self)
    }

    fn is_valid(&self) -> bool {
        self.otel().span().span_context().is_valid()
    }

    /// Makes `span` a child of this context. Call it before the span is first entered.
    pub fn adopt(&self, span: &Span) {
        if let Err(e) = span.set_parent(self.otel()) {
            tracing::debug!(error = %e, "cannot continue a trace");
        }
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.otel().span().span_context().trace_id().to_string()
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(&self.traceparent),
            TRACESTATE => Some(&self.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The trace id of `span` (32 hex digits), when it belongs to a trace.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id of the span the caller is in, or an empty string.
pub fn current_trace_id() -> String {
    trace_id(&Span::current()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_malformed_ones_are_ignored() {
        let context = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: "vendor=1".into(),
        };
        let mut headers = HashMap::new();
        context.inject(&mut headers);
        assert_eq!(TraceContext::extract(&headers), Some(context.clone()));
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");

        for bad in [
            "",
            "not a traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            let headers = HashMap::from([(TRACEPARENT.to_owned(), bad.to_owned())]);
            assert_eq!(TraceContext::extract(&headers), None, "{bad:?}");
        }
        assert_eq!(TraceContext::extract(&HashMap::new()), None);
    }

    #[test]
    fn without_a_tracing_layer_there_is_no_context() {
        assert_eq!(TraceContext::current(), None);
        assert_eq!(current_trace_id(), "");
    }
}
