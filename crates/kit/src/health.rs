//! Liveness (`/health`) and readiness (`/ready`).
//!
//! `/health` answers as long as the process serves HTTP. `/ready` runs every registered
//! [`ReadinessCheck`] (Postgres, NATS, Kafka, ...) concurrently, each bounded by a timeout,
//! and answers 503 naming what is down, so an orchestrator stops routing to the instance
//! until its dependencies return.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, join_all};
use serde::Serialize;
use sqlx::PgPool;

/// One dependency the service needs to do useful work.
pub trait ReadinessCheck: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// `Err` carries a short human-readable reason.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The set of checks behind `/ready`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|c| c.name().to_owned()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub checks: Vec<CheckReport>,
}

impl Readiness {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_check(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    pub fn add(&mut self, check: impl ReadinessCheck) {
        self.checks.push(Arc::new(check));
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub async fn report(&self) -> ReadinessReport {
        let timeout = self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT);
        let checks = join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(timeout, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            CheckReport {
                name: check.name().to_owned(),
                ok: outcome.is_ok(),
                error: outcome.err(),
            }
        }))
        .await;
        ReadinessReport {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    pub async fn response(&self) -> Response {
        let report = self.report().await;
        let status = if report.ready {
            StatusCode::OK
        } else {
            for failed in report.checks.iter().filter(|c| !c.ok) {
                tracing::warn!(check = %failed.name, error = ?failed.error, "Not ready.");
            }
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(report)).into_response()
    }
}

/// Ready when a pooled connection answers `SELECT 1`.
#[derive(Debug, Clone)]
pub struct PostgresCheck(pub PgPool);

impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// Ready when the NATS client is connected and the server answers a round trip.
#[derive(Debug, Clone)]
pub struct NatsCheck(pub async_nats::Client);

impl ReadinessCheck for NatsCheck {
    fn name(&self) -> &str {
        "nats"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.0.connection_state() {
                async_nats::connection::State::Connected => {
                    self.0.flush().await.map_err(|e| e.to_string())
                }
                state => Err(format!("connection {state}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Result<(), &'static str>);

    impl ReadinessCheck for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            let result = self.1.map_err(str::to_owned);
            Box::pin(async move { result })
        }
    }

    struct Hangs;

    impl ReadinessCheck for Hangs {
        fn name(&self) -> &str {
            "hangs"
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(futures::future::pending())
        }
    }

    #[tokio::test]
    async fn ready_only_when_every_check_passes() {
        let all_ok = Readiness::new()
            .with_check(Fixed("a", Ok(())))
            .with_check(Fixed("b", Ok(())));
        assert!(all_ok.report().await.ready);

        let one_down = Readiness::new()
            .with_check(Fixed("a", Ok(())))
            .with_check(Fixed("b", Err("refused")));
        let report = one_down.report().await;
        assert!(!report.ready);
        assert_eq!(report.checks[1].error.as_deref(), Some("refused"));
    }

    #[tokio::test]
    async fn a_hanging_check_times_out_as_unready() {
        let readiness = Readiness::new()
            .with_check(Hangs)
            .with_timeout(Duration::from_millis(50));
        let report = readiness.report().await;
        assert!(!report.ready);
        assert!(
            report.checks[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("no answer")
        );
    }
}
