//! Each layer's decision checked against a `tower-test` mock upstream: what reaches the
//! upstream, how often, and what the caller gets back.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use middleware::breaker::{BreakerConfig, CircuitBreakerLayer};
use middleware::deadline::DeadlineLayer;
use middleware::retry::{RetryPolicy, RetrySettings};
use tower::Layer;
use tower_test::mock;

type Mock = mock::Mock<Request<Bytes>, Response<Bytes>>;
type Handle = mock::Handle<Request<Bytes>, Response<Bytes>>;

fn request(method: Method) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri("/x")
        .body(Bytes::new())
        .expect("request")
}

fn status(code: u16) -> Response<Bytes> {
    Response::builder()
        .status(code)
        .body(Bytes::new())
        .expect("response")
}

/// Answers the next request the upstream receives with `code`.
async fn answer(handle: &mut Handle, code: u16) -> Request<Bytes> {
    let (request, respond) = handle
        .next_request()
        .await
        .expect("a request reached the upstream");
    respond.send_response(status(code));
    request
}

/// Nothing is waiting at the upstream.
fn nothing_reached(handle: &mut Handle) -> bool {
    handle.poll_request().is_pending()
}

async fn call<S>(service: &mut S, request: Request<Bytes>) -> Response<Bytes>
where
    S: tower::Service<Request<Bytes>, Response = Response<Bytes>>,
    S::Error: std::fmt::Debug,
{
    futures::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .expect("ready");
    service.call(request).await.expect("answer")
}

#[tokio::test]
async fn an_open_breaker_answers_without_reaching_the_upstream() {
    let (upstream, mut handle): (Mock, Handle) = mock::pair();
    let mut service = CircuitBreakerLayer::new(
        "mocked",
        BreakerConfig {
            window: 4,
            min_calls: 2,
            failure_rate: 0.5,
            open_for: Duration::from_secs(60),
            half_open_probes: 1,
        },
        None,
    )
    .layer(upstream);

    for _ in 0..2 {
        let pending = tokio::spawn({
            let mut service = service.clone();
            async move { call(&mut service, request(Method::GET)).await }
        });
        answer(&mut handle, 503).await;
        assert_eq!(pending.await.expect("joined").status(), 503);
    }
    let rejected = call(&mut service, request(Method::GET)).await;
    assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        rejected.headers()[mesh::rpc::MESH_ERROR_HEADER],
        "circuit_open"
    );
    assert!(
        nothing_reached(&mut handle),
        "the open circuit called the upstream"
    );

    // A gRPC call is refused in gRPC terms: UNAVAILABLE, marked so callers do not retry it.
    let mut grpc = request(Method::POST);
    grpc.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let rejected = call(&mut service, grpc).await;
    assert_eq!(
        rejected.status(),
        StatusCode::OK,
        "trailers-only gRPC answer"
    );
    assert_eq!(rejected.headers()["grpc-status"], "14");
    assert_eq!(
        rejected.headers()[mesh::rpc::MESH_ERROR_HEADER],
        "circuit_open"
    );
    let status = tonic::Status::from_header_map(rejected.headers()).expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("mocked is failing"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(mesh::rpc::MESH_ERROR_HEADER)
            .map(|v| v.to_str().ok()),
        Some(Some("circuit_open")),
        "the marker reaches a tonic caller as metadata"
    );
    assert!(nothing_reached(&mut handle));
}

#[tokio::test]
async fn retry_sends_an_idempotent_request_again_but_never_a_post() {
    let settings = RetrySettings {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        ..RetrySettings::default()
    };
    let (upstream, mut handle): (Mock, Handle) = mock::pair();
    let service = RetryPolicy::new(settings.clone()).layer().layer(upstream);

    let get = tokio::spawn({
        let mut service = service.clone();
        async move { call(&mut service, request(Method::GET)).await }
    });
    answer(&mut handle, 504).await;
    let retried = answer(&mut handle, 200).await;
    assert_eq!(
        retried.method(),
        Method::GET,
        "the same request, sent again"
    );
    assert_eq!(get.await.expect("joined").status(), 200);

    let post = tokio::spawn({
        let mut service = service.clone();
        async move { call(&mut service, request(Method::POST)).await }
    });
    answer(&mut handle, 503).await;
    assert_eq!(post.await.expect("joined").status(), 503);
    assert!(nothing_reached(&mut handle), "a POST was retried");
}

#[tokio::test]
async fn a_deadline_cuts_a_slow_upstream_and_answers_504() {
    let (upstream, mut handle): (Mock, Handle) = mock::pair();
    let mut service = DeadlineLayer::new(Duration::from_millis(50)).layer(upstream);
    let pending = tokio::spawn(async move { call(&mut service, request(Method::GET)).await });
    // The upstream receives the request but never answers.
    let (_request, _never) = handle.next_request().await.expect("reached");
    let response = pending.await.expect("joined");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}
