//! The root span of a reconcile. Its `trace_id` field joins logs and traces: every log line
//! emitted inside carries it, and the OTLP exporter (configured by the manager) sends the
//! span with the same id.

use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Opens the span of one reconcile of `namespace/name` by `controller`.
pub fn reconcile_span(
    controller: &str,
    namespace: Option<&str>,
    name: &str,
    generation: Option<i64>,
) -> Span {
    let span = tracing::info_span!(
        "reconcile",
        controller,
        namespace = namespace.unwrap_or(""),
        name,
        generation = generation.unwrap_or_default(),
        trace_id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    record_trace_id(&span);
    span
}

/// Records the OpenTelemetry trace id of `span` in its `trace_id` field.
pub fn record_trace_id(span: &Span) {
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}
