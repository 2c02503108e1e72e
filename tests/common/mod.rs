//! Shared harness of the integration tests (`mod common;` in each test file).
//!
//! A [`Node`] is the real `ingestd` binary started on a fresh temporary directory
//! with its own ports, host key, authorized_keys and client key; tests drive it
//! with the real OpenSSH clients and inspect the spool directly.
//!
//! Tests never skip: a missing tool fails the test ([`require_tool`]).
#![allow(dead_code)]

use ingestd::core::record::Record;
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;

/// Spool state directories, as laid out by `src/spool.rs`.
pub const PARTIAL: &str = "partial";
pub const READY: &str = "ready";
/// Every state a landed entry can be in, in pipeline order.
pub const LANDED_STATES: [&str; 4] = ["ready", "archived", "processed", "quarantine"];

/// Seconds any single client command may take before it is killed (the test then fails).
pub const CMD_TIMEOUT_SECS: u64 = 120;
/// How long a node may take to accept SSH connections after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// tools

/// Fail (never skip) when a tool the test needs is missing.
pub fn require_tool(name: &str) -> PathBuf {
    if name.contains('/') {
        let p = PathBuf::from(name);
        if p.is_file() {
            return p;
        }
    } else if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "required tool `{name}` is missing: tests never skip; install it \
         (scripts/install-deps.sh installs everything the tests need)"
    );
}

/// Human-readable description of a finished command, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ({} bytes) ---\n{}\n--- stderr ---\n{}",
        o.status,
        o.stdout.len(),
        String::from_utf8_lossy(&o.stdout).escape_debug(),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a command under `timeout`; panics if it had to be killed.
fn run_with_timeout(argv: &[String], cwd: &Path, stdin: Option<Vec<u8>>) -> Output {
    require_tool("timeout");
    require_tool(&argv[0]);
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=5")
        .arg(CMD_TIMEOUT_SECS.to_string())
        .args(argv)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let writer = stdin.map(|bytes| {
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            // The peer may exit before reading everything (it refused the input): ignore EPIPE.
            let _ = w.write_all(&bytes);
            drop(w);
        })
    });
    let out = child.wait_with_output().expect("wait for command");
    if let Some(w) = writer {
        let _ = w.join();
    }
    if matches!(out.status.code(), Some(124) | Some(137)) {
        panic!(
            "command timed out after {CMD_TIMEOUT_SECS}s: {argv:?}\n{}",
            show(&out)
        );
    }
    out
}

// ---------------------------------------------------------------------------
// data helpers

/// Deterministic pseudo-random bytes (xorshift64*), seeded from `seed`.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    if x == 0 {
        x = 1;
    }
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Write `size` deterministic pseudo-random bytes (seeded from the path and size) to
/// `path`, creating parent directories; returns the content.
pub fn random_file(path: &Path, size: usize) -> Vec<u8> {
    let seed = fnv1a(path.as_os_str().as_encoded_bytes()) ^ (size as u64).rotate_left(17);
    let data = random_bytes(size, seed);
    write_file(path, &data);
    data
}

/// Write `data` to `path`, creating parent directories.
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Set a file's modification time (seconds since the epoch).
pub fn set_mtime(path: &Path, secs: i64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64);
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A token unique within this test process (for file names that must be found later).
pub fn unique_token() -> String {
    static N: Mutex<u64> = Mutex::new(0);
    let mut n = N.lock().unwrap();
    *n += 1;
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("{:x}{:x}{}", std::process::id(), t & 0xffff_ffff, *n)
}

/// Poll `f` every 50 ms until it returns `Some`, or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// ports

/// A port that is free now, outside the usual ephemeral range (so outgoing client
/// connections cannot take it between now and the daemon's bind), and never handed
/// out twice in this process.
pub fn free_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap();
    let used = used.get_or_insert_with(HashSet::new);
    let mut x = fnv1a(unique_token().as_bytes()) | 1;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free port found");
}

// ---------------------------------------------------------------------------
// spool entries

/// One landed entry: where it is and its record.
#[derive(Clone, Debug)]
pub struct Entry {
    /// State directory it was found in ("ready", "archived", ...).
    pub state: String,
    /// spool/<state>/<id>
    pub dir: PathBuf,
    pub record: Record,
}

impl Entry {
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn data(&self) -> Vec<u8> {
        fs::read(self.data_path())
            .unwrap_or_else(|e| panic!("read {}: {e}", self.data_path().display()))
    }
    pub fn path(&self) -> &str {
        &self.record.path
    }
}

fn read_entries(state_dir: &Path, state: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(state_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let rec_path = dir.join("record.json");
        let Ok(text) = fs::read(&rec_path) else {
            continue;
        };
        let record: Record = serde_json::from_slice(&text).unwrap_or_else(|err| {
            panic!(
                "{} is not a valid record: {err}\n{}",
                rec_path.display(),
                String::from_utf8_lossy(&text)
            )
        });
        out.push(Entry {
            state: state.to_string(),
            dir,
            record,
        });
    }
    out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    out
}

/// Find the one entry with this recorded path; panics if there is not exactly one.
pub fn find_one<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    let m: Vec<&Entry> = entries.iter().filter(|e| e.record.path == path).collect();
    assert_eq!(
        m.len(),
        1,
        "expected exactly one entry with path {path:?}; entries: {:?}",
        entries.iter().map(|e| &e.record.path).collect::<Vec<_>>()
    );
    m[0]
}

// ---------------------------------------------------------------------------
// node

/// How to configure a test node. `Default` gives a node with `min_free = "0"`,
/// default limits and the pipeline running.
#[derive(Clone, Debug)]
pub struct NodeOpts {
    /// `spool.max_file_size`, e.g. `"1MiB"`.
    pub max_file_size: Option<String>,
    /// `spool.min_free`.
    pub min_free: String,
    /// `ssh.max_sessions`.
    pub max_sessions: Option<usize>,
    /// Keep landed entries in `spool/ready`: the archive dir is placed under a
    /// regular file, so archiving fails (and is retried) and nothing moves on.
    pub hold_in_ready: bool,
    /// Extra `key = value` lines for the sections the harness writes.
    pub ssh_extra: String,
    pub spool_extra: String,
    pub archive_extra: String,
    pub forward_extra: String,
    /// Whole extra sections appended to the config (e.g. `"[process]\ncommand = [...]"`).
    pub extra: String,
    /// Put the spool on its own tmpfs of this size (e.g. `"48m"`; needs root),
    /// unmounted when the node is dropped: a spool that can fill up.
    pub spool_tmpfs: Option<String>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            max_file_size: None,
            min_free: "0".into(),
            max_sessions: None,
            hold_in_ready: false,
            ssh_extra: String::new(),
            spool_extra: String::new(),
            archive_extra: String::new(),
            forward_extra: String::new(),
            extra: String::new(),
            spool_tmpfs: None,
        }
    }
}

impl NodeOpts {
    /// Entries stay in `spool/ready` (see [`NodeOpts::hold_in_ready`]).
    pub fn held() -> Self {
        NodeOpts {
            hold_in_ready: true,
            ..Default::default()
        }
    }
}

fn toml_str(p: &Path) -> String {
    let s = p.to_str().expect("test paths are UTF-8");
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub struct Node {
    pub dir: TempDir,
    pub port: u16,
    pub health_port: u16,
    pub config_path: PathBuf,
    pub spool: PathBuf,
    pub archive: PathBuf,
    pub outgoing: PathBuf,
    /// The client's private key (its public half is in authorized_keys).
    pub key: PathBuf,
    /// Where tests put the files they upload (ignored by [`Node::unexpected_files`]).
    pub src: PathBuf,
    /// The daemon's working directory (must stay empty).
    pub cwd: PathBuf,
    pub log_path: PathBuf,
    pub opts: NodeOpts,
    child: Option<Child>,
}

impl Node {
    pub fn start() -> Node {
        Node::start_opts(NodeOpts::default())
    }

    /// Start with whole extra TOML sections appended to the base config.
    pub fn start_with(extra_toml: &str) -> Node {
        Node::start_opts(NodeOpts {
            extra: extra_toml.to_string(),
            ..Default::default()
        })
    }

    pub fn start_opts(opts: NodeOpts) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("ingestd-test-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let src = d.join("src");
        let cwd = d.join("cwd");
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&cwd).unwrap();
        let key = gen_key(&d.join("id_ed25519"));
        let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
        write_file(&d.join("authorized_keys"), pubkey.as_bytes());

        let archive = if opts.hold_in_ready {
            write_file(
                &d.join("blocker"),
                b"a regular file: the archive dir below it cannot exist\n",
            );
            d.join("blocker").join("archive")
        } else {
            d.join("archive")
        };
        let mut node = Node {
            port: free_port(),
            health_port: free_port(),
            config_path: d.join("config.toml"),
            spool: d.join("spool"),
            archive,
            outgoing: d.join("outgoing"),
            key,
            src,
            cwd,
            log_path: d.join("node.log"),
            opts,
            child: None,
            dir,
        };
        if let Some(size) = &node.opts.spool_tmpfs {
            fs::create_dir_all(&node.spool).unwrap();
            let out = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(&node.spool)
                .output()
                .expect("run mount");
            assert!(out.status.success(), "mount a tmpfs spool: {}", show(&out));
        }
        node.write_config();
        node.spawn();
        node
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let o = &self.opts;
        let mut t = String::new();
        t.push_str("node_id = \"test-node\"\n\n[ssh]\n");
        t.push_str(&format!("listen = \"127.0.0.1:{}\"\n", self.port));
        t.push_str(&format!("host_key = {}\n", toml_str(&d.join("host_key"))));
        t.push_str(&format!(
            "authorized_keys = {}\n",
            toml_str(&d.join("authorized_keys"))
        ));
        if let Some(m) = o.max_sessions {
            t.push_str(&format!("max_sessions = {m}\n"));
        }
        t.push_str(&o.ssh_extra);
        t.push_str("\n\n[spool]\n");
        t.push_str(&format!("dir = {}\n", toml_str(&self.spool)));
        t.push_str(&format!("min_free = \"{}\"\n", o.min_free));
        if let Some(m) = &o.max_file_size {
            t.push_str(&format!("max_file_size = \"{m}\"\n"));
        }
        t.push_str(&o.spool_extra);
        t.push_str("\n\n[archive]\n");
        t.push_str(&format!("dir = {}\n", toml_str(&self.archive)));
        t.push_str(&o.archive_extra);
        t.push_str("\n\n[forward]\n");
        t.push_str(&format!("dir = {}\n", toml_str(&self.outgoing)));
        t.push_str(&o.forward_extra);
        t.push_str("\n\n[health]\n");
        t.push_str(&format!("listen = \"127.0.0.1:{}\"\n\n", self.health_port));
        t.push_str(&o.extra);
        t.push('\n');
        write_file(&self.config_path, t.as_bytes());
    }

    /// Start the daemon (again) on the same directory and ports; wait until it serves.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let bin = env!("CARGO_BIN_EXE_ingestd");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let _ = writeln!(&log, "===== harness: starting {bin} =====");
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(&self.cwd)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.child = Some(child);
        self.wait_serving();
    }

    /// Wait until the SSH port answers with an SSH banner; panic with the log otherwise.
    fn wait_serving(&mut self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "ingestd exited during startup ({st}); config:\n{}\nlog:\n{}",
                    fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.log()
                );
            }
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("SSH-") {
                    return;
                }
            }
            if Instant::now() >= end {
                panic!(
                    "ingestd did not accept SSH connections on port {} within {:?}; log:\n{}",
                    self.port,
                    START_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL the daemon and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait (bounded) for it to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node not running");
        send_signal(c.id(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() >= end {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "ingestd did not exit within 30s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start the daemon again on the same directory and ports (stops it first if running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        // The old process's listening socket is closed; the port may be in TIME_WAIT
        // for accepted connections only, which does not prevent a new listener.
        self.spawn();
    }

    // -- clients ------------------------------------------------------------

    /// OpenSSH client options: no known_hosts, no agent, no user config, only `key`.
    pub fn ssh_opts_with_key(&self, key: &Path) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ConnectTimeout=20",
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([key.to_str().unwrap().to_string()])
        .collect()
    }

    pub fn ssh_opts(&self) -> Vec<String> {
        self.ssh_opts_with_key(&self.key)
    }

    /// "user@127.0.0.1:path"
    pub fn target(&self, user: &str, path: &str) -> String {
        format!("{user}@127.0.0.1:{path}")
    }

    fn scp_argv(&self, legacy: bool, key: &Path, args: &[&str]) -> Vec<String> {
        let mut v = vec!["/usr/bin/scp".to_string()];
        if legacy {
            v.push("-O".into());
        }
        v.push("-P".into());
        v.push(self.port.to_string());
        v.extend(self.ssh_opts_with_key(key));
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `scp -O -P <port> <opts> args...` (legacy SCP protocol), bounded by a timeout.
    pub fn scp_o(&self, args: &[&str]) -> Output {
        run_with_timeout(&self.scp_argv(true, &self.key, args), &self.src, None)
    }

    /// `scp -O` with another client key.
    pub fn scp_o_with_key(&self, key: &Path, args: &[&str]) -> Output {
        run_with_timeout(&self.scp_argv(true, key, args), &self.src, None)
    }

    /// `scp` in its default (SFTP) mode.
    pub fn scp_sftp(&self, args: &[&str]) -> Output {
        run_with_timeout(&self.scp_argv(false, &self.key, args), &self.src, None)
    }

    fn ssh_argv(&self, extra: &[&str], user: &str, command: Option<&str>) -> Vec<String> {
        let mut v = vec![
            "/usr/bin/ssh".to_string(),
            "-p".into(),
            self.port.to_string(),
        ];
        v.extend(self.ssh_opts());
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(format!("{user}@127.0.0.1"));
        if let Some(c) = command {
            v.push(c.to_string());
        }
        v
    }

    /// A `kB` field of the daemon's /proc/<pid>/status (e.g. "VmRSS").
    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.pid().unwrap();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
    }

    /// The daemon's resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The daemon's peak resident memory (since start or the last reset), KiB.
    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// The body of `GET path` on the node's health/metrics listener (curl).
    pub fn http_get(&self, path: &str) -> String {
        let out = Command::new(require_tool("curl"))
            .args(["-s", "-m", "10"])
            .arg(format!("http://127.0.0.1:{}{path}", self.health_port))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ssh -p <port> <opts> user@127.0.0.1 command` with stdin from /dev/null.
    pub fn ssh(&self, user: &str, command: &str) -> Output {
        run_with_timeout(&self.ssh_argv(&[], user, Some(command)), &self.src, None)
    }

    /// Like [`Node::ssh`], feeding `stdin` (then EOF).
    pub fn ssh_stdin(&self, user: &str, command: &str, stdin: &[u8]) -> Output {
        run_with_timeout(
            &self.ssh_argv(&[], user, Some(command)),
            &self.src,
            Some(stdin.to_vec()),
        )
    }

    /// ssh with extra client arguments (e.g. `-tt`) and an optional command; stdin /dev/null.
    pub fn ssh_args(&self, extra: &[&str], user: &str, command: Option<&str>) -> Output {
        run_with_timeout(&self.ssh_argv(extra, user, command), &self.src, None)
    }

    /// A long-lived ssh process with piped stdin/stdout/stderr (not under `timeout`:
    /// the caller drives it; it is killed on drop).
    pub fn ssh_spawn(&self, user: &str, command: &str) -> Session {
        require_tool("/usr/bin/ssh");
        let argv = self.ssh_argv(&[], user, Some(command));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.src)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stderr2 = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stderr2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Session {
            child,
            stdin,
            rx,
            buf: Vec::new(),
            eof: false,
            stderr,
        }
    }

    /// Generate another client key in the node dir (not in authorized_keys).
    pub fn gen_key(&self, name: &str) -> PathBuf {
        gen_key(&self.dir.path().join(name))
    }

    // -- spool inspection -----------------------------------------------------

    pub fn state_dir(&self, state: &str) -> PathBuf {
        self.spool.join(state)
    }

    /// Entries in spool/ready.
    pub fn ready_entries(&self) -> Vec<Entry> {
        read_entries(&self.state_dir(READY), READY)
    }

    /// Entries in any landed state (ready, archived, processed, quarantine).
    pub fn landed(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = LANDED_STATES
            .iter()
            .flat_map(|s| read_entries(&self.state_dir(s), s))
            .collect();
        v.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        v
    }

    /// Wait (bounded) until at least `n` entries are in spool/ready; returns them.
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> Vec<Entry> {
        poll(timeout, || {
            let e = self.ready_entries();
            (e.len() >= n).then_some(e)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} entries in spool/ready within {timeout:?}, have {}; log:\n{}",
                self.ready_entries().len(),
                self.log()
            )
        })
    }

    /// Names in spool/partial.
    pub fn partial_names(&self) -> Vec<String> {
        fs::read_dir(self.state_dir(PARTIAL))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn partial_is_empty(&self) -> bool {
        self.partial_names().is_empty()
    }

    /// Total size of the data files in spool/partial.
    pub fn partial_bytes(&self) -> u64 {
        self.partial_names()
            .iter()
            .map(|n| {
                fs::metadata(self.state_dir(PARTIAL).join(n).join("data"))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Files and directories in the node dir that neither the harness nor the
    /// daemon's known layout put there: anything outside spool/, src/, the archive
    /// and outgoing dirs, and the harness's own files. Also anything in the daemon's
    /// working directory (which must stay empty).
    pub fn unexpected_files(&self) -> Vec<PathBuf> {
        let d = self.dir.path();
        let mut out = Vec::new();
        for e in fs::read_dir(d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let known = matches!(
                name.as_str(),
                "spool"
                    | "src"
                    | "cwd"
                    | "archive"
                    | "outgoing"
                    | "config.toml"
                    | "node.log"
                    | "authorized_keys"
                    | "blocker"
            ) || name.starts_with("host_key")
                || name.starts_with("id_")
                || name.starts_with("key_");
            if !known {
                out.push(e.path());
            }
        }
        if let Ok(rd) = fs::read_dir(&self.cwd) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
        out
    }

    /// Paths whose file name contains `token`, searched in the whole node dir
    /// (except the sources in src/) and directly in each ancestor directory of it,
    /// and in this test process's working directory and its parent.
    pub fn find_named(&self, token: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        fn walk(p: &Path, token: &str, skip: &Path, found: &mut Vec<PathBuf>) {
            let Ok(rd) = fs::read_dir(p) else { return };
            for e in rd.flatten() {
                let path = e.path();
                if path == skip {
                    continue;
                }
                if e.file_name().to_string_lossy().contains(token) {
                    found.push(path.clone());
                }
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&path, token, skip, found);
                }
            }
        }
        walk(self.dir.path(), token, &self.src, &mut found);
        let mut shallow: Vec<PathBuf> = self
            .dir
            .path()
            .ancestors()
            .skip(1)
            .map(Path::to_path_buf)
            .collect();
        if let Ok(cwd) = std::env::current_dir() {
            shallow.extend(cwd.ancestors().take(2).map(Path::to_path_buf));
        }
        for a in shallow {
            if let Ok(rd) = fs::read_dir(&a) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().contains(token) {
                        found.push(e.path());
                    }
                }
            }
        }
        found
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "----- ingestd log (last {} lines) of node on port {} -----\n{}\n-----",
                tail.len(),
                self.port,
                tail.join("\n")
            );
        }
        self.kill9();
        if self.opts.spool_tmpfs.is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.spool).status();
        }
    }
}

pub fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a child we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `ssh-keygen -t ed25519 -N "" -f <path> -q`; returns `path`.
pub fn gen_key(path: &Path) -> PathBuf {
    let kg = require_tool("ssh-keygen");
    let out = Command::new(kg)
        .args(["-t", "ed25519", "-N", "", "-q", "-C", "ingestd-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen failed: {}", show(&out));
    path.to_path_buf()
}

// ---------------------------------------------------------------------------
// a live ssh session driven byte by byte

pub struct Session {
    pub child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    eof: bool,
    stderr: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl Session {
    /// Read exactly `n` bytes of the remote's stdout within `timeout`; `None` on EOF or timeout.
    pub fn read_exact_timeout(&mut self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + timeout;
        while self.buf.len() < n {
            if self.eof {
                return None;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.buf.extend_from_slice(&b),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Everything the remote wrote to stdout until EOF (bounded by `timeout`).
    pub fn read_to_end_timeout(&mut self, timeout: Duration) -> Vec<u8> {
        let end = Instant::now() + timeout;
        while !self.eof {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.buf.extend_from_slice(&b),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Write to the remote's stdin; false if the pipe is closed.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        match self.stdin.as_mut() {
            Some(w) => w.write_all(bytes).and_then(|_| w.flush()).is_ok(),
            None => false,
        }
    }

    /// Close stdin (ssh sends EOF on the channel).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// SIGKILL the ssh client (the connection drops without any SSH-level goodbye).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the ssh client to exit within `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The entry matches the content and the sender's facts (user "alice", this
/// test node, a loopback peer, an id-named entry directory).
pub fn assert_entry(e: &Entry, content: &[u8], path: &str, protocol: &str) {
    assert_record(e, content, path, protocol);
    let data = e.data();
    assert!(
        data == content,
        "landed bytes differ for {path}: {} bytes blake3 {} vs sent {} bytes blake3 {}",
        data.len(),
        blake3_hex(&data),
        content.len(),
        blake3_hex(content)
    );
}

/// [`assert_entry`] without reading the data.
pub fn assert_record(e: &Entry, content: &[u8], path: &str, protocol: &str) {
    assert_eq!(e.record.path, path, "recorded path; record: {:?}", e.record);
    assert_eq!(
        e.record.user, "alice",
        "recorded user; record: {:?}",
        e.record
    );
    assert_eq!(
        e.record.size,
        content.len() as u64,
        "recorded size; record: {:?}",
        e.record
    );
    assert_eq!(
        e.record.blake3,
        blake3_hex(content),
        "recorded blake3; record: {:?}",
        e.record
    );
    assert_eq!(e.record.protocol, protocol, "record: {:?}", e.record);
    assert_eq!(e.record.node, "test-node", "record: {:?}", e.record);
    assert!(
        e.record.id.starts_with("test-node-"),
        "record: {:?}",
        e.record
    );
    assert!(
        e.record.remote_addr.starts_with("127.0.0.1:"),
        "remote_addr; record: {:?}",
        e.record
    );
    assert_eq!(
        e.dir.file_name().unwrap().to_str().unwrap(),
        e.record.id,
        "entry dir is named by its id"
    );
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A node whose entries stay in `spool/ready` (archiving is held by an outage).
pub fn held() -> Node {
    Node::start_opts(NodeOpts::held())
}

/// Run `scp -O args...` and require success.
pub fn scp_o_ok(node: &Node, args: &[&str]) {
    let out = node.scp_o(args);
    assert!(
        out.status.success(),
        "scp -O {args:?} failed:\n{}\nnode log:\n{}",
        show(&out),
        node.log()
    );
}

/// Wait (30 s at most) until `spool/partial` is empty.
pub fn wait_partial_empty(node: &Node, context: &str) {
    let ok = poll(Duration::from_secs(30), || {
        node.partial_is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "{context}: spool/partial not cleaned up within 30s: {:?}\nnode log:\n{}",
        node.partial_names(),
        node.log()
    );
}

/// After whatever the test did, a normal upload with `protocol` ("scp": `scp -O`,
/// "sftp": `scp` in SFTP mode) still works and lands.
pub fn assert_still_serves(node: &Node, protocol: &str) {
    let f = node.src.join(format!("after-{}.bin", unique_token()));
    let content = random_file(&f, 10_000);
    let args = [path_str(&f), &node.target("alice", "")];
    let out = if protocol == "scp" {
        node.scp_o(&args)
    } else {
        node.scp_sftp(&args)
    };
    assert!(
        out.status.success(),
        "follow-up upload failed:\n{}\nnode log:\n{}",
        show(&out),
        node.log()
    );
    // The pipeline may move the entry on (or deliver it and remove it) at any
    // moment: find it wherever it is now.
    let name = f.file_name().unwrap().to_str().unwrap();
    for _ in 0..50 {
        let landed = node.landed();
        if landed.iter().any(|e| e.record.path == name) {
            // One listing of the state directories can see an entry twice while
            // the pipeline renames it from one to the next: count distinct ids.
            let mut ids: Vec<&str> = landed
                .iter()
                .filter(|e| e.record.path == name)
                .map(|e| e.record.id.as_str())
                .collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 1, "{name} landed more than once: {ids:?}");
            let e = landed.iter().find(|e| e.record.path == name).unwrap();
            if let Ok(data) = fs::read(e.data_path()) {
                assert_record(e, &content, name, protocol);
                assert!(
                    data == content,
                    "landed bytes of {name} differ from what was sent"
                );
                return;
            }
        } else if let Some((fname, data)) = forwarded(node)
            .into_iter()
            .find(|(n, _)| n.ends_with(&format!("__{name}")))
        {
            assert!(
                data == content,
                "forwarded {fname} differs from what was sent"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the follow-up upload {name} is neither in the spool nor forwarded\nlog:\n{}",
        node.log()
    );
}

/// Regular files in the forward dir: name → content (temporary names included, so
/// tests can assert there are none), sorted by name.
pub fn forwarded(node: &Node) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&node.outgoing)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// scp in the background, with arguments that need not be UTF-8

impl Node {
    /// `scp -O -P <port> <opts> args...` started in the background with piped
    /// stdout/stderr; the arguments may be any bytes (non-UTF-8 file names).
    pub fn scp_o_spawn(&self, args: &[&std::ffi::OsStr]) -> Child {
        require_tool("/usr/bin/scp");
        let argv = self.scp_argv(true, &self.key, &[]);
        Command::new(&argv[0])
            .args(&argv[1..])
            .args(args)
            .current_dir(&self.src)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run scp: {e}"))
    }
}

/// Wait for `child` to exit within `timeout` and collect its output; on timeout
/// kill it and return `None`.
pub fn wait_output_within(mut child: Child, timeout: Duration) -> Option<Output> {
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().expect("collect output"));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
