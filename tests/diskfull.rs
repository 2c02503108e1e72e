//! The spool fills up while senders of both protocols are sending: every sender
//! is told why ("no space": an SCP warning line after the rest of its file was
//! read, an SFTP status), nothing it was told failed is delivered, nothing it was
//! told succeeded is missing, and the node keeps serving once space is back.
//! The spool is a small tmpfs of its own (the harness mounts it; tests run as
//! root).

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

const SENDERS_PER_KIND: usize = 8;
const FILE_SIZE: usize = 6 << 20;

fn tmpfs_node(size: &str) -> Node {
    Node::start_opts(NodeOpts {
        spool_tmpfs: Some(size.into()),
        hold_in_ready: true,
        ..Default::default()
    })
}

/// Write zeros into `path` until the file system is full; the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let chunk = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(_) => break,
        }
    }
    n
}

#[test]
fn spool_filling_mid_stream_tells_every_sender_why() {
    let node = tmpfs_node("96m");
    let mut files = Vec::new();
    for i in 0..2 * SENDERS_PER_KIND {
        let name = format!("f{i:02}.bin");
        let data = random_file(&node.src.join(&name), FILE_SIZE);
        files.push((name, data));
    }
    let filler = node.spool.join("filler");
    let t0 = Instant::now();
    let results: Vec<(String, bool, std::process::Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let node = &node;
                s.spawn(move || {
                    let legacy = i % 2 == 0;
                    let target = node.target("alice", name);
                    // ~1.5 MB/s each: the spool fills while every file is on its way
                    let args = ["-l", "12000", name.as_str(), target.as_str()];
                    let out = if legacy {
                        node.scp_o(&args)
                    } else {
                        node.scp_sftp(&args)
                    };
                    (name.clone(), legacy, out)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let filled = fill(&filler);
        eprintln!(
            "filled the spool's file system with {filled} bytes at {:?}",
            t0.elapsed()
        );
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    let landed = node.landed();
    let (mut ok, mut refused_scp, mut refused_sftp) = (0, 0, 0);
    for (name, legacy, out) in &results {
        let here: Vec<_> = landed.iter().filter(|e| &e.record.path == name).collect();
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        if out.status.success() {
            ok += 1;
            assert_eq!(here.len(), 1, "{name}: told success, landed once");
            let data = &files.iter().find(|(n, _)| n == name).unwrap().1;
            assert_entry(here[0], data, name, if *legacy { "scp" } else { "sftp" });
        } else {
            assert!(
                here.is_empty(),
                "{name}: told failure but delivered:\n{}",
                show(out)
            );
            // OpenSSH's SFTP client prints only the status code's name ("Failure"),
            // never the message (protocol 3 has no "no space" code); the message is
            // in the status all the same, and in the log.
            assert!(
                err.contains("no space") || (!legacy && err.contains("failure")),
                "{name} ({}): the sender must be told the reason, not just lose the \
                 connection:\n{}\nnode log:\n{}",
                if *legacy { "scp -O" } else { "sftp" },
                show(out),
                node.log()
            );
            if *legacy {
                refused_scp += 1;
            } else {
                refused_sftp += 1;
            }
        }
    }
    eprintln!(
        "{} senders in {took:?}: {ok} landed, {refused_scp} scp -O and {refused_sftp} sftp told \
         \"no space\"",
        results.len()
    );
    assert!(
        refused_scp > 0 && refused_sftp > 0,
        "the spool filled while both kinds were sending"
    );
    assert!(
        node.log().contains("No space left on device"),
        "the SFTP statuses carry the reason:\n{}",
        node.log()
    );
    // the space comes back: the node serves again, and no partial file is left
    fs::remove_file(&filler).unwrap();
    assert!(
        poll(Duration::from_secs(10), || node
            .partial_is_empty()
            .then_some(()))
        .is_some(),
        "partial files left: {:?}",
        node.partial_names()
    );
    let after = node.src.join("after.bin");
    let data = random_file(&after, 10_000);
    scp_o_ok(&node, &["after.bin", &node.target("alice", "after.bin")]);
    let l = node.landed();
    assert_entry(find_one(&l, "after.bin"), &data, "after.bin", "scp");
}

/// With `min_free = 0` a file announced larger than the free space is refused
/// before its first byte, with the reason (no saturated subtraction).
#[test]
fn a_file_larger_than_the_free_space_is_refused_up_front() {
    let node = tmpfs_node("32m");
    let big = node.src.join("big.bin");
    random_file(&big, 48 << 20);
    let t0 = Instant::now();
    let out = node.scp_o(&["big.bin", &node.target("alice", "big.bin")]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("no space") && err.contains("50331648 bytes"),
        "refused up front with the reason:\n{}\nnode log:\n{}",
        show(&out),
        node.log()
    );
    assert!(node.landed().is_empty());
    assert!(
        !node.log().contains("cannot write it"),
        "refused at admission, not mid-stream:\n{}",
        node.log()
    );
    eprintln!("refused in {:?}", t0.elapsed());
}
