//! The inbox: files dropped into `[inbox] dir` by other means (a local process, an
//! NFS/SMB share, rsync) are landed into the spool like uploads.
//!
//! Discovery: filesystem events (the `notify` crate, recursive), plus a full rescan
//! at start and every `rescan_interval` (events can be dropped). Subdirectories are
//! followed; the recorded path is relative to the inbox (`sub/dir/file.csv`).
//! Names starting with '.' (files or directories) and common temporary names
//! ([`TEMP_PATTERNS`]) are never picked up; neither are symlinks or special files.
//!
//! A file is complete when
//! * it was renamed into the inbox (or to its final name inside it): a moved-to event
//!   makes it complete at once; or
//! * its size and mtime have not changed for `settle` (a file whose mtime is already
//!   older than `settle` when first seen — e.g. found by the start-up rescan — is
//!   complete at once).
//!
//! Landing: the file is read into a new spool entry, checked unchanged (size, mtime,
//! inode) before and after the read, and committed durably into `ready/` (up to
//! [`BATCH`] files share one group commit); only then is it removed from the inbox
//! (if the name still refers to the same file) and the directory fsynced. A crash
//! between the commit and the removal lands the file a second time after restart
//! (at-least-once; never lost). Everything runs on one blocking thread.

use crate::config::InboxConfig;
use crate::core::record::Record;
use crate::core::vpath;
use crate::ingest::context::Shared;
use crate::shutdown::Shutdown;
use crate::spool::{fsync_dir, Incoming, Refusal, Spool, Staged};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Last-component patterns of files still being written by their producer.
pub const TEMP_PATTERNS: &[&str] = &[
    ".*",
    "*.tmp",
    "*.part",
    "*.filepart",
    "*.partial",
    "*.crdownload",
    "*.swp",
    "*~",
];
/// Files landed per group commit.
pub const BATCH: usize = 64;
/// Files tracked at once (seen, not yet landed); more wait for a later rescan.
pub const MAX_PENDING: usize = 10_000;
const EVENT_QUEUE: usize = 4096;

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

pub async fn run(cfg: InboxConfig, ctx: Arc<Shared>, shutdown: Shutdown) {
    let (tx, rx) = mpsc::sync_channel::<Msg>(EVENT_QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    let worker = {
        let (tx, overflow, stop) = (tx.clone(), overflow.clone(), shutdown.clone());
        let spool = ctx.spool.clone();
        let landed: Landed = Arc::new(move |r: &Record, t: Instant| ctx.landed(r, t));
        tokio::task::spawn_blocking(move || {
            let mut ib = Inbox::new(cfg, spool, landed, overflow, stop);
            ib.run(tx, rx);
        })
    };
    shutdown.stopped().await;
    let _ = tx.try_send(Msg::Stop);
    let _ = worker.await;
}

/// Identity of a file version: if any of these change, it is still being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Key {
    fn of(m: &fs::Metadata) -> Key {
        Key {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

#[derive(Clone, Debug)]
struct Obs {
    key: Key,
    /// Unix ms since which the file is known unchanged.
    since_ms: u64,
    /// Renamed into place: complete now.
    renamed: bool,
}

pub(crate) struct Inbox {
    cfg: InboxConfig,
    dir: PathBuf,
    spool: Arc<Spool>,
    pending: HashMap<String, Obs>,
    /// Files refused for good (too large), with the version refused; bounded.
    refused: HashMap<String, Key>,
    /// The landing fan-out (log line, metrics, view): `Shared::landed`.
    landed: Landed,
    overflow: Arc<AtomicBool>,
    stop: Shutdown,
    settle_ms: u64,
}

/// What runs after each landing.
pub(crate) type Landed = Arc<dyn Fn(&Record, Instant) + Send + Sync>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Should this name (one component) be ignored?
pub fn is_temp_name(name: &str) -> bool {
    TEMP_PATTERNS.iter().any(|p| vpath::glob_match(p, name))
}

/// The inbox-relative path of `p` if it is one the inbox may land ('/'-separated,
/// every component a valid, non-hidden, non-temporary name).
fn rel_path(dir: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(dir).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let s = c.as_os_str().to_str()?;
        if vpath::validate_name(s).is_err() || is_temp_name(s) {
            return None;
        }
        parts.push(s);
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Inbox {
    pub(crate) fn new(
        cfg: InboxConfig,
        spool: Arc<Spool>,
        landed: Landed,
        overflow: Arc<AtomicBool>,
        stop: Shutdown,
    ) -> Inbox {
        Inbox {
            dir: cfg.dir.clone(),
            settle_ms: cfg.settle.0.as_millis() as u64,
            cfg,
            spool,
            landed,
            pending: HashMap::new(),
            refused: HashMap::new(),
            overflow,
            stop,
        }
    }

    fn run(&mut self, tx: SyncSender<Msg>, rx: mpsc::Receiver<Msg>) {
        if let Err(e) = fs::create_dir_all(&self.dir) {
            tracing::error!(dir = %self.dir.display(), "inbox: cannot create: {e}");
        }
        let overflow = self.overflow.clone();
        let watcher = notify::recommended_watcher(move |res| {
            if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Fs(res)) {
                overflow.store(true, Ordering::SeqCst);
            }
        })
        .and_then(|mut w| w.watch(&self.dir, RecursiveMode::Recursive).map(|_| w));
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "inbox: no filesystem events ({e}); relying on rescans");
                None
            }
        };
        tracing::info!(dir = %self.dir.display(), "inbox watching");
        let tick = Duration::from_millis((self.settle_ms / 4).clamp(50, 1000));
        let rescan_every = self.cfg.rescan_interval.0;
        let mut next_rescan = Instant::now();
        while !self.stop.is_stopping() {
            if Instant::now() >= next_rescan || self.overflow.swap(false, Ordering::SeqCst) {
                self.rescan();
                next_rescan = Instant::now() + rescan_every;
            }
            self.land_due();
            match rx.recv_timeout(tick) {
                Ok(Msg::Stop) => break,
                Ok(Msg::Fs(ev)) => {
                    self.on_event(ev);
                    // drain what is queued without waiting
                    let mut n = 0;
                    while n < EVENT_QUEUE {
                        match rx.try_recv() {
                            Ok(Msg::Fs(ev)) => self.on_event(ev),
                            Ok(Msg::Stop) => return,
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn on_event(&mut self, ev: notify::Result<notify::Event>) {
        use notify::event::{ModifyKind, RenameMode};
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!("inbox: watcher error: {e}; rescanning");
                self.overflow.store(true, Ordering::SeqCst);
                return;
            }
        };
        if ev.need_rescan() {
            self.overflow.store(true, Ordering::SeqCst);
        }
        match ev.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::To))
            | EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let Some(p) = ev.paths.last() {
                    self.observe_path(p, true);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                for p in &ev.paths {
                    if let Some(rel) = rel_path(&self.dir, p) {
                        self.pending.remove(&rel);
                    }
                }
            }
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Access(_) => {
                for p in &ev.paths {
                    self.observe_path(p, false);
                }
            }
            _ => {}
        }
    }

    /// A path was created, changed or renamed into place: track it (a directory:
    /// everything below it, as plain observations).
    fn observe_path(&mut self, p: &Path, renamed: bool) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            if rel_path(&self.dir, p).is_some() {
                self.walk(p);
            }
        } else if m.is_file() {
            if let Some(rel) = rel_path(&self.dir, p) {
                self.observe(rel, &m, renamed);
            }
        }
    }

    fn observe(&mut self, rel: String, m: &fs::Metadata, renamed: bool) {
        let key = Key::of(m);
        if self.refused.get(&rel) == Some(&key) {
            return;
        }
        let now = now_ms();
        match self.pending.get_mut(&rel) {
            Some(o) if o.key == key => {
                o.renamed |= renamed;
            }
            Some(o) => {
                o.key = key;
                o.since_ms = now;
                o.renamed = renamed;
            }
            None => {
                if self.pending.len() >= MAX_PENDING {
                    return; // a later rescan finds it
                }
                // Unchanged since its mtime: no need to watch it for `settle` again.
                let mtime_ms = (key.mtime_ns / 1_000_000).max(0) as u64;
                self.pending.insert(
                    rel,
                    Obs {
                        key,
                        since_ms: mtime_ms.min(now),
                        renamed,
                    },
                );
            }
        }
    }

    fn walk(&mut self, start: &Path) {
        let mut stack = vec![start.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if self.pending.len() >= MAX_PENDING {
                    return;
                }
                let p = e.path();
                let Some(rel) = rel_path(&self.dir, &p) else {
                    continue;
                };
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    if let Ok(m) = e.metadata() {
                        self.observe(rel, &m, false);
                    }
                }
            }
        }
    }

    fn rescan(&mut self) {
        let dir = self.dir.clone();
        // forget files that vanished
        self.pending
            .retain(|rel, _| fs::symlink_metadata(dir.join(rel)).is_ok());
        if self.refused.len() > MAX_PENDING {
            self.refused.clear();
        }
        self.walk(&dir);
    }

    /// Land every pending file that is complete, in group commits of [`BATCH`].
    fn land_due(&mut self) {
        loop {
            if self.stop.is_stopping() {
                return;
            }
            let now = now_ms();
            let mut due: Vec<String> = Vec::new();
            let mut gone = Vec::new();
            for (rel, o) in self.pending.iter_mut() {
                if !(o.renamed || now.saturating_sub(o.since_ms) >= self.settle_ms) {
                    continue;
                }
                match fs::symlink_metadata(self.dir.join(rel)) {
                    Ok(m) if m.is_file() && Key::of(&m) == o.key => {
                        due.push(rel.clone());
                        if due.len() >= BATCH {
                            break;
                        }
                    }
                    Ok(m) if m.is_file() => {
                        o.key = Key::of(&m);
                        o.since_ms = now;
                        o.renamed = false;
                    }
                    _ => gone.push(rel.clone()),
                }
            }
            for g in gone {
                self.pending.remove(&g);
            }
            if due.is_empty() {
                return;
            }
            let more = due.len() >= BATCH;
            self.land_batch(due);
            if !more {
                return;
            }
        }
    }

    fn land_batch(&mut self, rels: Vec<String>) {
        let mut staged: Vec<(String, Key, Staged)> = Vec::new();
        for rel in rels {
            let key = self.pending[&rel].key;
            match self.stage(&rel, key) {
                Ok(Some(s)) => staged.push((rel, key, s)),
                Ok(None) => {
                    // changed while read: watch it settle again
                    if let Some(o) = self.pending.get_mut(&rel) {
                        o.since_ms = now_ms();
                        o.renamed = false;
                    }
                }
                Err(Refusal::TooLarge { size, max }) => {
                    tracing::warn!(path = %rel, "inbox: file of {size} bytes exceeds spool.max_file_size {max}; left in the inbox");
                    self.pending.remove(&rel);
                    self.refused.insert(rel, key);
                }
                Err(e) => {
                    // no space, I/O: try again later
                    tracing::warn!(path = %rel, "inbox: cannot land yet: {e}");
                    if let Some(o) = self.pending.get_mut(&rel) {
                        o.since_ms = now_ms();
                    }
                }
            }
        }
        if staged.is_empty() {
            return;
        }
        let (meta, items): (Vec<(String, Key, Instant)>, Vec<Staged>) = staged
            .into_iter()
            .map(|(r, k, s)| ((r, k, s.started), s))
            .unzip();
        match self.spool.commit(items) {
            Ok(records) => {
                let mut dirs = HashSet::new();
                for ((rel, key, started), rec) in meta.into_iter().zip(records) {
                    self.pending.remove(&rel);
                    let p = self.dir.join(&rel);
                    // remove only the file we landed, not one renamed over it since
                    match fs::symlink_metadata(&p) {
                        Ok(m) if m.ino() == key.ino && m.dev() == key.dev => {
                            if let Err(e) = fs::remove_file(&p) {
                                tracing::warn!(path = %rel, "inbox: landed as {} but cannot remove: {e}", rec.id);
                            }
                        }
                        _ => {}
                    }
                    if let Some(parent) = p.parent() {
                        dirs.insert(parent.to_path_buf());
                    }
                    (self.landed)(&rec, started);
                }
                for d in dirs {
                    let _ = fsync_dir(&d);
                }
            }
            Err(e) => {
                tracing::error!("inbox: commit failed: {e}; will retry");
                for (rel, _, _) in meta {
                    if let Some(o) = self.pending.get_mut(&rel) {
                        o.since_ms = now_ms();
                    }
                }
            }
        }
    }

    /// Copy one file into a staged spool entry. `Ok(None)` if it changed meanwhile.
    fn stage(&self, rel: &str, key: Key) -> Result<Option<Staged>, Refusal> {
        let p = self.dir.join(rel);
        let mut f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags_nofollow()
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let m0 = f.metadata()?;
        if !m0.is_file() || Key::of(&m0) != key {
            return Ok(None);
        }
        self.spool.admit(key.size)?;
        let mut part = self.spool.begin(Incoming {
            user: self.cfg.user.clone(),
            path: rel.to_string(),
            mode: m0.mode(),
            mtime: Some(m0.mtime()),
            atime: Some(m0.atime()),
            remote_addr: "inbox".into(),
            protocol: "inbox",
        })?;
        let r = copy_into(&mut f, &mut part);
        let unchanged = match (&r, f.metadata()) {
            (Ok(n), Ok(m1)) => *n == key.size && Key::of(&m1) == key,
            _ => false,
        };
        if let Err(e) = r {
            part.abort();
            return Err(e.into());
        }
        if !unchanged {
            part.abort();
            return Ok(None);
        }
        Ok(Some(part.complete()?))
    }
}

fn copy_into(f: &mut File, part: &mut crate::spool::Partial) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match f.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        part.write(&buf[..k])?;
        n += k as u64;
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::units::HumanDuration;

    fn setup(settle_ms: u64) -> (tempfile::TempDir, Inbox) {
        let t = tempfile::tempdir().unwrap();
        let inbox = t.path().join("inbox");
        fs::create_dir(&inbox).unwrap();
        let spool = Arc::new(Spool::open(&t.path().join("spool"), "n1", 1 << 20, 0).unwrap());
        let cfg = InboxConfig {
            dir: inbox,
            settle: HumanDuration(Duration::from_millis(settle_ms)),
            rescan_interval: HumanDuration(Duration::from_secs(30)),
            user: "dropper".into(),
        };
        let ib = Inbox::new(
            cfg,
            spool,
            Arc::new(|_: &Record, _: Instant| {}),
            Arc::new(AtomicBool::new(false)),
            Shutdown::new(),
        );
        (t, ib)
    }

    fn ready(t: &tempfile::TempDir) -> Vec<crate::core::record::Record> {
        let d = t.path().join("spool/ready");
        let mut v: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| crate::spool::read_record(&e.path()).unwrap())
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    #[test]
    fn temp_names() {
        for n in [".x", "a.tmp", "b.part", "c.filepart", "d~", ".hidden.csv"] {
            assert!(is_temp_name(n), "{n}");
        }
        for n in ["a.csv", "tmp", "part.txt", "a.tmp.csv"] {
            assert!(!is_temp_name(n), "{n}");
        }
        let d = Path::new("/in");
        assert_eq!(
            rel_path(d, Path::new("/in/a/b.csv")).as_deref(),
            Some("a/b.csv")
        );
        assert_eq!(rel_path(d, Path::new("/in/.a/b.csv")), None);
        assert_eq!(rel_path(d, Path::new("/in/a/b.csv.part")), None);
        assert_eq!(rel_path(d, Path::new("/in")), None);
        assert_eq!(rel_path(d, Path::new("/elsewhere/x")), None);
    }

    #[test]
    fn settle_then_land_and_remove() {
        let (t, mut ib) = setup(300);
        let dir = ib.dir.clone();
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/a.csv"), b"alpha").unwrap();
        fs::write(dir.join("skip.tmp"), b"no").unwrap();
        fs::write(dir.join(".hidden"), b"no").unwrap();
        ib.rescan();
        // a fresh file: not yet settled
        ib.land_due();
        assert!(ready(&t).is_empty());
        assert_eq!(ib.pending.len(), 1);
        // a write resets the clock
        std::thread::sleep(Duration::from_millis(200));
        fs::write(dir.join("sub/a.csv"), b"alpha+beta").unwrap();
        ib.rescan();
        std::thread::sleep(Duration::from_millis(200));
        ib.land_due();
        assert!(ready(&t).is_empty(), "landed before settling");
        std::thread::sleep(Duration::from_millis(200));
        ib.land_due();
        let r = ready(&t);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].path, "sub/a.csv");
        assert_eq!(r[0].user, "dropper");
        assert_eq!(r[0].protocol, "inbox");
        assert_eq!(r[0].remote_addr, "inbox");
        assert_eq!(
            r[0].blake3,
            blake3::hash(b"alpha+beta").to_hex().to_string()
        );
        assert!(!dir.join("sub/a.csv").exists());
        assert!(dir.join("skip.tmp").exists() && dir.join(".hidden").exists());
        assert!(ib.pending.is_empty());
    }

    #[test]
    fn renamed_is_immediate_and_old_files_too() {
        let (t, mut ib) = setup(60_000);
        let dir = ib.dir.clone();
        fs::write(dir.join(".x.tmp"), b"renamed").unwrap();
        fs::rename(dir.join(".x.tmp"), dir.join("x.bin")).unwrap();
        ib.observe_path(&dir.join("x.bin"), true);
        // an old file found by a rescan (e.g. dropped while the daemon was down)
        fs::write(dir.join("old.bin"), b"old").unwrap();
        let f = File::options()
            .write(true)
            .open(dir.join("old.bin"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        drop(f);
        fs::write(dir.join("new.bin"), b"new").unwrap();
        ib.rescan();
        ib.land_due();
        let r = ready(&t);
        assert_eq!(
            r.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["old.bin", "x.bin"]
        );
        assert!(dir.join("new.bin").exists());
        assert!(!dir.join("x.bin").exists() && !dir.join("old.bin").exists());
    }

    #[test]
    fn too_large_is_left_alone() {
        let (t, mut ib) = setup(0);
        let dir = ib.dir.clone();
        fs::write(dir.join("big"), vec![0u8; (1 << 20) + 1]).unwrap();
        ib.rescan();
        ib.land_due();
        ib.rescan();
        ib.land_due();
        assert!(ready(&t).is_empty());
        assert!(dir.join("big").exists());
        assert!(ib.pending.is_empty());
    }

    #[test]
    fn changed_during_read_is_not_landed() {
        let (t, mut ib) = setup(0);
        let dir = ib.dir.clone();
        fs::write(dir.join("f"), b"one").unwrap();
        ib.rescan();
        // the file changes after it was observed: stage() sees a different key
        fs::write(dir.join("f"), b"one two").unwrap();
        let key = ib.pending["f"].key;
        assert!(ib.stage("f", key).unwrap().is_none());
        assert!(fs::read_dir(t.path().join("spool/partial"))
            .unwrap()
            .next()
            .is_none());
    }
}
