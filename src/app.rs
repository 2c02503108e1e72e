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
        let b = b.fmt_fields(SafeFields).with_filter_reloading();
        let h = setter(b.reload_handle());
        b.init();
        h
    }
}

/// Field formatting of the plain log: `key=value`, where nothing a sender chose
/// can forge a line or a field. Every string value is quoted and escaped as Rust
/// `Debug` does (`path="x size=999"`); any other value that is not a bare token
/// (spaces, `=`, quotes, control characters) is quoted the same way; the message
/// keeps its text but control characters (a newline) are escaped.
pub struct SafeFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for SafeFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = SafeVisitor {
            w: writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct SafeVisitor<'w> {
    w: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl SafeVisitor<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.w, "{sep}{}", escape_controls(value))
        } else {
            write!(self.w, "{sep}{}={}", field.name(), token(value))
        };
    }
}

impl tracing::field::Visit for SafeVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.put(field, value);
        } else {
            let q = format!("{value:?}");
            self.put(field, &q);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let s = format!("{value:?}");
        self.put(field, &s);
    }
}

/// `s` if it is a bare token or already a well-formed quoted string, else quoted.
fn token(s: &str) -> std::borrow::Cow<'_, str> {
    let bare = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '"' || c == '\\');
    if bare || is_quoted(s) {
        s.into()
    } else {
        format!("{s:?}").into()
    }
}

/// A `Debug`-formatted string: `"..."` with every inner quote escaped and no
/// control characters.
fn is_quoted(s: &str) -> bool {
    if s.len() < 2 || !s.starts_with('"') || !s.ends_with('"') {
        return false;
    }
    let inner = &s[1..s.len() - 1];
    let mut esc = false;
    for c in inner.chars() {
        if c.is_control() {
            return false;
        }
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '"' {
            return false;
        }
    }
    !esc
}

/// Control characters (newline, CR, escape, ...) as `\n`, `\u{1b}`.
fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
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
    // Locks the spool first: a second daemon on it is refused before it sweeps
    // anything (operator commands do not lock).
    let spool = Spool::open(
        &cfg.spool.dir,
        &cfg.node_id,
        cfg.spool.max_file_size.0,
        cfg.spool.min_free.0,
    )
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            anyhow::anyhow!("{e}")
        } else {
            anyhow::anyhow!("spool.dir: cannot use {}: {e}", cfg.spool.dir.display())
        }
    })?
    .with_name_check(&cfg.archive.dir, &cfg.archive.layout);
    let spool = Arc::new(spool);
    // Claims of inbox files landed just before a crash are resolved before the
    // pipeline may move their entries on.
    if let Some(i) = &cfg.inbox {
        if let Err(e) = ingest::inbox::recover_claims(&i.dir, &spool) {
            tracing::error!(dir = ?i.dir, error = ?e.to_string(), "inbox: cannot recover claims");
        }
    }
    let keys = hostkey::load_all(&cfg.ssh.host_key.to_vec())?;
    let russh_cfg = Arc::new(server::russh_config(&cfg, keys));
    let listeners = server::bind(&cfg).await?;
    raise_open_file_limit(cfg.ssh.max_open_files);
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
        let limits = ops::http::Limits::from_config(&cfg.health);
        tokio::spawn(ops::http::serve(l, health.clone(), limits));
    }
    shutdown.spawn(server::serve(
        shared.clone(),
        russh_cfg,
        listeners,
        shutdown.clone(),
    ));
    tracing::info!(node = ?cfg.node_id, spool = ?cfg.spool.dir, "ingestd started");
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
    let new = match Config::load_text(path) {
        Ok((c, text)) => match crate::config::reload_refusal(running, &c, &text) {
            None => c,
            Some(why) => {
                tracing::error!("SIGHUP: configuration refused, nothing changed: {why}");
                return;
            }
        },
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

/// Raise the soft open-file limit to the hard one (as systemd's LimitNOFILE
/// sets both, this matters when run by hand) and warn when it leaves too little
/// room for `ssh.max_open_files` uploads plus connections and the pipeline.
fn raise_open_file_limit(max_open_files: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |l| l.0);
    let want = 2 * max_open_files as u64 + 1024;
    if soft < want {
        tracing::warn!(
            limit = soft,
            wanted = want,
            "the open-file limit is low for ssh.max_open_files (each upload holds a file, each connection a socket): raise LimitNOFILE or lower ssh.max_open_files"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Untrusted text in any kind of field, or in the message, cannot add a line or
    /// a field to the plain log.
    #[test]
    fn plain_log_fields_cannot_be_forged() {
        let buf = Buf::default();
        let b2 = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || b2.clone())
            .with_ansi(false)
            .fmt_fields(SafeFields)
            .finish();
        let evil = "x size=999\n2026-01-01T00:00:00Z  INFO landed id=forged";
        tracing::subscriber::with_default(sub, || {
            tracing::info!(user = evil, path = %evil, remote = ?evil, n = 5, ok = "plain", "msg {evil}");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        for f in ["user", "path", "remote"] {
            assert!(
                out.contains(&format!(r#" {f}="x size=999\n2026"#)),
                "{f}: {out}"
            );
        }
        assert!(out.contains("n=5"), "{out}");
        assert!(out.contains("ok=\"plain\""), "{out}");
        assert!(out.contains("msg x size=999\\n2026"), "{out}");
        assert_eq!(token("abc"), "abc");
        assert_eq!(token("a b"), "\"a b\"");
        assert_eq!(token("\"a b\""), "\"a b\"");
        assert_eq!(token("\"a\" b=\"c\""), "\"\\\"a\\\" b=\\\"c\\\"\"");
    }
}
