//! The Kafka → NATS JetStream bridge (DESIGN.md, "Topics, subjects, the saga", step 4).
//!
//! Not built yet: issue 7 fills this crate with the mirror library and its binary. The crate
//! exists so the workspace has the layout DESIGN.md describes.
