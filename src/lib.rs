//! ingestd: durable high-volume file ingest over SCP and SFTP.
//! See ARCHITECTURE.md for the module map and the invariants.

pub mod config;
pub mod record;
pub mod spool;
pub mod units;
pub mod admin;
pub mod inbox;
pub mod pipeline;
pub mod scp_proto;
pub mod exec_cmd;
pub mod vpath;
