//! Logs and traces. Logs go to standard error (plain or JSON) with the request id of
//! the span they are in, and the trace id once traces are on. Traces are OpenTelemetry,
//! exported over OTLP (gRPC) only when the standard variables ask for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true`
//! or `OTEL_TRACES_EXPORTER=none` keep them off): otherwise nothing is exported and
//! nothing connects anywhere.
//!
//! One payload is one trace: the W3C `traceparent` of the client's request (HTTP header
//! or gRPC metadata) is the parent of the `request` span; the messages the gateway
//! produces carry the `traceparent` of the span that produced them (Kafka headers);
//! a verdict's `verdict` span takes its parent from the validation message's header
//! or the gRPC verdict's metadata, so the validator's hop joins the same trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What has to be flushed before the process exits.
pub struct Telemetry(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.0.is_some()
    }

    /// Sends the spans still buffered; call before the process exits.
    pub fn shutdown(self) {
        if let Some(provider) = self.0 {
            if let Err(e) = provider.shutdown() {
                eprintln!("upload-gateway: flushing traces at exit: {e}");
            }
        }
    }
}

/// Whether the standard OpenTelemetry variables ask for traces.
fn wanted() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let is = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.trim().eq_ignore_ascii_case(v));
    !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Sets up logging (and traces when asked for). Call inside the tokio runtime: the
/// OTLP exporter's gRPC client lives on it.
pub fn init(json: bool, color: bool) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<_> + Send + Sync> = if json {
        fmt.json().with_ansi(false).boxed()
    } else {
        fmt.with_ansi(color).boxed()
    };
    let (otel, provider) = if wanted() {
        use opentelemetry::trace::TracerProvider as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {e}"))?;
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "upload-gateway".into());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("upload-gateway");
        (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
    } else {
        (None, None)
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(Telemetry(provider))
}

/// Makes `span`'s parent the W3C trace context in `headers` (HTTP headers, gRPC
/// metadata), when they carry one.
pub fn adopt_headers(span: &Span, headers: &http::HeaderMap) {
    let value = headers.get("traceparent").and_then(|v| v.to_str().ok());
    adopt(span, value, headers.get("tracestate").and_then(|v| v.to_str().ok()));
}

/// Makes `span`'s parent the context of a `traceparent` (and `tracestate`) value, when
/// it is a valid one.
pub fn adopt(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(parent) = traceparent else { return };
    let mut carrier = HashMap::from([("traceparent".to_string(), parent.to_string())]);
    if let Some(state) = tracestate {
        carrier.insert("tracestate".into(), state.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` of `span`, when it is part of a trace (traces on).
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id of `span`, for log lines and answers a user can quote.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
