//! SFTP uploads against the real daemon, driven by every real client the service is
//! meant for: OpenSSH `scp` in its default SFTP mode, OpenSSH `sftp -b`, curl
//! (libssh2; `sftp://` and `scp://`), paramiko (Debian's python3-paramiko, run by
//! /usr/bin/python3) and JSch (Debian's libjsch-java, with the uploader in
//! tests/jsch/Upload.java).
//!
//! Nodes are started with `hold_in_ready` (archiving cannot succeed), so landed
//! entries stay in `spool/ready` and are compared byte for byte with what was sent;
//! one test runs the whole pipeline and checks the archive and forward copies.
//! Assertions about landing are made after the client reported success: a file is
//! durable before CLOSE (or the final rename) is answered.
//!
//! Every client command runs under `timeout`; a missing tool fails the test.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const USER: &str = "alice";
const PYTHON: &str = "/usr/bin/python3";
const JSCH_JAR: &str = "/usr/share/java/jsch.jar";

// ---------------------------------------------------------------------------
// running clients

/// Run `argv` under `timeout` in `cwd`; panics (the test fails) if it had to be killed.
fn run(argv: &[String], cwd: &Path) -> Output {
    require_tool("timeout");
    require_tool(&argv[0]);
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(CMD_TIMEOUT_SECS.to_string())
        .args(argv)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    if matches!(out.status.code(), Some(124) | Some(137)) {
        panic!(
            "command timed out after {CMD_TIMEOUT_SECS}s: {argv:?}\n{}",
            show(&out)
        );
    }
    out
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn require_ok(node: &Node, what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\nnode log:\n{}",
        show(out),
        node.log()
    );
}

/// `scp` (SFTP mode, the OpenSSH 9 default: no -O) and require success.
fn scp_ok(node: &Node, args: &[&str]) {
    let out = node.scp_sftp(args);
    require_ok(node, &format!("scp {args:?}"), &out);
}

/// `sftp -b <batch>` as USER; the batch file is written to the node's src dir.
fn sftp_batch(node: &Node, batch: &str) -> Output {
    let file = node.src.join(format!("batch-{}.txt", unique_token()));
    write_file(&file, batch.as_bytes());
    let mut v = vec![
        "/usr/bin/sftp".to_string(),
        "-P".into(),
        node.port.to_string(),
    ];
    v.extend(node.ssh_opts());
    v.extend(argv(&["-b", path_str(&file), &format!("{USER}@127.0.0.1")]));
    let out = run(&v, &node.src);
    let _ = fs::remove_file(&file);
    out
}

fn sftp_batch_ok(node: &Node, batch: &str) -> Output {
    let out = sftp_batch(node, batch);
    require_ok(node, &format!("sftp -b with batch:\n{batch}"), &out);
    out
}

/// Shared start of every paramiko script: argv is `host port user key [args...]`.
const PY_PRELUDE: &str = r#"
import sys, os, errno
try:
    import paramiko
except ImportError as e:
    print("FATAL: /usr/bin/python3 cannot import paramiko (%s): install Debian's python3-paramiko" % e,
          file=sys.stderr)
    sys.exit(3)

HOST, PORT, USER, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ARGS = sys.argv[5:]

def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def connect():
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect(HOST, port=PORT, username=USER, key_filename=KEY, look_for_keys=False,
              allow_agent=False, timeout=30, banner_timeout=30, auth_timeout=30)
    t = c.get_transport()
    print("paramiko %s: host key %s, cipher %s, mac %s" % (
        paramiko.__version__, t.get_remote_server_key().get_name(), t.remote_cipher, t.remote_mac))
    return c, c.open_sftp()

def expect_err(what, fn, words=(), exc=(IOError, OSError)):
    """fn() must raise one of `exc`; its message must contain one of `words` (lowercase)."""
    try:
        fn()
    except exc as e:
        low = str(e).lower()
        if words and not any(w in low for w in words):
            fail("%s: error %r does not mention any of %r" % (what, e, words))
        print("refused as expected: %s: %s: %s" % (what, type(e).__name__, e))
        return e
    except Exception as e:
        fail("%s: expected %r, got %s: %r" % (what, exc, type(e).__name__, e))
    fail("%s: expected an error, but it succeeded" % what)

def ready_count(spool_ready):
    try:
        return len([n for n in os.listdir(spool_ready) if not n.startswith(".")])
    except FileNotFoundError:
        return 0
"#;

/// Run a paramiko script (PY_PRELUDE + `body`) against the node with `args`.
fn paramiko(node: &Node, body: &str, args: &[&str]) -> Output {
    paramiko_with_key(node, &node.key, body, args)
}

fn paramiko_with_key(node: &Node, key: &Path, body: &str, args: &[&str]) -> Output {
    require_tool(PYTHON);
    let script = node.src.join(format!("paramiko-{}.py", unique_token()));
    write_file(&script, format!("{PY_PRELUDE}\n{body}\n").as_bytes());
    let port = node.port.to_string();
    let mut v = argv(&[
        PYTHON,
        path_str(&script),
        "127.0.0.1",
        &port,
        USER,
        path_str(key),
    ]);
    v.extend(args.iter().map(|s| s.to_string()));
    let out = run(&v, &node.src);
    assert_ne!(
        out.status.code(),
        Some(3),
        "paramiko is not available:\n{}",
        show(&out)
    );
    out
}

fn paramiko_ok(node: &Node, what: &str, body: &str, args: &[&str]) -> Output {
    let out = paramiko(node, body, args);
    require_ok(node, &format!("paramiko script ({what})"), &out);
    out
}

/// curl must have been built with the protocol (libssh2): fail clearly otherwise.
fn require_curl_protocol(proto: &str) {
    let curl = require_tool("curl");
    let out = Command::new(curl)
        .arg("--version")
        .output()
        .expect("run curl --version");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let protocols = text
        .lines()
        .find(|l| l.starts_with("Protocols:"))
        .unwrap_or("");
    assert!(
        protocols.split_whitespace().any(|p| p == proto),
        "curl lacks {proto} support (it needs libssh2); `curl --version` says:\n{text}"
    );
}

/// `curl -T local <url>` with the node's client key; no known_hosts check.
fn curl_upload(node: &Node, local: &Path, url: &str, extra: &[&str]) -> Output {
    let key = path_str(&node.key).to_string();
    let pubkey = format!("{key}.pub");
    let mut v = argv(&[
        "curl",
        "--silent",
        "--show-error",
        "--insecure",
        "--connect-timeout",
        "20",
        "--key",
        &key,
        "--pubkey",
        &pubkey,
        "-T",
        path_str(local),
    ]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(url.to_string());
    run(&v, &node.src)
}

// ---------------------------------------------------------------------------
// spool assertions

fn paths(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.record.path.clone()).collect()
}

/// Exactly these paths landed (in any order), each once.
fn assert_landed_paths(node: &Node, expected: &[&str]) -> Vec<Entry> {
    let landed = node.landed();
    let mut got = paths(&landed);
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "landed paths; node log:\n{}", node.log());
    landed
}

/// If `name` landed, say how it compares with `sent` (for failure messages).
fn describe_landed(node: &Node, name: &str, sent: &[u8]) -> String {
    let landed = node.landed();
    let Some(e) = landed.iter().find(|e| e.record.path == name) else {
        return format!("{name}: not landed");
    };
    let data = e.data();
    let common = data.iter().zip(sent).take_while(|(a, b)| a == b).count();
    let zero_tail = data.iter().rev().take_while(|b| **b == 0).count();
    format!(
        "{name} landed: record size {} (limit {:?}), data {} bytes, expected {} bytes, \
         identical to the expected bytes for the first {common} bytes, {zero_tail} trailing \
         zero bytes; blake3 of the landed data {}, of the expected bytes {}, in the record {}; \
         record: {:?}",
        e.record.size,
        node.opts.max_file_size,
        data.len(),
        sent.len(),
        blake3_hex(&data),
        blake3_hex(sent),
        e.record.blake3,
        e.record
    )
}

// ---------------------------------------------------------------------------
// OpenSSH scp, SFTP mode

#[test]
fn scp_one_large_file() {
    let node = held();
    let f = node.src.join("big.bin");
    let content = random_file(&f, 6 << 20);
    scp_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    let landed = assert_landed_paths(&node, &["big.bin"]);
    let e = &landed[0];
    assert_entry(e, &content, "big.bin", "sftp");
    assert_eq!(e.record.mode, 0o644, "mode of a default-umask file");
    assert_eq!(e.record.mtime, None, "no -p: no times recorded");
    wait_partial_empty(&node, "after a successful upload");
}

#[test]
fn scp_several_files_into_a_directory_and_into_the_root() {
    let node = held();
    // The directory is made first with sftp (directories are virtual).
    sftp_batch_ok(&node, "mkdir drop\n");
    let mut sent = Vec::new();
    for (name, size) in [("a.bin", 100_000), ("b.bin", 1 << 20), ("c.txt", 3)] {
        let p = node.src.join(name);
        sent.push((name, random_file(&p, size), p));
    }
    let mut args: Vec<&str> = sent.iter().map(|(_, _, p)| path_str(p)).collect();
    let target = node.target(USER, "drop/");
    args.push(&target);
    scp_ok(&node, &args);

    // Without the trailing slash: `drop` is known to be a directory.
    let d = node.src.join("d.bin");
    let d_content = random_file(&d, 5000);
    scp_ok(&node, &[path_str(&d), &node.target(USER, "drop")]);

    // Several files into the root (`host:`).
    let mut args: Vec<&str> = sent.iter().map(|(_, _, p)| path_str(p)).collect();
    let root = node.target(USER, "");
    args.push(&root);
    scp_ok(&node, &args);

    let landed = assert_landed_paths(
        &node,
        &[
            "drop/a.bin",
            "drop/b.bin",
            "drop/c.txt",
            "drop/d.bin",
            "a.bin",
            "b.bin",
            "c.txt",
        ],
    );
    for (name, content, _) in &sent {
        let p = format!("drop/{name}");
        assert_entry(find_one(&landed, &p), content, &p, "sftp");
        assert_entry(find_one(&landed, name), content, name, "sftp");
    }
    assert_entry(
        find_one(&landed, "drop/d.bin"),
        &d_content,
        "drop/d.bin",
        "sftp",
    );
    let ids: std::collections::HashSet<_> = landed.iter().map(|e| &e.record.id).collect();
    assert_eq!(ids.len(), landed.len(), "distinct ids");
}

#[test]
fn scp_to_a_new_name() {
    let node = held();
    let f = node.src.join("local-name.bin");
    let content = random_file(&f, 300_000);
    scp_ok(&node, &[path_str(&f), &node.target(USER, "newname.dat")]);
    sftp_batch_ok(&node, "mkdir dir\n");
    scp_ok(
        &node,
        &[path_str(&f), &node.target(USER, "dir/other name.dat")],
    );
    // An absolute path is inside the virtual root.
    scp_ok(&node, &[path_str(&f), &node.target(USER, "/abs.dat")]);
    let landed = assert_landed_paths(&node, &["newname.dat", "dir/other name.dat", "abs.dat"]);
    for p in ["newname.dat", "dir/other name.dat", "abs.dat"] {
        assert_entry(find_one(&landed, p), &content, p, "sftp");
    }
}

#[test]
fn scp_recursive_tree_with_spaces() {
    let node = held();
    let tree = node.src.join("my tree");
    let files = [
        ("a.txt", 1000usize),
        ("sub dir/f f.bin", 700 << 10),
        ("sub dir/deeper/g", 0),
        ("sub dir/deeper/even deeper/h h h", 5),
        ("other/x", 2 << 20),
    ];
    let mut sent = Vec::new();
    for (rel, size) in files {
        let p = tree.join(rel);
        sent.push((format!("my tree/{rel}"), random_file(&p, size)));
    }
    fs::create_dir_all(tree.join("empty dir")).unwrap();
    scp_ok(&node, &["-r", path_str(&tree), &node.target(USER, "")]);
    let expected: Vec<&str> = sent.iter().map(|(p, _)| p.as_str()).collect();
    let landed = assert_landed_paths(&node, &expected);
    for (p, content) in &sent {
        assert_entry(find_one(&landed, p), content, p, "sftp");
    }
    // The tree's directories are visible to the sender now (virtual view).
    let out = sftp_batch_ok(&node, "ls \"my tree\"\nls \"my tree/sub dir/deeper\"\n");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["a.txt", "sub dir", "other", "even deeper"] {
        assert!(text.contains(name), "ls shows {name:?}:\n{}", show(&out));
    }
}

#[test]
fn scp_preserve_times_and_mode() {
    let node = held();
    let f = node.src.join("timed.bin");
    let content = random_file(&f, 12345);
    set_mode(&f, 0o640);
    set_mtime(&f, 1_600_000_000);
    scp_ok(&node, &["-p", path_str(&f), &node.target(USER, "")]);

    let tree = node.src.join("ptree");
    let g = tree.join("in/g.dat");
    let g_content = random_file(&g, 999);
    set_mode(&g, 0o600);
    set_mtime(&g, 1_500_000_300);
    scp_ok(
        &node,
        &["-r", "-p", path_str(&tree), &node.target(USER, "")],
    );

    let landed = assert_landed_paths(&node, &["timed.bin", "ptree/in/g.dat"]);
    let e = find_one(&landed, "timed.bin");
    assert_entry(e, &content, "timed.bin", "sftp");
    assert_eq!(
        e.record.mtime,
        Some(1_600_000_000),
        "mtime (scp -p): {:?}",
        e.record
    );
    assert!(e.record.atime.is_some(), "atime (scp -p): {:?}", e.record);
    assert_eq!(e.record.mode, 0o640, "mode (scp -p): {:?}", e.record);
    let e = find_one(&landed, "ptree/in/g.dat");
    assert_entry(e, &g_content, "ptree/in/g.dat", "sftp");
    assert_eq!(
        e.record.mtime,
        Some(1_500_000_300),
        "mtime (scp -r -p): {:?}",
        e.record
    );
    assert_eq!(e.record.mode, 0o600, "mode (scp -r -p): {:?}", e.record);
}

#[test]
fn scp_over_max_file_size_is_refused() {
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("1MiB".into()),
        ..NodeOpts::held()
    });
    let at = node.src.join("at-limit.bin");
    let at_content = random_file(&at, 1 << 20);
    scp_ok(&node, &[path_str(&at), &node.target(USER, "")]);

    let over = node.src.join("over-limit.bin");
    let over_content = random_file(&over, (1 << 20) + 1);
    let out = node.scp_sftp(&[path_str(&over), &node.target(USER, "")]);
    assert!(
        !out.status.success(),
        "over the limit must fail:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("too large") || err.contains("limit"),
        "the refusal names the size limit:\n{}",
        show(&out)
    );
    assert!(
        node.landed()
            .iter()
            .all(|e| e.record.path != "over-limit.bin"),
        "scp failed (exit {:?}), yet: {}",
        out.status.code(),
        describe_landed(&node, "over-limit.bin", &over_content)
    );
    let landed = assert_landed_paths(&node, &["at-limit.bin"]);
    assert_entry(&landed[0], &at_content, "at-limit.bin", "sftp");
    wait_partial_empty(&node, "refused file");
    assert_still_serves(&node, "sftp");
}

// ---------------------------------------------------------------------------
// OpenSSH sftp -b

#[test]
fn sftp_batch_mkdir_cd_put_ls_rename() {
    let node = held();
    let a = node.src.join("a.bin");
    let a_content = random_file(&a, 1 << 20);
    let tree = node.src.join("tree");
    let files = [
        ("x.txt", 100usize),
        ("with space/y z.bin", 200_000),
        ("nested/deep/z", 0),
    ];
    let mut sent = Vec::new();
    for (rel, size) in files {
        let p = tree.join(rel);
        sent.push((format!("incoming/tree/{rel}"), random_file(&p, size)));
    }
    let batch = "\
mkdir incoming
cd incoming
pwd
put a.bin
put -r tree
ls
ls -l a.bin
rename a.bin renamed.bin
ls -1
";
    let out = sftp_batch_ok(&node, batch);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("Remote working directory: /incoming"),
        "pwd after cd:\n{}",
        show(&out)
    );
    // `ls` right after the upload lists it; `ls -l` shows its size.
    let first_ls = text
        .split("sftp> ls -l a.bin")
        .next()
        .unwrap()
        .rsplit("sftp> ls\n")
        .next()
        .unwrap();
    assert!(
        first_ls.contains("a.bin") && first_ls.contains("tree"),
        "ls shows the uploads:\n{}",
        show(&out)
    );
    let long = text
        .split("sftp> ls -l a.bin")
        .nth(1)
        .unwrap()
        .split("sftp> rename")
        .next()
        .unwrap();
    assert!(
        long.contains(&(1u64 << 20).to_string()),
        "ls -l shows the size of the uploaded file:\n{}",
        show(&out)
    );
    let last_ls = text.rsplit("sftp> ls -1").next().unwrap();
    assert!(
        last_ls.contains("renamed.bin") && !last_ls.contains("a.bin"),
        "ls after rename shows the new name only:\n{}",
        show(&out)
    );

    let mut expected: Vec<&str> = sent.iter().map(|(p, _)| p.as_str()).collect();
    expected.push("incoming/a.bin");
    let landed = assert_landed_paths(&node, &expected);
    // A landed file is renamed in the sender's view only; its record keeps the name
    // it landed under.
    assert_entry(
        find_one(&landed, "incoming/a.bin"),
        &a_content,
        "incoming/a.bin",
        "sftp",
    );
    for (p, content) in &sent {
        assert_entry(find_one(&landed, p), content, p, "sftp");
    }
}

#[test]
fn sftp_batch_rm_of_a_landed_file_is_refused() {
    let node = held();
    let f = node.src.join("keep.bin");
    let content = random_file(&f, 4096);
    let out = sftp_batch(&node, "put keep.bin\nrm keep.bin\n");
    assert!(
        !out.status.success(),
        "rm of a landed file must fail the batch:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("permission denied") || err.contains("cannot be removed"),
        "rm refusal:\n{}",
        show(&out)
    );
    let landed = assert_landed_paths(&node, &["keep.bin"]);
    assert_entry(&landed[0], &content, "keep.bin", "sftp");
}

#[test]
fn sftp_batch_refuses_escapes_and_downloads() {
    let node = held();
    let token = unique_token();
    let f = node.src.join("f.bin");
    random_file(&f, 1000);
    // '-' lets the batch go on after an error.
    let batch = format!(
        "-put f.bin ../esc-{token}\n-put f.bin /../esc-{token}\n-mkdir ../dir-{token}\n\
         put f.bin landed.bin\n-get landed.bin dl-{token}\n"
    );
    let out = sftp_batch_ok(&node, &batch);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("permission denied"),
        "escapes and the download are refused with permission denied:\n{}",
        show(&out)
    );
    let dl = node.src.join(format!("dl-{token}"));
    assert!(
        fs::metadata(&dl).map(|m| m.len() == 0).unwrap_or(true),
        "nothing was downloaded"
    );
    let escaped: Vec<_> = node
        .find_named(&token)
        .into_iter()
        .filter(|p| *p != dl)
        .collect();
    assert!(escaped.is_empty(), "nothing escaped the root: {escaped:?}");
    assert_landed_paths(&node, &["landed.bin"]);
}

// ---------------------------------------------------------------------------
// curl (libssh2)

#[test]
fn curl_sftp_upload() {
    require_curl_protocol("sftp");
    let node = held();
    let f = node.src.join("curl-local.bin");
    let content = random_file(&f, 3 << 20);
    let url = format!("sftp://{USER}@127.0.0.1:{}/~/curl-sftp.bin", node.port);
    let out = curl_upload(&node, &f, &url, &[]);
    require_ok(&node, "curl sftp upload", &out);
    // Into a directory that curl creates itself.
    let url =
        format!("sftp://{USER}@127.0.0.1:{}/~/c dir/sub/c.bin", node.port).replace(' ', "%20");
    let out = curl_upload(&node, &f, &url, &["--ftp-create-dirs"]);
    require_ok(&node, "curl sftp upload with --ftp-create-dirs", &out);
    let landed = assert_landed_paths(&node, &["curl-sftp.bin", "c dir/sub/c.bin"]);
    for e in &landed {
        assert_entry(e, &content, &e.record.path.clone(), "sftp");
        assert_eq!(e.record.mode, 0o644, "curl's default mode: {:?}", e.record);
    }
}

#[test]
fn curl_scp_upload() {
    require_curl_protocol("scp");
    let node = held();
    let f = node.src.join("curl-local.bin");
    let content = random_file(&f, 3 << 20);
    let url = format!("scp://{USER}@127.0.0.1:{}/~/curl-scp.bin", node.port);
    let out = curl_upload(&node, &f, &url, &[]);
    require_ok(&node, "curl scp upload", &out);
    let landed = assert_landed_paths(&node, &["curl-scp.bin"]);
    assert_entry(&landed[0], &content, "curl-scp.bin", "scp");
}

// ---------------------------------------------------------------------------
// paramiko

#[test]
fn paramiko_put_then_stat_and_listdir() {
    let node = held();
    let f = node.src.join("pm.bin");
    let content = random_file(&f, 5 << 20);
    let small = node.src.join("small.txt");
    let small_content = random_file(&small, 17);
    let body = r#"
c, s = connect()
local, small = ARGS
# put() STATs the file after CLOSE and raises if the size differs.
a = s.put(local, "pm.bin")
print("put returned size", a.st_size)
if a.st_size != os.path.getsize(local):
    fail("size after put: %d" % a.st_size)
s.mkdir("pdir")
s.chdir("pdir")
print("cwd", s.getcwd())
s.put(small, "small.txt")
st = s.stat("/pdir/small.txt")
if st.st_size != os.path.getsize(small):
    fail("stat size %d" % st.st_size)
names = s.listdir("/")
print("listdir /", names)
if "pm.bin" not in names or "pdir" not in names:
    fail("listdir / lacks the uploads: %r" % names)
if "small.txt" not in s.listdir("."):
    fail("listdir . lacks small.txt")
s.close(); c.close()
print("done")
"#;
    let out = paramiko_ok(&node, "put", body, &[path_str(&f), path_str(&small)]);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let landed = assert_landed_paths(&node, &["pm.bin", "pdir/small.txt"]);
    assert_entry(find_one(&landed, "pm.bin"), &content, "pm.bin", "sftp");
    assert_entry(
        find_one(&landed, "pdir/small.txt"),
        &small_content,
        "pdir/small.txt",
        "sftp",
    );
}

#[test]
fn paramiko_temp_name_then_rename_lands_once_under_the_final_name() {
    let node = held();
    let a = node.src.join("report.csv");
    let a_content = random_file(&a, 2 << 20);
    let b = node.src.join("data.bin");
    let b_content = random_file(&b, 70_000);
    let c = node.src.join("hidden-src");
    let c_content = random_file(&c, 1234);
    let ready = node.state_dir(READY);
    let body = r#"
c, s = connect()
a, b, h, ready = ARGS
n0 = ready_count(ready)

# WinSCP's flow: upload to <name>.filepart, then rename (posix-rename@openssh.com).
s.put(a, "report.csv.filepart")          # STAT after CLOSE answers the parked size
if ready_count(ready) != n0:
    fail("a .filepart upload landed at CLOSE")
if s.stat("report.csv.filepart").st_size != os.path.getsize(a):
    fail("stat of the parked temp file")
if "report.csv.filepart" not in s.listdir("."):
    fail("ls lacks the parked temp file")
s.posix_rename("report.csv.filepart", "report.csv")
if ready_count(ready) != n0 + 1:
    fail("not landed (exactly once) when the rename was answered: %d -> %d" % (n0, ready_count(ready)))
if s.stat("report.csv").st_size != os.path.getsize(a):
    fail("stat of the renamed file")
expect_err("stat of the temp name after rename", lambda: s.stat("report.csv.filepart"),
           ("no such",), exc=FileNotFoundError)

# Plain SSH_FXP_RENAME, *.part
s.put(b, "data.bin.part")
if ready_count(ready) != n0 + 1:
    fail("a .part upload landed at CLOSE")
s.rename("data.bin.part", "data.bin")
if ready_count(ready) != n0 + 2:
    fail("data.bin not landed at rename")

# rclone's *.partial, renamed through another temp name (*.part), into a dir.
s.mkdir("final")
s.put(h, "hidden.partial")
s.rename("hidden.partial", "final/still.part")
if ready_count(ready) != n0 + 2:
    fail("a temp-to-temp rename landed")
s.rename("final/still.part", "final/visible.dat")
if ready_count(ready) != n0 + 3:
    fail("visible.dat not landed at rename")
s.close(); c.close()
print("done")
"#;
    paramiko_ok(
        &node,
        "temp names",
        body,
        &[path_str(&a), path_str(&b), path_str(&c), path_str(&ready)],
    );
    let landed = assert_landed_paths(&node, &["report.csv", "data.bin", "final/visible.dat"]);
    assert_entry(
        find_one(&landed, "report.csv"),
        &a_content,
        "report.csv",
        "sftp",
    );
    assert_entry(
        find_one(&landed, "data.bin"),
        &b_content,
        "data.bin",
        "sftp",
    );
    assert_entry(
        find_one(&landed, "final/visible.dat"),
        &c_content,
        "final/visible.dat",
        "sftp",
    );
    wait_partial_empty(&node, "temp uploads all renamed");
}

#[test]
fn paramiko_temp_name_uploaded_twice_lands_the_second_upload() {
    // A client that uploads to the same temporary name again in one session (a retry,
    // or WinSCP re-sending after a failed verification) opens it with TRUNC: the file
    // starts empty, and what lands is exactly the second upload.
    let node = held();
    let first = random_bytes(100_000, 1);
    let second = random_bytes(30_000, 2);
    let fa = node.src.join("first");
    let fb = node.src.join("second");
    write_file(&fa, &first);
    write_file(&fb, &second);
    let body = r#"
c, s = connect()
a, b = ARGS
s.put(a, "again.csv.filepart")
s.put(b, "again.csv.filepart", confirm=False)     # OPEN WRITE|CREAT|TRUNC
st = s.stat("again.csv.filepart")
if st.st_size != os.path.getsize(b):
    # reported by the Rust side (with what landed); go on to the rename
    print("MISMATCH: after re-uploading with TRUNC, stat says %d bytes; the new file has %d"
          % (st.st_size, os.path.getsize(b)), file=sys.stderr)
s.posix_rename("again.csv.filepart", "again.csv")
s.close(); c.close()
print("done")
"#;
    let out = paramiko(&node, body, &[path_str(&fa), path_str(&fb)]);
    let landed = node.landed();
    let info = describe_landed(&node, "again.csv", &second);
    assert!(
        out.status.success(),
        "paramiko script failed:\n{}\n{info}\nnode log:\n{}",
        show(&out),
        node.log()
    );
    assert_eq!(paths(&landed), vec!["again.csv".to_string()], "{info}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("MISMATCH"),
        "the TRUNC was ignored:\n{}\n{info}",
        show(&out)
    );
    assert_entry(&landed[0], &second, "again.csv", "sftp");
}

#[test]
fn paramiko_rewriting_earlier_bytes_lands_the_final_content() {
    // SFTP writes may go to any offset: a client that writes a placeholder header,
    // the body, then seeks back to fill in the header. What lands (and its recorded
    // BLAKE3) is the file as it is at CLOSE.
    let node = held();
    let body_bytes = random_bytes(200_000, 9);
    let mut want = body_bytes.clone();
    want[..16].copy_from_slice(b"HEADER-FILLED-IN");
    let f = node.src.join("body");
    write_file(&f, &body_bytes);
    let body = r#"
c, s = connect()
data = open(ARGS[0], "rb").read()
with s.open("rewritten.bin", "w") as f:
    f.write(data)
    f.seek(0)
    f.write(b"HEADER-FILLED-IN")
if s.stat("rewritten.bin").st_size != len(data):
    fail("size")
s.close(); c.close()
print("done")
"#;
    paramiko_ok(&node, "rewrite", body, &[path_str(&f)]);
    let landed = node.landed();
    assert_eq!(paths(&landed), vec!["rewritten.bin".to_string()]);
    let info = describe_landed(&node, "rewritten.bin", &want);
    assert_eq!(
        landed[0].record.blake3,
        blake3_hex(&landed[0].data()),
        "the recorded BLAKE3 describes the landed data: {info}"
    );
    assert_entry(&landed[0], &want, "rewritten.bin", "sftp");
}

#[test]
fn paramiko_rm_of_own_temp_upload_and_unrenamed_temp_lands_under_its_name() {
    let node = held();
    let after = node.src.join("after.bin");
    let after_content = random_file(&after, 2000);
    let ready = node.state_dir(READY);
    let body = r#"
c, s = connect()
after, ready = ARGS
n0 = ready_count(ready)
f = s.open("x.filepart", "w")
f.write(b"partial upload " * 1000)
f.close()
if s.stat("x.filepart").st_size != 15000:
    fail("stat of the parked upload")
s.remove("x.filepart")
expect_err("stat after rm", lambda: s.stat("x.filepart"), ("no such",), exc=FileNotFoundError)
if "x.filepart" in s.listdir("."):
    fail("ls still lists the removed temp upload")
expect_err("rename after rm", lambda: s.rename("x.filepart", "x"), ())
if ready_count(ready) != n0:
    fail("something landed")
s.put(after, "after.bin")
s.close(); c.close()
print("done")
"#;
    paramiko_ok(
        &node,
        "rm own temp",
        body,
        &[path_str(&after), path_str(&ready)],
    );
    let landed = assert_landed_paths(&node, &["after.bin"]);
    assert_entry(&landed[0], &after_content, "after.bin", "sftp");

    // A parked temp upload that is never renamed lands under its name when the
    // session ends (the sender was told CLOSE succeeded: it must never vanish);
    // `.never.tmp` is an ordinary name, landed at CLOSE.
    let never = vec![b'x'; 100_000];
    let body = r#"
c, s = connect()
with s.open("never.part", "w") as f:
    f.write(b"x" * 100000)
s.put(ARGS[0], ".never.tmp")
if s.stat("never.part").st_size != 100000:
    fail("stat of the parked upload")
s.close(); c.close()
print("done")
"#;
    paramiko_ok(&node, "never renamed", body, &[path_str(&after)]);
    node.wait_ready(3, Duration::from_secs(20));
    let landed = assert_landed_paths(&node, &["after.bin", "never.part", ".never.tmp"]);
    assert_entry(
        find_one(&landed, "never.part"),
        &never,
        "never.part",
        "sftp",
    );
    assert_entry(
        find_one(&landed, ".never.tmp"),
        &after_content,
        ".never.tmp",
        "sftp",
    );
    wait_partial_empty(&node, "session ended with parked temp uploads");
    // and in a new session it is a landed file like any other
    let body = r#"
c, s = connect()
if s.stat("never.part").st_size != 100000:
    fail("stat of a landed temp-named upload")
expect_err("rm of a landed temp-named upload", lambda: s.remove("never.part"),
           ("cannot be removed",), exc=PermissionError)
print("done")
"#;
    paramiko_ok(&node, "after the session", body, &[]);
    assert_landed_paths(&node, &["after.bin", "never.part", ".never.tmp"]);
}

#[test]
fn paramiko_escapes_are_refused() {
    let node = held();
    let token = unique_token();
    let f = node.src.join("f.bin");
    random_file(&f, 100);
    let body = r#"
c, s = connect()
local, token = ARGS
for p in ["../esc-" + token, "/../esc-" + token, "a/../../esc-" + token,
          "/a/b/../../../esc-" + token, "../../../../../../tmp/esc-" + token]:
    expect_err("open for write " + p, lambda: s.open(p, "w"), ("escapes",), exc=PermissionError)
    expect_err("put " + p, lambda: s.put(local, p), ("escapes",), exc=PermissionError)
expect_err("mkdir ../", lambda: s.mkdir("../dir-" + token), ("escapes",), exc=PermissionError)
expect_err("stat ../", lambda: s.stat("../esc-" + token), ("escapes",), exc=PermissionError)
expect_err("listdir ../", lambda: s.listdir(".."), ("escapes",), exc=PermissionError)
# a parked temp file cannot be renamed out of the root either
s.put(local, "ok-%s.part" % token)
expect_err("rename out", lambda: s.posix_rename("ok-%s.part" % token, "../esc-" + token),
           ("escapes",), exc=PermissionError)
s.remove("ok-%s.part" % token)
# `..` inside the root is fine
s.mkdir("in")
s.put(local, "in/../inside.bin")
s.close(); c.close()
print("done")
"#;
    paramiko_ok(&node, "escapes", body, &[path_str(&f), &token]);
    let found: Vec<_> = node
        .find_named(&token)
        .into_iter()
        .filter(|p| !p.starts_with(&node.src))
        .collect();
    assert!(found.is_empty(), "escaped files: {found:?}");
    assert!(!Path::new("/tmp").join(format!("esc-{token}")).exists());
    let unexpected = node.unexpected_files();
    assert!(
        unexpected.is_empty(),
        "files outside the spool: {unexpected:?}"
    );
    assert_landed_paths(&node, &["inside.bin"]);
    wait_partial_empty(&node, "escapes");
}

#[test]
fn paramiko_download_is_refused() {
    let node = held();
    let f = node.src.join("up.bin");
    random_file(&f, 50_000);
    let dest = node.src.join("downloaded.bin");
    let body = r#"
c, s = connect()
local, dest = ARGS
s.put(local, "up.bin")
expect_err("open r + read", lambda: s.open("up.bin", "r").read(), ("download",), exc=PermissionError)
expect_err("get", lambda: s.get("up.bin", dest), ("download",), exc=PermissionError)
expect_err("open r of an unknown name", lambda: s.open("nothing-here", "r"), ("download", "no such"))
if os.path.exists(dest) and os.path.getsize(dest) != 0:
    fail("bytes were downloaded")
s.close(); c.close()
print("done")
"#;
    paramiko_ok(&node, "download", body, &[path_str(&f), path_str(&dest)]);
    assert_landed_paths(&node, &["up.bin"]);
}

#[test]
fn paramiko_over_max_file_size_is_refused() {
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("1MiB".into()),
        ..NodeOpts::held()
    });
    let at = node.src.join("at-limit.bin");
    let at_content = random_file(&at, 1 << 20);
    let over = node.src.join("over-limit.bin");
    let over_content = random_file(&over, (1 << 20) + 1);
    let small = node.src.join("small.bin");
    let small_content = random_file(&small, 10);
    let body = r#"
c, s = connect()
at, over, small = ARGS
s.put(at, "at-limit.bin")
expect_err("put over the limit", lambda: s.put(over, "over-limit.bin"), ("too large", "limit"))
s.put(small, "small.bin")
s.close(); c.close()
print("done")
"#;
    let out = paramiko(
        &node,
        body,
        &[path_str(&at), path_str(&over), path_str(&small)],
    );
    assert!(
        out.status.success(),
        "paramiko script (max_file_size) failed:\n{}\n{}\nnode log:\n{}",
        show(&out),
        describe_landed(&node, "over-limit.bin", &over_content),
        node.log()
    );
    let landed = assert_landed_paths(&node, &["at-limit.bin", "small.bin"]);
    assert_entry(
        find_one(&landed, "at-limit.bin"),
        &at_content,
        "at-limit.bin",
        "sftp",
    );
    assert_entry(
        find_one(&landed, "small.bin"),
        &small_content,
        "small.bin",
        "sftp",
    );
    wait_partial_empty(&node, "refused file");
}

#[test]
fn paramiko_setstat_size_over_max_file_size_is_refused() {
    // The size a client sets with FSETSTAT/SETSTAT (truncate) is a file size like any
    // other: it may not exceed spool.max_file_size either.
    let node = Node::start_opts(NodeOpts {
        max_file_size: Some("1MiB".into()),
        ..NodeOpts::held()
    });
    let body = r#"
c, s = connect()
def fsetstat_grow():
    with s.open("grown.bin", "w") as f:
        f.write(b"abc")
        f.truncate(4 << 20)            # FSETSTAT size: 4 MiB, over the 1 MiB limit
expect_err("FSETSTAT size over the limit", fsetstat_grow, ("too large", "limit"))
def setstat_grow():
    with s.open("grown2.bin", "w") as f:
        f.write(b"abc")
        s.truncate("grown2.bin", 3 << 20)   # SETSTAT size on the path of the open upload
expect_err("SETSTAT size over the limit", setstat_grow, ("too large", "limit"))
s.close(); c.close()
print("done")
"#;
    let out = paramiko(&node, body, &[]);
    let landed = node.landed();
    assert!(
        out.status.success() && landed.is_empty(),
        "a size over the limit set by (F)SETSTAT must be refused and nothing land:\n{}\n\
         landed: {:?}\nnode log:\n{}",
        show(&out),
        landed
            .iter()
            .map(|e| (&e.record.path, e.record.size))
            .collect::<Vec<_>>(),
        node.log()
    );
    wait_partial_empty(&node, "refused sizes");
}

// ---------------------------------------------------------------------------
// JSch

/// A held node that also serves an ECDSA P-256 host key (JSch 0.1.5x has no ed25519),
/// with an extra PEM ECDSA client key (JSch cannot read OpenSSH-format private keys)
/// in authorized_keys. Returns the node and that client key.
fn jsch_node() -> (Node, PathBuf) {
    let mut node = held();
    let d = node.dir.path().to_path_buf();
    let key = d.join("key_jsch_ecdsa");
    let out = Command::new(require_tool("ssh-keygen"))
        .args(["-t", "ecdsa", "-b", "256", "-m", "PEM", "-N", "", "-q"])
        .args(["-C", "jsch-test", "-f"])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", show(&out));
    let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut ak = fs::OpenOptions::new()
        .append(true)
        .open(d.join("authorized_keys"))
        .unwrap();
    ak.write_all(pubkey.as_bytes()).unwrap();
    drop(ak);

    // ssh.host_key as a list: the harness's ed25519 key plus an ECDSA one (generated
    // on start because its file name contains "ecdsa").
    node.stop();
    let cfg = fs::read_to_string(&node.config_path).unwrap();
    let ed = d.join("host_key");
    let ec = d.join("host_key_ecdsa");
    let old = format!("host_key = \"{}\"", ed.display());
    assert!(cfg.contains(&old), "config has {old:?}:\n{cfg}");
    let cfg = cfg.replacen(
        &old,
        &format!("host_key = [\"{}\", \"{}\"]", ed.display(), ec.display()),
        1,
    );
    fs::write(&node.config_path, cfg).unwrap();
    node.restart();
    assert!(
        ec.exists(),
        "the ECDSA host key was generated; log:\n{}",
        node.log()
    );
    (node, key)
}

/// Compile tests/jsch/Upload.java into `dir`; returns the class path.
fn compile_jsch_uploader(dir: &Path) -> String {
    require_tool("javac");
    require_tool("java");
    assert!(
        Path::new(JSCH_JAR).is_file(),
        "{JSCH_JAR} is missing: install Debian's libjsch-java"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jsch/Upload.java");
    fs::create_dir_all(dir).unwrap();
    let out = run(
        &argv(&[
            "javac",
            "-cp",
            JSCH_JAR,
            "-d",
            path_str(dir),
            path_str(&src),
        ]),
        dir,
    );
    assert!(out.status.success(), "javac Upload.java:\n{}", show(&out));
    format!("{JSCH_JAR}:{}", dir.display())
}

#[test]
fn jsch_put_lands() {
    let (node, key) = jsch_node();
    let cp = compile_jsch_uploader(&node.src.join("jsch-classes"));
    let f = node.src.join("jsch-local.bin");
    let content = random_file(&f, 4 << 20);
    let port = node.port.to_string();
    let out = run(
        &argv(&[
            "java",
            "-cp",
            &cp,
            "Upload",
            "127.0.0.1",
            &port,
            USER,
            path_str(&key),
            path_str(&f),
            "jsch.bin",
        ]),
        &node.src,
    );
    require_ok(&node, "JSch upload", &out);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("JSch said:\n{stdout}");
    assert!(
        stdout.contains("host-key-type: ecdsa-sha2-nistp256"),
        "JSch used the ECDSA host key:\n{}",
        show(&out)
    );
    let landed = assert_landed_paths(&node, &["jsch.bin"]);
    assert_entry(&landed[0], &content, "jsch.bin", "sftp");
    // The OpenSSH client still gets the ed25519 key and is served as before.
    assert_still_serves(&node, "sftp");
}

// ---------------------------------------------------------------------------
// the whole pipeline: archive and forward copies

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn sftp_upload_reaches_archive_and_forward() {
    let node = Node::start();
    let f = node.src.join("e2e file.bin");
    let content = random_file(&f, 3 << 20);
    scp_ok(&node, &[path_str(&f), &node.target(USER, "")]);
    // The pipeline moves the entry on: archive copy, forward copy, spool entry removed.
    let done = poll(Duration::from_secs(60), || {
        let mut a = Vec::new();
        walk_files(&node.archive, &mut a);
        let mut fw = Vec::new();
        walk_files(&node.outgoing, &mut fw);
        let data = a
            .iter()
            .find(|p| p.file_name().unwrap() == "e2e file.bin")?;
        let fwd = fw
            .iter()
            .find(|p| p.to_string_lossy().ends_with("__e2e file.bin"))?;
        node.landed()
            .is_empty()
            .then(|| (data.clone(), fwd.clone()))
    });
    let (archived, forwarded) = done.unwrap_or_else(|| {
        panic!(
            "the upload did not reach archive and forward within 60s; log:\n{}",
            node.log()
        )
    });
    let want = blake3_hex(&content);
    assert_eq!(
        blake3_hex(&fs::read(&archived).unwrap()),
        want,
        "archive copy"
    );
    assert_eq!(
        blake3_hex(&fs::read(&forwarded).unwrap()),
        want,
        "forward copy"
    );
    // {date}/{node}/{id}/{name}, with <name>.record.json beside it
    let rel = archived.strip_prefix(&node.archive).unwrap();
    let comps: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    assert_eq!(comps.len(), 4, "archive layout: {rel:?}");
    assert_eq!(comps[1], "test-node", "archive layout: {rel:?}");
    assert!(
        comps[2].starts_with("test-node-"),
        "archive layout: {rel:?}"
    );
    let rec_path = archived.with_file_name("e2e file.bin.record.json");
    let rec: ingestd::core::record::Record =
        serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    assert_eq!(rec.path, "e2e file.bin");
    assert_eq!(rec.protocol, "sftp");
    assert_eq!(rec.blake3, want);
    assert_eq!(rec.id, comps[2]);
}

/// russh-sftp's own loop desynchronises on a packet over its limit; ours answers
/// the request with a FAILURE status, skips the body and keeps serving the session.
/// Driven with raw SFTP packets over a paramiko channel.
#[test]
fn oversized_sftp_packet_is_refused_and_the_session_goes_on() {
    let node = held();
    let body = r#"
import struct
c, _ = connect()
ch = c.get_transport().open_session()
ch.invoke_subsystem("sftp")
def send(t, payload):
    ch.sendall(struct.pack(">IB", len(payload) + 1, t) + payload)
def recv():
    hdr = b""
    while len(hdr) < 4:
        hdr += ch.recv(4 - len(hdr))
    n = struct.unpack(">I", hdr)[0]
    b = b""
    while len(b) < n:
        b += ch.recv(n - len(b))
    return b
def sstr(s):
    return struct.pack(">I", len(s)) + s
send(1, struct.pack(">I", 3))                       # INIT v3
v = recv()
if v[0] != 2: fail("expected VERSION, got type %d" % v[0])
# a 1 MiB "WRITE" (id 7): far over the 256 KiB limit
send(6, struct.pack(">I", 7) + sstr(b"h1") + struct.pack(">Q", 0) + sstr(b"x" * (1 << 20)))
r = recv()
typ, rid, code = r[0], struct.unpack(">I", r[1:5])[0], struct.unpack(">I", r[5:9])[0]
if (typ, rid) != (101, 7) or code == 0:
    fail("oversized packet: expected a failure STATUS for id 7, got type %d id %d code %d" % (typ, rid, code))
# the stream is still in step: REALPATH "." (id 8) answers NAME "/"
send(16, struct.pack(">I", 8) + sstr(b"."))
r = recv()
if r[0] != 104 or struct.unpack(">I", r[1:5])[0] != 8 or b"/" not in r:
    fail("session out of step after the oversized packet: %r" % r[:40])
ch.close(); c.close()
print("done")
"#;
    paramiko_ok(&node, "oversized packet", body, &[]);
    assert!(node.landed().is_empty());
}

// ---------------------------------------------------------------------------
// temporary names never vanish; a parked upload survives kill -9

#[test]
fn scp_temp_looking_and_temp_pattern_names_all_land() {
    let node = held();
    // Ordinary names that merely look temporary land at CLOSE.
    let mut sent = Vec::new();
    for (name, size) in [
        ("report.tmp", 1000),
        (".env", 20),
        ("plain.csv", 300),
        ("x.filepart", 70_000),
        ("y.partial", 5),
    ] {
        let p = node.src.join(name);
        sent.push((name, random_file(&p, size), p));
    }
    let mut args: Vec<&str> = sent[..3].iter().map(|(_, _, p)| path_str(p)).collect();
    let root = node.target(USER, "");
    args.push(&root);
    scp_ok(&node, &args);
    let landed = assert_landed_paths(&node, &["report.tmp", ".env", "plain.csv"]);
    for (name, content, _) in &sent[..3] {
        assert_entry(find_one(&landed, name), content, name, "sftp");
    }
    // Real temporary names (WinSCP, rclone) that are never renamed land under the
    // name they have when the session ends.
    let mut args: Vec<&str> = sent[3..].iter().map(|(_, _, p)| path_str(p)).collect();
    args.push(&root);
    scp_ok(&node, &args);
    node.wait_ready(5, Duration::from_secs(20));
    let landed = assert_landed_paths(
        &node,
        &["report.tmp", ".env", "plain.csv", "x.filepart", "y.partial"],
    );
    for (name, content, _) in &sent {
        assert_entry(find_one(&landed, name), content, name, "sftp");
    }
    wait_partial_empty(&node, "temp names");
    assert!(
        node.log().contains("landed_parked=2 discarded_unclosed=0"),
        "nothing closed was discarded:\n{}",
        node.log()
    );
}

/// Run a paramiko script in the background (it is killed when the guard drops).
struct Bg(std::process::Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn paramiko_bg(node: &Node, body: &str, args: &[&str]) -> Bg {
    require_tool(PYTHON);
    let script = node.src.join(format!("paramiko-{}.py", unique_token()));
    write_file(&script, format!("{PY_PRELUDE}\n{body}\n").as_bytes());
    let port = node.port.to_string();
    let child = Command::new(PYTHON)
        .args([
            path_str(&script),
            "127.0.0.1",
            &port,
            USER,
            path_str(&node.key),
        ])
        .args(args)
        .current_dir(&node.src)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    Bg(child)
}

#[test]
fn parked_upload_survives_kill_9_between_close_and_rename() {
    let mut node = held();
    let a = node.src.join("a.csv");
    let a_content = random_file(&a, 300_000);
    let b = node.src.join("b.csv");
    let b_content = random_file(&b, 2 << 20);
    let marker = node.src.join("closed-marker");
    // a: uploaded to a temp name and renamed (landed); b: closed under its temp name
    // (CLOSE answered), then the daemon is killed before the rename comes.
    let body = r#"
import time
c, s = connect()
a, b, marker = ARGS
s.put(a, "a.csv.filepart")
s.posix_rename("a.csv.filepart", "a.csv")
s.put(b, "b.csv.filepart")
open(marker, "w").write("closed")
time.sleep(120)
"#;
    let _bg = paramiko_bg(
        &node,
        body,
        &[path_str(&a), path_str(&b), path_str(&marker)],
    );
    assert!(
        poll(Duration::from_secs(60), || marker.exists().then_some(())).is_some(),
        "the client never got its CLOSE answered; log:\n{}",
        node.log()
    );
    node.kill9();
    node.restart();
    node.wait_ready(2, Duration::from_secs(20));
    let landed = assert_landed_paths(&node, &["a.csv", "b.csv.filepart"]);
    assert_entry(find_one(&landed, "a.csv"), &a_content, "a.csv", "sftp");
    assert_entry(
        find_one(&landed, "b.csv.filepart"),
        &b_content,
        "b.csv.filepart",
        "sftp",
    );
    assert!(
        node.log()
            .contains("landed a parked upload left by the last run"),
        "{}",
        node.log()
    );
    wait_partial_empty(&node, "after restart");
    // a second restart lands nothing twice
    node.restart();
    std::thread::sleep(Duration::from_millis(300));
    assert_landed_paths(&node, &["a.csv", "b.csv.filepart"]);
}

// ---------------------------------------------------------------------------
// append, resume and sparse writes never deliver a byte the sender did not send

/// The zero-filled landing the old node produced, if any.
fn zero_prefixed(node: &Node) -> Vec<String> {
    node.landed()
        .iter()
        .filter(|e| {
            let d = e.data();
            d.len() >= 4096 && d[..4096].iter().all(|b| *b == 0)
        })
        .map(|e| e.record.path.clone())
        .collect()
}

#[test]
fn sftp_reput_and_put_a_are_refused_clearly() {
    let node = held();
    let full = random_bytes(3 << 20, 21);
    let f = node.src.join("f.bin");
    write_file(&f, &full);
    let head = node.src.join("head.bin");
    write_file(&head, &full[..1 << 20]);
    // the first megabyte arrived earlier (an interrupted transfer the sender
    // re-sent as what it had)
    sftp_batch_ok(&node, "put head.bin f.bin\nput head.bin g.bin\n");
    for cmd in ["reput f.bin f.bin", "put -a f.bin g.bin"] {
        let out = sftp_batch(&node, &format!("{cmd}\n"));
        assert!(
            !out.status.success(),
            "`{cmd}` must fail (nothing can be appended to a delivered file):\n{}\n\
             zero-prefixed landings: {:?}\nnode log:\n{}",
            show(&out),
            zero_prefixed(&node),
            node.log()
        );
    }
    assert!(zero_prefixed(&node).is_empty());
    let landed = assert_landed_paths(&node, &["f.bin", "g.bin"]);
    for e in &landed {
        assert_entry(e, &full[..1 << 20], &e.record.path.clone(), "sftp");
    }
    assert!(
        node.log()
            .contains("appending to or resuming an upload is not supported"),
        "the refusal is logged with its reason:\n{}",
        node.log()
    );
    wait_partial_empty(&node, "refused appends");
}

#[test]
fn sshfs_append_is_refused() {
    let node = held();
    require_tool("sshfs");
    require_tool("fusermount3");
    let first = node.src.join("first.txt");
    write_file(&first, &random_bytes(100_000, 3));
    sftp_batch_ok(&node, "put first.txt log.txt\n");
    let (mnt, _u) = mount_sshfs(&node);
    // `echo more >> log.txt`
    let out = run(
        &argv(&[
            "sh",
            "-c",
            &format!("echo more >> '{}'/log.txt", mnt.display()),
        ]),
        &node.src,
    );
    assert!(
        !out.status.success(),
        "appending through sshfs must fail:\n{}\nzero-prefixed: {:?}\nnode log:\n{}",
        show(&out),
        zero_prefixed(&node),
        node.log()
    );
    drop(_u);
    std::thread::sleep(Duration::from_millis(500));
    assert!(zero_prefixed(&node).is_empty());
    assert_landed_paths(&node, &["log.txt"]);
}

/// Unmounts an sshfs mount when dropped.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
    }
}

/// Mount the node's SFTP root with the real sshfs at `src/mnt`.
fn mount_sshfs(node: &Node) -> (PathBuf, Unmount) {
    require_tool("sshfs");
    require_tool("fusermount3");
    let mnt = node.src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut v = argv(&["sshfs", "-p", &node.port.to_string()]);
    v.extend(argv(&[
        "-o",
        &format!(
            "IdentityFile={},IdentitiesOnly=yes,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes",
            path_str(&node.key)
        ),
        &format!("{USER}@127.0.0.1:"),
        path_str(&mnt),
    ]));
    let out = run(&v, &node.src);
    require_ok(node, "sshfs mount", &out);
    let u = Unmount(mnt.clone());
    (mnt, u)
}

/// rsync writes `.name.XXXXXX` and renames it to `name` (here through sshfs):
/// the default `temp_patterns` park the temporary name and the file lands once,
/// under its final name. A plain dot-file (`.env`) is an ordinary name and lands
/// at CLOSE; a false positive (`.a.backup`, never renamed) lands under its own
/// name when the session ends.
#[test]
fn rsync_over_sshfs_lands_under_the_final_name() {
    let node = held();
    require_tool("rsync");
    let data = random_bytes(300_000, 17);
    write_file(&node.src.join("report.csv"), &data);
    let env = b"KEY=value\n".to_vec();
    write_file(&node.src.join(".env"), &env);
    let backup = random_bytes(5_000, 18);
    write_file(&node.src.join(".a.backup"), &backup);
    {
        let (mnt, _u) = mount_sshfs(&node);
        let out = run(
            &argv(&[
                "rsync",
                "--verbose",
                "report.csv",
                &format!("{}/", mnt.display()),
            ]),
            &node.src,
        );
        require_ok(&node, "rsync into the sshfs mount", &out);
        // a plain dot-file, copied as any program would
        let out = run(
            &argv(&["cp", ".env", ".a.backup", &format!("{}/", mnt.display())]),
            &node.src,
        );
        require_ok(&node, "cp .env .a.backup into the sshfs mount", &out);
        // `.env` landed at CLOSE, while the session is still open
        let landed_env = poll(Duration::from_secs(10), || {
            node.landed().into_iter().find(|e| e.record.path == ".env")
        });
        assert!(
            landed_env.is_some(),
            ".env lands at CLOSE; log:\n{}",
            node.log()
        );
    }
    // unmounted: the session ended, the false positive lands under its own name
    let all = poll(Duration::from_secs(10), || {
        let l = node.landed();
        (l.len() >= 3).then_some(l)
    })
    .unwrap_or_else(|| node.landed());
    let mut got = paths(&all);
    got.sort();
    assert_eq!(
        got,
        [".a.backup", ".env", "report.csv"],
        "exactly the final names land, each once (no rsync temporary name); log:\n{}",
        node.log()
    );
    assert_entry(find_one(&all, "report.csv"), &data, "report.csv", "sftp");
    assert_entry(find_one(&all, ".env"), &env, ".env", "sftp");
    assert_entry(find_one(&all, ".a.backup"), &backup, ".a.backup", "sftp");
}

#[test]
fn paramiko_sparse_and_grown_uploads_are_refused_at_close() {
    let node = held();
    // paramiko's SFTPFile.close() swallows a failed CLOSE, so the CLOSE is sent
    // with its request call, which raises with the status message.
    let body = r#"
from paramiko.sftp import CMD_CLOSE
c, s = connect()
def close_raw(f):
    try:
        s._request(CMD_CLOSE, f.handle)
    finally:
        f._closed = True
f = s.open("sparse.bin", "w")
f.seek((1 << 30) - 5)
f.write(b"12345")
f.flush()
expect_err("CLOSE after one 5-byte write at 1 GiB - 5", lambda: close_raw(f), ("never written",))
f = s.open("grown.bin", "w")
f.write(b"abc")
f.truncate(1 << 20)
expect_err("CLOSE after FSETSTAT size past the written end", lambda: close_raw(f),
           ("never written",))
with s.open("shrunk.bin", "w") as f:
    f.write(b"abcdef")
    f.truncate(2)
expect_err("stat of the refused upload", lambda: s.stat("sparse.bin"), ("no such",),
           exc=FileNotFoundError)
s.close(); c.close()
print("done")
"#;
    let out = paramiko(&node, body, &[]);
    let landed = node.landed();
    assert!(
        out.status.success(),
        "sparse uploads must be refused at CLOSE:\n{}\nlanded: {:?}\nnode log:\n{}",
        show(&out),
        landed
            .iter()
            .map(|e| (&e.record.path, e.record.size))
            .collect::<Vec<_>>(),
        node.log()
    );
    let landed = assert_landed_paths(&node, &["shrunk.bin"]);
    assert_entry(&landed[0], b"ab", "shrunk.bin", "sftp");
    wait_partial_empty(&node, "sparse uploads");
}

// ---------------------------------------------------------------------------
// target directories, names that are not UTF-8

#[test]
fn scp_to_a_dir_path_ending_with_slash_keeps_the_file_name_in_both_modes() {
    let node = held();
    let f = node.src.join("f.dat");
    let content = random_file(&f, 5000);
    scp_ok(&node, &[path_str(&f), &node.target(USER, "some/dir/")]);
    scp_o_ok(&node, &[path_str(&f), &node.target(USER, "other/dir/")]);
    let landed = assert_landed_paths(&node, &["some/dir/f.dat", "other/dir/f.dat"]);
    assert_eq!(
        landed
            .iter()
            .find(|e| e.record.protocol == "sftp")
            .unwrap()
            .record
            .path,
        "some/dir/f.dat"
    );
    for e in &landed {
        assert_entry(
            e,
            &content,
            &e.record.path.clone(),
            &e.record.protocol.clone(),
        );
    }
}

/// `scp` (SFTP mode) of one local file whose name need not be UTF-8.
fn scp_sftp_path(node: &Node, file: &Path, target: &str) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=5")
        .arg(CMD_TIMEOUT_SECS.to_string())
        .arg("/usr/bin/scp")
        .arg("-P")
        .arg(node.port.to_string())
        .args(node.ssh_opts())
        .arg(file)
        .arg(target)
        .current_dir(&node.src)
        .stdin(Stdio::null());
    cmd.output().expect("run scp")
}

#[test]
fn non_utf8_names_are_refused_not_rewritten() {
    use std::os::unix::ffi::OsStrExt;
    let node = held();
    let f = node.src.join(std::ffi::OsStr::from_bytes(b"caf\xe9.csv"));
    fs::write(&f, b"latin-1 name").unwrap();
    let scp = scp_sftp_path(&node, &f, &node.target(USER, ""));
    let body = r#"
c, s = connect()
expect_err("open of a non-UTF-8 name", lambda: s.open(b"caf\xe9.csv", "w"), ("utf-8",))
expect_err("mkdir of a non-UTF-8 name", lambda: s.mkdir(b"d\xff"), ("utf-8",))
# a name with a newline and quotes is refused, and logged escaped (one log line)
expect_err("newline", lambda: s.open('evil\nINFO forged "line"', "w"), ("control",))
s.put(ARGS[0], "caf\u00e9.csv")
s.close(); c.close()
print("done")
"#;
    let ok_file = node.src.join("ok.csv");
    let ok_content = random_file(&ok_file, 100);
    let pm = paramiko(&node, body, &[path_str(&ok_file)]);
    let landed = node.landed();
    assert!(
        !scp.status.success() && pm.status.success() && landed.len() == 1,
        "non-UTF-8 names must be refused, not rewritten to U+FFFD:\nscp: {}\nparamiko: {}\n\
         landed: {:?}\nnode log:\n{}",
        show(&scp),
        show(&pm),
        landed
            .iter()
            .map(|e| e.record.path.clone())
            .collect::<Vec<_>>(),
        node.log()
    );
    assert_entry(&landed[0], &ok_content, "caf\u{e9}.csv", "sftp");
    assert!(
        node.log().contains("not valid UTF-8"),
        "the refusal is logged:\n{}",
        node.log()
    );
    assert!(
        !node.log().lines().any(|l| l.starts_with("INFO forged")),
        "a sender's newline forged a log line:\n{}",
        node.log()
    );
}

/// `CREAT|EXCL` (paramiko's mode "x") on a name that has just landed, or is
/// parked, is refused with SSH_FX_FILE_ALREADY_EXISTS and makes no second copy;
/// a new name is created; OpenSSH `sftp` and curl, which never ask for EXCL,
/// still replace a landed name with a new upload.
#[test]
fn exclusive_create_never_makes_a_second_copy() {
    let node = held();
    let a = node.src.join("once.bin");
    let a_content = random_file(&a, 50_000);
    let body = r#"
from paramiko.sftp import CMD_OPEN, CMD_STATUS, SFTP_FLAG_WRITE, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL
from paramiko.sftp_attr import SFTPAttributes
c, s = connect()
(a,) = ARGS
s.put(a, "once.bin")                          # landed, listed
if "once.bin" not in s.listdir("."):
    fail("the landed name is not listed")
e = expect_err("mode x on a landed name", lambda: s.open("once.bin", "wx"), ("already exists",))
expect_err("mode x (no WRITE) on a landed name", lambda: s.open("once.bin", "x"), ("already exists",))
s.put(a, "tmp.filepart")                      # parked
expect_err("mode x on a parked name", lambda: s.open("tmp.filepart", "x"), ("already exists",))
# the status code on the wire: SSH_FX_FILE_ALREADY_EXISTS (11)
from paramiko.message import Message
num = s._async_request(type(None), CMD_OPEN, "once.bin",
                       SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL, SFTPAttributes())
t, data = s._read_packet()
if t != CMD_STATUS:
    fail("expected a status, got %r" % t)
msg = Message(data)
if msg.get_int() != num:
    fail("reply to another request")
code = msg.get_int()
del s._expecting[num]
if code != 11:
    fail("status code %d, expected 11 (SSH_FX_FILE_ALREADY_EXISTS)" % code)
f = s.open("fresh.bin", "wx")                 # a new name is created
f.write(b"new file")
f.close()
s.close(); c.close()
"#;
    paramiko_ok(&node, "exclusive create", body, &[path_str(&a)]);
    // OpenSSH sftp and curl (CREAT|TRUNC) still send a landed name again
    sftp_batch_ok(&node, "put once.bin once.bin\n");
    require_curl_protocol("sftp");
    let url = format!("sftp://{USER}@127.0.0.1:{}/~/once.bin", node.port);
    let out = curl_upload(&node, &a, &url, &[]);
    require_ok(&node, "curl upload", &out);
    let landed = poll(Duration::from_secs(10), || {
        let l = node.landed();
        (l.len() >= 5).then_some(l)
    })
    .unwrap_or_else(|| node.landed());
    let mut got = paths(&landed);
    got.sort();
    assert_eq!(
        got,
        [
            "fresh.bin",
            "once.bin",
            "once.bin",
            "once.bin",
            "tmp.filepart"
        ],
        "paramiko once + sftp + curl, no EXCL copy; fresh.bin once; the parked name at \
         session end; log:\n{}",
        node.log()
    );
    for e in landed.iter().filter(|e| e.record.path == "once.bin") {
        assert_entry(e, &a_content, "once.bin", "sftp");
    }
    assert!(node.log().contains("already exists"), "{}", node.log());
}
