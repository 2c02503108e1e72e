//! Every name the node acknowledges can be archived and forwarded: names that could
//! never be stored under the archive layout (a component too long for the file
//! system once `.record.json` is appended, trees deeper than the limit) are refused
//! at upload time, with a clear message, over legacy SCP and over SFTP.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file `name` (a single component) with `content` under `node.src`.
fn src_file(node: &Node, name: &str, content: &[u8]) -> PathBuf {
    let p = node.src.join(name);
    write_file(&p, content);
    p
}

/// A tree `<root>/top.txt` + `<root>/d/d/.../deep.txt` (`depth` directories `d`).
fn deep_tree(root: &Path, depth: usize) -> String {
    fs::create_dir_all(root).unwrap();
    write_file(&root.join("top.txt"), b"top");
    let mut p = root.to_path_buf();
    for _ in 0..depth {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    write_file(&p.join("deep.txt"), b"deep");
    p.join("deep.txt")
        .strip_prefix(root.parent().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn wait_idle(node: &Node) {
    // nothing left in the spool: archived, forwarded, removed
    let ok = poll(Duration::from_secs(30), || {
        node.landed().is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "pipeline did not drain: {:?}\nlog:\n{}",
        node.landed()
            .iter()
            .map(|e| &e.record.path)
            .collect::<Vec<_>>(),
        node.log()
    );
}

fn max_depth_under(dir: &Path) -> usize {
    let mut max = 0;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, n)) = stack.pop() {
        max = max.max(n);
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), n + 1));
            }
        }
    }
    max
}

#[test]
fn a_name_too_long_for_the_archive_is_refused_over_scp_and_sftp() {
    let node = Node::start();
    let long = "n".repeat(250);
    let f = src_file(&node, &long, b"never stored");
    for (proto, out) in [
        (
            "scp",
            node.scp_o(&[path_str(&f), &node.target("alice", "")]),
        ),
        (
            "sftp",
            node.scp_sftp(&[path_str(&f), &node.target("alice", "")]),
        ),
    ] {
        assert!(
            !out.status.success(),
            "{proto}: a 250-byte name was acknowledged\n{}\nlog:\n{}",
            show(&out),
            node.log()
        );
        // (OpenSSH's SFTP clients print only the status code, not its message)
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            proto == "sftp" || err.contains("name too long"),
            "{proto}: the refusal must say why\n{}",
            show(&out)
        );
    }
    assert!(node.landed().is_empty(), "nothing may be landed");
    wait_partial_empty(&node, "refused long name");

    // a long name that fits is delivered end to end (archive + forward)
    let ok_name = "k".repeat(240);
    let f = src_file(&node, &ok_name, b"stored and delivered");
    scp_o_ok(&node, &[path_str(&f), &node.target("alice", "")]);
    let f2 = src_file(&node, &format!("{ok_name}.x"), b"sftp fits too");
    let out = node.scp_sftp(&[path_str(&f2), &node.target("alice", "")]);
    assert!(out.status.success(), "{}\n{}", show(&out), node.log());
    wait_idle(&node);
    let fwd = forwarded(&node);
    assert_eq!(
        fwd.len(),
        2,
        "{:?}",
        fwd.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    // (forward names over 255 bytes keep the id, a hash and the end of the name)
    assert!(fwd
        .iter()
        .any(|(n, c)| n.ends_with("kkkkkk") && n.len() <= 255 && c == b"stored and delivered"));
    assert!(!node.log().contains("quarantined"), "{}", node.log());
}

/// `sftp -b` with `batch` (one command a line) against the node; returns its output.
fn sftp_batch(node: &Node, batch: &str) -> std::process::Output {
    let b = node.src.join(format!("batch-{}", unique_token()));
    write_file(&b, batch.as_bytes());
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("120")
        .arg("/usr/bin/sftp")
        .arg("-b")
        .arg(&b)
        .arg("-P")
        .arg(node.port.to_string());
    cmd.args(node.ssh_opts());
    cmd.arg(node.target("alice", "").trim_end_matches(':'));
    cmd.current_dir(&node.src).output().unwrap()
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused_over_scp_and_sftp() {
    let node = Node::start();
    // legacy SCP: `scp -O -r` of a 100-level tree
    let root = node.src.join("tree-scp");
    let deep_rel = deep_tree(&root, 100);
    let out = node.scp_o(&["-r", path_str(&root), &node.target("alice", "")]);
    assert!(
        !out.status.success(),
        "a 100-level tree was acknowledged\n{}\nlog:\n{}",
        show(&out),
        node.log()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("too deep"),
        "the refusal must say why\n{}",
        show(&out)
    );
    wait_partial_empty(&node, "refused deep tree");
    assert!(
        !node.landed().iter().any(|e| e.record.path == deep_rel),
        "the deep file was landed"
    );

    // SFTP: `scp -r` (OpenSSH's client stops at 64 levels itself), and `sftp`
    // creating 70 levels and putting a file at the bottom: refused by the server
    let root = node.src.join("tree-sftp");
    deep_tree(&root, 100);
    let out = node.scp_sftp(&["-r", path_str(&root), &node.target("alice", "")]);
    assert!(!out.status.success(), "{}", show(&out));
    let mut batch = String::new();
    let mut p = String::from("s");
    batch.push_str("mkdir s\n");
    for _ in 0..70 {
        p.push_str("/d");
        batch.push_str(&format!("mkdir {p}\n"));
    }
    write_file(&node.src.join("deep.txt"), b"deep");
    batch.push_str(&format!("put deep.txt {p}/deep.txt\n"));
    let out = sftp_batch(&node, &batch);
    assert!(
        !out.status.success(),
        "sftp put at depth 71 was acknowledged\n{}\nlog:\n{}",
        show(&out),
        node.log()
    );
    let out = sftp_batch(&node, "mkdir t\nmkdir t/d\nput deep.txt t/d/ok.txt\n");
    assert!(out.status.success(), "{}\n{}", show(&out), node.log());
    wait_partial_empty(&node, "refused deep sftp upload");
    wait_idle(&node);

    // the shallow files were delivered; nothing deep was, and the archive holds no
    // deep tree
    let fwd = forwarded(&node);
    let names: Vec<_> = fwd.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        fwd.iter()
            .filter(|(n, c)| n.ends_with("__top.txt") && c == b"top")
            .count(),
        2,
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("__ok.txt")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with("__deep.txt")),
        "{names:?}"
    );
    assert!(
        max_depth_under(&node.archive) < 20,
        "deep directories in the archive"
    );
}
