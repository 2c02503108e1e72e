//! The HTTP endpoint the directors and Prometheus use, with real curl: `/healthz`
//! (and its alias `/health`) answers 200 `ok` or 503 with one reason per line;
//! the maintenance file drains the node while it keeps serving; `/metrics` is
//! valid Prometheus text (`promtool check metrics`) and counts what happened.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` with curl: (status code, body).
fn get(node: &Node, path: &str) -> (u16, String) {
    let out = Command::new(require_tool("curl"))
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{}{path}", node.health_port))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {path}: no status code\n{}\nlog:\n{}",
            show(&out),
            node.log()
        )
    });
    (code, body.to_string())
}

/// Wait (at most `within`) until `/healthz` answers `code`; returns the body and
/// how long it took.
fn wait_health(node: &Node, code: u16, within: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    let mut last = (0, String::new());
    let r = poll(within, || {
        last = get(node, "/healthz");
        (last.0 == code).then(|| last.1.clone())
    });
    match r {
        Some(b) => (b, t0.elapsed()),
        None => panic!(
            "/healthz did not answer {code} within {within:?}; last: {last:?}\nlog:\n{}",
            node.log()
        ),
    }
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn maintenance_file_drains_within_2s_while_the_node_keeps_serving() {
    // Held: landed entries stay in spool/ready, where the test looks for them.
    let mut opts = NodeOpts::held();
    let dir = tempfile::tempdir().unwrap();
    let maint = dir.path().join("maintenance");
    opts.extra = format!("maintenance_file = \"{}\"\n", path_str(&maint));
    let node = Node::start_opts(opts);

    assert_eq!(get(&node, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&node, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&node, "/nope").0, 404);

    // A connection that is open when the node is drained, mid-upload.
    let content = random_bytes(100_000, 3);
    let mut s = node.ssh_spawn("alice", "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(format!("C0644 {} during-maintenance.bin\n", content.len()).as_bytes()));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(&content[..50_000]));

    std::fs::write(&maint, b"drain for kernel update\n").unwrap();
    let (body, took) = wait_health(&node, 503, Duration::from_secs(2));
    assert!(
        body.starts_with("maintenance: ") && body.contains(path_str(&maint)),
        "{body:?}"
    );
    assert!(took <= Duration::from_secs(2), "{took:?}");
    assert_eq!(get(&node, "/health").0, 503, "the alias answers the same");

    // The open upload finishes and lands; a new connection is still served (the
    // directors decide who gets new connections, the node serves what it is given).
    assert!(s.write(&content[50_000..]));
    assert!(s.write(b"\0"));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "upload in flight acknowledged during maintenance; log:\n{}",
        node.log()
    );
    s.close_stdin();
    assert!(s.wait_timeout(Duration::from_secs(20)).is_some());
    assert_still_serves(&node, "scp");
    let landed = node.landed();
    assert_entry(
        find_one(&landed, "during-maintenance.bin"),
        &content,
        "during-maintenance.bin",
        "scp",
    );

    std::fs::remove_file(&maint).unwrap();
    let (body, _) = wait_health(&node, 200, Duration::from_secs(2));
    assert_eq!(body, "ok\n");
}

/// Every other reason, with the numbers an operator needs: free space below
/// spool.min_free, sessions at ssh.max_sessions, backlog above health.max_backlog,
/// archive failing for longer than health.archive_failing_for.
#[test]
fn each_failing_check_is_a_line_of_the_503() {
    // Free space and sessions.
    let node = Node::start_opts(NodeOpts {
        min_free: "1000TiB".into(),
        max_sessions: Some(1),
        ..Default::default()
    });
    let (body, _) = wait_health(&node, 503, Duration::from_secs(5));
    assert!(
        body.starts_with("free_space: ") && body.contains("below spool.min_free 1000.0TiB"),
        "{body:?}"
    );
    let mut idle = Command::new(require_tool("ssh"))
        .arg("-N")
        .args(["-p", &node.port.to_string()])
        .args(node.ssh_opts())
        .arg("alice@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = poll(Duration::from_secs(10), || {
        let b = get(&node, "/healthz").1;
        b.contains("sessions: 1 sessions open, at ssh.max_sessions 1")
            .then_some(b)
    });
    assert!(r.is_some(), "no sessions reason; log:\n{}", node.log());
    let _ = idle.kill();
    let _ = idle.wait();
    drop(node);

    // Backlog and archive failing: archiving is held by an outage.
    let node = Node::start_opts(NodeOpts {
        hold_in_ready: true,
        extra: "max_backlog = 1\narchive_failing_for = \"1s\"\n".into(),
        ..Default::default()
    });
    for i in 0..2 {
        let f = node.src.join(format!("b{i}.bin"));
        random_file(&f, 1000);
        scp_o_ok(&node, &[path_str(&f), &node.target("alice", "")]);
    }
    let r = poll(Duration::from_secs(15), || {
        let (code, b) = get(&node, "/healthz");
        (code == 503 && b.contains("backlog: ") && b.contains("archive: ")).then_some(b)
    });
    let body = r.unwrap_or_else(|| {
        panic!(
            "expected backlog and archive reasons; got {:?}\nlog:\n{}",
            get(&node, "/healthz"),
            node.log()
        )
    });
    assert!(
        body.contains("backlog: 2 entries waiting in the pipeline, above health.max_backlog 1"),
        "{body}"
    );
    assert!(
        body.contains("archive: archive failing for")
            && body.contains("health.archive_failing_for 1s"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 2, "{body}");
}

#[test]
fn metrics_are_valid_prometheus_text_and_count_uploads_steps_and_sessions() {
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("13000".into()),
        ..Default::default()
    });
    // A refused upload (over spool.max_file_size).
    let big = node.src.join("big.bin");
    random_file(&big, 20_000);
    assert!(!node
        .scp_o(&[path_str(&big), &node.target("alice", "")])
        .status
        .success());
    let f = node.src.join("m.bin");
    random_file(&f, 12_345);
    scp_o_ok(&node, &[path_str(&f), &node.target("alice", "")]);
    let f2 = node.src.join("s.bin");
    random_file(&f2, 1000);
    let out = node.scp_sftp(&[path_str(&f2), &node.target("alice", "")]);
    assert!(out.status.success(), "{}", show(&out));
    // A refused key.
    let other = node.gen_key("stranger");
    assert!(!node
        .scp_o_with_key(&other, &[path_str(&f2), &node.target("mallory", "")])
        .status
        .success());
    // Wait for the pipeline to forward both (so the step counters moved).
    let r = poll(Duration::from_secs(20), || {
        // Final names only (forwarded() also lists `.ingestd-*.tmp` in flight).
        let done = forwarded(&node)
            .iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .count();
        (done == 2).then_some(())
    });
    assert!(r.is_some(), "not forwarded; log:\n{}", node.log());
    // And for a census after that.
    std::thread::sleep(Duration::from_millis(2500));

    let (code, text) = get(&node, "/metrics");
    assert_eq!(code, 200);
    let promtool = require_tool("promtool");
    let mut p = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut p.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}\n{text}",
        show(&o)
    );

    let m = |l: &str| metric(&text, l).unwrap_or_else(|| panic!("{l} missing:\n{text}"));
    assert_eq!(
        m("ingestd_uploads_total{protocol=\"scp\",outcome=\"landed\"}"),
        1.0
    );
    assert_eq!(
        m("ingestd_uploads_total{protocol=\"sftp\",outcome=\"landed\"}"),
        1.0
    );
    assert_eq!(
        m("ingestd_uploads_total{protocol=\"scp\",outcome=\"refused\"}"),
        1.0
    );
    assert_eq!(
        m("ingestd_upload_bytes_total{protocol=\"scp\",outcome=\"landed\"}"),
        12_345.0
    );
    assert_eq!(
        m("ingestd_upload_duration_seconds_count{protocol=\"scp\"}"),
        1.0
    );
    assert!(m("ingestd_auth_failures_total{reason=\"unknown_key\"}") >= 1.0);
    assert_eq!(m("ingestd_sessions{state=\"authenticated\"}"), 0.0);
    assert_eq!(m("ingestd_sessions{state=\"unauthenticated\"}"), 0.0);
    for step in ["archive", "forward"] {
        assert_eq!(
            m(&format!("ingestd_step_attempts_total{{step=\"{step}\"}}")),
            2.0
        );
        assert_eq!(
            m(&format!(
                "ingestd_step_duration_seconds_count{{step=\"{step}\"}}"
            )),
            2.0
        );
    }
    for stage in ["ready", "archived", "processed", "quarantine"] {
        assert_eq!(m(&format!("ingestd_spool_files{{stage=\"{stage}\"}}")), 0.0);
    }
    assert!(m("ingestd_spool_free_bytes") > 0.0);
    assert_eq!(m("ingestd_health_failing{check=\"maintenance\"}"), 0.0);

    // Prometheus asks for OpenMetrics and gets it.
    let out = Command::new(require_tool("curl"))
        .args([
            "-s",
            "-i",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5",
        ])
        .arg(format!("http://127.0.0.1:{}/metrics", node.health_port))
        .output()
        .unwrap();
    let om = String::from_utf8_lossy(&out.stdout);
    assert!(
        om.contains("content-type: application/openmetrics-text")
            && om.trim_end().ends_with("# EOF"),
        "{om}"
    );
}

/// Sessions are counted unauthenticated until they log in.
#[test]
fn sessions_gauge_tracks_authenticated_and_unauthenticated_connections() {
    let node = Node::start();
    // An unauthenticated connection: TCP plus the SSH banner, no login.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    std::io::Write::write_all(&mut raw, b"SSH-2.0-test\r\n").unwrap();
    let mut idle = Command::new(require_tool("ssh"))
        .arg("-N")
        .args(["-p", &node.port.to_string()])
        .args(node.ssh_opts())
        .arg("alice@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = poll(Duration::from_secs(10), || {
        let t = get(&node, "/metrics").1;
        (metric(&t, "ingestd_sessions{state=\"authenticated\"}") == Some(1.0)
            && metric(&t, "ingestd_sessions{state=\"unauthenticated\"}") == Some(1.0))
        .then_some(())
    });
    assert!(
        r.is_some(),
        "{}\nlog:\n{}",
        get(&node, "/metrics").1,
        node.log()
    );
    let _ = idle.kill();
    let _ = idle.wait();
    drop(raw);
    let r = poll(Duration::from_secs(10), || {
        let t = get(&node, "/metrics").1;
        (metric(&t, "ingestd_sessions{state=\"authenticated\"}") == Some(0.0)
            && metric(&t, "ingestd_sessions{state=\"unauthenticated\"}") == Some(0.0))
        .then_some(())
    });
    assert!(r.is_some(), "{}", get(&node, "/metrics").1);
}
