//! The one shutdown signal of the node. Every long-lived task (listeners, SSH
//! connections and their protocol tasks, the pipeline, the inbox, the HTTP
//! endpoint) holds a clone, is spawned through [`Shutdown::spawn`] so it is
//! tracked, and obeys [`Shutdown::stopped`]. `app` triggers it on SIGTERM/SIGINT
//! and then waits, bounded by the configured drain time, for the tracked tasks.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Tell every task to stop (idempotent).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once [`trigger`](Self::trigger) was called; cheap, callable from any thread.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the node is stopping.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// Spawn a task the node waits for when it stops.
    pub fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(f)
    }

    /// Number of tracked tasks still running.
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }

    /// After [`trigger`](Self::trigger): wait for every tracked task, at most
    /// `drain`. True if all finished in time.
    pub async fn wait(&self, drain: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_ok()
    }
}
