//! File-system helpers shared by the steps: durable verified copies (sparse-aware,
//! in the kernel where it can), delivery by hard link, directory
//! creation that survives a crash, and the classification of errors into
//! "the target is unavailable" (an outage: retried, not counted) and
//! "this entry failed" (counted towards quarantine). Trees a process command made
//! are walked and removed without recursion ([`remove_tree`]), however deep.

use crate::spool::{fsync_dir, hash_reader};
use nix::unistd::Whence;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a step did not complete.
#[derive(Debug)]
pub enum StepError {
    /// The entry is no longer in the state directory this step works on
    /// (a stale directory listing); nothing to do.
    Gone,
    /// The step's target (archive or forward directory, or the spool itself) is
    /// unavailable: missing, read-only, full, I/O errors. Not the entry's fault:
    /// the stage pauses and retries; the entry's attempt count is not touched.
    Outage(String),
    /// This attempt failed; counted towards `retry.max_attempts`.
    Failed(Failure),
    /// Stopped by shutdown; it will run again after restart (not counted).
    Interrupted,
}

/// A counted failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub exit_code: Option<i32>,
    pub stderr_tail: Option<String>,
}

impl StepError {
    pub fn failed(reason: impl Into<String>) -> StepError {
        StepError::Failed(Failure {
            reason: reason.into(),
            exit_code: None,
            stderr_tail: None,
        })
    }
}

/// Errno values that say "the storage is unavailable", not "this file is bad".
fn is_outage_errno(code: i32) -> bool {
    [
        libc::ENOSPC,
        libc::EDQUOT,
        libc::EROFS,
        libc::EIO,
        libc::ESTALE,
        libc::ENODEV,
        libc::ENXIO,
        libc::ETIMEDOUT,
        libc::EHOSTDOWN,
        libc::EHOSTUNREACH,
        libc::ENOTCONN,
        libc::EACCES,
        libc::EPERM,
        libc::ENOMEDIUM,
        libc::ENOLINK,
        libc::ESHUTDOWN,
    ]
    .contains(&code)
}

/// Classify an error that happened while writing under the target `root`.
/// A vanished (or never-mounted) root is an outage; so are the errno values of
/// [`is_outage_errno`] – except that "permission denied" counts as an outage only
/// if the root itself refuses a new file (else one odd name must not stall the
/// whole stage). Anything else is this entry's failure.
pub fn target_error(what: &str, root: &Path, e: io::Error) -> StepError {
    let msg = format!("{what}: {e}");
    match e.raw_os_error() {
        Some(c) if c == libc::EACCES || c == libc::EPERM => {
            if probe_root(root).is_ok() {
                StepError::failed(msg)
            } else {
                StepError::Outage(msg)
            }
        }
        Some(c) if is_outage_errno(c) => StepError::Outage(msg),
        Some(c) if (c == libc::ENOENT || c == libc::ENOTDIR) && !root.is_dir() => {
            StepError::Outage(msg)
        }
        _ => StepError::failed(msg),
    }
}

/// Classify an error on the spool side (reading the entry, writing scratch files).
/// A missing entry directory means the entry moved on (`Gone`).
pub fn spool_error(what: &str, entry: &Path, e: io::Error) -> StepError {
    if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(entry).is_err() {
        return StepError::Gone;
    }
    match e.raw_os_error() {
        Some(c) if c == libc::ENOSPC || c == libc::EDQUOT || c == libc::EROFS => {
            StepError::Outage(format!("spool: {what}: {e}"))
        }
        _ => StepError::failed(format!("{what}: {e}")),
    }
}

/// Can a new file be created (and removed) directly in `root`?
pub use crate::spool::durable::probe as probe_root;

/// Check that a target root is a usable directory; an outage otherwise.
/// Roots are never created here (only at pipeline start): a missing mount must not
/// be papered over by writing into the empty mount point's parent file system.
pub fn check_root(what: &str, root: &Path) -> Result<(), StepError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StepError::Outage(format!(
            "{what} {} is not a directory",
            root.display()
        ))),
        Err(e) => Err(StepError::Outage(format!(
            "{what} {} is unavailable: {e}",
            root.display()
        ))),
    }
}

pub use crate::spool::durable::create_dirs_durable;

/// BLAKE3 of a file, lowercase hex, and its length.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let f = File::open(path)?;
    hash_reader(f)
}

/// Which side of a copy an error came from.
#[derive(Debug)]
pub enum CopyError {
    Source(io::Error),
    Target(io::Error),
    /// The copy does not match the expected BLAKE3/size.
    Mismatch(String),
}

/// Copy `src` to `tmp` (created or truncated; [`copy_sparse`]: kernel copy, holes
/// kept), fsync it, read it back once and compare with `expect` (BLAKE3 hex, size:
/// the hash recorded at landing; the source is never hashed again) if given,
/// optionally set its mtime; then rename it to `dst`. The caller fsyncs `dst`'s
/// directory (one fsync can cover several renames). On error `tmp` is removed.
pub fn copy_verified(
    src: &Path,
    tmp: &Path,
    dst: &Path,
    expect: Option<(&str, u64)>,
    mtime: Option<i64>,
    mode: u32,
) -> Result<(), CopyError> {
    let r = copy_verified_inner(src, tmp, dst, expect, mtime, mode);
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r
}

fn copy_verified_inner(
    src: &Path,
    tmp: &Path,
    dst: &Path,
    expect: Option<(&str, u64)>,
    mtime: Option<i64>,
    mode: u32,
) -> Result<(), CopyError> {
    // Nothing in the spool is ever read through a symlink (one planted there
    // would otherwise be copied out), and only regular files are copied.
    let input = open_nofollow(src).map_err(CopyError::Source)?;
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(CopyError::Target)?;
    // A file left by an earlier attempt keeps its mode: set it.
    out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(CopyError::Target)?;
    copy_sparse(&input, &out).map_err(|e| {
        // copy_file_range reports errors of either side; ask the source whether it is fine
        match input.metadata() {
            Ok(_) => CopyError::Target(e),
            Err(se) => CopyError::Source(se),
        }
    })?;
    if let Some(m) = mtime {
        let ts = nix::sys::time::TimeSpec::new(m, 0);
        let _ = nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(&out), &ts, &ts);
    }
    out.sync_all().map_err(CopyError::Target)?;
    if let Some((hash, size)) = expect {
        use std::io::Seek;
        out.seek(io::SeekFrom::Start(0))
            .map_err(CopyError::Target)?;
        let (got, n) = hash_reader(&mut out).map_err(CopyError::Target)?;
        if n != size || got != hash {
            return Err(CopyError::Mismatch(format!(
                "copy verification failed: {} has {n} bytes, BLAKE3 {got}; expected {size} bytes, BLAKE3 {hash}",
                tmp.display()
            )));
        }
    }
    drop(out);
    fs::rename(tmp, dst).map_err(CopyError::Target)
}

/// Copy all of `input` into `out` (empty, at offset 0) in the kernel, keeping holes:
/// the data segments (`SEEK_DATA`/`SEEK_HOLE`) are copied with `copy_file_range`
/// (which reflinks on XFS/btrfs and copies page cache to page cache elsewhere), the
/// holes are skipped, and the length is set last (a trailing hole). Where the kernel
/// cannot copy between the two files (`EXDEV` across some file systems, `ENOSYS`,
/// `EOPNOTSUPP`, `EINVAL`) the segment is copied with `pread`/`pwrite`; where the
/// file system cannot report holes the whole file is one data segment.
pub fn copy_sparse(input: &File, out: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = input.metadata()?.len();
    let fi = input.as_raw_fd();
    let mut off = 0u64;
    let mut kernel = true;
    while off < len {
        let data = match seek(fi, off, Whence::SeekData) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break, // only a hole is left
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && off == 0 => 0,
            Err(e) => return Err(e),
        };
        let end = match seek(fi, data, Whence::SeekHole) {
            Ok(h) => h.min(len),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => len,
            Err(e) => return Err(e),
        };
        let mut pos = data;
        while pos < end {
            let want = (end - pos).min(1 << 30) as usize;
            let n = if kernel {
                match copy_range(input, out, pos, want) {
                    Ok(n) => n,
                    Err(e)
                        if [libc::EXDEV, libc::ENOSYS, libc::EOPNOTSUPP, libc::EINVAL]
                            .contains(&e.raw_os_error().unwrap_or(0)) =>
                    {
                        kernel = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                copy_range_user(input, out, pos, want)?
            };
            if n == 0 {
                // the source shrank under us: a spool file never does
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended before its length",
                ));
            }
            pos += n as u64;
        }
        off = end;
    }
    out.set_len(len)
}

fn seek(fd: std::os::fd::RawFd, off: u64, whence: Whence) -> io::Result<u64> {
    Ok(nix::unistd::lseek(fd, off as libc::off_t, whence)? as u64)
}

/// One `copy_file_range(2)` call at the same offset on both sides (the file offsets
/// are not used or moved).
fn copy_range(input: &File, out: &File, pos: u64, len: usize) -> io::Result<usize> {
    let (mut oi, mut oo) = (pos as i64, pos as i64);
    loop {
        match nix::fcntl::copy_file_range(input, Some(&mut oi), out, Some(&mut oo), len) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn copy_range_user(input: &File, out: &File, pos: u64, len: usize) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len.min(1 << 20)];
    let n = loop {
        match input.read_at(&mut buf, pos) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    out.write_all_at(&buf[..n], pos)?;
    Ok(n)
}

/// How [`link_verified`] ended.
#[derive(Debug, PartialEq)]
pub enum Linked {
    /// `dst` is a hard link to `src` (made now, or by an earlier attempt).
    Done,
    /// The file system cannot link here (`EXDEV`, `EPERM`, `EOPNOTSUPP`, `EMLINK`,
    /// ...) or `src` has other links: copy instead.
    Unsupported,
}

/// Deliver `src` as `dst` by a hard link instead of a copy (same file system, no
/// bytes moved), with the durability of [`copy_verified`]: link to `tmp`, check it
/// is `src`'s inode with `expect_size` bytes, set its mode and mtime, fsync it,
/// rename to `dst`; the caller fsyncs `dst`'s directory. The bytes are not hashed
/// again: none were copied, and they are the bytes the archive step verified.
///
/// Idempotent: a `dst` that already is `src`'s inode (an attempt that crashed
/// after its rename) is kept as it is (`rename(2)` between two links of one
/// inode would do nothing and leave `tmp` behind). Only a spool file with a
/// single link is linked, so the delivered inode is owned by the spool alone
/// until the entry is removed (the delivered name then keeps it). On error
/// `tmp` is removed.
pub fn link_verified(
    src: &Path,
    tmp: &Path,
    dst: &Path,
    expect_size: u64,
    mtime: Option<i64>,
    mode: u32,
) -> Result<Linked, CopyError> {
    use std::os::unix::fs::MetadataExt;
    // a link left by an attempt that crashed before its rename counts in nlink
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CopyError::Target(e)),
    }
    let sm = fs::symlink_metadata(src).map_err(CopyError::Source)?;
    if !sm.is_file() {
        return Err(CopyError::Source(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", src.display()),
        )));
    }
    if let Ok(dm) = fs::symlink_metadata(dst) {
        if dm.dev() == sm.dev() && dm.ino() == sm.ino() {
            return Ok(Linked::Done);
        }
    }
    if sm.nlink() != 1 {
        return Ok(Linked::Unsupported);
    }
    if let Err(e) = fs::hard_link(src, tmp) {
        return match e.raw_os_error() {
            Some(c)
                if [
                    libc::EXDEV,
                    libc::EPERM,
                    libc::EOPNOTSUPP,
                    libc::EMLINK,
                    libc::ENOSYS,
                ]
                .contains(&c) =>
            {
                Ok(Linked::Unsupported)
            }
            _ if fs::symlink_metadata(src).is_err() => Err(CopyError::Source(e)),
            _ => Err(CopyError::Target(e)),
        };
    }
    let r = (|| {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)
            .map_err(CopyError::Target)?;
        let m = f.metadata().map_err(CopyError::Target)?;
        if m.dev() != sm.dev() || m.ino() != sm.ino() {
            return Err(CopyError::Mismatch(format!(
                "{} is not the linked file",
                tmp.display()
            )));
        }
        if m.len() != expect_size {
            return Err(CopyError::Mismatch(format!(
                "link verification failed: {} has {} bytes; expected {expect_size}",
                src.display(),
                m.len()
            )));
        }
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(CopyError::Target)?;
        if let Some(t) = mtime {
            let ts = nix::sys::time::TimeSpec::new(t, 0);
            let _ = nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(&f), &ts, &ts);
        }
        f.sync_all().map_err(CopyError::Target)?;
        drop(f);
        fs::rename(tmp, dst).map_err(CopyError::Target)
    })();
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r.map(|()| Linked::Done)
}

/// Open a spool file for reading without following a symlink; refuse anything
/// but a regular file.
pub fn open_nofollow(p: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", p.display()),
        ));
    }
    Ok(f)
}

/// Remove a directory tree durably enough for a crash never to leave it half-removed
/// under `state_dir`: rename it to `scratch` (in the spool's `work/`, which is swept
/// at start-up), fsync `state_dir`, then remove it.
pub fn remove_entry(entry: &Path, state_dir: &Path, scratch: &Path) -> io::Result<()> {
    fs::rename(entry, scratch)?;
    fsync_dir(state_dir)?;
    remove_tree(scratch)
}

pub use crate::spool::remove_tree;

/// A short random hex nonce for scratch names.
pub fn nonce() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` directories `d/d/d/...` under `root`, built with relative
    /// `mkdirat` (the full path is far beyond PATH_MAX); a file at a few levels.
    fn deep_chain(root: &Path, n: usize) {
        use std::os::fd::AsRawFd;
        fs::create_dir(root).unwrap();
        let mut cur = File::open(root).unwrap();
        let d = std::ffi::CString::new("d").unwrap();
        let f = std::ffi::CString::new("f").unwrap();
        for i in 0..n {
            // SAFETY: valid descriptors and C strings; results checked.
            unsafe {
                assert_eq!(libc::mkdirat(cur.as_raw_fd(), d.as_ptr(), 0o755), 0);
                if i % 1000 == 0 {
                    let fd = libc::openat(
                        cur.as_raw_fd(),
                        f.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    assert!(fd >= 0);
                    libc::close(fd);
                }
                let fd = libc::openat(
                    cur.as_raw_fd(),
                    d.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                assert!(fd >= 0);
                cur = std::os::fd::FromRawFd::from_raw_fd(fd);
            }
        }
    }

    /// 30,000 levels: std's recursive `remove_dir_all` overflows a 2 MiB stack
    /// (the size of tokio's blocking threads); `remove_tree` removes it on 64 KiB.
    #[test]
    fn remove_tree_is_iterative() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("deep");
        deep_chain(&root, 30_000);
        // siblings and files at the top as well
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/x"), b"x").unwrap();
        fs::write(root.join("top"), b"t").unwrap();
        let r = root.clone();
        let t0 = std::time::Instant::now();
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || remove_tree(&r))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        eprintln!("removed 30,000 levels in {:?}", t0.elapsed());
        assert!(!root.exists());
        remove_tree(&root).unwrap(); // missing: fine
        fs::write(&root, b"file").unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn copy_verify_and_mismatch() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::write(&src, b"hello").unwrap();
        let h = blake3::hash(b"hello").to_hex().to_string();
        let tmp = t.path().join(".tmp");
        let dst = t.path().join("dst");
        copy_verified(&src, &tmp, &dst, Some((&h, 5)), Some(1_600_000_000), 0o600).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"hello");
        assert!(!tmp.exists());
        let m = fs::metadata(&dst).unwrap();
        assert_eq!(
            m.modified().unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000)
        );
        let r = copy_verified(&src, &tmp, &t.path().join("d2"), Some((&h, 6)), None, 0o600);
        assert!(matches!(r, Err(CopyError::Mismatch(_))), "{r:?}");
        assert!(!tmp.exists() && !t.path().join("d2").exists());
        let r = copy_verified(&t.path().join("none"), &tmp, &dst, None, None, 0o600);
        assert!(matches!(r, Err(CopyError::Source(_))));
        assert_eq!(hash_file(&dst).unwrap(), (h, 5));
    }

    /// A directory left by a crashed attempt (created, its parent never fsynced)
    /// must still get its parent fsynced: the crash may have lost its name.
    #[test]
    fn existing_dirs_still_get_their_parent_fsynced() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("a")).unwrap();
        crate::spool::DIR_FSYNCS.with(|v| v.borrow_mut().clear());
        create_dirs_durable(&root, &root.join("a/b")).unwrap();
        let synced = crate::spool::DIR_FSYNCS.with(|v| v.borrow().clone());
        assert!(
            synced.contains(&root),
            "parent of the surviving a/ not fsynced: {synced:?}"
        );
        assert!(synced.contains(&root.join("a")), "{synced:?}");
        // and again, everything existing: still every parent
        crate::spool::DIR_FSYNCS.with(|v| v.borrow_mut().clear());
        create_dirs_durable(&root, &root.join("a/b")).unwrap();
        let synced = crate::spool::DIR_FSYNCS.with(|v| v.borrow().clone());
        assert!(
            synced.contains(&root) && synced.contains(&root.join("a")),
            "{synced:?}"
        );
    }

    #[test]
    fn durable_dirs_and_classification() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        create_dirs_durable(&root, &root.join("a/b/c")).unwrap();
        create_dirs_durable(&root, &root.join("a/b/c")).unwrap();
        assert!(root.join("a/b/c").is_dir());
        assert!(check_root("archive", &root).is_ok());

        // a root whose parent is a regular file: an outage
        let blocker = t.path().join("blocker");
        fs::write(&blocker, b"").unwrap();
        let bad = blocker.join("archive");
        assert!(matches!(
            check_root("archive", &bad),
            Err(StepError::Outage(_))
        ));
        let e = fs::create_dir(bad.join("x")).unwrap_err();
        assert!(matches!(
            target_error("mkdir", &bad, e),
            StepError::Outage(_)
        ));
        // ENOTDIR inside a healthy root is the entry's problem
        fs::write(root.join("f"), b"").unwrap();
        let e = fs::create_dir(root.join("f/x")).unwrap_err();
        assert!(matches!(
            target_error("mkdir", &root, e),
            StepError::Failed(_)
        ));
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(target_error("w", &root, e), StepError::Outage(_)));
        // permission denied on one name while the root is writable: the entry's problem
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(target_error("w", &root, e), StepError::Failed(_)));
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(target_error("w", &bad, e), StepError::Outage(_)));
        assert!(fs::read_dir(&root).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".ingestd-probe")));
        let e = io::Error::from_raw_os_error(libc::ENAMETOOLONG);
        assert!(matches!(target_error("w", &root, e), StepError::Failed(_)));
        // spool side: entry vanished → Gone
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(matches!(
            spool_error("read", &root.join("gone"), e),
            StepError::Gone
        ));
    }

    /// Measurement, not a test (BENCHMARKS.md, "archive copy"): CPU of this thread
    /// for (b) `copy_sparse` + one re-read hashed against the known BLAKE3, against
    /// (a) one read pass hashed and written from user space (with and without a
    /// re-read). Run: `cargo test --release --lib -- --ignored --nocapture
    /// measure_archive_copy` (`MEASURE_DIR` picks the file system, default /tmp).
    #[test]
    #[ignore]
    fn measure_archive_copy() {
        use std::io::{Read, Seek, Write};
        fn cpu() -> f64 {
            use nix::sys::resource::{getrusage, UsageWho};
            use nix::sys::time::TimeValLike;
            let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
            (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6
        }
        let base = std::env::var("MEASURE_DIR").unwrap_or_else(|_| "/tmp".into());
        let t = tempfile::tempdir_in(base).unwrap();
        let src = t.path().join("src");
        let mb = 256usize;
        let mut f = File::create(&src).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 3) as u8).collect();
        for i in 0..mb {
            let mut c = chunk.clone();
            c[0] = i as u8;
            f.write_all(&c).unwrap();
        }
        f.sync_all().unwrap();
        let (hash, size) = hash_file(&src).unwrap();
        let dst = t.path().join("dst");
        let mode_b = || {
            let input = open_nofollow(&src).unwrap();
            let mut out = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&dst)
                .unwrap();
            copy_sparse(&input, &out).unwrap();
            out.sync_all().unwrap();
            out.seek(io::SeekFrom::Start(0)).unwrap();
            assert_eq!(hash_reader(&mut out).unwrap(), (hash.clone(), size));
        };
        let mode_a = |verify: bool| {
            let mut input = open_nofollow(&src).unwrap();
            let mut out = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&dst)
                .unwrap();
            let mut h = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let k = input.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                out.write_all(&buf[..k]).unwrap();
            }
            assert_eq!(h.finalize().to_hex().to_string(), hash);
            out.sync_all().unwrap();
            if verify {
                out.seek(io::SeekFrom::Start(0)).unwrap();
                assert_eq!(hash_reader(&mut out).unwrap(), (hash.clone(), size));
            }
        };
        let mut res: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
            ("b: copy_file_range + re-read", vec![], vec![]),
            ("a: read+hash+write", vec![], vec![]),
            ("a: read+hash+write + re-read", vec![], vec![]),
        ];
        for _ in 0..5 {
            for (i, r) in res.iter_mut().enumerate() {
                let _ = fs::remove_file(&dst);
                let (c0, w0) = (cpu(), std::time::Instant::now());
                match i {
                    0 => mode_b(),
                    1 => mode_a(false),
                    _ => mode_a(true),
                }
                r.1.push(cpu() - c0);
                r.2.push(w0.elapsed().as_secs_f64());
            }
        }
        for (name, mut c, mut w) in res {
            c.sort_by(|a, b| a.partial_cmp(b).unwrap());
            w.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{name:32} CPU s/GiB median {:.3} (min {:.3} max {:.3}); wall s/GiB median {:.3}",
                c[2] * 1024.0 / mb as f64,
                c[0] * 1024.0 / mb as f64,
                c[4] * 1024.0 / mb as f64,
                w[2] * 1024.0 / mb as f64
            );
        }
    }
}
