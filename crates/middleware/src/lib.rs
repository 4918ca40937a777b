//! Shopmesh's shared tower layers. Every service and the gateway take their policy from here,
//! so no service writes its own; callers wrap a `mesh::Channel` in the client-side layers
//! (mesh itself stays below this crate).
//!
//! Server side, in request order: [`trace::RequestTraceLayer`] (request id, span, trace
//! context), [`metrics::HttpMetricsLayer`], authentication ([`auth::RequireAuthLayer`], or
//! the gateway's optional token check) *before* [`rate_limit::RateLimitLayer`], which keys
//! by the verified user, then [`deadline::DeadlineLayer`].
//! Client side (around a `mesh::Channel`): [`retry::RetryPolicy`] outside
//! [`breaker::CircuitBreakerLayer`], so a retry never hammers an open circuit and the
//! breaker sees every attempt.
//!
//! Every rejection is the DESIGN.md error body with its status: 401 auth, 429 rate limit,
//! 503 circuit open, 504 deadline. The one 500 is a token that cannot be issued or checked
//! because the configured keys are unusable.

pub mod auth;
pub mod breaker;
pub mod classify;
pub mod deadline;
pub mod grpc;
pub mod host;
pub mod metrics;
pub mod password;
pub mod rate_limit;
pub mod retry;
pub mod trace;

pub use auth::{Claims, JwtKeys, JwtSettings, RequireAuthLayer};

/// The inner service a layer's `call` should drive: the one `poll_ready` made ready, with a
/// fresh clone left in its place for the next request. (Calling the clone instead would use
/// a service nobody polled ready: the tower idiom, written once.)
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let fresh = inner.clone();
    std::mem::replace(inner, fresh)
}
pub use breaker::{BreakerConfig, CircuitBreakerLayer};
pub use deadline::DeadlineLayer;
pub use metrics::HttpMetricsLayer;
pub use rate_limit::RateLimitLayer;
pub use retry::{RetryPolicy, RetrySettings};
pub use trace::RequestTraceLayer;
