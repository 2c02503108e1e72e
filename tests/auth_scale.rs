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
