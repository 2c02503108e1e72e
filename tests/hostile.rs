//! The hostile-input suite: malformed and malicious SCP streams, SFTP requests
//! and SSH requests, each sent by a real client (OpenSSH `ssh` carrying raw SCP
//! bytes, paramiko for SFTP and SSH-level requests) to a running node. Every case
//! asserts the same four things:
//! 1. a clear refusal reaches the sender (an SCP `\x01`/`\x02` line, an SFTP
//!    status, an SSH channel/request failure) naming the cause;
//! 2. nothing is written outside the spool, and nothing named after the attack
//!    lands;
//! 3. the node's RSS stays under [`RSS_BOUND_KIB`];
//! 4. a good upload right after succeeds.
//!
//! The floods (pre-auth, channels, open files, MKDIR, SCP nesting, failed
//! logins, trickling) are in tests/abuse.rs, with the same checks and their RSS
//! before/peak/after.

mod common;

use common::*;
use std::process::Command;

/// The bound every case checks the node's RSS against (the node starts at about
/// 20 MiB; see docs/limits.md for the per-connection bound).
const RSS_BOUND_KIB: u64 = 256 * 1024;

const PYTHON: &str = "/usr/bin/python3";

/// Checks 2-4 after one case; returns what failed.
fn after_case(node: &Node, token: &str) -> Vec<String> {
    let mut bad = Vec::new();
    wait_partial_empty(node, token);
    let outside = node.unexpected_files();
    if !outside.is_empty() {
        bad.push(format!("files outside the spool: {outside:?}"));
    }
    let evil = format!("evil-{token}");
    let named: Vec<_> = node
        .find_named(&evil)
        .into_iter()
        .filter(|p| !p.starts_with(&node.spool))
        .collect();
    if !named.is_empty() {
        bad.push(format!("files named after the attack: {named:?}"));
    }
    let landed: Vec<_> = node
        .landed()
        .into_iter()
        .filter(|e| e.record.path.contains(&evil))
        .map(|e| e.record.path)
        .collect();
    if !landed.is_empty() {
        bad.push(format!("attack files landed: {landed:?}"));
    }
    let rss = node.rss_kib();
    if rss > RSS_BOUND_KIB {
        bad.push(format!("RSS {rss} KiB over the bound {RSS_BOUND_KIB} KiB"));
    }
    let f = node.src.join(format!("good-{token}.bin"));
    random_file(&f, 10_000);
    let out = node.scp_o(&[path_str(&f), &node.target("alice", "")]);
    if !out.status.success() {
        bad.push(format!("the good upload after it failed: {}", show(&out)));
    }
    bad
}

fn report(failures: Vec<String>, cases: usize, node: &Node) {
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}\n\nnode log:\n{}",
        failures.len(),
        failures.join("\n"),
        node.log()
    );
    eprintln!("{cases} hostile cases: all refused clearly, nothing outside the spool, RSS bounded, good upload after each");
}

// ---------------------------------------------------------------------------
// SCP: raw streams through `ssh host 'scp -t .'`

const NAME: &[&str] = &["name", "path"];
const SIZE: &[&str] = &["size", "length", "large"];
const MODE: &[&str] = &["mode", "permission"];
const PROTO: &[&str] = &["protocol", "unexpected", "unknown", "invalid", "expected"];
const DIR: &[&str] = &["name", "path", "director"];

/// (case, exec command, input with `{t}` for the token, words one of which the
/// error line must contain; empty: the sender itself broke off, any error line
/// or none, but a failed exit and nothing landed).
fn scp_cases() -> Vec<(&'static str, &'static str, Vec<u8>, &'static [&'static str])> {
    let file = |h: &str| format!("{h}hello\0").into_bytes();
    let mut long_line = b"C0644 5 evil-{t}".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 100_000));
    long_line.extend_from_slice(b"\nhello\0");
    let deep: Vec<u8> = "D0755 0 d\n".repeat(4000).into_bytes();
    let deep_long: Vec<u8> = format!("D0755 0 {}\n", "n".repeat(255))
        .repeat(4000)
        .into_bytes();
    vec![
        ("name ../", "scp -t .", file("C0644 5 ../evil-{t}\n"), NAME),
        (
            "name ../../..",
            "scp -t .",
            file("C0644 5 ../../../../tmp/evil-{t}\n"),
            NAME,
        ),
        (
            "name absolute",
            "scp -t .",
            file("C0644 5 /tmp/evil-{t}\n"),
            NAME,
        ),
        (
            "name with slash",
            "scp -t .",
            file("C0644 5 a/evil-{t}\n"),
            NAME,
        ),
        ("name .", "scp -t .", file("C0644 5 .\n"), NAME),
        ("name ..", "scp -t .", file("C0644 5 ..\n"), NAME),
        ("name empty", "scp -t .", file("C0644 5 \n"), NAME),
        (
            "name control char",
            "scp -t .",
            file("C0644 5 evil\x01-{t}\n"),
            NAME,
        ),
        (
            "name escape sequence",
            "scp -t .",
            file("C0644 5 evil\x1b[2J-{t}\n"),
            NAME,
        ),
        (
            "name not UTF-8",
            "scp -t .",
            [b"C0644 5 evil-\xff\xfe-{t}\nhello\0".as_slice()].concat(),
            &["utf-8"],
        ),
        (
            "name component too long",
            "scp -t .",
            file(&format!("C0644 5 evil-{{t}}{}\n", "x".repeat(300))),
            &["long"],
        ),
        (
            "size negative",
            "scp -t .",
            file("C0644 -5 evil-{t}\n"),
            SIZE,
        ),
        (
            "size with suffix",
            "scp -t .",
            file("C0644 5x evil-{t}\n"),
            SIZE,
        ),
        (
            "size overflow",
            "scp -t .",
            file("C0644 99999999999999999999999 evil-{t}\n"),
            SIZE,
        ),
        (
            "size over max_file_size",
            "scp -t .",
            file("C0644 2097152 evil-{t}\n"),
            &["too large"],
        ),
        (
            "mode not octal",
            "scp -t .",
            file("C9999 5 evil-{t}\n"),
            MODE,
        ),
        ("mode letters", "scp -t .", file("Cxyz 5 evil-{t}\n"), MODE),
        ("unknown command", "scp -t .", file("Qgarbage-{t}\n"), PROTO),
        (
            "directory without -r",
            "scp -t .",
            file("D0755 0 evil-{t}\n"),
            &["director", "-r", "recurs"],
        ),
        (
            "bad times",
            "scp -t .",
            file("Tabc 0 0 0\nC0644 5 evil-{t}\n"),
            &["time", "protocol", "invalid"],
        ),
        (
            "directory ..",
            "scp -r -t .",
            b"D0755 0 ..\nC0644 5 evil-{t}\nhello\0E\n".to_vec(),
            DIR,
        ),
        (
            "directory with slash",
            "scp -r -t .",
            b"D0755 0 a/../../x-{t}\nC0644 5 evil-{t}\nhello\0E\n".to_vec(),
            DIR,
        ),
        (
            "E without D",
            "scp -r -t .",
            b"E\nC0644 5 evil-{t}\nhello\0".to_vec(),
            &["unexpected end", "protocol"],
        ),
        (
            "D nested 4000 deep",
            "scp -r -t .",
            [deep.as_slice(), b"C0644 5 evil-{t}\nhello\0"].concat(),
            &["too deep"],
        ),
        (
            "D nested 4000 x 255-byte names",
            "scp -r -t .",
            [deep_long.as_slice(), b"C0644 5 evil-{t}\nhello\0"].concat(),
            &["too long", "too deep"],
        ),
        (
            "overlong header line",
            "scp -t .",
            long_line,
            &["long", "line", "name"],
        ),
        (
            "EOF inside a header line",
            "scp -t .",
            b"C0644 5 evil-{t}".to_vec(),
            &["header line", "protocol"],
        ),
        (
            "more data than announced",
            "scp -t .",
            b"C0644 5 evil-{t}\nhello, and more\0".to_vec(),
            &["more data", "status", "protocol", "expected"],
        ),
        (
            "truncated data then EOF",
            "scp -t .",
            b"C0644 5 evil-{t}\nabc".to_vec(),
            &[],
        ),
        (
            "sender error after data",
            "scp -t .",
            b"C0644 5 evil-{t}\nhello\x01scp: read error\n".to_vec(),
            &[],
        ),
    ]
}

#[test]
fn hostile_scp_streams_are_refused_clearly() {
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("1MiB".into()),
        ..NodeOpts::held()
    });
    let cases = scp_cases();
    let n = cases.len();
    let mut failures = Vec::new();
    for (case, cmd, input, words) in cases {
        let token = unique_token();
        let input: Vec<u8> = {
            // replace "{t}" by the token
            let (pat, mut out, mut i) = (b"{t}", Vec::new(), 0);
            while i < input.len() {
                if input[i..].starts_with(pat) {
                    out.extend_from_slice(token.as_bytes());
                    i += 3;
                } else {
                    out.push(input[i]);
                    i += 1;
                }
            }
            out
        };
        let out = node.ssh_stdin("alice", cmd, &input);
        let mut bad = Vec::new();
        if out.status.success() {
            bad.push("exited 0".to_string());
        }
        if out.stdout.first() != Some(&0) {
            bad.push("the sink did not start with \\0".into());
        }
        if !words.is_empty() {
            match out.stdout.iter().position(|b| *b == 1 || *b == 2) {
                None => bad.push("no \\x01/\\x02 error line".into()),
                Some(pos) => {
                    let rest = &out.stdout[pos + 1..];
                    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                    let msg = String::from_utf8_lossy(&rest[..end]).to_string();
                    let lower = msg.to_lowercase();
                    if !msg.starts_with("scp: ") || msg.chars().any(char::is_control) {
                        bad.push(format!("error line not a clean \"scp: <reason>\": {msg:?}"));
                    }
                    if !words.iter().any(|w| lower.contains(w)) {
                        bad.push(format!("{msg:?} names none of {words:?}"));
                    }
                }
            }
        }
        bad.extend(after_case(&node, &token));
        if !bad.is_empty() {
            failures.push(format!(
                "scp {case:?}: {}\n  {}",
                bad.join("; "),
                show(&out)
            ));
        }
    }
    report(failures, n, &node);
}

// ---------------------------------------------------------------------------
// SFTP requests and SSH-level requests, through paramiko

/// (case in tests/hostile/sftp_case.py, words one of which the refusal the
/// client saw must contain).
const SFTP_CASES: &[(&str, &[&str])] = &[
    ("sftp_dotdot_write", &["escapes the upload root"]),
    ("sftp_absolute_write_outside", &["escapes the upload root"]),
    ("sftp_rename_onto_dotdot", &["escapes the upload root"]),
    ("sftp_read_back", &["downloads are not allowed"]),
    (
        "sftp_read_etc_passwd",
        &["downloads are not allowed", "no such file"],
    ),
    (
        "sftp_read_on_write_handle",
        &["downloads are not allowed", "not open for reading"],
    ),
    ("sftp_remove", &["cannot be removed"]),
    ("sftp_symlink", &["symbolic links are not supported"]),
    ("sftp_readlink", &["symbolic links are not supported"]),
    ("sftp_hardlink_ext", &["not supported"]),
    ("sftp_unknown_ext", &["not supported"]),
    ("sftp_chmod_missing", &["no such file"]),
    ("sftp_rename_missing", &["no such file"]),
    ("sftp_rmdir_missing", &["not an empty directory", "no such"]),
    ("sftp_mkdir_root", &["already exists"]),
    ("sftp_listdir_etc", &["no such directory"]),
    ("sftp_stat_etc_passwd", &["no such file"]),
    (
        "sftp_opendir_file",
        &["no such directory", "not a directory"],
    ),
    ("sftp_append", &["appending"]),
    ("sftp_sparse_hole", &["too large", "never written"]),
    ("sftp_too_many_handles", &["too many open files"]),
    ("sftp_non_utf8_name", &["utf-8"]),
    ("sftp_long_component", &["too long"]),
    ("sftp_deep_path", &["too deep"]),
    ("sftp_path_too_long", &["too long"]),
    ("sftp_too_large", &["too large"]),
    ("sftp_write_after_close", &["invalid handle"]),
    ("sftp_malformed_request", &["malformed"]),
    ("ssh_direct_tcpip", &["prohibited"]),
    ("ssh_tcpip_forward", &["denied"]),
    ("ssh_x11_channel", &["prohibited", "unknown channel type"]),
    ("ssh_x11_request", &["closed", "refused", "denied"]),
    ("ssh_shell", &["no shell here"]),
    (
        "ssh_unknown_channel_type",
        &["unknown channel type", "prohibited"],
    ),
    ("ssh_global_request", &["refused"]),
];

#[test]
fn hostile_sftp_and_ssh_requests_are_refused_clearly() {
    require_tool(PYTHON);
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("1MiB".into()),
        ..NodeOpts::held()
    });
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/sftp_case.py");
    let mut failures = Vec::new();
    for (case, words) in SFTP_CASES {
        let token = unique_token();
        let out = Command::new("timeout")
            .args(["60", PYTHON])
            .arg(&script)
            .args(["127.0.0.1", &node.port.to_string(), "alice"])
            .arg(&node.key)
            .args([case, &token.as_str()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text.lines().last().unwrap_or("").to_string();
        let mut bad = Vec::new();
        match line.strip_prefix("REFUSED ") {
            None => bad.push(format!("not refused: {line:?}")),
            Some(msg) => {
                let lower = msg.to_lowercase();
                if !words.iter().any(|w| lower.contains(w)) {
                    bad.push(format!("{msg:?} names none of {words:?}"));
                }
            }
        }
        bad.extend(after_case(&node, &token));
        if !bad.is_empty() {
            failures.push(format!("{case}: {}\n  {}", bad.join("; "), show(&out)));
        }
    }
    report(failures, SFTP_CASES.len(), &node);
}

// ---------------------------------------------------------------------------
// exec requests through the OpenSSH client

/// (command, words one of which stderr must contain).
const EXEC_CASES: &[(&str, &[&str])] = &[
    ("rm -rf /", &["not allowed", "only", "refused", "upload"]),
    ("scp -f evil-{t}", &["download", "not allowed", "upload"]),
    (
        "scp -t . ; id",
        &[
            "not allowed",
            "only",
            "refused",
            "upload",
            "invalid",
            "unsupported",
        ],
    ),
    (
        "sh -c 'scp -t .'",
        &["not allowed", "only", "refused", "upload"],
    ),
    ("scp -t ../../evil-{t}", &["escapes", "path"]),
    ("scp -r -f .", &["download", "not allowed", "upload"]),
    (
        "/usr/lib/openssh/sftp-server",
        &["not allowed", "only", "refused", "upload"],
    ),
    (
        "scp -t . | sh",
        &[
            "not allowed",
            "only",
            "refused",
            "upload",
            "invalid",
            "unsupported",
        ],
    ),
    (
        "scp -x -t .",
        &["option", "unsupported", "unknown", "invalid"],
    ),
    (
        "/usr/bin/scp -t . && id",
        &[
            "not allowed",
            "only",
            "refused",
            "upload",
            "invalid",
            "unsupported",
        ],
    ),
    (
        "internal-sftp",
        &["not allowed", "only", "refused", "upload"],
    ),
];

#[test]
fn hostile_exec_requests_are_refused_clearly() {
    let node = Node::start_opts(NodeOpts::held());
    let mut failures = Vec::new();
    let mut cases: Vec<(String, &[&str])> = EXEC_CASES
        .iter()
        .map(|(c, w)| (c.to_string(), *w))
        .collect();
    cases.push((format!("scp -t {}", "a".repeat(70_000)), &["long", "too"]));
    let n = cases.len();
    for (cmd, words) in cases {
        let token = unique_token();
        let cmd = cmd.replace("{t}", &token);
        let out = node.ssh_stdin("alice", &cmd, b"C0644 5 x\nhello\0");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase()
            + &String::from_utf8_lossy(&out.stdout).to_lowercase();
        let mut bad = Vec::new();
        if out.status.success() {
            bad.push("exited 0".into());
        }
        if !words.iter().any(|w| err.contains(w)) {
            bad.push(format!("the sender saw none of {words:?}"));
        }
        bad.extend(after_case(&node, &token));
        if !bad.is_empty() {
            let shown = &cmd[..cmd.len().min(60)];
            failures.push(format!(
                "exec {shown:?}: {}\n  {}",
                bad.join("; "),
                show(&out)
            ));
        }
    }
    report(failures, n, &node);
}
