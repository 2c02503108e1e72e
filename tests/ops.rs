//! Running a node under systemd and Prometheus: sd_notify over a real
//! `NOTIFY_SOCKET` (READY=1 once the ports listen, STATUS=, WATCHDOG=1 pings,
//! STOPPING=1 on SIGTERM); SIGHUP reloads what can change without dropping a
//! session and names what needs a restart; the shipped unit passes
//! `systemd-analyze verify`; the shipped alert rules pass `promtool check rules`
//! and the dashboard uses only metrics the node exports.

mod common;

use common::*;
use std::fs;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ingestd");

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Receive datagrams until one contains `what` (or `within` passes); returns all
/// messages received meanwhile.
fn recv_until(sock: &UnixDatagram, what: &str, within: Duration) -> (bool, Vec<String>) {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = m.lines().any(|l| l == what || l.starts_with(what));
            got.push(m);
            if hit {
                return (true, got);
            }
        }
    }
    (false, got)
}

#[test]
fn sd_notify_ready_after_listening_status_watchdog_and_stopping() {
    let mut node = Node::start();
    node.stop();
    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let log = fs::File::create(node.dir.path().join("notify.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&node.config_path)
        .current_dir(&node.cwd)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    let log = || fs::read_to_string(node.dir.path().join("notify.log")).unwrap_or_default();

    let (ok, msgs) = recv_until(&sock, "READY=1", Duration::from_secs(20));
    assert!(ok, "no READY=1: {msgs:?}\nlog:\n{}", log());
    // READY=1 means listening: both ports accept at once.
    assert!(TcpStream::connect(("127.0.0.1", node.port)).is_ok());
    assert!(TcpStream::connect(("127.0.0.1", node.health_port)).is_ok());

    // Watchdog pings at half of WATCHDOG_USEC (200 ms), and a STATUS= line.
    let t0 = Instant::now();
    let mut pings = 0;
    let mut status = None;
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while t0.elapsed() < Duration::from_secs(2) {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            for l in m.lines() {
                if l == "WATCHDOG=1" {
                    pings += 1;
                } else if let Some(s) = l.strip_prefix("STATUS=") {
                    status = Some(s.to_string());
                }
            }
        }
    }
    assert!((5..=15).contains(&pings), "{pings} watchdog pings in 2 s");
    let status = status.expect("a STATUS= line");
    assert!(
        status.contains("0 sessions") && status.contains("ready 0") && status.contains("healthy"),
        "{status}"
    );

    send_signal(d.0.id(), libc::SIGTERM);
    let (ok, msgs) = recv_until(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(ok, "no STOPPING=1: {msgs:?}");
    let st = poll(Duration::from_secs(20), || d.0.try_wait().unwrap());
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", log());
}

/// Without NOTIFY_SOCKET (a plain `ingestd run`) nothing is sent and nothing breaks:
/// every other test runs that way. Without WATCHDOG_USEC no pings are sent.
#[test]
fn no_watchdog_pings_unless_asked() {
    let mut node = Node::start();
    node.stop();
    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&node.config_path)
        .current_dir(&node.cwd)
        .env("NOTIFY_SOCKET", &path)
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _d = Daemon(child);
    let (ok, _) = recv_until(&sock, "READY=1", Duration::from_secs(20));
    assert!(ok);
    let (pinged, msgs) = recv_until(&sock, "WATCHDOG=1", Duration::from_secs(1));
    assert!(!pinged, "{msgs:?}");
}

#[test]
fn sighup_reloads_keys_limits_and_log_level_without_dropping_a_session() {
    let mut node = Node::start_opts(NodeOpts {
        max_sessions: Some(10),
        ssh_extra: "window_size = \"16MiB\"\n".into(),
        ..Default::default()
    });
    // A session with an upload half sent, open across the reload.
    let content = random_bytes(100_000, 11);
    let mut s = node.ssh_spawn("alice", "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(format!("C0644 {} across-reload.bin\n", content.len()).as_bytes()));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(&content[..50_000]));

    // A second sender's key, in a new file added to the authorized_keys list.
    let k2 = node.gen_key("bob_key");
    let ak2 = node.dir.path().join("authorized_keys_2");
    fs::copy(k2.with_extension("pub"), &ak2).unwrap();
    let f = node.src.join("bob.bin");
    random_file(&f, 1000);
    let refused = node.scp_o_with_key(&k2, &[path_str(&f), &node.target("bob", "")]);
    assert!(!refused.status.success(), "bob's key is not listed yet");

    let ak1 = node.dir.path().join("authorized_keys");
    let cfg = fs::read_to_string(&node.config_path).unwrap();
    let old_ak = format!("authorized_keys = \"{}\"", path_str(&ak1));
    assert!(cfg.contains(&old_ak), "{cfg}");
    let cfg = cfg
        .replace(
            &old_ak,
            &format!(
                "authorized_keys = [\"{}\", \"{}\"]",
                path_str(&ak1),
                path_str(&ak2)
            ),
        )
        .replace("max_sessions = 10", "max_sessions = 2")
        .replace("window_size = \"16MiB\"", "window_size = \"32MiB\"")
        + "\n[log]\nlevel = \"info,ingestd=debug\"\n";
    fs::write(&node.config_path, cfg).unwrap();
    assert!(!node.log().contains("step done"), "no debug lines before");
    send_signal(node.pid().unwrap(), libc::SIGHUP);
    let line = poll(Duration::from_secs(10), || {
        node.log()
            .lines()
            .find(|l| l.contains("SIGHUP: configuration reloaded"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no reload line; log:\n{}", node.log()));
    assert!(
        line.contains(r#"changed="log.level, ssh.authorized_keys, ssh.max_sessions""#),
        "{line}"
    );
    assert!(line.contains("needs_restart=ssh.window_size"), "{line}");
    assert!(
        node.log()
            .contains("ssh.window_size changed but takes effect only after a restart"),
        "{}",
        node.log()
    );

    // The session open across the reload finishes its upload.
    assert!(s.write(&content[50_000..]));
    assert!(s.write(b"\0"));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "log:\n{}",
        node.log()
    );
    s.close_stdin();
    assert!(s.wait_timeout(Duration::from_secs(20)).is_some());
    // (It may be forwarded and gone from the spool already: the log line says it landed.)
    let landed_line = node
        .log()
        .lines()
        .find(|l| l.contains(" landed ") && l.contains("path=\"across-reload.bin\""))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("across-reload.bin not landed; log:\n{}", node.log()));
    assert!(
        landed_line.contains(&format!("blake3={}", blake3_hex(&content))),
        "{landed_line}"
    );

    // The new key works now; the debug level shows the pipeline's step lines.
    let ok = node.scp_o_with_key(&k2, &[path_str(&f), &node.target("bob", "")]);
    assert!(ok.status.success(), "{}\n{}", show(&ok), node.log());
    let r = poll(Duration::from_secs(10), || {
        node.log().contains("step done").then_some(())
    });
    assert!(r.is_some(), "no debug line after log.level reload");

    // The new max_sessions is in force: two open sessions are at the limit.
    let idle = |_: u32| {
        Command::new(require_tool("ssh"))
            .arg("-N")
            .args(["-p", &node.port.to_string()])
            .args(node.ssh_opts())
            .arg("alice@127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = Daemon(idle(0));
    let mut b = Daemon(idle(1));
    let r = poll(Duration::from_secs(10), || {
        let o = Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{}/healthz", node.health_port),
            ])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        body.contains("at ssh.max_sessions 2").then_some(())
    });
    assert!(
        r.is_some(),
        "max_sessions not reloaded; log:\n{}",
        node.log()
    );
    let _ = (a.0.kill(), b.0.kill());

    // A broken config on SIGHUP changes nothing; the node keeps serving.
    fs::write(&node.config_path, "[ssh\n").unwrap();
    send_signal(node.pid().unwrap(), libc::SIGHUP);
    let r = poll(Duration::from_secs(10), || {
        node.log()
            .contains("SIGHUP: configuration refused, nothing changed")
            .then_some(())
    });
    assert!(r.is_some(), "log:\n{}", node.log());
    assert!(node.is_running());
    assert_still_serves(&node, "scp");
}

#[test]
fn shipped_unit_passes_systemd_analyze_verify() {
    let analyze = require_tool("systemd-analyze");
    let unit = fs::read_to_string(repo("systemd/ingestd.service")).unwrap();
    for needle in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "ExecReload=",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
    // verify checks that ExecStart= exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestd.service");
    fs::write(&path, unit.replace("/usr/local/bin/ingestd", BIN)).unwrap();
    let o = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        show(&o)
    );
}

#[test]
fn shipped_alert_rules_pass_promtool() {
    let promtool = require_tool("promtool");
    let rules = repo("config/prometheus/ingestd-alerts.yml");
    let o = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(o.status.success(), "promtool check rules:\n{}", show(&o));
    let o = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(repo("config/prometheus/ingestd-alerts.test.yml"))
        .current_dir(repo("config/prometheus"))
        .output()
        .unwrap();
    assert!(o.status.success(), "promtool test rules:\n{}", show(&o));
}

/// Every `ingestd_*` name in the dashboard and the alert rules is one the node
/// exports (so a renamed metric cannot silently blank a panel).
#[test]
fn dashboard_and_rules_use_exported_metrics() {
    let node = Node::start();
    let o = Command::new(require_tool("curl"))
        .args([
            "-s",
            &format!("http://127.0.0.1:{}/metrics", node.health_port),
        ])
        .output()
        .unwrap();
    let exported = String::from_utf8_lossy(&o.stdout).into_owned();
    let dash = fs::read_to_string(repo("config/grafana/ingestd-dashboard.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is JSON");
    assert!(v["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let rules = fs::read_to_string(repo("config/prometheus/ingestd-alerts.yml")).unwrap();
    for text in [&dash, &rules] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("ingestd_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(&format!("# TYPE {base} "))
                    || exported.contains(&format!("# TYPE {name} ")),
                "{name} is not exported by the node"
            );
        }
    }
}

/// A SIGHUP that finds the config file empty, comment-only or cut off at any of
/// several offsets (a config tool that truncates before writing, a reload racing
/// the write) changes nothing: the running authorized_keys stays in force and
/// the sender keeps getting in. The whole file reloads again afterwards. At
/// start-up an empty file is refused, not run on defaults.
#[test]
fn reload_of_a_truncated_config_changes_nothing() {
    let mut node = Node::start_opts(NodeOpts {
        ssh_extra: "max_sessions = 256\n".into(),
        ..NodeOpts::held()
    });
    let full = fs::read_to_string(&node.config_path).unwrap();
    let refused = || {
        node.log()
            .matches("SIGHUP: configuration refused, nothing changed")
            .count()
    };
    // offsets: empty, comment-only, every line boundary, and inside lines
    // (the authorized_keys path, the max_sessions number, a section header)
    let mut cuts: Vec<String> = vec![String::new(), "# being rewritten\n".into()];
    for (i, _) in full.match_indices('\n') {
        cuts.push(full[..i + 1].to_string());
    }
    for needle in [
        "authorized_keys = \"",
        "max_sessions = 25",
        "[spo",
        "[health]\nlis",
    ] {
        let at = full.find(needle).expect(needle) + needle.len();
        cuts.push(full[..at].to_string());
    }
    // (a cut that only loses trailing blank lines is the whole file)
    cuts.retain(|c| c.trim_end() != full.trim_end());
    for (i, cut) in cuts.iter().enumerate() {
        fs::write(&node.config_path, cut).unwrap();
        send_signal(node.pid().unwrap(), libc::SIGHUP);
        let expected = i + 1;
        let r = poll(Duration::from_secs(10), || {
            (refused() >= expected).then_some(())
        });
        assert!(
            r.is_some(),
            "a config cut to {} bytes ({cut:?}) was not refused; log:\n{}",
            cut.len(),
            node.log()
        );
    }
    assert!(
        !node.log().contains("SIGHUP: configuration reloaded"),
        "{}",
        node.log()
    );
    assert!(node.is_running());
    // the configured sender still gets in
    assert_still_serves(&node, "scp");
    // the whole file reloads
    fs::write(&node.config_path, &full).unwrap();
    send_signal(node.pid().unwrap(), libc::SIGHUP);
    let r = poll(Duration::from_secs(10), || {
        node.log()
            .contains("SIGHUP: configuration reloaded")
            .then_some(())
    });
    assert!(r.is_some(), "log:\n{}", node.log());
    let log = node.log();
    assert!(
        log.contains("no longer sets") && log.contains("ssh.authorized_keys"),
        "the refusal names the keys the cut file dropped:\n{log}"
    );
    assert!(log.contains("sets no key"), "{log}");
    eprintln!("{} truncated files refused", cuts.len());

    // start-up: an empty file is refused, with the reason
    let empty = node.src.join("empty.toml");
    fs::write(&empty, "# nothing yet\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(["check-config", "--config"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sets no key"),
        "{}",
        show(&out)
    );
}
