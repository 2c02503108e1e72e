//! The node's metrics registry (prometheus-client): every part of the node counts
//! into it through the small methods below, and `/metrics` renders it.
//!
//! Names (all prefixed `ingestd_`), as the Grafana dashboard and the alert rules
//! in `config/` use them:
//!
//! | family | type | labels |
//! |---|---|---|
//! | `uploads_total` | counter | protocol (scp, sftp, inbox), outcome (landed, refused, failed) |
//! | `upload_bytes_total` | counter | protocol, outcome |
//! | `upload_duration_seconds` | histogram | protocol |
//! | `auth_failures_total` | counter | reason |
//! | `bans_total` | counter | |
//! | `sessions` | gauge | state (authenticated, unauthenticated) |
//! | `uploads_open` | gauge | |
//! | `step_attempts_total` | counter | step (archive, process, forward) |
//! | `step_failures_total` | counter | step, kind (failed, outage, quarantined) |
//! | `step_duration_seconds` | histogram | step |
//! | `spool_files` | gauge | stage (partial, ready, archived, processed, quarantine) |
//! | `spool_oldest_age_seconds` | gauge | stage |
//! | `spool_free_bytes` | gauge | |
//! | `health_failing` | gauge | check (stopping, maintenance, free_space, archive, backlog, sessions) |
//! | `build_info` | gauge | version |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtoOutcome {
    protocol: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Protocol {
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionState {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Step {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepKind {
    step: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stage {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Check {
    check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn upload_hist() -> Histogram {
    // 10 ms .. ~3 h
    Histogram::new(exponential_buckets(0.01, 4.0, 11))
}

fn step_hist() -> Histogram {
    // 1 ms .. ~17 min
    Histogram::new(exponential_buckets(0.001, 4.0, 11))
}

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Landed durably and acknowledged.
    Landed,
    /// Refused before or while receiving (limits, names, space, stopping).
    Refused,
    /// Broken off (connection lost, I/O error): nothing was acknowledged.
    Failed,
}

impl UploadOutcome {
    fn label(self) -> &'static str {
        match self {
            UploadOutcome::Landed => "landed",
            UploadOutcome::Refused => "refused",
            UploadOutcome::Failed => "failed",
        }
    }
}

/// How one pipeline step attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Ok,
    /// A counted failure; the entry will be retried.
    Failed,
    /// The last counted failure: the entry went to quarantine.
    Quarantined,
    /// The target was unavailable (not counted against the entry).
    Outage,
}

/// The spool stages counted by the census (`spool_files`, `spool_oldest_age_seconds`).
pub const STAGES: [&str; 5] = ["partial", "ready", "archived", "processed", "quarantine"];
/// The health checks (`health_failing`).
pub const CHECKS: [&str; 6] = [
    "stopping",
    "maintenance",
    "free_space",
    "archive",
    "backlog",
    "sessions",
];

/// The registry and its families. One per node, shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    uploads: Family<ProtoOutcome, Counter>,
    upload_bytes: Family<ProtoOutcome, Counter>,
    upload_duration: HistFamily<Protocol>,
    auth_failures: Family<Reason, Counter>,
    bans: Counter,
    sessions: Family<SessionState, Gauge>,
    uploads_open: Gauge,
    step_attempts: Family<Step, Counter>,
    step_failures: Family<StepKind, Counter>,
    step_duration: HistFamily<Step>,
    spool_files: Family<Stage, Gauge>,
    spool_oldest: Family<Stage, Gauge<f64, AtomicU64>>,
    spool_free: Gauge,
    health_failing: Family<Check, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("ingestd");
        let m = Metrics {
            uploads: Family::default(),
            upload_bytes: Family::default(),
            upload_duration: Family::new_with_constructor(upload_hist),
            auth_failures: Family::default(),
            bans: Counter::default(),
            sessions: Family::default(),
            uploads_open: Gauge::default(),
            step_attempts: Family::default(),
            step_failures: Family::default(),
            step_duration: Family::new_with_constructor(step_hist),
            spool_files: Family::default(),
            spool_oldest: Family::default(),
            spool_free: Gauge::default(),
            health_failing: Family::default(),
            registry: Registry::default(),
        };
        // One line per family: name, help, [unit,] metric.
        macro_rules! reg {
            ($name:expr, $help:expr, $unit:expr, $m:expr) => {
                r.register_with_unit($name, $help, $unit, $m)
            };
            ($name:expr, $help:expr, $m:expr) => {
                r.register($name, $help, $m)
            };
        }
        reg!(
            "uploads",
            "Uploads by protocol and outcome (landed = durable and acknowledged)",
            m.uploads.clone()
        );
        reg!(
            "upload",
            "Bytes received by protocol and outcome",
            Unit::Bytes,
            m.upload_bytes.clone()
        );
        reg!(
            "upload_duration",
            "Time from the first byte of an upload to its acknowledgement",
            Unit::Seconds,
            m.upload_duration.clone()
        );
        reg!(
            "auth_failures",
            "Refused authentication attempts by reason",
            m.auth_failures.clone()
        );
        reg!(
            "bans",
            "Addresses banned after repeated failures",
            m.bans.clone()
        );
        reg!(
            "sessions",
            "Open SSH connections by state",
            m.sessions.clone()
        );
        reg!(
            "uploads_open",
            "Uploads in progress (each holds an open file; bounded by ssh.max_open_files)",
            m.uploads_open.clone()
        );
        reg!(
            "step_attempts",
            "Pipeline step attempts",
            m.step_attempts.clone()
        );
        reg!("step_failures", "Pipeline step attempts that did not succeed, by kind (failed: counted and retried; quarantined: the last one; outage: target unavailable, not counted)", m.step_failures.clone());
        reg!(
            "step_duration",
            "Duration of pipeline step attempts",
            Unit::Seconds,
            m.step_duration.clone()
        );
        reg!(
            "spool_files",
            "Entries in each spool stage (quarantine included)",
            m.spool_files.clone()
        );
        reg!(
            "spool_oldest_age",
            "Age of the oldest entry in each spool stage (0 when empty)",
            Unit::Seconds,
            m.spool_oldest.clone()
        );
        reg!(
            "spool_free",
            "Free bytes on the spool file system",
            Unit::Bytes,
            m.spool_free.clone()
        );
        reg!(
            "health_failing",
            "1 while this health check makes /healthz answer 503",
            m.health_failing.clone()
        );
        let build: Family<Version, Gauge> = Family::default();
        build
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "Version of this ingestd binary", build);
        for s in ["authenticated", "unauthenticated"] {
            let _ = m.sessions.get_or_create(&SessionState { state: s });
        }
        for s in STAGES {
            let _ = m.spool_files.get_or_create(&Stage { stage: s });
            let _ = m.spool_oldest.get_or_create(&Stage { stage: s });
        }
        for c in CHECKS {
            let _ = m.health_failing.get_or_create(&Check { check: c });
        }
        for p in ["scp", "sftp"] {
            let _ = m.uploads.get_or_create(&ProtoOutcome {
                protocol: p.into(),
                outcome: "landed",
            });
            let _ = m.upload_bytes.get_or_create(&ProtoOutcome {
                protocol: p.into(),
                outcome: "landed",
            });
        }
        Metrics { registry: r, ..m }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }

    /// The same in the classic Prometheus text format (0.0.4), for scrapers that
    /// do not ask for OpenMetrics (and `promtool check metrics`): counter families
    /// are named with their `_total` suffix, no `# UNIT` and `# EOF` lines.
    pub fn render_text(&self) -> String {
        let om = self.render();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len() + 64);
        for line in om.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .into_iter()
                .find(|p| line.starts_with(p));
            if let Some(p) = meta {
                let rest = &line[p.len()..];
                let name = rest.split(' ').next().unwrap_or("");
                if counters.contains(name) {
                    out.push_str(p);
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(&rest[name.len()..]);
                    out.push('\n');
                    continue;
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    // -- ingest ---------------------------------------------------------------

    /// One upload ended: `bytes` received, `took` from its start to the answer.
    /// `protocol` is the record's protocol ("scp", "sftp", "inbox").
    pub fn upload(&self, protocol: &str, outcome: UploadOutcome, bytes: u64, took: Duration) {
        let l = ProtoOutcome {
            protocol: protocol.to_string(),
            outcome: outcome.label(),
        };
        self.uploads.get_or_create(&l).inc();
        self.upload_bytes.get_or_create(&l).inc_by(bytes);
        if outcome == UploadOutcome::Landed {
            self.upload_duration
                .get_or_create(&Protocol {
                    protocol: protocol.to_string(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// An upload was refused (limits, names, space, stopping): nothing landed.
    pub fn upload_refused(&self, protocol: &str) {
        self.upload(protocol, UploadOutcome::Refused, 0, Duration::ZERO);
    }

    /// An upload broke off after `bytes` (connection lost, session ended with the
    /// file unfinished): nothing was acknowledged.
    pub fn upload_failed(&self, protocol: &str, bytes: u64) {
        self.upload(protocol, UploadOutcome::Failed, bytes, Duration::ZERO);
    }

    /// An authentication attempt was refused. `reason`: a short fixed word such as
    /// "unknown_key", "method", "banned", "too_many_attempts" (never client text).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// An address was banned.
    #[allow(dead_code)] // for the defender in ingest/ssh/server.rs
    pub fn ban(&self) {
        self.bans.inc();
    }

    /// A connection was accepted: counted as unauthenticated until
    /// [`SessionMetric::authenticated`], uncounted when the guard is dropped.
    pub fn session_opened(self: &std::sync::Arc<Self>) -> SessionMetric {
        self.sessions
            .get_or_create(&SessionState {
                state: "unauthenticated",
            })
            .inc();
        SessionMetric {
            metrics: self.clone(),
            authenticated: false,
        }
    }

    /// Open sessions: (authenticated, unauthenticated).
    pub fn sessions(&self) -> (i64, i64) {
        let g = |s| {
            self.sessions
                .get_or_create(&SessionState { state: s })
                .get()
        };
        (g("authenticated"), g("unauthenticated"))
    }

    // -- pipeline -------------------------------------------------------------

    /// One step attempt ended.
    pub fn step(&self, step: &'static str, outcome: StepOutcome, took: Duration) {
        self.step_attempts.get_or_create(&Step { step }).inc();
        self.step_duration
            .get_or_create(&Step { step })
            .observe(took.as_secs_f64());
        let kind = match outcome {
            StepOutcome::Ok => return,
            StepOutcome::Failed => "failed",
            StepOutcome::Quarantined => "quarantined",
            StepOutcome::Outage => "outage",
        };
        self.step_failures
            .get_or_create(&StepKind { step, kind })
            .inc();
    }

    // -- census and health ------------------------------------------------------

    /// The census of one spool stage.
    pub fn spool_stage(&self, stage: &'static str, files: u64, oldest_age: Duration) {
        self.spool_files
            .get_or_create(&Stage { stage })
            .set(files as i64);
        self.spool_oldest
            .get_or_create(&Stage { stage })
            .set(oldest_age.as_secs_f64());
    }

    /// The gauge of uploads in progress (kept by `ingest::limits`).
    pub fn uploads_open(&self) -> Gauge {
        self.uploads_open.clone()
    }

    pub fn spool_free(&self, bytes: u64) {
        self.spool_free.set(bytes.min(i64::MAX as u64) as i64);
    }

    pub fn health_check(&self, check: &'static str, failing: bool) {
        self.health_failing
            .get_or_create(&Check { check })
            .set(failing as i64);
    }

    /// Entries counted in one stage by the last census.
    pub fn spool_files(&self, stage: &'static str) -> u64 {
        self.spool_files
            .get_or_create(&Stage { stage })
            .get()
            .max(0) as u64
    }
}

/// One open connection in the `sessions` gauge; dropping it uncounts it.
pub struct SessionMetric {
    metrics: std::sync::Arc<Metrics>,
    authenticated: bool,
}

impl SessionMetric {
    /// The connection authenticated (idempotent).
    pub fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            self.add(false, -1);
            self.add(true, 1);
        }
    }

    fn add(&self, authenticated: bool, n: i64) {
        let state = if authenticated {
            "authenticated"
        } else {
            "unauthenticated"
        };
        self.metrics
            .sessions
            .get_or_create(&SessionState { state })
            .inc_by(n);
    }
}

impl Drop for SessionMetric {
    fn drop(&mut self) {
        self.add(self.authenticated, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_every_family() {
        let m = Arc::new(Metrics::new());
        m.upload("scp", UploadOutcome::Landed, 10, Duration::from_millis(5));
        m.upload("sftp", UploadOutcome::Refused, 0, Duration::ZERO);
        m.auth_failure("unknown_key");
        m.ban();
        let mut s = m.session_opened();
        let _u = m.session_opened();
        s.authenticated();
        assert_eq!(m.sessions(), (1, 1));
        m.step("archive", StepOutcome::Ok, Duration::from_millis(3));
        m.step("forward", StepOutcome::Outage, Duration::from_millis(3));
        m.spool_stage("ready", 3, Duration::from_secs(7));
        m.spool_free(1 << 30);
        m.health_check("maintenance", true);
        let t = m.render();
        for needle in [
            "ingestd_uploads_total{protocol=\"scp\",outcome=\"landed\"} 1",
            "ingestd_upload_bytes_total{protocol=\"scp\",outcome=\"landed\"} 10",
            "ingestd_upload_duration_seconds_bucket{le=",
            "ingestd_auth_failures_total{reason=\"unknown_key\"} 1",
            "ingestd_bans_total 1",
            "ingestd_sessions{state=\"authenticated\"} 1",
            "ingestd_step_attempts_total{step=\"archive\"} 1",
            "ingestd_step_failures_total{step=\"forward\",kind=\"outage\"} 1",
            "ingestd_step_duration_seconds_count{step=\"archive\"} 1",
            "ingestd_spool_files{stage=\"ready\"} 3",
            "ingestd_spool_oldest_age_seconds{stage=\"ready\"} 7",
            "ingestd_spool_free_bytes 1073741824",
            "ingestd_health_failing{check=\"maintenance\"} 1",
            "ingestd_build_info{version=",
            "# EOF",
        ] {
            assert!(t.contains(needle), "{needle} missing from\n{t}");
        }
        drop(s);
        assert_eq!(m.sessions(), (0, 1));
    }
}
