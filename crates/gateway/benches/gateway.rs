//! `GET /products/{id}` through the gateway against product-service directly, with the mesh
//! over NATS and over HTTP/2 side by side, and product-service's cache warm against cold.
//!
//! One process runs, against the real Postgres, Redis and NATS:
//!
//! - **product-service** (`product_service::App`, a fresh database, a unique `SERVICE_NAME`),
//!   served on its own port and over the mesh;
//! - a **gateway over NATS** (`MESH_TRANSPORT=nats`, `PRODUCT_SERVICE_NAME` = that name);
//! - a **gateway over HTTP/2** (`MESH_TRANSPORT=http`, `PRODUCT_SERVICE_URL` = product-service's
//!   own port).
//!
//! Both gateways have their rate limit raised out of reach (`RATE_LIMIT_PER_SECOND` and
//! `RATE_LIMIT_BURST` at 1,000,000): the limiter only costs its bookkeeping.
//!
//! Part 1 reads one product three ways: (a) directly on product-service's port, the baseline;
//! (b) through the gateway over NATS; (c) through the gateway over HTTP/2. Requests go over
//! HTTP/1.1 on loopback through a keep-alive pool (hyper-util's legacy client, TCP_NODELAY on),
//! as a client would send them. A fourth row, (d), is the floor under (b): a bare async-nats
//! request/reply carrying the product's JSON to a plain echoing subscriber, no HTTP and no
//! mesh; direct + that round trip is the least any gateway over NATS could take here.
//!
//! Each path is warmed up, then measured in rounds (so drift of the machine is shared
//! fairly): sequential latency (one request at a time, the paths taking turns request by
//! request: p50, p99) and, path after path in an order that rotates every round, throughput
//! with 32 requests in flight (a fixed number of requests shared by 32 tasks: requests per
//! second). The product is read again and again, so the cache is warm on every path.
//!
//! Part 2 reads directly from product-service with the cache warm (the same product again and
//! again) and cold (a product created beforehand and never read, so each read is a miss that
//! goes to Postgres and fills the cache). Cold and warm reads alternate, one each per step; the
//! creation of the products is not timed. The cache's own counters (`/metrics`,
//! `product_cache_lookups_total`) must show every cold read as a miss and every warm read as a
//! hit, or the benchmark panics.
//!
//! Every response must be a 200, or the benchmark panics: a benchmark of failures is
//! worthless. The closing line checks the goals of issue 5: through gateway+NATS the p50 is at
//! most 2.0x the direct p50 (Dapr's published sidecar pair is about 3x), and the warm p50 is at
//! most 0.5x the cold p50.
//!
//! `BENCH_PATHS` (comma-separated parts of the row labels) runs only those rows, to profile
//! one path at a time.
//!
//! Run it with `just bench-gateway` (starts the infrastructure if needed), or
//! `cargo bench -p gateway --bench gateway` with Postgres, Redis and NATS up. `BENCH_SEQUENTIAL`
//! (default 2000), `BENCH_REQUESTS` (default 10000) and `BENCH_COLD` (products read cold, and
//! as many warm reads; default 2000) override the counts.

use std::io;
use std::time::{Duration, Instant};
use testkit::bench::{
    PathStats, Plan, count_from_env, join, labelled_calls, measure_paths, micros, percentile,
    verdict,
};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use kit::Env;
use middleware::auth::{JwtKeys, JwtSettings};
use serde_json::json;
use tokio::task::JoinHandle;

const IN_FLIGHT: usize = 32;
/// Requests per path; `BENCH_SEQUENTIAL` and `BENCH_REQUESTS` override the measured counts.
/// The measured requests are split over eight rounds, so a disturbance of the machine (a
/// build, a GC, the other core busy) falls on all paths alike.
const PLAN: Plan = Plan {
    warmup: 500,
    sequential: 2000,
    requests: 10_000,
    in_flight: IN_FLIGHT,
    rounds: 8,
};
const DEFAULT_COLD: usize = 2000;
/// Products created at once before part 2.
const CREATE_IN_FLIGHT: usize = 16;
/// Gateway over NATS p50 at most this many times the direct p50.
const NATS_P50_GOAL: f64 = 2.0;
/// Warm-cache p50 at most this many times the cold-cache p50.
const WARM_COLD_GOAL: f64 = 0.5;
/// A rate limit no benchmark run comes near.
const UNLIMITED: &str = "1000000";
/// HS256 needs at least 32 bytes.
const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

const DIRECT: &str = "direct (product-service)";
const VIA_NATS: &str = "gateway + NATS";
const VIA_HTTP2: &str = "gateway + HTTP/2";
const NATS_FLOOR: &str = "raw NATS round trip";

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

type Stats = PathStats;

/// A client's view of one path.
#[derive(Debug, Clone)]
struct Target {
    label: &'static str,
    route: Route,
}

#[derive(Debug, Clone)]
enum Route {
    /// `GET uri` over HTTP/1.1.
    Http { client: HttpClient, uri: Uri },
    /// A bare async-nats request/reply, echoed by a plain subscriber: no HTTP, no mesh.
    NatsEcho {
        client: async_nats::Client,
        subject: String,
        payload: Bytes,
    },
}

impl Target {
    async fn call(&self) {
        match &self.route {
            Route::Http { client, uri } => get_ok(client, uri.clone(), self.label).await,
            Route::NatsEcho {
                client,
                subject,
                payload,
            } => {
                let reply = client
                    .request(subject.clone(), payload.clone())
                    .await
                    .unwrap_or_else(|error| panic!("{} failed: {error}", self.label));
                assert_eq!(reply.payload.len(), payload.len(), "{} echo", self.label);
            }
        }
    }
}

/// One server running on this runtime.
struct Running {
    label: &'static str,
    stop: kit::Shutdown,
    task: JoinHandle<io::Result<()>>,
}

#[tokio::main]
async fn main() {
    let plan = PLAN.with_env_counts();
    let (sequential_count, requests) = (plan.sequential, plan.requests);
    let cold_count = count_from_env("BENCH_COLD", DEFAULT_COLD);

    // product-service, on its own database and mesh name.
    let database_url = testkit::fresh_database_url("bench_products");
    let product_name = testkit::unique_name("product-service");
    let product_env = Env::from_pairs(
        testkit::ServiceEnv::new(&product_name)
            .database(&database_url)
            .set("JWT_SECRET", SECRET)
            .set("REDIS_URL", testkit::redis_url())
            // Longer than the run: the warm product never expires in the middle of it.
            .set("CACHE_TTL", "3600s")
            .set("GRPC_ADDR", "127.0.0.1:0"),
    );
    let product_config =
        product_service::Config::from_env(&product_env).expect("product-service config");
    let products = product_service::App::build(product_config)
        .await
        .unwrap_or_else(|error| {
            panic!("product-service does not start (try `just infra`): {error:#}")
        });
    let product_port = products.port();
    let mut running = vec![Running {
        label: "product-service",
        stop: products.shutdown().clone(),
        task: tokio::spawn(products.run_until_stopped()),
    }];
    let direct_base = format!("http://127.0.0.1:{product_port}");

    let (nats_port, nats_gateway) = start_gateway(&product_name, &[]).await;
    running.push(nats_gateway);
    let (http2_port, http2_gateway) = start_gateway(
        &product_name,
        &[
            ("MESH_TRANSPORT", "http".to_owned()),
            ("PRODUCT_SERVICE_URL", direct_base.clone()),
            // Nothing listens on port 1; only products are read.
            ("USER_SERVICE_URL", "http://127.0.0.1:1".to_owned()),
            ("ORDER_SERVICE_URL", "http://127.0.0.1:1".to_owned()),
        ],
    )
    .await;
    running.push(http2_gateway);

    // Set-up traffic (creating products, reading counters) goes through reqwest; only the
    // measured reads use the hyper client.
    let setup = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let token = JwtKeys::new(&JwtSettings::hs256(SECRET))
        .expect("HS256 keys")
        .issue(&uuid::Uuid::now_v7().to_string(), "bench@example.com")
        .expect("token issued")
        .token;
    let product_id = create_product(&setup, &direct_base, &token, 0).await;

    let client: HttpClient = testkit::http::keep_alive_client(IN_FLIGHT);
    let path = format!("/products/{product_id}");
    let mut targets: Vec<Target> = [
        (DIRECT, product_port),
        (VIA_NATS, nats_port),
        (VIA_HTTP2, http2_port),
    ]
    .into_iter()
    .map(|(label, port)| Target {
        label,
        route: Route::Http {
            client: client.clone(),
            uri: format!("http://127.0.0.1:{port}{path}")
                .parse()
                .expect("uri"),
        },
    })
    .collect();
    let (floor, echo) = nats_floor(&setup, &direct_base, &path).await;
    targets.push(floor);

    // Part 1: the paths side by side.
    probe(&targets).await;
    let calls = labelled_calls(
        &targets,
        |target| target.label,
        |target| async move { target.call().await },
    );
    let paths = measure_paths(calls, plan).await;

    // Part 2: warm against cold, directly on product-service.
    eprintln!("creating {cold_count} products to read cold (not timed)");
    let cold_ids: Vec<String> = futures::stream::iter(1..=cold_count)
        .map(|index| create_product(&setup, &direct_base, &token, index))
        .buffer_unordered(CREATE_IN_FLIGHT)
        .collect()
        .await;
    let cold_uris: Vec<Uri> = cold_ids
        .iter()
        .map(|id| format!("{direct_base}/products/{id}").parse().expect("uri"))
        .collect();
    let hits_before = cache_count(&setup, &direct_base, "hit").await;
    let misses_before = cache_count(&setup, &direct_base, "miss").await;
    eprintln!("cache: {cold_count} cold reads alternating with {cold_count} warm reads");
    let warm_uri: Uri = format!("{direct_base}{path}").parse().expect("uri");
    let (mut warm, mut cold) = join(
        tokio::spawn(async move {
            let mut warm = Vec::with_capacity(cold_uris.len());
            let mut cold = Vec::with_capacity(cold_uris.len());
            for uri in cold_uris {
                let started = Instant::now();
                get_ok(&client, uri, "cold read").await;
                cold.push(started.elapsed());
                let started = Instant::now();
                get_ok(&client, warm_uri.clone(), "warm read").await;
                warm.push(started.elapsed());
            }
            (warm, cold)
        })
        .await,
    );
    let hits = cache_count(&setup, &direct_base, "hit")
        .await
        .saturating_sub(hits_before);
    let misses = cache_count(&setup, &direct_base, "miss")
        .await
        .saturating_sub(misses_before);
    assert_eq!(
        (hits, misses),
        (cold_count as u64, cold_count as u64),
        "expected every warm read to be a cache hit and every cold read a miss \
         (is Redis up?): {hits} hits, {misses} misses"
    );
    warm.sort_unstable();
    cold.sort_unstable();

    for server in running {
        server.stop.trigger();
        match tokio::time::timeout(Duration::from_secs(5), server.task).await {
            Ok(outcome) => {
                if let Err(error) = join(outcome) {
                    eprintln!("{} stopped with an error: {error}", server.label);
                }
            }
            Err(_) => eprintln!("{} did not stop within 5 s", server.label),
        }
    }
    echo.abort();
    testkit::drop_database(&database_url).await;

    report(sequential_count, requests, &paths);
    report_cache(&warm, &cold, &paths);
}

/// A gateway whose product upstream is `product_name`, with `overrides` on top of the
/// defaults; its port, and the handle to stop it.
async fn start_gateway(product_name: &str, overrides: &[(&str, String)]) -> (u16, Running) {
    let vars = testkit::ServiceEnv::new(&testkit::unique_name("gateway"))
        .set("JWT_SECRET", SECRET)
        .set("USER_SERVICE_NAME", testkit::unique_name("users"))
        .set("PRODUCT_SERVICE_NAME", product_name)
        .set("ORDER_SERVICE_NAME", testkit::unique_name("orders"))
        .set("RATE_LIMIT_PER_SECOND", UNLIMITED)
        .set("RATE_LIMIT_BURST", UNLIMITED)
        .set_all(
            overrides
                .iter()
                .map(|(name, value)| (*name, value.as_str())),
        );
    let config = gateway::Config::from_env(&Env::from_pairs(vars)).expect("gateway config");
    let app = gateway::App::build(config)
        .await
        .unwrap_or_else(|error| panic!("the gateway does not start: {error}"));
    let port = app.port();
    let stop = app.shutdown().clone();
    let task = tokio::spawn(app.run_until_stopped());
    (
        port,
        Running {
            label: "gateway",
            stop,
            task,
        },
    )
}

/// The NATS floor: a plain subscriber echoing a payload the size of the product's JSON, and
/// the path that calls it. Whatever the gateway does, its NATS path also pays this round
/// trip through the NATS server on top of product-service's own work.
async fn nats_floor(
    http: &reqwest::Client,
    direct_base: &str,
    path: &str,
) -> (Target, JoinHandle<()>) {
    let url = testkit::nats_url();
    let connect = || async {
        async_nats::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("cannot reach NATS at {url}: {error}"))
    };
    let (server_side, client_side) = (connect().await, connect().await);
    let product_json = http
        .get(format!("{direct_base}{path}"))
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .unwrap_or_else(|error| panic!("GET {path} failed: {error}"))
        .bytes()
        .await
        .expect("product body");
    let subject = format!("bench.{}", testkit::unique_name("floor"));
    let mut subscriber = server_side
        .subscribe(subject.clone())
        .await
        .expect("floor subscribe");
    server_side.flush().await.expect("flush");
    let echo = tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            if let Some(reply) = message.reply {
                let _ = server_side.publish(reply, message.payload).await;
            }
        }
    });
    let target = Target {
        label: NATS_FLOOR,
        route: Route::NatsEcho {
            client: client_side,
            subject,
            payload: product_json,
        },
    };
    (target, echo)
}

/// `GET uri`, which must answer 200; the body is read to the end.
async fn get_ok(client: &HttpClient, uri: Uri, label: &str) {
    let request = Request::builder()
        .uri(uri)
        .body(Empty::new())
        .expect("request");
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|error| panic!("{label} request failed: {error}"));
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|error| panic!("{label} body failed: {error}"))
        .to_bytes();
    assert_eq!(
        status,
        StatusCode::OK,
        "{label} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// Creates a product on product-service (not timed); its id.
async fn create_product(http: &reqwest::Client, base: &str, token: &str, index: usize) -> String {
    let (status, product) = testkit::http::send_json(
        http.post(format!("{base}/products"))
            .bearer_auth(token)
            .json(&json!({
                "name": format!("Bench espresso cup {index}"),
                "description": "Porcelain, 80 ml, dishwasher safe.",
                "price_cents": 1250,
                "stock": 100,
            })),
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED.as_u16(),
        "POST /products answered {status}: {product}"
    );
    product["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a created product without an id: {product}"))
        .to_owned()
}

/// product-service's `product_cache_lookups_total` for `result` (hit, miss, ...).
async fn cache_count(http: &reqwest::Client, base: &str, result: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET /metrics failed: {error}"))
        .text()
        .await
        .expect("metrics text");
    let label = format!("result=\"{result}\"");
    text.lines()
        .find(|line| line.starts_with("product_cache_lookups_total") && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Each path answers before anything is measured.
async fn probe(targets: &[Target]) {
    for target in targets {
        target.call().await;
    }
}

fn stats_of(rows: &[(&'static str, Stats)], wanted: &str) -> Option<Stats> {
    rows.iter()
        .find(|(label, _)| *label == wanted)
        .map(|(_, stats)| *stats)
}

/// The paths' table; ratios are relative to the first row (direct).
fn report(sequential_count: usize, requests: usize, rows: &[(&'static str, Stats)]) {
    let (_, direct) = rows[0];
    println!();
    println!(
        "gateway benchmark (GET /products/{{id}}, warm cache, HTTP/1.1 keep-alive client on \
         loopback, {sequential_count} sequential, {requests} at {IN_FLIGHT} in flight, \
         {} rounds)",
        PLAN.rounds
    );
    let throughput_header = format!("req/s @{IN_FLIGHT}");
    println!(
        "{:<26} {:>10} {:>10} {:>11} {:>12} {:>13}",
        "path", "p50 µs", "p99 µs", "ratio p50", throughput_header, "ratio req/s"
    );
    for (label, stats) in rows {
        let p50 = micros(stats.p50);
        let p99 = micros(stats.p99);
        let p50_ratio = stats.p50.as_secs_f64() / direct.p50.as_secs_f64();
        let per_second = stats.per_second;
        let throughput_ratio = stats.per_second / direct.per_second;
        println!(
            "{label:<26} {p50:>10.1} {p99:>10.1} {p50_ratio:>11.2} {per_second:>12.0} \
             {throughput_ratio:>13.2}"
        );
    }
}

/// The cache's table and the goals of both parts.
fn report_cache(warm: &[Duration], cold: &[Duration], paths: &[(&'static str, Stats)]) {
    println!();
    println!(
        "cache (GET /products/{{id}} directly on product-service, {} warm and {} cold reads, \
         alternating)",
        warm.len(),
        cold.len()
    );
    println!(
        "{:<26} {:>10} {:>10} {:>11}",
        "read", "p50 µs", "p99 µs", "ratio p50"
    );
    let cold_p50 = percentile(cold, 0.50);
    for (label, samples) in [("cold (miss: Postgres)", cold), ("warm (hit: Redis)", warm)] {
        let p50 = percentile(samples, 0.50);
        let ratio = p50.as_secs_f64() / cold_p50.as_secs_f64();
        let p50 = micros(p50);
        let p99 = micros(percentile(samples, 0.99));
        println!("{label:<26} {p50:>10.1} {p99:>10.1} {ratio:>11.2}");
    }

    let (Some(direct), Some(via_nats)) = (stats_of(paths, DIRECT), stats_of(paths, VIA_NATS))
    else {
        println!("goals: not checked (BENCH_PATHS left out a path they compare)");
        return;
    };
    let nats_ratio = via_nats.p50.as_secs_f64() / direct.p50.as_secs_f64();
    if let Some(floor) = stats_of(paths, NATS_FLOOR) {
        // The NATS path is the direct work plus at least one bare round trip through the
        // NATS server: that sum is the best ratio any gateway could reach here.
        let best = (direct.p50 + floor.p50).as_secs_f64() / direct.p50.as_secs_f64();
        println!(
            "floor: a bare NATS round trip alone is {:.2}x the direct p50, so gateway+NATS \
             cannot go below {best:.2}x on this machine before any gateway work",
            floor.p50.as_secs_f64() / direct.p50.as_secs_f64()
        );
    }
    let warm_ratio = percentile(warm, 0.50).as_secs_f64() / cold_p50.as_secs_f64();
    println!(
        "goals: gateway+NATS p50 <= {NATS_P50_GOAL:.1}x direct: {} ({nats_ratio:.2}x; Dapr's \
         published sidecar pair is about 3x); warm/cold p50 <= {WARM_COLD_GOAL:.1}: {} \
         ({warm_ratio:.2})",
        verdict(nats_ratio <= NATS_P50_GOAL),
        verdict(warm_ratio <= WARM_COLD_GOAL)
    );
}
