//! Host keys: load the OpenSSH private key files named by `ssh.host_key`, and
//! generate a missing one on first start (ed25519 unless the file name says
//! `ecdsa` or `rsa`), written 0600. Every node of a pool shares the same files.

use anyhow::{Context, Result};
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, LineEnding, PrivateKey};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

/// Load (or create) one host key.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey> {
    if !path.exists() {
        let alg = algorithm_for(path);
        let key = PrivateKey::random(&mut rand::rng(), alg.clone())
            .with_context(|| format!("generating {alg} host key"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        key.write_openssh_file(path, LineEnding::LF)
            .with_context(|| format!("writing host key {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let pubkey = key.public_key().to_openssh()?;
        std::fs::write(path.with_extension("pub"), format!("{pubkey}\n"))?;
        tracing::info!(path = %path.display(), algorithm = %alg, "generated host key");
        return Ok(key);
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "host key is readable by others; chmod 600 it");
    }
    russh::keys::load_secret_key(path, None)
        .with_context(|| format!("ssh.host_key: cannot load {}", path.display()))
}

pub fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<PrivateKey>> {
    paths.iter().map(|p| load_or_generate(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_0600() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k/ssh_host_ed25519_key");
        let a = load_or_generate(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = load_or_generate(&p).unwrap();
        assert_eq!(a.public_key().key_data(), b.public_key().key_data());
        let e = load_or_generate(&t.path().join("ssh_host_ecdsa_key")).unwrap();
        assert!(matches!(e.algorithm(), Algorithm::Ecdsa { .. }));
    }
}
