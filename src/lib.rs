//! ingestd: durable high-volume file ingest over SCP and SFTP.
//! See ARCHITECTURE.md for the code map and the invariants.
//!
//! The library is the whole node; `main.rs` only calls [`cli::main`]. Modules are
//! public only where the binary, the integration tests or the benchmarks need them.

pub(crate) mod app;
pub mod cli;
pub mod config;
pub mod core;
pub(crate) mod ingest;
pub(crate) mod ops;
pub mod pipeline;
pub mod shutdown;
pub mod spool;
