//! Wiring of a running node: load the configuration, open (and lock) the spool,
//! load host keys, bind every listener, start the SSH server, the pipeline, the
//! inbox and the HTTP endpoint under one [`Shutdown`], and on SIGTERM/SIGINT stop
//! accepting at once, let work in flight finish (bounded by `ssh.drain_time`)
//! and exit 0.

use crate::config::Config;
use crate::ingest::context::Shared;
use crate::ingest::ssh::{hostkey, server};
use crate::shutdown::Shutdown;
use crate::spool::Spool;
use crate::{ingest, ops, pipeline};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// `ingestd run`.
pub fn run(config: Option<PathBuf>, log_json: bool) -> Result<()> {
    init_logging(log_json);
    let cfg = Arc::new(Config::load(config.as_deref())?);
    // Every upload in flight holds a blocking-pool thread (its writer); leave room
    // for all of them plus the short blocking jobs (auth, commits).
    let blocking = cfg.ssh.max_sessions * 32 + 256;
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking)
        .enable_all()
        .build()?
        .block_on(run_node(cfg))
}

async fn run_node(cfg: Arc<Config>) -> Result<()> {
    let spool = Arc::new(
        Spool::open(
            &cfg.spool.dir,
            &cfg.node_id,
            cfg.spool.max_file_size.0,
            cfg.spool.min_free.0,
        )
        .with_context(|| format!("spool.dir: cannot use {}", cfg.spool.dir.display()))?,
    );
    let keys = hostkey::load_all(&cfg.ssh.host_key.to_vec())?;
    let russh_cfg = Arc::new(server::russh_config(&cfg, keys));
    let listeners = server::bind(&cfg).await?;
    let shared = Shared::new(cfg.clone(), spool.clone());
    let shutdown = Shutdown::new();

    shutdown.spawn(pipeline::run(cfg.clone(), spool.clone(), shutdown.clone()));
    if let Some(i) = cfg.inbox.clone() {
        shutdown.spawn(ingest::inbox::run(i, shared.clone(), shutdown.clone()));
    }
    if !cfg.health.listen.is_empty() {
        let l = tokio::net::TcpListener::bind(&cfg.health.listen)
            .await
            .with_context(|| format!("health.listen: cannot listen on {}", cfg.health.listen))?;
        // Not tracked: it answers 503 until the process exits.
        tokio::spawn(ops::http::serve(
            l,
            shared.metrics.clone(),
            shared.connections.clone(),
            shutdown.clone(),
        ));
    }
    shutdown.spawn(server::serve(
        shared.clone(),
        russh_cfg,
        listeners,
        shutdown.clone(),
    ));
    tracing::info!(node = %cfg.node_id, spool = %cfg.spool.dir.display(), "ingestd started");

    wait_for_signal().await;
    tracing::info!("stopping: no new connections; finishing transfers in flight");
    shutdown.trigger();
    let drain = cfg.ssh.drain_time.0;
    if shutdown.wait(drain).await {
        tracing::info!("stopped");
    } else {
        tracing::warn!(
            tasks = shutdown.tasks(),
            "stopped after ssh.drain_time ({}) with work still in flight; unacknowledged uploads are discarded",
            humantime::format_duration(drain)
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
