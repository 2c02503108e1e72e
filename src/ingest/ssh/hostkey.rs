//! Host keys: load the OpenSSH private key files named by `ssh.host_key`, and
//! generate a missing one on first start (ed25519 unless the file name says
//! `ecdsa` or `rsa`), written 0600 with a `.pub` beside it. Every node of a pool
//! shares the same files.
//!
//! # A generated key is written atomically and durably
//!
//! The key is the node's (and the pool's) SSH identity: once a sender has seen it,
//! losing it is as bad as changing it. So generation goes:
//!
//! 1. `.<name>.tmp` and `.<name>.pub.tmp` are created (`O_EXCL`, mode 0600 from
//!    the start: the private key is never readable by others, not even briefly),
//!    written and fsynced;
//! 2. both are renamed to their final names;
//! 3. the directory is fsynced (and, for directories this function created, their
//!    parents too);
//!
//! and only then is the key used. A power cut at any moment therefore leaves either
//! no key file (the next start generates one; the lost key was never offered to
//! anyone) or a complete one, never an empty or partial file under the key's name.
//! (Before this, the key was written in place without fsync: a power cut within the
//! filesystem's commit interval after the first start left an empty key file and a
//! node that refused to start.)
//!
//! # At load
//!
//! - Leftover `.<name>.tmp` / `.<name>.pub.tmp` files are the traces of a generation
//!   interrupted before step 3 completed: they are removed (that key was never used).
//!   If the key file itself made it, its `.pub` is written again when missing.
//! - A missing key file is generated as above.
//! - A key file that is present but **empty or unparsable is refused**, with a
//!   message saying what to do; it is never regenerated. Reasoning: generation as
//!   above can no longer leave such a file, whatever the moment of a power cut, so
//!   one comes from elsewhere: a key written by an older ingestd that was cut off, a
//!   truncated copy of the pool's key, filesystem damage. Regenerating would silently
//!   give this node a new identity behind the pool's address (senders get "REMOTE
//!   HOST IDENTIFICATION HAS CHANGED", or learn to ignore it), which is worse than a
//!   node that does not start and says why. That holds even when a leftover temp file
//!   sits beside an empty key: no ingestd generation produces that pair (the final
//!   name only ever appears by renaming a complete, fsynced file), so it proves
//!   nothing about who truncated the key. The operator copies the pool's key files
//!   in, or, on a node that never served anyone, deletes the file to get a new key.

use anyhow::{bail, Context, Result};
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, LineEnding, PrivateKey};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::spool::{durable, fsync_dir};

fn algorithm_for(path: &Path) -> Algorithm {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.contains("ecdsa") {
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        }
    } else if name.contains("rsa") {
        Algorithm::Rsa { hash: None }
    } else {
        Algorithm::Ed25519
    }
}

fn pub_path(path: &Path) -> PathBuf {
    path.with_extension("pub")
}

/// The temporary name a file is written under before being renamed to `path`: a
/// hidden name in the same directory (same filesystem, so the rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Remove a leftover temporary file; true if there was one.
fn remove_leftover(tmp: &Path) -> Result<bool> {
    match fs::remove_file(tmp) {
        Ok(()) => {
            tracing::warn!(path = %tmp.display(), "removed the leftover of an interrupted host key generation");
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
}

/// Write `bytes` under the temporary name of `path`, created with `mode`, and fsync it.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    let tmp = temp_path(path);
    remove_leftover(&tmp)?;
    durable::write_file(&tmp, bytes, mode).with_context(|| format!("writing {}", tmp.display()))?;
    Ok(tmp)
}

/// `create_dir_all`, making every level durable (fsync of its parent), also the
/// levels that exist already (a crash may have lost their names).
fn create_dir_all_durable(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    durable::create_dir_all_durable(dir)
        .with_context(|| format!("creating {} durably", dir.display()))
}

/// Write the `.pub` of `key` beside `path`, atomically and durably.
fn write_pub(path: &Path, key: &PrivateKey) -> Result<()> {
    let line = format!("{}\n", key.public_key().to_openssh()?);
    let tmp = write_temp(&pub_path(path), line.as_bytes(), 0o644)?;
    fs::rename(&tmp, pub_path(path)).with_context(|| format!("renaming {}", tmp.display()))?;
    fsync_dir(dir_of(path)).with_context(|| format!("fsync of {}", dir_of(path).display()))
}

fn generate(path: &Path) -> Result<PrivateKey> {
    let alg = algorithm_for(path);
    let key = PrivateKey::random(&mut rand::rng(), alg.clone())
        .with_context(|| format!("generating {alg} host key"))?;
    let dir = dir_of(path);
    create_dir_all_durable(dir)?;
    let text = key.to_openssh(LineEnding::LF)?;
    let line = format!("{}\n", key.public_key().to_openssh()?);
    let ktmp = write_temp(path, text.as_bytes(), 0o600)?;
    let ptmp = write_temp(&pub_path(path), line.as_bytes(), 0o644)?;
    fs::rename(&ktmp, path).with_context(|| format!("renaming {}", ktmp.display()))?;
    fs::rename(&ptmp, pub_path(path)).with_context(|| format!("renaming {}", ptmp.display()))?;
    fsync_dir(dir).with_context(|| format!("fsync of {}", dir.display()))?;
    tracing::info!(path = %path.display(), algorithm = %alg, "generated host key");
    Ok(key)
}

/// Load (or create) one host key. See the module documentation for what happens
/// after an interrupted generation and why an empty or corrupt key is refused.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey> {
    let leftover_key = remove_leftover(&temp_path(path))?;
    let leftover_pub = remove_leftover(&temp_path(&pub_path(path)))?;
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return generate(path),
        Err(e) => {
            return Err(e).with_context(|| format!("ssh.host_key: cannot read {}", path.display()))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!(
            "ssh.host_key: {} is empty ({} bytes). ingestd writes host keys atomically and never \
             leaves an empty one: this file was truncated by something else (a power cut while an \
             older ingestd generated it, an incomplete copy). Not generating a new key, which would \
             change this node's SSH identity: copy the pool's host key files here, or, if this node \
             never served anyone, delete the file and ingestd generates a new key",
            path.display(),
            bytes.len()
        );
    }
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "host key is readable by others; chmod 600 it");
    }
    let text = String::from_utf8_lossy(&bytes);
    let key = russh::keys::decode_secret_key(&text, None).with_context(|| {
        format!(
            "ssh.host_key: cannot load {} ({} bytes; not an unencrypted OpenSSH private key, or \
             damaged). Not generating a new key, which would change this node's SSH identity: \
             restore the pool's host key files",
            path.display(),
            bytes.len()
        )
    })?;
    if (leftover_key || leftover_pub) && !pub_path(path).exists() {
        write_pub(path, &key)?;
    }
    Ok(key)
}

pub fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<PrivateKey>> {
    paths.iter().map(|p| load_or_generate(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generates_once_with_0600() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k/ssh_host_ed25519_key");
        let a = load_or_generate(&p).unwrap();
        assert_eq!(mode_of(&p), 0o600);
        let b = load_or_generate(&p).unwrap();
        assert_eq!(a.public_key().key_data(), b.public_key().key_data());
        let e = load_or_generate(&t.path().join("ssh_host_ecdsa_key")).unwrap();
        assert!(matches!(e.algorithm(), Algorithm::Ecdsa { .. }));
    }

    #[test]
    fn generation_leaves_only_the_final_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ssh_host_ed25519_key");
        let key = load_or_generate(&p).unwrap();
        let mut names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
        let pubkey = fs::read_to_string(pub_path(&p)).unwrap();
        assert_eq!(pubkey.trim(), key.public_key().to_openssh().unwrap());
    }

    /// A generation cut off before its rename left only temp files: they are removed
    /// and a key is generated (the interrupted one was never used).
    #[test]
    fn leftover_temp_files_are_removed_and_a_key_generated() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ssh_host_ed25519_key");
        fs::write(
            temp_path(&p),
            b"-----BEGIN OPENSSH PRIVATE KEY-----\npartial",
        )
        .unwrap();
        fs::write(temp_path(&pub_path(&p)), b"").unwrap();
        let key = load_or_generate(&p).unwrap();
        assert!(!temp_path(&p).exists());
        assert!(!temp_path(&pub_path(&p)).exists());
        assert_eq!(mode_of(&p), 0o600);
        let again = load_or_generate(&p).unwrap();
        assert_eq!(key.public_key().key_data(), again.public_key().key_data());
    }

    /// The key's rename became durable, the .pub's did not: the key is kept, the
    /// leftover removed and the .pub written again from the key.
    #[test]
    fn key_kept_and_pub_rewritten_after_a_cut_between_the_renames() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ssh_host_ed25519_key");
        let key = load_or_generate(&p).unwrap();
        fs::rename(pub_path(&p), temp_path(&pub_path(&p))).unwrap();
        let loaded = load_or_generate(&p).unwrap();
        assert_eq!(key.public_key().key_data(), loaded.public_key().key_data());
        assert!(!temp_path(&pub_path(&p)).exists());
        let pubkey = fs::read_to_string(pub_path(&p)).unwrap();
        assert_eq!(pubkey.trim(), key.public_key().to_openssh().unwrap());
    }

    /// What an older ingestd left after a power cut: an empty key file. Refused with a
    /// clear message, never replaced by a new identity, with or without a temp file.
    #[test]
    fn empty_key_file_is_refused_not_regenerated() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ssh_host_ed25519_key");
        fs::write(&p, b"").unwrap();
        let err = format!("{:#}", load_or_generate(&p).unwrap_err());
        assert!(err.contains("is empty (0 bytes)"), "{err}");
        assert!(err.contains("copy the pool's host key files"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"", "the file must be left as it is");
        assert!(!pub_path(&p).exists());

        fs::write(temp_path(&p), b"whatever").unwrap();
        let err = format!("{:#}", load_or_generate(&p).unwrap_err());
        assert!(err.contains("is empty"), "{err}");
        assert!(!temp_path(&p).exists());
        assert_eq!(fs::read(&p).unwrap(), b"");
    }

    #[test]
    fn corrupt_key_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ssh_host_ed25519_key");
        let good = load_or_generate(&p)
            .unwrap()
            .to_openssh(LineEnding::LF)
            .unwrap();
        fs::write(&p, &good.as_bytes()[..good.len() / 2]).unwrap();
        let err = format!("{:#}", load_or_generate(&p).unwrap_err());
        assert!(err.contains("cannot load"), "{err}");
        assert!(err.contains("restore the pool's host key files"), "{err}");
        assert_eq!(fs::read(&p).unwrap().len(), good.len() / 2);
    }
}
