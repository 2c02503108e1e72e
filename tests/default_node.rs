//! The README's first command: `ingestd run` with no configuration starts a
//! working node on 127.0.0.1:2222 with its data under ./ingestd-data, generates
//! an ed25519 host key (0600) on first start and accepts the invoking user's own
//! keys (~/.ssh/authorized_keys and ~/.ssh/*.pub); public keys only.
//!
//! Uses the fixed default ports (2222, 9122): it is the only test that does, and
//! it runs in a network namespace of its own (it re-executes itself under
//! `unshare --net`), so a quick-start node running beside the suite on the same
//! ports does not disturb it.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new(require_tool("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

fn ssh_opts(key: &Path) -> Vec<String> {
    [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([key.to_string_lossy().into_owned()])
    .collect()
}

/// Set in the child that runs inside the private network namespace.
const IN_NETNS: &str = "INGESTD_TEST_IN_NETNS";

#[test]
fn embedded_default_node_accepts_the_users_own_keys() {
    if std::env::var_os(IN_NETNS).is_none() {
        let name = "embedded_default_node_accepts_the_users_own_keys";
        require_tool("ip");
        let out = Command::new(require_tool("unshare"))
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(IN_NETNS, "1")
            .output()
            .unwrap();
        let text = show(&out);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "the test in its own network namespace failed:\n{text}"
        );
        return;
    }
    require_tool("scp");
    let home = tempfile::tempdir().unwrap();
    let ssh_dir = home.path().join(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    // one key known only as ~/.ssh/*.pub, one only through authorized_keys
    let k1 = ssh_dir.join("id_ed25519");
    keygen(&k1);
    let k2 = home.path().join("other_key");
    keygen(&k2);
    std::fs::copy(k2.with_extension("pub"), ssh_dir.join("authorized_keys")).unwrap();
    let stranger = home.path().join("stranger_key");
    keygen(&stranger);

    let log = std::fs::File::create(home.path().join("log")).unwrap();
    let _d = Daemon(
        Command::new(env!("CARGO_BIN_EXE_ingestd"))
            .arg("run")
            .current_dir(home.path())
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect("127.0.0.1:2222").is_err() {
        assert!(
            Instant::now() < deadline,
            "the default node did not listen on 127.0.0.1:2222:\n{}",
            std::fs::read_to_string(home.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let hk = home.path().join("ingestd-data/ssh_host_ed25519_key");
    let mode = std::fs::metadata(&hk).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "generated host key mode");
    assert!(std::fs::read_to_string(&hk)
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));

    let f = home.path().join("hello.bin");
    let content = random_file(&f, 300_000);
    for key in [&k1, &k2] {
        let out = Command::new("timeout")
            .args(["60", "scp", "-O", "-P", "2222"])
            .args(ssh_opts(key))
            .arg(&f)
            .arg("me@localhost:")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README's scp line failed: {}",
            show(&out)
        );
    }
    // both landed, byte for byte (in the spool, the archive or the outgoing dir)
    let mut found = 0;
    for dir in [
        "ingestd-data/spool",
        "ingestd-data/archive",
        "ingestd-data/outgoing",
    ] {
        for e in walk(&home.path().join(dir)) {
            let name = e.file_name().unwrap().to_string_lossy().into_owned();
            if (name == "data" || name.ends_with("hello.bin"))
                && std::fs::read(&e).unwrap() == content
            {
                found += 1;
            }
        }
    }
    assert!(
        found >= 2,
        "both uploads must be stored intact (found {found} copies)"
    );

    // a key that is not listed, and password authentication, are refused
    let out = Command::new("timeout")
        .args(["60", "scp", "-O", "-P", "2222"])
        .args(ssh_opts(&stranger))
        .arg(&f)
        .arg("me@localhost:")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "unknown key accepted: {}",
        show(&out)
    );
    let out = Command::new("timeout")
        .args(["60", "ssh", "-p", "2222", "-o", "BatchMode=yes", "-o"])
        .arg("PreferredAuthentications=password,keyboard-interactive")
        .args(ssh_opts(&k1))
        .args(["me@localhost", "true"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "password auth must be refused: {}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission denied (publickey)"),
        "only publickey may be offered: {}",
        show(&out)
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
