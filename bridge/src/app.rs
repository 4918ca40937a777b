//! The `bridge` binary's application: the bridge next to `/health`, `/ready` (NATS, Kafka,
//! and "not blocked"), `/metrics` and `/status` on its own port (8085), until SIGTERM; then
//! the bridge stops gracefully (publishes in flight acknowledged, offsets committed).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kit::health::NatsCheck;
use kit::{ConfigError, Env, Metrics, Readiness, ServiceConfig, ServiceDefaults};
use mesh::kafka::KafkaCheck;

use crate::{Bridge, BridgeConfig, BridgeStatus, StatusProbe};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "bridge",
    http_port: 8085,
    database: None,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub bridge: BridgeConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            bridge: BridgeConfig::from_env(env)?,
        })
    }
}

/// The running binary.
#[derive(Debug)]
pub struct App {
    service: kit::Service,
    probe: StatusProbe,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let name = config.service.name.clone();
        let service = kit::Service::bind(&name, config.service.http_addr).await?;
        let metrics = Metrics::new(&name);
        let kafka_check = KafkaCheck::new(&config.bridge.kafka, Duration::from_secs(2))?;
        let handle = Box::pin(Bridge::start(config.bridge, &metrics)).await?;
        let probe = handle.probe();
        let readiness = Readiness::new()
            .with_check(NatsCheck(handle.nats().clone()))
            .with_check(kafka_check)
            .with_check(probe.clone());
        let service = service
            .with_router(status_router(probe.clone()))
            .with_ops(metrics, readiness)
            .with_grace(config.service.shutdown_grace);
        let token = service.shutdown().token();
        service.shutdown().spawn(async move {
            token.cancelled().await;
            handle.stop().await;
        });
        Ok(Self { service, probe })
    }

    pub fn port(&self) -> u16 {
        self.service.port()
    }

    pub fn status(&self) -> BridgeStatus {
        self.probe.status()
    }

    pub fn shutdown(&self) -> &kit::Shutdown {
        self.service.shutdown()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.service.run_until_stopped().await
    }
}

/// `GET /status`: the same JSON as `bridge.status` on NATS.
fn status_router(probe: StatusProbe) -> Router {
    Router::new().route(
        "/status",
        get(move || {
            let probe = probe.clone();
            async move { axum::Json(probe.status()) }
        }),
    )
}
