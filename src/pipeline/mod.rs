//! The per-file pipeline: archive, then process, then forward (stub; see issue 4).

use crate::config::Config;
use crate::spool::Spool;
use std::sync::Arc;
use tokio::sync::watch;

/// Run the pipeline until `shutdown` becomes true.
pub async fn run(cfg: Arc<Config>, spool: Arc<Spool>, mut shutdown: watch::Receiver<bool>) {
    let _ = (cfg, spool);
    let _ = shutdown.changed().await;
}
