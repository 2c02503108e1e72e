//! Wiring of a running node: load the configuration, open (and lock) the spool,
//! load host keys, bind every listener, start the SSH server, the pipeline, the
//! inbox, the spool census and the HTTP endpoint under one [`Shutdown`]; tell
//! systemd (READY=1, STATUS=, WATCHDOG=1); on SIGHUP reload what can change
//! safely; and on SIGTERM/SIGINT (STOPPING=1) stop
//! accepting at once, let work in flight finish (bounded by `ssh.drain_time`)
//! and exit 0.

use crate::config::Config;
use crate::ingest::context::Shared;
use crate::ingest::ssh::{hostkey, server};
use crate::ops::health::{Health, Rules};
use crate::ops::notify::Notifier;
use crate::shutdown::Shutdown;
use crate::spool::Spool;
use crate::{ingest, ops, pipeline};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Replaces the log filter (SIGHUP); returns an error for a filter that does not parse.
type SetLogFilter = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// The log filter in force: `log.level`, else `RUST_LOG`, else "info,russh=warn".
fn log_filter(cfg: &Config) -> String {
    if !cfg.log.level.is_empty() {
        return cfg.log.level.clone();
    }
    std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info,russh=warn".into())
}

fn init_logging(json: bool, filter: &str) -> SetLogFilter {
    let f = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    fn setter<L, S>(h: tracing_subscriber::reload::Handle<L, S>) -> SetLogFilter
    where
        L: From<tracing_subscriber::EnvFilter> + 'static,
        S: 'static,
        tracing_subscriber::reload::Handle<L, S>: Send + Sync,
    {
        Box::new(move |s: &str| {
            let f = tracing_subscriber::EnvFilter::try_new(s)?;
            h.reload(L::from(f))?;
            Ok(())
        })
    }
    if json {
        let b = b.json().with_filter_reloading();
        let h = setter(b.reload_handle());
        b.init();
        h
    } else {
        let b = b.with_filter_reloading();
        let h = setter(b.reload_handle());
        b.init();
        h
    }
}

/// `ingestd run`.
pub fn run(config: Option<PathBuf>, log_json: bool) -> Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let set_log = init_logging(log_json, &log_filter(&cfg));
    let cfg = Arc::new(cfg);
    // Every upload in flight holds a blocking-pool thread (its writer); leave room
    // for all of them plus the short blocking jobs (auth, commits).
    let blocking = cfg.ssh.max_sessions * 32 + 256;
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking)
        .enable_all()
        .build()?
        .block_on(run_node(cfg, config, set_log))
}

async fn run_node(cfg: Arc<Config>, path: Option<PathBuf>, set_log: SetLogFilter) -> Result<()> {
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
    let health = Health::new(
        Rules::from_config(&cfg),
        shared.metrics.clone(),
        shared.connections.clone(),
        shutdown.clone(),
    );
    let notifier = Arc::new(Notifier::from_env());

    shutdown.spawn(pipeline::run_observed(
        cfg.clone(),
        spool.clone(),
        shutdown.clone(),
        health.clone(),
    ));
    if let Some(i) = cfg.inbox.clone() {
        shutdown.spawn(ingest::inbox::run(i, shared.clone(), shutdown.clone()));
    }
    shutdown.spawn(
        health
            .clone()
            .census_loop(spool.clone(), cfg.health.census_interval.0),
    );
    if !cfg.health.listen.is_empty() {
        let l = tokio::net::TcpListener::bind(&cfg.health.listen)
            .await
            .with_context(|| format!("health.listen: cannot listen on {}", cfg.health.listen))?;
        // Not tracked: it answers 503 until the process exits.
        tokio::spawn(ops::http::serve(l, health.clone()));
    }
    shutdown.spawn(server::serve(
        shared.clone(),
        russh_cfg,
        listeners,
        shutdown.clone(),
    ));
    tracing::info!(node = %cfg.node_id, spool = %cfg.spool.dir.display(), "ingestd started");
    notifier.send("READY=1");
    // Not tracked: STATUS= and watchdog pings go on while the node drains.
    let status_task = tokio::spawn(status_loop(notifier.clone(), health.clone()));

    let mut running = (*cfg).clone();
    wait_for_stop(|| {
        reload(path.as_deref(), &mut running, &shared, &health, &set_log);
        notifier.send(&format!("STATUS={}", status_line(&health)));
    })
    .await;
    tracing::info!("stopping: no new connections; finishing transfers in flight");
    notifier.send("STOPPING=1\nSTATUS=stopping: finishing transfers in flight");
    shutdown.trigger();
    let drain = cfg.ssh.drain_time.0;
    let done = shutdown.wait(drain).await;
    status_task.abort();
    if done {
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

/// `STATUS=` text: sessions, pipeline and health at a glance (`systemctl status`).
fn status_line(h: &Health) -> String {
    let (auth, unauth) = h.metrics().sessions();
    let m = h.metrics();
    let reasons = h.reasons();
    let health = if reasons.is_empty() {
        "healthy".to_string()
    } else {
        format!("503: {}", reasons.join("; "))
    };
    format!(
        "{auth} sessions ({unauth} unauthenticated); ready {}, archived {}, processed {}, quarantine {}; {health}",
        m.spool_files("ready"),
        m.spool_files("archived"),
        m.spool_files("processed"),
        m.spool_files("quarantine"),
    )
}

/// Send `STATUS=` every few seconds and, when systemd asks for it
/// (`WatchdogSec=`), `WATCHDOG=1` at half its interval.
async fn status_loop(n: Arc<Notifier>, h: Arc<Health>) {
    if !n.enabled() {
        return;
    }
    let wd = ops::notify::watchdog_interval();
    let every = wd.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    let mut last_status: Option<std::time::Instant> = None;
    loop {
        let mut msg = String::new();
        if wd.is_some() {
            msg.push_str("WATCHDOG=1\n");
        }
        if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            last_status = Some(std::time::Instant::now());
            msg.push_str(&format!("STATUS={}", status_line(&h)));
        }
        if !msg.is_empty() {
            n.send(msg.trim_end());
        }
        tokio::time::sleep(every).await;
    }
}

const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGHUP: re-read the configuration and apply what can change without a
/// restart; log what changed and what needs a restart. A config that does not
/// load changes nothing.
fn reload(
    path: Option<&std::path::Path>,
    running: &mut Config,
    shared: &Shared,
    health: &Health,
    set_log: &SetLogFilter,
) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: configuration refused, nothing changed: {e:#}");
            return;
        }
    };
    let changed = crate::config::changed_keys(running, &new);
    let (applied, restart): (Vec<&String>, Vec<&String>) = changed
        .iter()
        .partition(|k| crate::config::RELOADABLE.contains(&k.as_str()));
    if changed.iter().any(|k| k == "log.level") {
        if let Err(e) = set_log(&log_filter(&new)) {
            tracing::error!("SIGHUP: log.level: {e}");
        }
    }
    shared.reload(&new);
    health.set_rules(Rules::from_config(&new));
    crate::config::take_reloadable(running, &new);
    let list = |v: &[&String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    tracing::info!(
        changed = %list(&applied),
        needs_restart = %list(&restart),
        "SIGHUP: configuration reloaded"
    );
    for k in &restart {
        tracing::warn!(key = %k, "SIGHUP: {k} changed but takes effect only after a restart");
    }
}

/// Until SIGTERM or SIGINT; `on_hup` at each SIGHUP.
async fn wait_for_stop(mut on_hup: impl FnMut()) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => on_hup(),
        }
    }
}
