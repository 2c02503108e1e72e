//! The `ingestd` command line as an operator uses it: `check-config` on the shipped
//! production config and on broken ones (every error names its key), and `run`
//! failing fast on a busy port and resolving relative paths against the config
//! file's directory.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ingestd");

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ingestd.toml")
}

fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ingestd check-config --config <path>`, run from `cwd`.
fn check_config_in(cwd: &Path, path: &Path) -> Output {
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run ingestd check-config")
}

fn check_config(path: &Path) -> Output {
    check_config_in(path.parent().unwrap(), path)
}

/// Write `text` as `<tmp>/ingestd.toml` and check it.
fn check_text(text: &str) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestd.toml");
    fs::write(&path, text).unwrap();
    let out = check_config(&path);
    (dir, out)
}

/// The config must be refused (non-zero exit) with every one of `needles` on stderr.
fn assert_refused(text: &str, needles: &[&str]) {
    let (_dir, out) = check_text(text);
    assert!(
        !out.status.success(),
        "config was accepted:\n{text}\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(
            err.contains(n),
            "stderr does not name {n:?} for config:\n{text}\n{}",
            show(&out)
        );
    }
}

// ---------------------------------------------------------------------------
// check-config

#[test]
fn shipped_config_validates() {
    let out = check_config(&shipped_config());
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node-1"),
        "{}",
        show(&out)
    );
}

/// The commented-out optional sections of the shipped config ([process], [inbox])
/// are valid as soon as an operator uncomments them.
#[test]
fn shipped_config_optional_sections_validate_when_uncommented() {
    let text = fs::read_to_string(shipped_config()).unwrap();
    let mut out = String::new();
    let mut in_block = false;
    let mut uncommented = Vec::new();
    for line in text.lines() {
        if line == "# [process]" || line == "# [inbox]" {
            in_block = true;
            uncommented.push(line[2..].to_string());
            out.push_str(&line[2..]);
        } else if in_block && line.starts_with("# ") && line[2..].contains(" = ") {
            let kv = &line[2..];
            // `# key = value`, not a prose comment (`# # ...`)
            if kv
                .split(" = ")
                .next()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
            {
                out.push_str(kv);
            } else {
                out.push_str(line);
            }
        } else {
            if !line.starts_with('#') {
                in_block = false;
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(
        uncommented,
        ["[process]", "[inbox]"],
        "the shipped config no longer has the commented examples this test expects"
    );
    assert!(out.contains("\ncommand = "), "{out}");
    assert!(out.contains("\nsettle = "), "{out}");
    // check-config also checks that the process command exists and is executable:
    // stand in an existing one for the example's.
    let out = out.replace("/usr/local/bin/convert-upload", "/bin/true");
    let (_dir, o) = check_text(&out);
    assert!(o.status.success(), "config:\n{out}\n{}", show(&o));
}

#[test]
fn unknown_keys_are_named() {
    assert_refused(
        "[ssh]\nlisten = \"127.0.0.1:2222\"\nlisten_port = 22\n",
        &["listen_port"],
    );
    assert_refused("nodeid = \"node-1\"\n", &["nodeid"]);
    assert_refused("[spoool]\ndir = \"/var/spool/ingestd\"\n", &["spoool"]);
    assert_refused("[retry]\nmax_backof = \"5m\"\n", &["max_backof"]);
    assert_refused(
        "[process]\ncommand = [\"/bin/true\"]\ntimeout_s = 5\n",
        &["timeout_s"],
    );
}

#[test]
fn bad_listen_addresses_name_their_key() {
    assert_refused("[ssh]\nlisten = \"nowhere\"\n", &["ssh.listen", "nowhere"]);
    assert_refused(
        "[ssh]\nlisten = [\"127.0.0.1:22\", \"0.0.0.0\"]\n",
        &["ssh.listen"],
    );
    assert_refused("[ssh]\nlisten = []\n", &["ssh.listen"]);
    assert_refused("[health]\nlisten = \"localhost\"\n", &["health.listen"]);
}

/// A malformed duration or size is reported with the full dotted key name, so the
/// operator knows which of several `rescan_interval`s or `dir`s is meant.
#[test]
fn bad_durations_and_sizes_name_their_key() {
    assert_refused(
        "[retry]\nmax_backoff = \"soon\"\n",
        &["retry.max_backoff", "soon"],
    );
    assert_refused(
        "[retry]\ninitial_backoff = \"100 parsecs\"\n",
        &["retry.initial_backoff"],
    );
    assert_refused(
        "[pipeline]\nrescan_interval = \"often\"\n",
        &["pipeline.rescan_interval"],
    );
    assert_refused(
        "[ssh]\ninactivity_timeout = 5\n",
        &["ssh.inactivity_timeout"],
    );
    assert_refused(
        "[spool]\nmax_file_size = \"lots\"\n",
        &["spool.max_file_size", "lots"],
    );
    assert_refused("[spool]\nmin_free = \"-1\"\n", &["spool.min_free"]);
    assert_refused(
        "[ssh]\nwindow_size = \"12 parsecs\"\n",
        &["ssh.window_size"],
    );
}

#[test]
fn bad_values_name_their_key() {
    assert_refused("node_id = \"node 1\"\n", &["node_id"]);
    assert_refused("[ssh]\nmax_packet_size = 100\n", &["ssh.max_packet_size"]);
    assert_refused("[ssh]\nmax_sessions = 0\n", &["ssh.max_sessions"]);
    assert_refused(
        "[archive]\nlayout = \"{date}/{name}\"\n",
        &["archive.layout"],
    );
    assert_refused("[retry]\nmax_attempts = 0\n", &["retry.max_attempts"]);
    assert_refused("[process]\ncommand = []\n", &["process.command"]);
    assert_refused(
        "[retry]\ninitial_backoff = \"1h\"\nmax_backoff = \"1m\"\n",
        &["retry.initial_backoff"],
    );
}

/// Relative paths resolve against the config file's directory, not the working
/// directory: visible in the overlap error, which prints the resolved spool.dir.
#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let cwd = dir.path().join("cwd");
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&cwd).unwrap();
    let path = etc.join("ingestd.toml");
    fs::write(
        &path,
        "[spool]\ndir = \"data/spool\"\n[archive]\ndir = \"data/spool/archive\"\n",
    )
    .unwrap();
    let out = check_config_in(&cwd, &path);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let resolved = etc.join("data/spool");
    assert!(
        err.contains("archive.dir") && err.contains(resolved.to_str().unwrap()),
        "expected archive.dir and the resolved {}\n{}",
        resolved.display(),
        show(&out)
    );
}

/// The same through `status`, which reads the spool and names the resolved
/// archive and forward targets.
#[test]
fn status_uses_paths_resolved_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let cwd = dir.path().join("cwd");
    fs::create_dir_all(etc.join("data/spool")).unwrap();
    fs::create_dir_all(&cwd).unwrap();
    let path = etc.join("ingestd.toml");
    fs::write(
        &path,
        "[spool]\ndir = \"data/spool\"\n[archive]\ndir = \"data/archive\"\n\
         [forward]\ndir = \"data/outgoing\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&path)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run ingestd status");
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for p in ["data/archive", "data/outgoing"] {
        let resolved = etc.join(p);
        assert!(
            text.contains(resolved.to_str().unwrap()),
            "status does not show {}\n{}",
            resolved.display(),
            show(&out)
        );
    }
    let stray: Vec<_> = fs::read_dir(&cwd)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        stray.is_empty(),
        "files created in the working directory: {stray:?}"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such.toml");
    let out = check_config(&path);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("No such file"),
        "{}",
        show(&out)
    );
}

#[test]
fn invalid_toml_is_refused_with_its_line() {
    assert_refused("[ssh\nlisten = \"127.0.0.1:22\"\n", &["line 1"]);
}

// ---------------------------------------------------------------------------
// run

/// A free loopback port below the usual ephemeral range.
fn free_port() -> u16 {
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}

/// A complete node config under `dir` listening on `listen`.
fn node_config(dir: &Path, listen: &str) -> String {
    fs::write(dir.join("authorized_keys"), "").unwrap();
    format!(
        "node_id = \"cli-test\"\n\
         [ssh]\nlisten = \"{listen}\"\nhost_key = {}\nauthorized_keys = {}\n\
         [spool]\ndir = {}\nmin_free = \"0\"\n\
         [archive]\ndir = {}\n\
         [forward]\ndir = {}\n\
         [health]\nlisten = \"\"\n",
        toml_path(&dir.join("host_key")),
        toml_path(&dir.join("authorized_keys")),
        toml_path(&dir.join("spool")),
        toml_path(&dir.join("archive")),
        toml_path(&dir.join("outgoing")),
    )
}

/// A running `ingestd run`; killed if a test fails before it exits.
struct Daemon(Option<Child>);

impl Daemon {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("daemon already reaped")
    }

    /// Wait (bounded) for the process to exit on its own; returns its output.
    fn wait_exit(mut self, limit: Duration) -> Output {
        let end = Instant::now() + limit;
        while self.child().try_wait().unwrap().is_none() {
            if Instant::now() >= end {
                panic!("ingestd run did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_run(config: &Path, cwd: &Path) -> Daemon {
    Daemon(Some(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ingestd run"),
    ))
}

#[test]
fn run_fails_fast_when_the_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let cfg = dir.path().join("ingestd.toml");
    fs::write(&cfg, node_config(dir.path(), &addr)).unwrap();
    let started = Instant::now();
    let out = spawn_run(&cfg, dir.path()).wait_exit(Duration::from_secs(20));
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ssh.listen") && err.contains(&addr),
        "stderr must name ssh.listen and {addr}\n{}",
        show(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to fail",
        started.elapsed()
    );
    drop(busy);
}

#[test]
fn run_refuses_an_invalid_config_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingestd.toml");
    let port = free_port();
    let text =
        node_config(dir.path(), &format!("127.0.0.1:{port}")) + "[retry]\nmax_backoff = \"soon\"\n";
    fs::write(&cfg, text).unwrap();
    let out = spawn_run(&cfg, dir.path()).wait_exit(Duration::from_secs(20));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_backoff"),
        "{}",
        show(&out)
    );
    assert!(
        !dir.path().join("spool").exists(),
        "the spool was created although the config is invalid"
    );
}

/// `run` with relative paths: the host key and the spool are created next to the
/// config file, nothing in the working directory.
#[test]
fn run_resolves_relative_paths_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let cwd = dir.path().join("cwd");
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&cwd).unwrap();
    fs::write(etc.join("authorized_keys"), "").unwrap();
    let port = free_port();
    let cfg = etc.join("ingestd.toml");
    fs::write(
        &cfg,
        format!(
            "node_id = \"cli-test\"\n\
             [ssh]\nlisten = \"127.0.0.1:{port}\"\nhost_key = \"keys/ssh_host_ed25519_key\"\n\
             authorized_keys = \"authorized_keys\"\n\
             [spool]\ndir = \"data/spool\"\nmin_free = \"0\"\n\
             [archive]\ndir = \"data/archive\"\n\
             [forward]\ndir = \"data/outgoing\"\n\
             [health]\nlisten = \"\"\n"
        ),
    )
    .unwrap();
    let mut d = spawn_run(&cfg, &cwd);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = d.child().try_wait().unwrap() {
            let out = d.wait_exit(Duration::from_secs(1));
            panic!("ingestd exited during startup ({st})\n{}", show(&out));
        }
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("SSH-") {
                break;
            }
        }
        assert!(Instant::now() < end, "ingestd did not serve on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        etc.join("keys/ssh_host_ed25519_key").is_file(),
        "host key not generated under the config directory"
    );
    assert!(
        etc.join("data/spool").is_dir(),
        "spool not created under the config directory"
    );
    let stray: Vec<_> = fs::read_dir(&cwd)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        stray.is_empty(),
        "files created in the working directory: {stray:?}"
    );
    // SIGTERM: a clean stop.
    let pid = d.child().id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = d.wait_exit(Duration::from_secs(30));
    assert!(out.status.success(), "{}", show(&out));
}

/// Start `ingestd run` on `cfg` and wait until it serves SSH on `port`.
fn start_serving(cfg: &Path, cwd: &Path, port: u16) -> Daemon {
    let mut d = spawn_run(cfg, cwd);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = d.child().try_wait().unwrap() {
            let out = d.wait_exit(Duration::from_secs(1));
            panic!("ingestd exited during startup ({st})\n{}", show(&out));
        }
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("SSH-") {
                return d;
            }
        }
        assert!(Instant::now() < end, "ingestd did not serve on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A second `ingestd run` on the spool of a running daemon must refuse to start
/// before it touches anything (it used to sweep the running daemon's `partial/`
/// and `work/` and only then fail on the busy port); the operator commands keep
/// working beside the running daemon.
#[test]
fn second_run_on_the_same_spool_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("ingestd.toml");
    fs::write(&cfg, node_config(dir.path(), &format!("127.0.0.1:{port}"))).unwrap();
    let mut first = start_serving(&cfg, dir.path(), port);
    let pid = first.child().id();

    // stand-ins for an upload in progress and pipeline scratch of the running daemon
    let partial = dir.path().join("spool/partial/cli-test-INPROGRESS");
    fs::create_dir_all(&partial).unwrap();
    fs::write(partial.join("data"), b"half an upload").unwrap();
    let work = dir.path().join("spool/work/cli-test-SCRATCH.1-00000000");
    fs::create_dir_all(&work).unwrap();

    // the same config (same port), and one on another port: both refused at the lock
    let cfg2 = dir.path().join("other-port.toml");
    fs::write(
        &cfg2,
        node_config(dir.path(), &format!("127.0.0.1:{}", free_port())),
    )
    .unwrap();
    for c in [&cfg, &cfg2] {
        let out = spawn_run(c, dir.path()).wait_exit(Duration::from_secs(20));
        assert!(!out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("spool.dir")
                && err.contains("in use by another ingestd")
                && err.contains(&format!("pid {pid}")),
            "stderr must say the spool is in use by pid {pid}\n{}",
            show(&out)
        );
        assert!(
            partial.join("data").is_file() && work.is_dir(),
            "the second run swept the running daemon's partial/ or work/"
        );
    }
    assert!(
        first.child().try_wait().unwrap().is_none(),
        "first daemon died"
    );

    // operator commands work beside the running daemon
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = Command::new(BIN)
        .args(["retry", "--all", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));

    // once the first daemon is gone (even by SIGKILL) the spool is free again
    first.child().kill().unwrap();
    let _ = first.child().wait();
    let mut again = start_serving(&cfg, dir.path(), port);
    assert!(
        !partial.exists(),
        "a new daemon sweeps partial/ of the one that died"
    );
    let pid = again.child().id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = again.wait_exit(Duration::from_secs(30));
    assert!(out.status.success(), "{}", show(&out));
}
