//! product-service: the catalogue (REST on 8081, cached in Redis) and stock reservations
//! (gRPC on 50052). Both are also served over the mesh as `product-service`: the REST
//! routes and the gRPC paths (`/shopmesh.product.v1.ProductService/*`) share one router.

mod cache;
mod error;
mod grpc;
mod routes;
mod store;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use contracts::product::product_service_server::ProductServiceServer;
use kit::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use middleware::auth::{JwtKeys, JwtSettings};
use middleware::host::{self, Host, Hosted};

pub use cache::ProductCache;
pub use grpc::ProductGrpc;
pub use routes::Catalogue;
pub use store::{Product, Store};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "product-service",
    http_port: 8081,
    database: Some("shop_products"),
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub jwt: JwtSettings,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `CACHE_TTL`: how long a cached product may be served.
    pub cache_ttl: Duration,
    /// `GRPC_ADDR`: the gRPC listener (HTTP/2).
    pub grpc_addr: SocketAddr,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            jwt: JwtSettings::from_env(env)?,
            redis_url: env.string_or("REDIS_URL", "redis://127.0.0.1:6379"),
            cache_ttl: env.positive_duration_or("CACHE_TTL", Duration::from_secs(60))?,
            grpc_addr: env.parse_or("GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50052)))?,
        })
    }
}

#[derive(Debug)]
pub struct App {
    hosted: Hosted,
    grpc_addr: SocketAddr,
}

// `port()`, `shutdown()`, `nats()`: what `Hosted` offers, on the app.
middleware::app_derefs_to_hosted!(App);

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (host, pool) = Host::with_database(&config.service, &MIGRATOR).await?;
        let keys = JwtKeys::new(&config.jwt)?;
        let cache = ProductCache::connect(&config.redis_url, config.cache_ttl, &host.metrics)?;
        let catalogue = Catalogue {
            store: Store::new(pool),
            cache: Arc::new(cache),
        };

        let grpc = host::grpc_routes(
            ProductServiceServer::new(ProductGrpc {
                catalogue: catalogue.clone(),
            }),
            contracts::FILE_DESCRIPTOR_SET,
        )
        .await?;
        let router = routes::router(catalogue, keys).merge(grpc.clone());
        let hosted = host.serve(router, config.service.http_addr).await?;
        let grpc_addr = hosted.serve_also(config.grpc_addr, grpc).await?;
        Ok(Self { hosted, grpc_addr })
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_addr.port()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.hosted.run_until_stopped().await
    }
}
