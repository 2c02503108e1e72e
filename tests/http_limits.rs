//! The health/metrics port is bounded like the SSH port: connections (the
//! oldest idle one makes room, so a director's probe always gets in), idle
//! time and header size; a flood of idle connections leaves nothing behind.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn open_fds(node: &Node) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", node.pid().unwrap()))
        .unwrap()
        .count()
}

/// `/healthz` through curl with a 2 s limit: (body, time taken).
fn healthz(node: &Node) -> (String, Duration) {
    let t0 = Instant::now();
    let out = Command::new(require_tool("curl"))
        .args(["-s", "-m", "2"])
        .arg(format!("http://127.0.0.1:{}/healthz", node.health_port))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t0.elapsed(),
    )
}

#[test]
fn idle_connection_flood_on_the_health_port_is_bounded_and_healthz_still_answers() {
    // The defaults: 256 connections, 10 s idle, 8 KiB headers.
    let node = Node::start();
    assert_eq!(healthz(&node).0, "ok\n");
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, rss0) = (open_fds(&node), node.rss_kib());
    std::fs::write(format!("/proc/{}/clear_refs", node.pid().unwrap()), "5").unwrap();

    // 2,000 idle connections (connect, send nothing), kept open by the client.
    let mut flood = Vec::new();
    let mut probes = Vec::new();
    for i in 0..2000 {
        flood.push(TcpStream::connect(("127.0.0.1", node.health_port)).unwrap());
        if i % 500 == 499 {
            probes.push(healthz(&node));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    probes.push(healthz(&node));
    let (fds_during, peak) = (open_fds(&node), node.peak_kib());
    eprintln!(
        "2,000 idle connections: node fds {fds0} -> {fds_during}, RSS {} KiB -> peak {} KiB; /healthz during: {:?}",
        rss0,
        peak,
        probes.iter().map(|p| p.1).collect::<Vec<_>>()
    );
    for (body, took) in &probes {
        assert_eq!(body, "ok\n", "/healthz answers during the flood");
        assert!(*took < Duration::from_secs(2), "{took:?}");
    }
    assert!(
        fds_during <= fds0 + 256 + 8,
        "connections bounded by health.max_connections: {fds0} -> {fds_during}"
    );
    assert!(peak < rss0 + 16 * 1024, "RSS {rss0} KiB -> peak {peak} KiB");
    assert!(
        node.log().contains("health.max_connections"),
        "the bound is logged:\n{}",
        node.log()
    );

    // Idle connections are closed after idle_timeout, without the client.
    let t0 = Instant::now();
    let left = poll(Duration::from_secs(15), || {
        (open_fds(&node) <= fds0 + 2).then_some(())
    });
    let fds_after = open_fds(&node);
    eprintln!(
        "after idle_timeout (10 s): node fds {fds_after} after {:?}, RSS {} KiB",
        t0.elapsed(),
        node.rss_kib()
    );
    assert!(
        left.is_some(),
        "idle connections closed: {fds0} -> {fds_after}"
    );
    drop(flood);

    // A kept-alive connection that goes quiet is closed too.
    let mut s = TcpStream::connect(("127.0.0.1", node.health_port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "kept-alive connection closed after idle_timeout: {took:?}"
    );

    // A header beyond max_header_size (8 KiB): 431.
    let mut s = TcpStream::connect(("127.0.0.1", node.health_port)).unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let _ = s.write_all(big.as_bytes());
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(healthz(&node).0, "ok\n");
}
