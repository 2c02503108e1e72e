//! The node's ingest context, shared by every connection and the inbox, and the
//! one fan-out after a landing: [`Shared::landed`] writes the `landed` log line,
//! counts the metrics and updates the sender's view, whatever the protocol.

use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::spool::Spool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// State shared by every connection of the node.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub spool: Arc<Spool>,
    /// Open SSH connections.
    pub connections: Arc<AtomicUsize>,
    /// Each sender's view of what they uploaded recently.
    pub vfs: crate::ingest::vfs::Vfs,
    pub metrics: Arc<Metrics>,
    /// `ssh.authorized_keys`, replaced by a reload (SIGHUP).
    pub(crate) authorized_keys: RwLock<Vec<String>>,
    /// `ssh.max_sessions`, replaced by a reload (SIGHUP).
    pub max_sessions: AtomicUsize,
    /// Open uploads and buffered bytes, node-wide (each connection takes a share).
    pub limits: Arc<crate::ingest::limits::NodeLimits>,
}

impl Shared {
    pub fn new(cfg: Arc<Config>, spool: Arc<Spool>) -> Arc<Shared> {
        let metrics: Arc<Metrics> = Arc::default();
        Arc::new(Shared {
            authorized_keys: RwLock::new(cfg.ssh.authorized_keys.to_vec()),
            max_sessions: AtomicUsize::new(cfg.ssh.max_sessions),
            vfs: crate::ingest::vfs::Vfs::with_limits(
                cfg.sftp.visible_for.0,
                cfg.sftp.max_view_per_user.0 as usize,
                cfg.sftp.max_view.0 as usize,
            ),
            limits: crate::ingest::limits::NodeLimits::new(&cfg.ssh, metrics.uploads_open()),
            metrics,
            cfg,
            spool,
            connections: Arc::default(),
        })
    }
}

impl Shared {
    /// Take the settings a reload may change (SIGHUP) from `cfg`; connections
    /// already open keep going.
    pub fn reload(&self, cfg: &Config) {
        *self.authorized_keys.write().unwrap() = cfg.ssh.authorized_keys.to_vec();
        self.max_sessions
            .store(cfg.ssh.max_sessions, Ordering::SeqCst);
    }

    /// Every authorized_keys pattern in force.
    pub fn authorized_keys(&self) -> Vec<String> {
        self.authorized_keys.read().unwrap().clone()
    }

    /// Everything that follows a successful landing: the log line, the metrics,
    /// the sender's view.
    pub fn landed(&self, r: &crate::core::record::Record, started: std::time::Instant) {
        log_landed(r, started);
        self.metrics.upload(
            &r.protocol,
            crate::ops::metrics::UploadOutcome::Landed,
            r.size,
            started.elapsed(),
        );
        self.vfs.landed(r);
    }
}

/// The one structured log line per landed upload.
fn log_landed(r: &crate::core::record::Record, started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64();
    let mbps = if secs > 0.0 {
        r.size as f64 / 1e6 / secs
    } else {
        0.0
    };
    // Every field a sender (or inbox producer) can influence is a Debug field:
    // quoted and escaped, so a name like `x size=999` or one with a newline cannot
    // forge a field or a line.
    tracing::info!(
        id = ?r.id,
        user = ?r.user,
        remote = ?r.remote_addr,
        protocol = ?r.protocol,
        path = ?r.path,
        size = r.size,
        blake3 = %r.blake3,
        duration_ms = (secs * 1000.0).round() as u64,
        mb_per_s = format!("{mbps:.1}"),
        "landed"
    );
}
