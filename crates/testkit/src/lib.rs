//! Support for integration tests that run against the real Postgres, NATS, Redis and Kafka API
//! broker on this machine. Every test gets its own names so tests run in parallel.

pub mod bench;
pub mod http;
mod proxy;
mod service_env;

pub use proxy::TcpProxy;
pub use service_env::ServiceEnv;

/// Where the real servers listen; overridable so the tests run against any stack.
pub fn postgres_base() -> String {
    std::env::var("TEST_POSTGRES_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other test run uses: `<prefix>_<32 hex digits>`, valid as a database name,
/// NATS subject token and Kafka topic.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The URL of a fresh, not yet created database (the code under test creates it).
pub fn fresh_database_url(prefix: &str) -> String {
    format!("{}/{}", postgres_base(), unique_name(prefix))
}

/// Drops a test database, ending any connection still open on it.
pub async fn drop_database(url: &str) {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let Ok(options) = sqlx::postgres::PgConnectOptions::from_str(url) else {
        return;
    };
    let Some(name) = options.get_database().map(str::to_owned) else {
        return;
    };
    if let Ok(mut admin) = options.database("postgres").connect().await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after 15 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
