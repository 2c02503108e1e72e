//! Per-entry pipeline bookkeeping (`state.json`), retry backoff, quarantine and
//! requeue. Everything here is blocking file-system work.
//!
//! `state.json` is absent until an entry's first failure. It is only ever replaced by
//! [`write_atomic`], so a reader sees the old or the new version, never a torn one.

use crate::config::RetryConfig;
use crate::core::record::{Attempt, EntryState};
use crate::spool::{fsync_dir, write_atomic, ARCHIVED, PROCESSED, QUARANTINE, READY, STATE};
use rand::RngExt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Step names as recorded in [`Attempt::step`] and [`EntryState::quarantined_step`].
pub const STEP_ARCHIVE: &str = "archive";
pub const STEP_PROCESS: &str = "process";
pub const STEP_FORWARD: &str = "forward";

/// Attempts kept in `history` (oldest dropped first).
pub const HISTORY_MAX: usize = 100;

/// The state directory whose entries a step works on (and where a requeued entry
/// that failed in that step goes back to).
pub fn step_dir(step: &str) -> Option<&'static str> {
    match step {
        STEP_ARCHIVE => Some(READY),
        STEP_PROCESS => Some(ARCHIVED),
        STEP_FORWARD => Some(PROCESSED),
        _ => None,
    }
}

/// Wall-clock Unix milliseconds (persisted, so it must survive restarts).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Backoff before retry number `attempts + 1`, after `attempts` (>= 1) failures:
/// `initial * 2^(attempts-1)`, capped at `max`, without jitter.
pub fn backoff_base(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let shift = attempts.saturating_sub(1);
    if shift >= 32 {
        return max;
    }
    initial
        .checked_mul(1u32 << shift)
        .map_or(max, |d| d.min(max))
}

/// [`backoff_base`] with ±20% uniform jitter, never above `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let base = backoff_base(attempts, initial, max);
    let f: f64 = rand::rng().random_range(0.8..=1.2);
    base.mul_f64(f).min(max)
}

/// Read `state.json` of an entry directory; `Ok(None)` when it has none yet.
/// A missing entry directory is reported as `NotFound` (the caller decides).
pub fn load(entry: &Path) -> io::Result<Option<EntryState>> {
    match fs::read(entry.join(STATE)) {
        Ok(t) => serde_json::from_slice(&t)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // distinguish "no state yet" from "no entry"
            fs::symlink_metadata(entry)?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn save(entry: &Path, st: &EntryState) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(st).map_err(io::Error::other)?;
    write_atomic(&entry.join(STATE), &json)
}

/// [`load`] for an update: an unreadable (corrupt) `state.json` is replaced by a
/// fresh state, logged; the caller records why (see [`record_failure`]).
fn load_for_update(entry: &Path) -> io::Result<EntryState> {
    match load(entry) {
        Ok(s) => Ok(s.unwrap_or_default()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(entry = ?entry, error = ?e.to_string(), "state.json unreadable; starting a new one");
            Ok(EntryState::default())
        }
        Err(e) => Err(e),
    }
}

/// After a step succeeded: forget the attempt count and backoff of that step
/// (history is kept). A no-op when the entry has no state or nothing to reset.
pub fn reset_after_success(entry: &Path) -> io::Result<()> {
    let corrupt = matches!(load(entry), Err(ref e) if e.kind() == io::ErrorKind::InvalidData);
    let mut st = load_for_update(entry)?;
    if corrupt || st.attempts != 0 || st.next_try_ms != 0 || st.quarantined_step.is_some() {
        st.attempts = 0;
        st.next_try_ms = 0;
        st.quarantined_step = None;
        save(entry, &st)?;
    }
    Ok(())
}

/// What became of an entry after a failed attempt.
#[derive(Debug, PartialEq)]
pub enum AfterFailure {
    /// Retried at `next_try_ms`.
    Retry { attempts: u32, next_try_ms: u64 },
    /// Gave up: moved to `quarantine/<id>`.
    Quarantined { attempts: u32 },
}

/// Record a failed attempt of `attempt.step` for the entry `<spool>/<state_dir>/<id>`:
/// count it, schedule the retry, or move the entry to quarantine after
/// `retry.max_attempts` failures. An unreadable `state.json` is replaced (its
/// history is lost; the pipeline records "state.json unreadable: ..." as the
/// failed attempt that found it).
pub fn record_failure(
    spool_root: &Path,
    state_dir: &str,
    id: &str,
    attempt: Attempt,
    retry: &RetryConfig,
) -> io::Result<AfterFailure> {
    let entry = spool_root.join(state_dir).join(id);
    let mut st = load_for_update(&entry)?;
    st.attempts += 1;
    let step = attempt.step.clone();
    st.history.push(attempt);
    if st.history.len() > HISTORY_MAX {
        let extra = st.history.len() - HISTORY_MAX;
        st.history.drain(..extra);
    }
    if st.attempts >= retry.max_attempts {
        st.quarantined_step = Some(step);
        st.next_try_ms = 0;
        save(&entry, &st)?;
        let qdir = spool_root.join(QUARANTINE);
        fs::rename(&entry, qdir.join(id))?;
        fsync_dir(&qdir)?;
        Ok(AfterFailure::Quarantined {
            attempts: st.attempts,
        })
    } else {
        let delay = backoff(st.attempts, retry.initial_backoff.0, retry.max_backoff.0);
        st.next_try_ms = now_ms() + delay.as_millis() as u64;
        save(&entry, &st)?;
        Ok(AfterFailure::Retry {
            attempts: st.attempts,
            next_try_ms: st.next_try_ms,
        })
    }
}

/// Move `quarantine/<id>` back to the state directory of the step that gave up,
/// with its attempt count reset (history kept). Returns the new entry path.
///
/// Crash-safe order: the reset state (still naming the step) is written first, then
/// the entry is renamed, then the quarantine mark is cleared. Interrupted anywhere,
/// the entry is either still in quarantine (and can be retried again) or requeued.
pub fn requeue(spool_root: &Path, id: &str) -> io::Result<PathBuf> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{id:?} is not an entry id"),
        ));
    }
    let q = spool_root.join(QUARANTINE).join(id);
    let mut st = match load_for_update(&q) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{id} is not in quarantine"),
            ))
        }
        Err(e) => return Err(e),
    };
    let step = st
        .quarantined_step
        .clone()
        .unwrap_or_else(|| STEP_ARCHIVE.to_string());
    let dir = step_dir(&step).unwrap_or(READY);
    st.attempts = 0;
    st.next_try_ms = 0;
    save(&q, &st)?;
    let dest_dir = spool_root.join(dir);
    let dest = dest_dir.join(id);
    if fs::symlink_metadata(&dest).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", dest.display()),
        ));
    }
    fs::rename(&q, &dest)?;
    fsync_dir(&dest_dir)?;
    st.quarantined_step = None;
    save(&dest, &st)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::HumanDuration;

    fn retry(max: u32) -> RetryConfig {
        RetryConfig {
            max_attempts: max,
            initial_backoff: HumanDuration(Duration::from_millis(100)),
            max_backoff: HumanDuration(Duration::from_secs(1)),
        }
    }

    fn attempt(step: &str, reason: &str) -> Attempt {
        Attempt {
            step: step.into(),
            at: rfc3339_now(),
            reason: reason.into(),
            exit_code: Some(3),
            stderr_tail: Some("boom".into()),
        }
    }

    #[test]
    fn backoff_math() {
        let i = Duration::from_secs(1);
        let m = Duration::from_secs(600);
        assert_eq!(backoff_base(1, i, m), Duration::from_secs(1));
        assert_eq!(backoff_base(2, i, m), Duration::from_secs(2));
        assert_eq!(backoff_base(5, i, m), Duration::from_secs(16));
        assert_eq!(backoff_base(10, i, m), Duration::from_secs(512));
        assert_eq!(backoff_base(11, i, m), m);
        assert_eq!(backoff_base(1000, i, m), m);
        assert_eq!(backoff_base(u32::MAX, i, m), m);
        for n in 1..20 {
            let b = backoff_base(n, i, m);
            for _ in 0..50 {
                let j = backoff(n, i, m);
                assert!(
                    j >= b.mul_f64(0.79) && j <= b.mul_f64(1.21) && j <= m,
                    "{n} {j:?}"
                );
            }
        }
        // jitter actually varies
        let xs: std::collections::HashSet<_> = (0..20).map(|_| backoff(3, i, m)).collect();
        assert!(xs.len() > 1);
    }

    #[test]
    fn failures_then_quarantine_then_requeue() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in [READY, ARCHIVED, PROCESSED, QUARANTINE] {
            fs::create_dir(root.join(d)).unwrap();
        }
        fs::create_dir(root.join(ARCHIVED).join("n-1")).unwrap();
        let entry = root.join(ARCHIVED).join("n-1");
        assert_eq!(load(&entry).unwrap(), None);
        assert!(load(&root.join(ARCHIVED).join("nope")).is_err());

        let before = now_ms();
        let r = record_failure(root, ARCHIVED, "n-1", attempt(STEP_PROCESS, "a"), &retry(3));
        match r.unwrap() {
            AfterFailure::Retry {
                attempts,
                next_try_ms,
            } => {
                assert_eq!(attempts, 1);
                assert!(next_try_ms >= before + 79 && next_try_ms <= now_ms() + 121);
            }
            x => panic!("{x:?}"),
        }
        record_failure(root, ARCHIVED, "n-1", attempt(STEP_PROCESS, "b"), &retry(3)).unwrap();
        let r = record_failure(root, ARCHIVED, "n-1", attempt(STEP_PROCESS, "c"), &retry(3));
        assert_eq!(r.unwrap(), AfterFailure::Quarantined { attempts: 3 });
        assert!(!entry.exists());
        let q = root.join(QUARANTINE).join("n-1");
        let st = load(&q).unwrap().unwrap();
        assert_eq!(st.quarantined_step.as_deref(), Some(STEP_PROCESS));
        assert_eq!(
            st.history
                .iter()
                .map(|a| a.reason.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c"]
        );

        let dest = requeue(root, "n-1").unwrap();
        assert_eq!(dest, entry);
        let st = load(&entry).unwrap().unwrap();
        assert_eq!(st.attempts, 0);
        assert_eq!(st.next_try_ms, 0);
        assert_eq!(st.quarantined_step, None);
        assert_eq!(st.history.len(), 3);
        assert!(requeue(root, "n-1").is_err());
        assert!(requeue(root, "../x").is_err());
    }

    /// Two writers of the same state (the daemon and `ingestd retry`) never tear it:
    /// each uses its own temporary name, and every rename is atomic.
    #[test]
    fn concurrent_writers_never_tear_state() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(STATE);
        write_atomic(&path, &[b'a'; 50_000]).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            let writers: Vec<_> = [(b'a', 50_000usize), (b'b', 70_000)]
                .into_iter()
                .map(|(c, n)| {
                    let path = &path;
                    sc.spawn(move || {
                        for _ in 0..300 {
                            write_atomic(path, &vec![c; n]).expect("write_atomic");
                        }
                    })
                })
                .collect();
            let reader = sc.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let b = fs::read(&path).unwrap();
                    let ok = (b.len() == 50_000 && b.iter().all(|x| *x == b'a'))
                        || (b.len() == 70_000 && b.iter().all(|x| *x == b'b'));
                    assert!(ok, "torn state: {} bytes", b.len());
                }
            });
            let results: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            reader.join().unwrap();
            for r in results {
                r.unwrap();
            }
        });
        let left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    /// An unreadable `state.json` is a failed attempt with backoff (and leads to
    /// quarantine like any other), never an error that leaves the entry due at once.
    #[test]
    fn corrupt_state_counts_as_a_failed_attempt() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in [READY, QUARANTINE] {
            fs::create_dir(root.join(d)).unwrap();
        }
        let e = root.join(READY).join("x");
        fs::create_dir(&e).unwrap();
        fs::write(e.join(STATE), b"{\"attempts\": 3, \"hist").unwrap();
        assert!(load(&e).is_err());
        let r = record_failure(
            root,
            READY,
            "x",
            attempt(STEP_ARCHIVE, "state.json unreadable: x"),
            &retry(2),
        )
        .unwrap();
        assert!(
            matches!(r, AfterFailure::Retry { attempts: 1, .. }),
            "{r:?}"
        );
        let st = load(&e).unwrap().unwrap();
        assert!(st.next_try_ms > now_ms());
        assert_eq!(st.history.len(), 1);
        fs::write(e.join(STATE), b"garbage").unwrap();
        reset_after_success(&e).unwrap();
        assert_eq!(load(&e).unwrap().unwrap().attempts, 0);
        // corrupt in quarantine: still requeued
        let q = root.join(QUARANTINE).join("y");
        fs::create_dir(&q).unwrap();
        fs::write(q.join(STATE), b"garbage").unwrap();
        assert_eq!(requeue(root, "y").unwrap(), root.join(READY).join("y"));
    }

    #[test]
    fn history_is_bounded_and_success_resets() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in [READY, QUARANTINE] {
            fs::create_dir(root.join(d)).unwrap();
        }
        fs::create_dir(root.join(READY).join("x")).unwrap();
        for i in 0..(HISTORY_MAX + 5) {
            record_failure(
                root,
                READY,
                "x",
                attempt(STEP_ARCHIVE, &i.to_string()),
                &retry(1000),
            )
            .unwrap();
        }
        let e = root.join(READY).join("x");
        let st = load(&e).unwrap().unwrap();
        assert_eq!(st.history.len(), HISTORY_MAX);
        assert_eq!(st.history[0].reason, "5");
        assert_eq!(st.attempts as usize, HISTORY_MAX + 5);
        reset_after_success(&e).unwrap();
        let st = load(&e).unwrap().unwrap();
        assert_eq!((st.attempts, st.next_try_ms), (0, 0));
        assert_eq!(st.history.len(), HISTORY_MAX);
    }
}
