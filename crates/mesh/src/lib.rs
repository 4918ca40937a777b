//! The mesh: how Shopmesh services reach each other (DESIGN.md, "The mesh").
//!
//! - [`rpc`]: HTTP and gRPC over NATS request/reply ([`rpc::serve`], [`rpc::Channel`]).
//! - [`event`]: the CloudEvents envelope shared by Kafka and NATS.
//! - [`kafka`]: settings, topic creation, readiness, the producer and the consumer group.
//! - [`jetstream`]: publishing to and consuming from JetStream.
//! - [`outbox`], [`inbox`], [`store`]: exactly-once effects over at-least-once delivery.

pub mod event;
pub mod inbox;
pub mod jetstream;
pub mod kafka;
pub mod outbox;
pub mod rpc;
pub mod store;

pub use event::Event;

pub use rpc::{Channel, Deadline, MeshServer, ServeOptions, Transport, serve};
