//! HTTP over NATS request/reply: any tower HTTP service served on `mesh.<service>.http`, and a
//! [`Channel`] client that reaches it over NATS or plain HTTP/2 (`MESH_TRANSPORT`).
//!
//! Unary exchanges only: the request and response bodies are buffered (a NATS message each),
//! which covers REST and unary gRPC. Streaming gRPC calls are not carried.

mod body;
mod channel;
mod server;
mod wire;

pub use body::MeshBody;
pub use channel::{
    Channel, ChannelError, Transport, TransportParseError, grpc_error_response, grpc_status,
};
pub use server::{MeshServer, ServeError, ServeOptions, serve};
pub use wire::{MESH_ERROR_HEADER, MeshErrorKind, TIMEOUT_HEADER, is_grpc, subject_for};

/// A request's deadline. It travels as the `Deadline` request extension and, for work done
/// on behalf of a request, as a task-local ([`Deadline::scope`]): the [`Channel`] sends the
/// remaining budget, and the server runs the handler inside the deadline it received, so a
/// nested call gets what is left, not a fresh timeout. While [`serve`] runs a service, the
/// request's deadline is current, and `serve` enforces it (it answers 504 when it passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

tokio::task_local! {
    static CURRENT_DEADLINE: Deadline;
}

impl Deadline {
    pub fn after(budget: std::time::Duration) -> Self {
        Self(tokio::time::Instant::now() + budget)
    }

    pub fn remaining(&self) -> std::time::Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Runs `work` with this deadline as the current one.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        CURRENT_DEADLINE.scope(self, work).await
    }

    /// The deadline of the request being served by this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT_DEADLINE.try_with(|d| *d).ok()
    }

    /// The tighter of two optional deadlines.
    pub fn earliest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}
