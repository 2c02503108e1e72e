//! `ingestd check-config`: after the schema and value checks of `config`, what
//! would fail when the node runs, each naming its key: the process command,
//! host key files, authorized_keys, the directories the daemon writes, clashing
//! listen addresses; and warnings for a pool (a host key generated on this node,
//! `node_id` left to the host name).
//!
//! Permissions are checked as the user running the command: run it as the
//! daemon's user (the systemd unit's `ExecStartPre=` does), or as root with
//! `--user ingestd`.

use crate::config::Config;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What `check-config` found.
#[derive(Debug, Default)]
pub struct Report {
    /// `key: problem`: the node would fail (or never work) with this.
    pub errors: Vec<String>,
    /// `key: note`: worth knowing before running a pool.
    pub warnings: Vec<String>,
}

/// Every run-time check. `node_id_given`: the file sets `node_id` itself.
pub fn check(cfg: &Config, node_id_given: bool) -> Report {
    let mut r = Report::default();
    let user = user_name();
    if !node_id_given {
        r.warnings.push(format!(
            "node_id: not set, so it is the host name {:?}; set it in the file so ids and archive names stay the same if the host is renamed",
            cfg.node_id
        ));
    }
    check_process(cfg, &mut r);
    check_host_keys(cfg, &user, &mut r);
    check_authorized_keys(cfg, &mut r);
    let mut dirs = vec![
        ("spool.dir", &cfg.spool.dir),
        ("archive.dir", &cfg.archive.dir),
        ("forward.dir", &cfg.forward.dir),
    ];
    if let Some(i) = &cfg.inbox {
        dirs.push(("inbox.dir", &i.dir));
    }
    for (key, d) in dirs {
        if let Err(e) = writable_dir(d) {
            r.errors.push(format!(
                "{key}: {} is not usable by user {user}: {e}",
                d.display()
            ));
        }
    }
    check_listen(cfg, &mut r);
    let m = &cfg.health.maintenance_file;
    if !m.as_os_str().is_empty() && m.symlink_metadata().is_ok() {
        r.warnings.push(format!(
            "health.maintenance_file: {} exists: /healthz answers 503 (no new connections) until it is removed",
            m.display()
        ));
    }
    r
}

/// Run the rest of this (one-shot) process as `name`, so the checks see what the
/// daemon running as that user will see. Needs root unless it is the current user.
pub fn become_user(name: &str) -> anyhow::Result<()> {
    use nix::unistd::{setgid, setgroups, setuid, Uid, User};
    let u = User::from_name(name)
        .map_err(|e| anyhow::anyhow!("--user {name}: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("--user {name}: no such user"))?;
    if u.uid == Uid::effective() {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        anyhow::bail!("--user {name}: checking as another user needs root");
    }
    let cname = std::ffi::CString::new(name)?;
    let groups = nix::unistd::getgrouplist(&cname, u.gid).unwrap_or_else(|_| vec![u.gid]);
    setgroups(&groups).map_err(|e| anyhow::anyhow!("--user {name}: setgroups: {e}"))?;
    setgid(u.gid).map_err(|e| anyhow::anyhow!("--user {name}: setgid: {e}"))?;
    setuid(u.uid).map_err(|e| anyhow::anyhow!("--user {name}: setuid: {e}"))?;
    Ok(())
}

/// Does the config file set `node_id` (rather than leave it to the host name)?
pub fn node_id_given(path: Option<&Path>) -> bool {
    let Some(p) = path else { return false };
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("node_id"))
}

fn user_name() -> String {
    let uid = nix::unistd::Uid::effective();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn check_process(cfg: &Config, r: &mut Report) {
    let Some(p) = &cfg.process else { return };
    let prog = &p.command[0];
    let path = if prog.contains('/') {
        Some(PathBuf::from(prog))
    } else {
        std::env::var_os("PATH").and_then(|ps| {
            std::env::split_paths(&ps)
                .map(|d| d.join(prog))
                .find(|c| c.is_file())
        })
    };
    let Some(path) = path else {
        r.errors.push(format!(
            "process.command: {prog:?} is not found in PATH (give the full path)"
        ));
        return;
    };
    match std::fs::metadata(&path) {
        Err(e) => r
            .errors
            .push(format!("process.command: {}: {e}", path.display())),
        Ok(m) if !m.is_file() => r.errors.push(format!(
            "process.command: {} is not a regular file",
            path.display()
        )),
        Ok(_) => {
            if nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_err() {
                r.errors.push(format!(
                    "process.command: {} is not executable (chmod +x it)",
                    path.display()
                ));
            }
        }
    }
}

const SHARED_KEY: &str = "every node of a pool must use the same host key files (copy them from one node), or senders behind the VIP see \"REMOTE HOST IDENTIFICATION HAS CHANGED\"";

fn check_host_keys(cfg: &Config, user: &str, r: &mut Report) {
    for p in cfg.ssh.host_key.to_vec() {
        if !p.exists() {
            match nearest_dir(&p).and_then(|d| probe(&d).map(|()| d)) {
                Ok(_) => r.warnings.push(format!(
                    "ssh.host_key: {} does not exist: a new key will be generated on this node at start; {SHARED_KEY}",
                    p.display()
                )),
                Err(e) => r.errors.push(format!(
                    "ssh.host_key: {} does not exist and cannot be generated by user {user}: {e}",
                    p.display()
                )),
            }
            continue;
        }
        match russh::keys::load_secret_key(&p, None) {
            Ok(k) => {
                // ingestd writes generated keys without a comment; ssh-keygen
                // always sets one.
                if k.comment().is_empty() {
                    r.warnings.push(format!(
                        "ssh.host_key: {} was generated by ingestd on a node; {SHARED_KEY}",
                        p.display()
                    ));
                }
            }
            Err(e) => r.errors.push(format!(
                "ssh.host_key: {} is not a usable OpenSSH private key: {e}",
                p.display()
            )),
        }
    }
}

fn check_authorized_keys(cfg: &Config, r: &mut Report) {
    for pat in cfg.ssh.authorized_keys.to_vec() {
        let path = Path::new(&pat);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let per_user = pat.contains("%u");
        let glob = name.contains('*') || name.contains('?');
        if per_user || glob {
            // Check the directory the files are looked up in.
            let dir_str = match pat.find("%u") {
                Some(i) => &pat[..pat[..i].rfind('/').unwrap_or(0)],
                None => path.parent().and_then(|p| p.to_str()).unwrap_or("."),
            };
            let dir = Path::new(if dir_str.is_empty() { "/" } else { dir_str });
            match std::fs::read_dir(dir) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => r.warnings.push(format!(
                    "ssh.authorized_keys: {pat}: directory {} does not exist: no sender can log in with it",
                    dir.display()
                )),
                Err(e) => r.errors.push(format!(
                    "ssh.authorized_keys: {pat}: cannot list {}: {e}",
                    dir.display()
                )),
            }
            continue;
        }
        match std::fs::File::open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => r.warnings.push(format!(
                "ssh.authorized_keys: {pat} does not exist: no sender can log in with it (it is read at each login, so it may be created later)"
            )),
            Err(e) => r
                .errors
                .push(format!("ssh.authorized_keys: {pat} is not readable: {e}")),
        }
    }
}

/// A directory the daemon creates files in: it exists and is writable, or its
/// nearest existing ancestor is (the daemon creates it).
fn writable_dir(d: &Path) -> io::Result<()> {
    match std::fs::metadata(d) {
        Ok(m) if m.is_dir() => probe(d),
        Ok(_) => Err(io::Error::other("not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let a = nearest_dir(d)?;
            probe(&a).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot be created in {}: {e}", a.display()),
                )
            })
        }
        Err(e) => Err(e),
    }
}

/// The nearest existing ancestor of `p`, which must be a directory.
fn nearest_dir(p: &Path) -> io::Result<PathBuf> {
    let mut a = p.parent();
    while let Some(d) = a {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => return Ok(d.to_path_buf()),
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    d.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => a = d.parent(),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no existing parent directory"))
}

/// Create and remove a probe file: the real test (also catches read-only mounts).
use crate::spool::durable::probe;

/// Two listen addresses clash when their ports are equal and, in the same
/// address family, their addresses are equal or one is the wildcard.
fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_listen(cfg: &Config, r: &mut Report) {
    let mut all: Vec<(&str, SocketAddr)> = cfg
        .ssh
        .listen
        .to_vec()
        .iter()
        .filter_map(|l| l.parse().ok())
        .map(|a| ("ssh.listen", a))
        .collect();
    if let Ok(h) = cfg.health.listen.parse() {
        all.push(("health.listen", h));
    }
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            let ((ka, a), (kb, b)) = (all[i], all[j]);
            if clash(&a, &b) {
                r.errors.push(format!(
                    "{kb}: {b} clashes with {ka} {a} (same port on the same or a wildcard address)"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(clash(&a("0.0.0.0:22"), &a("10.0.0.1:22")));
        assert!(clash(&a("[::]:22"), &a("[::1]:22")));
        assert!(clash(&a("127.0.0.1:22"), &a("127.0.0.1:22")));
        assert!(!clash(&a("127.0.0.1:22"), &a("127.0.0.2:22")));
        assert!(!clash(&a("0.0.0.0:22"), &a("0.0.0.0:23")));
        assert!(!clash(&a("0.0.0.0:22"), &a("[::1]:22")));
    }
}
