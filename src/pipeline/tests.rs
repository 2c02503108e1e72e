//! The pipeline driven directly (no daemon, no SSH): files are landed with
//! `Spool::begin/complete/commit`, `run` is started in the test's runtime.

use super::*;
use crate::spool::{Incoming, DATA, QUARANTINE, WORK};
use std::fs;
use std::path::Path;
use std::time::Instant;

struct Env {
    t: tempfile::TempDir,
    cfg: Arc<Config>,
    spool: Arc<Spool>,
}

impl Env {
    fn new(extra: &str) -> Env {
        Env::with_archive(extra, None)
    }

    fn with_archive(extra: &str, archive: Option<&str>) -> Env {
        Env::with_targets(extra, archive.map(Path::new), None)
    }

    /// `archive` and `forward` relative to the test's directory, or absolute.
    fn with_targets(extra: &str, archive: Option<&Path>, forward: Option<&Path>) -> Env {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let archive = archive
            .map(|a| d.join(a))
            .unwrap_or_else(|| d.join("archive"));
        let forward = forward.map(|f| d.join(f)).unwrap_or_else(|| d.join("out"));
        let text = format!(
            "node_id = \"n1\"\n[spool]\ndir = \"{}\"\nmin_free = \"0\"\n\
             [archive]\ndir = \"{}\"\n[forward]\ndir = \"{}\"\n\
             [retry]\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\nmax_attempts = 3\n\
             [pipeline]\nrescan_interval = \"200ms\"\n{extra}\n",
            d.join("spool").display(),
            archive.display(),
            forward.display(),
        );
        let cfg = Arc::new(Config::parse(&text, d).unwrap());
        let spool = Arc::new(Spool::open(&cfg.spool.dir, "n1", 1 << 30, 0).unwrap());
        Env { t, cfg, spool }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.t.path().join(p)
    }

    fn land(&self, name: &str, data: &[u8]) -> crate::core::record::Record {
        land(&self.spool, name, data)
    }

    fn start(&self) -> (Shutdown, tokio::task::JoinHandle<()>) {
        let tx = Shutdown::new();
        let h = tokio::spawn(run(self.cfg.clone(), self.spool.clone(), tx.clone()));
        (tx, h)
    }

    fn count(&self, state: &str) -> usize {
        fs::read_dir(self.spool.dir(state)).unwrap().count()
    }

    fn forwarded(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(&self.cfg.forward.dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn spool_empty(&self) -> bool {
        [READY, ARCHIVED, PROCESSED, QUARANTINE, WORK]
            .iter()
            .all(|s| self.count(s) == 0)
    }
}

fn land(spool: &Spool, name: &str, data: &[u8]) -> crate::core::record::Record {
    let mut p = spool
        .begin(Incoming {
            user: "alice".into(),
            path: name.into(),
            mode: 0o644,
            mtime: Some(1_600_000_000),
            atime: None,
            remote_addr: "127.0.0.1:9".into(),
            protocol: "scp",
        })
        .unwrap();
    p.write(data).unwrap();
    spool.commit(vec![p.complete().unwrap()]).unwrap().remove(0)
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(tx: Shutdown, h: tokio::task::JoinHandle<()>) {
    tx.trigger();
    tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .expect("pipeline did not stop")
        .unwrap();
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_archives_and_forwards_the_file() {
    let env = Env::new("");
    let mut recs = Vec::new();
    for i in 0..40 {
        let data = format!("file {i} ").repeat(i + 1).into_bytes();
        recs.push((env.land(&format!("d{}/f{i}.txt", i % 3), &data), data));
    }
    let (tx, h) = env.start();
    wait_until("all forwarded", Duration::from_secs(20), || {
        fs::read_dir(&env.cfg.forward.dir)
            .map(|r| r.count() == 40)
            .unwrap_or(false)
            && env.count(PROCESSED) == 0
    })
    .await;
    stop(tx, h).await;
    let fwd = env.forwarded();
    for (rec, data) in &recs {
        let name = format!("{}__{}", rec.id, rec.file_name());
        let got = fwd.iter().find(|(n, _)| *n == name).expect(&name);
        assert_eq!(&got.1, data);
        let a = archive::archive_path(&env.cfg, rec).unwrap();
        assert_eq!(&fs::read(&a).unwrap(), data);
        let r: crate::core::record::Record =
            serde_json::from_slice(&fs::read(crate::core::naming::record_path(&a)).unwrap())
                .unwrap();
        assert_eq!(&r, rec);
        // mtime carried to the copies
        let m = fs::metadata(&a).unwrap().modified().unwrap();
        assert_eq!(
            m,
            std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
        );
    }
    assert!(env.spool_empty());
    // nothing temporary left behind in the targets
    assert!(fwd.iter().all(|(n, _)| !n.starts_with('.')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runs_after_archive_and_products_are_forwarded() {
    let t = tempfile::tempdir().unwrap();
    // The command checks that the archive copy exists and is complete before it runs.
    let archive_dir = t.path().join("arch");
    let cmd = script(
        t.path(),
        "proc.sh",
        &format!(
            r#"set -e
a=$(find {} -path "*/$INGEST_ID/*" -type f ! -name '*.record.json' | head -n1)
[ -n "$a" ] || {{ echo "no archive copy for $INGEST_ID" >&2; exit 7; }}
cmp "$a" "$INGEST_INPUT"
mkdir -p "$INGEST_OUTPUT_DIR/sub"
tr a-z A-Z < "$INGEST_INPUT" > "$INGEST_OUTPUT_DIR/upper.txt"
printf '%s|%s|%s|%s' "$INGEST_NAME" "$INGEST_USER" "$INGEST_SIZE" "$INGEST_BLAKE3" > "$INGEST_OUTPUT_DIR/sub/meta""#,
            archive_dir.display()
        ),
    );
    let env = Env::with_archive(
        &format!("[process]\ncommand = [\"{cmd}\"]\ntimeout = \"20s\"\nconcurrency = 3\n"),
        Some(archive_dir.to_str().unwrap()),
    );
    let mut recs = Vec::new();
    for i in 0..10 {
        let data = format!("hello {i}\n").into_bytes();
        recs.push((env.land(&format!("in/f{i}.txt"), &data), data));
    }
    let (tx, h) = env.start();
    wait_until("all forwarded", Duration::from_secs(30), || {
        env.spool_empty()
    })
    .await;
    stop(tx, h).await;
    let fwd = env.forwarded();
    assert_eq!(
        fwd.len(),
        20,
        "{:?}",
        fwd.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (rec, data) in &recs {
        let up = fwd
            .iter()
            .find(|(n, _)| *n == format!("{}__upper.txt", rec.id))
            .unwrap();
        assert_eq!(up.1, data.to_ascii_uppercase());
        let meta = fwd
            .iter()
            .find(|(n, _)| *n == format!("{}__sub__meta", rec.id))
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&meta.1),
            format!("{}|alice|{}|{}", rec.path, rec.size, rec.blake3)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_is_retried_then_quarantined_then_requeued() {
    let t = tempfile::tempdir().unwrap();
    let flag = t.path().join("ok");
    let cmd = script(
        t.path(),
        "fail.sh",
        &format!(
            "[ -e {} ] && exec cp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/x.bin\"\n\
             echo \"attempt $INGEST_ATTEMPT failing\" >&2\nexit 3",
            flag.display()
        ),
    );
    let env = Env::new(&format!("[process]\ncommand = [\"{cmd}\"]\n"));
    let rec = env.land("x.bin", b"payload");
    let (tx, h) = env.start();
    let q = env.spool.dir(QUARANTINE).join(&rec.id);
    wait_until("quarantined", Duration::from_secs(20), || q.is_dir()).await;
    let st = state::load(&q).unwrap().unwrap();
    assert_eq!(st.attempts, 3);
    assert_eq!(st.quarantined_step.as_deref(), Some("process"));
    assert_eq!(st.history.len(), 3);
    for (i, a) in st.history.iter().enumerate() {
        assert_eq!(a.step, "process");
        assert_eq!(a.exit_code, Some(3));
        assert_eq!(a.reason, "exit status 3");
        assert_eq!(
            a.stderr_tail.as_deref(),
            Some(format!("attempt {} failing\n", i + 1).as_str())
        );
    }
    // backoff was respected: attempts are spaced by >= ~initial_backoff*0.8
    let times: Vec<std::time::SystemTime> = st
        .history
        .iter()
        .map(|a| humantime::parse_rfc3339(&a.at).unwrap())
        .collect();
    assert!(times[1].duration_since(times[0]).unwrap() >= Duration::from_millis(35));
    assert!(env.forwarded().is_empty());

    fs::write(&flag, b"").unwrap();
    state::requeue(env.spool.root(), &rec.id).unwrap();
    assert!(env.spool.dir(ARCHIVED).join(&rec.id).is_dir());
    wait_until("forwarded after requeue", Duration::from_secs(10), || {
        env.spool_empty()
    })
    .await;
    stop(tx, h).await;
    assert_eq!(
        env.forwarded(),
        vec![(format!("{}__x.bin", rec.id), b"payload".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_outage_waits_uncounted_and_heals() {
    let t_blocker = "blocker";
    let env = Env::with_archive("", Some("blocker/archive"));
    fs::write(env.path(t_blocker), b"not a dir").unwrap();
    let recs: Vec<_> = (0..5)
        .map(|i| env.land(&format!("f{i}"), format!("data {i}").as_bytes()))
        .collect();
    let (tx, h) = env.start();
    // several outage periods (rescan 200ms) pass: nothing moves, nothing is counted
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.count(READY), 5);
    for r in &recs {
        assert_eq!(
            state::load(&env.spool.dir(READY).join(&r.id)).unwrap(),
            None,
            "an outage must not count as an attempt"
        );
    }
    // the target returns
    fs::remove_file(env.path(t_blocker)).unwrap();
    fs::create_dir_all(env.path("blocker/archive")).unwrap();
    wait_until("healed", Duration::from_secs(10), || env.spool_empty()).await;
    stop(tx, h).await;
    assert_eq!(env.forwarded().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_outage_read_only_style_heals() {
    // forward dir missing at run time (removed after start): an outage, then healed
    let env = Env::new("");
    let (tx, h) = env.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::remove_dir(&env.cfg.forward.dir).unwrap();
    let rec = env.land("a", b"A");
    wait_until("waiting in processed", Duration::from_secs(10), || {
        env.count(PROCESSED) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.count(PROCESSED), 1);
    assert!(state::load(&env.spool.dir(PROCESSED).join(&rec.id))
        .unwrap()
        .is_none());
    fs::create_dir(&env.cfg.forward.dir).unwrap();
    wait_until("healed", Duration::from_secs(10), || env.spool_empty()).await;
    stop(tx, h).await;
    assert_eq!(
        env.forwarded(),
        vec![(format!("{}__a", rec.id), b"A".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_command_is_killed_at_timeout() {
    let t = tempfile::tempdir().unwrap();
    let cmd = script(t.path(), "hang.sh", "echo hanging >&2\nsleep 60");
    let env = Env::new(&format!(
        "[process]\ncommand = [\"{cmd}\"]\ntimeout = \"300ms\"\n"
    ));
    let rec = env.land("h", b"x");
    let (tx, h) = env.start();
    let q = env.spool.dir(QUARANTINE).join(&rec.id);
    let t0 = Instant::now();
    wait_until("quarantined", Duration::from_secs(20), || q.is_dir()).await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    stop(tx, h).await;
    let st = state::load(&q).unwrap().unwrap();
    assert!(
        st.history
            .iter()
            .all(|a| a.reason.starts_with("killed after timeout")
                && a.stderr_tail.as_deref() == Some("hanging\n")),
        "{st:?}"
    );
}

/// Leave entries as a crash at each point would, then run: each completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_every_crash_point() {
    let t = tempfile::tempdir().unwrap();
    let cmd = script(
        t.path(),
        "p.sh",
        "cp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/copy\"",
    );
    let env = Env::new(&format!("[process]\ncommand = [\"{cmd}\"]\n"));
    let root = env.spool.root().to_path_buf();
    let mut want = Vec::new();

    // 1. crashed mid-archive: a temp file in the archive, entry still in ready
    let r1 = env.land("one", b"1111");
    let a1 = archive::archive_path(&env.cfg, &r1).unwrap();
    fs::create_dir_all(a1.parent().unwrap()).unwrap();
    fs::write(
        a1.parent().unwrap().join(format!(".ingestd-{}.tmp", r1.id)),
        b"11",
    )
    .unwrap();
    want.push((format!("{}__copy", r1.id), b"1111".to_vec()));

    // 2. crashed after the archive copy was in place, before the state rename
    let r2 = env.land("two", b"2222");
    archive::archive(&env.cfg, &root, &r2.id, ARCHIVED).unwrap();
    fs::rename(
        root.join(ARCHIVED).join(&r2.id),
        root.join(READY).join(&r2.id),
    )
    .unwrap();
    want.push((format!("{}__copy", r2.id), b"2222".to_vec()));

    // 3. crashed after products were moved into the entry, before archived→processed
    let r3 = env.land("three", b"3333");
    archive::archive(&env.cfg, &root, &r3.id, ARCHIVED).unwrap();
    let pc = env.cfg.process.clone().unwrap();
    let srx = Shutdown::new();
    process::process(&pc, &root, &r3.id, srx.clone())
        .await
        .unwrap();
    fs::rename(
        root.join(PROCESSED).join(&r3.id),
        root.join(ARCHIVED).join(&r3.id),
    )
    .unwrap();
    // and an output dir of the interrupted attempt in work/
    fs::create_dir_all(root.join(WORK).join(format!("{}.1-dead", r3.id))).unwrap();
    want.push((format!("{}__copy", r3.id), b"3333".to_vec()));

    // 4. crashed mid-forward: one product delivered (and a temp file), entry in processed
    let r4 = env.land("four", b"4444");
    archive::archive(&env.cfg, &root, &r4.id, ARCHIVED).unwrap();
    process::process(&pc, &root, &r4.id, srx.clone())
        .await
        .unwrap();
    fs::create_dir_all(&env.cfg.forward.dir).unwrap();
    fs::write(
        env.cfg.forward.dir.join(format!("{}__copy", r4.id)),
        b"4444",
    )
    .unwrap();
    fs::write(
        env.cfg
            .forward
            .dir
            .join(format!(".ingestd-{}-0.tmp", r4.id)),
        b"44",
    )
    .unwrap();
    want.push((format!("{}__copy", r4.id), b"4444".to_vec()));

    // 5. crashed during removal: the entry renamed into work/ (swept at open)
    let r5 = env.land("five", b"5555");
    archive::archive(&env.cfg, &root, &r5.id, ARCHIVED).unwrap();
    process::process(&pc, &root, &r5.id, srx.clone())
        .await
        .unwrap();
    forward::forward(&env.cfg, &root, &r5.id).unwrap();
    want.push((format!("{}__copy", r5.id), b"5555".to_vec()));

    // "restart": reopen the spool (sweeps work/), run
    let Env { t, cfg, spool } = env;
    drop(spool); // the old process's lock
    let spool = reopen(&cfg.spool.dir);
    let env = Env { t, cfg, spool };
    assert_eq!(env.count(WORK), 0);
    let (tx, h) = env.start();
    wait_until("all done", Duration::from_secs(20), || env.spool_empty()).await;
    stop(tx, h).await;
    want.sort();
    let fwd = env.forwarded();
    let names: Vec<_> = fwd.iter().map(|f| f.0.clone()).collect();
    assert_eq!(fwd.len(), want.len(), "{names:?}");
    assert_eq!(fwd, want);
    // archive has exactly one copy per entry and no temporary names
    let mut stack = vec![env.cfg.archive.dir.clone()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.file_name().into_string().unwrap());
            }
        }
    }
    files.sort();
    assert_eq!(
        files.iter().filter(|f| f.starts_with('.')).count(),
        0,
        "{files:?}"
    );
    assert_eq!(files.len(), 10, "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_running_command_uncounted() {
    let t = tempfile::tempdir().unwrap();
    let cmd = script(t.path(), "slow.sh", "sleep 30");
    let env = Env::new(&format!("[process]\ncommand = [\"{cmd}\"]\n"));
    let rec = env.land("s", b"s");
    let (tx, h) = env.start();
    wait_until("archived", Duration::from_secs(10), || {
        env.count(ARCHIVED) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    stop(tx, h).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    let e = env.spool.dir(ARCHIVED).join(&rec.id);
    assert!(e.is_dir());
    assert_eq!(state::load(&e).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_spool_data_fails_verification_and_is_quarantined() {
    let env = Env::new("");
    let rec = env.land("c", b"original");
    fs::write(env.spool.dir(READY).join(&rec.id).join("data"), b"tampered").unwrap();
    let (tx, h) = env.start();
    let q = env.spool.dir(QUARANTINE).join(&rec.id);
    wait_until("quarantined", Duration::from_secs(10), || q.is_dir()).await;
    stop(tx, h).await;
    let st = state::load(&q).unwrap().unwrap();
    assert_eq!(st.quarantined_step.as_deref(), Some("archive"));
    assert!(
        st.history[0].reason.contains("verification failed"),
        "{st:?}"
    );
    // nothing under a final name in the archive
    let a = archive::archive_path(&env.cfg, &rec).unwrap();
    assert!(!a.exists());
    // requeue goes back to ready
    assert_eq!(
        state::requeue(env.spool.root(), &rec.id).unwrap(),
        env.spool.dir(READY).join(&rec.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_drains_with_bounded_inflight() {
    let env = Env::new("");
    let n = 500;
    let data = vec![7u8; 4096];
    let (tx, h) = env.start();
    let spool = env.spool.clone();
    let d2 = data.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            land(&spool, &format!("b{i}"), &d2);
        }
    })
    .await
    .unwrap();
    wait_until("drained", Duration::from_secs(60), || {
        env.spool_empty() && fs::read_dir(&env.cfg.forward.dir).unwrap().count() == n
    })
    .await;
    stop(tx, h).await;
    assert!(env.forwarded().iter().all(|(_, d)| *d == data));
}

/// A corrupt `state.json` is a counted failure with backoff, not a hot loop: the
/// entry goes on (and the failure is in its history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_is_a_counted_failure_not_a_hot_loop() {
    let env = Env::new("");
    let r = env.land("torn.txt", b"torn state");
    let e = env.spool.dir(READY).join(&r.id);
    fs::write(e.join(crate::spool::STATE), b"{\"attempts\": 1, \"his").unwrap();
    let (tx, h) = env.start();
    wait_until("entry done", Duration::from_secs(10), || env.spool_empty()).await;
    stop(tx, h).await;
    assert_eq!(
        env.forwarded(),
        [(format!("{}__torn.txt", r.id), b"torn state".to_vec())]
    );
}

/// A tmpfs mounted for one test (another file system than the spool's), unmounted
/// when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount tmpfs (the test needs root, as CI runs)"
        );
        Tmpfs(d)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

fn ino(p: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    (m.dev(), m.ino(), m.nlink())
}

/// Land a sparse file: 4 KiB of data at 0 and at 8 MiB, 16 MiB long.
fn land_sparse(spool: &Spool, name: &str) -> (crate::core::record::Record, Vec<u8>) {
    let mut p = spool
        .begin(Incoming {
            user: "alice".into(),
            path: name.into(),
            mode: 0o644,
            mtime: Some(1_600_000_000),
            atime: None,
            remote_addr: "127.0.0.1:9".into(),
            protocol: "sftp",
        })
        .unwrap();
    let (a, b) = (vec![b'a'; 4096], vec![b'b'; 4096]);
    p.write_at(0, &a).unwrap();
    p.write_at(8 << 20, &b).unwrap();
    p.set_len(16 << 20).unwrap();
    let rec = spool.commit(vec![p.complete().unwrap()]).unwrap().remove(0);
    let mut want = vec![0u8; 16 << 20];
    want[..4096].copy_from_slice(&a);
    want[8 << 20..(8 << 20) + 4096].copy_from_slice(&b);
    (rec, want)
}

/// Bytes actually allocated to a file.
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().blocks() * 512
}

/// Same file system: the forwarded file is the landed inode (no copy), and it keeps
/// that inode as its only link once the entry is removed; the archive is a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_on_the_same_fs_is_a_hard_link_that_outlives_the_entry() {
    let env = Env::new("");
    let rec = env.land("a/linked.bin", b"zero copy");
    let data = env.spool.dir(READY).join(&rec.id).join("data");
    let (dev, landed_ino, nlink) = ino(&data);
    assert_eq!(nlink, 1);
    let (tx, h) = env.start();
    wait_until("forwarded", Duration::from_secs(20), || env.spool_empty()).await;
    stop(tx, h).await;
    let fwd = env
        .cfg
        .forward
        .dir
        .join(format!("{}__{}", rec.id, rec.file_name()));
    assert_eq!(fs::read(&fwd).unwrap(), b"zero copy");
    assert_eq!(
        ino(&fwd),
        (dev, landed_ino, 1),
        "same inode, now its only link"
    );
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(&fwd).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, env.cfg.forward.file_mode.0);
    assert_eq!(
        m.modified().unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    let a = archive::archive_path(&env.cfg, &rec).unwrap();
    assert_ne!(ino(&a).1, landed_ino, "the archive is a copy");
    assert_eq!(fs::read(&a).unwrap(), b"zero copy");
    assert_eq!(env.forwarded().len(), 1, "no temporary names left");
}

/// Archive and forward on another file system (a tmpfs): no link is possible,
/// copy_file_range refuses (EXDEV) and the copy falls back to read/write; holes
/// are kept on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_fs_falls_back_to_a_sparse_copy() {
    let mnt = Tmpfs::mount();
    let (arch, out) = (mnt.path().join("archive"), mnt.path().join("out"));
    let env = Env::with_targets("", Some(&arch), Some(&out));
    let plain = env.land("plain.txt", b"copied");
    let data = env.spool.dir(READY).join(&plain.id).join("data");
    let landed = ino(&data);
    let (sparse, want) = land_sparse(&env.spool, "sparse.bin");
    let (tx, h) = env.start();
    wait_until("forwarded", Duration::from_secs(20), || env.spool_empty()).await;
    stop(tx, h).await;
    let fwd = out.join(format!("{}__plain.txt", plain.id));
    assert_eq!(fs::read(&fwd).unwrap(), b"copied");
    assert_ne!(ino(&fwd).0, landed.0, "on the tmpfs");
    let sfwd = out.join(format!("{}__sparse.bin", sparse.id));
    let sarch = archive::archive_path(&env.cfg, &sparse).unwrap();
    for p in [&sfwd, &sarch] {
        assert!(fs::read(p).unwrap() == want, "{}", p.display());
        assert!(
            allocated(p) < 1 << 20,
            "{} not sparse: {}",
            p.display(),
            allocated(p)
        );
    }
    assert_eq!(env.forwarded().len(), 2);
    drop(env);
}

/// On the spool's own file system (kernel copy): the archive copy keeps the holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_copy_keeps_holes() {
    let env = Env::new("");
    let (rec, want) = land_sparse(&env.spool, "sparse.bin");
    assert!(allocated(&env.spool.dir(READY).join(&rec.id).join("data")) < 1 << 20);
    let (tx, h) = env.start();
    wait_until("forwarded", Duration::from_secs(20), || env.spool_empty()).await;
    stop(tx, h).await;
    let a = archive::archive_path(&env.cfg, &rec).unwrap();
    assert!(fs::read(&a).unwrap() == want);
    assert!(
        allocated(&a) < 1 << 20,
        "archive not sparse: {}",
        allocated(&a)
    );
}

/// Crashes around a linked delivery: after the link to the temporary name, after
/// the rename into place (before the entry was removed), and during the removal.
/// After the restart each file is delivered exactly once, as the landed inode.
/// Reopen a spool as a restarted daemon would. Another test of this binary may
/// have just forked a process command that still holds the old lock's
/// descriptor until it execs (moving it into its cgroup first can take
/// milliseconds): a test-only race, so wait for the lock briefly.
fn reopen(dir: &std::path::Path) -> Arc<Spool> {
    let t0 = std::time::Instant::now();
    loop {
        match Spool::open(dir, "n1", 1 << 30, 0) {
            Ok(s) => return Arc::new(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && t0.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_forward_resumes_from_every_crash_point() {
    let env = Env::new("");
    let root = env.spool.root().to_path_buf();
    let fdir = env.cfg.forward.dir.clone();
    fs::create_dir_all(&fdir).unwrap();
    fs::create_dir_all(&env.cfg.archive.dir).unwrap();
    let mut want = Vec::new();
    let mut inos = Vec::new();
    for (i, name) in ["tmp-linked", "renamed", "removed"].iter().enumerate() {
        let body = format!("body {i}").into_bytes();
        let r = env.land(name, &body);
        archive::archive(&env.cfg, &root, &r.id, PROCESSED).unwrap();
        let data = root.join(PROCESSED).join(&r.id).join(DATA);
        inos.push(ino(&data).1);
        let dst = fdir.join(format!("{}__{name}", r.id));
        match i {
            0 => fs::hard_link(&data, fdir.join(format!(".ingestd-{}-0.tmp", r.id))).unwrap(),
            1 => fs::hard_link(&data, &dst).unwrap(),
            _ => {
                // delivered, and the removal stopped with the entry renamed into work/
                fs::hard_link(&data, &dst).unwrap();
                fs::rename(
                    root.join(PROCESSED).join(&r.id),
                    root.join(WORK).join(format!("{}.done-x", r.id)),
                )
                .unwrap();
            }
        }
        want.push((dst.file_name().unwrap().to_str().unwrap().to_string(), body));
    }
    let Env { t, cfg, spool } = env;
    drop(spool);
    let spool = reopen(&cfg.spool.dir);
    let env = Env { t, cfg, spool };
    let (tx, h) = env.start();
    wait_until("all done", Duration::from_secs(20), || env.spool_empty()).await;
    stop(tx, h).await;
    want.sort();
    assert_eq!(
        env.forwarded(),
        want,
        "each delivered once, no temporary names"
    );
    let mut got: Vec<_> = want.iter().map(|(n, _)| ino(&fdir.join(n))).collect();
    got.sort();
    let mut exp: Vec<_> = inos.iter().map(|i| (got[0].0, *i, 1)).collect();
    exp.sort();
    assert_eq!(got, exp, "the landed inodes, each its only link");
}

/// A `running.json` left by a dead daemon is a counted attempt ("the node stopped
/// during this step"), with backoff; after `max_attempts` the entry is quarantined.
/// A mark of this very daemon (a step in flight) is left alone; a graceful stop
/// leaves no mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_running_mark_is_a_counted_attempt() {
    let t = tempfile::tempdir().unwrap();
    let cmd = script(t.path(), "slow.sh", "sleep 30");
    let env = Env::new(&format!("[process]\ncommand = [\"{cmd}\"]\n"));
    let rec = env.land("s", b"s");
    let e = env.spool.dir(ARCHIVED).join(&rec.id);
    let (tx, h) = env.start();
    wait_until("running", Duration::from_secs(10), || {
        e.join(process::RUNNING).exists()
    })
    .await;
    // our own mark: never counted by a rescan while the step runs
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state::load(&e).unwrap(), None);
    stop(tx, h).await;
    assert!(
        !e.join(process::RUNNING).exists(),
        "graceful stop keeps the mark"
    );
    assert_eq!(state::load(&e).unwrap(), None);

    // a dead daemon's mark, three times (max_attempts = 3)
    for n in 1..=3 {
        fs::write(
            e.join(process::RUNNING),
            format!(
                r#"{{"step":"process","daemon_pid":1,"daemon_start_ticks":{n},"started_at":"x"}}"#
            ),
        )
        .unwrap();
        let r = process::recover_stale_mark(env.spool.root(), &rec.id, &env.cfg.retry).unwrap();
        let want = if n == 1 {
            "1 time".to_string()
        } else {
            format!("{n} times")
        };
        assert_eq!(r.0, format!("{} {want}", process::NODE_STOPPED));
        match (n, r.1.unwrap()) {
            (1 | 2, state::AfterFailure::Retry { attempts, .. }) => assert_eq!(attempts, n as u32),
            (3, state::AfterFailure::Quarantined { attempts: 3 }) => {}
            x => panic!("{x:?}"),
        }
    }
    let q = env.spool.dir(QUARANTINE).join(&rec.id);
    assert!(q.is_dir() && !q.join(process::RUNNING).exists());
    let st = state::load(&q).unwrap().unwrap();
    assert_eq!(st.quarantined_step.as_deref(), Some("process"));
    assert!(process::recover_stale_mark(env.spool.root(), &rec.id, &env.cfg.retry).is_none());
}

#[test]
fn process_output_names_in_work() {
    for (name, want) in [
        ("n1-01JABC.1-0a1b2c3d", true),
        ("n1-01JABC.12-0a1b2c3d", true),
        ("n1-01JABC.stale-0a1b2c3d", true),
        ("n.1-01JABC.3-0a1b2c3d", true),
        ("n1-01JABC.done-x", false),
        ("n1-01JABC.1-dead", false),
        (".1-0a1b2c3d", false),
        ("n1-01JABC", false),
        ("n1-01JABC.x-0a1b2c3d", false),
    ] {
        assert_eq!(is_process_output(name), want, "{name}");
    }
}
