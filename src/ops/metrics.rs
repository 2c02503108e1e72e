//! The node's metrics registry: counters every part of the node updates and
//! `/metrics` renders.

/// Counters exported on `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub landed_files: std::sync::atomic::AtomicU64,
    pub landed_bytes: std::sync::atomic::AtomicU64,
}
