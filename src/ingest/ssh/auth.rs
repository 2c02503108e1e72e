//! Public-key authentication against OpenSSH-format authorized_keys files.
//! Files are re-read at every attempt, so edits take effect at once. `%u` in a
//! path selects a per-login-name file; a `*` in the last component is a glob
//! (`~/.ssh/*.pub`). Options: `from="..."` is honoured (IP patterns with `*`, `?`,
//! `!` negation and CIDR); `restrict` and the `no-*` options are accepted (this
//! server never offers a shell, pty or forwarding anyway); a key carrying an
//! option that would change what it may do (`command=`, `principals=`,
//! `cert-authority`, `expiry-time=`, ...) is not used, with a warning.

use crate::core::authkeys::options_allow;
use crate::core::vpath::glob_match;
use russh::keys::ssh_key::{authorized_keys::AuthorizedKeys, PublicKey};
use std::net::IpAddr;
use std::path::Path;

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

/// Does `key`, offered by `user` from `ip`, appear in the authorized_keys files
/// with options that allow it? Blocking (reads files).
#[cfg(test)]
pub fn is_authorized(patterns: &[String], user: &str, ip: Option<IpAddr>, key: &PublicKey) -> bool {
    check(patterns, user, ip, key).is_ok()
}

/// Like [`is_authorized`], with the reason for a refusal (for the log line the
/// operator and fail2ban read). Unreadable files and garbled lines are logged
/// here, with the OS error or the parse error.
pub fn check(
    patterns: &[String],
    user: &str,
    ip: Option<IpAddr>,
    key: &PublicKey,
) -> Result<(), String> {
    let files = files_for(patterns, user);
    if files.is_empty() {
        return Err("no authorized_keys file for this login name".into());
    }
    let mut why: Option<String> = None;
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = ?file, error = %e, "cannot read authorized_keys file");
                why.get_or_insert_with(|| format!("cannot read {}: {e}", file.display()));
                continue;
            }
        };
        for (n, entry) in AuthorizedKeys::new(&text).enumerate() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(file = ?file, line = n + 1, error = %e, "authorized_keys entry cannot be parsed; skipped");
                    continue;
                }
            };
            if entry.public_key().key_data() != key.key_data() {
                continue;
            }
            match options_allow(entry.config_opts().iter(), ip) {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    why = Some(format!(
                        "from= of entry {} in {} does not allow this address",
                        n + 1,
                        file.display()
                    ))
                }
                Err(opt) => {
                    tracing::warn!(
                        file = ?file,
                        entry = n + 1,
                        option = ?opt,
                        "authorized key not used: option not supported by ingestd"
                    );
                    why = Some(format!(
                        "entry {} in {} has an option ingestd does not support",
                        n + 1,
                        file.display()
                    ))
                }
            }
        }
    }
    Err(why.unwrap_or_else(|| "key not in authorized_keys".into()))
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

    #[test]
    fn files_options_and_per_user() {
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
        assert!(is_authorized(&pats, "anyone", ip("127.0.0.1"), &k1));
        assert!(!is_authorized(&pats, "anyone", ip("10.0.0.1"), &k1));
        assert!(
            !is_authorized(&pats, "anyone", ip("127.0.0.1"), &k2),
            "command= keys are not used"
        );

        std::fs::create_dir(t.path().join("keys")).unwrap();
        std::fs::write(t.path().join("keys/bob"), format!("{K2}\n")).unwrap();
        let per = vec![t.path().join("keys/%u").to_string_lossy().into_owned()];
        assert!(is_authorized(&per, "bob", ip("127.0.0.1"), &k2));
        assert!(!is_authorized(&per, "alice", ip("127.0.0.1"), &k2));
        assert!(!is_authorized(&per, "../keys/bob", ip("127.0.0.1"), &k2));

        std::fs::write(t.path().join("keys/id_x.pub"), format!("{K1}\n")).unwrap();
        let glob = vec![t.path().join("keys/*.pub").to_string_lossy().into_owned()];
        assert!(is_authorized(&glob, "x", ip("127.0.0.1"), &k1));
        assert!(!is_authorized(&glob, "x", ip("127.0.0.1"), &k2));
    }
}
