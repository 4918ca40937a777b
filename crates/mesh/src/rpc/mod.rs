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
pub use channel::{Channel, ChannelError, Transport, TransportParseError};
pub use server::{MeshServer, ServeError, ServeOptions, serve};
pub use wire::{MESH_ERROR_HEADER, MeshErrorKind, subject_for};

/// A deadline attached to a request as an extension: the [`Channel`] sends the remaining
/// budget, and the server puts the deadline it received on the request it hands the service,
/// so a nested call gets what is left, not a fresh timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    pub fn after(budget: std::time::Duration) -> Self {
        Self(tokio::time::Instant::now() + budget)
    }

    pub fn remaining(&self) -> std::time::Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }
}
