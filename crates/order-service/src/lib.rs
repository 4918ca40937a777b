//! order-service: places orders against reserved stock (REST 8082, gRPC 50051, and the
//! mesh as `order-service`) and drives the order side of the saga: payment results confirm
//! or cancel-and-compensate, and orders left `PENDING` too long are cancelled the same way.

mod error;
mod grpc;
mod orders;
mod placements;
mod products;
mod routes;
mod saga;
mod store;

use std::net::SocketAddr;
use std::time::Duration;

use contracts::order::order_service_server::OrderServiceServer;
use kit::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use mesh::kafka::{EventConsumer, SagaSettings, run_worker};
use mesh::rpc::{Channel, Transport};
use middleware::auth::{JwtKeys, JwtSettings};
use middleware::host::{self, Host, Hosted};
use tracing::Instrument;

pub use orders::{Orders, PaymentOutcome};
pub use products::Products;
pub use store::{Order, Status, Store};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "order-service",
    http_port: 8082,
    database: Some("shop_orders"),
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub jwt: JwtSettings,
    pub saga: SagaSettings,
    /// `GRPC_ADDR`.
    pub grpc_addr: SocketAddr,
    /// `MESH_TRANSPORT`: how product-service is reached.
    pub transport: Transport,
    /// `PRODUCT_SERVICE_NAME`: its mesh name.
    pub product_service: String,
    /// `PRODUCT_GRPC_URL`: its gRPC address for `MESH_TRANSPORT=http`.
    pub product_grpc_url: http::Uri,
    /// `ORDER_PAYMENT_TIMEOUT`: a `PENDING` order older than this is cancelled.
    pub payment_timeout: Duration,
    /// `ORDER_SWEEP_INTERVAL`: how often expired orders are looked for.
    pub sweep_interval: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            jwt: JwtSettings::from_env(env)?,
            saga: SagaSettings::from_env(env, "order-service")?,
            grpc_addr: env.parse_or("GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], 50051)))?,
            transport: env.parse_or("MESH_TRANSPORT", Transport::Nats)?,
            product_service: env.string_or("PRODUCT_SERVICE_NAME", "product-service"),
            product_grpc_url: env.parse_or(
                "PRODUCT_GRPC_URL",
                http::Uri::from_static("http://127.0.0.1:50052"),
            )?,
            payment_timeout: env
                .positive_duration_or("ORDER_PAYMENT_TIMEOUT", Duration::from_secs(30))?,
            sweep_interval: env
                .positive_duration_or("ORDER_SWEEP_INTERVAL", Duration::from_secs(1))?,
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
        let (host, pool, relay) = Host::with_saga(&config.service, &MIGRATOR, &config.saga).await?;
        let keys = JwtKeys::new(&config.jwt)?;
        let consumer = EventConsumer::new(
            &config.saga.kafka,
            &config.saga.topics.group("order-service"),
            &[
                &config.saga.topics.payment_success,
                &config.saga.topics.payment_failed,
            ],
        )?;
        let channel = Channel::for_transport(
            config.transport,
            &config.product_service,
            &host.nats,
            config.product_grpc_url.clone(),
        );
        let orders = Orders {
            store: Store::new(pool.clone(), config.saga.topics.clone()),
            products: Products::new(channel, &host.metrics),
        };

        let grpc = host::grpc_routes(
            OrderServiceServer::new(grpc::OrderGrpc {
                orders: orders.clone(),
            }),
            contracts::FILE_DESCRIPTOR_SET,
        )
        .await?;
        let router = routes::router(orders.clone(), keys).merge(grpc.clone());
        let hosted = host.serve(router, config.service.http_addr).await?;
        let grpc_addr = hosted.serve_also(config.grpc_addr, grpc).await?;

        let shutdown = hosted.shutdown();
        let token = shutdown.token();
        hosted.relay_outbox(relay);
        shutdown.spawn({
            let orders = orders.clone();
            let token = token.clone();
            async move {
                run_worker("order-service", consumer, token, |received| {
                    let orders = orders.clone();
                    let span = middleware::trace::consumer_span(&received.event);
                    async move { saga::handle_payment(&orders, received).await }.instrument(span)
                })
                .await;
            }
        });
        shutdown.spawn(saga::sweep_expired(
            orders,
            config.payment_timeout,
            config.sweep_interval,
            token,
        ));
        Ok(Self { hosted, grpc_addr })
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_addr.port()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.hosted.run_until_stopped().await
    }
}
