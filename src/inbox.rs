//! The inbox: files dropped into `[inbox] dir` by other means (stub; see issue 4).

use crate::config::InboxConfig;
use crate::spool::Spool;
use std::sync::Arc;
use tokio::sync::watch;

pub async fn run(cfg: InboxConfig, spool: Arc<Spool>, mut shutdown: watch::Receiver<bool>) {
    let _ = (cfg, spool);
    let _ = shutdown.changed().await;
}
