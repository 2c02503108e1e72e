//! Step 2: run `process.command` for an archived entry and keep its products.
//!
//! The command runs without a shell, in its own process group, with stdin and
//! stdout on /dev/null and stderr captured (the last [`STDERR_TAIL`] bytes are kept
//! with a failed attempt). Environment (added to the daemon's own):
//!
//! | variable            | value                                                           |
//! |---------------------|-----------------------------------------------------------------|
//! | `INGEST_INPUT`      | the landed file in the spool (`archived/<id>/data`); read only  |
//! | `INGEST_OUTPUT_DIR` | an empty directory; every file written there is a product       |
//! | `INGEST_NAME`       | sender-given relative path (`a/b.csv`)                          |
//! | `INGEST_USER`       | sender login (or the inbox user)                                |
//! | `INGEST_ID`         | entry id, unique across the pool                                |
//! | `INGEST_BLAKE3`     | BLAKE3 of the input, lowercase hex                              |
//! | `INGEST_SIZE`       | input size in bytes                                             |
//! | `INGEST_NODE`       | node id that landed the file                                    |
//! | `INGEST_ATTEMPT`    | 1 for the first attempt of this step, 2 for the first retry...  |
//!
//! Exit status 0 is success; anything else, death by a signal, or running past
//! `process.timeout` (the whole process group is then killed with SIGKILL) is a
//! failed attempt. After the command exits its process group is killed too, so a
//! straggler cannot write into the products after they were made durable.
//!
//! Descendants that left the group (`setsid`) are killed too: the command runs in
//! a cgroup of its own where possible ([`cgroup`]), and the daemon is their
//! subreaper ([`reaper`]).
//!
//! Before the command starts, the entry gets a durable mark `running.json` (written
//! atomically, fsynced with the entry directory) naming this daemon (pid and start
//! time); every end of the attempt removes it (a graceful stop too: an interrupted
//! attempt is not counted). A mark left by a daemon that is not running any more
//! means the node stopped during the step (a crash, a kill, a power cut — maybe
//! caused by the command): [`recover_stale_mark`] kills what is left of the
//! command and counts a failed attempt, "the node stopped during this step N
//! times", so such an entry is quarantined after `retry.max_attempts` instead of
//! crashing every restart. Only this step is marked: archive and forward run no
//! foreign code, and their many small files would pay one more fsync each.
//!
//! On success the products are hashed and fsynced, their manifest is written to
//! `products.json` in the entry, the output directory is renamed to `<entry>/out`,
//! and the entry is renamed `archived/<id>` → `processed/<id>`.

use super::fsx::{self, Failure, StepError};
use super::products::{Product, MAX_PRODUCT_DEPTH, OUT, PRODUCTS};
use super::state;
use super::{cgroup, reaper};
use crate::config::{ProcessConfig, RetryConfig};
use crate::core::record::{Attempt, Record};
use crate::shutdown::Shutdown;
use crate::spool::{
    fsync_dir, read_record, write_atomic, ARCHIVED, DATA, PROCESSED, QUARANTINE, WORK,
};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Bytes of stderr kept with a failed attempt.
pub const STDERR_TAIL: usize = 4096;
/// The mark of a process step in progress, in the entry directory.
pub const RUNNING: &str = "running.json";
/// The reason recorded for an attempt cut short by the node stopping.
pub const NODE_STOPPED: &str = "the node stopped during this step";

/// Contents of [`RUNNING`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RunMark {
    step: String,
    daemon_pid: u32,
    daemon_start_ticks: u64,
    started_at: String,
}
/// Entry without a process command: the landed file is the product.
pub fn identity(spool_root: &Path, id: &str) -> Result<(), StepError> {
    let entry = spool_root.join(ARCHIVED).join(id);
    fs::symlink_metadata(&entry).map_err(|e| fsx::spool_error("entry", &entry, e))?;
    move_on(spool_root, &entry, id)
}

/// Rename `archived/<id>` → `processed/<id>`. Not fsynced on its own: a lost rename
/// only makes the (idempotent) step run again. What must not be reordered – the
/// products inside the entry – was fsynced before.
fn move_on(spool_root: &Path, entry: &Path, id: &str) -> Result<(), StepError> {
    state::reset_after_success(entry).map_err(|e| fsx::spool_error("state", entry, e))?;
    let to = spool_root.join(PROCESSED);
    fs::rename(entry, to.join(id)).map_err(|e| fsx::spool_error("moving entry", entry, e))?;
    Ok(())
}

/// Run the command for `archived/<id>`; on success move the entry to `processed/`.
pub async fn process(
    pc: &ProcessConfig,
    spool_root: &Path,
    id: &str,
    shutdown: Shutdown,
) -> Result<(), StepError> {
    let entry = spool_root.join(ARCHIVED).join(id);
    let (rec, attempt, outdir) = {
        let entry = entry.clone();
        let work = spool_root.join(WORK);
        let id = id.to_string();
        blocking(move || prepare(&entry, &work, &id)).await?
    };
    let res = run_command(pc, &entry.join(DATA), &outdir, &rec, attempt, &shutdown).await;
    let res = match res {
        Ok(()) => {
            let (root, entry, outdir, id) = (
                spool_root.to_path_buf(),
                entry.clone(),
                outdir.clone(),
                id.to_string(),
            );
            blocking(move || finish(&root, &entry, &outdir, &id)).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        // A failure is recorded in state.json next (whose write fsyncs the entry
        // directory, so the mark's removal is durable with it); an interruption or
        // an outage records nothing: fsync here.
        let sync = !matches!(e, StepError::Failed(_) | StepError::Gone);
        let (o, entry) = (outdir.clone(), entry.clone());
        let _ = tokio::task::spawn_blocking(move || {
            clear_mark(&entry, sync);
            fsx::remove_tree(&o)
        })
        .await;
    }
    res
}

fn clear_mark(entry: &Path, sync: bool) {
    match fs::remove_file(entry.join(RUNNING)) {
        Ok(()) if sync => {
            let _ = fsync_dir(entry);
        }
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(entry = ?entry, error = ?e.to_string(), "cannot remove the step's running mark")
        }
    }
}

/// If `archived/<id>` holds a [`RUNNING`] mark of a daemon that is not running
/// any more (a mark of this daemon is a step in flight: left alone), the node
/// stopped during its process step: kill what is left of the command, record a
/// failed attempt ([`NODE_STOPPED`]) and remove the mark. Returns the reason, the
/// outcome and how many leftover processes were killed; `None` without a stale mark.
pub fn recover_stale_mark(
    spool_root: &Path,
    id: &str,
    retry: &RetryConfig,
) -> Option<(String, io::Result<state::AfterFailure>, usize)> {
    let entry = spool_root.join(ARCHIVED).join(id);
    let bytes = fs::read(entry.join(RUNNING)).ok()?;
    let mark: Option<RunMark> = serde_json::from_slice(&bytes).ok();
    let started_at = match mark {
        Some(m) if (m.daemon_pid, m.daemon_start_ticks) == reaper::identity() => return None,
        Some(m) => m.started_at,
        None => state::rfc3339_now(), // torn by hand: still a stop during the step
    };
    cgroup::kill_leftover(id);
    let killed = reaper::kill_leftovers(id);
    let before = state::load(&entry).ok().flatten().map_or(0, |s| {
        s.history
            .iter()
            .filter(|a| a.step == state::STEP_PROCESS && a.reason.starts_with(NODE_STOPPED))
            .count()
    });
    let n = before + 1;
    let reason = format!("{NODE_STOPPED} {n} time{}", if n == 1 { "" } else { "s" });
    let attempt = Attempt {
        step: state::STEP_PROCESS.to_string(),
        at: started_at,
        reason: reason.clone(),
        exit_code: None,
        stderr_tail: None,
    };
    let r = state::record_failure(spool_root, ARCHIVED, id, attempt, retry);
    for dir in [ARCHIVED, QUARANTINE] {
        let e = spool_root.join(dir).join(id);
        if fs::remove_file(e.join(RUNNING)).is_ok() {
            let _ = fsync_dir(&e);
        }
    }
    Some((reason, r, killed))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StepError::failed(format!("internal error: {e}"))))
}

/// Read the record, pick the attempt number, create a fresh output directory
/// `work/<id>.<attempt>-<nonce>` (the nonce keeps a command orphaned by a crashed
/// daemon from writing into a later attempt's directory).
fn prepare(entry: &Path, work: &Path, id: &str) -> Result<(Record, u32, PathBuf), StepError> {
    let rec = read_record(entry).map_err(|e| fsx::spool_error("reading record", entry, e))?;
    let attempts = match state::load(entry) {
        Ok(s) => s.map(|s| s.attempts).unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => 0,
        Err(e) => return Err(fsx::spool_error("reading state", entry, e)),
    };
    let attempt = attempts + 1;
    let data = entry.join(DATA);
    // The command must treat its input as read only.
    let _ = fs::set_permissions(&data, fs::Permissions::from_mode(0o400));
    let outdir = work.join(format!("{id}.{attempt}-{}", fsx::nonce()));
    fs::create_dir(&outdir).map_err(|e| fsx::spool_error("creating output dir", entry, e))?;
    let (daemon_pid, daemon_start_ticks) = reaper::identity();
    let mark = RunMark {
        step: state::STEP_PROCESS.to_string(),
        daemon_pid,
        daemon_start_ticks,
        started_at: state::rfc3339_now(),
    };
    let json = serde_json::to_vec(&mark).map_err(|e| StepError::failed(e.to_string()))?;
    if let Err(e) = write_atomic(&entry.join(RUNNING), &json) {
        let _ = fs::remove_dir(&outdir);
        return Err(fsx::spool_error("marking the step started", entry, e));
    }
    Ok((rec, attempt, outdir))
}

/// Spawn the command and wait for it (or the timeout, or shutdown).
pub async fn run_command(
    pc: &ProcessConfig,
    input: &Path,
    outdir: &Path,
    rec: &Record,
    attempt: u32,
    shutdown: &Shutdown,
) -> Result<(), StepError> {
    let make = || {
        let mut cmd = tokio::process::Command::new(&pc.command[0]);
        cmd.args(&pc.command[1..])
            .env("INGEST_INPUT", input)
            .env("INGEST_OUTPUT_DIR", outdir)
            .env("INGEST_NAME", &rec.path)
            .env("INGEST_USER", &rec.user)
            .env("INGEST_ID", &rec.id)
            .env("INGEST_BLAKE3", &rec.blake3)
            .env("INGEST_SIZE", rec.size.to_string())
            .env("INGEST_NODE", &rec.node)
            .env("INGEST_ATTEMPT", attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    };
    let cg = {
        let id = rec.id.clone();
        tokio::task::spawn_blocking(move || cgroup::StepCgroup::create(&id))
            .await
            .ok()
            .flatten()
    };
    let mut cmd = make();
    if let Some(cg) = &cg {
        let fd = cg.procs_fd();
        // SAFETY: between fork and exec the child only calls write(2), which is
        // async-signal-safe, on a descriptor the parent keeps open.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }
    let (spawned, cg) = match (reaper::spawn(&mut cmd), cg) {
        // the cgroup did not take the command: run it without one
        (Err(_), Some(cg)) => {
            let _ = tokio::task::spawn_blocking(move || cg.kill()).await;
            (reaper::spawn(&mut make()), None)
        }
        (r, cg) => (r, cg),
    };
    let (mut child, direct) =
        spawned.map_err(|e| StepError::failed(format!("cannot start {:?}: {e}", pc.command[0])))?;
    let pgid = child.id().map(|p| p as i32);
    let mut stderr = child.stderr.take();
    let reader = tokio::spawn(async move {
        let mut tail: Vec<u8> = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > 2 * STDERR_TAIL {
                            tail.drain(..tail.len() - STDERR_TAIL);
                        }
                    }
                }
            }
        }
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
        tail
    });

    let timeout = pc.timeout.0;
    enum End {
        Exited(std::process::ExitStatus),
        WaitError(io::Error),
        Timeout,
        Shutdown,
    }
    let end = tokio::select! {
        r = child.wait() => match r { Ok(s) => End::Exited(s), Err(e) => End::WaitError(e) },
        _ = tokio::time::sleep(timeout) => End::Timeout,
        _ = shutdown.stopped() => End::Shutdown,
    };
    // Whatever happened, nothing the command started may outlive the attempt: its
    // cgroup if it has one, then (a second line, and the only one without) its
    // tree (while its pid is not reaped yet, so it cannot have been reused), every
    // orphan of it the daemon adopted, and its process group.
    if let Some(cg) = cg {
        let _ = tokio::task::spawn_blocking(move || cg.kill()).await;
    }
    if let (false, Some(root)) = (matches!(end, End::Exited(_)), pgid) {
        let id = rec.id.clone();
        let _ = tokio::task::spawn_blocking(move || reaper::kill_step(root, &id)).await;
    }
    if let Some(pg) = pgid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pg),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if !matches!(end, End::Exited(_)) {
        let _ = child.wait().await;
    }
    drop(direct);
    let id = rec.id.clone();
    let _ = tokio::task::spawn_blocking(move || reaper::after_step(Some(&id))).await;
    let tail = match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(Ok(t)) => t,
        _ => Vec::new(),
    };
    let tail_s = tail_string(&tail);
    let fail = |reason: String, code: Option<i32>| {
        StepError::Failed(Failure {
            reason,
            exit_code: code,
            stderr_tail: tail_s.clone(),
        })
    };
    match end {
        End::Exited(s) if s.success() => Ok(()),
        End::Exited(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(c), _) => Err(fail(format!("exit status {c}"), Some(c))),
                (None, Some(sig)) => {
                    let name = nix::sys::signal::Signal::try_from(sig)
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|_| sig.to_string());
                    Err(fail(format!("killed by signal {sig} ({name})"), None))
                }
                _ => Err(fail(format!("ended abnormally: {s}"), None)),
            }
        }
        End::WaitError(e) => Err(fail(format!("waiting for the command: {e}"), None)),
        End::Timeout => Err(fail(
            format!(
                "killed after timeout {}",
                humantime::format_duration(timeout)
            ),
            None,
        )),
        End::Shutdown => Err(StepError::Interrupted),
    }
}

fn tail_string(b: &[u8]) -> Option<String> {
    if b.is_empty() {
        return None;
    }
    let s = String::from_utf8_lossy(b);
    // drop a partial first character left by the byte cut
    Some(s.trim_start_matches('\u{FFFD}').to_string())
}

/// Make the products durable, record them, put them into the entry and move it on.
fn finish(spool_root: &Path, entry: &Path, outdir: &Path, id: &str) -> Result<(), StepError> {
    let mut products = Vec::new();
    collect_products(outdir, outdir, &mut products)?;
    products.sort_by(|a, b| a.path.cmp(&b.path));
    // Forward names must be distinct (they are flattened).
    let mut names = HashSet::new();
    for p in &products {
        if !names.insert(crate::core::naming::forward_name(id, &p.path)) {
            return Err(StepError::failed(format!(
                "two products map to the same forward name: {:?}",
                p.path
            )));
        }
    }
    let json =
        serde_json::to_vec_pretty(&products).map_err(|e| StepError::failed(e.to_string()))?;
    write_atomic(&entry.join(PRODUCTS), &json)
        .map_err(|e| fsx::spool_error("writing products.json", entry, e))?;
    let out = entry.join(OUT);
    if fs::symlink_metadata(&out).is_ok() {
        // left by an attempt interrupted after this point
        let stale = spool_root
            .join(WORK)
            .join(format!("{id}.stale-{}", fsx::nonce()));
        fs::rename(&out, &stale).map_err(|e| fsx::spool_error("removing stale out", entry, e))?;
        let _ = fsx::remove_tree(&stale);
    }
    fs::rename(outdir, &out).map_err(|e| fsx::spool_error("moving products", entry, e))?;
    match fs::remove_file(entry.join(RUNNING)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(fsx::spool_error("removing the running mark", entry, e))
        }
        _ => {}
    }
    fsync_dir(entry).map_err(|e| fsx::spool_error("syncing entry", entry, e))?;
    move_on(spool_root, entry, id)
}

/// Walk the output directory: hash + fsync every regular file, fsync every directory.
/// Anything else (symlink, fifo, device) fails the attempt, and so do directories
/// nested more than [`MAX_PRODUCT_DEPTH`] deep. A loop with a stack of directories
/// still to read, never a recursion: the command controls the depth.
fn collect_products(base: &Path, dir: &Path, out: &mut Vec<Product>) -> Result<(), StepError> {
    let mut todo = vec![(dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        let err =
            |e: io::Error| StepError::failed(format!("reading products in {}: {e}", dir.display()));
        for e in fs::read_dir(&dir).map_err(err)? {
            let e = e.map_err(err)?;
            let p = e.path();
            let ft = e.file_type().map_err(err)?;
            let rel = p
                .strip_prefix(base)
                .ok()
                .and_then(|r| r.to_str())
                .ok_or_else(|| StepError::failed(format!("product name {p:?} is not UTF-8")))?
                .to_string();
            if ft.is_dir() {
                if depth + 1 > MAX_PRODUCT_DEPTH {
                    return Err(StepError::failed(format!(
                        "directories nested too deep in the output (more than {MAX_PRODUCT_DEPTH} levels)"
                    )));
                }
                todo.push((p, depth + 1));
            } else if ft.is_file() {
                let f = fs::File::open(&p).map_err(err)?;
                let (blake3, size) = crate::spool::hash_reader(&f).map_err(err)?;
                f.sync_all().map_err(err)?;
                out.push(Product {
                    path: rel,
                    size,
                    blake3,
                });
            } else {
                return Err(StepError::failed(format!(
                    "product {rel:?} is not a regular file or directory"
                )));
            }
        }
        fsync_dir(&dir).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::HumanDuration;
    use std::time::Instant;

    fn rec() -> Record {
        Record {
            id: "n1-01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
            node: "n1".into(),
            user: "alice".into(),
            path: "d/in.txt".into(),
            size: 5,
            mode: 0o644,
            mtime: None,
            atime: None,
            blake3: "abc".into(),
            remote_addr: "x".into(),
            received_at: "2024-05-06T07:08:09.123Z".into(),
            protocol: "scp".into(),
        }
    }

    fn pc(script: &str, timeout: Duration) -> ProcessConfig {
        ProcessConfig {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: HumanDuration(timeout),
            concurrency: 1,
        }
    }

    #[tokio::test]
    async fn env_contract_and_products() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("in");
        fs::write(&input, b"hello").unwrap();
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        let rx = Shutdown::new();
        let p = pc(
            r#"set -e; env | grep '^INGEST_' | sort > "$INGEST_OUTPUT_DIR/env"; mkdir "$INGEST_OUTPUT_DIR/sub"; cat "$INGEST_INPUT" > "$INGEST_OUTPUT_DIR/sub/copy""#,
            Duration::from_secs(10),
        );
        run_command(&p, &input, &out, &rec(), 2, &rx).await.unwrap();
        let env = fs::read_to_string(out.join("env")).unwrap();
        for want in [
            format!("INGEST_INPUT={}", input.display()),
            format!("INGEST_OUTPUT_DIR={}", out.display()),
            "INGEST_NAME=d/in.txt".into(),
            "INGEST_USER=alice".into(),
            "INGEST_ID=n1-01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
            "INGEST_BLAKE3=abc".into(),
            "INGEST_SIZE=5".into(),
            "INGEST_NODE=n1".into(),
            "INGEST_ATTEMPT=2".into(),
        ] {
            assert!(env.lines().any(|l| l == want), "{want} not in {env}");
        }
        let mut v = Vec::new();
        collect_products(&out, &out, &mut v).unwrap();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(v[1].path, "sub/copy");
        assert_eq!(v[1].blake3, blake3::hash(b"hello").to_hex().to_string());
    }

    #[tokio::test]
    async fn failure_keeps_exit_code_and_stderr_tail() {
        let t = tempfile::tempdir().unwrap();
        let rx = Shutdown::new();
        let p = pc(
            "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done; echo LAST >&2; exit 3",
            Duration::from_secs(10),
        );
        let e = run_command(&p, t.path(), t.path(), &rec(), 1, &rx)
            .await
            .unwrap_err();
        match e {
            StepError::Failed(f) => {
                assert_eq!(f.exit_code, Some(3));
                assert_eq!(f.reason, "exit status 3");
                let tail = f.stderr_tail.unwrap();
                assert!(tail.len() <= STDERR_TAIL);
                assert!(tail.ends_with("LAST\n"), "{tail}");
                assert!(!tail.contains("line 1\n"));
            }
            e => panic!("{e:?}"),
        }
        let p = pc("kill -TERM $$", Duration::from_secs(10));
        match run_command(&p, t.path(), t.path(), &rec(), 1, &rx).await {
            Err(StepError::Failed(f)) => assert!(f.reason.contains("SIGTERM"), "{f:?}"),
            e => panic!("{e:?}"),
        }
        let p = ProcessConfig {
            command: vec!["/nonexistent/cmd".into()],
            ..pc("", Duration::from_secs(1))
        };
        assert!(matches!(
            run_command(&p, t.path(), t.path(), &rec(), 1, &rx).await,
            Err(StepError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let t = tempfile::tempdir().unwrap();
        let pidfile = t.path().join("pid");
        let rx = Shutdown::new();
        // a grandchild that would outlive a plain kill of the direct child
        let p = pc(
            &format!(
                "sleep 30 & echo $! > {}; echo started >&2; wait",
                pidfile.display()
            ),
            Duration::from_millis(300),
        );
        let t0 = Instant::now();
        let e = run_command(&p, t.path(), t.path(), &rec(), 1, &rx)
            .await
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        match e {
            StepError::Failed(f) => {
                assert!(f.reason.starts_with("killed after timeout"), "{f:?}");
                assert_eq!(f.stderr_tail.as_deref(), Some("started\n"));
            }
            e => panic!("{e:?}"),
        }
        let pid: i32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // reaped by init or a zombie at most: check it is not running
        std::thread::sleep(Duration::from_millis(100));
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "grandchild alive: {stat}"
        );
    }

    #[tokio::test]
    async fn shutdown_interrupts() {
        let t = tempfile::tempdir().unwrap();
        let rx = Shutdown::new();
        let tx = rx.clone();
        let p = pc("sleep 30", Duration::from_secs(60));
        let h = tokio::spawn({
            let path = t.path().to_path_buf();
            async move { run_command(&p, &path, &path, &rec(), 1, &rx).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.trigger();
        let r = tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(StepError::Interrupted)));
    }

    /// What the crash-loop and orphan guards cost per process step (run by hand:
    /// `cargo test --release --lib measure_step_overhead -- --ignored --nocapture`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn measure_step_overhead() {
        let t = tempfile::tempdir().unwrap();
        let n = 200u32;
        let entry = t.path().join("e");
        fs::create_dir(&entry).unwrap();
        let t0 = Instant::now();
        for _ in 0..n {
            write_atomic(&entry.join(RUNNING), b"{}").unwrap();
            fs::remove_file(entry.join(RUNNING)).unwrap();
        }
        let mark = t0.elapsed() / n;
        let t0 = Instant::now();
        for _ in 0..n {
            reaper::after_step(Some("nobody"));
        }
        let reap = t0.elapsed() / n;
        let t0 = Instant::now();
        let mut cgroups = 0;
        for _ in 0..n {
            if let Some(cg) = cgroup::StepCgroup::create("measure") {
                cg.kill();
                cgroups += 1;
            }
        }
        let cg = t0.elapsed() / n;
        let t0 = Instant::now();
        for _ in 0..n {
            let _ = reaper::table();
        }
        let scan = t0.elapsed() / n;
        let procs = reaper::table().len();
        let rx = Shutdown::new();
        let p = pc("exit 0", Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..n {
            run_command(&p, t.path(), t.path(), &rec(), 1, &rx)
                .await
                .unwrap();
        }
        let cmd = t0.elapsed() / n;
        eprintln!(
            "per step: running mark (write+fsync file+dir, unlink) {mark:?}; after_step with no child {reap:?}, a process-table scan {scan:?} ({procs} processes); cgroup create+kill+rmdir {cg:?} ({cgroups} made); whole run_command of `sh -c 'exit 0'` {cmd:?}"
        );
    }

    #[test]
    fn deep_products_are_refused_without_recursion() {
        let t = tempfile::tempdir().unwrap();
        let mut p = t.path().to_path_buf();
        for _ in 0..MAX_PRODUCT_DEPTH {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("f"), b"x").unwrap();
        let mut v = Vec::new();
        collect_products(t.path(), t.path(), &mut v).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path.matches('/').count(), MAX_PRODUCT_DEPTH);
        fs::create_dir(p.join("d")).unwrap();
        match collect_products(t.path(), t.path(), &mut Vec::new()) {
            Err(StepError::Failed(f)) => assert!(f.reason.contains("nested too deep"), "{f:?}"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn non_regular_products_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("link")).unwrap();
        let mut v = Vec::new();
        assert!(matches!(
            collect_products(t.path(), t.path(), &mut v),
            Err(StepError::Failed(_))
        ));
    }
}
