//! Should this node get new connections? `GET /healthz` answers 200 `ok`, or 503
//! with one reason per line, from the checks below. The directors (keepalived
//! `HTTP_GET`) set a node answering 503 to weight 0: it gets no new connections
//! and keeps serving the ones it has.
//!
//! | check | failing when | read |
//! |---|---|---|
//! | stopping | SIGTERM received | at each request |
//! | maintenance | `health.maintenance_file` exists | at each request (one `stat`) |
//! | sessions | open connections ≥ `ssh.max_sessions` | at each request |
//! | free_space | spool free space < `spool.min_free` | census, every `health.census_interval` |
//! | backlog | ready + archived + processed > `health.max_backlog` | census |
//! | archive | archive attempts failing (no success) for > `health.archive_failing_for` | each archive attempt |
//!
//! The census also feeds the spool gauges of `/metrics` (files and oldest age per
//! stage, free bytes).

use crate::config::Config;
use crate::ops::admin;
use crate::ops::metrics::{Metrics, StepOutcome, CHECKS};
use crate::pipeline::Observer;
use crate::shutdown::Shutdown;
use crate::spool::Spool;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The rules a SIGHUP may change.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub maintenance_file: Option<PathBuf>,
    pub max_sessions: usize,
    pub min_free: u64,
    /// Zero: the check is off.
    pub archive_failing_for: Duration,
    /// Zero: the check is off.
    pub max_backlog: u64,
}

impl Rules {
    pub fn from_config(cfg: &Config) -> Rules {
        Rules {
            maintenance_file: Some(cfg.health.maintenance_file.clone())
                .filter(|p| !p.as_os_str().is_empty()),
            max_sessions: cfg.ssh.max_sessions,
            min_free: cfg.spool.min_free.0,
            archive_failing_for: cfg.health.archive_failing_for.0,
            max_backlog: cfg.health.max_backlog,
        }
    }
}

#[derive(Default)]
struct Census {
    /// Free bytes on the spool file system (None until the first census or on error).
    free: Option<u64>,
    backlog: u64,
}

/// The node's health, shared by the HTTP endpoint, the census task and the pipeline
/// (as its [`Observer`]).
pub struct Health {
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    connections: Arc<AtomicUsize>,
    rules: RwLock<Rules>,
    census: Mutex<Census>,
    /// Since when archive attempts fail without a success in between, and the last reason.
    archive_failing: Mutex<Option<(Instant, String)>>,
}

impl Health {
    pub fn new(
        rules: Rules,
        metrics: Arc<Metrics>,
        connections: Arc<AtomicUsize>,
        shutdown: Shutdown,
    ) -> Arc<Health> {
        Arc::new(Health {
            metrics,
            shutdown,
            connections,
            rules: RwLock::new(rules),
            census: Mutex::default(),
            archive_failing: Mutex::default(),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn rules(&self) -> Rules {
        self.rules.read().unwrap().clone()
    }

    pub fn set_rules(&self, r: Rules) {
        *self.rules.write().unwrap() = r;
    }

    /// Empty when healthy; otherwise one line per failing check, `check: detail`.
    pub fn reasons(&self) -> Vec<String> {
        let rules = self.rules();
        let mut out: Vec<(&'static str, String)> = Vec::new();
        if self.shutdown.is_stopping() {
            out.push(("stopping", "the node is stopping".into()));
        }
        if let Some(f) = &rules.maintenance_file {
            if std::fs::symlink_metadata(f).is_ok() {
                out.push((
                    "maintenance",
                    format!("maintenance file {} exists", f.display()),
                ));
            }
        }
        let n = self.connections.load(Ordering::Relaxed);
        if n >= rules.max_sessions {
            out.push((
                "sessions",
                format!(
                    "{n} sessions open, at ssh.max_sessions {}",
                    rules.max_sessions
                ),
            ));
        }
        {
            let c = self.census.lock().unwrap();
            if let Some(free) = c.free {
                if free < rules.min_free {
                    out.push((
                        "free_space",
                        format!(
                            "{} free on the spool, below spool.min_free {}",
                            bytes(free),
                            bytes(rules.min_free)
                        ),
                    ));
                }
            }
            if rules.max_backlog > 0 && c.backlog > rules.max_backlog {
                out.push((
                    "backlog",
                    format!(
                        "{} entries waiting in the pipeline, above health.max_backlog {}",
                        c.backlog, rules.max_backlog
                    ),
                ));
            }
        }
        if !rules.archive_failing_for.is_zero() {
            if let Some((since, why)) = &*self.archive_failing.lock().unwrap() {
                let d = since.elapsed();
                if d > rules.archive_failing_for {
                    out.push((
                        "archive",
                        format!(
                            "archive failing for {}, above health.archive_failing_for {}: {}",
                            secs(d),
                            secs(rules.archive_failing_for),
                            one_line(why)
                        ),
                    ));
                }
            }
        }
        for c in CHECKS {
            self.metrics
                .health_check(c, out.iter().any(|(k, _)| *k == c));
        }
        out.into_iter().map(|(k, d)| format!("{k}: {d}")).collect()
    }

    /// One census of the spool: free space, files and oldest age per stage.
    pub fn census(&self, spool: &Spool) {
        let free = spool.free_bytes().ok();
        if let Some(f) = free {
            self.metrics.spool_free(f);
        }
        let now = crate::pipeline::state::now_ms();
        let mut backlog = 0;
        for stage in crate::ops::metrics::STAGES {
            let (n, oldest) = admin::census(&spool.dir(stage)).unwrap_or((0, None));
            let age = oldest.map_or(0, |t| now.saturating_sub(t));
            self.metrics
                .spool_stage(stage, n, Duration::from_millis(age));
            if matches!(stage, "ready" | "archived" | "processed") {
                backlog += n;
            }
        }
        *self.census.lock().unwrap() = Census { free, backlog };
    }

    /// Run the census every `interval` until the node stops.
    pub async fn census_loop(self: Arc<Self>, spool: Arc<Spool>, interval: Duration) {
        loop {
            let (h, s) = (self.clone(), spool.clone());
            let _ = tokio::task::spawn_blocking(move || h.census(&s)).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.shutdown.stopped() => return,
            }
        }
    }
}

impl Observer for Health {
    fn step(&self, step: &'static str, outcome: crate::pipeline::Outcome, took: Duration) {
        use crate::pipeline::Outcome;
        let (o, reason) = match outcome {
            Outcome::Ok => (StepOutcome::Ok, None),
            Outcome::Failed(r) => (StepOutcome::Failed, Some(r)),
            Outcome::Quarantined(r) => (StepOutcome::Quarantined, Some(r)),
            Outcome::Outage(r) => (StepOutcome::Outage, Some(r)),
        };
        self.metrics.step(step, o, took);
        if step == crate::pipeline::state::STEP_ARCHIVE {
            let mut f = self.archive_failing.lock().unwrap();
            match reason {
                None => *f = None,
                Some(r) => {
                    let since = f.as_ref().map_or_else(Instant::now, |(s, _)| *s);
                    *f = Some((since, r.to_string()));
                }
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Outcome;

    fn health(rules: Rules) -> (Arc<Health>, Arc<AtomicUsize>, Shutdown) {
        let c = Arc::new(AtomicUsize::new(0));
        let sd = Shutdown::new();
        let h = Health::new(rules, Arc::new(Metrics::new()), c.clone(), sd.clone());
        (h, c, sd)
    }

    fn rules() -> Rules {
        Rules {
            maintenance_file: None,
            max_sessions: 2,
            min_free: 0,
            archive_failing_for: Duration::from_millis(50),
            max_backlog: 0,
        }
    }

    #[test]
    fn each_check_gives_its_reason() {
        let t = tempfile::tempdir().unwrap();
        let mf = t.path().join("maintenance");
        let (h, conns, sd) = health(Rules {
            maintenance_file: Some(mf.clone()),
            ..rules()
        });
        assert!(h.reasons().is_empty());
        std::fs::write(&mf, b"").unwrap();
        assert_eq!(h.reasons().len(), 1);
        assert!(h.reasons()[0].starts_with("maintenance: "));
        std::fs::remove_file(&mf).unwrap();
        conns.store(2, Ordering::Relaxed);
        assert!(h.reasons()[0].starts_with("sessions: 2 sessions open"));
        conns.store(1, Ordering::Relaxed);

        h.step(
            "archive",
            Outcome::Failed("disk on fire\nreally"),
            Duration::ZERO,
        );
        assert!(h.reasons().is_empty(), "not failing long enough yet");
        std::thread::sleep(Duration::from_millis(80));
        h.step("archive", Outcome::Outage("gone"), Duration::ZERO);
        let r = h.reasons();
        assert!(r[0].starts_with("archive: archive failing for"), "{r:?}");
        assert!(r[0].ends_with(": gone"), "{r:?}");
        h.step("archive", Outcome::Ok, Duration::ZERO);
        assert!(h.reasons().is_empty());

        *h.census.lock().unwrap() = Census {
            free: Some(10),
            backlog: 5,
        };
        h.set_rules(Rules {
            min_free: 11,
            max_backlog: 4,
            ..rules()
        });
        let r = h.reasons();
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("free_space: 10B free"), "{r:?}");
        assert!(r[1].starts_with("backlog: 5 entries"), "{r:?}");
        sd.trigger();
        assert_eq!(h.reasons()[0], "stopping: the node is stopping");
        assert!(h
            .metrics()
            .render()
            .contains("ingestd_health_failing{check=\"backlog\"} 1"));
    }
}
