//! `ingestd check-config` catches what would fail at run time, naming the key:
//! the process command, host key files, authorized_keys, the directories the
//! daemon writes, clashing listen addresses; and warns about what breaks a pool
//! (a host key generated on this node, node_id left to the host name).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ingestd");

fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A complete, valid config in `d` (every file and directory present), plus `extra`
/// appended (sections) and `replace` applied.
fn config(d: &Path, node_id: bool, edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
    for sub in ["spool", "archive", "out"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    let key = d.join("host_key");
    if !key.exists() {
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "pool-key", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(o.status.success(), "{}", show(&o));
        fs::copy(key.with_extension("pub"), d.join("authorized_keys")).unwrap();
    }
    let mut t = String::new();
    if node_id {
        t.push_str("node_id = \"n1\"\n");
    }
    t.push_str(
        "[ssh]\nlisten = [\"127.0.0.1:2022\", \"127.0.0.2:2022\"]\nhost_key = \"host_key\"\nauthorized_keys = \"authorized_keys\"\n\
         [spool]\ndir = \"spool\"\nmin_free = \"0\"\n[archive]\ndir = \"archive\"\n[forward]\ndir = \"out\"\n\
         [health]\nlisten = \"127.0.0.1:9122\"\nmaintenance_file = \"maintenance\"\n",
    );
    let t = edit(t);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let p = d.join(format!("ingestd-{n}.toml"));
    fs::write(&p, t).unwrap();
    p
}

fn check(p: &Path) -> Output {
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(p)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", show(o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("configuration OK"));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_fails(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "accepted:\n{}", show(o));
    let err = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(err.contains(n), "{n:?} missing:\n{}", show(o));
    }
}

#[test]
fn a_complete_config_passes_without_warnings() {
    let t = tempfile::tempdir().unwrap();
    let p = config(t.path(), true, |s| s);
    let err = assert_ok(&check(&p));
    assert_eq!(err, "", "no warnings expected");
}

#[test]
fn process_command_must_exist_and_be_executable() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let p = config(d, true, |s| s + "[process]\ncommand = [\"bin/convert\"]\n");
    assert_fails(&check(&p), &["process.command: ", "bin/convert"]);
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::write(d.join("bin/convert"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(d.join("bin/convert"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_fails(&check(&p), &["process.command: ", "is not executable"]);
    fs::set_permissions(d.join("bin/convert"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ok(&check(&p));
    let p = config(d, true, |s| {
        s + "[process]\ncommand = [\"no-such-program-ingestd-test\"]\n"
    });
    assert_fails(&check(&p), &["process.command: ", "not found in PATH"]);
    let p = config(d, true, |s| s + "[process]\ncommand = [\"true\"]\n");
    assert_ok(&check(&p));
}

#[test]
fn host_keys_must_parse_and_a_generated_key_is_a_pool_warning() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("keys")).unwrap();
    let p = config(d, true, |s| s);
    fs::write(d.join("bad_key"), "not a key\n").unwrap();
    let bad = config(d, true, |s| {
        s.replace("host_key = \"host_key\"", "host_key = \"bad_key\"")
    });
    assert_fails(
        &check(&bad),
        &[
            "ssh.host_key: ",
            "bad_key",
            "not a usable OpenSSH private key",
        ],
    );

    // Missing: generated at start, which a pool must not do.
    let gen = config(d, true, |s| {
        s.replace("host_key = \"host_key\"", "host_key = \"keys/new_key\"")
    });
    let err = assert_ok(&check(&gen));
    assert!(
        err.contains("warning: ssh.host_key: ")
            && err.contains("will be generated on this node")
            && err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    // Missing under a regular file: it cannot be generated.
    fs::write(d.join("file"), "x").unwrap();
    let cant = config(d, true, |s| {
        s.replace("host_key = \"host_key\"", "host_key = \"file/key\"")
    });
    assert_fails(&check(&cant), &["ssh.host_key: ", "cannot be generated"]);

    // A key generated by ingestd (which writes no comment, unlike ssh-keygen) on
    // some node: the same warning.
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(d.join("keys/new_key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let err = assert_ok(&check(&gen));
    assert!(err.contains("was generated by ingestd on a node"), "{err}");
    assert!(!assert_ok(&check(&p)).contains("generated"));
}

#[test]
fn authorized_keys_must_be_readable() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let p = config(d, true, |s| {
        s.replace(
            "authorized_keys = \"authorized_keys\"",
            "authorized_keys = [\"authorized_keys\", \"missing_keys\", \"keys.d/*.pub\", \"per-user/%u\"]",
        )
    });
    let err = assert_ok(&check(&p));
    for n in ["missing_keys does not exist", "keys.d", "per-user"] {
        assert!(err.contains(n), "{n}: {err}");
    }
    // A directory where a file is expected: not readable as a file.
    fs::create_dir(d.join("missing_keys")).unwrap();
    fs::create_dir(d.join("keys.d")).unwrap();
    fs::create_dir(d.join("per-user")).unwrap();
    let o = check(&p);
    // Opening a directory succeeds on Linux; reading it fails at login. Accept either a
    // clean pass or an error naming the key, never a panic.
    if !o.status.success() {
        assert_fails(&o, &["ssh.authorized_keys: "]);
    }
}

#[test]
fn directories_must_be_writable_or_creatable() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(d.join("plain"), "x").unwrap();
    for (key, section) in [
        ("spool.dir", "[spool]\ndir = \"spool\""),
        ("archive.dir", "[archive]\ndir = \"archive\""),
        ("forward.dir", "[forward]\ndir = \"out\""),
    ] {
        let sect = section.split('\n').next().unwrap().to_string();
        let p = config(d, true, |s| {
            s.replace(section, &format!("{sect}\ndir = \"plain/sub\""))
        });
        assert_fails(
            &check(&p),
            &[&format!("{key}: "), "plain/sub", "is not usable by user"],
        );
    }
    // A read-only file system (as root, permission bits do not stop writes).
    let p = config(d, true, |s| {
        s.replace(
            "[archive]\ndir = \"archive\"",
            "[archive]\ndir = \"/proc/ingestd-archive\"",
        )
    });
    assert_fails(&check(&p), &["archive.dir: ", "/proc/ingestd-archive"]);
    // Missing but creatable: fine (the daemon creates it).
    let p = config(d, true, |s| {
        s.replace(
            "[forward]\ndir = \"out\"",
            "[forward]\ndir = \"new/outgoing\"",
        )
    });
    assert_ok(&check(&p));
}

#[test]
fn listen_addresses_must_not_clash() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let p = config(d, true, |s| {
        s.replace(
            "listen = [\"127.0.0.1:2022\", \"127.0.0.2:2022\"]",
            "listen = [\"0.0.0.0:2022\", \"127.0.0.2:2022\"]",
        )
    });
    assert_fails(
        &check(&p),
        &["ssh.listen: 127.0.0.2:2022 clashes with ssh.listen 0.0.0.0:2022"],
    );
    let p = config(d, true, |s| {
        s.replace("listen = \"127.0.0.1:9122\"", "listen = \"127.0.0.1:2022\"")
    });
    assert_fails(
        &check(&p),
        &["health.listen: 127.0.0.1:2022 clashes with ssh.listen 127.0.0.1:2022"],
    );
}

#[test]
fn node_id_left_to_the_host_name_is_a_pool_warning() {
    let t = tempfile::tempdir().unwrap();
    let p = config(t.path(), false, |s| s);
    let err = assert_ok(&check(&p));
    assert!(
        err.contains("warning: node_id: not set, so it is the host name"),
        "{err}"
    );
}

#[test]
fn an_existing_maintenance_file_is_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let p = config(t.path(), true, |s| s);
    fs::write(t.path().join("maintenance"), "").unwrap();
    let err = assert_ok(&check(&p));
    assert!(err.contains("warning: health.maintenance_file: "), "{err}");
}

/// As root, `--user` checks with the daemon user's permissions: a directory only
/// root may enter is not usable by `nobody`.
#[test]
fn user_option_checks_as_the_daemon_user() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    let p = config(d, true, |s| s);
    assert_ok(&check(&p));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // only root can switch users; CI runs as root
    }
    let o = Command::new(BIN)
        .args(["check-config", "--user", "nobody", "--config"])
        .arg(&p)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_fails(&o, &["spool.dir: ", "is not usable by user nobody"]);
    let o = Command::new(BIN)
        .args(["check-config", "--user", "no-such-user-ingestd", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_fails(&o, &["--user no-such-user-ingestd: no such user"]);
}
