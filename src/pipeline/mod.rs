//! The per-file pipeline: archive, then process, then forward.
//!
//! Each step is a *stage* working on one state directory of the spool:
//!
//! | stage   | works on      | on success moves the entry to               | workers                 |
//! |---------|---------------|---------------------------------------------|-------------------------|
//! | archive | `ready/`      | `archived/` (`processed/` without [process])| `pipeline.archive_workers` |
//! | process | `archived/`   | `processed/`                                | `process.concurrency`   |
//! | forward | `processed/`  | removed                                     | `pipeline.forward_workers` |
//!
//! A stage has one scanner (a blocking thread walking its directory with `read_dir`,
//! never holding more than one directory entry at a time) that hands entries to at
//! most `workers` concurrent tasks; an in-flight set (bounded by `workers`) keeps an
//! entry from being handed out twice. So memory is bounded however large the backlog.
//! The scanner runs a pass when woken (the spool's wake-up after a commit into
//! `ready/`, or the previous stage's success), when the earliest retry falls due,
//! and every `pipeline.rescan_interval` (which also notices entries requeued by
//! `ingestd retry`).
//!
//! Failures: a counted failure ([`fsx::StepError::Failed`]) is written to the entry's
//! `state.json` with the retry time (`initial_backoff * 2^(n-1)`, capped at
//! `max_backoff`, ±20% jitter); after `retry.max_attempts` the entry moves to
//! `quarantine/`. An *outage* (target directory missing, not a directory, read-only,
//! full, I/O errors) is not the entry's fault and is not counted: the whole stage
//! pauses with a stage-level backoff capped at `min(max_backoff, rescan_interval)`,
//! then tries again, so it heals on its own soon after the target returns.
//!
//! Every step is idempotent: its output name is a pure function of the entry, it is
//! written under a temporary name and renamed, and the state rename comes last. A
//! crash at any point makes the step run again with the same result.

pub mod archive;
pub mod cgroup;
pub mod forward;
pub mod fsx;
pub mod process;
pub mod products;
pub mod reaper;
pub mod state;

use crate::config::Config;
use crate::core::record::Attempt;
use crate::shutdown::Shutdown;
use crate::spool::{Spool, ARCHIVED, PROCESSED, READY};
use fsx::StepError;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Archive,
    Process,
    Forward,
}

impl Kind {
    fn step(self) -> &'static str {
        match self {
            Kind::Archive => state::STEP_ARCHIVE,
            Kind::Process => state::STEP_PROCESS,
            Kind::Forward => state::STEP_FORWARD,
        }
    }
}

struct Stage {
    kind: Kind,
    /// `spool/<state>` this stage takes its entries from.
    state: &'static str,
    dir: PathBuf,
    sem: Arc<Semaphore>,
    inflight: Mutex<HashSet<String>>,
    /// Wakes this stage's scanner.
    notify: Arc<Notify>,
    /// Woken after each success (the next stage's scanner).
    next: Option<Arc<Notify>>,
    /// Consecutive outage probes (stage-level backoff).
    outages: AtomicU32,
    /// Unix ms before which no entry is handed out (outage pause).
    pause_until_ms: AtomicU64,
}

/// How one step attempt ended, as reported to an [`Observer`].
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    Ok,
    /// A counted failure, to be retried; the reason.
    Failed(&'a str),
    /// The last counted failure: the entry went to quarantine.
    Quarantined(&'a str),
    /// The target was unavailable (not counted against the entry).
    Outage(&'a str),
}

/// Told about every step attempt (metrics and health; `app` passes the ops side).
pub trait Observer: Send + Sync + 'static {
    fn step(&self, step: &'static str, outcome: Outcome<'_>, took: Duration);
}

struct NoObserver;
impl Observer for NoObserver {
    fn step(&self, _: &'static str, _: Outcome<'_>, _: Duration) {}
}

struct Shared {
    obs: Arc<dyn Observer>,
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    shutdown: Shutdown,
    /// The steps in flight; waited for at shutdown.
    steps: TaskTracker,
}

/// Run the pipeline until `shutdown` is triggered; then stop handing out work, let
/// the steps in flight finish (process commands are killed: they rerun after the
/// restart, uncounted) and return.
pub async fn run(cfg: Arc<Config>, spool: Arc<Spool>, shutdown: Shutdown) {
    run_observed(cfg, spool, shutdown, Arc::new(NoObserver)).await
}

/// [`run`], telling `obs` about every step attempt.
pub async fn run_observed(
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    shutdown: Shutdown,
    obs: Arc<dyn Observer>,
) {
    // The target roots are created once, here; later a missing root is an outage.
    {
        let dirs = [cfg.archive.dir.clone(), cfg.forward.dir.clone()];
        let _ = tokio::task::spawn_blocking(move || {
            for d in dirs {
                if let Err(e) = std::fs::create_dir_all(&d) {
                    tracing::warn!(dir = ?d, error = ?e.to_string(), "cannot create pipeline target");
                }
            }
        })
        .await;
    }

    // Output directories of process commands the spool's start-up sweep could not
    // remove (a tree too deep for a recursive removal): removed without recursion,
    // before any step runs.
    {
        let work = spool.root().join(crate::spool::WORK);
        let _ = tokio::task::spawn_blocking(move || sweep_process_leftovers(&work)).await;
    }
    // Orphans of process commands are re-parented to the daemon (see `reaper`).
    let reaping = cfg.process.is_some() && reaper::enable();

    let process_notify = Arc::new(Notify::new());
    let forward_notify = Arc::new(Notify::new());
    let root = spool.root().to_path_buf();
    let mk = |kind, state: &'static str, workers: usize, notify, next| {
        Arc::new(Stage {
            kind,
            state,
            dir: root.join(state),
            sem: Arc::new(Semaphore::new(workers.max(1))),
            inflight: Mutex::new(HashSet::new()),
            notify,
            next,
            outages: AtomicU32::new(0),
            pause_until_ms: AtomicU64::new(0),
        })
    };
    let (after_archive, process_workers) = match &cfg.process {
        Some(p) => (process_notify.clone(), p.concurrency),
        None => (forward_notify.clone(), cfg.pipeline.archive_workers),
    };
    let stages = [
        mk(
            Kind::Archive,
            READY,
            cfg.pipeline.archive_workers,
            spool.wake(),
            Some(after_archive),
        ),
        mk(
            Kind::Process,
            ARCHIVED,
            process_workers,
            process_notify,
            Some(forward_notify.clone()),
        ),
        mk(
            Kind::Forward,
            PROCESSED,
            cfg.pipeline.forward_workers,
            forward_notify,
            None,
        ),
    ];
    let sh = Arc::new(Shared {
        obs,
        cfg,
        spool,
        shutdown: shutdown.clone(),
        steps: TaskTracker::new(),
    });
    tracing::info!("pipeline started");
    let scanners: Vec<_> = stages
        .iter()
        .map(|st| tokio::spawn(stage_loop(sh.clone(), st.clone())))
        .collect();

    shutdown.stopped().await;
    for st in &stages {
        st.sem.close();
    }
    for s in scanners {
        let _ = s.await;
    }
    sh.steps.close();
    sh.steps.wait().await;
    if reaping {
        let n = tokio::task::spawn_blocking(|| reaper::after_step(None))
            .await
            .unwrap_or(0);
        if n > 0 {
            tracing::warn!(killed = n, "killed processes left by process commands");
        }
    }
    tracing::info!("pipeline stopped");
}

/// Whether a name in `work/` is a process command's output directory
/// (`<id>.<attempt>-<nonce>`) or a stale `out/` (`<id>.stale-<nonce>`).
fn is_process_output(name: &str) -> bool {
    let Some((id, tail)) = name.rsplit_once('.') else {
        return false;
    };
    !id.is_empty()
        && (tail.starts_with("stale-")
            || tail.split_once('-').is_some_and(|(a, n)| {
                !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) && n.len() == 8
            }))
}

/// Remove what is left in `work/` of process commands' output directories
/// (those the spool's start-up sweep could not remove), iteratively.
fn sweep_process_leftovers(work: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(work) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_process_output(name) {
            if let Err(err) = fsx::remove_tree(&e.path()) {
                tracing::warn!(path = ?e.path(), error = ?err.to_string(), "cannot remove a process output directory");
            }
        }
    }
}

async fn stage_loop(sh: Arc<Shared>, st: Arc<Stage>) {
    let rescan = sh.cfg.pipeline.rescan_interval.0;
    loop {
        if sh.shutdown.is_stopping() {
            break;
        }
        let now = state::now_ms();
        let pause = st.pause_until_ms.load(Ordering::SeqCst);
        let wake_at = if pause > now {
            Some(pause)
        } else {
            let (sh2, st2) = (sh.clone(), st.clone());
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || scan_pass(&sh2, &st2, &handle))
                .await
                .unwrap_or(None)
        };
        let now = state::now_ms();
        let mut sleep = rescan;
        if let Some(t) = wake_at {
            sleep = sleep.min(Duration::from_millis(t.saturating_sub(now)));
        }
        tokio::select! {
            _ = st.notify.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = sh.shutdown.stopped() => break,
        }
    }
}

/// One pass over the stage's directory: hand every due entry that is not in flight
/// to a task (waiting for a free worker). Returns the earliest future time at which
/// a skipped entry falls due (or the outage pause ends).
fn scan_pass(sh: &Arc<Shared>, st: &Arc<Stage>, handle: &tokio::runtime::Handle) -> Option<u64> {
    let rd = match std::fs::read_dir(&st.dir) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(dir = ?st.dir, error = ?e.to_string(), "cannot list spool directory");
            return None;
        }
    };
    let mut earliest: Option<u64> = None;
    let mut note = |t: u64| earliest = Some(earliest.map_or(t, |e: u64| e.min(t)));
    for e in rd {
        if sh.shutdown.is_stopping() {
            break;
        }
        let Ok(e) = e else { continue };
        let Ok(id) = e.file_name().into_string() else {
            continue;
        };
        if id.starts_with('.') || st.inflight.lock().unwrap().contains(&id) {
            continue;
        }
        let now = state::now_ms();
        let pause = st.pause_until_ms.load(Ordering::SeqCst);
        if pause > now {
            note(pause);
            break;
        }
        if st.kind == Kind::Process {
            if let Some((reason, r, killed)) =
                process::recover_stale_mark(sh.spool.root(), &id, &sh.cfg.retry)
            {
                let step = state::STEP_PROCESS;
                match r {
                    Ok(state::AfterFailure::Retry { attempts, .. }) => {
                        sh.obs.step(step, Outcome::Failed(&reason), Duration::ZERO);
                        tracing::warn!(id, step, attempts, reason = ?reason, killed, "the node stopped during this step; counted as a failed attempt");
                    }
                    Ok(state::AfterFailure::Quarantined { attempts }) => {
                        sh.obs
                            .step(step, Outcome::Quarantined(&reason), Duration::ZERO);
                        tracing::error!(id, step, attempts, reason = ?reason, killed, "the node stopped during this step; giving up, entry quarantined");
                    }
                    Err(err) => {
                        tracing::error!(id, step, error = ?err.to_string(), "the node stopped during this step; cannot record the failure");
                    }
                }
                note(now + sh.cfg.retry.initial_backoff.0.as_millis() as u64);
                continue;
            }
        }
        match state::load(&e.path()) {
            Ok(Some(s)) if s.next_try_ms > now => {
                note(s.next_try_ms);
                continue;
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                // A corrupt state is a counted failed attempt with backoff (never a
                // hot loop): record_failure replaces it with a fresh state.
                let attempt = Attempt {
                    step: st.kind.step().to_string(),
                    at: state::rfc3339_now(),
                    reason: format!("state.json unreadable: {err}"),
                    exit_code: None,
                    stderr_tail: None,
                };
                let root = sh.spool.root();
                match state::record_failure(root, st.state, &id, attempt, &sh.cfg.retry) {
                    Ok(after) => {
                        tracing::warn!(id, error = ?err.to_string(), outcome = ?after, "state.json unreadable; counted as a failed attempt")
                    }
                    Err(e) => {
                        tracing::error!(id, error = ?e.to_string(), "state.json unreadable and cannot be replaced");
                    }
                }
                note(now + sh.cfg.retry.initial_backoff.0.as_millis() as u64);
                continue;
            }
        }
        if st.kind == Kind::Archive && sh.spool.is_held(&id) {
            // landed by the inbox, whose source is not released yet (ms)
            note(now + 20);
            continue;
        }
        let permit = match handle.block_on(st.sem.clone().acquire_owned()) {
            Ok(p) => p,
            Err(_) => break, // closed: shutting down
        };
        if sh.shutdown.is_stopping() {
            break;
        }
        if !st.inflight.lock().unwrap().insert(id.clone()) {
            continue;
        }
        let _guard = handle.enter();
        sh.steps.spawn(run_one(sh.clone(), st.clone(), id, permit));
    }
    earliest
}

async fn run_one(sh: Arc<Shared>, st: Arc<Stage>, id: String, permit: OwnedSemaphorePermit) {
    let root = sh.spool.root().to_path_buf();
    let t0 = std::time::Instant::now();
    let res = match st.kind {
        Kind::Archive => {
            let (cfg, root, id) = (sh.cfg.clone(), root.clone(), id.clone());
            let to = if cfg.process.is_some() {
                ARCHIVED
            } else {
                PROCESSED
            };
            spawn_step(move || archive::archive(&cfg, &root, &id, to)).await
        }
        Kind::Process => match &sh.cfg.process {
            Some(pc) => process::process(pc, &root, &id, sh.shutdown.clone()).await,
            None => {
                let (root, id) = (root.clone(), id.clone());
                spawn_step(move || process::identity(&root, &id)).await
            }
        },
        Kind::Forward => {
            let (cfg, root, id) = (sh.cfg.clone(), root.clone(), id.clone());
            spawn_step(move || forward::forward(&cfg, &root, &id)).await
        }
    };
    let step = st.kind.step();
    let took = t0.elapsed();
    match res {
        Ok(()) => {
            sh.obs.step(step, Outcome::Ok, took);
            if st.kind == Kind::Forward {
                tracing::info!(id, "forwarded; entry done");
            } else {
                tracing::debug!(id, step, "step done");
            }
            if st.outages.swap(0, Ordering::SeqCst) > 0 {
                tracing::info!(step, "target available again");
            }
            if let Some(n) = &st.next {
                n.notify_one();
            }
        }
        Err(StepError::Gone) | Err(StepError::Interrupted) => {}
        Err(StepError::Outage(msg)) => {
            sh.obs.step(step, Outcome::Outage(&msg), took);
            let now = state::now_ms();
            if st.pause_until_ms.load(Ordering::SeqCst) <= now {
                let n = st.outages.fetch_add(1, Ordering::SeqCst) + 1;
                let r = &sh.cfg.retry;
                let cap = r.max_backoff.0.min(sh.cfg.pipeline.rescan_interval.0);
                let d = state::backoff(n, r.initial_backoff.0.min(cap), cap);
                st.pause_until_ms
                    .fetch_max(now + d.as_millis() as u64, Ordering::SeqCst);
                // messages hold paths (sender names): a quoted field, never the message
                tracing::warn!(
                    id,
                    step,
                    reason = ?msg,
                    "target unavailable, {step} paused for {} (not counted as an attempt)",
                    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
                );
            }
        }
        Err(StepError::Failed(f)) => {
            let attempt = Attempt {
                step: step.to_string(),
                at: state::rfc3339_now(),
                reason: f.reason.clone(),
                exit_code: f.exit_code,
                stderr_tail: f.stderr_tail,
            };
            let (retry, root2, id2, dir) =
                (sh.cfg.retry.clone(), root.clone(), id.clone(), st.state);
            let r = tokio::task::spawn_blocking(move || {
                state::record_failure(&root2, dir, &id2, attempt, &retry)
            })
            .await;
            let quarantined = matches!(r, Ok(Ok(state::AfterFailure::Quarantined { .. })));
            let o = if quarantined {
                Outcome::Quarantined(&f.reason)
            } else {
                Outcome::Failed(&f.reason)
            };
            sh.obs.step(step, o, took);
            match r {
                Ok(Ok(state::AfterFailure::Retry {
                    attempts,
                    next_try_ms,
                })) => tracing::warn!(
                    id,
                    step,
                    attempts,
                    reason = ?f.reason,
                    "attempt failed; retry in {}",
                    humantime::format_duration(Duration::from_millis(
                        next_try_ms.saturating_sub(state::now_ms())
                    ))
                ),
                Ok(Ok(state::AfterFailure::Quarantined { attempts })) => tracing::error!(
                    id,
                    step,
                    attempts,
                    reason = ?f.reason,
                    "attempt failed; giving up, entry quarantined"
                ),
                Ok(Err(e)) => {
                    tracing::error!(id, step, reason = ?f.reason, error = ?e.to_string(), "cannot record failure")
                }
                Err(e) => {
                    tracing::error!(id, step, error = ?e.to_string(), "cannot record failure")
                }
            }
            st.notify.notify_one();
        }
    }
    st.inflight.lock().unwrap().remove(&id);
    drop(permit);
}

async fn spawn_step(
    f: impl FnOnce() -> Result<(), StepError> + Send + 'static,
) -> Result<(), StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StepError::failed(format!("internal error: {e}"))))
}

#[cfg(test)]
mod tests;
