//! Overhead of the gateway-style middleware stack against a bare service, and what JWT
//! verification costs on top of it.
//!
//! One axum handler, `GET /products/{id}` answering a ~150-byte JSON product, is served by
//! `kit::server::HttpServer` (TCP_NODELAY on) on `127.0.0.1:0` in three variants, each on its
//! own server:
//!
//! 1. **bare**: the router alone;
//! 2. **stack without auth**: the router with, in request order (the order `lib.rs`
//!    documents), [`RequestTraceLayer`], [`HttpMetricsLayer`], [`RateLimitLayer`] (a quota so
//!    large that nothing is limited) and [`DeadlineLayer`] (10 s);
//! 3. **full stack (JWT)**: the same with [`RequireAuthLayer`] (HS256) between the rate
//!    limit and the deadline, every request carrying a valid bearer token.
//!
//! The layers are applied with `Router::layer`, as services do, so the metrics layer sees the
//! route template. No tracing subscriber is installed: spans take tracing's disabled fast
//! path, and the OpenTelemetry propagator is the default no-op one.
//!
//! Requests go over real HTTP/1.1 on loopback through a keep-alive pool (hyper-util's legacy
//! client, TCP_NODELAY on). That is deliberate: in process, the handler is so cheap that any
//! layer looks expensive, while the gateway's real per-request cost is network-bound; the
//! question is what the stack adds to a request as a client sees it.
//!
//! Each variant is warmed up with 1000 requests, one at a time and at 32 in flight; then, in
//! rounds (so drift of the machine is shared fairly), the variants are measured sequentially,
//! taking turns request by request (one request at a time: p50 latency), and one after the
//! other in a rotating order at 32 in flight (a fixed number of requests shared by 32 tasks:
//! requests per second). Every response must be a 200
//! carrying the expected body, or the benchmark panics: a benchmark of failures is worthless.
//!
//! The table reports throughput relative to bare, and the overhead per request as the
//! difference of sequential p50 against bare (at 32 in flight, wall time per request mixes
//! in queueing and is misleading). The closing line checks the goal: JWT verification costs
//! at most 5 % throughput, i.e. `1 - req/s(full stack) / req/s(stack without auth) <= 0.05`.
//!
//! Run it with `just bench-middleware` or `cargo bench -p middleware --bench stack`; nothing
//! else needs to run. `BENCH_REQUESTS` (default 20000) and `BENCH_SEQUENTIAL` (default 2000)
//! override the counts.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;
use testkit::bench::{PathStats, Plan, join, labelled_calls, measure_paths, micros, verdict};

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use middleware::{
    DeadlineLayer, HttpMetricsLayer, JwtKeys, JwtSettings, RateLimitLayer, RequestTraceLayer,
    RequireAuthLayer,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

const IN_FLIGHT: usize = 32;
/// Requests per path; `BENCH_SEQUENTIAL` and `BENCH_REQUESTS` override the measured counts.
/// The measured requests are split over eight rounds, so a disturbance of the machine (a
/// build, a GC, the other core busy) falls on all paths alike.
const PLAN: Plan = Plan {
    warmup: 1000,
    sequential: 2000,
    requests: 20_000,
    in_flight: IN_FLIGHT,
    rounds: 8,
};
/// JWT verification may cost at most this share of the stack's throughput.
const JWT_COST_GOAL: f64 = 0.05;
/// A quota no benchmark run comes near, so the rate limiter only costs its bookkeeping.
const UNLIMITED: u32 = 1_000_000;
/// HS256 needs at least 32 bytes.
const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const PRODUCT_ID: &str = "8f14e45f-ceea-467f-a0e6-1c3a5b6e7f80";

const BARE: &str = "bare";
const STACK: &str = "stack without auth";
const FULL: &str = "full stack (JWT)";

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[derive(Debug, Serialize)]
struct Product {
    id: String,
    name: &'static str,
    description: &'static str,
    price_cents: u64,
    currency: &'static str,
    in_stock: bool,
}

fn product(id: String) -> Product {
    Product {
        id,
        name: "Espresso cup",
        description: "Porcelain, 80 ml, dishwasher safe.",
        price_cents: 1250,
        currency: "EUR",
        in_stock: true,
    }
}

async fn get_product(Path(id): Path<String>) -> Json<Product> {
    Json(product(id))
}

/// `GET /products/{id}`, nothing else.
fn catalog() -> Router {
    Router::new().route("/products/{id}", get(get_product))
}

/// The catalog behind the server-side stack, with [`RequireAuthLayer`] when `keys` are given.
fn with_stack(router: Router, keys: Option<JwtKeys>) -> Router {
    let metrics = kit::Metrics::new("bench");
    let unlimited = NonZeroU32::new(UNLIMITED).expect("the quota is not zero");
    let outer = ServiceBuilder::new()
        .layer(RequestTraceLayer)
        .layer(HttpMetricsLayer::new(&metrics))
        .layer(RateLimitLayer::new(unlimited, unlimited));
    let deadline = DeadlineLayer::new(Duration::from_secs(10));
    match keys {
        None => router.layer(outer.layer(deadline)),
        Some(keys) => router.layer(outer.layer(RequireAuthLayer::new(keys)).layer(deadline)),
    }
}

/// A client's view of one variant.
#[derive(Debug, Clone)]
struct Target {
    label: &'static str,
    client: HttpClient,
    uri: Uri,
    authorization: Option<HeaderValue>,
    expected: Bytes,
}

impl Target {
    fn request(&self, authorization: Option<&HeaderValue>) -> Request<Empty<Bytes>> {
        let mut request = Request::builder()
            .uri(self.uri.clone())
            .body(Empty::new())
            .expect("request");
        if let Some(value) = authorization {
            request.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        request
    }

    /// Sends `request`; the status and the whole body.
    async fn send(&self, request: Request<Empty<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
        let label = self.label;
        let response = self
            .client
            .request(request)
            .await
            .unwrap_or_else(|error| panic!("{label} request failed: {error}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|error| panic!("{label} body failed: {error}"))
            .to_bytes();
        (parts.status, parts.headers, body)
    }

    /// One measured request: a 200 with the expected body, or a panic.
    async fn call(&self) {
        let (status, _, body) = self.send(self.request(self.authorization.as_ref())).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{} answered {status}: {}",
            self.label,
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            body, self.expected,
            "{} answered an unexpected body",
            self.label
        );
    }
}

type Stats = PathStats;

#[tokio::main]
async fn main() {
    let plan = PLAN.with_env_counts();
    let requests = plan.requests;

    let keys = JwtKeys::new(&JwtSettings::hs256(SECRET)).expect("HS256 keys");
    let token = keys
        .issue("user-1", "a@example.com")
        .expect("token issued")
        .token;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");

    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    let mut bases = Vec::new();
    for router in [
        catalog(),
        with_stack(catalog(), None),
        with_stack(catalog(), Some(keys)),
    ] {
        let server = kit::server::HttpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        bases.push(server.local_addr());
        servers.push(tokio::spawn(server.serve(router, stop.clone())));
    }

    let client: HttpClient = testkit::http::keep_alive_client(IN_FLIGHT);
    let expected = Bytes::from(
        serde_json::to_vec(&product(PRODUCT_ID.to_owned())).expect("product serializes"),
    );
    let targets: Vec<Target> = [(BARE, None), (STACK, None), (FULL, Some(bearer))]
        .into_iter()
        .zip(&bases)
        .map(|((label, authorization), addr)| Target {
            label,
            client: client.clone(),
            uri: format!("http://{addr}/products/{PRODUCT_ID}")
                .parse()
                .expect("uri"),
            authorization,
            expected: expected.clone(),
        })
        .collect();
    drop(client);

    probe(&targets).await;
    let calls = labelled_calls(
        &targets,
        |target| target.label,
        |target| async move { target.call().await },
    );
    let stats = measure_paths(calls, plan).await;

    stop.cancel();
    for server in servers {
        match tokio::time::timeout(Duration::from_secs(2), server).await {
            Ok(outcome) => {
                if let Err(error) = join(outcome) {
                    eprintln!("server stopped with an error: {error}");
                }
            }
            Err(_) => eprintln!("a server did not stop within 2 s"),
        }
    }

    report(requests, &stats);
}

/// Checks that each variant is what its label says before anything is measured: the stacks
/// answer with a request id, and the full stack refuses a request without a token.
async fn probe(targets: &[Target]) {
    for target in targets {
        let (status, headers, body) = target
            .send(target.request(target.authorization.as_ref()))
            .await;
        assert_eq!(status, StatusCode::OK, "{} answered {status}", target.label);
        assert_eq!(
            body, target.expected,
            "{} answered an unexpected body",
            target.label
        );
        let has_request_id = headers.contains_key(middleware::trace::REQUEST_ID);
        assert_eq!(
            has_request_id,
            target.label != BARE,
            "{}: x-request-id present: {has_request_id}",
            target.label
        );
        if target.authorization.is_some() {
            let (status, _, _) = target.send(target.request(None)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} let a request without a token through",
                target.label
            );
        }
    }
}

/// The table; ratios and overheads are relative to the first row (bare).
fn report(requests: usize, rows: &[(&'static str, Stats)]) {
    let (_, bare) = rows[0];
    println!();
    println!(
        "middleware benchmark (GET /products/{{id}}, HTTP/1.1 loopback, {requests} requests at \
         {IN_FLIGHT} in flight)"
    );
    let throughput_header = format!("req/s @{IN_FLIGHT}");
    println!(
        "{:<24} {:<8} {:<11} {:<9} overhead µs/req",
        "variant", "p50 µs", throughput_header, "vs bare"
    );
    for (index, (label, stats)) in rows.iter().enumerate() {
        let p50 = micros(stats.p50);
        let per_second = stats.per_second;
        let ratio = stats.per_second / bare.per_second;
        let overhead = if index == 0 {
            "0".to_owned()
        } else {
            format!("{:+.1}", p50 - micros(bare.p50))
        };
        let p50 = format!("{p50:.1}");
        let per_second = format!("{per_second:.0}");
        let ratio = format!("{ratio:.2}");
        println!("{label:<24} {p50:<8} {per_second:<11} {ratio:<9} {overhead}");
    }
    let per_second_of = |wanted: &str| {
        rows.iter()
            .find(|(label, _)| *label == wanted)
            .map(|(_, stats)| stats.per_second)
    };
    let (Some(full), Some(stack)) = (per_second_of(FULL), per_second_of(STACK)) else {
        println!("goal: not checked (BENCH_PATHS left out a variant it compares)");
        return;
    };
    let jwt_cost = 1.0 - full / stack;
    println!(
        "JWT verification costs {:.1}% throughput (goal <= {:.0}%): {}",
        jwt_cost * 100.0,
        JWT_COST_GOAL * 100.0,
        verdict(jwt_cost <= JWT_COST_GOAL)
    );
}
