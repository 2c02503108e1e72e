//! Public-key authentication against OpenSSH-format authorized_keys files.
//! `%u` in a path selects a per-login-name file; a `*` in the last component is
//! a glob (`~/.ssh/*.pub`). Options: `from="..."` is honoured (IP patterns with
//! `*`, `?`, `!` negation and CIDR); `restrict` and the `no-*` options are
//! accepted (this server never offers a shell, pty or forwarding anyway); a key
//! carrying an option that would change what it may do (`command=`,
//! `principals=`, `cert-authority`, `expiry-time=`, ...) is not used, with a
//! warning.
//!
//! Files are parsed once per change, not at every attempt: [`KeyCache`] keeps
//! each file's keys (a BLAKE3 digest of each key blob → line and options),
//! keyed by the file's path, device, inode, size, mtime and ctime (to the
//! nanosecond), which every attempt stats, so an edit takes effect at the next
//! attempt (a file changed in the last second is not kept: a second change in
//! the same clock tick might not show in its stamp). Bounds: the parsed keys of all files take at most
//! `ssh.authorized_keys_cache` bytes (least recently used files are dropped; a
//! file larger than that is parsed at every attempt, with a warning); at most
//! [`MAX_PARSES`] files are parsed at once, and attempts that need a file being
//! parsed wait for that parse (they never parse it again); a line longer than
//! [`MAX_LINE`] is skipped as garbled.

use crate::core::authkeys::options_allow;
use crate::core::vpath::glob_match;
use russh::keys::ssh_key::{authorized_keys::Entry, PublicKey};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Files parsed at once (each on a blocking thread, holding its key index as
/// it grows); attempts needing another file wait.
pub const MAX_PARSES: usize = 2;
/// Longest authorized_keys line read (an RSA 16384-bit key with options fits).
pub const MAX_LINE: usize = 64 * 1024;
/// A file changed this recently is parsed at every attempt (see [`Stamp::racy`]).
const RACY: std::time::Duration = std::time::Duration::from_secs(1);
/// Garbled lines warned about one by one in each parse (then one summary).
const MAX_GARBLED_WARNINGS: usize = 10;

/// A login name usable in a `%u` path: no separators, no dot-names.
fn safe_login(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user != "."
        && user != ".."
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// Expand the configured patterns for `user` into existing files.
fn files_for(patterns: &[String], user: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for pat in patterns {
        let p = if pat.contains("%u") {
            if !safe_login(user) {
                continue;
            }
            pat.replace("%u", user)
        } else {
            pat.clone()
        };
        let path = Path::new(&p);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains('*') || name.contains('?') {
            let dir = path.parent().unwrap_or(Path::new("."));
            if let Ok(rd) = std::fs::read_dir(dir) {
                let mut found: Vec<_> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(name, n)))
                    .map(|e| e.path())
                    .collect();
                found.sort();
                out.extend(found);
            }
        } else if path.exists() {
            out.push(path.to_path_buf());
        }
    }
    out
}

/// What identifies one version of a file: any write, replacement or `touch`
/// changes it (ctime cannot be set back by a user).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Changed less than [`RACY`] before `now`: a change in the same clock tick
    /// could leave the stamp as it is, so such a parse is used but not kept.
    fn racy(&self, now: std::time::SystemTime) -> bool {
        let ctime = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                self.ctime.0.max(0) as u64,
                self.ctime.1.clamp(0, 999_999_999) as u32,
            );
        ctime + RACY > now
    }

    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The digest a key is looked up by: BLAKE3 of its SSH wire blob.
fn digest(key: &PublicKey) -> Option<[u8; 32]> {
    key.to_bytes().ok().map(|b| *blake3::hash(&b).as_bytes())
}

/// One usable line of a file.
struct KeyEntry {
    /// Line number (1-based).
    line: u32,
    /// The next entry with the same key (`u32::MAX`: none).
    next: u32,
    /// The options, as written (empty: no allocation).
    opts: Box<[Box<str>]>,
}

/// One authorized_keys file, parsed.
pub struct Parsed {
    /// Key digest → its first entry.
    index: HashMap<[u8; 32], u32>,
    entries: Vec<KeyEntry>,
    /// Approximate heap bytes held.
    bytes: usize,
}

impl Parsed {
    /// Entries for a key, in file order.
    fn lookup(&self, d: &[u8; 32]) -> impl Iterator<Item = &KeyEntry> {
        let mut i = self.index.get(d).copied().unwrap_or(u32::MAX);
        std::iter::from_fn(move || {
            let e = self.entries.get(i as usize)?;
            i = e.next;
            Some(e)
        })
    }

    pub fn keys(&self) -> usize {
        self.entries.len()
    }
}

/// Parse one file, streaming (never the whole text in memory). Garbled lines
/// are warned about here. Returns the file's stamp before and after reading:
/// equal if it did not change meanwhile.
fn parse(path: &Path) -> std::io::Result<(Parsed, Stamp, Stamp)> {
    let f = std::fs::File::open(path)?;
    let before = Stamp::of(&f.metadata()?);
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut index: HashMap<[u8; 32], u32> = HashMap::new();
    let mut tails: HashMap<u32, u32> = HashMap::new(); // first entry → last, for duplicates
    let mut entries: Vec<KeyEntry> = Vec::new();
    let mut opt_bytes = 0usize;
    let (mut n, mut garbled) = (0u32, 0usize);
    let mut buf = Vec::new();
    let mut warn = |n: u32, error: &dyn std::fmt::Display| {
        garbled += 1;
        if garbled <= MAX_GARBLED_WARNINGS {
            tracing::warn!(file = ?path, line = n, error = %error, "authorized_keys entry cannot be parsed; skipped");
        }
    };
    loop {
        buf.clear();
        let got = (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
        if got == 0 {
            break;
        }
        n = n.saturating_add(1);
        if got == MAX_LINE && !buf.ends_with(b"\n") {
            // Skip the rest of an over-long line.
            loop {
                buf.clear();
                let k = (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
                if k == 0 || buf.ends_with(b"\n") {
                    break;
                }
            }
            warn(n, &format_args!("line longer than {MAX_LINE} bytes"));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            warn(n, &"not UTF-8");
            continue;
        };
        // As ssh-key's `AuthorizedKeys`: a '#' starts a comment; blank lines skipped.
        let text = text.split_once('#').map_or(text, |(l, _)| l).trim_end();
        if text.is_empty() {
            continue;
        }
        let entry: Entry = match text.parse() {
            Ok(e) => e,
            Err(e) => {
                warn(n, &e);
                continue;
            }
        };
        let Some(d) = digest(entry.public_key()) else {
            warn(n, &"key cannot be encoded");
            continue;
        };
        let opts: Box<[Box<str>]> = entry
            .config_opts()
            .iter()
            .map(|o| {
                opt_bytes += o.len() + 16;
                Box::<str>::from(o)
            })
            .collect();
        let i = entries.len() as u32;
        entries.push(KeyEntry {
            line: n,
            next: u32::MAX,
            opts,
        });
        match index.get(&d) {
            None => {
                index.insert(d, i);
            }
            Some(&first) => {
                let last = tails.get(&first).copied().unwrap_or(first);
                entries[last as usize].next = i;
                tails.insert(first, i);
            }
        }
    }
    if garbled > MAX_GARBLED_WARNINGS {
        tracing::warn!(file = ?path, skipped = garbled, "authorized_keys: more garbled lines skipped (first {MAX_GARBLED_WARNINGS} logged)");
    }
    let after = Stamp::of(&r.get_ref().metadata()?);
    index.shrink_to_fit();
    entries.shrink_to_fit();
    let bytes = index.capacity() * (std::mem::size_of::<([u8; 32], u32)>() + 1)
        + entries.capacity() * std::mem::size_of::<KeyEntry>()
        + opt_bytes;
    Ok((
        Parsed {
            index,
            entries,
            bytes,
        },
        before,
        after,
    ))
}

/// One cached file.
struct Slot {
    stamp: Stamp,
    /// Filled by the one parse of this version; waiters await it.
    cell: Arc<tokio::sync::OnceCell<Arc<Parsed>>>,
    /// Last use (the cache's clock), for LRU.
    last: u64,
    /// Bytes counted against the budget (0 until parsed).
    bytes: usize,
}

#[derive(Default)]
struct CacheState {
    files: HashMap<PathBuf, Slot>,
    used: usize,
    tick: u64,
}

/// The parsed authorized_keys files, shared by every connection (see the
/// module comment for its bounds).
pub struct KeyCache {
    budget: usize,
    parses: Arc<tokio::sync::Semaphore>,
    state: Mutex<CacheState>,
    /// Files parsed since start.
    pub parsed: AtomicU64,
}

/// Per-file overhead counted against the budget besides its keys.
const SLOT_OVERHEAD: usize = 512;

impl KeyCache {
    /// A cache holding at most `budget` bytes of parsed keys.
    pub fn new(budget: u64) -> Arc<KeyCache> {
        Arc::new(KeyCache {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            parses: Arc::new(tokio::sync::Semaphore::new(MAX_PARSES)),
            state: Mutex::new(CacheState::default()),
            parsed: AtomicU64::new(0),
        })
    }

    /// Bytes of parsed keys held now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.state.lock().unwrap().used
    }

    /// The parsed content of `path` as it is now (`stamp`): from the cache, or
    /// from the one parse of this version (started here, or awaited).
    async fn get(&self, path: &Path, stamp: Stamp) -> std::io::Result<Arc<Parsed>> {
        let cell = {
            let mut guard = self.state.lock().unwrap();
            let s = &mut *guard;
            s.tick += 1;
            let tick = s.tick;
            let slot = s.files.entry(path.to_path_buf()).or_insert_with(|| Slot {
                stamp: stamp.clone(),
                cell: Arc::default(),
                last: tick,
                bytes: 0,
            });
            if slot.stamp != stamp {
                s.used -= slot.bytes;
                *slot = Slot {
                    stamp: stamp.clone(),
                    cell: Arc::default(),
                    last: tick,
                    bytes: 0,
                };
            }
            slot.last = tick;
            slot.cell.clone()
        };
        let mut fresh = None;
        let got = cell
            .get_or_try_init(|| async {
                // The permit goes with the blocking parse: a caller that gives up
                // (its connection closed) does not free a parse slot early.
                let permit = self
                    .parses
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let p = path.to_path_buf();
                let t0 = std::time::Instant::now();
                let now = std::time::SystemTime::now();
                let (parsed, before, after) = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    parse(&p)
                })
                .await
                .map_err(std::io::Error::other)??;
                self.parsed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    file = ?path,
                    keys = parsed.keys(),
                    bytes = parsed.bytes,
                    duration_ms = t0.elapsed().as_millis() as u64,
                    "authorized_keys file parsed"
                );
                fresh = Some(before == stamp && after == stamp && !before.racy(now));
                Ok::<_, std::io::Error>(Arc::new(parsed))
            })
            .await;
        let parsed = match got {
            Ok(p) => p.clone(),
            Err(e) => {
                self.forget(path, &cell);
                return Err(e);
            }
        };
        if let Some(unchanged) = fresh {
            self.account(path, &cell, &parsed, unchanged);
        }
        Ok(parsed)
    }

    /// Drop `path`'s slot if it still holds `cell`.
    fn forget(&self, path: &Path, cell: &Arc<tokio::sync::OnceCell<Arc<Parsed>>>) {
        let mut s = self.state.lock().unwrap();
        if s.files
            .get(path)
            .is_some_and(|x| Arc::ptr_eq(&x.cell, cell))
        {
            let slot = s.files.remove(path).expect("present");
            s.used -= slot.bytes;
        }
    }

    /// Count a fresh parse against the budget, dropping the least recently
    /// used files beyond it; not kept if the file changed while it was read or
    /// is larger than the whole budget.
    fn account(
        &self,
        path: &Path,
        cell: &Arc<tokio::sync::OnceCell<Arc<Parsed>>>,
        parsed: &Parsed,
        unchanged: bool,
    ) {
        let bytes = parsed.bytes + SLOT_OVERHEAD + path.as_os_str().len();
        if !unchanged || bytes > self.budget {
            if unchanged {
                tracing::warn!(file = ?path, bytes, budget = self.budget, "authorized_keys file too large for ssh.authorized_keys_cache: parsed at every attempt");
            }
            self.forget(path, cell);
            return;
        }
        let mut guard = self.state.lock().unwrap();
        let s = &mut *guard;
        match s.files.get_mut(path) {
            Some(slot) if Arc::ptr_eq(&slot.cell, cell) && slot.bytes == 0 => {
                slot.bytes = bytes;
                s.used += bytes;
            }
            _ => return,
        }
        while s.used > self.budget {
            let victim = s
                .files
                .iter()
                .filter(|(p, x)| x.bytes > 0 && p.as_path() != path)
                .min_by_key(|(_, x)| x.last)
                .map(|(p, _)| p.clone());
            let Some(v) = victim else { break };
            let slot = s.files.remove(&v).expect("present");
            s.used -= slot.bytes;
        }
    }

    /// May `key`, offered by `user` from `ip`, be used? `Err(reason)` if not,
    /// for the log line the operator and fail2ban read. Unreadable files and
    /// garbled lines are logged here, with the OS error or the parse error.
    pub async fn check(
        &self,
        patterns: Vec<String>,
        user: &str,
        ip: Option<IpAddr>,
        key: &PublicKey,
    ) -> Result<(), String> {
        let u = user.to_string();
        let files = tokio::task::spawn_blocking(move || {
            files_for(&patterns, &u)
                .into_iter()
                .map(|f| {
                    let st = std::fs::metadata(&f).map(|m| Stamp::of(&m));
                    (f, st)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("internal error: {e}"))?;
        if files.is_empty() {
            return Err("no authorized_keys file for this login name".into());
        }
        let Some(d) = digest(key) else {
            return Err("key cannot be encoded".into());
        };
        let mut why: Option<String> = None;
        for (file, stamp) in files {
            let parsed = match stamp {
                Ok(st) => self.get(&file, st).await,
                Err(e) => Err(e),
            };
            let parsed = match parsed {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(file = ?file, error = %e, "cannot read authorized_keys file");
                    why.get_or_insert_with(|| format!("cannot read {}: {e}", file.display()));
                    continue;
                }
            };
            for entry in parsed.lookup(&d) {
                match options_allow(entry.opts.iter().map(|o| &**o), ip) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {
                        why = Some(format!(
                            "from= of entry {} in {} does not allow this address",
                            entry.line,
                            file.display()
                        ))
                    }
                    Err(opt) => {
                        tracing::warn!(
                            file = ?file,
                            entry = entry.line,
                            option = ?opt,
                            "authorized key not used: option not supported by ingestd"
                        );
                        why = Some(format!(
                            "entry {} in {} has an option ingestd does not support",
                            entry.line,
                            file.display()
                        ))
                    }
                }
            }
        }
        Err(why.unwrap_or_else(|| "key not in authorized_keys".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k1";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfszSgVhcBmJYmS1JGmZmH k2";

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn is_authorized(
        c: &KeyCache,
        patterns: &[String],
        user: &str,
        ip: Option<IpAddr>,
        key: &PublicKey,
    ) -> bool {
        rt().block_on(c.check(patterns.to_vec(), user, ip, key))
            .is_ok()
    }

    #[test]
    fn files_options_and_per_user() {
        let c = KeyCache::new(1 << 20);
        let t = tempfile::tempdir().unwrap();
        let shared = t.path().join("authorized_keys");
        std::fs::write(
            &shared,
            format!("# comment\nrestrict,from=\"127.0.0.1\" {K1}\ncommand=\"/bin/sh\" {K2}\n"),
        )
        .unwrap();
        let pats = vec![shared.to_string_lossy().into_owned()];
        let k1 = PublicKey::from_openssh(K1).unwrap();
        let k2 = PublicKey::from_openssh(K2).unwrap();
        assert!(is_authorized(&c, &pats, "anyone", ip("127.0.0.1"), &k1));
        assert!(!is_authorized(&c, &pats, "anyone", ip("10.0.0.1"), &k1));
        assert!(
            !is_authorized(&c, &pats, "anyone", ip("127.0.0.1"), &k2),
            "command= keys are not used"
        );
        let why = rt().block_on(c.check(pats.clone(), "x", ip("10.0.0.1"), &k1));
        assert!(
            why.unwrap_err().starts_with("from= of entry 2 in "),
            "entries are named by line"
        );

        std::fs::create_dir(t.path().join("keys")).unwrap();
        std::fs::write(t.path().join("keys/bob"), format!("{K2}\n")).unwrap();
        let per = vec![t.path().join("keys/%u").to_string_lossy().into_owned()];
        assert!(is_authorized(&c, &per, "bob", ip("127.0.0.1"), &k2));
        assert!(!is_authorized(&c, &per, "alice", ip("127.0.0.1"), &k2));
        assert!(!is_authorized(
            &c,
            &per,
            "../keys/bob",
            ip("127.0.0.1"),
            &k2
        ));

        std::fs::write(t.path().join("keys/id_x.pub"), format!("{K1}\n")).unwrap();
        let glob = vec![t.path().join("keys/*.pub").to_string_lossy().into_owned()];
        assert!(is_authorized(&c, &glob, "x", ip("127.0.0.1"), &k1));
        assert!(!is_authorized(&c, &glob, "x", ip("127.0.0.1"), &k2));
    }

    #[test]
    fn parsed_once_per_change_and_edits_take_effect() {
        let c = KeyCache::new(1 << 20);
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("authorized_keys");
        std::fs::write(&f, format!("garbage\n{K1}\nfrom=\"10.0.0.0/8\" {K1}\n")).unwrap();
        std::thread::sleep(RACY);
        let pats = vec![f.to_string_lossy().into_owned()];
        let k1 = PublicKey::from_openssh(K1).unwrap();
        let k2 = PublicKey::from_openssh(K2).unwrap();
        for _ in 0..5 {
            assert!(is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k1));
            assert!(!is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k2));
        }
        assert_eq!(c.parsed.load(Ordering::Relaxed), 1, "parsed once");
        // Same size, new content: the stamp (mtime/ctime) changes.
        let line2 = K2.replace(" k2", " k1");
        std::fs::write(&f, format!("garbage\n{line2}\nfrom=\"10.0.0.0/8\" {K1}\n")).unwrap();
        assert!(is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k2));
        assert!(!is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k1));
        assert!(
            is_authorized(&c, &pats, "u", ip("10.1.1.1"), &k1),
            "duplicates kept"
        );
        assert_eq!(
            c.parsed.load(Ordering::Relaxed),
            4,
            "just written: not kept"
        );
        std::thread::sleep(RACY);
        assert!(is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k2));
        assert!(is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k2));
        assert_eq!(c.parsed.load(Ordering::Relaxed), 5);
        // Removed: no file.
        std::fs::remove_file(&f).unwrap();
        assert!(!is_authorized(&c, &pats, "u", ip("127.0.0.1"), &k2));
    }

    #[test]
    fn concurrent_attempts_share_one_parse() {
        let c = KeyCache::new(1 << 20);
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("authorized_keys");
        let mut text = String::new();
        for _ in 0..20_000 {
            text.push_str(K2);
            text.push('\n');
        }
        text.push_str(K1);
        std::fs::write(&f, text).unwrap();
        let pats = vec![f.to_string_lossy().into_owned()];
        let k1 = PublicKey::from_openssh(K1).unwrap();
        let ok = rt().block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let (c, pats, k1) = (c.clone(), pats.clone(), k1.clone());
                tasks.push(tokio::spawn(async move {
                    c.check(pats, "u", None, &k1).await.is_ok()
                }));
            }
            let mut ok = 0;
            for t in tasks {
                ok += t.await.unwrap() as usize;
            }
            ok
        });
        assert_eq!(ok, 32);
        assert_eq!(c.parsed.load(Ordering::Relaxed), 1, "one parse, 31 waited");
    }

    #[test]
    fn memory_is_bounded_least_recently_used_files_dropped() {
        let t = tempfile::tempdir().unwrap();
        let k1 = PublicKey::from_openssh(K1).unwrap();
        let mut pats = Vec::new();
        for i in 0..4 {
            let f = t.path().join(format!("keys{i}"));
            std::fs::write(&f, format!("{K1}\n")).unwrap();
            pats.push(vec![f.to_string_lossy().into_owned()]);
        }
        std::thread::sleep(RACY);
        // Room for about two files.
        let c = KeyCache::new(2 * (SLOT_OVERHEAD as u64 + 300));
        for p in &pats {
            assert!(is_authorized(&c, p, "u", None, &k1));
            assert!(c.used() <= c.budget, "{} > {}", c.used(), c.budget);
        }
        assert_eq!(c.parsed.load(Ordering::Relaxed), 4);
        assert!(is_authorized(&c, &pats[3], "u", None, &k1));
        assert_eq!(c.parsed.load(Ordering::Relaxed), 4, "the newest is kept");
        assert!(is_authorized(&c, &pats[0], "u", None, &k1));
        assert_eq!(
            c.parsed.load(Ordering::Relaxed),
            5,
            "the oldest was dropped"
        );
        // Larger than the whole budget: used, not kept.
        let tiny = KeyCache::new(10);
        assert!(is_authorized(&tiny, &pats[0], "u", None, &k1));
        assert!(is_authorized(&tiny, &pats[0], "u", None, &k1));
        assert_eq!(tiny.parsed.load(Ordering::Relaxed), 2);
        assert_eq!(tiny.used(), 0);
    }
}
