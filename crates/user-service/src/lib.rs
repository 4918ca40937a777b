//! user-service: registration, login and profile (DESIGN.md, REST contract).
//!
//! Served on its own port (8080) and over the mesh as `user-service`.

mod error;
mod routes;
mod store;
mod validate;

use kit::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use middleware::auth::{JwtKeys, JwtSettings};
use middleware::host::{Host, Hosted};

pub use routes::router;
pub use store::Store;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "user-service",
    http_port: 8080,
    database: Some("shop_users"),
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub jwt: JwtSettings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            jwt: JwtSettings::from_env(env)?,
        })
    }
}

/// The running service.
#[derive(Debug)]
pub struct App {
    hosted: Hosted,
}

// `port()`, `shutdown()`, `nats()`: what `Hosted` offers, on the app.
middleware::app_derefs_to_hosted!(App);

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (host, pool) = Host::with_database(&config.service, &MIGRATOR).await?;
        let keys = JwtKeys::new(&config.jwt)?;
        middleware::password::prepare_dummy_hash().await;
        let hosted = host
            .serve(router(Store::new(pool), keys), config.service.http_addr)
            .await?;
        Ok(Self { hosted })
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.hosted.run_until_stopped().await
    }
}
