//! The root span of a reconcile. Its `trace_id` field joins logs and traces: every log line
//! emitted inside carries it, and the OTLP exporter (configured by the manager) sends the
//! span with the same id. An object one reconcile creates for another controller carries the
//! creating span as a W3C `traceparent` annotation, and the reconciles of that object link to
//! it: a scheduled backup's trace leads back to the schedule's reconcile that made it.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Opens the span of one reconcile of `namespace/name` by `controller`. The runner records
/// its `result` (`success` or the error's metric label); a controller may record the `step`
/// it took.
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
        step = tracing::field::Empty,
        result = tracing::field::Empty,
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

/// The current span as a W3C `traceparent` (`00-<trace>-<span>-<flags>`), when it is traced.
pub fn traceparent() -> Option<String> {
    let context = Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span a `traceparent` names; `None` for anything else (version 00 only).
fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Links the current span to the one `traceparent` names (ignored when it is not one).
pub fn link_to(traceparent: &str) {
    if let Some(sc) = parse_traceparent(traceparent) {
        Span::current().add_link(sc);
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
    fn a_traceparent_names_the_current_span_and_links_back_to_it() {
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        let exporter = InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let parent = tracing::subscriber::with_default(subscriber, || {
            let creator = reconcile_span("schedule", Some("ns"), "nightly", Some(1));
            let parent = creator.in_scope(traceparent).expect("a traced span");
            drop(creator);
            let later = reconcile_span("backup", Some("ns"), "nightly-1", Some(1));
            later.in_scope(|| link_to(&parent));
            parent
        });
        assert!(parent.starts_with("00-") && parent.len() == 55, "{parent}");
        let spans = exporter.get_finished_spans().unwrap();
        let creator = spans
            .iter()
            .find(|s| s.attributes.iter().any(|a| a.value.as_str() == "schedule"))
            .unwrap();
        let later = spans
            .iter()
            .find(|s| s.attributes.iter().any(|a| a.value.as_str() == "backup"))
            .unwrap();
        assert_ne!(
            later.span_context.trace_id(),
            creator.span_context.trace_id(),
            "a trace of its own"
        );
        let links: Vec<_> = later.links.iter().map(|l| l.span_context.clone()).collect();
        assert_eq!(
            links,
            [creator.span_context.clone()].map(|sc| SpanContext::new(
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags(),
                true,
                TraceState::default()
            ))
        );
        assert!(parse_traceparent("01-abc").is_none());
        assert!(
            parse_traceparent(&format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16))).is_none(),
            "an invalid trace id"
        );
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

    proptest::proptest! {
        #[test]
        fn a_traceparent_reads_back_as_the_span_it_names(
            trace in 1u128..,
            span in 1u64..,
            flags in proptest::num::u8::ANY,
        ) {
            let text = format!("00-{trace:032x}-{span:016x}-{flags:02x}");
            let sc = parse_traceparent(&text).expect("a valid traceparent");
            proptest::prop_assert_eq!(sc.trace_id(), TraceId::from(trace));
            proptest::prop_assert_eq!(sc.span_id(), SpanId::from(span));
            proptest::prop_assert_eq!(sc.trace_flags().to_u8(), flags);
        }

        #[test]
        fn any_annotation_value_is_read_without_panicking(value in ".{0,80}") {
            let _ = parse_traceparent(&value);
        }
    }
}
