//! [`Service`]: serve a router next to the operational routes until a signal, then drain.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::server::HttpServer;
use crate::shutdown::Shutdown;

/// `/health`, `/ready` and `/metrics`.
pub fn ops_router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(move || {
                let readiness = readiness.clone();
                async move { readiness.response().await }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.response() }
            }),
        )
}

/// A bound service: its router, its operational routes and its background tasks.
#[derive(Debug)]
pub struct Service {
    name: String,
    server: HttpServer,
    router: Router,
    shutdown: Shutdown,
    grace: Duration,
}

impl Service {
    pub async fn bind(name: &str, addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            server: HttpServer::bind(addr).await?,
            router: Router::new(),
            shutdown: Shutdown::new(),
            grace: Duration::from_secs(30),
        })
    }

    /// The service's business routes.
    pub fn with_router(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    pub fn with_ops(mut self, metrics: Metrics, readiness: Readiness) -> Self {
        self.router = self.router.merge(ops_router(metrics, readiness));
        self
    }

    /// Everything this service answers, operational routes included.
    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Spawn consumers and relays through this so shutdown waits for them.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Serves until SIGINT/SIGTERM (or [`Shutdown::trigger`]), then lets in-flight requests
    /// and tracked tasks finish within the grace period.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.shutdown.listen_for_signals();
        tracing::info!(service = %self.name, addr = %self.server.local_addr(), "Listening.");
        let token = self.shutdown.token();
        let grace = self.grace;
        let mut http = std::pin::pin!(self.server.serve(self.router, token.clone()));
        let served_before_shutdown = tokio::select! {
            served = &mut http => Some(served),
            () = token.cancelled() => None,
        };
        // One grace period for everything: `serve` drains in-flight requests after the token
        // is cancelled, the tracked tasks get what is left of it, and a request that outlives
        // it must not keep the process alive forever.
        let deadline = tokio::time::Instant::now() + grace;
        match served_before_shutdown {
            Some(served) => served?,
            None => {
                if let Ok(served) = tokio::time::timeout_at(deadline, http).await {
                    served?;
                } else {
                    tracing::warn!(service = %self.name, ?grace, "Requests still in flight after the grace period.");
                }
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.shutdown.drain(left).await {
            Ok(()) => tracing::info!(service = %self.name, "Stopped cleanly."),
            Err(error) => tracing::warn!(service = %self.name, %error, "Stopped with work left."),
        }
        Ok(())
    }
}
