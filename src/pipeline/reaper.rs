//! No descendant of a process step outlives its step.
//!
//! A command may leave its process group (`setsid`) and its parent may exit, so a
//! group kill is not enough. The daemon makes itself a *child subreaper*
//! (`prctl(PR_SET_CHILD_SUBREAPER)`): every orphaned descendant of a command is
//! re-parented to the daemon instead of init, so it can always be found:
//!
//! * at the end of a step (exit, timeout, stop), [`kill_step`] kills the tree under
//!   the command (while its pid is not reaped yet) and every process the daemon
//!   adopted whose environment carries the step's `INGEST_ID`, in rounds until none
//!   is left, then reaps the adopted ones;
//! * when no command is running (and when the pipeline stops), [`sweep_orphans`]
//!   kills and reaps every process the daemon adopted: only commands' descendants
//!   can be re-parented to it, so all of them are leftovers of finished steps (this
//!   catches a descendant that changed its environment);
//! * after a crash of a previous daemon, its commands' descendants were re-parented
//!   elsewhere: [`kill_leftovers`] kills every process whose environment carries
//!   the interrupted entry's `INGEST_ID` (see `process::recover_stale_mark`).
//!
//! Reaping never uses `waitpid(-1)`: the children tokio spawned (the commands
//! themselves, registered by [`spawn`] under the same lock the reaper takes) are
//! left to tokio, which waits for each by pid. Zombies of adopted processes that end
//! on their own are reaped on SIGCHLD ([`reap_adopted`]).

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
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        if r == 0 {
            true
        } else {
            let e = io::Error::last_os_error();
            tracing::warn!(error = ?e.to_string(), "cannot become a child subreaper: a process command's setsid descendants may outlive it");
            false
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
/// Returns how many processes were sent SIGKILL.
fn kill_closure(mut seeds: impl FnMut(&[ProcStat]) -> Vec<i32>) -> usize {
    let me = me();
    let mut killed = 0;
    for round in 0..40u32 {
        let t = table();
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
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe { libc::kill(*v, libc::SIGKILL) };
        }
        killed += victims.len();
        std::thread::sleep(Duration::from_millis(1 << round.min(6)));
    }
    killed
}

/// Reap the zombies among the processes the daemon adopted (never a registered
/// command: tokio waits for those). `direct` is the locked registry.
fn reap_locked(direct: &[i32]) {
    let me = me();
    for p in table() {
        if p.ppid == me && p.zombie && !direct.contains(&p.pid) {
            // SAFETY: waitpid on one pid, non-blocking.
            unsafe { libc::waitpid(p.pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}

/// Reap adopted orphans that have ended (called on SIGCHLD).
pub fn reap_adopted() {
    let d = DIRECT.lock().unwrap_or_else(|e| e.into_inner());
    reap_locked(&d);
}

/// Kill everything left of the step of entry `id`: the tree under its command
/// `root` (pass it only while the command has not been waited for, so the pid
/// cannot have been reused) and every adopted process carrying `INGEST_ID=id`.
/// Returns how many processes were killed.
pub fn kill_step(root: Option<i32>, id: &str) -> usize {
    let me = me();
    let n = kill_closure(|t| {
        let direct = DIRECT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut s: Vec<i32> = root.into_iter().collect();
        s.extend(
            t.iter()
                .filter(|p| p.ppid == me && !p.zombie && !direct.contains(&p.pid))
                .filter(|p| environ_has_id(p.pid, id))
                .map(|p| p.pid),
        );
        s
    });
    reap_adopted();
    n
}

/// When no command is running: kill and reap every process the daemon adopted.
/// The registry stays locked meanwhile, so no command starts during the sweep.
pub fn sweep_orphans() -> usize {
    let d = DIRECT.lock().unwrap_or_else(|e| e.into_inner());
    if !d.is_empty() {
        return 0;
    }
    let me = me();
    let n = kill_closure(|t| {
        t.iter()
            .filter(|p| p.ppid == me && !p.zombie)
            .map(|p| p.pid)
            .collect()
    });
    reap_locked(&d);
    n
}

/// After a crash: kill every process (wherever it was re-parented) whose
/// environment carries `INGEST_ID=id`, with its descendants.
pub fn kill_leftovers(id: &str) -> usize {
    let me = me();
    let n = kill_closure(|t| {
        t.iter()
            .filter(|p| p.pid != me && !p.zombie && environ_has_id(p.pid, id))
            .map(|p| p.pid)
            .collect()
    });
    reap_adopted();
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
