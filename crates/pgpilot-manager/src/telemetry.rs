//! Logs (JSON or text, `RUST_LOG` filter) and OpenTelemetry traces.
//!
//! The OpenTelemetry layer is always installed so every reconcile span has a trace id that
//! logs can carry; spans leave the process only when an OTLP endpoint is configured. Each
//! layer has its own filter: `RUST_LOG` decides what is logged, and a trace holds pgpilot's
//! spans down to `debug` (one per Kubernetes API, Patroni, SQL, pgBackRest and S3 call)
//! whatever the log level, other crates' down to `info`.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;

/// Keeps the tracer provider alive; flushes spans on drop.
pub struct Telemetry {
    provider: SdkTracerProvider,
    pub exporting: bool,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("pgpilot-manager: flushing traces failed: {e}");
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs the global subscriber. Call once, inside the Tokio runtime.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "pgpilot-manager".into()),
            )
            .build(),
    );
    let exporting = otlp_configured();
    if exporting {
        // The builder reads OTEL_EXPORTER_OTLP_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT}.
        let exporter = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/protobuf") | Ok("http/json") => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build(),
            Ok("grpc") | Err(_) => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build(),
            Ok(other) => anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use grpc or http/protobuf"
            ),
        }
        .context("building the OTLP span exporter")?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("pgpilot");
    opentelemetry::global::set_tracer_provider(provider.clone());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        // Colours only on a terminal: a log file or a pod log keeps plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    };
    // Without an exporter the spans only carry the trace id into logs: the call spans would
    // cost without being seen.
    let call_spans = if exporting { Level::DEBUG } else { Level::INFO };
    let traced = Targets::new()
        .with_default(Level::INFO)
        .with_target("pgpilot", call_spans);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(traced),
        )
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Telemetry {
        provider,
        exporting,
    })
}
