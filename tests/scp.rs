//! Legacy SCP (`scp -O`, i.e. `scp -t` over exec) against the real daemon, driven by
//! the real OpenSSH client, and hostile SCP streams sent raw through `ssh host 'scp -t .'`.
//!
//! Nodes here are started with `hold_in_ready` (archiving cannot succeed), so landed
//! entries stay in `spool/ready`; assertions still look at every landed state.
//! Assertions about landing are made only after the client exited: exit status 0 means
//! every file is durable and visible.

mod common;

use common::*;
use std::time::Duration;

const USER: &str = "alice";

fn assert_nothing_landed(node: &Node, context: &str) {
    let landed = node.landed();
    assert!(
        landed.is_empty(),
        "{context}: nothing may land, but found {:?}",
        landed
            .iter()
            .map(|e| (&e.state, &e.record.path))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// uploads that must land

#[test]
fn one_large_file_lands_intact() {
    let node = held();
    let f = node.src.join("big.bin");
    let content = random_file(&f, 8 << 20);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let landed = node.landed();
    assert_eq!(landed.len(), 1, "one entry");
    let e = &landed[0];
    assert_entry(e, &content, "big.bin", "scp");
    assert_eq!(e.record.mode, 0o644, "mode of a default-umask file");
    assert_eq!(e.record.mtime, None, "no -p: no times sent");
    wait_partial_empty(&node, "after a successful upload");
}

#[test]
fn several_files_in_one_command() {
    let node = held();
    let sizes = [("a.bin", 100_000), ("b.bin", 1 << 20), ("c.txt", 3)];
    let mut sent = Vec::new();
    for (name, size) in sizes {
        let p = node.src.join(name);
        sent.push((name, random_file(&p, size), p));
    }
    let mut args: Vec<&str> = sent.iter().map(|(_, _, p)| path_str(p)).collect();
    let target = node.target(USER, "");
    args.push(&target);
    scp_o_ok(&node, &args);
    let landed = node.landed();
    assert_eq!(landed.len(), 3, "three entries");
    for (name, content, _) in &sent {
        assert_entry(find_one(&landed, name), content, name, "scp");
    }
    let ids: std::collections::HashSet<_> = landed.iter().map(|e| &e.record.id).collect();
    assert_eq!(ids.len(), 3, "distinct ids");
}

#[test]
fn empty_file_lands() {
    let node = held();
    let f = node.src.join("empty");
    write_file(&f, b"");
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let landed = node.landed();
    assert_eq!(landed.len(), 1);
    assert_entry(&landed[0], b"", "empty", "scp");
}

#[test]
fn name_with_spaces() {
    let node = held();
    let f = node.src.join("my report (final) v2.txt");
    let content = random_file(&f, 4321);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let landed = node.landed();
    assert_eq!(landed.len(), 1);
    assert_entry(&landed[0], &content, "my report (final) v2.txt", "scp");
}

#[test]
fn shell_metacharacters_in_a_name_are_literal() {
    // From OpenSSH's regress/scp.sh: a file named `touch metachartest`.
    let node = held();
    let token = unique_token();
    let name = format!("`touch metachar-{token}`; $(touch metachar2-{token}) *");
    let f = node.src.join(&name);
    let content = random_file(&f, 777);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let landed = node.landed();
    assert_eq!(landed.len(), 1);
    assert_entry(&landed[0], &content, &name, "scp");
    for w in [format!("metachar-{token}"), format!("metachar2-{token}")] {
        let found: Vec<_> = node
            .find_named(&w)
            .into_iter()
            .filter(|p| !p.starts_with(&node.spool))
            .collect();
        assert!(found.is_empty(), "a shell ran: {found:?}");
        assert!(!std::path::Path::new("/tmp").join(&w).exists());
    }
}

#[test]
fn recursive_tree_with_times_and_modes() {
    let node = held();
    let tree = node.src.join("tree");
    let files = [
        ("a.txt", 1000usize, 0o640u32, 1_500_000_000i64),
        ("sub/f", 300 << 10, 0o644, 1_500_000_100),
        ("sub/deeper/g", 0, 0o600, 1_500_000_200),
        ("sub/deeper/h h", 5, 0o755, 1_500_000_300),
    ];
    let mut sent = Vec::new();
    for (rel, size, mode, mtime) in files {
        let p = tree.join(rel);
        let c = random_file(&p, size);
        set_mode(&p, mode);
        set_mtime(&p, mtime);
        sent.push((format!("tree/{rel}"), c, mode, mtime));
    }
    std::fs::create_dir_all(tree.join("emptydir")).unwrap();
    scp_o_ok(
        &node,
        &["-r", "-p", path_str(&tree), &node.target(USER, "")],
    );
    let landed = node.landed();
    assert_eq!(
        landed.len(),
        files.len(),
        "one entry per file (directories are not entries): {:?}",
        landed.iter().map(|e| &e.record.path).collect::<Vec<_>>()
    );
    for (path, content, mode, mtime) in &sent {
        let e = find_one(&landed, path);
        assert_entry(e, content, path, "scp");
        assert_eq!(e.record.mode, *mode, "mode of {path}");
        assert_eq!(e.record.mtime, Some(*mtime), "mtime of {path} (scp -p)");
        assert!(e.record.atime.is_some(), "atime of {path} (scp -p)");
    }
}

#[test]
fn same_name_twice_gives_two_entries() {
    let node = held();
    let f = node.src.join("dup.bin");
    let first = random_file(&f, 5000);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let second = random_bytes(6000, 42);
    write_file(&f, &second);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let landed = node.landed();
    assert_eq!(landed.len(), 2, "both uploads kept");
    assert_ne!(landed[0].record.id, landed[1].record.id);
    // ids are time-ordered (ULID): the first upload sorts first
    assert_entry(&landed[0], &first, "dup.bin", "scp");
    assert_entry(&landed[1], &second, "dup.bin", "scp");
}

#[test]
fn upload_into_a_directory_target() {
    let node = held();
    let f = node.src.join("f.dat");
    let content = random_file(&f, 2048);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "some/dir/")]);
    let landed = node.landed();
    assert_eq!(landed.len(), 1);
    assert_entry(&landed[0], &content, "some/dir/f.dat", "scp");
}

#[test]
fn to_a_new_name_and_then_into_it_as_a_directory() {
    // As OpenSSH's sink: `scp f host:name` stores the file as `name`; `scp -r dir
    // host:new` creates `new` from `dir`; once `new` exists (in the sender's view)
    // a second `scp -r dir host:new` goes inside it.
    let node = held();
    let f = node.src.join("f.dat");
    let content = random_file(&f, 1000);
    let tree = node.src.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let inner = random_file(&tree.join("g.dat"), 500);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "renamed.dat")]);
    scp_o_ok(&node, &["-r", path_str(&tree), &node.target(USER, "new")]);
    scp_o_ok(&node, &["-r", path_str(&tree), &node.target(USER, "new")]);
    let landed = node.landed();
    assert_eq!(
        landed.len(),
        3,
        "{:?}",
        landed.iter().map(|e| &e.record.path).collect::<Vec<_>>()
    );
    assert_entry(
        find_one(&landed, "renamed.dat"),
        &content,
        "renamed.dat",
        "scp",
    );
    assert_entry(find_one(&landed, "new/g.dat"), &inner, "new/g.dat", "scp");
    assert_entry(
        find_one(&landed, "new/tree/g.dat"),
        &inner,
        "new/tree/g.dat",
        "scp",
    );
}

// ---------------------------------------------------------------------------
// refusals

#[test]
fn unknown_key_is_refused() {
    let node = held();
    let other = node.gen_key("key_other");
    let f = node.src.join("x.bin");
    random_file(&f, 100);
    let out = node.scp_o_with_key(&other, &[path_str(&f), &node.target(USER, "")]);
    assert!(
        !out.status.success(),
        "an unknown key must be refused:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{}", show(&out));
    assert_nothing_landed(&node, "unknown key");
    assert_still_serves(&node, "scp");
}

fn assert_one_line_refusal(out: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected a one-line message on stderr:\n{}",
        show(out)
    );
}

#[test]
fn exec_of_other_commands_is_refused() {
    let node = held();
    let token = unique_token();
    for cmd in [
        "id".to_string(),
        format!("touch /tmp/pwn-{token}"),
        format!("sh -c 'touch /tmp/pwn-{token}'"),
        "cat /etc/passwd".to_string(),
    ] {
        let out = node.ssh(USER, &cmd);
        assert_eq!(out.status.code(), Some(1), "exec {cmd:?}:\n{}", show(&out));
        assert!(
            out.stdout.is_empty(),
            "exec {cmd:?}: no output on stdout:\n{}",
            show(&out)
        );
        assert_one_line_refusal(&out, &format!("exec {cmd:?}"));
    }
    assert!(
        !std::path::Path::new(&format!("/tmp/pwn-{token}")).exists(),
        "a command ran"
    );
    assert_nothing_landed(&node, "exec of other commands");
    assert_still_serves(&node, "scp");
}

#[test]
fn scp_with_shell_syntax_in_the_target_runs_no_shell() {
    let node = held();
    let token = unique_token();
    let out = node.ssh_stdin(USER, &format!("scp -t .; touch /tmp/pwn-{token}"), b"");
    let pwned = std::path::Path::new("/tmp").join(format!("pwn-{token}"));
    assert!(!pwned.exists(), "a shell ran:\n{}", show(&out));
    let out = node.ssh_stdin(USER, &format!("scp -t \"$(touch /tmp/pwn-{token})\""), b"");
    assert!(!pwned.exists(), "a shell ran:\n{}", show(&out));
    assert!(node.find_named(&format!("pwn-{token}")).is_empty());
    assert_nothing_landed(&node, "shell syntax");
    assert_still_serves(&node, "scp");
}

#[test]
fn shell_without_pty_is_refused() {
    let node = held();
    let out = node.ssh_args(&["-T"], USER, None);
    assert_eq!(out.status.code(), Some(1), "shell:\n{}", show(&out));
    assert_one_line_refusal(&out, "shell");
    assert_nothing_landed(&node, "shell");
    assert_still_serves(&node, "scp");
}

#[test]
fn shell_with_pty_is_refused() {
    let node = held();
    // stdin is /dev/null; -tt forces the pty request anyway.
    let out = node.ssh_args(&["-tt"], USER, None);
    assert!(
        !out.status.success(),
        "shell with pty must fail:\n{}",
        show(&out)
    );
    assert!(
        !(out.stdout.is_empty() && out.stderr.is_empty()),
        "the refusal says something:\n{}",
        show(&out)
    );
    let out = node.ssh_args(&["-tt"], USER, Some("id"));
    assert!(
        !out.status.success(),
        "exec with pty must fail:\n{}",
        show(&out)
    );
    assert_nothing_landed(&node, "pty");
    assert_still_serves(&node, "scp");
}

#[test]
fn download_is_refused() {
    // `scp -O host:file .` runs `scp -f file` on the server: upload-only service.
    let node = held();
    let dest = node.src.join("downloaded");
    let out = node.scp_o(&[&node.target(USER, "whatever"), path_str(&dest)]);
    assert!(
        !out.status.success(),
        "scp -f must be refused:\n{}",
        show(&out)
    );
    assert!(!dest.exists(), "nothing downloaded");
    assert_nothing_landed(&node, "download");
    assert_still_serves(&node, "scp");
}

#[test]
fn file_over_max_file_size_is_refused() {
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("1MiB".into()),
        ..NodeOpts::held()
    });
    let at = node.src.join("at-limit.bin");
    let at_content = random_file(&at, 1 << 20);
    scp_o_ok(&node, &[path_str(&at), &node.target(USER, "")]);

    let over = node.src.join("over-limit.bin");
    random_file(&over, (1 << 20) + 1);
    let out = node.scp_o(&[path_str(&over), &node.target(USER, "")]);
    assert!(
        !out.status.success(),
        "over the limit must fail:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("too large") || err.contains("limit") || err.contains("max"),
        "the refusal names the size limit:\n{}",
        show(&out)
    );
    let landed = node.landed();
    assert_eq!(landed.len(), 1, "only the file at the limit landed");
    assert_entry(&landed[0], &at_content, "at-limit.bin", "scp");
    wait_partial_empty(&node, "refused file");

    // The refusal comes before any data is sent (checked against the header's size).
    let mut s = node.ssh_spawn(USER, "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "sink ready; stderr: {}",
        s.stderr()
    );
    assert!(s.write(b"C0644 2000000 header-too-big\n"));
    let reply = s.read_exact_timeout(1, Duration::from_secs(20));
    assert!(
        matches!(reply.as_deref(), Some([1]) | Some([2])),
        "the header of an oversized file is refused at once, got {reply:?}"
    );
    let rest = s.read_exact_timeout(1, Duration::from_secs(5));
    assert!(rest.is_some(), "a message follows the error byte");
    drop(s);
    wait_partial_empty(&node, "refused header");
    assert_eq!(node.landed().len(), 1);
}

// Hostile SCP streams (malformed headers, escaping names, broken framing) are
// in tests/hostile.rs, the hostile-input suite.

// ---------------------------------------------------------------------------
// broken connections and limits

#[test]
fn client_killed_mid_transfer_leaves_nothing() {
    let node = held();
    let token = unique_token();
    let mut s = node.ssh_spawn(USER, "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "sink ready; stderr: {}",
        s.stderr()
    );
    assert!(s.write(format!("C0644 104857600 big-{token}\n").as_bytes()));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "header acked; stderr: {}",
        s.stderr()
    );
    let chunk = random_bytes(64 << 10, 7);
    for _ in 0..(6 << 20) / chunk.len() {
        assert!(s.write(&chunk), "ssh accepts data; stderr: {}", s.stderr());
    }
    let started = poll(Duration::from_secs(30), || {
        (node.partial_bytes() > 0).then_some(())
    });
    assert!(
        started.is_some(),
        "the upload is being written to spool/partial: {:?}",
        node.partial_names()
    );
    s.kill();
    wait_partial_empty(&node, "client killed mid-transfer");
    assert_nothing_landed(&node, "client killed mid-transfer");
    assert!(node.find_named(&token).is_empty());
    assert_still_serves(&node, "scp");
}

#[test]
fn sessions_over_max_sessions_are_refused() {
    let node = Node::start_opts(NodeOpts {
        max_sessions: Some(1),
        ..NodeOpts::held()
    });
    // Hold the only session: a sink waiting for its first control line.
    // (Retry briefly: the harness's readiness probe may still occupy the slot.)
    let mut holder = None;
    for _ in 0..20 {
        let mut s = node.ssh_spawn(USER, "scp -t .");
        if s.read_exact_timeout(1, Duration::from_secs(10)) == Some(vec![0]) {
            holder = Some(s);
            break;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut holder = holder.expect("the first session is served");

    let f = node.src.join("second.bin");
    let content = random_file(&f, 1000);
    let out = node.scp_o(&[path_str(&f), &node.target(USER, "")]);
    assert!(
        !out.status.success(),
        "a second session must be refused:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        ["session", "too many", "busy", "limit", "capacity", "full"]
            .iter()
            .any(|w| err.contains(w)),
        "the refusal says why:\n{}",
        show(&out)
    );
    assert_nothing_landed(&node, "refused session");

    // Close the first session: EOF before any file is a clean end.
    holder.close_stdin();
    let st = holder.wait_timeout(Duration::from_secs(20));
    assert!(st.is_some(), "the held session ends after EOF");

    // The slot is free again (the server may take a moment to notice).
    let ok = poll(Duration::from_secs(15), || {
        node.scp_o(&[path_str(&f), &node.target(USER, "")])
            .status
            .success()
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "after the first session ended, uploads are served again"
    );
    let landed = node.landed();
    assert_eq!(landed.len(), 1);
    assert_entry(&landed[0], &content, "second.bin", "scp");
}

#[test]
fn landed_files_survive_kill9_and_partial_is_swept_on_restart() {
    let mut node = held();
    let f = node.src.join("kept.bin");
    let content = random_file(&f, 3 << 20);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "")]);

    // An upload in flight when the daemon dies.
    let mut s = node.ssh_spawn(USER, "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "sink ready; stderr: {}",
        s.stderr()
    );
    assert!(s.write(b"C0644 104857600 inflight.bin\n"));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    let chunk = random_bytes(64 << 10, 9);
    for _ in 0..32 {
        assert!(s.write(&chunk), "ssh accepts data; stderr: {}", s.stderr());
    }
    let started = poll(Duration::from_secs(30), || {
        (node.partial_bytes() > 0).then_some(())
    });
    assert!(
        started.is_some(),
        "the upload is being written to spool/partial"
    );

    node.kill9();
    let st = s.wait_timeout(Duration::from_secs(20));
    assert!(
        matches!(st, Some(st) if !st.success()),
        "the client sees the failure: {st:?}"
    );
    node.restart();
    assert!(
        node.partial_is_empty(),
        "spool/partial is swept at start: {:?}",
        node.partial_names()
    );
    let landed = node.landed();
    assert_eq!(landed.len(), 1, "only the acknowledged upload survives");
    assert_entry(&landed[0], &content, "kept.bin", "scp");
    assert_still_serves(&node, "scp");

    let st = node.stop();
    assert!(
        st.success(),
        "SIGTERM is a clean shutdown: {st:?}\n{}",
        node.log()
    );
    node.restart();
    assert_eq!(
        node.landed().len(),
        2,
        "both uploads kept across a clean restart"
    );
}

// ---------------------------------------------------------------------------
// edge defects (issues 6-9)

/// Read one `\x01`/`\x02` reply line from a live session: (kind, text).
fn read_reply_line(s: &mut Session, timeout: Duration) -> Option<(u8, String)> {
    let kind = s.read_exact_timeout(1, timeout)?[0];
    let mut line = Vec::new();
    loop {
        let b = s.read_exact_timeout(1, Duration::from_secs(5))?[0];
        if b == b'\n' {
            break;
        }
        line.push(b);
    }
    Some((kind, String::from_utf8_lossy(&line).into_owned()))
}

/// Issue 7, on the wire: OpenSSH's source whose read fails mid-file (the file
/// shrank) pads the data with zeros to the announced size, sends
/// `\x01scp: <name>: <error>\n` instead of `\0`, and waits for the sink's
/// reply. The reply must come at once (it used to hang until the idle timeout).
#[test]
fn source_read_error_mid_file_is_answered_at_once() {
    let node = held();
    let token = unique_token();
    let mut s = node.ssh_spawn(USER, "scp -t .");
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0]),
        "sink ready; stderr: {}",
        s.stderr()
    );
    assert!(s.write(format!("C0644 8 shrunk-{token}\n").as_bytes()));
    assert_eq!(
        s.read_exact_timeout(1, Duration::from_secs(20)),
        Some(vec![0])
    );
    assert!(s.write(b"abc\0\0\0\0\0"));
    assert!(s.write(format!("\x01scp: /src/shrunk-{token}: Broken pipe\n").as_bytes()));
    let reply = read_reply_line(&mut s, Duration::from_secs(15));
    let Some((kind, text)) = reply else {
        panic!(
            "no reply to the source's error within 15s (the sender hangs)\nnode log:\n{}",
            node.log()
        );
    };
    assert_eq!(kind, 1, "a warning: the sender goes on with its next file");
    assert!(
        text.starts_with("scp: ") && text.contains(&format!("shrunk-{token}")),
        "{text:?}"
    );
    assert!(text.contains("not stored"), "{text:?}");
    // The sender has nothing more: EOF ends the session at once, non-zero.
    s.close_stdin();
    let st = s.wait_timeout(Duration::from_secs(20));
    assert!(
        matches!(st, Some(st) if st.code() == Some(1)),
        "exit 1 at once: {st:?}"
    );
    assert_nothing_landed(&node, "source read error");
    wait_partial_empty(&node, "source read error");
    assert_still_serves(&node, "scp");
}

/// Issue 7 with the real client: a source file truncated while `scp -O` reads
/// it. scp must end promptly with a non-zero status, the file must not land,
/// and the other file of the same command must.
#[test]
fn real_scp_of_a_file_that_shrinks_mid_transfer_ends_at_once() {
    let node = held();
    let before = node.src.join("before.bin");
    let before_content = random_file(&before, 1000);
    let f = node.src.join("shrinks.bin");
    random_file(&f, 8 << 20);
    let target = node.target(USER, "");
    // -l 8000 (kbit/s): about 1 MB/s, so the truncation happens mid-file.
    let child = node.scp_o_spawn(&[
        "-l".as_ref(),
        "8000".as_ref(),
        before.as_os_str(),
        f.as_os_str(),
        target.as_ref(),
    ]);
    let started = poll(Duration::from_secs(30), || {
        (node.partial_bytes() > 0).then_some(())
    });
    assert!(started.is_some(), "the upload reached spool/partial");
    // Give `before.bin` time to finish, then cut the big file short.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(0)
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = wait_output_within(child, Duration::from_secs(60));
    let Some(out) = out else {
        panic!(
            "scp hung after its source file shrank\nnode log:\n{}",
            node.log()
        );
    };
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "scp ended late: {:?}",
        t0.elapsed()
    );
    assert!(
        !out.status.success(),
        "a shrunk file is a failure:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shrinks.bin") && err.contains("not stored"),
        "the sender is told the file was not stored:\n{}",
        show(&out)
    );
    let landed = node.landed();
    assert!(
        landed.iter().all(|e| e.record.path != "shrinks.bin"),
        "the shrunk file must not land"
    );
    assert_entry(
        find_one(&landed, "before.bin"),
        &before_content,
        "before.bin",
        "scp",
    );
    wait_partial_empty(&node, "shrunk file");
    assert_still_serves(&node, "scp");
}
/// Issue 8: more data than the header announced, or garbage where the status
/// byte belongs: the sender is told why (a `\x02` line) and the log says it.
#[test]
fn more_data_than_announced_is_explained() {
    for (i, tail) in [&b"hello world\0"[..], b"helloX\n"].iter().enumerate() {
        let node = held();
        let token = unique_token();
        let mut input = format!("C0644 5 evil-{token}\n").into_bytes();
        input.extend_from_slice(tail);
        let out = node.ssh_stdin(USER, "scp -t .", &input);
        assert_eq!(out.status.code(), Some(1), "case {i}:\n{}", show(&out));
        let pos = out.stdout.iter().position(|b| *b == 2);
        let Some(pos) = pos else {
            panic!("case {i}: no \\x02 line on stdout:\n{}", show(&out));
        };
        let msg = String::from_utf8_lossy(&out.stdout[pos + 1..]);
        assert!(
            msg.starts_with("scp: ")
                && msg.contains("status byte")
                && msg.contains("more data than the header announced")
                && msg.contains(&format!("evil-{token}")),
            "case {i}: {msg:?}"
        );
        let log = node.log();
        assert!(
            log.lines()
                .any(|l| l.contains("scp upload refused") && l.contains("status byte")),
            "case {i}: the log says why:\n{log}"
        );
        assert_nothing_landed(&node, "more data than announced");
        wait_partial_empty(&node, "more data than announced");
    }
}

/// Issue 9: a session that fails after files were acknowledged with `\0`
/// stores none of them (group commit); every one is named in the log and to
/// the sender.
#[test]
fn acknowledged_files_dropped_by_a_failed_session_are_named() {
    let node = held();
    let token = unique_token();
    let input =
        format!("C0644 5 first-{token}\nhello\0C0644 5 second \"{token}\"\nworld\0Qgarbage\n");
    let out = node.ssh_stdin(USER, "scp -t .", input.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        &out.stdout[..5],
        b"\0\0\0\0\0",
        "both files were acked:\n{}",
        show(&out)
    );
    assert_nothing_landed(&node, "failed session");
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [format!("first-{token}"), format!("second \\\"{token}\\\"")] {
        assert!(
            err.contains(&name) && err.contains("NOT stored"),
            "stderr names {name:?} as not stored:\n{}",
            show(&out)
        );
    }
    let log = node.log();
    for name in [format!("first-{token}"), format!("second \\\"{token}\\\"")] {
        assert!(
            log.lines()
                .any(|l| l.contains("not stored") && l.contains(&name)),
            "the log names {name:?} as dropped:\n{log}"
        );
    }
    wait_partial_empty(&node, "failed session");
}
/// Issue 6: a file name that is not UTF-8 is refused with a warning that names
/// it (escaped); the other files of the command still land.
#[test]
fn non_utf8_file_name_is_refused_clearly() {
    use std::os::unix::ffi::OsStrExt;
    let node = held();
    let bad = node
        .src
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt"));
    random_file(&bad, 100);
    let good = node.src.join("good.txt");
    let content = random_file(&good, 200);
    let target = node.target(USER, "");
    let child = node.scp_o_spawn(&[bad.as_os_str(), good.as_os_str(), target.as_ref()]);
    let out = wait_output_within(child, Duration::from_secs(60)).expect("scp ends");
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r"caf\xe9-latin1.txt") && err.contains("not valid UTF-8"),
        "the refusal names the file, escaped:\n{}",
        show(&out)
    );
    let landed = node.landed();
    assert_eq!(landed.len(), 1, "only the good file lands");
    assert_entry(&landed[0], &content, "good.txt", "scp");
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("scp file refused") && l.contains(r"caf\\xe9")),
        "the log names it:\n{log}"
    );
}
