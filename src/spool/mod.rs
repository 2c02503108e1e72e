//! The durable spool: its directory layout, admission checks (size, free space),
//! and the one landing path shared by SCP, SFTP and the inbox:
//! partial file → BLAKE3 on the fly → fsync → atomic rename into `ready/`.
//!
//! Layout (the directory an entry sits in is its state; a state change is a rename):
//! ```text
//! spool/
//!   partial/<id>/      upload in progress: `data` (+ `record.json` once complete); swept at start
//!   parked/<id>/       SFTP upload closed under a temporary name, durable, waiting for its
//!                      rename; landed (under the name in its record) at session end or start
//!   ready/<id>/        landed and durable: `data` + `record.json`
//!   archived/<id>/     the archive copy is verified and durable
//!   processed/<id>/    products are durable in `out/`
//!   quarantine/<id>/   a step gave up; `state.json` keeps every attempt's reason
//!   work/              scratch space of the pipeline (temporary names only)
//! ```
//! All blocking functions here must run off the SSH connection loop
//! (`spawn_blocking` or a dedicated thread).

pub mod commit;
pub mod durable;
pub use durable::write_atomic;

use crate::core::naming;
use crate::core::record::Record;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

pub const PARTIAL: &str = "partial";
pub const READY: &str = "ready";
pub const ARCHIVED: &str = "archived";
pub const PROCESSED: &str = "processed";
pub const QUARANTINE: &str = "quarantine";
pub const WORK: &str = "work";
pub const PARKED: &str = "parked";
/// Every state directory, in pipeline order.
pub const STATES: [&str; 4] = [READY, ARCHIVED, PROCESSED, QUARANTINE];

pub const DATA: &str = "data";
pub const RECORD: &str = "record.json";
pub const STATE: &str = "state.json";

/// Why an upload is refused before or while it is written. The text is shown to the sender.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("file too large: {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error(
        "no space: storing {size} bytes would leave less than {min_free} bytes free on the spool \
         ({free} bytes free)"
    )]
    NoSpace { size: u64, min_free: u64, free: u64 },
    /// The path cannot be stored under the archive layout (too long, too deep).
    #[error("{0}")]
    Name(String),
    /// Too many uploads in progress (on the connection or the node); try later.
    #[error("{0}")]
    Busy(String),
    #[error("spool error: {0}")]
    Io(#[from] io::Error),
}

/// What the protocol knows about an incoming file before its bytes arrive.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub user: String,
    /// Validated relative path (see `vpath`).
    pub path: String,
    pub mode: u32,
    pub mtime: Option<i64>,
    pub atime: Option<i64>,
    pub remote_addr: String,
    pub protocol: &'static str,
}

pub struct Spool {
    root: PathBuf,
    node_id: String,
    max_file_size: u64,
    min_free: u64,
    wake: Arc<Notify>,
    /// (when statvfs was last read, bytes free then minus bytes admitted since):
    /// admission reads statvfs at most every `FREE_CACHE_FOR`.
    free_cache: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    /// (archive dir, layout) every accepted path must fit; `None`: no check.
    names: Option<(PathBuf, String)>,
    /// Ids the archive stage must not take yet (see [`Spool::hold`]).
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The group-commit thread of [`Spool::commit_one`], started on first use.
    committer: std::sync::OnceLock<commit::Committer>,
    /// `spool/.lock`, flocked for the life of the `Spool`.
    _lock: File,
}

/// The lock file in the spool root.
pub const LOCK: &str = ".lock";

/// Take the exclusive lock of the spool at `root` (`flock` of `root/.lock`, which
/// then holds this process's pid), creating `root` if missing. Fails with a clear
/// message naming the other process if another daemon holds it. The lock dies with
/// its process (even by SIGKILL); the descriptor is close-on-exec, so a process
/// command never inherits it.
pub fn lock(root: &Path) -> io::Result<File> {
    fs::create_dir_all(root)?;
    let path = root.join(LOCK);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux
    if let Err(e) = f.try_lock() {
        if let fs::TryLockError::WouldBlock = e {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "spool.dir {} is in use by another ingestd (pid {})",
                    root.display(),
                    if pid.is_empty() { "unknown" } else { pid }
                ),
            ));
        }
        return Err(e.into());
    }
    f.set_len(0)?;
    f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
    Ok(f)
}

const FREE_CACHE_FOR: std::time::Duration = std::time::Duration::from_millis(200);

impl Spool {
    /// Lock the spool (see [`lock`]), create the layout under `root` durably and
    /// sweep `partial/` and `work/` (nothing there was ever acknowledged). The lock
    /// is taken first and held as long as the `Spool` lives, so a second daemon on
    /// the same spool is refused before it touches anything.
    pub fn open(
        root: &Path,
        node_id: &str,
        max_file_size: u64,
        min_free: u64,
    ) -> io::Result<Spool> {
        let lock = lock(root)?;
        let mut created = false;
        for d in [
            PARTIAL, READY, ARCHIVED, PROCESSED, QUARANTINE, WORK, PARKED,
        ] {
            match fs::create_dir(root.join(d)) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        if created {
            fsync_dir(root)?;
        }
        for d in [PARTIAL, WORK] {
            for e in fs::read_dir(root.join(d))? {
                let p = e?.path();
                // iterative: a process command's output tree can be any depth
                let _ = remove_tree(&p);
            }
        }
        land_parked_at_start(root)?;
        Ok(Spool {
            root: root.to_path_buf(),
            node_id: node_id.to_string(),
            max_file_size,
            min_free,
            wake: Arc::new(Notify::new()),
            free_cache: std::sync::Mutex::new(None),
            names: None,
            held: std::sync::Mutex::new(std::collections::HashSet::new()),
            committer: std::sync::OnceLock::new(),
            _lock: lock,
        })
    }

    /// Refuse, at upload time, every path that could not be archived under
    /// `layout` in `archive_dir` (see [`naming::check_storable`]).
    pub fn with_name_check(mut self, archive_dir: &Path, layout: &str) -> Spool {
        self.names = Some((archive_dir.to_path_buf(), layout.to_string()));
        self
    }

    /// Would a file `path` from `user`, landed now as `id`, be refused for its name?
    pub fn check_name(&self, id: &str, user: &str, path: &str) -> Result<(), Refusal> {
        let Some((dir, layout)) = &self.names else {
            return Ok(());
        };
        let probe = Record {
            id: id.to_string(),
            node: self.node_id.clone(),
            user: user.to_string(),
            path: path.to_string(),
            size: 0,
            mode: 0,
            mtime: None,
            atime: None,
            blake3: String::new(),
            remote_addr: String::new(),
            received_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            protocol: String::new(),
        };
        naming::check_storable(dir, layout, &probe).map_err(Refusal::Name)
    }

    /// Keep `ids` (committed by the inbox, whose source files are not yet released)
    /// from leaving `ready/` until [`Spool::release`].
    pub fn hold(&self, ids: impl IntoIterator<Item = String>) {
        self.held.lock().unwrap().extend(ids);
    }

    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        {
            let mut h = self.held.lock().unwrap();
            for id in ids {
                h.remove(id);
            }
        }
        self.wake.notify_one();
    }

    pub fn is_held(&self, id: &str) -> bool {
        self.held.lock().unwrap().contains(id)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `spool/<state>`.
    pub fn dir(&self, state: &str) -> PathBuf {
        self.root.join(state)
    }

    /// Notified after every commit into `ready/`; the pipeline waits on it.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    /// A new id, unique across the pool and time-ordered: `<node>-<ULID>`.
    pub fn new_id(&self) -> String {
        format!("{}-{}", self.node_id, ulid::Ulid::new())
    }

    /// Bytes available to unprivileged writers on the spool's filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// Refuse a file of `size` bytes (more to come) that is over the limit or would
    /// leave less than `min_free` on the spool filesystem.
    pub fn admit(&self, size: u64) -> Result<(), Refusal> {
        if size > self.max_file_size {
            return Err(Refusal::TooLarge {
                size,
                max: self.max_file_size,
            });
        }
        let mut cache = self.free_cache.lock().unwrap();
        let free = match *cache {
            Some((at, free)) if at.elapsed() < FREE_CACHE_FOR => free,
            _ => self.free_bytes()?,
        };
        *cache = Some((
            cache.map_or_else(std::time::Instant::now, |c| {
                if c.0.elapsed() < FREE_CACHE_FOR {
                    c.0
                } else {
                    std::time::Instant::now()
                }
            }),
            free.saturating_sub(size),
        ));
        // A file larger than the free space is refused even with min_free = 0.
        if free
            .checked_sub(size)
            .is_none_or(|left| left < self.min_free)
        {
            return Err(Refusal::NoSpace {
                size,
                free,
                min_free: self.min_free,
            });
        }
        Ok(())
    }

    /// Start a file: `partial/<id>/data`, created exclusively. Refused if its path
    /// could not be archived (see [`Spool::with_name_check`]).
    pub fn begin(&self, info: Incoming) -> Result<Partial, Refusal> {
        self.begin_with_id(self.new_id(), info)
    }

    /// [`Spool::begin`] with an id from [`Spool::new_id`] chosen beforehand.
    pub fn begin_with_id(&self, id: String, info: Incoming) -> Result<Partial, Refusal> {
        self.check_name(&id, &info.user, &info.path)?;
        let dir = self.dir(PARTIAL).join(&id);
        fs::create_dir(&dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(DATA))?;
        Ok(Partial {
            id,
            dir,
            file,
            hasher: blake3::Hasher::new(),
            hashed: 0,
            len: 0,
            unkicked: Writeback::default(),
            info,
            started: std::time::Instant::now(),
        })
    }

    /// Make every staged file durable and move it into `ready/`, then tell the sender's
    /// protocol it may report success. One group commit: all file fsyncs are issued
    /// together, then the renames, then one fsync of each directory involved.
    pub fn commit(&self, staged: Vec<Staged>) -> io::Result<Vec<Record>> {
        commit_group(&self.dir(READY), &self.dir(PARTIAL), &self.wake, staged)
            .map_err(GroupError::or_stop)
    }
}

/// Why a group commit failed.
#[derive(Debug)]
pub(crate) enum GroupError {
    /// Nothing of the group is in `ready/` (a failed rename was undone, durably):
    /// every caller is told its files were not stored.
    Failed(io::Error),
    /// Entries may be in `ready/` whose senders cannot be told either way: a
    /// directory fsync failed after the renames (it cannot be retried safely), or
    /// a failed group could not be moved back. The node must stop ([`stop_node`]).
    Fatal(String),
}

impl GroupError {
    /// The error for the callers, or the node stops.
    pub(crate) fn or_stop(self) -> io::Error {
        match self {
            GroupError::Failed(e) => e,
            GroupError::Fatal(why) => stop_node(&why),
        }
    }
}

impl From<io::Error> for GroupError {
    fn from(e: io::Error) -> Self {
        GroupError::Failed(e)
    }
}

/// Stop the process at once: a landing whose outcome the senders cannot be told
/// truthfully. Never answering is better than "not stored" for a file that is
/// then delivered; at the next start `ready/` is what it is, and its entries go
/// through the pipeline (their senders saw the connection drop, not a refusal).
pub(crate) fn stop_node(why: &str) -> ! {
    tracing::error!(
        reason = ?why,
        "FATAL: the spool cannot tell senders the truth about a landing; stopping the node \
         (a failed fsync cannot be retried safely)"
    );
    eprintln!("ingestd: FATAL: {why}; stopping");
    std::process::exit(70)
}

/// [`Spool::commit`] (also run by the group-commit thread, [`commit`]). A failed
/// rename moves back what the group had already moved (and fsyncs both
/// directories) before it answers: no file of a failed group is ever delivered.
fn commit_group(
    ready: &Path,
    partial: &Path,
    wake: &Notify,
    staged: Vec<Staged>,
) -> Result<Vec<Record>, GroupError> {
    if staged.is_empty() {
        return Ok(Vec::new());
    }
    sync_all_parallel(&staged)?;
    for (k, s) in staged.iter().enumerate() {
        if let Err(e) =
            fault("rename", k).and_then(|()| fs::rename(&s.dir, ready.join(&s.record.id)))
        {
            return Err(undo_group(ready, partial, &staged[..k], e));
        }
    }
    // (each Staged is dropped below; its partial path no longer exists)
    // One journal commit covers both directories; the second fsync is then cheap.
    // Past the renames a failed fsync cannot be undone or retried: stop.
    if let Err(e) = fsync_dir(ready).and_then(|()| fsync_dir(partial)) {
        return Err(GroupError::Fatal(format!(
            "fsync of {} after a group commit's renames failed: {e}",
            ready.display()
        )));
    }
    wake.notify_one();
    Ok(staged.iter().map(|s| s.record.clone()).collect())
}

/// Move the first files of a group back from `ready/` to `partial/` after rename
/// `moved.len()` failed with `e`, durably; `Fatal` if that cannot be done.
fn undo_group(ready: &Path, partial: &Path, moved: &[Staged], e: io::Error) -> GroupError {
    for s in moved {
        if let Err(u) = fs::rename(ready.join(&s.record.id), &s.dir) {
            return GroupError::Fatal(format!(
                "a group commit failed ({e}) and {} could not be moved back out of {}: {u}",
                s.record.id,
                ready.display()
            ));
        }
    }
    if !moved.is_empty() {
        if let Err(u) = fsync_dir(ready).and_then(|()| fsync_dir(partial)) {
            return GroupError::Fatal(format!(
                "a group commit failed ({e}) and the fsync of its undo failed: {u}"
            ));
        }
    }
    GroupError::Failed(e)
}

/// Fault injection for the tests: fail the `k`-th `op` of this thread's next
/// group commit ([`FAULTS`]). Always `Ok` outside tests.
fn fault(op: &str, k: usize) -> io::Result<()> {
    #[cfg(test)]
    if FAULTS.with(|f| f.borrow().iter().any(|(o, n)| *o == op && *n == k)) {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    let _ = (op, k);
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// (operation, index) pairs [`fault`] fails: `("rename", k)`, `("fsync", 0)`.
    pub(crate) static FAULTS: std::cell::RefCell<Vec<(&'static str, usize)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many fsyncs of one group commit are in flight at once.
const FSYNC_THREADS: usize = 32;

/// Parked uploads (SFTP temporary names closed but not yet renamed). Each moves
/// by one `rename(2)` from `partial/` to `parked/` and from `parked/` to `ready/`,
/// so it is landed at most once whatever dies when; its record is rewritten (temp
/// name, fsync, rename, fsync) before it moves, so a restart lands it under the
/// last name the sender was told about.
impl Spool {
    /// Make a completed upload durable in `parked/<id>/` (data, record, entry and
    /// both directories fsynced) before the sender hears that CLOSE succeeded.
    pub fn park(&self, staged: Staged) -> io::Result<Record> {
        sync_all_parallel(std::slice::from_ref(&staged))?;
        let parked = self.dir(PARKED);
        fs::rename(&staged.dir, parked.join(&staged.record.id))?;
        fsync_dir(&parked)?;
        fsync_dir(&self.dir(PARTIAL))?;
        Ok(staged.record.clone())
    }

    /// Rewrite a parked entry's record durably (`update` changes it).
    pub fn repark(&self, id: &str, update: impl FnOnce(&mut Record)) -> io::Result<Record> {
        let dir = self.dir(PARKED).join(id);
        let mut rec = read_record(&dir)?;
        let old = rec.clone();
        update(&mut rec);
        if rec != old {
            let json = serde_json::to_vec_pretty(&rec).map_err(io::Error::other)?;
            write_atomic(&dir.join(RECORD), &json)?;
        }
        Ok(rec)
    }

    /// Land a parked entry: record rewritten durably (`update`), then moved into
    /// `ready/` and both directories fsynced.
    pub fn land_parked(&self, id: &str, update: impl FnOnce(&mut Record)) -> io::Result<Record> {
        let rec = self.repark(id, update)?;
        let (parked, ready) = (self.dir(PARKED), self.dir(READY));
        fs::rename(parked.join(id), ready.join(id))?;
        // past the rename a failed fsync cannot be undone or retried: stop
        if let Err(e) = fsync_dir(&ready).and_then(|()| fsync_dir(&parked)) {
            stop_node(&format!(
                "fsync of {} after landing parked entry {id} failed: {e}",
                ready.display()
            ));
        }
        self.wake.notify_one();
        Ok(rec)
    }

    /// Remove a parked entry (the sender removed it, or replaced it): moved out of
    /// `parked/` durably first, so a restart cannot land it.
    pub fn discard_parked(&self, id: &str) -> io::Result<()> {
        let gone = self.dir(WORK).join(format!("{id}.discarded"));
        fs::rename(self.dir(PARKED).join(id), &gone)?;
        fsync_dir(&self.dir(PARKED))?;
        fs::remove_dir_all(&gone)
    }
}

/// At start: every parked entry lands under the name in its record (the sender
/// was told its CLOSE succeeded; the rename that would have named it never came).
fn land_parked_at_start(root: &Path) -> io::Result<()> {
    let (parked, ready) = (root.join(PARKED), root.join(READY));
    let mut moved = false;
    for e in fs::read_dir(&parked)? {
        let dir = e?.path();
        let _ = fs::remove_file(dir.join(format!(".{RECORD}.tmp")));
        let id = dir.file_name().map(|n| n.to_owned()).unwrap_or_default();
        match read_record(&dir) {
            Ok(rec) if dir.join(DATA).is_file() => {
                fs::rename(&dir, ready.join(&id))?;
                moved = true;
                tracing::info!(id = %rec.id, user = ?rec.user, path = ?rec.path, size = rec.size,
                    "landed a parked upload left by the last run under the name it had");
            }
            _ => {
                // never complete (parking renames only finished entries): not acknowledged
                tracing::warn!(entry = ?dir, "removing an incomplete parked entry");
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    if moved {
        fsync_dir(&ready)?;
        fsync_dir(&parked)?;
    }
    Ok(())
}

/// Make the data, record and entry directory of every staged file durable: every
/// file is fsynced itself (a `syncfs` of the whole file system would not report a
/// writeback error of one file that happened before it was called), with up to
/// [`FSYNC_THREADS`] fsyncs in flight at once so the journal commits them together.
fn sync_all_parallel(staged: &[Staged]) -> io::Result<()> {
    let jobs = staged.len() * 3;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let job = |i: usize| -> io::Result<()> {
        let s = &staged[i / 3];
        match i % 3 {
            0 => s.data.sync_data(),
            1 => File::open(s.dir.join(RECORD))?.sync_all(),
            _ => File::open(&s.dir)?.sync_all(),
        }
    };
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..jobs.min(FSYNC_THREADS))
            .map(|_| {
                sc.spawn(|| -> io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= jobs {
                            return Ok(());
                        }
                        job(i)?;
                    }
                })
            })
            .collect();
        let mut first = Ok(());
        for h in handles {
            let r = h
                .join()
                .map_err(|_| io::Error::other("fsync thread panicked"))
                .and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

/// Remove `path` and everything under it, like `std::fs::remove_dir_all` (which
/// recurses once per level and overflows a thread's stack on a tree a few
/// thousand levels deep, as a process command can leave), but with a loop and
/// at most two open directories: it goes down by `openat(name)` and back up by
/// `openat("..")`, checking that `..` is the directory it came from. Memory
/// grows with the depth by one name per level. A missing `path` is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use nix::dir::{Dir, Type};
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
    use nix::unistd::{unlinkat, UnlinkatFlags};
    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    let md = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if !md.is_dir() {
        return fs::remove_file(path);
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let id = |d: &Dir| -> io::Result<(u64, u64)> {
        let st = fstat(d.as_raw_fd())?;
        Ok((st.st_dev, st.st_ino))
    };
    // Unlink every entry of `d` that is not a directory, from its start, until
    // the first subdirectory: its name (`None`: `d` is now empty).
    let files_until_subdir = |d: &mut Dir| -> io::Result<Option<CString>> {
        let fd = d.as_raw_fd();
        for e in d.iter() {
            let e = e?;
            let name = e.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let is_dir = match e.file_type() {
                Some(t) => t == Type::Directory,
                None => {
                    let st = fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
                    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
                }
            };
            if is_dir {
                return Ok(Some(name.to_owned()));
            }
            unlinkat(Some(fd), name, UnlinkatFlags::NoRemoveDir)?;
        }
        Ok(None)
    };
    let mut cur = Dir::open(path, flags, Mode::empty())?;
    // the directories entered below `path`: their name and their parent's identity
    let mut stack: Vec<(CString, (u64, u64))> = Vec::new();
    loop {
        match files_until_subdir(&mut cur)? {
            Some(name) => {
                let next =
                    Dir::openat(Some(cur.as_raw_fd()), name.as_c_str(), flags, Mode::empty())?;
                stack.push((name, id(&cur)?));
                cur = next;
            }
            None => {
                let Some((name, parent_id)) = stack.pop() else {
                    break;
                };
                let parent = Dir::openat(Some(cur.as_raw_fd()), "..", flags, Mode::empty())?;
                if id(&parent)? != parent_id {
                    return Err(io::Error::other(
                        "a directory was moved while its tree was being removed",
                    ));
                }
                drop(cur);
                unlinkat(
                    Some(parent.as_raw_fd()),
                    name.as_c_str(),
                    UnlinkatFlags::RemoveDir,
                )?;
                cur = parent;
            }
        }
    }
    drop(cur);
    fs::remove_dir(path)
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    DIR_FSYNCS.with(|v| v.borrow_mut().push(dir.to_path_buf()));
    #[cfg(test)]
    if dir.ends_with(READY) {
        fault("fsync", 0)?;
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
thread_local! {
    /// Every directory [`fsync_dir`] was called on by this thread (tests only).
    pub(crate) static DIR_FSYNCS: std::cell::RefCell<Vec<PathBuf>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// BLAKE3 (lowercase hex) and length of everything `r` yields.
pub fn hash_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().to_hex().to_string(), n))
}

/// Read an entry's record.
pub fn read_record(entry_dir: &Path) -> io::Result<Record> {
    // Never through a symlink planted in the spool.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(entry_dir.join(RECORD))?;
    let mut t = Vec::new();
    io::Read::read_to_end(&mut f, &mut t)?;
    serde_json::from_slice(&t).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A file being written into `partial/<id>/data`.
pub struct Partial {
    id: String,
    dir: PathBuf,
    file: File,
    hasher: blake3::Hasher,
    /// Bytes fed to the hasher (the contiguous prefix written in order).
    hashed: u64,
    /// Current length of the file.
    len: u64,
    /// Bytes written since writeback was last started, and the range they span.
    unkicked: Writeback,
    pub info: Incoming,
    started: std::time::Instant,
}

/// Early writeback: once [`WRITEBACK_CHUNK`] bytes have been written, the kernel is
/// asked to start writing that range to disk (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE` only: it neither waits nor consumes a writeback error,
/// which the commit's `fdatasync` still reports). The upload's data then reaches the
/// disk while the rest is still arriving, and the fsync before the acknowledgement
/// waits only for the tail instead of the whole file. Durability is unchanged: the
/// commit fsyncs as before; this only moves disk work earlier.
#[derive(Default)]
struct Writeback {
    bytes: u64,
    lo: u64,
    hi: u64,
    /// Set when the file system refused the call once; then never tried again.
    off: bool,
    /// Writebacks started (tests).
    kicks: u32,
}

/// How many written bytes start one early writeback (see [`Writeback`]).
pub const WRITEBACK_CHUNK: u64 = 8 << 20;

impl Writeback {
    fn note(&mut self, file: &File, off: u64, n: u64) {
        if self.off || n == 0 {
            return;
        }
        if self.bytes == 0 {
            (self.lo, self.hi) = (off, off + n);
        } else {
            self.lo = self.lo.min(off);
            self.hi = self.hi.max(off + n);
        }
        self.bytes += n;
        if self.bytes < WRITEBACK_CHUNK {
            return;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(file);
        // SAFETY: plain syscall on an open descriptor; no memory is passed.
        let r = unsafe {
            libc::sync_file_range(
                fd,
                self.lo as libc::off64_t,
                (self.hi - self.lo) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r != 0 {
            // Only a hint: the commit's fdatasync is what makes the data durable
            // and reports any error.
            self.off = true;
        } else {
            self.kicks += 1;
        }
        self.bytes = 0;
    }
}

impl Partial {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append (sequential streams: SCP, inbox).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let off = self.len;
        self.write_at(off, buf)
    }

    /// Write at any offset (SFTP). In-order writes are hashed on the fly; anything
    /// else is hashed by one read-back pass at completion.
    pub fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, off)?;
        self.unkicked.note(&self.file, off, buf.len() as u64);
        if off == self.hashed && self.hashed == self.len {
            self.hasher.update(buf);
            self.hashed += buf.len() as u64;
        } else if off < self.hashed {
            // bytes already hashed were overwritten: recompute at the end
            self.hashed = u64::MAX;
        }
        self.len = self.len.max(off + buf.len() as u64);
        Ok(())
    }

    /// Set the length (SFTP FSETSTAT size, open with TRUNC).
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        if len < self.hashed || self.hashed != self.len {
            // the hash no longer describes a prefix in order: recompute at the end
            self.hashed = u64::MAX;
        }
        self.len = len;
        Ok(())
    }

    /// Finish writing: compute the BLAKE3 (reading back only if writes were out of
    /// order), write `record.json` beside the data. Not yet durable: pass the result
    /// to [`Spool::commit`].
    pub fn complete(mut self) -> io::Result<Staged> {
        let dir = std::mem::take(&mut self.dir);
        let staged = self.complete_in(&dir);
        if staged.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        staged
    }

    fn complete_in(&mut self, dir: &Path) -> io::Result<Staged> {
        let blake3 = if self.hashed == self.len {
            self.hasher.finalize().to_hex().to_string()
        } else {
            self.file.seek(SeekFrom::Start(0))?;
            hash_reader(&self.file)?.0
        };
        if let (Some(m), a) = (self.info.mtime, self.info.atime) {
            let ts = |s: i64| nix::sys::time::TimeSpec::new(s, 0);
            let _ = nix::sys::stat::futimens(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                &ts(a.unwrap_or(m)),
                &ts(m),
            );
        }
        let record = Record {
            id: self.id.clone(),
            node: self
                .id
                .rsplit_once('-')
                .map(|x| x.0)
                .unwrap_or("")
                .to_string(),
            user: self.info.user.clone(),
            path: self.info.path.clone(),
            size: self.len,
            mode: self.info.mode & 0o777,
            mtime: self.info.mtime,
            atime: self.info.atime,
            blake3,
            remote_addr: self.info.remote_addr.clone(),
            received_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            protocol: self.info.protocol.to_string(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(RECORD))?;
        f.write_all(&json)?;
        drop(f);
        Ok(Staged {
            dir: dir.to_path_buf(),
            data: self.file.try_clone()?,
            record,
            started: self.started,
        })
    }

    /// Drop an unfinished upload: nothing of it remains (same as dropping it).
    pub fn abort(self) {}
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A complete file whose record is written but which is not yet durable or visible.
pub struct Staged {
    dir: PathBuf,
    data: File,
    pub record: Record,
    pub started: std::time::Instant,
}

/// A staged file that is dropped without being committed is removed (after a commit
/// its partial directory no longer exists, so nothing is removed).
impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming() -> Incoming {
        Incoming {
            user: "alice".into(),
            path: "a/b.txt".into(),
            mode: 0o100644,
            mtime: Some(1_600_000_000),
            atime: None,
            remote_addr: "127.0.0.1:1".into(),
            protocol: "scp",
        }
    }

    /// Every [`WRITEBACK_CHUNK`] written bytes start one writeback, in order or not,
    /// and the bytes and their BLAKE3 are unaffected.
    #[test]
    fn writeback_starts_every_chunk_and_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut p = s.begin(incoming()).unwrap();
        for c in data.chunks(256 << 10) {
            p.write(c).unwrap();
        }
        assert_eq!(p.unkicked.kicks, 2);
        let mut q = s.begin(incoming()).unwrap();
        let chunks: Vec<_> = data.chunks(1 << 20).enumerate().collect();
        for (i, c) in chunks.iter().rev() {
            q.write_at((*i as u64) << 20, c).unwrap();
        }
        assert_eq!(q.unkicked.kicks, 2);
        let recs = s
            .commit(vec![p.complete().unwrap(), q.complete().unwrap()])
            .unwrap();
        let want = blake3::hash(&data).to_hex().to_string();
        for r in &recs {
            assert_eq!(r.blake3, want);
            let got = fs::read(s.dir(READY).join(&r.id).join(DATA)).unwrap();
            assert!(got == data, "bytes differ");
        }
    }

    #[test]
    fn land_in_order_and_out_of_order() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        let mut p = s.begin(incoming()).unwrap();
        p.write(b"hello ").unwrap();
        p.write(b"world").unwrap();
        let mut q = s.begin(incoming()).unwrap();
        q.write_at(6, b"world").unwrap();
        q.write_at(0, b"hello ").unwrap();
        let recs = s
            .commit(vec![p.complete().unwrap(), q.complete().unwrap()])
            .unwrap();
        let want = blake3::hash(b"hello world").to_hex().to_string();
        for r in &recs {
            assert_eq!(r.blake3, want);
            assert_eq!(r.mode, 0o644);
            let d = s.dir(READY).join(&r.id);
            assert_eq!(fs::read(d.join(DATA)).unwrap(), b"hello world");
            assert_eq!(read_record(&d).unwrap(), *r);
        }
        assert_ne!(recs[0].id, recs[1].id);
        assert!(fs::read_dir(s.dir(PARTIAL)).unwrap().next().is_none());
    }

    #[test]
    fn abort_and_sweep_leave_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        let mut p = s.begin(incoming()).unwrap();
        p.write(b"x").unwrap();
        p.abort();
        let mut q = s.begin(incoming()).unwrap();
        q.write(b"y").unwrap();
        std::mem::forget(q);
        drop(s);
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        assert!(fs::read_dir(s.dir(PARTIAL)).unwrap().next().is_none());
        assert!(fs::read_dir(s.dir(READY)).unwrap().next().is_none());
    }

    /// A file whose data cannot be made durable must fail the commit, however large
    /// the group (a `syncfs` of the whole file system does not report an earlier
    /// writeback error of one file: it must be fsynced itself).
    #[test]
    fn a_data_fsync_error_fails_the_commit_of_any_group() {
        for n in [1usize, 3, 20, 300] {
            let t = tempfile::tempdir().unwrap();
            let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
            let mut staged = Vec::new();
            for _ in 0..n {
                let mut p = s.begin(incoming()).unwrap();
                p.write(b"data").unwrap();
                staged.push(p.complete().unwrap());
            }
            // fsync(2) of a pipe fails (EINVAL): stands in for a lost writeback
            let (r, w) = nix::unistd::pipe().unwrap();
            drop(w);
            let r = File::from(r);
            let last = staged.len() - 1;
            staged[last].data = r;
            let res = s.commit(staged);
            assert!(res.is_err(), "group of {n}: commit reported success");
            assert!(
                fs::read_dir(s.dir(READY)).unwrap().next().is_none(),
                "group of {n}: something became visible"
            );
        }
    }

    /// Quick timing of large group commits (per-file fsyncs): `cargo test --release
    /// --lib group_commit_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn group_commit_timing() {
        let t = tempfile::tempdir_in(".").unwrap();
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        for n in [16usize, 64, 256] {
            let mut times = Vec::new();
            for _ in 0..5 {
                let mut staged = Vec::new();
                for _ in 0..n {
                    let mut p = s.begin(incoming()).unwrap();
                    p.write(&[7u8; 4096]).unwrap();
                    staged.push(p.complete().unwrap());
                }
                let t0 = std::time::Instant::now();
                s.commit(staged).unwrap();
                times.push(t0.elapsed());
            }
            times.sort();
            eprintln!("group of {n}: median {:?} ({:?})", times[2], times);
        }
    }

    #[test]
    fn parked_entries_land_once_under_their_last_name() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        let park = |name: &str| {
            let mut p = s.begin(incoming()).unwrap();
            p.write(name.as_bytes()).unwrap();
            p.info.path = format!("{name}.filepart");
            s.park(p.complete().unwrap()).unwrap()
        };
        let (a, b, c, d) = (park("a"), park("b"), park("c"), park("d"));
        assert!(fs::read_dir(s.dir(PARTIAL)).unwrap().next().is_none());
        assert_eq!(fs::read_dir(s.dir(PARKED)).unwrap().count(), 4);
        // a: renamed (landed) now
        let r = s.land_parked(&a.id, |r| r.path = "a.csv".into()).unwrap();
        assert_eq!(r.path, "a.csv");
        assert_eq!(
            read_record(&s.dir(READY).join(&a.id)).unwrap().path,
            "a.csv"
        );
        // b: renamed to another temporary name, then the node dies
        s.repark(&b.id, |r| r.path = "dir/b.part".into()).unwrap();
        // c: removed by the sender
        s.discard_parked(&c.id).unwrap();
        // d: the record rewritten, the crash came before the move into ready/
        s.repark(&d.id, |r| r.path = "d.csv".into()).unwrap();
        fs::write(s.dir(PARKED).join(&d.id).join(".record.json.tmp"), b"junk").unwrap();
        // an entry without a record was never parked completely
        fs::create_dir(s.dir(PARKED).join("n1-broken")).unwrap();
        drop(s);
        let s = Spool::open(t.path(), "n1", 1 << 30, 0).unwrap();
        assert!(fs::read_dir(s.dir(PARKED)).unwrap().next().is_none());
        let mut landed: Vec<(String, String)> = fs::read_dir(s.dir(READY))
            .unwrap()
            .map(|e| {
                let d = e.unwrap().path();
                let r = read_record(&d).unwrap();
                assert_eq!(
                    fs::read(d.join(DATA)).unwrap(),
                    &r.file_name().as_bytes()[..1]
                );
                assert!(!d.join(".record.json.tmp").exists());
                (r.id, r.path)
            })
            .collect();
        landed.sort();
        let mut want = vec![
            (a.id, "a.csv".to_string()),
            (b.id, "dir/b.part".to_string()),
            (d.id, "d.csv".to_string()),
        ];
        want.sort();
        assert_eq!(landed, want);
    }

    #[test]
    fn admission() {
        let t = tempfile::tempdir().unwrap();
        let s = Spool::open(t.path(), "n1", 100, 0).unwrap();
        assert!(matches!(s.admit(101), Err(Refusal::TooLarge { .. })));
        assert!(s.admit(100).is_ok());
        drop(s);
        let s = Spool::open(t.path(), "n1", u64::MAX, u64::MAX / 2).unwrap();
        assert!(matches!(s.admit(1), Err(Refusal::NoSpace { .. })));
        drop(s);
        // min_free = 0: a file larger than the free space is still refused up
        // front (the subtraction must not saturate to "0 left, >= 0")
        let s = Spool::open(t.path(), "n1", u64::MAX, 0).unwrap();
        let free = s.free_bytes().unwrap();
        assert!(s.admit(free / 2).is_ok());
        match s.admit(free + (1 << 40)) {
            Err(r @ Refusal::NoSpace { .. }) => {
                assert!(r.to_string().starts_with("no space"), "{r}")
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
    }
}
