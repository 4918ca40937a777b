//! Mesh latency and throughput: raw async-nats vs `Channel` over NATS vs `Channel` over HTTP/2.
//!
//! Three ways to echo a 256-byte body, measured in one run on loopback:
//!
//! 1. **raw async-nats**, the floor: a plain queue subscriber that publishes each payload
//!    back to its reply subject, called with `client.request`.
//! 2. **Channel over NATS**: an axum router (`POST /echo` returns the body) served with
//!    [`mesh::rpc::serve`] and called through [`Channel::nats`] with `tower::ServiceExt::oneshot`.
//! 3. **Channel over HTTP/2**: the same router on `kit::server::HttpServer` (TCP_NODELAY on),
//!    called through [`Channel::http`].
//!
//! The services run in a second process, started from this same executable, and the callers
//! in this one, each on tokio's default runtime: a caller and a service are two processes in
//! production, and in one shared runtime a request's whole round trip can run on one worker,
//! which flatters the transport with the fewest hops (HTTP/2) in a way no deployment sees.
//! `BENCH_ONE_PROCESS=1` runs everything in one process and runtime instead (the layout to
//! profile with callgrind, and the one the figures before session 5 were taken in).
//!
//! NATS runs at `testkit::nats_url()` (`NATS_URL`, default `nats://127.0.0.1:4222`); the
//! server side and the client side use separate NATS connections. Each path is warmed up,
//! then measured twice: sequential latency (one request at a time, the paths taking turns
//! request by request; p50 and p99 in µs) and throughput with 32 requests in flight (32 tokio
//! tasks sharing a fixed number of requests, in requests per second; path after path in
//! rotating order). Every response must be a 200 carrying the 256 bytes back, or the
//! benchmark panics: a benchmark of failures is worthless.
//!
//! The closing line checks two goals: Channel over NATS adds at most 15 % to the raw p50,
//! and at 32 in flight it serves at least as many requests per second as HTTP/2.
//!
//! `BENCH_PATHS` (comma-separated parts of the row labels) runs only those rows, to profile
//! one path at a time; the goals are then not checked.
//!
//! Run it with `just bench-mesh` (starts NATS if needed), or `cargo bench -p mesh --bench mesh`
//! with NATS already up. `BENCH_SEQUENTIAL` (default 3000) and `BENCH_REQUESTS` (default
//! 20000) override the counts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use testkit::bench::{PathStats, Plan, measure_paths, micros, owning_call, verdict};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use mesh::rpc::{Channel, ServeOptions, serve};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const BODY_LEN: usize = 256;
const IN_FLIGHT: usize = 32;
/// Requests per path; `BENCH_SEQUENTIAL` and `BENCH_REQUESTS` override the measured counts.
/// The measured requests are split over eight rounds, so a disturbance of the machine (a
/// build, a GC, the other core busy) falls on all paths alike.
const PLAN: Plan = Plan {
    warmup: 500,
    sequential: 3000,
    requests: 20_000,
    in_flight: IN_FLIGHT,
    rounds: 8,
};
/// Channel over NATS p50 at most this many times the raw async-nats p50.
const P50_GOAL: f64 = 1.15;
/// Channel over NATS requests per second at least this many times HTTP/2's.
const THROUGHPUT_GOAL: f64 = 1.0;

const RAW: &str = "raw async-nats";
/// Raw request/reply carrying the headers the mesh sends (the request line with its budget,
/// the content type) and answering with the one a 200 returns (the content type): what the
/// wire format alone costs.
const RAW_HEADERS: &str = "raw + mesh headers";
const OVER_NATS: &str = "Channel over NATS";
const OVER_HTTP2: &str = "Channel over HTTP/2";

type Stats = PathStats;

/// Set in the environment of the child process that runs the services.
const SERVICES_ROLE: &str = "MESH_BENCH_SERVICES";

/// Set to run the services in the bench's own process and runtime, beside the callers: the
/// layout to profile with callgrind (one process holds both sides of every exchange).
const ONE_PROCESS: &str = "BENCH_ONE_PROCESS";

fn main() {
    if std::env::var_os(SERVICES_ROLE).is_some() {
        run_services();
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("caller runtime");
    let url = testkit::nats_url();
    // Stopped when dropped, at the end or on a panic.
    let mut services = None;
    let targets = if std::env::var_os(ONE_PROCESS).is_some() {
        runtime.block_on(start_services(url.clone()))
    } else {
        services.insert(ServicesProcess::start()).targets()
    };
    runtime.block_on(measure(url, targets));
}

/// Where the callers find the three services: one line on the services process's stdout.
struct Targets {
    raw_subject: String,
    mesh_name: String,
    http_base: http::Uri,
}

impl Targets {
    fn to_line(&self) -> String {
        format!("{} {} {}", self.raw_subject, self.mesh_name, self.http_base)
    }

    fn from_line(line: &str) -> Self {
        let mut words = line.split_whitespace();
        let mut next = || {
            words
                .next()
                .expect("the services process printed three targets")
        };
        Self {
            raw_subject: next().to_owned(),
            mesh_name: next().to_owned(),
            http_base: next().parse().expect("base uri"),
        }
    }
}

/// This executable again, running the services (see the module documentation).
struct ServicesProcess {
    child: std::process::Child,
}

impl ServicesProcess {
    fn start() -> Self {
        let exe = std::env::current_exe().expect("bench executable");
        let child = std::process::Command::new(exe)
            .env(SERVICES_ROLE, "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the services process");
        Self { child }
    }

    /// Waits for the services to be up and reads where they are.
    fn targets(&mut self) -> Targets {
        use std::io::BufRead;
        let stdout = self.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the services' targets");
        assert!(
            !line.is_empty(),
            "the services process ended before it started its services"
        );
        Targets::from_line(&line)
    }
}

impl Drop for ServicesProcess {
    /// Closing its stdin ends the services process.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The services process: starts the services, says where they are, and serves until its
/// stdin closes (the bench finished, or died).
fn run_services() {
    use std::io::{Read, Write};
    let runtime = tokio::runtime::Runtime::new().expect("service runtime");
    let targets = runtime.block_on(start_services(testkit::nats_url()));
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", targets.to_line()).expect("print the targets");
    stdout.flush().expect("print the targets");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

async fn start_services(url: String) -> Targets {
    let server_side = connect(&url).await;
    // 1. Raw async-nats: the floor under any request/reply over this NATS server.
    let raw_subject = format!("bench.{}", testkit::unique_name("raw"));
    let mut subscriber = server_side
        .queue_subscribe(raw_subject.clone(), "bench_raw".to_owned())
        .await
        .expect("raw subscribe");
    let responder_client = server_side.clone();
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let Some(reply) = message.reply else {
                continue;
            };
            let sent = if message.headers.is_some() {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("content-type", "application/octet-stream");
                responder_client
                    .publish_with_headers(reply, headers, message.payload)
                    .await
            } else {
                responder_client.publish(reply, message.payload).await
            };
            if let Err(error) = sent {
                eprintln!("raw reply not sent: {error}");
            }
        }
    });
    // 2. Channel over NATS.
    let mesh_name = testkit::unique_name("bench");
    // Dropping the handle leaves it serving until the process ends.
    serve(
        server_side.clone(),
        &mesh_name,
        echo_router(),
        ServeOptions::default(),
    )
    .await
    .expect("mesh serve");
    // The server has the subscriptions before the first request goes out.
    server_side.flush().await.expect("flush");
    // 3. The same router over HTTP/2 on its own port.
    let http_server = kit::server::HttpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let http_base: http::Uri = format!("http://{}", http_server.local_addr())
        .parse()
        .expect("base uri");
    tokio::spawn(http_server.serve(echo_router(), CancellationToken::new()));
    Targets {
        raw_subject,
        mesh_name,
        http_base,
    }
}

async fn measure(url: String, targets: Targets) {
    let plan = PLAN.with_env_counts();
    let (sequential_count, requests) = (plan.sequential, plan.requests);
    let client_side = connect(&url).await;
    let payload = Bytes::from((0..BODY_LEN).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let raw_headers_call = {
        let client = client_side.clone();
        let payload = payload.clone();
        let subject = targets.raw_subject.clone();
        move || raw_headers_request(client.clone(), subject.clone(), payload.clone())
    };
    let raw_call = {
        let client = client_side.clone();
        let payload = payload.clone();
        let subject = targets.raw_subject.clone();
        move || raw_request(client.clone(), subject.clone(), payload.clone())
    };
    let nats_call = {
        let channel = Channel::nats(client_side.clone(), &targets.mesh_name);
        let payload = payload.clone();
        move || channel_request(channel.clone(), payload.clone(), OVER_NATS)
    };
    let channel = Channel::http(targets.http_base, "bench");
    let http_call = move || channel_request(channel.clone(), payload.clone(), OVER_HTTP2);

    let paths = vec![
        (RAW, boxed(raw_call)),
        (RAW_HEADERS, boxed(raw_headers_call)),
        (OVER_NATS, boxed(nats_call)),
        (OVER_HTTP2, boxed(http_call)),
    ];
    let calls = paths
        .into_iter()
        .map(|(label, call)| (label, owning_call(call, |call| call())));
    let stats = measure_paths(calls.collect(), plan).await;
    report(sequential_count, requests, &stats);
}

async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .unwrap_or_else(|error| panic!("cannot reach NATS at {url} (try `just infra`): {error}"))
}

/// `POST /echo` answers with the request body.
fn echo_router() -> Router {
    Router::new().route("/echo", post(|body: Bytes| async move { body }))
}

async fn raw_request(client: async_nats::Client, subject: String, payload: Bytes) {
    let reply = client
        .request(subject, payload)
        .await
        .unwrap_or_else(|error| panic!("{RAW} request failed: {error}"));
    assert_eq!(
        reply.payload.len(),
        BODY_LEN,
        "{RAW} echoed {} bytes",
        reply.payload.len()
    );
}

async fn raw_headers_request(client: async_nats::Client, subject: String, payload: Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream");
    headers.insert("Mesh-Request", "POST /echo 10000ms");
    let reply = client
        .send_request(
            subject,
            async_nats::Request::new().headers(headers).payload(payload),
        )
        .await
        .unwrap_or_else(|error| panic!("{RAW_HEADERS} request failed: {error}"));
    assert_eq!(
        reply.payload.len(),
        BODY_LEN,
        "{RAW_HEADERS} echoed {} bytes",
        reply.payload.len()
    );
}

async fn channel_request(channel: Channel, payload: Bytes, label: &'static str) {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri("/echo")
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(payload))
        .expect("request");
    let response = channel
        .oneshot(request)
        .await
        .unwrap_or_else(|error| panic!("{label} request failed: {error}"));
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("infallible body")
        .to_bytes();
    assert_eq!(
        status,
        http::StatusCode::OK,
        "{label} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(body.len(), BODY_LEN, "{label} echoed {} bytes", body.len());
}

/// One path's request, type-erased so the paths can be measured side by side.
type Call = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

fn boxed<F, Fut>(call: F) -> Call
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || Box::pin(call()))
}

/// The table; ratios are relative to the first row (raw async-nats).
fn report(sequential_count: usize, requests: usize, rows: &[(&str, Stats)]) {
    let (_, raw) = rows[0];
    println!();
    println!(
        "mesh benchmark ({BODY_LEN} B echo, loopback NATS, {sequential_count} sequential, \
         {requests} at {IN_FLIGHT} in flight)"
    );
    let throughput_header = format!("req/s @{IN_FLIGHT}");
    let columns = [
        "path",
        "p50 µs",
        "p99 µs",
        "ratio p50",
        throughput_header.as_str(),
        "ratio req/s",
    ];
    println!(
        "{:<22} {:>10} {:>10} {:>11} {:>12} {:>13}",
        columns[0], columns[1], columns[2], columns[3], columns[4], columns[5]
    );
    for (label, stats) in rows {
        let p50 = micros(stats.p50);
        let p99 = micros(stats.p99);
        let p50_ratio = stats.p50.as_secs_f64() / raw.p50.as_secs_f64();
        let per_second = stats.per_second;
        let throughput_ratio = stats.per_second / raw.per_second;
        println!(
            "{label:<22} {p50:>10.1} {p99:>10.1} {p50_ratio:>11.2} {per_second:>12.0} \
             {throughput_ratio:>13.2}"
        );
    }
    let stats_of = |wanted: &str| {
        rows.iter()
            .find(|(label, _)| *label == wanted)
            .map(|(_, stats)| *stats)
    };
    let (Some(over_nats), Some(over_http2)) = (stats_of(OVER_NATS), stats_of(OVER_HTTP2)) else {
        println!("goals: not checked (BENCH_PATHS left out a path they compare)");
        return;
    };
    if rows[0].0 != RAW {
        println!("goals: not checked (BENCH_PATHS left out the raw baseline)");
        return;
    }
    let p50_ratio = over_nats.p50.as_secs_f64() / raw.p50.as_secs_f64();
    let throughput_ratio = over_nats.per_second / over_http2.per_second;
    let p50_verdict = verdict(p50_ratio <= P50_GOAL);
    let throughput_verdict = verdict(throughput_ratio >= THROUGHPUT_GOAL);
    println!(
        "goals: Channel/NATS p50 <= {P50_GOAL:.2}x raw: {p50_verdict} ({p50_ratio:.2}x); \
         NATS req/s >= {THROUGHPUT_GOAL:.1}x HTTP/2 at {IN_FLIGHT} in flight: \
         {throughput_verdict} ({throughput_ratio:.2}x)"
    );
}
