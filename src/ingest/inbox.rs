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
//! Landing a complete file, in this order:
//! 1. **claim**: rename `<inbox>/<rel>` to `<inbox>/.ingestd-claim/<id>/<rel>`
//!    (same file system; `<id>` is the spool id it will land under). From then on
//!    the producer cannot reach it by name: an append by name fails or creates a
//!    new file, which is landed on its own;
//! 2. **stage**: copy the claimed file into `partial/<id>`, checking that size,
//!    mtime and inode did not change during the copy (else it settles again);
//! 3. **commit** (up to [`BATCH`] files per group commit) into `ready/<id>`, with
//!    the ids *held* by the spool: the archive stage does not take them yet;
//! 4. fsync the inbox directories the files were claimed from;
//! 5. check each claimed file once more: if it changed (written through a
//!    descriptor opened before the claim), it is re-claimed under a new id and
//!    landed again, so no byte is lost; then remove `.ingestd-claim/<id>` and fsync
//!    `.ingestd-claim`;
//! 6. release the held ids.
//!
//! Crash points (kill -9 or power loss), and what the start-up recovery
//! ([`recover_claims`], run before the pipeline starts) does:
//! * before 1 completes: the file is still in the inbox (a rename is atomic), or an
//!   empty `.ingestd-claim/<id>/` exists, which is removed;
//! * after 1, before 3 is durable: `ready/<id>` does not exist (the partial entry
//!   is swept): the claimed file is landed under `<id>`, once;
//! * after 3, before 5 is durable: `<id>` is in `ready/` (it cannot have moved on:
//!   it was held until 6, and after a restart the pipeline starts after the
//!   recovery): the claim is removed, the file is not landed again;
//! * after 5: nothing is left to do. Step 4 makes sure that a power failure cannot
//!   undo the claim rename (bringing the landed file back into the inbox) once
//!   the claim is gone.
//!
//! So a file is landed exactly once, never lost. Everything runs on one blocking
//! thread.

use crate::config::InboxConfig;
use crate::core::record::Record;
use crate::core::vpath;
use crate::ingest::context::Shared;
use crate::shutdown::Shutdown;
use crate::spool::{fsync_dir, Incoming, Refusal, Spool, Staged, STATES};
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
/// Where files are claimed before they are landed (hidden: never picked up itself).
pub const CLAIM_DIR: &str = ".ingestd-claim";
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
pub struct Key {
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

/// A claimed file waiting to be landed.
#[derive(Clone, Debug)]
struct Claim {
    rel: String,
    key: Key,
    /// Unix ms since which it is known unchanged (0: complete when claimed).
    since_ms: u64,
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
    /// Files refused for good (too large, a name the archive cannot hold), with the
    /// version refused; bounded.
    refused: HashMap<String, Key>,
    /// Claimed files (in `.ingestd-claim/<id>/<rel>`) not landed yet, by claim id.
    claimed: HashMap<String, Claim>,
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
            claimed: HashMap::new(),
            overflow,
            stop,
        }
    }

    fn run(&mut self, tx: SyncSender<Msg>, rx: mpsc::Receiver<Msg>) {
        if let Err(e) = fs::create_dir_all(&self.dir) {
            tracing::error!(dir = ?self.dir, error = ?e.to_string(), "inbox: cannot create");
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
                tracing::warn!(dir = ?self.dir, error = ?e.to_string(), "inbox: no filesystem events; relying on rescans");
                None
            }
        };
        self.recover();
        tracing::info!(dir = ?self.dir, "inbox watching");
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
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = ?e.to_string(), "inbox: watcher error; rescanning");
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
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in &ev.paths {
                    self.observe_path(p, false);
                }
            }
            // Any other access – above all the OPEN of a directory, which every walk
            // of ours causes – must not trigger another walk: that was an endless
            // event storm that overflowed the queue and dropped rename events.
            EventKind::Access(_) => {}
            EventKind::Create(_) | EventKind::Modify(_) => {
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

    /// Claim every pending file that is complete, then land the claimed files in
    /// group commits of [`BATCH`].
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
            let more = due.len() >= BATCH;
            for rel in due {
                self.claim(rel);
            }
            self.land_claimed();
            if !more {
                return;
            }
        }
    }

    /// Claim a complete file: refuse it in place if it can never be landed (too
    /// large, a name the archive cannot hold), else rename it to
    /// `.ingestd-claim/<id>/<rel>` (same file system; its producer can no longer
    /// reach it by name).
    fn claim(&mut self, rel: String) {
        let Some(o) = self.pending.get(&rel).cloned() else {
            return;
        };
        let id = self.spool.new_id();
        let refusal = if o.key.size > self.spool.max_file_size() {
            Some(
                Refusal::TooLarge {
                    size: o.key.size,
                    max: self.spool.max_file_size(),
                }
                .to_string(),
            )
        } else {
            self.spool
                .check_name(&id, &self.cfg.user, &rel)
                .err()
                .map(|r| r.to_string())
        };
        if let Some(why) = refusal {
            tracing::warn!(path = ?rel, reason = ?why, "inbox: cannot land; left in the inbox");
            self.pending.remove(&rel);
            self.refused.insert(rel, o.key);
            return;
        }
        let target = claim_path(&self.dir, &id, &rel);
        let r = target
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::rename(self.dir.join(&rel), &target));
        match r {
            Ok(()) => {
                self.pending.remove(&rel);
                let (key, since_ms) = match fs::symlink_metadata(&target) {
                    Ok(m) if Key::of(&m) == o.key => (o.key, 0),
                    // replaced since it was found complete: let it settle again
                    Ok(m) => (Key::of(&m), now_ms()),
                    Err(_) => (o.key, now_ms()),
                };
                self.claimed.insert(id, Claim { rel, key, since_ms });
            }
            Err(e) => {
                let _ = fs::remove_dir_all(self.dir.join(CLAIM_DIR).join(&id));
                if e.kind() == io::ErrorKind::NotFound {
                    self.pending.remove(&rel);
                } else {
                    tracing::warn!(path = ?rel, error = ?e.to_string(), "inbox: cannot claim; will retry");
                    if let Some(o) = self.pending.get_mut(&rel) {
                        o.since_ms = now_ms();
                    }
                }
            }
        }
    }

    /// Land every claimed file that is complete, in group commits of [`BATCH`].
    fn land_claimed(&mut self) {
        // bounded: a file that fails stays claimed and is retried at the next call
        let rounds = self.claimed.len() / BATCH + 1;
        for _ in 0..rounds {
            if self.stop.is_stopping() {
                return;
            }
            let now = now_ms();
            let due: Vec<String> = self
                .claimed
                .iter()
                .filter(|(_, c)| now.saturating_sub(c.since_ms) >= self.settle_ms)
                .map(|(id, _)| id.clone())
                .take(BATCH)
                .collect();
            if due.is_empty() {
                return;
            }
            self.land_batch(due);
        }
    }

    /// Land claimed files (by claim id) in one group commit; see the module comment
    /// for the order of operations and the crash points.
    fn land_batch(&mut self, ids: Vec<String>) {
        let mut staged: Vec<(String, Staged)> = Vec::new();
        for id in ids {
            let c = self.claimed[&id].clone();
            match self.stage(&id, &c.rel, c.key) {
                Ok(Some(s)) => staged.push((id, s)),
                Ok(None) => {
                    // changed while read (written through an open descriptor): settle again
                    if let Some(c) = self.claimed.get_mut(&id) {
                        if let Ok(m) = fs::symlink_metadata(claim_path(&self.dir, &id, &c.rel)) {
                            c.key = Key::of(&m);
                        }
                        c.since_ms = now_ms();
                    }
                }
                Err(e) => {
                    // no space, I/O: try again later
                    tracing::warn!(path = ?c.rel, error = ?e.to_string(), "inbox: cannot land yet");
                    if let Some(c) = self.claimed.get_mut(&id) {
                        c.since_ms = now_ms();
                    }
                }
            }
        }
        if staged.is_empty() {
            return;
        }
        let (ids, items): (Vec<String>, Vec<Staged>) = staged.into_iter().unzip();
        let started: Vec<Instant> = items.iter().map(|s| s.started).collect();
        // No entry may leave ready/ before its claim is gone for good (see the crash
        // points in the module comment).
        self.spool.hold(ids.iter().cloned());
        let records = match self.spool.commit(items) {
            Ok(r) => r,
            Err(e) => {
                self.spool.release(&ids);
                tracing::error!(error = ?e.to_string(), "inbox: commit failed; will retry");
                for id in &ids {
                    if let Some(c) = self.claimed.get_mut(id) {
                        c.since_ms = now_ms();
                    }
                }
                return;
            }
        };
        for (rec, t) in records.iter().zip(&started) {
            (self.landed)(rec, *t);
        }
        // The claim renames out of the inbox must be durable before the claims are
        // removed, or a power failure could bring a landed file back into the inbox.
        let mut dirs = HashSet::new();
        for id in &ids {
            if let Some(c) = self.claimed.get(id) {
                if let Some(parent) = self.dir.join(&c.rel).parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
        }
        for d in dirs {
            let _ = fsync_dir(&d);
        }
        let claims = self.dir.join(CLAIM_DIR);
        for (id, rec) in ids.iter().zip(&records) {
            let Some(c) = self.claimed.remove(id) else {
                continue;
            };
            let file = claim_path(&self.dir, id, &c.rel);
            match fs::symlink_metadata(&file) {
                Ok(m) if Key::of(&m) != c.key => {
                    // written to through an open descriptor after it was read: land
                    // the new version too rather than lose the bytes
                    let id2 = self.spool.new_id();
                    let to = claim_path(&self.dir, &id2, &c.rel);
                    let moved = to
                        .parent()
                        .map_or(Ok(()), fs::create_dir_all)
                        .and_then(|()| fs::rename(&file, &to));
                    match moved {
                        Ok(()) => {
                            tracing::warn!(path = ?c.rel, id = %rec.id, "inbox: file changed after it was landed; landing the new version too");
                            self.claimed.insert(
                                id2,
                                Claim {
                                    rel: c.rel.clone(),
                                    key: Key::of(&m),
                                    since_ms: now_ms(),
                                },
                            );
                        }
                        Err(e) => {
                            tracing::error!(path = ?c.rel, error = ?e.to_string(), "inbox: cannot re-claim a changed file; left in the claim directory");
                            continue;
                        }
                    }
                }
                _ => {}
            }
            if let Err(e) = fs::remove_dir_all(claims.join(id)) {
                tracing::warn!(path = ?c.rel, id = %rec.id, error = ?e.to_string(), "inbox: landed but cannot remove its claim");
            }
        }
        let _ = fsync_dir(&claims);
        self.spool.release(&ids);
    }

    /// Copy one claimed file into a staged spool entry with the claim's id.
    /// `Ok(None)` if it changed meanwhile.
    fn stage(&self, id: &str, rel: &str, key: Key) -> Result<Option<Staged>, Refusal> {
        let p = claim_path(&self.dir, id, rel);
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
        let mut part = self.spool.begin_with_id(
            id.to_string(),
            Incoming {
                user: self.cfg.user.clone(),
                path: rel.to_string(),
                mode: m0.mode(),
                mtime: Some(m0.mtime()),
                atime: Some(m0.atime()),
                remote_addr: "inbox".into(),
                protocol: "inbox",
            },
        )?;
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

    /// Start-up recovery of the claim directory (see [`recover_claims`]): claims of
    /// files never landed are tracked again and landed.
    fn recover(&mut self) {
        match recover_claims(&self.dir, &self.spool) {
            Ok(left) => {
                for (id, rel, key) in left {
                    self.claimed.insert(
                        id,
                        Claim {
                            rel,
                            key,
                            since_ms: 0,
                        },
                    );
                }
            }
            Err(e) => {
                tracing::error!(dir = ?self.dir, error = ?e.to_string(), "inbox: cannot recover claims")
            }
        }
    }
}

/// Where a claimed file waits: `<inbox>/.ingestd-claim/<id>/<rel>`.
fn claim_path(dir: &Path, id: &str, rel: &str) -> PathBuf {
    dir.join(CLAIM_DIR).join(id).join(rel)
}

/// Recover `<inbox>/.ingestd-claim/` after a crash; must run before the pipeline
/// starts. A claim whose id is an entry in the spool was landed (the crash came
/// before its removal): it is removed. Any other claim was never committed: its
/// file is returned (id, inbox-relative path, key) to be landed under that id.
/// Claims holding no file (a crash between `mkdir` and `rename`) are removed.
pub fn recover_claims(dir: &Path, spool: &Spool) -> io::Result<Vec<(String, String, Key)>> {
    let claims = dir.join(CLAIM_DIR);
    let rd = match fs::read_dir(&claims) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut left = Vec::new();
    let mut removed = false;
    for e in rd {
        let e = e?;
        let Ok(id) = e.file_name().into_string() else {
            continue;
        };
        let cdir = e.path();
        let landed = STATES
            .iter()
            .any(|s| fs::symlink_metadata(spool.dir(s).join(&id)).is_ok());
        let mut files = Vec::new();
        if !landed {
            let mut stack = vec![cdir.clone()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d)?.flatten() {
                    let Ok(ft) = e.file_type() else { continue };
                    if ft.is_dir() {
                        stack.push(e.path());
                    } else if ft.is_file() {
                        files.push(e.path());
                    }
                }
            }
        }
        let mut files = files.into_iter();
        match files.next() {
            Some(f) => {
                let rel = f
                    .strip_prefix(&cdir)
                    .ok()
                    .and_then(|r| r.to_str())
                    .map(str::to_string);
                let m = fs::symlink_metadata(&f)?;
                match rel {
                    Some(rel) => left.push((id, rel, Key::of(&m))),
                    None => {
                        tracing::error!(claim = ?f, "inbox: claimed file with a non-UTF-8 name; left alone")
                    }
                }
                for other in files {
                    tracing::error!(claim = ?other, "inbox: unexpected second file in a claim; left alone");
                }
            }
            None => {
                if landed {
                    tracing::info!(
                        id,
                        "inbox: file landed before the crash; removing its claim"
                    );
                }
                fs::remove_dir_all(&cdir)?;
                removed = true;
            }
        }
    }
    if removed {
        fsync_dir(&claims)?;
    }
    Ok(left)
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

    /// A producer appending to a file by name while it is being landed never loses
    /// a byte: every byte it wrote is in a landed entry (or still in the inbox).
    #[test]
    fn bytes_appended_while_landing_are_never_lost() {
        use std::io::Write;
        let (t, mut ib) = setup(0);
        let dir = ib.dir.clone();
        for round in 0..20 {
            let name = format!("log{round}.txt");
            let p = dir.join(&name);
            fs::write(&p, format!("start {round}\n")).unwrap();
            let writer = {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut written = format!("start {round}\n").into_bytes();
                    for i in 0..20_000 {
                        let Ok(mut f) = fs::OpenOptions::new().append(true).open(&p) else {
                            break;
                        };
                        let line = format!("line {i}\n");
                        f.write_all(line.as_bytes()).unwrap();
                        written.extend_from_slice(line.as_bytes());
                        drop(f);
                        std::thread::sleep(Duration::from_micros(150));
                    }
                    written
                })
            };
            let claim = dir.join(".ingestd-claim");
            let claims_empty = || fs::read_dir(&claim).map_or(true, |mut r| r.next().is_none());
            let end = Instant::now() + Duration::from_secs(20);
            while p.exists() || !claims_empty() {
                assert!(Instant::now() < end, "round {round}: never landed");
                ib.rescan();
                ib.land_due();
                std::thread::sleep(Duration::from_millis(1));
            }
            let written = writer.join().unwrap();
            let landed: Vec<Vec<u8>> = fs::read_dir(t.path().join("spool/ready"))
                .unwrap()
                .flatten()
                .filter(|e| crate::spool::read_record(&e.path()).unwrap().path == name)
                .map(|e| fs::read(e.path().join("data")).unwrap())
                .collect();
            let longest = landed.iter().max_by_key(|d| d.len()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(longest),
                String::from_utf8_lossy(&written),
                "round {round}: bytes lost"
            );
        }
    }

    /// Crash points of the claim (see the module comment): a claim never committed
    /// is landed at start under its id; a claim whose entry is in the spool was
    /// landed and is only removed; an empty claim (crash before the rename) goes.
    #[test]
    fn claims_are_recovered_after_a_crash_and_never_landed_twice() {
        let (t, mut ib) = setup(60_000);
        let dir = ib.dir.clone();
        let claims = dir.join(CLAIM_DIR);
        // 1. claimed, not landed
        let id1 = ib.spool.new_id();
        fs::create_dir_all(claims.join(&id1).join("sub")).unwrap();
        fs::write(claims.join(&id1).join("sub/a.csv"), b"claimed").unwrap();
        // 2. claimed and committed, claim not yet removed
        let id2 = ib.spool.new_id();
        fs::create_dir_all(claims.join(&id2)).unwrap();
        fs::write(claims.join(&id2).join("b.csv"), b"landed").unwrap();
        let mut p = ib
            .spool
            .begin_with_id(
                id2.clone(),
                Incoming {
                    user: "dropper".into(),
                    path: "b.csv".into(),
                    mode: 0o644,
                    mtime: None,
                    atime: None,
                    remote_addr: "inbox".into(),
                    protocol: "inbox",
                },
            )
            .unwrap();
        p.write(b"landed").unwrap();
        ib.spool.commit(vec![p.complete().unwrap()]).unwrap();
        // 3. claim directory made, rename never happened
        let id3 = ib.spool.new_id();
        fs::create_dir_all(claims.join(&id3).join("x/y")).unwrap();

        ib.recover();
        ib.rescan();
        ib.land_due();
        let r = ready(&t);
        assert_eq!(
            r.iter()
                .map(|r| (r.path.as_str(), r.id.as_str()))
                .collect::<Vec<_>>(),
            [("b.csv", id2.as_str()), ("sub/a.csv", id1.as_str())]
        );
        assert!(fs::read_dir(&claims).unwrap().next().is_none());
        assert!(ib.claimed.is_empty() && ib.pending.is_empty());
        assert!(!ib.spool.is_held(&id1));
    }

    #[test]
    fn changed_during_read_is_not_landed() {
        let (t, mut ib) = setup(0);
        let dir = ib.dir.clone();
        fs::write(dir.join("f"), b"one").unwrap();
        ib.rescan();
        ib.claim("f".into());
        assert!(!dir.join("f").exists());
        let (id, c) = ib
            .claimed
            .iter()
            .map(|(i, c)| (i.clone(), c.clone()))
            .next()
            .unwrap();
        // the file changes (an open descriptor) after it was claimed: stage() sees a
        // different key
        fs::write(claim_path(&dir, &id, "f"), b"one two").unwrap();
        assert!(ib.stage(&id, "f", c.key).unwrap().is_none());
        assert!(fs::read_dir(t.path().join("spool/partial"))
            .unwrap()
            .next()
            .is_none());
    }
}
