//! The pure core: protocol state machines, names and rules, with no I/O at all
//! (no tokio, no `std::fs`, no sockets, no clocks read here). Everything under
//! `core/` can be unit-tested and fuzzed from bytes alone; the drivers in
//! `ingest/` feed it events and carry out the effects it returns.

pub mod authkeys;
pub mod defender;
pub mod naming;
pub mod netmatch;
pub mod procs;
pub mod record;
pub mod scp;
pub mod sftp;
pub mod units;
pub mod vpath;
