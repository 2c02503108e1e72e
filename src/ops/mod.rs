//! Operating the node: the HTTP endpoint for directors and Prometheus (`http`),
//! the health checks behind `/healthz` (`health`), the metrics registry
//! (`metrics`), systemd notifications (`notify`), the operator commands (`admin`)
//! and `check-config`'s run-time checks (`check`).

pub mod admin;
pub mod check;
pub mod health;
pub mod http;
pub mod metrics;
pub mod notify;
