//! A process command must not be able to take the node down for good, nor leave
//! processes behind (issue 17, items 1 and 8): a very deep output tree, a command
//! that kills the daemon, and `setsid` grandchildren that outlive their step (at the
//! timeout, at a graceful stop, after `kill -9` of the daemon and a restart).

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const USER: &str = "alice";
const LONG: Duration = Duration::from_secs(90);

fn upload(node: &Node, name: &str, size: usize) {
    random_file(&node.src.join(name), size);
    let src = node.src.join(name);
    scp_o_ok(node, &[path_str(&src), &node.target(USER, "")]);
}

fn count(node: &Node, state: &str) -> usize {
    fs::read_dir(node.state_dir(state))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// The `state.json` of the one quarantined entry.
fn quarantined_state(node: &Node) -> String {
    let q = node.state_dir("quarantine");
    let e = fs::read_dir(&q).unwrap().next().unwrap().unwrap();
    fs::read_to_string(e.path().join("state.json")).unwrap_or_default()
}

/// The `state.json` of the one entry in `archived/` ("" when it has none).
fn archived_state(node: &Node) -> String {
    let a = node.state_dir("archived");
    let e = fs::read_dir(&a).unwrap().next().unwrap().unwrap();
    fs::read_to_string(e.path().join("state.json")).unwrap_or_default()
}

fn forwarded(node: &Node) -> usize {
    fs::read_dir(&node.outgoing).map(|r| r.count()).unwrap_or(0)
}

fn must<T>(node: &Node, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| {
        panic!(
            "timed out after {timeout:?} waiting for {what}; log:\n{}",
            node.log()
        )
    })
}

/// Pids of live (not zombie) processes whose command line contains `marker`.
fn procs_with(marker: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(marker) {
            continue;
        }
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
        if !zombie {
            v.push(pid);
        }
    }
    v
}

/// Whether a live process has exactly `arg` among its arguments.
fn proc_with_arg(arg: &str) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
    })
}

fn alive(pids: &[u32], marker: &str) -> Vec<u32> {
    let now = procs_with(marker);
    pids.iter().copied().filter(|p| now.contains(p)).collect()
}

/// A digits-only marker `sleep` accepts as a fraction: `987.<digits>`.
fn marker() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("987.{}{}", std::process::id(), t % 1_000_000_000)
}

/// A command that starts two `setsid` sleeps carrying `m` (one whose parent exits at
/// once, so it is orphaned), then hangs. With `no_env`, a third orphan drops the
/// environment (so no `INGEST_ID` names its step).
fn setsid_command(m: &str, no_env: bool) -> String {
    let third = if no_env {
        format!("(env -i \"$(command -v setsid)\" \"$(command -v sleep)\" {m}3 &); ")
    } else {
        String::new()
    };
    format!(
        "[process]\ncommand = [\"/bin/sh\", \"-c\", '{third}setsid sleep {m}1 & (setsid sleep {m}2 &); sleep 1000']\n"
    )
}

/// (a) 30,000 nested directories in the output dir: a quarantined attempt with a
/// reason, the daemon keeps running and the next upload goes through.
#[test]
fn deep_output_tree_is_a_failed_attempt_not_a_crash() {
    // A big stack: if the daemon leaves the tree behind, the test's own clean-up
    // (std's recursive `remove_dir_all`) must fail this test, not abort the binary.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(deep_output_tree)
        .unwrap()
        .join()
        .unwrap();
}

fn deep_output_tree() {
    require_tool("python3");
    let script = "if [ \"$INGEST_NAME\" = deep.dat ]; then exec python3 -c \"import os\nos.chdir(os.environ['INGEST_OUTPUT_DIR'])\nfor _ in range(30000):\n    os.mkdir('d'); os.chdir('d')\"; fi; cp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/copy\"";
    let mut node = Node::start_with(&format!(
        "[process]\ncommand = [\"/bin/sh\", \"-c\", '''{script}''']\ntimeout = \"60s\"\n[retry]\nmax_attempts = 2\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n[pipeline]\nrescan_interval = \"500ms\"\n"
    ));
    upload(&node, "deep.dat", 1000);
    must(&node, "the deep entry quarantined", LONG, || {
        (count(&node, "quarantine") == 1 || !node_alive(&node)).then_some(())
    });
    assert!(node.is_running(), "the node died:\n{}", node.log());
    let st = quarantined_state(&node);
    assert!(
        st.contains("directories nested too deep") || st.contains("path too long"),
        "{st}"
    );
    upload(&node, "ok.dat", 1000);
    must(&node, "the next upload forwarded", LONG, || {
        (forwarded(&node) == 1).then_some(())
    });
    assert!(node.is_running());
    // the deep trees were removed
    must(&node, "work/ empty", LONG, || {
        (count(&node, "work") == 0).then_some(())
    });
}

/// (a, after a crash) The daemon is killed while a 30,000-level tree sits in the
/// output dir: the restart removes it (the spool's own start-up sweep may not:
/// std's removal is recursive) and counts the stop; the entry then completes.
#[test]
fn a_deep_tree_left_by_a_crash_is_removed_at_restart() {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(deep_tree_after_crash)
        .unwrap()
        .join()
        .unwrap();
}

fn deep_tree_after_crash() {
    require_tool("python3");
    let flag = std::env::temp_dir().join(format!("crashloop-deep-{}", marker()));
    let script = format!(
        "if [ \"$INGEST_ATTEMPT\" = 1 ]; then python3 -c \"import os\nos.chdir(os.environ['INGEST_OUTPUT_DIR'])\nfor _ in range(30000):\n    os.mkdir('d'); os.chdir('d')\"; touch {}; sleep 1000; fi; cp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/copy\"",
        flag.display()
    );
    let mut node = Node::start_with(&format!(
        "[process]\ncommand = [\"/bin/sh\", \"-c\", '''{script}''']\ntimeout = \"10m\"\n[retry]\nmax_attempts = 3\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n"
    ));
    upload(&node, "deep.dat", 1000);
    must(&node, "the deep tree built", LONG, || {
        flag.exists().then_some(())
    });
    let _ = fs::remove_file(&flag);
    node.kill9();
    assert_eq!(count(&node, "work"), 1, "the tree should be left in work/");
    node.restart();
    must(&node, "the entry forwarded after the restart", LONG, || {
        (forwarded(&node) == 1).then_some(())
    });
    assert!(node.is_running(), "{}", node.log());
    assert_eq!(count(&node, "work"), 0, "{}", node.log());
}

fn node_alive(node: &Node) -> bool {
    node.pid().is_some_and(|p| {
        fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z "))
    })
}

/// (b) A command that kills the daemon: each restart counts the interrupted attempt,
/// and after `retry.max_attempts` the entry is quarantined; the node stays up.
#[test]
fn a_step_that_kills_the_node_is_quarantined_after_max_attempts() {
    let mut node = Node::start_with(
        "[process]\ncommand = [\"/bin/sh\", \"-c\", 'if [ \"$INGEST_NAME\" = killer.dat ]; then kill -9 $PPID; sleep 5; fi; cp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/copy\"']\n[retry]\nmax_attempts = 3\ninitial_backoff = \"1s\"\nmax_backoff = \"1s\"\n[pipeline]\nrescan_interval = \"500ms\"\n",
    );
    upload(&node, "killer.dat", 1000);
    let mut crashes = 0;
    while count(&node, "quarantine") == 0 {
        assert!(
            crashes < 8,
            "still crashing after {crashes} restarts:\n{}",
            node.log()
        );
        let down = poll(Duration::from_secs(20), || {
            (!node.is_running() || count(&node, "quarantine") == 1).then_some(())
        });
        assert!(
            down.is_some(),
            "neither crashed nor quarantined:\n{}",
            node.log()
        );
        if !node.is_running() {
            crashes += 1;
            node.restart();
        }
    }
    assert_eq!(crashes, 3, "{}", node.log());
    let st = quarantined_state(&node);
    assert!(st.contains("the node stopped during this step"), "{st}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.is_running(), "{}", node.log());
    upload(&node, "fine.dat", 1000);
    must(&node, "the next upload forwarded", LONG, || {
        (forwarded(&node) == 1).then_some(())
    });
}

/// (c) `setsid` children of a command that runs past `process.timeout` are killed
/// with it, attempt after attempt.
#[test]
fn setsid_children_die_with_a_timed_out_step() {
    let m = marker();
    let node = Node::start_with(&format!(
        "{}timeout = \"1s\"\n[retry]\nmax_attempts = 3\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n[pipeline]\nrescan_interval = \"500ms\"\n",
        setsid_command(&m, true)
    ));
    upload(&node, "slow.dat", 1000);
    let mut seen = Vec::new();
    let mut env_less = false;
    let third = format!("{m}3");
    must(&node, "quarantine after 3 timeouts", LONG, || {
        env_less |= proc_with_arg(&third);
        for p in procs_with(&m) {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        (count(&node, "quarantine") == 1).then_some(())
    });
    assert!(seen.len() >= 3, "the command never started its children");
    assert!(env_less, "the orphan without environment never ran");
    std::thread::sleep(Duration::from_millis(300));
    let left = procs_with(&m);
    assert!(left.is_empty(), "left behind: {left:?} (seen {seen:?})");
    let st = quarantined_state(&node);
    assert!(st.contains("killed after timeout"), "{st}");
}

/// (d) ... and at a graceful stop, and after `kill -9` of the daemon and a restart.
#[test]
fn setsid_children_die_at_stop_and_after_a_crash_restart() {
    let m = marker();
    let mut node = Node::start_with(&format!(
        "{}timeout = \"10m\"\n[retry]\nmax_attempts = 5\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n",
        setsid_command(&m, false)
    ));
    upload(&node, "hang.dat", 1000);
    let two = |node: &Node| {
        must(node, "both setsid children running", LONG, || {
            let p = procs_with(&m);
            (p.len() >= 2).then_some(p)
        })
    };
    let pids = two(&node);
    node.stop();
    let left = alive(&pids, &m);
    assert!(left.is_empty(), "left behind by a graceful stop: {left:?}");

    // a graceful stop is not an attempt
    let st = archived_state(&node);
    assert!(!st.contains("the node stopped"), "{st}");
    node.restart();
    let pids = two(&node);
    node.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !alive(&pids, &m).is_empty(),
        "kill -9 of the daemon should leave the children (else this test proves nothing)"
    );
    node.restart();
    must(&node, "the crashed daemon's children killed", LONG, || {
        alive(&pids, &m).is_empty().then_some(())
    });
    // ... and a kill -9 is one
    must(&node, "the stop counted", LONG, || {
        archived_state(&node)
            .contains("the node stopped during this step 1 time")
            .then_some(())
    });
    node.stop();
    let left = procs_with(&m);
    assert!(left.is_empty(), "left behind at the end: {left:?}");
}
