//! systemd's notification protocol (`sd_notify(3)`), spoken directly: one
//! datagram per message to the unix socket named by `NOTIFY_SOCKET` (a path, or
//! `@name` for the abstract namespace). Without `NOTIFY_SOCKET` every call is a
//! no-op, so the node runs the same outside systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; `None` outside systemd (`Type=notify`).
pub struct Notifier {
    sock: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`. The variable is left in place: child processes
    /// (the process command) are never given it since the unit sets
    /// `NotifyAccess=main`.
    pub fn from_env() -> Notifier {
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let b = p.as_encoded_bytes();
            let addr = if let Some(name) = b.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&p).ok()?
            };
            let s = UnixDatagram::unbound().ok()?;
            Some((s, addr))
        });
        Notifier { sock }
    }

    pub fn enabled(&self) -> bool {
        self.sock.is_some()
    }

    /// Send one message (`"READY=1"`, `"STATUS=..."`, newline-separated lines).
    pub fn send(&self, msg: &str) {
        if let Some((s, addr)) = &self.sock {
            if let Err(e) = s.send_to_addr(msg.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }
}

/// The watchdog interval systemd expects pings at (`WATCHDOG_USEC`, for this
/// process if `WATCHDOG_PID` names one), halved as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
