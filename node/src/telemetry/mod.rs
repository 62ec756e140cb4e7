//! What a node tells its operators besides status messages: logs and traces.
//!
//! - **Logs** go to stderr, readable text by default or one JSON object a line
//!   ([`LogFormat::Json`], [`json`]); lines written inside a sync carry the site code, the
//!   sync id and the trace id.
//! - **Traces** are OpenTelemetry spans, through `tracing-opentelemetry`. They are exported
//!   over OTLP (gRPC) only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; the exporter honours the other standard
//!   `OTEL_*` variables (headers, timeout, compression) and the SDK the sampler ones
//!   (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`). Without them no span leaves the
//!   process, but trace ids still exist, travel between nodes and appear in logs and status
//!   messages, so a node that does not export still continues the trace of one that does.
//! - [`context`]: the W3C trace context as the domain keeps it (in the outbox, with a
//!   queued sync), and its capture from and attachment to spans.

pub mod context;
mod json;
mod text;

use std::str::FromStr;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use context::TraceContext;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people: one line per event with its spans' fields (colours on a terminal).
    #[default]
    Text,
    /// For log shippers: one JSON object a line, with `timestamp`, `level`, `target`,
    /// `message`, `site`, the fields of the event and of the spans it is in (`sync_id`),
    /// and `trace_id` / `span_id` inside a span.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}: use `text` (the default) or `json`"
            )),
        }
    }
}

/// Who is telling: the resource attributes every span carries.
#[derive(Debug, Clone)]
pub struct Source {
    /// The site code: `service.instance.id` and `sitesync.site`.
    pub site: String,
    /// `site` or `internet`: `sitesync.role`.
    pub role: String,
}

/// The service name every node's spans carry.
pub const SERVICE_NAME: &str = "sitesync-node";

/// The instrumentation scope of the node's spans.
const SCOPE: &str = "sitesync-node";

/// How long shutting down waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot start the OTLP trace exporter ({0}); check OTEL_EXPORTER_OTLP_ENDPOINT")]
    Exporter(String),
    #[error("logging is already set up in this process")]
    AlreadySet,
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports what is still buffered and stops the exporter; blocks up to a few seconds.
    pub fn shutdown(self) {
        if self.exporting
            && let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            eprintln!("sitesync-node: the last spans could not be exported: {e}");
        }
    }
}

/// Whether the standard variables ask for traces to be exported.
pub fn export_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs logging and tracing for the process: `RUST_LOG` filters (default `info`), lines
/// go to stderr in `format`, spans to the OTLP exporter when [`export_requested`]. Must run
/// on a tokio runtime (the exporter's gRPC client needs it).
pub fn init(format: LogFormat, source: &Source) -> Result<Telemetry, TelemetryError> {
    let exporting = export_requested();
    let mut builder = SdkTracerProvider::builder().with_resource(resource(source));
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    // Spans exist whatever `RUST_LOG` lets through to the log: trace ids must travel, and
    // appear in status messages, even on a node that logs only warnings.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_error_records_to_exceptions(true)
        .with_filter(LevelFilter::INFO);
    // Lines as `RUST_LOG` says; the spans around them always, so a warning inside a sync
    // names the sync and its trace however little is logged.
    let logged = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .or(
                filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO)
                    // Without the hint the subscriber's level is unknown and every `log` record of
                    // the dependencies (sled writes several per operation) would be built and
                    // dispatched only to be dropped.
                    .with_max_level_hint(Level::INFO),
            )
    };
    let registry = tracing_subscriber::registry().with(otel);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .fmt_fields(text::TextFields)
                    // Colours only for a terminal: logs collected by a container engine or
                    // a journal stay plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(logged()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                json::SpanFields
                    .and_then(
                        tracing_subscriber::fmt::layer()
                            .with_writer(std::io::stderr)
                            .event_format(json::JsonLines::new(&source.site)),
                    )
                    .with_filter(logged()),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadySet)?;
    Ok(Telemetry {
        provider,
        exporting,
    })
}

/// The resource every span carries: the standard detectors (`OTEL_RESOURCE_ATTRIBUTES`)
/// first, then the node's own attributes, which win.
fn resource(source: &Source) -> Resource {
    Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attributes([
            KeyValue::new("service.instance.id", source.site.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("sitesync.site", source.site.clone()),
            KeyValue::new("sitesync.role", source.role.clone()),
        ])
        .build()
}
