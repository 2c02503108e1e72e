//! A cgroup v2 per process step, where the daemon's own cgroup can have children:
//! the command and everything it starts stay in `<daemon's cgroup>/ingestd-step-…-<id>`
//! whatever they do (`setsid`, double fork, a cleared environment), and writing
//! `cgroup.kill` ends them all at once — at the end of the step, at a timeout, at a
//! stop, and after a crash (the group of an entry whose `running.json` is stale).
//!
//! Where cgroup v2 is not mounted, not writable, has no `cgroup.kill` (Linux < 5.14)
//! or refuses to take the command, the step runs without one and `reaper` (the
//! subreaper, which also runs as a second line everywhere) does the job.
//! `INGESTD_NO_CGROUP=1` in the daemon's environment forces that fallback (tests).

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The daemon's own cgroup v2 directory, if step cgroups can be made under it.
fn base() -> Option<&'static Path> {
    static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
    BASE.get_or_init(|| {
        if std::env::var_os("INGESTD_NO_CGROUP").is_some_and(|v| v != "0") {
            return None;
        }
        let b = find_base()?;
        let probe = b.join(format!("ingestd-probe-{}", std::process::id()));
        let ok = fs::create_dir(&probe).is_ok() && probe.join("cgroup.kill").exists();
        let _ = fs::remove_dir(&probe);
        if ok {
            tracing::info!(cgroup = ?b, "process commands run in a cgroup of their own");
            Some(b)
        } else {
            None
        }
    })
    .as_deref()
}

fn find_base() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4))?
    })?;
    let cg = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(mount).join(rel.trim_start_matches('/')))
}

const PREFIX: &str = "ingestd-step-";

/// `ingestd-step-<daemon pid>.<n>-<id>`: unique even where several daemons (or
/// test binaries) share one cgroup; found again by its `-<id>` suffix.
fn dir_for(base: &Path, id: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    base.join(format!("{PREFIX}{}.{n}-{id}", std::process::id()))
}

/// The cgroup of one running step.
pub struct StepCgroup {
    dir: PathBuf,
    procs: File,
}

impl StepCgroup {
    /// Make the step's cgroup (`None`: run without one). A group left by a
    /// previous attempt is emptied and removed first.
    pub fn create(id: &str) -> Option<StepCgroup> {
        let dir = dir_for(base()?, id);
        if dir.exists() {
            kill_and_remove(&dir);
        }
        fs::create_dir(&dir).ok()?;
        match OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(procs) => Some(StepCgroup { dir, procs }),
            Err(_) => {
                let _ = fs::remove_dir(&dir);
                None
            }
        }
    }

    /// The open `cgroup.procs`: the child writes "0" to it between fork and exec,
    /// which moves it into the group before the command runs.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Kill every process in the group and remove it (blocking, bounded).
    pub fn kill(self) -> bool {
        kill_and_remove(&self.dir)
    }
}

/// Write `cgroup.kill`, wait (at most 2 s) until no live process is left, remove
/// the directory. Whether it was removed.
fn kill_and_remove(dir: &Path) -> bool {
    let _ = fs::write(dir.join("cgroup.kill"), b"1");
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if !events.lines().any(|l| l == "populated 1") || Instant::now() >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::remove_dir(dir).is_ok()
}

/// After a crash: kill and remove the groups a previous daemon made for entry `id`.
/// Returns how many were found.
pub fn kill_leftover(id: &str) -> usize {
    let Some(b) = base() else { return 0 };
    let Ok(rd) = fs::read_dir(b) else { return 0 };
    let suffix = format!("-{id}");
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(&suffix) {
            kill_and_remove(&e.path());
            n += 1;
        }
    }
    n
}
