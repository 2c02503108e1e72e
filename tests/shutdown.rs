//! SIGTERM through the node's one Shutdown: the listeners close at once, idle
//! connections are closed, an upload in flight is allowed to finish (and is
//! acknowledged and landed), and the process exits 0; past `ssh.drain_time` the
//! node exits anyway without acknowledging the unfinished upload.

mod common;

use common::*;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An authenticated connection with no channel (`ssh -N`): idle.
fn idle_connection(node: &Node) -> std::process::Child {
    let mut argv: Vec<String> = vec!["-N".into(), "-p".into(), node.port.to_string()];
    argv.extend(node.ssh_opts());
    argv.push("alice@127.0.0.1".into());
    Command::new(require_tool("ssh"))
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_authenticated(node: &Node, n: usize) {
    let ok = poll(Duration::from_secs(20), || {
        (node.log().matches("authenticated").count() >= n).then_some(())
    });
    assert!(ok.is_some(), "{n} logins expected; log:\n{}", node.log());
}

#[test]
fn sigterm_closes_listeners_and_idle_sessions_and_lets_uploads_finish() {
    let mut node = Node::start_opts(NodeOpts::held());
    let mut idle = idle_connection(&node);
    // An SCP upload in flight: header and half the data sent.
    let content = random_bytes(200_000, 7);
    let mut s = node.ssh_spawn("alice", "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(format!("C0644 {} inflight.bin\n", content.len()).as_bytes()));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(&content[..100_000]));
    wait_authenticated(&node, 2);
    std::thread::sleep(Duration::from_millis(300));

    let t0 = Instant::now();
    send_signal(node.pid().unwrap(), libc::SIGTERM);

    // The listener closes at once: a new connection is refused.
    let refused = poll(Duration::from_secs(2), || {
        TcpStream::connect(("127.0.0.1", node.port))
            .is_err()
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "new connections still accepted after SIGTERM"
    );
    // The idle connection is told to go.
    let idle_gone = poll(Duration::from_secs(3), || idle.try_wait().unwrap());
    assert!(
        idle_gone.is_some(),
        "idle connection still open {:?} after SIGTERM; log:\n{}",
        t0.elapsed(),
        node.log()
    );
    // The upload in flight finishes and is acknowledged.
    assert!(s.write(&content[100_000..]));
    assert!(s.write(b"\0"));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "file acknowledged during the drain; log:\n{}",
        node.log()
    );
    s.close_stdin();
    let st = s.wait_timeout(Duration::from_secs(20));
    assert!(
        matches!(st, Some(st) if st.success()),
        "the upload in flight completes with exit 0: {st:?} {}\nlog:\n{}",
        s.stderr(),
        node.log()
    );
    let st = node.stop();
    assert!(
        st.success(),
        "exit 0 after the drain: {st:?}\n{}",
        node.log()
    );
    let log = node.log();
    assert!(log.contains("stopped"), "log:\n{log}");
    node.restart();
    let landed = node.landed();
    assert_eq!(
        landed.len(),
        1,
        "the upload finished during the drain is kept"
    );
    assert_entry(&landed[0], &content, "inflight.bin", "scp");
}

#[test]
fn past_drain_time_the_node_exits_without_acknowledging() {
    let mut node = Node::start_opts(NodeOpts {
        ssh_extra: "drain_time = \"1s\"".into(),
        ..NodeOpts::held()
    });
    let mut s = node.ssh_spawn("alice", "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(b"C0644 1000000 never-finished.bin\n"));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(&[7u8; 1000]));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let st = node.stop();
    let took = t0.elapsed();
    assert!(st.success(), "exit 0: {st:?}\n{}", node.log());
    assert!(
        took < Duration::from_secs(10),
        "bounded by drain_time (1s): took {took:?}"
    );
    assert!(
        node.log().contains("drain_time"),
        "the log says the drain time ran out:\n{}",
        node.log()
    );
    let st = s.wait_timeout(Duration::from_secs(20));
    assert!(
        matches!(st, Some(st) if !st.success()),
        "the sender sees failure, never success: {st:?}"
    );
    node.restart();
    assert!(node.landed().is_empty(), "nothing unacknowledged lands");
    assert!(node.partial_is_empty(), "partial swept");
}
