//! ingestd: durable high-volume file ingest over SCP and SFTP.
//! See ARCHITECTURE.md for the module map and the invariants.

pub mod admin;
pub mod auth;
pub mod config;
pub mod exec_cmd;
pub mod health;
pub mod hostkey;
pub mod inbox;
pub mod pipeline;
pub mod record;
pub mod scp_proto;
pub mod scp_sink;
pub mod server;
pub mod sftp;
pub mod spool;
pub mod units;
pub mod vfs;
pub mod vpath;
pub mod writer;
