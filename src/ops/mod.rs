//! Operating the node: the HTTP endpoint for directors and Prometheus (`http`),
//! the metrics registry (`metrics`) and the operator commands (`admin`).

pub mod admin;
pub mod http;
pub mod metrics;
