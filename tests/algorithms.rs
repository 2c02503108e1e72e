//! SSH algorithm negotiation with the real OpenSSH client: by default it picks
//! chacha20-poly1305 (as with a stock sshd); `[ssh] ciphers` pins the offer (a
//! client offering only other ciphers is refused, one offering the pinned one
//! works); `check-config` rejects unknown algorithm names, naming the key.

mod common;

use common::*;
use std::process::{Command, Stdio};

const USER: &str = "alice";

/// The negotiated client->server cipher from `ssh -v` output.
fn negotiated_cipher(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.contains("kex: client->server cipher:"))
        .and_then(|l| l.split("cipher: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

fn upload(node: &Node, extra: &[&str], name: &str) -> std::process::Output {
    let f = node.src.join(name);
    random_file(&f, 64 << 10);
    let mut args: Vec<&str> = extra.to_vec();
    let target = node.target(USER, "");
    args.push(path_str(&f));
    args.push(&target);
    node.scp_o(&args)
}

#[test]
fn default_openssh_client_negotiates_chacha20() {
    let node = held();
    // `-v` after the harness's LogLevel=ERROR raises the level to debug1.
    let out = node.ssh_args(&["-v"], USER, Some("scp -t ."));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        negotiated_cipher(&err).as_deref(),
        Some("chacha20-poly1305@openssh.com"),
        "{}",
        show(&out)
    );
    // and an upload with the default negotiation lands
    let out = upload(&node, &[], "default.bin");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(node.landed().len(), 1);
}

#[test]
fn every_default_cipher_works_when_forced() {
    let node = held();
    for (i, c) in config_list("SSH_CIPHERS").iter().enumerate() {
        let out = upload(&node, &["-c", c], &format!("f{i}.bin"));
        assert!(out.status.success(), "cipher {c}: {}", show(&out));
    }
}

/// The cipher names of the built-in default list, read from the source (the test
/// binary cannot link the daemon's crate internals).
fn config_list(name: &str) -> Vec<String> {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/mod.rs")).unwrap();
    let start = src
        .find(&format!("pub const {name}: &[&str] = &["))
        .expect("list in config");
    let body = &src[start..];
    let body = &body[body.find('[').unwrap() + 6..body.find("];").unwrap()];
    let v: Vec<String> = body
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(v.len() >= 5, "{v:?}");
    v
}

#[test]
fn pinned_ciphers_are_honoured() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "ciphers = [\"aes256-gcm@openssh.com\"]\n\
                    kex = [\"curve25519-sha256\"]\n\
                    macs = [\"hmac-sha2-256-etm@openssh.com\"]\n\
                    host_key_algorithms = [\"ssh-ed25519\"]\n"
            .into(),
        ..NodeOpts::held()
    });
    // a client offering only other ciphers is refused at key exchange: it never
    // gets to authentication
    let out = upload(
        &node,
        &["-v", "-c", "chacha20-poly1305@openssh.com,aes128-ctr"],
        "no.bin",
    );
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SSH2_MSG_KEXINIT sent"), "{}", show(&out));
    assert!(negotiated_cipher(&err).is_none(), "{}", show(&out));
    assert!(!err.contains("Authenticated to"), "{}", show(&out));
    assert!(node.landed().is_empty());
    // the default client offer includes the pinned one: it is negotiated
    let out = node.ssh_args(&["-v"], USER, Some("scp -t ."));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        negotiated_cipher(&err).as_deref(),
        Some("aes256-gcm@openssh.com"),
        "{}",
        show(&out)
    );
    let out = upload(&node, &["-c", "aes256-gcm@openssh.com"], "yes.bin");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(node.landed().len(), 1);
}

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestd.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(["check-config", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run ingestd check-config")
}

#[test]
fn check_config_rejects_unknown_algorithm_names() {
    for (key, bad, listed) in [
        ("ciphers", "arcfour", "chacha20-poly1305@openssh.com"),
        ("kex", "diffie-hellman-group1-sha1", "curve25519-sha256"),
        ("macs", "hmac-md5", "hmac-sha2-256-etm@openssh.com"),
        ("host_key_algorithms", "ssh-dss", "ssh-ed25519"),
    ] {
        let text =
            format!("node_id = \"n1\"\n[ssh]\nlisten = \"127.0.0.1:2222\"\n{key} = [\"{bad}\"]\n");
        let out = check_config(&text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}: accepted\n{}", show(&out));
        assert!(
            err.contains(&format!("ssh.{key}")) && err.contains(bad) && err.contains(listed),
            "{key}: {}",
            show(&out)
        );
    }
    // an empty list is an error too
    let out = check_config("node_id = \"n1\"\n[ssh]\nciphers = []\n");
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ssh.ciphers"));
    // a valid pin passes check-config's algorithm check
    let out = check_config(
        "node_id = \"n1\"\n[ssh]\nciphers = [\"aes128-ctr\", \"chacha20-poly1305@openssh.com\"]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("ssh.ciphers"), "{}", show(&out));
}
