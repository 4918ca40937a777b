//! gateway: Shopmesh's REST edge (DESIGN.md, "REST contract", port 8000).
//!
//! It owns no business routes. Each request goes through the edge layers (request id,
//! metrics, CORS, body limit, optional token check, rate limit, deadline), then the path
//! names its upstream (`/register`, `/login`, `/profile` → user-service; `/products*` →
//! product-service; `/orders*` → order-service) and the request is forwarded through a
//! `mesh::Channel` (NATS or HTTP/2, `MESH_TRANSPORT`) wrapped in retry and a circuit breaker.
//! The gateway is the edge, so unlike the services it is not itself served on the mesh.

mod config;
mod forward;
pub mod openapi;
mod routes;
mod upstream;

use std::net::SocketAddr;

use kit::Shutdown;
use middleware::auth::{AuthError, JwtKeys};
use middleware::host::{Host, HostError};

pub use config::{Config, CorsOrigins, DEFAULTS, UpstreamConfig};
pub use routes::requires_token;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot verify tokens: {0}")]
    Keys(AuthError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot render the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
}

/// The running gateway.
#[derive(Debug)]
pub struct App {
    service: kit::Service,
}

impl App {
    /// Connects to NATS (in the background if it is down: the gateway then starts unready),
    /// builds one client stack per upstream and binds `HTTP_ADDR`.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        let keys = JwtKeys::new(&config.jwt).map_err(BuildError::Keys)?;
        let openapi_json = openapi::json()?;
        let mut host = Host::connect(&config.service).await?;
        for upstream in config.upstreams() {
            host.readiness.add(upstream::UpstreamCheck::new(
                config.transport,
                upstream,
                &host.nats,
            ));
        }
        let client = |upstream: &UpstreamConfig| {
            upstream::client(
                config.transport,
                upstream,
                &host.nats,
                &host.metrics,
                config.request_timeout,
            )
        };
        let upstreams = routes::Upstreams {
            user: client(&config.user),
            product: client(&config.product),
            order: client(&config.order),
        };
        let router = routes::router(&config, upstreams, keys, &host.metrics, openapi_json);

        let addr = config.service.http_addr;
        let service = kit::Service::bind(&config.service.name, addr)
            .await
            .map_err(|source| BuildError::Bind { addr, source })?
            .with_router(router)
            .with_ops(host.metrics.clone(), host.readiness.clone())
            .with_grace(config.service.shutdown_grace);
        tracing::info!(
            transport = ?config.transport,
            user = %config.user.name,
            product = %config.product.name,
            order = %config.order.name,
            "Gateway ready to forward."
        );
        Ok(Self { service })
    }

    pub fn port(&self) -> u16 {
        self.service.port()
    }

    /// Trigger it to stop the gateway (tests do).
    pub fn shutdown(&self) -> &Shutdown {
        self.service.shutdown()
    }

    /// Serves until SIGINT/SIGTERM (or [`Shutdown::trigger`]), then drains.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.service.run_until_stopped().await
    }
}
