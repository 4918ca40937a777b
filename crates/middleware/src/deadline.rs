//! Server-side deadlines: the budget a request arrives with (the deadline `mesh::rpc::serve`
//! makes current, a `Deadline` extension, or the `mesh-timeout-ms` header over HTTP) capped
//! by a default, enforced with a 504, and made current for the handler so nested mesh calls
//! get the remaining budget.
//!
//! Over the mesh, `serve` times the request too, as a backstop for services without this
//! layer. Both timers are set on the same instant and `serve` polls the service first, so
//! this layer's 504 is the one that comes back, through the layers above it (metrics,
//! tracing), which a request dropped by `serve` would never reach.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use mesh::Deadline;
use mesh::rpc::TIMEOUT_HEADER;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    default_budget: Duration,
}

impl DeadlineLayer {
    /// Requests without a deadline get `default_budget`; requests with one keep the
    /// tighter of the two.
    pub fn new(default_budget: Duration) -> Self {
        Self { default_budget }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            default_budget: self.default_budget,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    default_budget: Duration,
}

/// The deadline a request arrived with, if any.
pub fn incoming_deadline<B>(request: &Request<B>) -> Option<Deadline> {
    let from_header = request
        .headers()
        .get(TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Deadline::after(Duration::from_millis(ms)));
    Deadline::earliest(request.extensions().get::<Deadline>().copied(), from_header)
}

impl<S, B, ResBody> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let cap = Deadline::after(self.default_budget);
        // The transport's deadline is an incoming one like the others.
        let incoming = Deadline::earliest(incoming_deadline(&request), Deadline::current());
        let deadline = Deadline::earliest(incoming, Some(cap)).unwrap_or(cap);
        request.extensions_mut().insert(deadline);
        let mut inner = crate::take_ready(&mut self.inner);
        Box::pin(async move {
            if deadline.remaining().is_zero() {
                return Ok(deadline_exceeded());
            }
            // On the deadline's own instant, not now + remaining: the same instant as the
            // transport's timer (see the module docs).
            match tokio::time::timeout_at(deadline.0, deadline.scope(inner.call(request))).await {
                Ok(result) => result,
                Err(_) => Ok(deadline_exceeded()),
            }
        })
    }
}

fn deadline_exceeded<B: From<Bytes>>() -> Response<B> {
    kit::error::error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline_exceeded",
        "the request's deadline passed before it was answered",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn slow(
        delay: Duration,
    ) -> impl Service<
        Request<()>,
        Response = Response<Bytes>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(move |_request: Request<()>| async move {
            // What a nested mesh call would see.
            let seen = Deadline::current().map(|d| d.remaining());
            tokio::time::sleep(delay).await;
            Ok(Response::new(Bytes::from(format!("{seen:?}"))))
        })
    }

    #[tokio::test]
    async fn answers_504_when_the_budget_runs_out() {
        let service =
            DeadlineLayer::new(Duration::from_millis(50)).layer(slow(Duration::from_secs(5)));
        let started = std::time::Instant::now();
        let response = service.oneshot(Request::new(())).await.expect("answer");
        assert_eq!(response.status(), 504);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_tighter_incoming_budget_wins_and_is_current_for_the_handler() {
        let service = DeadlineLayer::new(Duration::from_secs(10)).layer(slow(Duration::ZERO));
        let request = Request::builder()
            .header(TIMEOUT_HEADER, "300")
            .body(())
            .expect("request");
        let response = service.oneshot(request).await.expect("answer");
        assert_eq!(response.status(), 200);
        let seen = String::from_utf8(response.into_body().to_vec()).expect("text");
        let millis: u64 = seen
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .trim_end_matches("ms")
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(millis <= 300, "handler saw {seen}");
    }

    #[tokio::test]
    async fn the_transport_s_current_deadline_is_enforced_here() {
        let service =
            DeadlineLayer::new(Duration::from_secs(10)).layer(slow(Duration::from_secs(5)));
        let started = std::time::Instant::now();
        let response = Deadline::after(Duration::from_millis(20))
            .scope(service.oneshot(Request::new(())))
            .await
            .expect("answer");
        assert_eq!(response.status(), 504);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_transport_deadline_looser_than_the_default_is_capped() {
        let service =
            DeadlineLayer::new(Duration::from_millis(50)).layer(slow(Duration::from_secs(5)));
        let response = Deadline::after(Duration::from_secs(60))
            .scope(service.oneshot(Request::new(())))
            .await
            .expect("answer");
        assert_eq!(response.status(), 504);
    }

    #[tokio::test]
    async fn a_looser_incoming_budget_is_capped_by_the_default() {
        let service =
            DeadlineLayer::new(Duration::from_millis(50)).layer(slow(Duration::from_secs(5)));
        let request = Request::builder()
            .header(TIMEOUT_HEADER, "60000")
            .body(())
            .expect("request");
        let response = service.oneshot(request).await.expect("answer");
        assert_eq!(response.status(), 504);
    }
}
