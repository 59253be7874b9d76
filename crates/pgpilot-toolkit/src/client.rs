//! The Kubernetes client a controller gets: the manager's configuration, with every request
//! counted by verb under the controller's name (`pgpilot_api_requests_total`), so the
//! requests a reconcile costs are measured, not guessed; and, when the manager sets one, a
//! request rate all controllers share (`--kube-api-qps`, `--kube-api-burst`), so a burst of
//! reconciles (a restart, a thousand clusters created at once) queues in the manager instead
//! of crowding the API server.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use governor::{DefaultDirectRateLimiter, Quota};
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::ControllerMetrics;

/// The requests per second every controller's client draws from together, and how many may
/// go at once after a quiet spell (a token bucket). Cheap to clone: one bucket.
#[derive(Clone, Debug)]
pub struct RateLimit(Arc<DefaultDirectRateLimiter>);

impl RateLimit {
    /// `qps` on average, `burst` at once (at least `qps`).
    pub fn new(qps: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(qps).allow_burst(burst.max(qps));
        Self(Arc::new(DefaultDirectRateLimiter::direct(quota)))
    }
}

/// A client for `config` that counts its requests in `metrics` and, with `limit`, waits for
/// its turn before each.
pub fn counted(
    config: kube::Config,
    metrics: ControllerMetrics,
    limit: Option<RateLimit>,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&Count(metrics))
        .with_layer(&Throttle(limit))
        .build())
}

struct Throttle(Option<RateLimit>);

impl<S> Layer<S> for Throttle {
    type Service = Throttled<S>;

    fn layer(&self, inner: S) -> Throttled<S> {
        Throttled {
            inner,
            limit: self.0.clone(),
            wait: None,
            admitted: false,
        }
    }
}

/// Waits in `poll_ready` until the bucket has a token for the next request (kube's client
/// queues callers in front of it), then asks the inner service.
pub struct Throttled<S> {
    inner: S,
    limit: Option<RateLimit>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    admitted: bool,
}

impl<S, B> Service<http::Request<B>> for Throttled<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(limit) = &self.limit
            && !self.admitted
        {
            let wait = self.wait.get_or_insert_with(|| {
                let limit = limit.0.clone();
                Box::pin(async move { limit.until_ready().await })
            });
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
            self.admitted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.admitted = false;
        self.inner.call(request)
    }
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{Ready, poll_fn, ready};
    use std::time::{Duration, Instant};

    use super::*;

    struct Answer;

    impl Service<http::Request<()>> for Answer {
        type Response = ();
        type Error = Infallible;
        type Future = Ready<Result<(), Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok(()))
        }
    }

    async fn send(s: &mut Throttled<Answer>, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            poll_fn(|cx| s.poll_ready(cx)).await.unwrap();
            s.call(http::Request::new(())).await.unwrap();
        }
        start.elapsed()
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_the_rate_and_two_clients_share_it() {
        // A burst below the rate is raised to it.
        let limit = RateLimit::new(nz(50), nz(2));
        let mut a = Throttle(Some(limit.clone())).layer(Answer);
        let mut b = Throttle(Some(limit)).layer(Answer);
        // The burst of 50 goes at once; 10 more at 50/s take at least 0.2 s, shared by both.
        send(&mut a, 50).await;
        let waited = send(&mut a, 5).await + send(&mut b, 5).await;
        assert!(waited >= Duration::from_millis(180), "{waited:?}");
    }

    #[tokio::test]
    async fn without_a_limit_nothing_waits_for_a_token() {
        let mut s = Throttle(None).layer(Answer);
        send(&mut s, 1000).await;
        assert!(s.wait.is_none() && !s.admitted);
    }
}
