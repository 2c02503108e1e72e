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

/// Entry points for the fuzz targets in `fuzz/` that reach past the public
/// modules. Not an API.
#[doc(hidden)]
pub mod fuzz_api {
    /// Parse authorized_keys text as the node does and evaluate every entry's
    /// options for a few addresses.
    pub fn authorized_keys(text: &str) {
        use russh::keys::ssh_key::authorized_keys::AuthorizedKeys;
        let ips: [std::net::IpAddr; 3] = [
            [10, 1, 2, 3].into(),
            [127, 0, 0, 1].into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ];
        for entry in AuthorizedKeys::new(text).flatten() {
            for ip in ips {
                let _ = crate::core::authkeys::options_allow(entry.config_opts().iter(), Some(ip));
            }
        }
        for ip in ips {
            let _ = crate::core::netmatch::from_matches(text, ip);
        }
    }
}
