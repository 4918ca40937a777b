//! The service kit: everything a Shopmesh binary needs before its first business line.
//!
//! A service's `main.rs` reads its [`config::Env`], calls [`telemetry::init`], builds its
//! router and hands it to [`runtime::Service`], which serves it next to `/health`, `/ready`
//! and `/metrics` until SIGINT/SIGTERM, then drains in-flight requests and background tasks.

/// Every Shopmesh process allocates through mimalloc: under load, glibc's malloc showed up
/// in profiles as arena-lock contention between the runtime's threads (`just bench-mesh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod backoff;
pub mod config;
pub mod db;
pub mod error;
pub mod fallback;
pub mod health;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, Env, ServiceConfig, ServiceDefaults};
pub use health::{Readiness, ReadinessCheck};
pub use metrics::Metrics;
pub use runtime::Service;
pub use shutdown::Shutdown;
