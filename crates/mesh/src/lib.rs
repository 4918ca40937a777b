//! The mesh: how Shopmesh services reach each other (DESIGN.md, "The mesh").
//!
//! - [`rpc`]: HTTP and gRPC over NATS request/reply ([`rpc::serve`], [`rpc::Channel`]).
//! - [`kafka`]: settings, topic creation and readiness for the saga bus.

pub mod kafka;
pub mod rpc;

pub use rpc::{Channel, Deadline, MeshServer, ServeOptions, Transport, serve};
