//! Request count and latency per route and status, in the process's Prometheus registry.

use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use futures::future::BoxFuture;
use http::{Request, Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tower::{Layer, Service};

const LABELS: [&str; 3] = ["method", "route", "status"];

/// `http_server_requests_total` and `http_server_request_duration_seconds`, labelled by
/// method, route template (never the raw path: ids would explode the series) and status.
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetricsLayer {
    pub fn new(metrics: &kit::Metrics) -> Self {
        let requests = IntCounterVec::new(
            Opts::new("http_server_requests_total", "HTTP requests served."),
            &LABELS,
        )
        .expect("static metric definition is valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Time from request to response headers.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &LABELS,
        )
        .expect("static metric definition is valid");
        Self {
            requests: metrics.register(requests),
            duration: metrics.register(duration),
        }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    layer: HttpMetricsLayer,
}

impl<S, B, ResBody> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // Cheap clones (a standard method is inline, a matched path shared): no label text
        // is copied per request, and a made-up method is labelled `other`.
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let layer = self.layer.clone();
        let mut inner = crate::take_ready(&mut self.inner);
        Box::pin(async move {
            let result = inner.call(request).await;
            let status = result.as_ref().ok().map(|response| response.status());
            let labels = [
                method_label(&method),
                route.as_ref().map_or("unmatched", MatchedPath::as_str),
                status.as_ref().map_or("error", http::StatusCode::as_str),
            ];
            layer.requests.with_label_values(&labels).inc();
            layer
                .duration
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The method as a label; any method outside HTTP's standard ones is `other`, or each
/// made-up method a client sends would add a series (and a histogram) for good.
fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    /// The metrics after `requests` (method, path) went through `router` under the layer.
    async fn after_requests(router: Router, requests: &[(&str, &str)]) -> String {
        let metrics = kit::Metrics::new("test");
        let router = router.layer(HttpMetricsLayer::new(&metrics));
        for (method, uri) in requests {
            let request = Request::builder()
                .method(*method)
                .uri(*uri)
                .body(axum::body::Body::empty())
                .expect("request");
            router.clone().oneshot(request).await.expect("answer");
        }
        metrics.render()
    }

    #[tokio::test]
    async fn counts_by_route_template_and_status() {
        let router = Router::new().route("/products/{id}", get(|| async { "ok" }));
        let text = after_requests(router, &[("GET", "/products/a"), ("GET", "/products/b")]).await;
        assert!(
            text.contains(
                r#"http_server_requests_total{method="GET",route="/products/{id}",status="200",service="test"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("http_server_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn made_up_methods_share_one_series() {
        let router = Router::new().route("/x", axum::routing::any(|| async { "ok" }));
        let text = after_requests(router, &[("X0", "/x"), ("X1", "/x"), ("FROB", "/x")]).await;
        assert!(
            text.contains(
                r#"http_server_requests_total{method="other",route="/x",status="200",service="test"} 3"#
            ),
            "{text}"
        );
        assert!(!text.contains("X0"), "{text}");
    }
}
