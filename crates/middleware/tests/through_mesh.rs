//! The client-side policies around a real mesh `Channel` and a real NATS responder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Full;
use mesh::rpc::{Channel, MESH_ERROR_HEADER, ServeOptions, serve};
use middleware::DeadlineLayer;
use middleware::breaker::{BreakerConfig, BreakerState, CircuitBreakerLayer};
use middleware::retry::{RetryPolicy, RetrySettings};
use tower::{ServiceBuilder, ServiceExt};

async fn nats() -> async_nats::Client {
    async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS")
}

fn get_request(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(path)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn fast_retries() -> RetrySettings {
    RetrySettings {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..RetrySettings::default()
    }
}

#[tokio::test]
async fn a_flaky_upstream_is_recovered_by_retry() {
    let client = nats().await;
    let name = testkit::unique_name("flaky");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/flaky",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    (StatusCode::SERVICE_UNAVAILABLE, "warming up")
                } else {
                    (StatusCode::OK, "ready")
                }
            }
        }),
    );
    let _server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");
    let service = ServiceBuilder::new()
        .layer(RetryPolicy::new(fast_retries()).layer())
        .service(Channel::nats(client, &name));
    let response = service
        .oneshot(get_request("/flaky"))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_dead_upstream_opens_the_breaker_and_callers_fail_fast_until_it_returns() {
    let client = nats().await;
    let name = testkit::unique_name("dead");
    let metrics = kit::Metrics::new("breaker-test");
    let breaker = CircuitBreakerLayer::new(
        &name,
        BreakerConfig {
            window: 10,
            min_calls: 5,
            failure_rate: 0.5,
            open_for: Duration::from_millis(400),
            half_open_probes: 1,
        },
        Some(&metrics),
    );
    let service = ServiceBuilder::new()
        .layer(RetryPolicy::new(fast_retries()).layer())
        .layer(breaker.clone())
        .service(Channel::nats(client.clone(), &name));

    // Nobody serves `name`: every call is a 503 from the mesh, and retries add attempts
    // the breaker counts too.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = service
            .clone()
            .oneshot(get_request("/x"))
            .await
            .expect("answer");
        statuses.push(response.status());
    }
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(
        metrics.render().contains(&format!(
            "circuit_breaker_state{{upstream=\"{name}\",service=\"breaker-test\"}} 2"
        )),
        "{}",
        metrics.render()
    );

    // Open: answered at once, without touching NATS, and not retried.
    let started = Instant::now();
    let response = service
        .clone()
        .oneshot(get_request("/x"))
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[MESH_ERROR_HEADER], "circuit_open");
    assert!(response.headers().contains_key(http::header::RETRY_AFTER));
    assert!(started.elapsed() < Duration::from_millis(50));

    // The upstream comes back; after the open period a probe closes the circuit.
    let router = Router::new().route("/x", get(|| async { "back" }));
    let _server = serve(client, &name, router, ServeOptions::default())
        .await
        .expect("serve");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let response = service
        .clone()
        .oneshot(get_request("/x"))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_deadline_is_honoured_end_to_end() {
    let client = nats().await;
    let name = testkit::unique_name("deadline");
    let finished = Arc::new(AtomicUsize::new(0));
    let flag = finished.clone();
    // The upstream enforces the deadline it receives as well.
    let router = Router::new()
        .route(
            "/slow",
            get(move || {
                let flag = flag.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    flag.fetch_add(1, Ordering::SeqCst);
                    "late"
                }
            }),
        )
        .layer(DeadlineLayer::new(Duration::from_secs(30)));
    let _server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");

    // The edge gives the whole request 250 ms; the channel inherits what is left.
    let edge = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_millis(250)))
        .service(Channel::nats(client, &name));
    let started = Instant::now();
    let response = edge.oneshot(get_request("/slow")).await.expect("answer");
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the upstream kept working past the deadline"
    );
}

#[tokio::test]
async fn a_deadline_passing_in_a_hosted_service_is_answered_through_its_layers() {
    // Over the mesh, `serve` times the request and so does the service's DeadlineLayer, on
    // the same instant. The layer's 504 must be the one the service sends: a request `serve`
    // dropped would never reach the metrics and trace layers above it. (The caller, whose
    // own timer started first, has usually answered itself by then.)
    let client = nats().await;
    let name = testkit::unique_name("hosted_deadline");
    let metrics = kit::Metrics::new(&name);
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "late"
        }),
    );
    let router = middleware::host::Host::standard_layers(router, &metrics);
    let _server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");

    let channel = Channel::nats(client, &name).with_timeout(Duration::from_millis(100));
    for _ in 0..5 {
        let response = channel
            .clone()
            .oneshot(get_request("/slow"))
            .await
            .expect("answer");
        assert_eq!(response.status(), 504);
    }
    let counted_504s = || {
        metrics
            .render()
            .lines()
            .find(|line| {
                line.starts_with("http_server_requests_total{")
                    && line.contains(r#"route="/slow",status="504""#)
            })
            .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while counted_504s() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted_504s(), 5, "{}", metrics.render());
}
