//! The durable file-system primitives, one copy used by every layer (spool,
//! pipeline, host keys, the operator checks): a file written and fsynced under
//! a temporary name then renamed ([`write_synced`], [`write_atomic`]), every
//! level of a directory path made durable by fsyncing its parent, also when it
//! already exists ([`create_dirs_durable`], [`create_dir_all_durable`]), and the
//! "can a file be created here" probe ([`probe`]).

use super::fsync_dir;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `bytes` to `tmp` (created or truncated, never through a symlink) with
/// exactly `mode` (whatever the umask), and fsync it. Not renamed.
pub fn write_file(tmp: &Path, bytes: &[u8], mode: u32) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(f)
}

/// [`write_file`] to `tmp`, then rename it to `dst`; `tmp` is removed if any of
/// it fails. The directory is not fsynced (the caller does, once for several
/// files, or leaves it to a later fsync when a lost rename only repeats a step).
pub fn write_synced(tmp: &Path, dst: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let r = write_file(tmp, bytes, mode).and_then(|_| fs::rename(tmp, dst));
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r
}

/// Write `bytes` to `path` durably and atomically: a temporary name unique to this
/// writer (pid + counter), fsync, rename, fsync dir. Writers in different
/// processes (the daemon, `ingestd retry`) never share a temporary file, so a
/// reader sees one complete version or another, never a mix. Mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    write_synced(&tmp, path, bytes, 0o600)?;
    fsync_dir(dir)
}

/// Create `dir` (somewhere under the existing `root`) and every missing parent up
/// to `root`, and make every level durable by fsyncing its parent – also when the
/// directory already exists: it may be left by an attempt that crashed after
/// `mkdir` and before the fsync, so its name may not be on disk yet.
pub fn create_dirs_durable(root: &Path, dir: &Path) -> io::Result<()> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| io::Error::other("directory outside its root"))?;
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        let next = cur.join(c);
        match fs::create_dir(&next) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fsync_dir(&cur)?;
        cur = next;
    }
    Ok(())
}

/// Every level of `dir` (from the file system's root, or the working directory
/// for a relative path) made durable: created if missing, and its parent fsynced,
/// existing or not. An existing ancestor this process may not open (a parent of
/// the configured directory owned by another user) is skipped: its entries were
/// never this process's to make durable.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut cur = PathBuf::new();
    for c in dir.components() {
        let next = cur.join(c);
        if matches!(
            c,
            Component::RootDir | Component::CurDir | Component::Prefix(_)
        ) {
            cur = next;
            continue;
        }
        let created = match fs::create_dir(&next) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        let parent = if cur.as_os_str().is_empty() {
            Path::new(".")
        } else {
            cur.as_path()
        };
        match fsync_dir(parent) {
            Ok(()) => {}
            Err(e) if !created && e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(e),
        }
        cur = next;
    }
    Ok(())
}

/// Can a new file be created (and removed) directly in `dir`? The real test: it
/// also catches read-only mounts and full inode tables.
pub fn probe(dir: &Path) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let p = dir.join(format!(
        ".ingestd-probe-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)?;
    fs::remove_file(&p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::DIR_FSYNCS;

    #[test]
    fn every_level_is_fsynced_existing_or_not() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        fs::create_dir_all(t.path().join("a")).unwrap();
        DIR_FSYNCS.with(|v| v.borrow_mut().clear());
        create_dir_all_durable(&d).unwrap();
        assert!(d.is_dir());
        let synced = DIR_FSYNCS.with(|v| v.borrow().clone());
        for p in [
            t.path().to_path_buf(),
            t.path().join("a"),
            t.path().join("a/b"),
        ] {
            assert!(synced.contains(&p), "{p:?} not fsynced: {synced:?}");
        }
        // again, everything existing: the parents are still fsynced
        DIR_FSYNCS.with(|v| v.borrow_mut().clear());
        create_dir_all_durable(&d).unwrap();
        let synced = DIR_FSYNCS.with(|v| v.borrow().clone());
        assert!(synced.contains(&t.path().join("a/b")), "{synced:?}");
    }

    #[test]
    fn writes_are_atomic_exact_mode_and_never_follow_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let tmp = t.path().join(".x.tmp");
        write_synced(&tmp, &t.path().join("x"), b"two", 0o644).unwrap();
        assert_eq!(
            fs::metadata(t.path().join("x"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        assert!(!tmp.exists());
        // a symlink planted at the temporary name is refused, and removed
        let victim = t.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_synced(&tmp, &t.path().join("y"), b"evil", 0o644).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&tmp).is_err());
        // only the final files are left
        let mut names: Vec<String> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["f.json", "victim", "x"]);
        probe(t.path()).unwrap();
        assert!(probe(&t.path().join("missing")).is_err());
    }
}
