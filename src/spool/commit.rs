//! Group commit across sessions: a few threads per spool ([`THREADS`]) take staged
//! files from every caller ([`Spool::commit_one`]) off one queue, commit those that
//! arrive together as one group (one round of parallel fsyncs, the renames, one
//! fsync of `ready/`) and answer each caller with its own record. Nothing is
//! answered before the group's commit has returned.
//!
//! Batching: a free thread blocks for the first file, then takes everything already
//! queued (at most [`MAX_BATCH`]). Only when its last group held more than one file
//! (the queue had built up: several senders are committing at once) does it also
//! wait up to [`WINDOW`] for more; a lone sequential sender never waits for company
//! that is not coming. Groups are formed only while every thread is busy, so a few
//! concurrent senders commit side by side as before (the file system's journal
//! joins their fsyncs) and many share groups.
//!
//! Failure: a group fails together. If a file's fsync or a rename fails, every
//! caller of that group gets the error and its upload is refused; the files the
//! group had already renamed into `ready/` are moved back (durably) first, so a
//! sender told "not stored" never has its file delivered. A directory fsync that
//! fails after the renames (or an undo that cannot be completed) stops the node
//! instead of answering (an fsync error cannot be retried safely: the kernel
//! reports a writeback error once, and a second fsync may succeed without the data
//! being on disk). A staged file whose group failed is removed when it is
//! dropped, as for [`Spool::commit`].

use super::{commit_group, GroupError, Spool, Staged};
use crate::core::record::Record;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// Commit threads per spool (groups in flight at once).
pub const THREADS: usize = 4;
/// The most files committed as one group.
pub const MAX_BATCH: usize = 256;
/// How long a group waits for more files when the previous group was shared.
pub const WINDOW: Duration = Duration::from_millis(1);

struct Job {
    staged: Staged,
    reply: oneshot::Sender<io::Result<Record>>,
}

/// What the commit thread needs of its spool (it must not keep the `Spool`, whose
/// drop ends the thread).
pub(super) struct Target {
    pub ready: PathBuf,
    pub partial: PathBuf,
    pub wake: Arc<Notify>,
}

/// Counters (tests and benchmarks): groups committed, files in them.
#[derive(Default)]
pub struct Stats {
    pub groups: AtomicU64,
    pub files: AtomicU64,
}

/// The handle of a spool's commit thread; the thread ends when this is dropped.
pub(super) struct Committer {
    tx: mpsc::Sender<Job>,
    pub stats: Arc<Stats>,
}

impl Committer {
    pub fn start(target: Target) -> io::Result<Committer> {
        let (tx, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let target = Arc::new(target);
        let stats = Arc::new(Stats::default());
        for _ in 0..THREADS {
            let (rx, target, st) = (rx.clone(), target.clone(), stats.clone());
            std::thread::Builder::new()
                .name("ingestd-commit".into())
                .spawn(move || run(&rx, &target, &st))?;
        }
        Ok(Committer { tx, stats })
    }

    fn submit(&self, staged: Staged) -> io::Result<oneshot::Receiver<io::Result<Record>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { staged, reply })
            .map_err(|_| io::Error::other("commit thread stopped"))?;
        Ok(rx)
    }
}

/// A commit thread: until every sender is gone, take a group, commit it, answer.
fn run(rx: &Mutex<mpsc::Receiver<Job>>, target: &Target, stats: &Stats) {
    let mut shared = false;
    while let Some(batch) = take(rx, shared) {
        shared = batch.len() > 1;
        commit_batch(batch, target, stats);
    }
}

/// The next group (`None`: the spool is gone). The queue is held while the group
/// is formed, so the other threads wait for the next one.
fn take(rx: &Mutex<mpsc::Receiver<Job>>, linger: bool) -> Option<Vec<Job>> {
    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
    {
        let first = rx.recv().ok()?;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if linger {
            let until = Instant::now() + WINDOW;
            while batch.len() < MAX_BATCH {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        Some(batch)
    }
}

fn commit_batch(batch: Vec<Job>, target: &Target, stats: &Stats) {
    let (staged, replies): (Vec<Staged>, Vec<_>) =
        batch.into_iter().map(|j| (j.staged, j.reply)).unzip();
    let n = staged.len();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        commit_group(&target.ready, &target.partial, &target.wake, staged)
            .map_err(GroupError::or_stop)
    }))
    .unwrap_or_else(|_| Err(io::Error::other("group commit panicked")));
    stats.groups.fetch_add(1, Ordering::Relaxed);
    stats.files.fetch_add(n as u64, Ordering::Relaxed);
    match r {
        Ok(recs) => {
            for (reply, rec) in replies.into_iter().zip(recs) {
                let _ = reply.send(Ok(rec));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
        }
    }
}

impl Spool {
    /// Commit one staged file together with whatever other sessions commit at the
    /// same time (see the module comment). Returns once the file is durable in
    /// `ready/` (or its group failed). Does not block the caller's thread.
    pub async fn commit_one(&self, staged: Staged) -> io::Result<Record> {
        let rx = self.committer()?.submit(staged)?;
        rx.await
            .map_err(|_| io::Error::other("commit thread stopped"))?
    }

    /// Groups and files committed by [`Spool::commit_one`] so far.
    pub fn group_commit_stats(&self) -> (u64, u64) {
        match self.committer.get() {
            Some(c) => (
                c.stats.groups.load(Ordering::Relaxed),
                c.stats.files.load(Ordering::Relaxed),
            ),
            None => (0, 0),
        }
    }

    fn committer(&self) -> io::Result<&Committer> {
        if let Some(c) = self.committer.get() {
            return Ok(c);
        }
        let c = Committer::start(Target {
            ready: self.dir(super::READY),
            partial: self.dir(super::PARTIAL),
            wake: self.wake.clone(),
        })?;
        // a racing caller may have won: its thread serves, ours ends with `c`
        let _ = self.committer.set(c);
        Ok(self.committer.get().expect("just set"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Incoming, PARTIAL, READY, RECORD};
    use super::*;
    use std::fs;

    fn incoming(path: &str) -> Incoming {
        Incoming {
            user: "alice".into(),
            path: path.into(),
            mode: 0o644,
            mtime: None,
            atime: None,
            remote_addr: "127.0.0.1:1".into(),
            protocol: "sftp",
        }
    }

    fn stage(spool: &Spool, path: &str, data: &[u8]) -> Staged {
        let mut p = spool.begin(incoming(path)).unwrap();
        p.write(data).unwrap();
        p.complete().unwrap()
    }

    /// Many concurrent committers: fewer groups than files, and every caller is
    /// answered only when its own file is durable in `ready/`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_committers_share_groups() {
        let t = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&t.path().join("s"), "n1", 1 << 20, 0).unwrap());
        let n = 64;
        let mut tasks = Vec::new();
        for i in 0..n {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                let body = format!("file {i}");
                let s = {
                    let spool = spool.clone();
                    let b = body.clone();
                    tokio::task::spawn_blocking(move || {
                        stage(&spool, &format!("f{i}"), b.as_bytes())
                    })
                    .await
                    .unwrap()
                };
                let rec = spool.commit_one(s).await.unwrap();
                // durable and visible before the answer
                let e = spool.dir(READY).join(&rec.id);
                assert_eq!(fs::read(e.join("data")).unwrap(), body.as_bytes());
                assert!(e.join(RECORD).is_file());
                assert!(!spool.dir(PARTIAL).join(&rec.id).exists());
                assert_eq!(rec.path, format!("f{i}"));
                rec.id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        let (groups, files) = spool.group_commit_stats();
        assert_eq!(files, n as u64);
        assert!(groups < files, "{groups} groups for {files} files");
        assert_eq!(fs::read_dir(spool.dir(READY)).unwrap().count(), n);
    }

    /// A group fails together: every member gets the error, none is in `ready/`,
    /// and their partial files are removed.
    #[test]
    fn a_failed_group_fails_every_member() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::open(&t.path().join("s"), "n1", 1 << 20, 0).unwrap();
        let good = stage(&spool, "good", b"good");
        let bad = stage(&spool, "bad", b"bad");
        // the bad one's record vanished: its fsync fails
        fs::remove_file(bad.dir.join(RECORD)).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut answers = Vec::new();
        for s in [good, bad] {
            let (reply, a) = oneshot::channel();
            tx.send(Job { staged: s, reply }).unwrap();
            answers.push(a);
        }
        drop(tx);
        let target = Target {
            ready: spool.dir(READY),
            partial: spool.dir(PARTIAL),
            wake: Arc::new(Notify::new()),
        };
        let stats = Stats::default();
        run(&Mutex::new(rx), &target, &stats); // both queued: one group
        assert_eq!(stats.groups.load(Ordering::Relaxed), 1);
        for mut a in answers {
            assert!(a.try_recv().unwrap().is_err());
        }
        assert_eq!(fs::read_dir(spool.dir(READY)).unwrap().count(), 0);
        assert_eq!(fs::read_dir(spool.dir(PARTIAL)).unwrap().count(), 0);
    }

    /// A rename that fails after others of its group succeeded: the ones already
    /// in `ready/` are moved back (and both directories fsynced) before anyone is
    /// answered, so no file of the failed group is ever delivered; the partial
    /// files are then removed. Each rename position is tried, with a real
    /// failure (a non-empty directory in the way) and an injected one (EIO).
    #[test]
    fn a_group_failing_after_some_renames_is_undone() {
        for k in 0..4 {
            for injected in [false, true] {
                let t = tempfile::tempdir().unwrap();
                let spool = Spool::open(&t.path().join("s"), "n1", 1 << 20, 0).unwrap();
                let staged: Vec<Staged> = (0..4)
                    .map(|i| stage(&spool, &format!("f{i}"), format!("body {i}").as_bytes()))
                    .collect();
                let ids: Vec<String> = staged.iter().map(|s| s.record.id.clone()).collect();
                if injected {
                    super::super::FAULTS.with(|f| *f.borrow_mut() = vec![("rename", k)]);
                } else {
                    // rename(2) onto a non-empty directory fails (ENOTEMPTY)
                    fs::create_dir_all(spool.dir(READY).join(&ids[k]).join("x")).unwrap();
                }
                super::super::DIR_FSYNCS.with(|v| v.borrow_mut().clear());
                let wake = Notify::new();
                let r = commit_group(&spool.dir(READY), &spool.dir(PARTIAL), &wake, staged);
                super::super::FAULTS.with(|f| f.borrow_mut().clear());
                assert!(matches!(r, Err(GroupError::Failed(_))), "k={k}: {r:?}");
                let in_ready: Vec<String> = fs::read_dir(spool.dir(READY))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                let blocker: Vec<String> = if injected {
                    vec![]
                } else {
                    vec![ids[k].clone()]
                };
                assert_eq!(
                    in_ready, blocker,
                    "k={k} injected={injected}: nothing landed"
                );
                if k > 0 {
                    let synced = super::super::DIR_FSYNCS.with(|v| v.borrow().clone());
                    assert!(
                        synced.contains(&spool.dir(READY)) && synced.contains(&spool.dir(PARTIAL)),
                        "k={k}: the undo is made durable before the answer: {synced:?}"
                    );
                }
                // the staged files were dropped with the group: partial/ is empty
                assert_eq!(
                    fs::read_dir(spool.dir(PARTIAL)).unwrap().count(),
                    0,
                    "k={k}"
                );
            }
        }
    }

    /// A failed fsync of `ready/` after the renames cannot be undone or retried:
    /// the group commit reports it as fatal (the node stops instead of answering).
    #[test]
    fn a_failed_fsync_of_ready_after_the_renames_is_fatal() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::open(&t.path().join("s"), "n1", 1 << 20, 0).unwrap();
        let staged = vec![stage(&spool, "a", b"a"), stage(&spool, "b", b"b")];
        super::super::FAULTS.with(|f| *f.borrow_mut() = vec![("fsync", 0)]);
        let wake = Notify::new();
        let r = commit_group(&spool.dir(READY), &spool.dir(PARTIAL), &wake, staged);
        super::super::FAULTS.with(|f| f.borrow_mut().clear());
        match r {
            Err(GroupError::Fatal(why)) => assert!(why.contains("fsync"), "{why}"),
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    /// A lone sequential committer gets a group of its own each time, at once.
    #[tokio::test]
    async fn sequential_committer_is_not_delayed() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::open(&t.path().join("s"), "n1", 1 << 20, 0).unwrap();
        for i in 0..5 {
            let s = stage(&spool, &format!("f{i}"), b"x");
            spool.commit_one(s).await.unwrap();
        }
        assert_eq!(spool.group_commit_stats(), (5, 5));
    }
}
