//! The smoke test runner (`just smoke`).
//!
//! Not built yet: issue 7 fills this crate with the scenarios run through the gateway. The
//! crate exists so the workspace has the layout DESIGN.md describes.
