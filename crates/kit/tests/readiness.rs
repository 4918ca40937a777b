//! `/ready` follows the real Postgres and NATS, reached through a proxy the test can cut.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kit::db::{self, PoolSettings};
use kit::health::{NatsCheck, PostgresCheck};
use kit::{Metrics, Readiness, Service};
use testkit::TcpProxy;

const POSTGRES: &str = "127.0.0.1:5432";
const NATS: &str = "127.0.0.1:4222";

async fn ready_status(client: &reqwest::Client, base: &str) -> u16 {
    client
        .get(format!("{base}/ready"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_for_status(client: &reqwest::Client, base: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ready_status(client, base).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/ready stayed {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Fixture {
    base: String,
    client: reqwest::Client,
    pg_proxy: TcpProxy,
    nats_proxy: TcpProxy,
    url: String,
}

async fn start() -> Fixture {
    let pg_proxy = TcpProxy::start(POSTGRES.parse::<SocketAddr>().expect("addr"))
        .await
        .expect("pg proxy");
    let nats_proxy = TcpProxy::start(NATS.parse::<SocketAddr>().expect("addr"))
        .await
        .expect("nats proxy");

    let name = testkit::unique_name("kit_ready");
    let direct = format!("{}/{name}", testkit::postgres_base());
    db::ensure_database(&direct).await.expect("database");
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{name}", pg_proxy.port());
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
    };
    let pool = db::connect(&proxied, &settings).await.expect("pool");
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(format!("nats://127.0.0.1:{}", nats_proxy.port()))
        .await
        .expect("nats");

    let readiness = Readiness::new()
        .with_check(PostgresCheck(pool))
        .with_check(NatsCheck(nats))
        .with_timeout(Duration::from_secs(1));
    let service = Service::bind("ready-test", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
        .with_ops(Metrics::new("ready-test"), readiness);
    let base = format!("http://{}", service.local_addr());
    tokio::spawn(service.run_until_stopped());

    Fixture {
        base,
        client: reqwest::Client::new(),
        pg_proxy,
        nats_proxy,
        url: direct,
    }
}

#[tokio::test]
async fn ready_follows_postgres() {
    let f = start().await;
    wait_for_status(&f.client, &f.base, 200).await;
    let health = f
        .client
        .get(format!("{}/health", f.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);

    f.pg_proxy.cut();
    wait_for_status(&f.client, &f.base, 503).await;
    let body: serde_json::Value = f
        .client
        .get(format!("{}/ready", f.base))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(body["ready"], false);
    let failed: Vec<_> = body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(failed, ["postgres"]);
    // Liveness does not depend on dependencies.
    let health = f
        .client
        .get(format!("{}/health", f.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);

    f.pg_proxy.restore();
    wait_for_status(&f.client, &f.base, 200).await;
    testkit::drop_database(&f.url).await;
}

#[tokio::test]
async fn ready_follows_nats() {
    let f = start().await;
    wait_for_status(&f.client, &f.base, 200).await;

    f.nats_proxy.cut();
    wait_for_status(&f.client, &f.base, 503).await;

    f.nats_proxy.restore();
    wait_for_status(&f.client, &f.base, 200).await;
    testkit::drop_database(&f.url).await;
}

#[tokio::test]
async fn metrics_are_served_in_the_text_format() {
    let metrics = Metrics::new("metrics-test");
    let counter = metrics
        .register(prometheus::IntCounter::new("kit_test_events_total", "Events.").expect("metric"));
    counter.inc();
    let service = Service::bind("metrics-test", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
        .with_ops(metrics, Readiness::new());
    let base = format!("http://{}", service.local_addr());
    tokio::spawn(service.run_until_stopped());
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("kit_test_events_total{service=\"metrics-test\"} 1"),
        "{text}"
    );
}
