//! Retries with exponential backoff, full jitter and a budget.
//!
//! Only idempotent requests, and only transient failures ([`crate::classify::is_transient`]).
//! The budget (tower's `TpsBudget`) lets retries add at most a fraction of the recent
//! traffic (20% by default), so an outage is not multiplied by the retry count.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use kit::backoff::Exponential;
use rand::Rng;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::classify::{is_idempotent, is_transient};

#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Fraction of requests that may be retries, over `budget_window`.
    pub retry_ratio: f32,
    /// Retries always allowed per second, so a quiet service can still retry.
    pub min_retries_per_second: u32,
    pub budget_window: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_millis(500),
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// A `tower::retry::Policy` for HTTP requests with cloneable bodies (`Full<Bytes>`, the
/// gateway's buffered bodies).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    settings: Arc<RetrySettings>,
    budget: Arc<TpsBudget>,
    attempt: u32,
}

impl RetryPolicy {
    pub fn new(settings: RetrySettings) -> Self {
        let budget = TpsBudget::new(
            settings.budget_window,
            settings.min_retries_per_second,
            settings.retry_ratio,
        );
        Self {
            settings: Arc::new(settings),
            budget: Arc::new(budget),
            attempt: 0,
        }
    }

    /// Retries `call` under the same rules (budget, backoff, at most `max_retries` more
    /// attempts) for calls that cannot go through the tower layer: tonic clients, whose
    /// request bodies cannot be cloned. The caller vouches that the call is idempotent
    /// (a stock reservation by id is) and says which errors are worth another attempt.
    pub async fn run<T, E, F, Fut>(&self, call: F, transient: impl Fn(&E) -> bool) -> Result<T, E>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.budget.deposit();
        let mut policy = self.clone();
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !transient(&error) {
                return Err(error);
            }
            let Some(delay) = policy.next_retry() else {
                return Err(error);
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// A `tower::retry::RetryLayer` using this policy.
    pub fn layer(self) -> tower::retry::RetryLayer<Self> {
        tower::retry::RetryLayer::new(self)
    }

    /// After a transient failure: the wait before another attempt, or `None` when the
    /// attempts or the budget are spent. Counts the attempt.
    fn next_retry(&mut self) -> Option<Duration> {
        if self.attempt >= self.settings.max_retries {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!("Retry budget exhausted; not retrying.");
            return None;
        }
        let delay = self.backoff();
        self.attempt += 1;
        tracing::debug!(attempt = self.attempt, ?delay, "Retrying.");
        Some(delay)
    }

    /// Full jitter: uniform in [0, min(max, base · 2^attempt)].
    fn backoff(&self) -> Duration {
        let cap = Exponential::new(self.settings.base_delay, self.settings.max_delay)
            .after(self.attempt.saturating_add(1));
        cap.mul_f64(rand::rng().random::<f64>())
    }
}

impl<B, ResBody, E> Policy<Request<B>, Response<ResBody>, E> for RetryPolicy
where
    B: Clone,
{
    type Future = BoxFuture<'static, ()>;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        // Only requests `clone_request` copied (idempotent ones) come here.
        let transient = match result {
            Ok(response) => is_transient(response),
            // Connection-level errors: the request may not have left.
            Err(_) => true,
        };
        if !transient {
            return None;
        }
        let _span = tracing::debug_span!("retry", uri = %request.uri()).entered();
        let delay = self.next_retry()?;
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    /// Called before every attempt. The copy is what a retry would send, so a request that
    /// is never retried (not idempotent) is not copied: tower then skips `retry` for it.
    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        if self.attempt == 0 {
            // Every original request earns budget, retried or not; retries spend it.
            self.budget.deposit();
        }
        if !is_idempotent(request.method()) {
            return None;
        }
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        if let Some(deadline) = request.extensions().get::<mesh::Deadline>() {
            clone.extensions_mut().insert(*deadline);
        }
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Method;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{ServiceBuilder, ServiceExt};

    fn fast() -> RetrySettings {
        RetrySettings {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetrySettings::default()
        }
    }

    /// An upstream that answers `statuses` in turn, then 200.
    fn upstream(
        statuses: Vec<u16>,
        calls: Arc<AtomicUsize>,
    ) -> impl tower::Service<
        Request<Bytes>,
        Response = Response<Bytes>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(move |_request: Request<Bytes>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let status = statuses.get(n).copied().unwrap_or(200);
            async move {
                Ok(Response::builder()
                    .status(status)
                    .body(Bytes::new())
                    .expect("response"))
            }
        })
    }

    fn request(method: Method) -> Request<Bytes> {
        Request::builder()
            .method(method)
            .uri("/x")
            .body(Bytes::new())
            .expect("request")
    }

    #[tokio::test]
    async fn a_flaky_idempotent_call_is_recovered() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ServiceBuilder::new()
            .layer(RetryPolicy::new(fast()).layer())
            .service(upstream(vec![503, 504], calls.clone()));
        let response = service.oneshot(request(Method::GET)).await.expect("answer");
        assert_eq!(response.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn post_is_never_retried() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ServiceBuilder::new()
            .layer(RetryPolicy::new(fast()).layer())
            .service(upstream(vec![503], calls.clone()));
        let response = service
            .oneshot(request(Method::POST))
            .await
            .expect("answer");
        assert_eq!(response.status(), 503);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_idempotent_requests_are_copied_for_a_retry() {
        let mut policy = RetryPolicy::new(fast());
        let copy = |policy: &mut RetryPolicy, method: Method| {
            Policy::<Request<Bytes>, Response<Bytes>, ()>::clone_request(policy, &request(method))
        };
        assert!(copy(&mut policy, Method::POST).is_none());
        assert!(copy(&mut policy, Method::PATCH).is_none());
        let get = copy(&mut policy, Method::GET).expect("a GET may be retried");
        assert_eq!(get.method(), Method::GET);
        assert_eq!(get.uri(), "/x");
    }

    #[tokio::test]
    async fn requests_that_are_never_retried_still_earn_budget() {
        let settings = RetrySettings {
            max_retries: 1,
            min_retries_per_second: 0,
            ..fast()
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ServiceBuilder::new()
            .layer(RetryPolicy::new(settings).layer())
            .service(upstream(vec![503; 10_000], calls.clone()));
        let send = |method: Method| service.clone().oneshot(request(method));
        for _ in 0..100 {
            send(Method::POST).await.expect("answer");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 100, "no POST retried");
        for _ in 0..10 {
            send(Method::GET).await.expect("answer");
        }
        // 110 requests at 20% fund 22 retries; 10 GETs alone would fund 2.
        let retries = calls.load(Ordering::SeqCst) - 110;
        assert_eq!(
            retries, 10,
            "every failed GET retried once on the POSTs' budget"
        );
    }

    #[tokio::test]
    async fn client_errors_and_500_are_not_retried() {
        for status in [400, 404, 409, 422, 500] {
            let calls = Arc::new(AtomicUsize::new(0));
            let service = ServiceBuilder::new()
                .layer(RetryPolicy::new(fast()).layer())
                .service(upstream(vec![status], calls.clone()));
            let response = service.oneshot(request(Method::GET)).await.expect("answer");
            assert_eq!(response.status(), status);
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{status}");
        }
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ServiceBuilder::new()
            .layer(RetryPolicy::new(fast()).layer())
            .service(upstream(vec![503; 10], calls.clone()));
        let response = service.oneshot(request(Method::GET)).await.expect("answer");
        assert_eq!(response.status(), 503);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "1 attempt + 2 retries");
    }

    #[tokio::test]
    async fn the_budget_caps_retries_at_a_fraction_of_traffic() {
        let settings = RetrySettings {
            max_retries: 1,
            min_retries_per_second: 0,
            ..fast()
        };
        let policy = RetryPolicy::new(settings);
        let calls = Arc::new(AtomicUsize::new(0));
        // Everything fails: without a budget 1000 requests would make 2000 calls.
        let service = ServiceBuilder::new()
            .layer(policy.layer())
            .service(upstream(vec![503; 10_000], calls.clone()));
        for _ in 0..1000 {
            let response = service
                .clone()
                .oneshot(request(Method::GET))
                .await
                .expect("answer");
            assert_eq!(response.status(), 503);
        }
        let retries = calls.load(Ordering::SeqCst) - 1000;
        assert!(retries <= 210, "{retries} retries for 1000 requests");
        assert!(
            retries >= 150,
            "the budget should allow about 20%: {retries}"
        );
    }

    #[tokio::test]
    async fn run_retries_transient_errors_only_and_at_most_max_retries() {
        let policy = RetryPolicy::new(fast());
        let calls = AtomicUsize::new(0);
        let always_down = policy
            .run(
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>("unavailable") }
                },
                |e: &&str| *e == "unavailable",
            )
            .await;
        assert_eq!(always_down, Err("unavailable"));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "1 attempt + 2 retries");

        let calls = AtomicUsize::new(0);
        let refused = policy
            .run(
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>("insufficient stock") }
                },
                |e: &&str| *e == "unavailable",
            )
            .await;
        assert_eq!(refused, Err("insufficient stock"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let recovered = policy
            .run(
                || {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move { if n == 0 { Err("unavailable") } else { Ok(n) } }
                },
                |e: &&str| *e == "unavailable",
            )
            .await;
        assert_eq!(recovered, Ok(1));
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        let mut policy = RetryPolicy::new(RetrySettings::default());
        for attempt in 0..20 {
            policy.attempt = attempt;
            assert!(policy.backoff() <= Duration::from_millis(500));
        }
    }
}
