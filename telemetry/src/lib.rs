//! Logs and traces for every Cogo binary.
//!
//! Logs go to stdout as text or JSON lines, filtered by `RUST_LOG`. Traces are off unless an
//! OTLP endpoint is configured with the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); then the spans named [`TARGET`] are sent over
//! OTLP/HTTP (protobuf) in batches, with the other standard variables honoured
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`, ...).
//!
//! A trace crosses processes as a W3C `traceparent` (see [`traceparent`] and [`follow`]): on the
//! broker's lease, on a sub-task's request, on a worker's job, in an AgentTask's annotation
//! [`cogo_api::task::TRACEPARENT_ANNOTATION`] and in a task row's `trace_parent`.

use std::collections::HashMap;

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    Layer as _,
    filter::{FilterExt as _, Targets},
    layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

/// The target of every span that is exported: `tracing::info_span!(target: "cogo::trace", ...)`.
/// Other spans and events are logged but never exported.
pub const TARGET: &str = "cogo::trace";

/// The environment variables that turn traces on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What [`init`] set up; flushes the spans still buffered when dropped, so keep it until the
/// process ends.
#[must_use = "dropping it stops the export of traces"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Bounded, so a collector that does not answer cannot hold up a stop.
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown_with_timeout(std::time::Duration::from_secs(2))
        {
            eprintln!("traces not all sent at exit: {e}");
        }
    }
}

/// The OTLP endpoint configured in the environment, if any.
fn configured_endpoint() -> Option<String> {
    ENDPOINT_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// Sets up logging, and tracing when an endpoint is configured, for the process `service`
/// (`OTEL_SERVICE_NAME` wins over it); `resource` adds attributes naming this instance (its pod,
/// its role). `default_filter` filters logs when `RUST_LOG` is not set. A bad trace
/// configuration (an endpoint that is no URL) is reported on stderr and leaves traces off: it
/// never stops the process.
pub fn init(
    service: &str,
    resource: &[(&str, String)],
    format: LogFormat,
    default_filter: &str,
) -> Telemetry {
    // The exporter's own chatter (every batch it sends) stays out unless asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default_filter},opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn,opentelemetry-otlp=warn"
        ))
    });
    let hint = tracing_subscriber::layer::Filter::<tracing_subscriber::Registry>::max_level_hint(&filter);
    let fmt = tracing_subscriber::fmt::layer();
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let provider = configured_endpoint().and_then(|endpoint| match provider(service, resource) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("traces are off: the OTLP exporter for {endpoint} could not be built: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("cogo"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
    });
    // Log lines do not carry the exported spans' fields: they say what they say already.
    let mut not_exported = tracing_subscriber::filter::filter_fn(|m| !(m.is_span() && m.target() == TARGET));
    if let Some(hint) = hint {
        not_exported = not_exported.with_max_level_hint(hint);
    }
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter.and(not_exported)))
        .with(otel)
        .init();
    Telemetry { provider }
}

/// The exporter's HTTP client: TLS with the ring provider and the system's roots. Built on a
/// thread of its own, as a blocking client must not be built or dropped on an async runtime.
fn http_client() -> Result<reqwest::blocking::Client, String> {
    std::thread::spawn(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the thread building the HTTP client panicked".to_string())?
}

fn provider(service: &str, resource: &[(&str, String)]) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http_client()?)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let mut r = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        r = r.with_service_name(service.to_string());
    }
    let r = r.with_attributes(
        resource
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| opentelemetry::KeyValue::new(k.to_string(), v.clone())),
    );
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(r.build())
        .build())
}

/// The W3C `traceparent` of `span`, to hand to the next process; None when `span` is not
/// exported (traces are off, or it was not sampled in).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a `traceparent` names (one handed over by another process).
/// Nothing happens when there is none or it is malformed: `span` then starts a trace of its own.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|t| cogo_api::task::is_traceparent(t)) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Spans exported to memory, for tests of what a component traces.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use opentelemetry::trace::TracerProvider as _;
    pub use opentelemetry::{
        Value,
        trace::{SpanId, Status},
    };
    pub use opentelemetry_sdk::trace::SpanData;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::{Layer as _, filter::Targets, layer::SubscriberExt as _};

    /// Runs `f` with the spans of [`super::TARGET`] exported to memory, on this thread only;
    /// returns what `f` returned and the spans that ended.
    pub fn with_exporter<T>(f: impl FnOnce() -> T) -> (T, Vec<SpanData>) {
        let capture = Capture::start();
        let out = f();
        (out, capture.spans())
    }

    /// Spans of [`super::TARGET`] exported to memory, on this thread, while it lives (an async
    /// test on a current-thread runtime: every task it spawns runs here).
    pub struct Capture {
        exporter: InMemorySpanExporter,
        provider: SdkTracerProvider,
        _guard: tracing::subscriber::DefaultGuard,
    }

    impl Capture {
        /// Starts capturing.
        pub fn start() -> Capture {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry().with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(Targets::new().with_target(super::TARGET, tracing::Level::INFO)),
            );
            Capture {
                exporter,
                provider,
                _guard: tracing::subscriber::set_default(subscriber),
            }
        }

        /// The spans that ended so far.
        pub fn spans(&self) -> Vec<SpanData> {
            let _ = self.provider.force_flush();
            self.exporter.get_finished_spans().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::with_exporter, *};

    #[test]
    fn a_followed_traceparent_makes_the_span_its_child() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (handed_on, spans) = with_exporter(|| {
            let span = tracing::info_span!(target: "cogo::trace", "cogo.task.handle");
            follow(&span, Some(parent));
            traceparent(&span)
        });
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.name, "cogo.task.handle");
        assert_eq!(
            s.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(s.parent_span_id.to_string(), "b7ad6b7169203331");
        // What it hands on names the same trace and itself as the parent.
        let handed_on = handed_on.expect("an exported span has a traceparent");
        assert_eq!(
            handed_on,
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                s.span_context.span_id()
            )
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_trace_of_its_own() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            let ((), spans) = with_exporter(|| {
                let span = tracing::info_span!(target: "cogo::trace", "cogo.task.handle");
                follow(&span, Some(bad));
            });
            assert_eq!(spans.len(), 1, "{bad:?}");
            assert_ne!(
                spans[0].span_context.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c",
                "{bad:?}"
            );
            assert_eq!(
                spans[0].parent_span_id,
                opentelemetry::trace::SpanId::INVALID,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn spans_of_other_targets_are_not_exported_and_have_no_traceparent() {
        let (tp, spans) = with_exporter(|| {
            let span = tracing::info_span!("some.other.span");
            traceparent(&span)
        });
        assert_eq!(tp, None);
        assert!(spans.is_empty());
    }

    #[test]
    fn without_an_exporter_nothing_is_handed_on() {
        let span = tracing::info_span!(target: "cogo::trace", "cogo.task.handle");
        assert_eq!(traceparent(&span), None);
    }
}
