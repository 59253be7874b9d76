//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Whether the manager is ready to serve: set once the API server answered.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics: {e}"),
        ),
    }
}

async fn readyz(State(ready): State<Readiness>) -> impl IntoResponse {
    if ready.get() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the Kubernetes API",
        )
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))
}

/// Binds both listeners (so a busy port fails start-up) and serves until `shutdown`.
pub async fn serve(
    metrics_addr: SocketAddr,
    probes_addr: SocketAddr,
    registry: Arc<Registry>,
    ready: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    let metrics_app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry);
    let probes_app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ready);
    let metrics_listener = bind(metrics_addr, "metrics").await?;
    let probes_listener = bind(probes_addr, "health probe").await?;
    // The bound addresses, not the flags: with port 0 the kernel picks one.
    tracing::info!(
        metrics = %metrics_listener.local_addr()?,
        probes = %probes_listener.local_addr()?,
        "serving metrics and health probes"
    );
    Ok(async move {
        let s1 = shutdown.clone();
        let s2 = shutdown.clone();
        let m = axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(async move { s1.cancelled().await });
        let p = axum::serve(probes_listener, probes_app)
            .with_graceful_shutdown(async move { s2.cancelled().await });
        tokio::try_join!(async { m.await.context("metrics server") }, async {
            p.await.context("health probe server")
        })?;
        Ok(())
    })
}
