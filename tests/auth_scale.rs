//! Authentication at scale and every way it can fail: a large authorized_keys
//! file is parsed once per change (not at every key offer), and every failed
//! authentication leaves a line fail2ban matches, including a client that
//! offers no key at all or only a password / keyboard-interactive.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

/// Run a paramiko script: argv = host port user; `body` uses `t` (a started
/// client Transport) and prints what happened.
fn paramiko(node: &Node, user: &str, body: &str) -> Output {
    require_tool(PYTHON);
    let script = format!(
        "import sys, paramiko\n\
         t = paramiko.Transport((sys.argv[1], int(sys.argv[2])))\n\
         t.start_client(timeout=20)\n\
         user = sys.argv[3]\n\
         try:\n    {body}\n    print('AUTH-OK')\n\
         except paramiko.SSHException as e:\n    print('AUTH-FAILED', type(e).__name__)\n\
         t.close()\n"
    );
    Command::new("timeout")
        .args(["60", PYTHON, "-c", &script, "127.0.0.1"])
        .arg(node.port.to_string())
        .arg(user)
        .output()
        .unwrap()
}

fn fail2ban_matches(node: &Node) -> String {
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fail2ban/filter.d/ingestd.conf");
    let out = Command::new(require_tool("fail2ban-regex"))
        .arg(&node.log_path)
        .arg(&filter)
        .output()
        .unwrap();
    assert!(out.status.success(), "fail2ban-regex: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_failed_authentication_is_logged_counted_and_matched_by_fail2ban() {
    let node = Node::start_opts(NodeOpts {
        extra: "[defender]\nmax_failures = 4\nwindow = \"1m\"\nban_time = \"1m\"\nallow = []\n"
            .into(),
        ..NodeOpts::held()
    });
    // Not failures: a good sender (its client asks "none" first), a director's
    // TCP check (connect, close), a host-key scan (key exchange, no auth).
    let f = node.src.join("good.bin");
    random_file(&f, 1000);
    scp_o_ok(&node, &["good.bin", &node.target("alice", "")]);
    drop(TcpStream::connect(("127.0.0.1", node.port)).unwrap());
    let scan = Command::new(require_tool("ssh-keyscan"))
        .args(["-p", &node.port.to_string(), "-T", "10", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(scan.status.success(), "{}", show(&scan));
    std::thread::sleep(Duration::from_millis(500));
    let log = node.log();
    assert!(!log.contains("[preauth]"), "no failure logged yet:\n{log}");
    assert!(!log.contains("authentication failed"), "{log}");

    // 1. No key at all: the client asks "none", is told "publickey", gives up.
    let out = node.ssh_args(
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
        ],
        "nokey",
        Some("true"),
    );
    assert!(!out.status.success(), "{}", show(&out));
    let line = poll(Duration::from_secs(5), || {
        node.log()
            .lines()
            .find(|l| l.contains("[preauth]"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("the no-key attempt is logged:\n{}", node.log()));
    assert!(
        line.contains(
            "INFO ingestd::auth: connection closed by authenticating user [preauth] remote_ip=127.0.0.1 remote_port="
        ) && line.contains("user=\"nokey\"")
            && line.contains("methods=none"),
        "{line}"
    );

    // 2. A password, never offered (a guesser sends it anyway).
    let out = paramiko(&node, "root", "t.auth_password(user, 'hunter2')");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AUTH-FAILED"),
        "{}",
        show(&out)
    );
    // 3. keyboard-interactive, never offered either.
    let out = paramiko(&node, "admin", "t.auth_interactive(user, lambda *a: ['x'])");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AUTH-FAILED"),
        "{}",
        show(&out)
    );
    let log = node.log();
    let pw: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ingestd::auth: authentication failed"))
        .collect();
    assert_eq!(
        pw.len(),
        2,
        "password and keyboard-interactive logged:\n{log}"
    );
    assert!(
        pw[0].contains("remote_ip=127.0.0.1 remote_port=")
            && pw[0].contains("user=\"root\"")
            && pw[0].contains("method=\"password\""),
        "{}",
        pw[0]
    );
    assert!(
        pw[1].contains("user=\"admin\"") && pw[1].contains("method=\"keyboard-interactive\""),
        "{}",
        pw[1]
    );
    // Those lines already counted: no second [preauth] line for them.
    assert_eq!(log.matches("[preauth]").count(), 1, "{log}");

    // 4. A client that asks "none" and closes: the 4th failure bans.
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.write_all(b"SSH-2.0-probe\r\n").unwrap();
    drop(s); // (no auth request: not counted)
    let out = paramiko(&node, "probe", "t.auth_none(user)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AUTH-FAILED"),
        "{}",
        show(&out)
    );
    poll(Duration::from_secs(5), || {
        node.log().contains("address banned").then_some(())
    })
    .unwrap_or_else(|| panic!("4 failures ban the address:\n{}", node.log()));
    let t0 = Instant::now();
    let out = node.scp_o(&["good.bin", &node.target("alice", "")]);
    assert!(!out.status.success(), "banned: refused at connect");
    assert!(t0.elapsed() < Duration::from_secs(10));

    // fail2ban sees exactly the 4 failures, with the address.
    let log = node.log();
    let failures = log
        .lines()
        .filter(|l| l.contains("authentication failed") || l.contains("[preauth]"))
        .count();
    assert_eq!(failures, 4, "{log}");
    let matched = fail2ban_matches(&node);
    assert!(matched.contains("4 matched"), "{matched}\n{log}");
}

/// Standard base64 (the test builds key lines without a crate).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                o.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// `n` random ssh-ed25519 lines (random 32-byte blobs: ssh-key does not check
/// that they are curve points), about 167 bytes each, as a key-distribution
/// system writes them.
fn many_keys(n: usize) -> String {
    let blobs = random_bytes(32 * n, 17);
    let mut out = String::with_capacity(n * 170);
    for i in 0..n {
        let mut wire = Vec::with_capacity(51);
        wire.extend_from_slice(&11u32.to_be_bytes());
        wire.extend_from_slice(b"ssh-ed25519");
        wire.extend_from_slice(&32u32.to_be_bytes());
        wire.extend_from_slice(&blobs[32 * i..32 * (i + 1)]);
        out.push_str(&format!(
            "ssh-ed25519 {} sender-{i:06}@hosts.example.com distributed 2026-11-30 by keysync (ldap group senders)\n",
            base64(&wire)
        ));
    }
    out
}

/// `ssh -i key alice@node true`, spawned.
fn ssh_spawn_with_key(node: &Node, key: &Path) -> std::process::Child {
    Command::new("/usr/bin/ssh")
        .args(["-p", &node.port.to_string()])
        .args(node.ssh_opts_with_key(key))
        .arg("alice@127.0.0.1")
        .arg("true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn parses(node: &Node) -> usize {
    node.log()
        .lines()
        .filter(|l| l.contains("authorized_keys file parsed"))
        .count()
}

#[test]
fn a_large_authorized_keys_file_is_parsed_once_per_change() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "max_startups = 128\nlogin_grace_time = \"5m\"\n".into(),
        extra: "[defender]\nmax_failures = 100000\n".into(),
        ..NodeOpts::held()
    });
    let keys_file = node.dir.path().join("authorized_keys");
    let own = std::fs::read_to_string(node.key.with_extension("pub")).unwrap();
    let mut text = many_keys(300_000);
    text.push_str(&own); // the worst case for a scan: last
    std::fs::write(&keys_file, &text).unwrap();
    eprintln!(
        "authorized_keys: {} keys, {:.1} MB",
        300_001,
        text.len() as f64 / 1e6
    );
    drop(text);
    std::thread::sleep(Duration::from_millis(1100)); // older than the racy window
    std::fs::write(format!("/proc/{}/clear_refs", node.pid().unwrap()), "5").unwrap();
    let rss0 = node.rss_kib();

    // A known key, 6 logins (the first parses the file).
    let f = node.src.join("k.bin");
    random_file(&f, 100);
    let mut times = Vec::new();
    for _ in 0..6 {
        let t0 = Instant::now();
        scp_o_ok(&node, &["k.bin", &node.target("alice", "")]);
        times.push(t0.elapsed());
    }
    eprintln!(
        "known key, login + 100-byte upload: first {:?}, then {:?}",
        times[0],
        &times[1..]
    );
    let rss_after_logins = node.rss_kib();

    // 64 concurrent offers of a key that is not in the file.
    let stranger = node.gen_key("stranger");
    let t0 = Instant::now();
    let kids: Vec<_> = (0..64)
        .map(|_| ssh_spawn_with_key(&node, &stranger))
        .collect();
    for mut k in kids {
        let st = wait_child(&mut k, Duration::from_secs(300));
        assert!(!st.success(), "the unknown key is refused");
    }
    let flood = t0.elapsed();
    let peak = node.peak_kib();
    let refused = node
        .log()
        .matches("reason=\"key not in authorized_keys\"")
        .count();
    eprintln!(
        "64 concurrent unknown-key offers: {flood:?}; RSS before {} MiB, after the logins {} MiB, peak {} MiB, now {} MiB; {refused} refusals logged",
        rss0 / 1024,
        rss_after_logins / 1024,
        peak / 1024,
        node.rss_kib() / 1024
    );
    assert!(refused >= 64, "{refused}");
    assert_eq!(parses(&node), 1, "parsed once for 6 logins and 64 offers");
    assert!(peak < 192 * 1024, "peak RSS {} MiB", peak / 1024);

    // An edit takes effect at the next attempt (one new parse).
    let late = node.gen_key("late");
    let mut fh = std::fs::OpenOptions::new()
        .append(true)
        .open(&keys_file)
        .unwrap();
    fh.write_all(&std::fs::read(late.with_extension("pub")).unwrap())
        .unwrap();
    drop(fh);
    let out = node.scp_o_with_key(&late, &["k.bin", &node.target("alice", "")]);
    assert!(
        out.status.success(),
        "a key added just now works: {}",
        show(&out)
    );
    assert!(parses(&node) >= 2, "the edit is read");
    std::thread::sleep(Duration::from_millis(1100));
    scp_o_ok(&node, &["k.bin", &node.target("alice", "")]);
    let settled = parses(&node);
    scp_o_ok(&node, &["k.bin", &node.target("alice", "")]);
    scp_o_ok(&node, &["k.bin", &node.target("alice", "")]);
    assert_eq!(parses(&node), settled, "kept once the file is settled");
}

fn wait_child(k: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = k.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > timeout {
            let _ = k.kill();
            panic!("client still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
