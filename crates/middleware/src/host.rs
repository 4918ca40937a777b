//! Hosting a service the Shopmesh way, so five services do not repeat it: one axum router,
//! wrapped in the standard server layers, served on the service's own port *and* over the
//! mesh (`mesh.<name>.http`), next to `/health`, `/ready` and `/metrics`, until SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use kit::health::NatsCheck;
use kit::{Metrics, Readiness, ServiceConfig, Shutdown};
use mesh::kafka::{EventProducer, KafkaCheck, SagaSettings};
use mesh::outbox::OutboxRelay;
use mesh::rpc::{ServeError, ServeOptions};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tonic::server::NamedService;
use tower::ServiceBuilder;

use crate::deadline::DeadlineLayer;
use crate::metrics::HttpMetricsLayer;
use crate::trace::RequestTraceLayer;

/// What a request may take inside a service when its caller set no deadline.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Nats {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mesh(#[from] ServeError),
    #[error("DATABASE_URL is required")]
    NoDatabase,
    #[error(transparent)]
    Database(#[from] kit::db::DbError),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("saga setup, {step}: {source}")]
    Saga {
        step: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HostError {
    fn saga<E>(step: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| Self::Saga {
            step,
            source: Box::new(source),
        }
    }
}

/// Gives a reachable NATS a moment to accept the connection, so a service that starts next
/// to a running NATS is ready at once; an unreachable one does not hold startup up.
async fn wait_until_connected(nats: &async_nats::Client, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while nats.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("NATS is not reachable yet; starting unready and retrying.");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The service's own database: created if missing, migrated (DESIGN.md, "Data").
async fn database(config: &ServiceConfig, migrator: &Migrator) -> Result<PgPool, HostError> {
    let url = config
        .database_url
        .as_deref()
        .ok_or(HostError::NoDatabase)?;
    Ok(kit::db::connect_and_migrate(url, migrator, &kit::db::PoolSettings::default()).await?)
}

/// A tonic service with gRPC health (reported serving) and reflection, as one axum router
/// to serve on the gRPC port and merge into the mesh router. `descriptors` is the encoded
/// file descriptor set of the protos (`contracts::FILE_DESCRIPTOR_SET`).
pub async fn grpc_routes<S>(service: S, descriptors: &[u8]) -> Result<Router, HostError>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptors)
        .build_v1()
        .map_err(|e| HostError::Reflection(e.to_string()))?;
    Ok(tonic::service::Routes::new(service)
        .add_service(health)
        .add_service(reflection)
        .into_axum_router())
}

/// The process-wide parts a service builds its state from.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub metrics: Metrics,
    /// Starts with the NATS check; add the service's own (Postgres, Kafka, Redis).
    pub readiness: Readiness,
    pub nats: async_nats::Client,
    grace: Duration,
}

impl Host {
    /// Connects to NATS. The connection is retried in the background, so a service starts
    /// (unready) while NATS is down and becomes ready when it appears.
    pub async fn connect(config: &ServiceConfig) -> Result<Self, HostError> {
        let nats = async_nats::ConnectOptions::new()
            .name(&config.name)
            .retry_on_initial_connect()
            .connect(&config.nats_url)
            .await
            .map_err(|source| HostError::Nats {
                url: config.nats_url.clone(),
                source,
            })?;
        wait_until_connected(&nats, Duration::from_secs(2)).await;
        Ok(Self {
            name: config.name.clone(),
            metrics: Metrics::new(&config.name),
            readiness: Readiness::new().with_check(NatsCheck(nats.clone())),
            nats,
            grace: config.shutdown_grace,
        })
    }

    /// [`Host::connect`] plus the service's own database (created if missing, migrated),
    /// whose health `/ready` then reports too.
    pub async fn with_database(
        config: &ServiceConfig,
        migrator: &Migrator,
    ) -> Result<(Self, PgPool), HostError> {
        let pool = database(config, migrator).await?;
        let mut host = Self::connect(config).await?;
        host.readiness.add(kit::health::PostgresCheck(pool.clone()));
        Ok((host, pool))
    }

    /// [`Host::with_database`] for a service in the order saga: the outbox and inbox tables
    /// in its database, the saga's topics created, Kafka's health in `/ready`, and the
    /// outbox relay to start with [`Hosted::relay_outbox`] once the service is up.
    pub async fn with_saga(
        config: &ServiceConfig,
        migrator: &Migrator,
        saga: &SagaSettings,
    ) -> Result<(Self, PgPool, OutboxRelay), HostError> {
        let (mut host, pool) = Self::with_database(config, migrator).await?;
        mesh::store::install_schema(&pool)
            .await
            .map_err(HostError::saga("outbox and inbox tables"))?;
        saga.ensure_topics()
            .await
            .map_err(HostError::saga("topics"))?;
        let check = KafkaCheck::new(&saga.kafka, Duration::from_secs(2))
            .map_err(HostError::saga("Kafka health check"))?;
        host.readiness.add(check);
        let producer = EventProducer::new(&saga.kafka).map_err(HostError::saga("producer"))?;
        Ok((host, pool.clone(), OutboxRelay::new(pool, producer)))
    }

    /// The standard server layers, in request order.
    pub fn standard_layers(router: Router, metrics: &Metrics) -> Router {
        router.layer(
            ServiceBuilder::new()
                // Request id and span first, so everything below logs with them.
                .layer(RequestTraceLayer)
                // Count and time every request, rejections included.
                .layer(HttpMetricsLayer::new(metrics))
                // Honour the caller's deadline and give nested calls what is left.
                .layer(DeadlineLayer::new(DEFAULT_BUDGET)),
        )
    }

    /// Binds `addr` and starts answering on the mesh; call [`Hosted::run_until_stopped`].
    pub async fn serve(self, router: Router, addr: SocketAddr) -> Result<Hosted, HostError> {
        // No route, no such method, axum's own rejections: in the contract's error shape.
        let router = kit::fallback::contract_errors(router);
        let router = Self::standard_layers(router, &self.metrics);
        let service = kit::Service::bind(&self.name, addr)
            .await
            .map_err(|source| HostError::Bind { addr, source })?
            .with_router(router)
            .with_ops(self.metrics.clone(), self.readiness.clone())
            .with_grace(self.grace);
        // The same routes, operational ones included, over NATS.
        let mesh_router = service.router().clone();
        let mesh_server = mesh::serve(
            self.nats.clone(),
            &self.name,
            mesh_router,
            ServeOptions::default(),
        )
        .await?;
        let token = service.shutdown().token();
        service.shutdown().spawn(mesh_server.run_until(token));
        Ok(Hosted {
            service,
            nats: self.nats,
        })
    }
}

/// A bound, not yet running, service.
#[derive(Debug)]
pub struct Hosted {
    service: kit::Service,
    nats: async_nats::Client,
}

impl Hosted {
    pub fn port(&self) -> u16 {
        self.service.port()
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Spawn consumers and relays through this so shutdown waits for them.
    pub fn shutdown(&self) -> &Shutdown {
        self.service.shutdown()
    }

    /// Publishes the outbox until shutdown.
    pub fn relay_outbox(&self, relay: OutboxRelay) {
        let token = self.shutdown().token();
        self.shutdown().spawn(relay.run(token));
    }

    /// Serves `router` on a second listener (a gRPC port) until shutdown; returns where it
    /// listens.
    pub async fn serve_also(
        &self,
        addr: SocketAddr,
        router: Router,
    ) -> Result<SocketAddr, HostError> {
        let server = kit::server::HttpServer::bind(addr)
            .await
            .map_err(|source| HostError::Bind { addr, source })?;
        let bound = server.local_addr();
        let token = self.shutdown().token();
        self.shutdown().spawn(async move {
            if let Err(error) = server.serve(router, token).await {
                tracing::error!(%error, %bound, "Listener failed.");
            }
        });
        Ok(bound)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.service.run_until_stopped().await
    }
}

/// `impl Deref<Target = Hosted>` for a service's `App` holding its [`Hosted`] in a field
/// named `hosted`, so `app.port()`, `app.shutdown()` and friends need no delegating methods.
#[macro_export]
macro_rules! app_derefs_to_hosted {
    ($app:ty) => {
        impl ::std::ops::Deref for $app {
            type Target = $crate::host::Hosted;

            fn deref(&self) -> &Self::Target {
                &self.hosted
            }
        }
    };
}
