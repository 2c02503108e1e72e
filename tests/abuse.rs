//! Hostile peers against the real daemon: pre-auth floods, silent and stalled
//! connections, session and channel limits, failed logins (logged, banned,
//! matched by the shipped fail2ban filter), trickling uploads, unsupported
//! requests that want a reply, and SHA-1 RSA signatures. After each attack a
//! good sender still gets in.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn good_upload(node: &Node, name: &str) -> Duration {
    let f = node.src.join(name);
    random_file(&f, 20_000);
    let t0 = Instant::now();
    let out = node.scp_o(&[name, &node.target("alice", "")]);
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "a good sender is served: {}\nlog:\n{}",
        show(&out),
        node.log()
    );
    took
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn idle_preauth_flood_does_not_lock_senders_out() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "max_sessions = 4\n".into(),
        ..NodeOpts::held()
    });
    let rss0 = node.rss_kib();
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", node.port)) {
            held.push(s);
        }
    }
    assert_eq!(
        held.len(),
        500,
        "the kernel accepted the flood's connections"
    );
    std::thread::sleep(Duration::from_millis(500));
    let took = good_upload(&node, "during-flood.bin");
    assert!(
        took < Duration::from_secs(2),
        "a good sender got in within 2 s during a 500-connection pre-auth flood: {took:?}"
    );
    // At most max_startups (64) of them are still open; the rest were closed.
    let mut open = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 256];
        let mut alive = true;
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    alive = false;
                    break;
                }
                Ok(_) => continue, // the server's banner
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    alive = false;
                    break;
                }
                Err(_) => break, // timed out: still open
            }
        }
        open += alive as usize;
    }
    assert!(
        open <= 64,
        "{open} pre-auth connections still open (max_startups 64)"
    );
    let rss1 = node.rss_kib();
    eprintln!("pre-auth flood: 500 held, {open} still open, good sender in {took:?}, RSS {rss0} -> {rss1} KiB");
    assert!(rss1 < rss0 + 64 * 1024, "RSS bounded: {rss0} -> {rss1} KiB");
    assert!(
        node.log().contains("ssh.max_startups"),
        "the flood is logged"
    );
}

#[test]
fn silent_and_stalled_connections_are_closed_at_login_grace_time() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "login_grace_time = \"2s\"\n".into(),
        ..NodeOpts::held()
    });
    let silent = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let mut stalled = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    stalled.write_all(b"SSH-2.0-stalled_1.0\r\n").unwrap();
    let t0 = Instant::now();
    for (name, mut s) in [("silent", silent), ("stalled in key exchange", stalled)] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{name} connection still open after {:?}: {e}", t0.elapsed()),
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "{name} closed at about 2 s: {:?}",
            t0.elapsed()
        );
    }
    let log = node.log();
    assert!(
        count(&log, "not authenticated within ssh.login_grace_time") >= 2,
        "both logged:\n{log}"
    );
    good_upload(&node, "after-grace.bin");
}

#[test]
fn session_limits_count_authenticated_connections_per_node_and_per_address() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "max_sessions_per_ip = 2\n".into(),
        ..NodeOpts::held()
    });
    // Two authenticated idle connections (ssh -N) from 127.0.0.1.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut argv: Vec<String> = vec!["-N".into(), "-p".into(), node.port.to_string()];
        argv.extend(node.ssh_opts());
        argv.push("alice@127.0.0.1".into());
        idle.push(
            Command::new(require_tool("ssh"))
                .args(&argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let ok = poll(Duration::from_secs(20), || {
        (count(&node.log(), "authenticated") >= 2).then_some(())
    });
    assert!(ok.is_some(), "two logins; log:\n{}", node.log());
    let f = node.src.join("third.bin");
    random_file(&f, 1000);
    let out = node.scp_o(&["third.bin", &node.target("alice", "")]);
    assert!(
        !out.status.success(),
        "third session from one address refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("too many sessions from your address (limit 2)"),
        "the sender is told why: {}",
        show(&out)
    );
    for mut c in idle {
        let _ = c.kill();
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    good_upload(&node, "after-limit.bin");
}

/// paramiko logs in as `user` with `key`; prints AUTH-FAILED when refused.
fn paramiko_user(node: &Node, key: &Path, user: &str) -> Output {
    require_tool(PYTHON);
    let script = "import sys, paramiko\n\
         t = paramiko.Transport((sys.argv[1], int(sys.argv[2])))\n\
         try:\n    t.connect(username=sys.argv[3], pkey=paramiko.Ed25519Key.from_private_key_file(sys.argv[4]))\n    print('AUTH-OK')\n\
         except paramiko.AuthenticationException:\n    print('AUTH-FAILED')\n";
    Command::new("timeout")
        .args(["60", PYTHON, "-c", script, "127.0.0.1"])
        .arg(node.port.to_string())
        .arg(user)
        .arg(key)
        .output()
        .unwrap()
}

/// Run a paramiko script against the node: argv = host port user key.
fn paramiko(node: &Node, key: &Path, body: &str) -> Output {
    require_tool(PYTHON);
    let script = format!(
        "import sys, socket, paramiko\n\
         host, port, user, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]\n\
         t = paramiko.Transport((host, port))\n\
         t.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(key))\n\
         {body}\n"
    );
    let out = Command::new("timeout")
        .args(["60", PYTHON, "-c", &script, "127.0.0.1"])
        .arg(node.port.to_string())
        .arg("alice")
        .arg(key)
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "paramiko hung: {}",
        show(&out)
    );
    out
}

#[test]
fn channels_per_connection_are_bounded_and_x11_requests_are_answered() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "max_channels = 3\n".into(),
        ..NodeOpts::held()
    });
    let out = paramiko(
        &node,
        &node.key,
        "chans = [t.open_session() for _ in range(3)]\n\
         try:\n    t.open_session(timeout=10)\n    print('FOURTH-OPENED')\n\
         except paramiko.ChannelException as e:\n    print('REFUSED', e.code, e.text)\n\
         c = chans[0]\n\
         try:\n    c.request_x11(auth_protocol='MIT-MAGIC-COOKIE-1', auth_cookie='00'*16)\n    print('X11-ACCEPTED')\n\
         except paramiko.SSHException as e:\n    print('X11-REFUSED', e)\n\
         t.close()",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("REFUSED 4"),
        "the fourth channel is refused (resource shortage): {}",
        show(&out)
    );
    assert!(
        node.log()
            .contains("too many channels on this connection (limit 3)"),
        "and the reason is logged:\n{}",
        node.log()
    );
    assert!(
        text.contains("X11-REFUSED"),
        "x11-req with want-reply is answered (refused), not left hanging: {}",
        show(&out)
    );
    good_upload(&node, "after-channels.bin");
}

#[test]
fn failed_logins_are_logged_banned_and_matched_by_the_fail2ban_filter() {
    let node = Node::start_opts(NodeOpts {
        extra: "[defender]\nmax_failures = 3\nwindow = \"1m\"\nban_time = \"4s\"\nallow = []\n"
            .into(),
        ..NodeOpts::held()
    });
    let stranger = node.gen_key("stranger");
    let f = node.src.join("x.bin");
    random_file(&f, 100);
    // A login name holding a newline and a forged field (OpenSSH's client refuses
    // to send such a name; paramiko sends it).
    let out = paramiko_user(&node, &stranger, "mallory\nforged remote_ip=6.6.6.6");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AUTH-FAILED"),
        "{}",
        show(&out)
    );
    for _ in 0..2 {
        let out = node.scp_o_with_key(&stranger, &["x.bin", &node.target("mallory", "")]);
        assert!(!out.status.success());
    }
    let log = node.log();
    let fails: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ingestd::auth: authentication failed"))
        .collect();
    assert!(fails.len() >= 3, "each failure logged:\n{log}");
    let fp = String::from_utf8(
        Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(stranger.with_extension("pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    for l in &fails {
        assert!(l.contains("remote_ip=127.0.0.1 remote_port="), "{l}");
        assert!(l.contains("key_type=ssh-ed25519"), "{l}");
        assert!(l.contains(&format!("fingerprint={fp}")), "{l}");
        assert!(l.contains("reason=\"key not in authorized_keys\""), "{l}");
    }
    assert!(
        fails
            .iter()
            .any(|l| l.contains(r#"user="mallory\nforged remote_ip=6.6.6.6""#)),
        "login name quoted and escaped on its line:\n{log}"
    );
    assert!(
        !log.contains("\nforged"),
        "no raw newline from a login name"
    );
    assert!(log.contains("address banned"), "the ban is logged:\n{log}");
    // Banned: even the good key is refused at connect...
    let out = node.scp_o(&["x.bin", &node.target("alice", "")]);
    assert!(!out.status.success(), "banned address refused at connect");
    // ...until the ban lifts by itself.
    std::thread::sleep(Duration::from_secs(5));
    good_upload(&node, "after-ban.bin");

    // The shipped fail2ban filter matches exactly the failure lines, with the address.
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fail2ban/filter.d/ingestd.conf");
    let out = Command::new(require_tool("fail2ban-regex"))
        .arg(&node.log_path)
        .arg(&filter)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "fail2ban-regex: {}", show(&out));
    let matched = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        matched.contains(&format!("{} matched", fails.len())),
        "fail2ban matches every failure line ({}): {matched}\n{text}",
        fails.len()
    );
    assert!(text.contains("127.0.0.1"), "{text}");
}

#[test]
fn auth_failure_reasons_name_the_cause() {
    let node = Node::start_opts(NodeOpts::held());
    // A directory where a per-user authorized_keys file should be: an OS error.
    let d = node.dir.path();
    std::fs::create_dir_all(d.join("keys/bob")).unwrap();
    let pubkey = std::fs::read_to_string(node.key.with_extension("pub")).unwrap();
    std::fs::write(
        d.join("authorized_keys"),
        format!("garbage line here\nfrom=\"10.9.9.9\" {pubkey}"),
    )
    .unwrap();
    let f = node.src.join("y.bin");
    random_file(&f, 100);
    let out = node.scp_o(&["y.bin", &node.target("alice", "")]);
    assert!(!out.status.success(), "from= mismatch refuses");
    let log = node.log();
    assert!(
        log.contains("does not allow this address"),
        "from= mismatch named:\n{log}"
    );
    assert!(
        log.contains("authorized_keys entry cannot be parsed"),
        "garbled line logged:\n{log}"
    );
}

#[test]
fn trickling_upload_is_ended_with_a_message() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "inactivity_timeout = \"2s\"\nmin_rate = \"1KiB/s\"\n".into(),
        ..NodeOpts::held()
    });
    let mut s = node.ssh_spawn("alice", "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(b"C0644 100000 slow.bin\n"));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    let t0 = Instant::now();
    let mut ended = false;
    for _ in 0..40 {
        if !s.write(b"x") {
            ended = true;
            break;
        }
        if s.wait_timeout(Duration::from_millis(500)).is_some() {
            ended = true;
            break;
        }
    }
    assert!(ended, "a 2 B/s upload is ended; log:\n{}", node.log());
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let _ = s.wait_timeout(Duration::from_secs(10));
    let told = poll(Duration::from_secs(5), || {
        s.stderr().contains("upload too slow").then_some(())
    });
    assert!(told.is_some(), "the sender is told why: {}", s.stderr());
    assert!(node.log().contains("upload too slow"), "logged");
    assert!(node.landed().is_empty(), "nothing landed");
    good_upload(&node, "after-trickle.bin");
}

#[test]
fn sha1_rsa_signatures_are_refused_by_default() {
    let rsa = |node: &Node| {
        let key = node.dir.path().join("id_rsa");
        if !key.exists() {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
                .arg(&key)
                .status()
                .unwrap();
            assert!(st.success());
            let mut ak = std::fs::read_to_string(node.dir.path().join("authorized_keys")).unwrap();
            ak.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
            std::fs::write(node.dir.path().join("authorized_keys"), ak).unwrap();
        }
        let mut argv: Vec<String> = vec![
            "-o".into(),
            "PubkeyAcceptedAlgorithms=ssh-rsa".into(),
            "-p".into(),
            node.port.to_string(),
        ];
        argv.extend(node.ssh_opts_with_key(&key));
        argv.extend(["alice@127.0.0.1".into(), "scp -t .".into()]);
        Command::new("timeout")
            .arg("60")
            .arg(require_tool("ssh"))
            .args(&argv)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let node = Node::start_opts(NodeOpts::held());
    let out = rsa(&node);
    assert!(
        !out.status.success(),
        "ssh-rsa (SHA-1) refused: {}",
        show(&out)
    );
    assert!(
        node.log()
            .contains("ssh-rsa (SHA-1) signatures are refused"),
        "reason logged:\n{}",
        node.log()
    );
    let node2 = Node::start_opts(NodeOpts {
        ssh_extra: "allow_sha1_rsa = true\n".into(),
        ..NodeOpts::held()
    });
    let out = rsa(&node2);
    // The sink sends its first \0 and waits; EOF from /dev/null ends it cleanly.
    assert!(
        out.status.success(),
        "with allow_sha1_rsa the same client logs in: {}\n{}",
        show(&out),
        node2.log()
    );
}

#[test]
fn the_pipeline_follows_no_symlink_planted_in_the_spool_and_copies_are_private() {
    let node = Node::start();
    // A secret only root may read, and a planted entry pointing at it.
    let secret = node.dir.path().join("secret");
    std::fs::write(&secret, b"TOP-SECRET-BYTES").unwrap();
    set_mode(&secret, 0o600);
    let ready = node.state_dir("ready");
    let planted = ready.join("test-node-01JPLANTED000000000000000000");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(&secret, planted.join("data")).unwrap();
    std::fs::write(
        planted.join("record.json"),
        format!(
            r#"{{"id":"test-node-01JPLANTED000000000000000000","node":"test-node","user":"x","path":"stolen","size":16,"mode":420,"mtime":null,"atime":null,"blake3":"{}","remote_addr":"x","received_at":"2026-01-01T00:00:00.000Z","protocol":"scp"}}"#,
            blake3_hex(b"TOP-SECRET-BYTES")
        ),
    )
    .unwrap();
    // A directory symlink too.
    std::os::unix::fs::symlink(
        node.dir.path(),
        ready.join("test-node-01JPLANTEDDIR0000000000000000"),
    )
    .unwrap();
    // And a normal upload, which must be delivered with a private mode.
    good_upload(&node, "normal.bin");
    let ok = poll(Duration::from_secs(30), || {
        std::fs::read_dir(&node.outgoing)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with("__normal.bin"))
    });
    let fwd = ok.expect("the normal upload is forwarded");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fwd.metadata().unwrap().permissions().mode() & 0o777,
        0o600,
        "forwarded copy private"
    );
    std::thread::sleep(Duration::from_secs(2));
    for dir in [&node.archive, &node.outgoing] {
        let out = Command::new("grep")
            .args(["-rl", "TOP-SECRET"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "the secret was copied out: {}",
            show(&out)
        );
    }
    let archived: Vec<_> = walk(&node.archive);
    assert!(!archived.is_empty());
    for p in archived {
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "archive file {p:?} private");
    }
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Floods with the node's memory and open files measured before, at the peak and
// after (VmHWM is reset through /proc/<pid>/clear_refs before each flood).

struct Mem {
    rss: u64,
    fds: usize,
}

fn mem(node: &Node) -> Mem {
    let pid = node.pid().unwrap();
    Mem {
        rss: node.rss_kib(),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
    }
}

fn reset_peak(node: &Node) {
    std::fs::write(format!("/proc/{}/clear_refs", node.pid().unwrap()), "5").unwrap();
}

/// A flood held open by tests/abuse/flood.py until dropped.
struct Flood {
    child: std::process::Child,
    line: String,
}

impl Flood {
    fn start(node: &Node, args: &[&str]) -> Flood {
        require_tool(PYTHON);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/abuse/flood.py");
        let mut child = Command::new("timeout")
            .args(["300", PYTHON])
            .arg(script)
            .args(["127.0.0.1", &node.port.to_string(), "alice"])
            .arg(&node.key)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(
            line.starts_with("HOLDING"),
            "flood {args:?} did not get in place: {line:?}\n{}",
            node.log()
        );
        Flood { child, line }
    }

    fn figure(&self, key: &str) -> u64 {
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {:?}", self.line))
    }

    fn end(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The stated bound on the node's memory under any one flood below (the node
/// itself starts at about 20 MiB): see `docs/limits.md`.
const FLOOD_RSS_BOUND_KIB: u64 = 256 * 1024;

fn check_flood(node: &Node, what: &str, before: &Mem, during_good: Duration) {
    let peak = node.peak_kib();
    let after_start = Instant::now();
    // Give the node a moment to release what the attacker held.
    let settled = poll(Duration::from_secs(20), || {
        let m = mem(node);
        (m.fds <= before.fds + 8).then_some(m)
    });
    let after = settled.unwrap_or_else(|| mem(node));
    let good_after = good_upload(node, &format!("after-{}.bin", unique_token()));
    eprintln!(
        "{what}: RSS before {} KiB, peak {peak} KiB, after {} KiB; open files before {}, after {}; good sender during {during_good:?}, after {good_after:?} (settled in {:?})",
        before.rss, after.rss, before.fds, after.fds, after_start.elapsed()
    );
    assert!(
        peak < FLOOD_RSS_BOUND_KIB,
        "{what}: peak RSS {peak} KiB over {FLOOD_RSS_BOUND_KIB} KiB"
    );
    assert!(
        after.fds <= before.fds + 8,
        "{what}: open files not returned: {} -> {}",
        before.fds,
        after.fds
    );
    assert!(
        during_good < Duration::from_secs(2) && good_after < Duration::from_secs(2),
        "{what}: a good sender waited {during_good:?} during, {good_after:?} after"
    );
}

#[test]
fn channel_flood_on_one_connection_is_bounded_and_holds_no_thread() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "max_sessions = 4\n".into(),
        ..NodeOpts::held()
    });
    good_upload(&node, "warm.bin");
    let before = mem(&node);
    reset_peak(&node);
    let flood = Flood::start(&node, &["channels", "420"]);
    assert_eq!(
        flood.figure("opened"),
        10,
        "max_channels (10) opened: {}",
        flood.line
    );
    assert_eq!(flood.figure("refused"), 410, "{}", flood.line);
    assert!(
        node.log()
            .contains("too many channels on this connection (limit 10)"),
        "the refusal says why"
    );
    let during = good_upload(&node, "during-channels.bin");
    flood.end();
    check_flood(&node, "420-channel flood", &before, during);
}

#[test]
fn open_file_flood_is_refused_per_connection_and_node_and_released() {
    let node = Node::start_opts(NodeOpts {
        ssh_extra: "max_open_files = 200\nmax_open_files_per_connection = 64\n".into(),
        ..NodeOpts::held()
    });
    good_upload(&node, "warm.bin");
    let before = mem(&node);
    reset_peak(&node);
    // 2 connections x (10 SFTP channels x 32 handles): each connection stops at 64.
    let a = Flood::start(&node, &["handles", "2", "32"]);
    assert_eq!(a.figure("opened"), 128, "{}", a.line);
    assert!(
        a.line
            .contains("too many files open on this connection (limit 64)"),
        "{}",
        a.line
    );
    let during = good_upload(&node, "during-handles.bin");
    // 2 more connections: the node's bound (200) is reached, with its own reason.
    let b = Flood::start(&node, &["handles", "2", "32"]);
    assert_eq!(b.figure("opened"), 72, "{}", b.line);
    assert!(
        b.line
            .contains("node busy: too many uploads in progress (limit 200)"),
        "{}",
        b.line
    );
    let m = mem(&node);
    assert!(
        m.fds >= before.fds + 200,
        "the held uploads hold files: {} -> {}",
        before.fds,
        m.fds
    );
    let metrics = node.http_get("/metrics");
    assert!(metrics.contains("ingestd_uploads_open 200"), "{metrics}");
    a.end();
    b.end();
    check_flood(
        &node,
        "open-file flood (4 connections x 10 channels x 32 handles)",
        &before,
        during,
    );
    let metrics = node.http_get("/metrics");
    assert!(metrics.contains("ingestd_uploads_open 0"), "{metrics}");
}

#[test]
fn mkdir_flood_is_capped_in_memory() {
    let node = Node::start_opts(NodeOpts::held());
    good_upload(&node, "warm.bin");
    let before = mem(&node);
    reset_peak(&node);
    let flood = Flood::start(&node, &["mkdir", "20000", "4000"]);
    let (made, refused) = (flood.figure("made"), flood.figure("refused"));
    eprintln!("mkdir flood: made {made}, refused {refused}");
    assert!(
        made < 1100 && made + refused == 20000,
        "4 MiB per user: about 1,000 directories of 4,000 bytes: {}",
        flood.line
    );
    assert!(
        flood.line.contains("too many directories remembered"),
        "{}",
        flood.line
    );
    let during = good_upload(&node, "during-mkdir.bin");
    flood.end();
    check_flood(&node, "20,000 MKDIRs of 4,000-byte paths", &before, during);
    let grew = mem(&node).rss.saturating_sub(before.rss);
    assert!(grew < 32 * 1024, "RSS kept after the flood: {grew} KiB");
}

#[test]
fn scp_directory_nesting_flood_is_refused_early() {
    let node = Node::start_opts(NodeOpts::held());
    good_upload(&node, "warm.bin");
    let before = mem(&node);
    reset_peak(&node);
    let mut input = format!("D0755 0 {}\n", "n".repeat(255))
        .repeat(4000)
        .into_bytes();
    input.extend_from_slice(b"C0644 5 evil\nhello\0");
    let out = node.ssh_stdin("alice", "scp -r -t .", &input);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("too long") || text.contains("too deep"),
        "{}",
        show(&out)
    );
    let during = good_upload(&node, "during-nesting.bin");
    check_flood(
        &node,
        "SCP D nesting, 4,000 levels of 255-byte names",
        &before,
        during,
    );
}
