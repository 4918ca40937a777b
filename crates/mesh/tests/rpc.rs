//! HTTP and gRPC over the real NATS server, and the same clients over HTTP/2.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use bytes::Bytes;
use contracts::product::product_service_client::ProductServiceClient;
use contracts::product::product_service_server::{ProductService, ProductServiceServer};
use contracts::product::{
    CheckAvailabilityRequest, CheckAvailabilityResponse, GetProductRequest, Product,
    ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest, ReserveStockResponse,
};
use http_body_util::{BodyExt, Full};
use mesh::rpc::{Channel, MESH_ERROR_HEADER, MeshServer, ServeOptions, Transport, serve};
use tower::ServiceExt;

async fn nats() -> async_nats::Client {
    async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS")
}

/// A router that shows what it received.
fn echo_router(instance: &'static str) -> Router {
    Router::new()
        .route(
            "/echo/{word}",
            get(
                move |Path(word): Path<String>,
                      Query(query): Query<HashMap<String, String>>,
                      headers: HeaderMap| async move {
                    let mut out = HeaderMap::new();
                    for name in ["traceparent", "x-request-id"] {
                        if let Some(v) = headers.get(name) {
                            out.insert(name, v.clone());
                        }
                    }
                    out.insert("x-instance", instance.parse().expect("value"));
                    (
                        out,
                        axum::Json(serde_json::json!({"word": word, "query": query})),
                    )
                },
            ),
        )
        .route(
            "/items",
            post(|body: Bytes| async move { (StatusCode::CREATED, body) }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
}

fn request(method: &str, uri: &str, body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body.into()))
        .expect("request")
}

async fn body_json(response: http::Response<mesh::rpc::MeshBody>) -> serde_json::Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("json body")
}

#[tokio::test]
async fn an_axum_router_answers_over_nats_with_headers_status_and_body() {
    let client = nats().await;
    let name = testkit::unique_name("echo");
    let _server = serve(
        client.clone(),
        &name,
        echo_router("a"),
        ServeOptions::default(),
    )
    .await
    .expect("serve");
    let channel = Channel::nats(client, &name);

    let mut get = request("GET", "/echo/hello?lang=en&n=2", Bytes::new());
    get.headers_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("value"),
    );
    get.headers_mut()
        .insert("x-request-id", "req-123".parse().expect("value"));
    let response = channel.clone().oneshot(get).await.expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(response.headers()["x-request-id"], "req-123");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body_json(response).await;
    assert_eq!(body["word"], "hello");
    assert_eq!(body["query"]["lang"], "en");
    assert_eq!(body["query"]["n"], "2");

    let created = channel
        .clone()
        .oneshot(request("POST", "/items", "{\"a\":1}"))
        .await
        .expect("answer");
    assert_eq!(created.status(), 201);
    let bytes = created
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(bytes, Bytes::from_static(b"{\"a\":1}"));

    let teapot = channel
        .clone()
        .oneshot(request("GET", "/teapot", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(teapot.status(), 418);

    let missing = channel
        .oneshot(request("GET", "/nowhere", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(missing.status(), 404);
    assert!(!missing.headers().contains_key(MESH_ERROR_HEADER));
}

#[tokio::test]
async fn nobody_serving_the_subject_is_a_fast_503() {
    let channel = Channel::nats(nats().await, &testkit::unique_name("nobody"));
    let started = std::time::Instant::now();
    let response = channel
        .oneshot(request("GET", "/anything", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()[MESH_ERROR_HEADER],
        "upstream_unavailable"
    );
    // NATS reports "no responders" at once rather than waiting for the timeout.
    assert!(started.elapsed() < Duration::from_secs(2));
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "upstream_unavailable");
}

#[tokio::test]
async fn a_body_over_the_servers_limit_is_413_and_over_nats_max_payload_too() {
    let client = nats().await;
    let name = testkit::unique_name("small");
    let options = ServeOptions {
        max_body: 1024,
        ..ServeOptions::default()
    };
    let _server = serve(client.clone(), &name, echo_router("a"), options)
        .await
        .expect("serve");
    let channel = Channel::nats(client.clone(), &name);

    let fits = channel
        .clone()
        .oneshot(request("POST", "/items", vec![b'x'; 1024]))
        .await
        .expect("answer");
    assert_eq!(fits.status(), 201);

    let over_limit = channel
        .clone()
        .oneshot(request("POST", "/items", vec![b'x'; 1025]))
        .await
        .expect("answer");
    assert_eq!(over_limit.status(), 413);

    let max_payload = client.server_info().max_payload;
    let over_nats = channel
        .oneshot(request("POST", "/items", vec![b'x'; max_payload + 1]))
        .await
        .expect("answer");
    assert_eq!(over_nats.status(), 413);
    assert_eq!(over_nats.headers()[MESH_ERROR_HEADER], "payload_too_large");
}

/// An answer too large for one NATS message is a 502 that says so, marked so that retry
/// policies and breakers leave it alone (the same request gets the same answer).
#[tokio::test]
async fn an_http_answer_too_large_for_nats_is_a_502_marked_as_such() {
    let client = nats().await;
    let name = testkit::unique_name("large");
    let max_payload = client.server_info().max_payload;
    let router = Router::new()
        .route(
            "/large",
            get(move || async move { vec![b'x'; max_payload] }),
        )
        .route("/small", get(|| async { "small" }));
    let _server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");
    let channel = Channel::nats(client, &name);

    let large = channel
        .clone()
        .oneshot(request("GET", "/large", Vec::new()))
        .await
        .expect("answer");
    assert_eq!(large.status(), 502);
    assert_eq!(
        large.headers()[MESH_ERROR_HEADER],
        "upstream_response_too_large"
    );
    let body = body_json(large).await;
    assert_eq!(body["error"]["code"], "upstream_response_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not fit")),
        "{body}"
    );
    let small = channel
        .oneshot(request("GET", "/small", Vec::new()))
        .await
        .expect("answer");
    assert_eq!(small.status(), 200, "the endpoint still answers");
}

#[tokio::test]
async fn past_the_deadline_the_caller_gets_504_and_the_server_stops_the_work() {
    let client = nats().await;
    let name = testkit::unique_name("slow");
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let router = Router::new().route(
        "/slow",
        get(move || {
            let flag = flag.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                flag.store(true, Ordering::SeqCst);
                "done"
            }
        }),
    );
    let _server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");
    let channel = Channel::nats(client, &name).with_timeout(Duration::from_millis(200));

    let response = channel
        .clone()
        .oneshot(request("GET", "/slow", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()[MESH_ERROR_HEADER], "upstream_timeout");

    // The budget travelled with the request: the server dropped the handler at 200 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler ran past its deadline"
    );

    // A deadline already in the request's extensions narrows the channel's timeout.
    let mut with_deadline = request("GET", "/slow", Bytes::new());
    with_deadline
        .extensions_mut()
        .insert(mesh::Deadline::after(Duration::from_millis(50)));
    let started = std::time::Instant::now();
    let response = channel
        .with_timeout(Duration::from_secs(5))
        .oneshot(with_deadline)
        .await
        .expect("answer");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(600));
}

#[tokio::test]
async fn two_instances_share_the_load_through_the_queue_group() {
    let client = nats().await;
    let name = testkit::unique_name("pair");
    let _a = serve(
        client.clone(),
        &name,
        echo_router("a"),
        ServeOptions::default(),
    )
    .await
    .expect("serve a");
    let _b = serve(
        client.clone(),
        &name,
        echo_router("b"),
        ServeOptions::default(),
    )
    .await
    .expect("serve b");
    let channel = Channel::nats(client, &name);
    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..60 {
        let response = channel
            .clone()
            .oneshot(request("GET", "/echo/x", Bytes::new()))
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
        let instance = response.headers()["x-instance"]
            .to_str()
            .expect("text")
            .to_owned();
        *seen.entry(instance).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "one instance took everything: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 60);
}

#[tokio::test]
async fn services_are_discoverable_through_the_nats_service_api() {
    let client = nats().await;
    let name = testkit::unique_name("discover");
    let _server = serve(
        client.clone(),
        &name,
        echo_router("a"),
        ServeOptions::default(),
    )
    .await
    .expect("serve");
    let channel = Channel::nats(client.clone(), &name);
    for _ in 0..3 {
        channel
            .clone()
            .oneshot(request("GET", "/echo/x", Bytes::new()))
            .await
            .expect("answer");
    }

    let ping = client
        .request(format!("$SRV.PING.{name}"), Bytes::new())
        .await
        .expect("ping answered");
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).expect("json");
    assert_eq!(ping["name"], name.as_str());

    let info = client
        .request(format!("$SRV.INFO.{name}"), Bytes::new())
        .await
        .expect("info answered");
    let info: serde_json::Value = serde_json::from_slice(&info.payload).expect("json");
    assert_eq!(info["endpoints"][0]["subject"], format!("mesh.{name}.http"));
    assert_eq!(info["endpoints"][0]["queue_group"], name.as_str());

    let stats = client
        .request(format!("$SRV.STATS.{name}"), Bytes::new())
        .await
        .expect("stats answered");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).expect("json");
    assert_eq!(stats["endpoints"][0]["num_requests"], 3);
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_leaves_the_queue_group() {
    let client = nats().await;
    let name = testkit::unique_name("drain");
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "finished"
        }),
    );
    let server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");
    let channel = Channel::nats(client, &name);
    let in_flight = tokio::spawn(
        channel
            .clone()
            .oneshot(request("GET", "/slow", Bytes::new())),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    let response = in_flight.await.expect("joined").expect("answer");
    assert_eq!(response.status(), 200);
    let after = channel
        .oneshot(request("GET", "/slow", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(after.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_requests_already_delivered_to_the_instance() {
    const REQUESTS: usize = 8;
    let client = nats().await;
    let name = testkit::unique_name("queued");
    let entered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&entered);
    // Busy before its first await, so it holds up the receive loop: the requests behind it
    // wait in the subscription's buffer, delivered to this instance but not yet read.
    let router = Router::new().route(
        "/busy",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            async { "done" }
        }),
    );
    let server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");
    let channel = Channel::nats(client.clone(), &name).with_timeout(Duration::from_secs(5));
    let calls: Vec<_> = (0..REQUESTS)
        .map(|_| {
            tokio::spawn(
                channel
                    .clone()
                    .oneshot(request("GET", "/busy", Bytes::new())),
            )
        })
        .collect();
    while entered.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every request has reached the NATS server; the busy handler leaves it 50 ms to hand
    // them all to the instance before the instance leaves the queue group.
    client.flush().await.expect("flushed");
    server.shutdown().await;
    assert_eq!(
        entered.load(Ordering::SeqCst),
        REQUESTS,
        "every request was read"
    );
    for call in calls {
        let response = call.await.expect("joined").expect("answer");
        assert_eq!(response.status(), 200);
    }
}

/// A product service that knows one product.
#[derive(Debug, Default)]
struct OneProduct;

#[tonic::async_trait]
impl ProductService for OneProduct {
    async fn get_product(
        &self,
        request: tonic::Request<GetProductRequest>,
    ) -> Result<tonic::Response<Product>, tonic::Status> {
        let id = request.into_inner().id;
        if id == "huge" {
            // More than one NATS message (1 MiB by default) can carry.
            return Ok(tonic::Response::new(Product {
                id,
                description: "x".repeat(2 * 1024 * 1024),
                ..Product::default()
            }));
        }
        if id != "p-1" {
            return Err(tonic::Status::not_found(format!("no product {id}")));
        }
        Ok(tonic::Response::new(Product {
            id,
            name: "Mug".into(),
            price_cents: 1250,
            stock: 7,
            ..Product::default()
        }))
    }

    async fn check_availability(
        &self,
        _request: tonic::Request<CheckAvailabilityRequest>,
    ) -> Result<tonic::Response<CheckAvailabilityResponse>, tonic::Status> {
        // Slow on purpose: the deadline test uses it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(tonic::Response::new(CheckAvailabilityResponse::default()))
    }

    async fn reserve_stock(
        &self,
        _request: tonic::Request<ReserveStockRequest>,
    ) -> Result<tonic::Response<ReserveStockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn release_stock(
        &self,
        _request: tonic::Request<ReleaseStockRequest>,
    ) -> Result<tonic::Response<ReleaseStockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

/// [`OneProduct`] served over NATS under a fresh name, and a channel to it.
async fn one_product_over_nats() -> (MeshServer, Channel) {
    let client = nats().await;
    let name = testkit::unique_name("grpc");
    let server = serve(
        client.clone(),
        &name,
        ProductServiceServer::new(OneProduct),
        ServeOptions::default(),
    )
    .await
    .expect("serve");
    (server, Channel::nats(client, &name))
}

async fn exercise_grpc(channel: Channel) {
    let mut client = ProductServiceClient::new(channel);
    let product = client
        .get_product(GetProductRequest { id: "p-1".into() })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(product.name, "Mug");
    assert_eq!(product.price_cents, 1250);

    let status = client
        .get_product(GetProductRequest { id: "p-2".into() })
        .await
        .expect_err("not found");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no product p-2");

    let mut slow = tonic::Request::new(CheckAvailabilityRequest::default());
    slow.set_timeout(Duration::from_millis(100));
    // The caller's grpc-timeout becomes the request's budget on either transport.
    let started = std::time::Instant::now();
    let status = client.check_availability(slow).await.expect_err("too slow");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(450));
}

#[tokio::test]
async fn a_tonic_client_runs_unchanged_over_nats() {
    let (_server, channel) = one_product_over_nats().await;
    exercise_grpc(channel).await;
}

#[tokio::test]
async fn a_grpc_answer_too_large_for_nats_is_resource_exhausted_not_retryable() {
    let (_server, channel) = one_product_over_nats().await;
    let mut products = ProductServiceClient::new(channel);
    let status = products
        .get_product(GetProductRequest { id: "huge".into() })
        .await
        .expect_err("too large for one message");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("does not fit"), "{status:?}");
    let product = products
        .get_product(GetProductRequest { id: "p-1".into() })
        .await
        .expect("the endpoint still answers");
    assert_eq!(product.into_inner().name, "Mug");
}

#[tokio::test]
async fn a_panicking_handler_costs_its_request_a_500_not_the_endpoint() {
    let client = nats().await;
    let name = testkit::unique_name("panics");
    let router = Router::new()
        .route(
            "/at-once",
            get(|| async {
                if true {
                    panic!("a handler bug");
                }
                "unreachable"
            }),
        )
        .route(
            "/after-waiting",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if true {
                    panic!("a handler bug, on its own task");
                }
                "unreachable"
            }),
        )
        .route("/fine", get(|| async { "fine" }));
    let _server = serve(client.clone(), &name, router, ServeOptions::default())
        .await
        .expect("serve");
    let channel = Channel::nats(client, &name).with_timeout(Duration::from_secs(5));

    for _ in 0..2 {
        for path in ["/at-once", "/after-waiting"] {
            let answer = channel
                .clone()
                .oneshot(request("GET", path, Bytes::new()))
                .await
                .expect("answer");
            assert_eq!(answer.status(), 500, "{path}");
            let body = body_json(answer).await;
            assert_eq!(body["error"]["code"], "internal", "{path}");
        }
        let fine = channel
            .clone()
            .oneshot(request("GET", "/fine", Bytes::new()))
            .await
            .expect("answer");
        assert_eq!(fine.status(), 200, "the endpoint still serves");
    }
}

#[tokio::test]
async fn the_channel_deadline_is_a_grpc_deadline_exceeded() {
    let (_server, channel) = one_product_over_nats().await;
    let channel = channel.with_timeout(Duration::from_millis(100));
    let status = ProductServiceClient::new(channel)
        .check_availability(CheckAvailabilityRequest::default())
        .await
        .expect_err("too slow");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
}

#[tokio::test]
async fn the_same_tonic_client_runs_over_http2_when_the_transport_says_so() {
    // The service on its own port, as every Shopmesh service also serves.
    let routes = tonic::service::Routes::new(ProductServiceServer::new(OneProduct));
    let server = kit::server::HttpServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let base: http::Uri = format!("http://{}", server.local_addr())
        .parse()
        .expect("uri");
    tokio::spawn(server.serve(
        routes.into_axum_router(),
        tokio_util::sync::CancellationToken::new(),
    ));

    let transport: Transport = "http".parse().expect("MESH_TRANSPORT=http");
    let nats = nats().await;
    let channel = Channel::for_transport(transport, "product-service", &nats, base);
    exercise_grpc(channel).await;
}

#[tokio::test]
async fn nothing_listening_over_http_is_a_503() {
    // Bind then drop: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let channel = Channel::http(
        format!("http://127.0.0.1:{port}").parse().expect("uri"),
        "gone",
    );
    let response = channel
        .oneshot(request("GET", "/x", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn a_nested_call_inherits_the_remaining_budget() {
    let client = nats().await;
    let inner_name = testkit::unique_name("inner");
    let outer_name = testkit::unique_name("outer");
    // The inner service reports the budget it was given.
    let inner = Router::new().route(
        "/budget",
        get(|| async {
            let remaining = mesh::Deadline::current().map(|d| d.remaining().as_millis());
            format!("{}", remaining.unwrap_or(u128::MAX))
        }),
    );
    // The outer service calls the inner one with no deadline of its own.
    let to_inner = Channel::nats(client.clone(), &inner_name);
    let outer = Router::new().route(
        "/relay",
        get(move || {
            let to_inner = to_inner.clone();
            async move {
                let response = to_inner
                    .oneshot(request("GET", "/budget", Bytes::new()))
                    .await
                    .expect("inner answers");
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                String::from_utf8(bytes.to_vec()).expect("text")
            }
        }),
    );
    let _inner = serve(client.clone(), &inner_name, inner, ServeOptions::default())
        .await
        .expect("serve inner");
    let _outer = serve(client.clone(), &outer_name, outer, ServeOptions::default())
        .await
        .expect("serve outer");

    let response = Channel::nats(client, &outer_name)
        .with_timeout(Duration::from_millis(400))
        .oneshot(request("GET", "/relay", Bytes::new()))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let inner_budget: u128 = std::str::from_utf8(&bytes)
        .expect("text")
        .parse()
        .expect("a number");
    // Not the channel's 10 s default: what was left of the caller's 400 ms.
    assert!(inner_budget <= 400, "inner got {inner_budget} ms");
    assert!(inner_budget > 0);
}
