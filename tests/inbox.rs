//! The inbox against the real daemon: files dropped into `[inbox] dir` by other
//! means are landed once complete and go through the pipeline like uploads.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn inbox_node(settle: &str) -> Node {
    // relative paths resolve against the config file's directory (the node dir)
    Node::start_with(&format!(
        "[inbox]\ndir = \"inbox\"\nsettle = \"{settle}\"\nrescan_interval = \"2s\"\nuser = \"dropbox\"\n\
         [pipeline]\nrescan_interval = \"1s\"\n",
    ))
}

fn inbox(node: &Node) -> std::path::PathBuf {
    node.dir.path().join("inbox")
}

fn forwarded_named<'a>(fwd: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a (String, Vec<u8>)> {
    fwd.iter()
        .filter(|(n, _)| n.ends_with(&format!("__{name}")))
        .collect()
}

/// Every landed entry ever seen, via the archive's record files.
fn archived_records(node: &Node) -> Vec<ingestd::core::record::Record> {
    let mut out = Vec::new();
    let mut stack = vec![node.archive.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".record.json") {
                out.push(serde_json::from_slice(&fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    out.sort_by(|a: &ingestd::core::record::Record, b| a.path.cmp(&b.path));
    out
}

fn wait_for(node: &Node, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    if poll(timeout, || f().then_some(())).is_none() {
        panic!(
            "timed out waiting for {what}; forwarded: {:?}; inbox: {:?}; log:\n{}",
            forwarded(node).iter().map(|f| &f.0).collect::<Vec<_>>(),
            fs::read_dir(inbox(node))
                .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                .unwrap_or_default(),
            node.log()
        );
    }
}

fn landed_anything_named(node: &Node, name: &str) -> bool {
    node.landed().iter().any(|e| e.record.path.ends_with(name))
        || !forwarded_named(&forwarded(node), name).is_empty()
}

#[test]
fn renamed_in_and_slowly_written_files_are_landed_once_complete() {
    // settle (4s) is longer than the slow writer's whole run (2.4s): a renamed-in
    // file must not wait for it
    let node = inbox_node("4s");
    let dir = inbox(&node);
    // watching (not just created): a renamed-in file must be seen as renamed
    wait_for(&node, "inbox watching", LONG, || {
        dir.is_dir() && node.log().contains("inbox watching")
    });

    // 1. written under a temporary name, then renamed in: complete at once
    let renamed = random_bytes(200_000, 1);
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    // inotify watches a new directory only once its creation event is handled: a
    // rename into it within that moment is found by a rescan (and waits for settle)
    std::thread::sleep(Duration::from_secs(1));
    write_file(&dir.join("sub/deeper/.report.csv.tmp"), &renamed);
    // a name the inbox must ignore, even when complete
    write_file(&dir.join("ignored.part"), b"never landed");
    fs::rename(
        dir.join("sub/deeper/.report.csv.tmp"),
        dir.join("sub/deeper/report.csv"),
    )
    .unwrap();

    // 2. written slowly in place: chunks 300ms apart (< settle)
    let slow = random_bytes(8 * 10_000, 2);
    let mut f = fs::File::create(dir.join("slow.bin")).unwrap();
    let t0 = Instant::now();
    for chunk in slow.chunks(10_000) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !landed_anything_named(&node, "slow.bin"),
            "slow.bin landed while still being written ({:?} in)",
            t0.elapsed()
        );
    }
    drop(f);
    let written = Instant::now();

    // the renamed file did not wait for a settle period of its own
    assert_eq!(
        forwarded_named(&forwarded(&node), "report.csv").len(),
        1,
        "a renamed-in file is complete at once (settle is 4s, {:?} passed); log:\n{}",
        t0.elapsed(),
        node.log()
    );
    wait_for(&node, "slow.bin forwarded", LONG, || {
        forwarded_named(&forwarded(&node), "slow.bin").len() == 1
    });
    assert!(
        written.elapsed() >= Duration::from_secs(3),
        "slow.bin was landed before it settled"
    );
    let fwd = forwarded(&node);
    assert!(
        forwarded_named(&fwd, "report.csv")[0].1 == renamed,
        "report.csv content differs"
    );
    assert!(
        forwarded_named(&fwd, "slow.bin")[0].1 == slow,
        "slow.bin content differs (torn?)"
    );
    // removed from the inbox after landing; the temp-named file stays
    wait_for(&node, "inbox emptied", LONG, || {
        !dir.join("slow.bin").exists() && !dir.join("sub/deeper/report.csv").exists()
    });
    assert_eq!(fs::read(dir.join("ignored.part")).unwrap(), b"never landed");
    let recs = archived_records(&node);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].path, "slow.bin");
    assert_eq!(recs[1].path, "sub/deeper/report.csv");
    for r in &recs {
        assert_eq!(r.user, "dropbox");
        assert_eq!(r.protocol, "inbox");
        assert_eq!(r.remote_addr, "inbox");
    }
    assert_eq!(recs[1].blake3, blake3_hex(&renamed));
    assert_eq!(recs[0].blake3, blake3_hex(&slow));
}

#[test]
fn files_dropped_while_the_node_is_down_are_found_by_the_start_rescan() {
    let mut node = inbox_node("1s");
    let dir = inbox(&node);
    // watching (not just created): a renamed-in file must be seen as renamed
    wait_for(&node, "inbox watching", LONG, || {
        dir.is_dir() && node.log().contains("inbox watching")
    });
    node.stop();
    let mut sent = Vec::new();
    for i in 0..20 {
        let rel = format!("batch{}/f{i}.dat", i % 4);
        let data = random_file(&dir.join(&rel), 100 + i * 37);
        set_mtime(&dir.join(&rel), 1_700_000_000);
        sent.push((rel, data));
    }
    node.restart();
    // (final names only: a forward in progress shows a temporary name)
    wait_for(&node, "all 20 forwarded", LONG, || {
        forwarded(&node)
            .iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .count()
            == 20
    });
    let fwd = forwarded(&node);
    for (rel, data) in &sent {
        let name = rel.rsplit('/').next().unwrap();
        let m = forwarded_named(&fwd, name);
        assert_eq!(m.len(), 1, "{name}");
        assert!(m[0].1 == *data, "{rel}: content differs");
    }
    let recs = archived_records(&node);
    let mut paths: Vec<&str> = recs.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    let mut want: Vec<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    want.sort();
    assert_eq!(paths, want);
    assert!(recs.iter().all(|r| r.mtime == Some(1_700_000_000)));
    wait_for(&node, "inbox files removed", LONG, || {
        sent.iter().all(|(rel, _)| !dir.join(rel).exists())
    });
}
