//! The node's bounds on uploads in progress, per connection and per node: open
//! files (every unfinished upload holds one descriptor) and bytes received but
//! not yet written (memory queued for the writers).
//!
//! Open files beyond a bound are refused at once with a clear reason (the SCP
//! error line or SFTP status carries it). Buffered bytes beyond a bound are not
//! refused but waited for: the connection that sends faster than the disk
//! writes is slowed (SSH flow control does the rest), and no other connection
//! is. With the defaults one address (`ssh.max_sessions_per_ip` connections ×
//! `ssh.max_open_files_per_connection`) cannot fill the node's `ssh.max_open_files`.

use crate::config::SshConfig;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's share: counted across every connection.
pub struct NodeLimits {
    open: AtomicUsize,
    /// `open` as the `uploads_open` metric.
    gauge: Gauge,
    max_open: usize,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    per_conn_open: usize,
    per_conn_bytes: usize,
}

/// One connection's share; every [`FileTicket`] and byte reservation also counts
/// against the node's.
pub struct ConnLimits {
    node: Arc<NodeLimits>,
    open: AtomicUsize,
    bytes: Arc<Semaphore>,
}

/// Why an upload cannot be opened now. Shown to the sender.
#[derive(Debug, thiserror::Error)]
pub enum Busy {
    #[error("too many files open on this connection (limit {0}); finish or close some first")]
    Connection(usize),
    #[error("node busy: too many uploads in progress (limit {0}); try again later")]
    Node(usize),
}

impl NodeLimits {
    pub fn new(cfg: &SshConfig, gauge: Gauge) -> Arc<NodeLimits> {
        let max_bytes = cfg.max_buffered.0.max(1) as usize;
        Arc::new(NodeLimits {
            open: AtomicUsize::new(0),
            gauge,
            max_open: cfg.max_open_files,
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
            per_conn_open: cfg.max_open_files_per_connection,
            per_conn_bytes: (cfg.max_buffered_per_connection.0.max(1) as usize).min(max_bytes),
        })
    }

    /// A new connection's share.
    pub fn connection(self: &Arc<Self>) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            node: self.clone(),
            open: AtomicUsize::new(0),
            bytes: Arc::new(Semaphore::new(self.per_conn_bytes)),
        })
    }

    /// Uploads open on the node now.
    #[cfg(test)]
    fn open_files(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Take one slot of `max` from `n`, or say no.
fn take(n: &AtomicUsize, max: usize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

impl ConnLimits {
    /// One more open upload, or a refusal naming the bound that was hit.
    pub fn open_file(self: &Arc<Self>) -> Result<FileTicket, Busy> {
        let node = &self.node;
        if !take(&self.open, node.per_conn_open) {
            return Err(Busy::Connection(node.per_conn_open));
        }
        if !take(&node.open, node.max_open) {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy::Node(node.max_open));
        }
        node.gauge.inc();
        Ok(FileTicket { conn: self.clone() })
    }

    /// Reserve `n` bytes of buffer (capped at the connection's whole share, so a
    /// single large chunk cannot wait forever). Waits while this connection, or
    /// the node, has too much queued.
    pub async fn reserve(&self, n: usize) -> Reserved {
        let n = n.clamp(1, self.node.per_conn_bytes.min(self.node.max_bytes)) as u32;
        // Always connection first, then node: no two reservations wait on each
        // other in opposite orders.
        let conn = self.bytes.clone().acquire_many_owned(n).await.ok();
        let node = self.node.bytes.clone().acquire_many_owned(n).await.ok();
        Reserved {
            _conn: conn,
            _node: node,
        }
    }
}

/// One open upload; released when dropped.
pub struct FileTicket {
    conn: Arc<ConnLimits>,
}

impl Drop for FileTicket {
    fn drop(&mut self) {
        self.conn.open.fetch_sub(1, Ordering::SeqCst);
        self.conn.node.open.fetch_sub(1, Ordering::SeqCst);
        self.conn.node.gauge.dec();
    }
}

/// Bytes queued for a writer; released when they are written (dropped).
pub struct Reserved {
    _conn: Option<OwnedSemaphorePermit>,
    _node: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::ByteSize;

    fn cfg(per_conn: usize, node: usize) -> SshConfig {
        SshConfig {
            max_open_files: node,
            max_open_files_per_connection: per_conn,
            max_buffered: ByteSize(1000),
            max_buffered_per_connection: ByteSize(100),
            ..Default::default()
        }
    }

    #[test]
    fn open_files_are_bounded_per_connection_and_per_node_and_released() {
        let node = NodeLimits::new(&cfg(2, 3), Gauge::default());
        let (a, b) = (node.connection(), node.connection());
        let a1 = a.open_file().unwrap();
        let _a2 = a.open_file().unwrap();
        assert!(matches!(a.open_file(), Err(Busy::Connection(2))));
        let _b1 = b.open_file().unwrap();
        assert!(matches!(b.open_file(), Err(Busy::Node(3))));
        assert_eq!(node.open_files(), 3);
        assert_eq!(node.gauge.get(), 3);
        drop(a1);
        let _b2 = b.open_file().unwrap();
        assert_eq!(node.open_files(), 3);
        assert!(Busy::Node(3).to_string().contains("try again later"));
    }

    #[tokio::test]
    async fn buffered_bytes_wait_per_connection_without_stalling_others() {
        let node = NodeLimits::new(&cfg(2, 3), Gauge::default());
        let (a, b) = (node.connection(), node.connection());
        let held = a.reserve(100).await; // a's whole share
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), a.reserve(1)).await;
        assert!(more.is_err(), "a must wait for its own bytes to be written");
        // b is not slowed by a.
        let _b = tokio::time::timeout(std::time::Duration::from_millis(50), b.reserve(100))
            .await
            .expect("another connection is not held up");
        drop(held);
        let _a = tokio::time::timeout(std::time::Duration::from_millis(50), a.reserve(5000))
            .await
            .expect("a chunk larger than the share is capped, not stuck");
    }
}
