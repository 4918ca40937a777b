//! The mesh: how Shopmesh services reach each other (DESIGN.md, "The mesh").
//!
//! So far: the Kafka plumbing every service and `just up` need (settings, topic creation, a
//! readiness check). HTTP/gRPC over NATS, the event envelope, the outbox and the inbox come
//! with issue 3.

pub mod kafka;
