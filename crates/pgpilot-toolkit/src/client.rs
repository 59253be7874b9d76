//! The Kubernetes client a controller gets: the manager's configuration, with every request
//! counted by verb under the controller's name (`pgpilot_api_requests_total`), so the
//! requests a reconcile costs are measured, not guessed.

use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::ControllerMetrics;

/// A client for `config` that counts its requests in `metrics`.
pub fn counted(
    config: kube::Config,
    metrics: ControllerMetrics,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&Count(metrics))
        .build())
}

struct Count(ControllerMetrics);

impl<S> Layer<S> for Count {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: ControllerMetrics,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // kube tags each request with its verb; anything else by its HTTP method.
        match request.extensions().get::<&'static str>() {
            Some(verb) => self.metrics.requested(verb),
            None => self
                .metrics
                .requested(&request.method().as_str().to_ascii_lowercase()),
        }
        self.inner.call(request)
    }
}
