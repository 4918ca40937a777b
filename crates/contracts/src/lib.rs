//! Contracts shared across Shopmesh services: the gRPC APIs, the saga's topics and event
//! payloads, and the NATS subjects saga events are mirrored on. Nothing here does I/O.

pub mod events;
pub mod subjects;
pub mod topics;

/// Every message and service of `proto/`, encoded, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shopmesh_descriptor");

/// `proto/product.proto`.
pub mod product {
    tonic::include_proto!("shopmesh.product.v1");
}

/// `proto/order.proto`.
pub mod order {
    tonic::include_proto!("shopmesh.order.v1");
}
