//! No descendant of a process step outlives its step (the fallback where a step
//! cannot have a cgroup of its own, see `cgroup`, and a second line everywhere).
//!
//! A command may leave its process group (`setsid`) and its parent may exit, so a
//! group kill is not enough. The daemon makes itself a *child subreaper*
//! (`prctl(PR_SET_CHILD_SUBREAPER)`): every orphaned descendant of a command is
//! re-parented to the daemon instead of init, so it can always be found:
//!
//! * at a timeout or a stop, [`kill_step`] kills the tree under the command (while
//!   its pid is not reaped yet) and every process the daemon adopted whose
//!   environment carries the step's `INGEST_ID`, in rounds until none is left;
//! * at the end of every step, [`after_step`] kills the adopted processes carrying
//!   the step's `INGEST_ID` — or, when no other command is running (and when the
//!   pipeline stops), every process the daemon adopted: only commands'
//!   descendants can be re-parented to it, so all of them are leftovers of
//!   finished steps (this catches a descendant that changed its environment) —
//!   and reaps them. An adopted process that ends on its own stays a zombie
//!   until the next step ends (a pid, no memory);
//! * after a crash of a previous daemon, its commands' descendants were re-parented
//!   elsewhere: [`kill_leftovers`] kills every process whose environment carries
//!   the interrupted entry's `INGEST_ID` (see `process::recover_stale_mark`).
//!
//! Reaping never uses `waitpid(-1)`: the children tokio spawned (the commands
//! themselves, registered by [`spawn`] under the same lock the reaper takes) are
//! left to tokio, which waits for each by pid.
//!
//! Cost: nothing when the step leaves nothing and no other command runs (`waitid`
//! says the daemon has no child); else one read of `/proc/*/stat` (about 1 ms with
//! 90 processes on the test machine; see `measure_step_overhead`).

use crate::core::procs::{self, ProcStat};
use std::fs;
use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Pids of the commands spawned through [`spawn`] and not yet waited for.
static DIRECT: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Make the daemon a child subreaper (once; false when the kernel refuses).
pub fn enable() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        match nix::sys::prctl::set_child_subreaper(true) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = ?e.to_string(), "cannot become a child subreaper: a process command's setsid descendants may outlive it");
                false
            }
        }
    })
}

/// Keeps a spawned command's pid registered until it has been waited for.
pub struct Direct(i32);

impl Drop for Direct {
    fn drop(&mut self) {
        let mut d = DIRECT.lock().unwrap_or_else(|e| e.into_inner());
        d.retain(|p| *p != self.0);
    }
}

/// Spawn `cmd` and register its pid (under the reaper's lock, so the reaper never
/// mistakes it for an adopted orphan). Keep the guard until the child was waited for.
pub fn spawn(
    cmd: &mut tokio::process::Command,
) -> io::Result<(tokio::process::Child, Option<Direct>)> {
    enable();
    let mut d = DIRECT.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    let guard = child.id().map(|p| {
        d.push(p as i32);
        Direct(p as i32)
    });
    Ok((child, guard))
}

fn me() -> i32 {
    std::process::id() as i32
}

/// The process table (processes that vanish while it is read are skipped).
pub fn table() -> Vec<ProcStat> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| procs::parse_stat(&s))
        .collect()
}

fn environ_has_id(pid: i32, id: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| procs::environ_has(&e, "INGEST_ID", id))
}

/// SIGKILL the processes `seeds` picks from the table, and their descendants, in
/// rounds until none is alive (bounded). Never the daemon itself or init.
/// Returns how many processes were sent SIGKILL and the last table read (in which
/// none was left, unless the rounds ran out).
fn kill_closure(mut seeds: impl FnMut(&[ProcStat]) -> Vec<i32>) -> (usize, Vec<ProcStat>) {
    let me = me();
    let mut killed = 0;
    let mut t = table();
    for round in 0..40u32 {
        let roots = seeds(&t);
        let alive: std::collections::HashSet<i32> =
            t.iter().filter(|p| !p.zombie).map(|p| p.pid).collect();
        let victims: Vec<i32> = procs::descendants(&t, &roots)
            .into_iter()
            .filter(|p| *p != me && *p > 1 && alive.contains(p))
            .collect();
        if victims.is_empty() {
            break;
        }
        for v in &victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*v),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        killed += victims.len();
        std::thread::sleep(Duration::from_millis(1 << round.min(6)));
        t = table();
    }
    (killed, t)
}

/// Reap the zombies in `t` among the processes the daemon adopted (never a
/// registered command: tokio waits for those). `direct` is the locked registry.
fn reap_in(t: &[ProcStat], direct: &[i32]) {
    let me = me();
    for p in t {
        if p.ppid == me && p.zombie && !direct.contains(&p.pid) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(p.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// While the command of entry `id` has not been waited for (timeout, stop): kill
/// the tree under it (`root`, whose pid cannot have been reused yet) and every
/// adopted process carrying `INGEST_ID=id`. [`after_step`] follows.
pub fn kill_step(root: i32, id: &str) -> usize {
    let me = me();
    kill_closure(|t| {
        let direct = DIRECT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut s = vec![root];
        s.extend(
            t.iter()
                .filter(|p| p.ppid == me && !p.zombie && !direct.contains(&p.pid))
                .filter(|p| environ_has_id(p.pid, id))
                .map(|p| p.pid),
        );
        s
    })
    .0
}

/// After the command of entry `id` was waited for (and its [`Direct`] guard
/// dropped): kill every adopted process carrying `INGEST_ID=id` — every adopted
/// process at all when no command is running (only commands' descendants can be
/// adopted, so they are leftovers of finished steps) — then reap. `None` for `id`:
/// the sweep at stop. The registry stays locked, so no command starts meanwhile.
/// One scan of the process table when nothing is left (the usual case).
pub fn after_step(id: Option<&str>) -> usize {
    let d = DIRECT.lock().unwrap_or_else(|e| e.into_inner());
    let me = me();
    // (Not in the library's unit tests: there the "daemon" is the test binary,
    // whose other tests have children of their own; the real binary is tested by
    // tests/crashloop.rs.)
    let all = d.is_empty() && !cfg!(test);
    if d.is_empty() && no_children() {
        return 0; // nothing adopted, nothing running: no scan
    }
    let (n, last) = kill_closure(|t| {
        t.iter()
            .filter(|p| p.ppid == me && !p.zombie && !d.contains(&p.pid))
            .filter(|p| all || id.is_some_and(|id| environ_has_id(p.pid, id)))
            .map(|p| p.pid)
            .collect()
    });
    reap_in(&last, &d);
    n
}

/// Whether the daemon has no child at all (`waitid` answers `ECHILD`; `WNOWAIT`
/// reaps nothing, so tokio's children are untouched).
fn no_children() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::All, flags) == Err(nix::errno::Errno::ECHILD)
}

/// After a crash: kill every process (wherever it was re-parented) whose
/// environment carries `INGEST_ID=id`, with its descendants.
pub fn kill_leftovers(id: &str) -> usize {
    let me = me();
    let (n, last) = kill_closure(|t| {
        t.iter()
            .filter(|p| p.pid != me && !p.zombie && environ_has_id(p.pid, id))
            .map(|p| p.pid)
            .collect()
    });
    let d = DIRECT.lock().unwrap_or_else(|e| e.into_inner());
    reap_in(&last, &d);
    n
}

/// This process's pid and start time (clock ticks after boot): who owns a
/// `running.json` mark.
pub fn identity() -> (u32, u64) {
    static ID: OnceLock<(u32, u64)> = OnceLock::new();
    *ID.get_or_init(|| {
        let start = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| procs::parse_stat(&s))
            .map_or(0, |p| p.start_ticks);
        (std::process::id(), start)
    })
}
