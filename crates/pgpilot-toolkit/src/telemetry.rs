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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_inside_a_reconcile_carry_its_trace_id() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let span = reconcile_span("cluster", Some("ns"), "db", Some(3));
            let _enter = span.enter();
            tracing::info!("applied children");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let span = &line["span"];
        assert_eq!(span["name"], "reconcile");
        assert_eq!(span["controller"], "cluster");
        assert_eq!(span["generation"], 3);
        let trace_id = span["trace_id"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "trace_id missing from {line}");
        assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
