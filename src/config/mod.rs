//! The node's configuration: the TOML schema (unknown keys are errors), its
//! defaults, the embedded default configuration, relative-path resolution and
//! semantic validation (`ingestd check-config`).

mod reload;
pub use reload::{changed_keys, reload_refusal, take_reloadable, RELOADABLE};

use crate::core::units::{ByteSize, FileMode, HumanDuration, Rate};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One value or a list of values (`listen = "a"` or `listen = ["a", "b"]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity of this node in ids and archive/forward names; default: host name.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    #[serde(default)]
    pub ssh: SshConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub sftp: SftpConfig,
    #[serde(default)]
    pub archive: ArchiveConfig,
    #[serde(default)]
    pub process: Option<ProcessConfig>,
    #[serde(default)]
    pub forward: ForwardConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub inbox: Option<InboxConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub defender: DefenderConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The dotted keys the configuration text set itself (not defaults); a reload
    /// may not drop one of them (see `config::reload`).
    #[serde(skip)]
    pub explicit_keys: std::collections::BTreeSet<String>,
}

/// Bans for source addresses that keep failing to authenticate.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefenderConfig {
    /// Failed authentications per source address within `window` that ban it (0 = off).
    pub max_failures: u32,
    pub window: HumanDuration,
    /// A banned address is refused at connect for this long; the ban lifts by itself.
    pub ban_time: HumanDuration,
    /// CIDRs (or addresses) never banned.
    pub allow: Vec<String>,
}

impl Default for DefenderConfig {
    fn default() -> Self {
        DefenderConfig {
            max_failures: 10,
            window: HumanDuration(Duration::from_secs(60)),
            ban_time: HumanDuration(Duration::from_secs(600)),
            allow: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Address(es) to listen on.
    pub listen: OneOrMany<String>,
    /// OpenSSH private key file(s); an ed25519 key is generated when the first is missing.
    pub host_key: OneOrMany<PathBuf>,
    /// authorized_keys file(s); `%u` is replaced by the login name; `~` is $HOME;
    /// a `*` in the last component is a glob (e.g. `~/.ssh/*.pub`).
    pub authorized_keys: OneOrMany<String>,
    /// Memory for the parsed authorized_keys files (parsed once per change;
    /// least recently used files are dropped beyond it).
    pub authorized_keys_cache: ByteSize,
    /// Authenticated SSH connections at once; more are refused with a message.
    pub max_sessions: usize,
    /// Authenticated connections from one source address at once.
    pub max_sessions_per_ip: usize,
    /// Unauthenticated connections at once; beyond, new ones are closed before
    /// key exchange (as OpenSSH's MaxStartups).
    pub max_startups: usize,
    /// A connection not authenticated by then is closed, silent or not.
    pub login_grace_time: HumanDuration,
    /// Session channels one connection may open.
    pub max_channels: usize,
    /// Uploads in progress (each holds an open file) on the node and on one
    /// connection; beyond, a new upload is refused with a clear reason.
    pub max_open_files: usize,
    pub max_open_files_per_connection: usize,
    /// Bytes received but not yet written, on the node and per connection; a
    /// connection over its share is slowed (flow control), never failed.
    pub max_buffered: ByteSize,
    pub max_buffered_per_connection: ByteSize,
    /// An upload that receives less than this per second, measured over
    /// `inactivity_timeout`, is ended ("0" = off).
    pub min_rate: Rate,
    /// Accept `ssh-rsa` (SHA-1) signatures for user authentication (OpenSSH
    /// refuses them by default since 8.8).
    pub allow_sha1_rsa: bool,
    /// SSH channel window (bytes) and maximum packet size.
    pub window_size: ByteSize,
    pub max_packet_size: ByteSize,
    /// Idle connections are dropped after this long.
    pub inactivity_timeout: HumanDuration,
    pub max_auth_attempts: usize,
    /// On SIGTERM: how long uploads (and the pipeline step) in flight may take to
    /// finish before the process exits anyway (unacknowledged uploads are dropped).
    pub drain_time: HumanDuration,
    /// Algorithms offered, in OpenSSH's names and in order of preference; unset
    /// = the built-in lists ([`SSH_CIPHERS`] etc., all supported names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kex: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_algorithms: Option<Vec<String>>,
}

/// Supported SSH algorithms in OpenSSH's names, in the default order of
/// preference (the client's order decides which one is used).
pub const SSH_CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];
pub const SSH_KEX: &[&str] = &[
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "mlkem768x25519-sha256",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group14-sha1",
];
pub const SSH_MACS: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
];
pub const SSH_HOST_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

impl SshConfig {
    /// The algorithm lists to offer: (ciphers, kex, macs, host key algorithms),
    /// each the configured list or the built-in default.
    pub fn algorithms(&self) -> [Vec<&str>; 4] {
        fn pick<'a>(v: &'a Option<Vec<String>>, d: &'static [&'static str]) -> Vec<&'a str> {
            match v {
                Some(v) => v.iter().map(String::as_str).collect(),
                None => d.to_vec(),
            }
        }
        [
            pick(&self.ciphers, SSH_CIPHERS),
            pick(&self.kex, SSH_KEX),
            pick(&self.macs, SSH_MACS),
            pick(&self.host_key_algorithms, SSH_HOST_KEY_ALGORITHMS),
        ]
    }

    fn validate_algorithms(&self) -> Result<()> {
        for (key, v, supported) in [
            ("ciphers", &self.ciphers, SSH_CIPHERS),
            ("kex", &self.kex, SSH_KEX),
            ("macs", &self.macs, SSH_MACS),
            (
                "host_key_algorithms",
                &self.host_key_algorithms,
                SSH_HOST_KEY_ALGORITHMS,
            ),
        ] {
            let Some(v) = v else { continue };
            if v.is_empty() {
                bail!(
                    "ssh.{key}: the list is empty; remove the key for the default, or name some of: {}",
                    supported.join(", ")
                );
            }
            for name in v {
                if !supported.contains(&name.as_str()) {
                    bail!(
                        "ssh.{key}: unknown or unsupported algorithm {name:?}; supported: {}",
                        supported.join(", ")
                    );
                }
            }
        }
        Ok(())
    }
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            listen: OneOrMany::One("0.0.0.0:22".into()),
            host_key: OneOrMany::One("/etc/ingestd/ssh_host_ed25519_key".into()),
            authorized_keys: OneOrMany::One("/etc/ingestd/authorized_keys".into()),
            authorized_keys_cache: ByteSize(64 << 20),
            max_sessions: 256,
            max_sessions_per_ip: 32,
            max_startups: 64,
            login_grace_time: HumanDuration(Duration::from_secs(30)),
            max_channels: 10,
            max_open_files: 4096,
            max_open_files_per_connection: 64,
            max_buffered: ByteSize(256 << 20),
            max_buffered_per_connection: ByteSize(16 << 20),
            min_rate: Rate(1024),
            allow_sha1_rsa: false,
            window_size: ByteSize(16 << 20),
            max_packet_size: ByteSize(65535),
            inactivity_timeout: HumanDuration(Duration::from_secs(600)),
            max_auth_attempts: 6,
            drain_time: HumanDuration(Duration::from_secs(120)),
            ciphers: None,
            kex: None,
            macs: None,
            host_key_algorithms: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Largest single file accepted.
    pub max_file_size: ByteSize,
    /// Uploads that would leave less than this free on the spool filesystem are refused.
    pub min_free: ByteSize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: "/var/spool/ingestd".into(),
            max_file_size: ByteSize(64 << 30),
            min_free: ByteSize(1 << 30),
        }
    }
}

/// The default `sftp.temp_patterns`.
pub const DEFAULT_TEMP_PATTERNS: &[&str] = &["*.filepart", "*.partial", "*.part", ".*.??????"];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftpConfig {
    /// Client-side temporary names (glob patterns on the last path component):
    /// such a file is made durable at CLOSE (parked) and landed when renamed to its
    /// final name, or under the name it has when the session ends.
    pub temp_patterns: Vec<String>,
    /// Allow reading file contents back (default: upload only).
    pub allow_download: bool,
    /// How long a landed file stays visible to its sender's `ls`/`stat`.
    pub visible_for: HumanDuration,
    /// Memory for the senders' views (landed files, directories made): per user
    /// and for the node. Past it a landing forgets the user's oldest entries and
    /// a MKDIR is refused.
    pub max_view_per_user: ByteSize,
    pub max_view: ByteSize,
}

impl Default for SftpConfig {
    fn default() -> Self {
        SftpConfig {
            // Names real upload tools use while a file is incomplete: WinSCP
            // (`*.filepart`), rclone (`*.partial`), lftp/FileZilla-style `*.part`.
            // rsync and other write-then-rename tools (`.name.XXXXXX`: rsync over
            // sshfs, mktemp-style). Not `*.tmp` or plain dot-files (`.env`):
            // those are ordinary names too. A false positive (`.a.backup`) is
            // parked and lands under its own name at session end.
            temp_patterns: DEFAULT_TEMP_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            allow_download: false,
            visible_for: HumanDuration(Duration::from_secs(3600)),
            max_view_per_user: ByteSize(4 << 20),
            max_view: ByteSize(64 << 20),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    pub dir: PathBuf,
    /// Layout under `dir`: `{date}` (UTC YYYY-MM-DD), `{node}`, `{id}`, `{user}`, `{name}`
    /// (sender path, '/' kept). Must contain `{id}` so names are unique across the pool.
    pub layout: String,
    /// Mode of the archive copies and their records (octal; private by default).
    pub file_mode: FileMode,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            dir: "/srv/backup/ingestd".into(),
            layout: "{date}/{node}/{id}/{name}".into(),
            file_mode: FileMode(0o600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// argv of the command (no shell).
    pub command: Vec<String>,
    #[serde(default = "default_process_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_process_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_concurrency() -> usize {
    2
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    pub dir: PathBuf,
    /// Mode of the delivered files (octal; private by default: give the consumer
    /// access by group, e.g. "0640" with a setgid forward directory).
    pub file_mode: FileMode,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            dir: "/srv/outgoing".into(),
            file_mode: FileMode(0o600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_backoff: HumanDuration,
    pub max_backoff: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 10,
            initial_backoff: HumanDuration(Duration::from_secs(1)),
            max_backoff: HumanDuration(Duration::from_secs(600)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Concurrent archive copies.
    pub archive_workers: usize,
    /// Concurrent forward deliveries.
    pub forward_workers: usize,
    /// Full rescan of the spool state directories (in case a wake-up was missed).
    pub rescan_interval: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            archive_workers: 4,
            forward_workers: 4,
            rescan_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboxConfig {
    pub dir: PathBuf,
    /// A file unchanged (size and mtime) for this long is considered complete.
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// Periodic full rescan (filesystem events can be dropped).
    #[serde(default = "default_rescan")]
    pub rescan_interval: HumanDuration,
    /// Sender identity recorded for inbox files.
    #[serde(default = "default_inbox_user")]
    pub user: String,
}

fn default_settle() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_rescan() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_inbox_user() -> String {
    "inbox".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// HTTP health/metrics endpoint; empty string disables it.
    pub listen: String,
    /// While this file exists `/healthz` answers 503 (drain the node); "" disables.
    pub maintenance_file: PathBuf,
    /// `/healthz` answers 503 when archive attempts have failed (with no success
    /// in between) for longer than this; "0s" disables the check.
    pub archive_failing_for: HumanDuration,
    /// `/healthz` answers 503 when more entries than this wait in the pipeline
    /// (ready + archived + processed); 0 disables the check.
    pub max_backlog: u64,
    /// How often the spool is counted (free space, backlog, the spool gauges).
    pub census_interval: HumanDuration,
    /// HTTP connections open at once; beyond it the oldest idle one is closed
    /// to make room (a director's probe always gets in).
    pub max_connections: usize,
    /// An HTTP connection is closed when no complete request header arrives for
    /// this long (a new connection or a kept-alive one).
    pub idle_timeout: HumanDuration,
    /// Largest request header (request line included); beyond: 431.
    pub max_header_size: ByteSize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            listen: "127.0.0.1:9122".into(),
            maintenance_file: "/etc/ingestd/maintenance".into(),
            archive_failing_for: HumanDuration(Duration::from_secs(600)),
            max_backlog: 100_000,
            census_interval: HumanDuration(Duration::from_secs(2)),
            max_connections: 256,
            idle_timeout: HumanDuration(Duration::from_secs(10)),
            max_header_size: ByteSize(8 << 10),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter (tracing `EnvFilter` syntax, e.g. "info,russh=warn" or "debug").
    /// "" (the default): `RUST_LOG`, else "info,russh=warn". Reloaded on SIGHUP.
    pub level: String,
}

fn default_node_id() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// The configuration used when `ingestd run` is given no `--config`: a
/// working node on 127.0.0.1:2222 with its data under `./ingestd-data`,
/// accepting the invoking user's own keys.
pub const EMBEDDED_DEFAULT: &str = r#"
[ssh]
listen = "127.0.0.1:2222"
host_key = "ingestd-data/ssh_host_ed25519_key"
authorized_keys = ["~/.ssh/authorized_keys", "~/.ssh/*.pub"]

[spool]
dir = "ingestd-data/spool"
min_free = "256MiB"

[archive]
dir = "ingestd-data/archive"

[forward]
dir = "ingestd-data/outgoing"

[health]
listen = "127.0.0.1:9122"
maintenance_file = "ingestd-data/maintenance"
"#;

impl Config {
    /// Parse a config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config> {
        // serde_path_to_error names the full key ("retry.max_backoff") of a bad value.
        let mut cfg: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path.is_empty() || path == "." {
                    anyhow::anyhow!("{inner}")
                } else {
                    anyhow::anyhow!("{path}: {}", inner.message().trim_end())
                }
            })?;
        cfg.resolve_paths(base);
        cfg.validate()?;
        cfg.explicit_keys = reload::explicit_keys(text);
        Ok(cfg)
    }

    /// Load `path`, or the embedded default (relative to the working directory) when `None`.
    /// A file that sets no key at all (empty, or only comments: a config tool
    /// that truncated it before writing) is refused: a node never runs on the
    /// built-in defaults because its file was emptied (give no `--config` for the
    /// embedded default).
    pub fn load(path: Option<&Path>) -> Result<Config> {
        Ok(Config::load_text(path)?.0)
    }

    /// [`Config::load`], with the text of the file (`""` for the embedded default).
    pub fn load_text(path: Option<&Path>) -> Result<(Config, String)> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
                let base = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
                let cfg =
                    Config::parse(&text, &base).with_context(|| format!("in {}", p.display()))?;
                if cfg.explicit_keys.is_empty() {
                    bail!(
                        "{}: the file sets no key (it is empty or only comments: truncated?); \
                         refusing to fall back to the built-in defaults (run without --config \
                         for the embedded default configuration)",
                        p.display()
                    );
                }
                Ok((cfg, text))
            }
            None => {
                let cwd = std::env::current_dir().context("no working directory")?;
                Ok((Config::parse(EMBEDDED_DEFAULT, &cwd)?, String::new()))
            }
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            let s = p.to_string_lossy().to_string();
            let expanded = expand_home(&s);
            *p = if Path::new(&expanded).is_absolute() {
                PathBuf::from(expanded)
            } else {
                base.join(expanded)
            };
        };
        let mut keys = self.ssh.host_key.to_vec();
        keys.iter_mut().for_each(fix);
        self.ssh.host_key = OneOrMany::Many(keys);
        let ak: Vec<String> = self
            .ssh
            .authorized_keys
            .to_vec()
            .into_iter()
            .map(|s| {
                let e = expand_home(&s);
                if Path::new(&e).is_absolute() {
                    e
                } else {
                    base.join(e).to_string_lossy().into_owned()
                }
            })
            .collect();
        self.ssh.authorized_keys = OneOrMany::Many(ak);
        fix(&mut self.spool.dir);
        fix(&mut self.archive.dir);
        fix(&mut self.forward.dir);
        if !self.health.maintenance_file.as_os_str().is_empty() {
            fix(&mut self.health.maintenance_file);
        }
        if let Some(i) = self.inbox.as_mut() {
            fix(&mut i.dir);
        }
        if let Some(p) = self.process.as_mut() {
            if let Some(first) = p.command.first_mut() {
                if first.contains('/') && !first.starts_with('/') {
                    *first = base.join(&*first).to_string_lossy().into_owned();
                }
            }
        }
    }

    /// Semantic checks; each error names the key.
    pub fn validate(&self) -> Result<()> {
        if self.node_id.is_empty()
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "node_id: {:?} must be non-empty and use only letters, digits, '-', '_', '.'",
                self.node_id
            );
        }
        let listen = self.ssh.listen.to_vec();
        if listen.is_empty() {
            bail!("ssh.listen: at least one address is required");
        }
        for l in &listen {
            l.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!("ssh.listen: {l:?} is not an address like \"0.0.0.0:22\"")
            })?;
        }
        if self.ssh.host_key.to_vec().is_empty() {
            bail!("ssh.host_key: at least one key file is required");
        }
        if self.ssh.authorized_keys.to_vec().is_empty() {
            bail!("ssh.authorized_keys: at least one file is required");
        }
        if self.ssh.max_sessions == 0 {
            bail!("ssh.max_sessions: must be at least 1");
        }
        if self.ssh.max_sessions_per_ip == 0 {
            bail!("ssh.max_sessions_per_ip: must be at least 1");
        }
        if self.ssh.max_startups == 0 {
            bail!("ssh.max_startups: must be at least 1");
        }
        if self.ssh.max_channels == 0 {
            bail!("ssh.max_channels: must be at least 1");
        }
        if self.ssh.max_open_files == 0 || self.ssh.max_open_files_per_connection == 0 {
            bail!("ssh.max_open_files, ssh.max_open_files_per_connection: must be at least 1");
        }
        for (k, v) in [
            ("max_buffered", self.ssh.max_buffered.0),
            (
                "max_buffered_per_connection",
                self.ssh.max_buffered_per_connection.0,
            ),
        ] {
            if !(256 << 10..=1 << 40).contains(&v) {
                bail!("ssh.{k}: must be between 256KiB and 1TiB");
            }
        }
        self.ssh.validate_algorithms()?;
        if self.ssh.login_grace_time.0.is_zero() {
            bail!("ssh.login_grace_time: must be greater than 0");
        }
        for (i, c) in self.defender.allow.iter().enumerate() {
            if !crate::core::netmatch::valid_cidr(c) {
                bail!("defender.allow[{i}]: {c:?} is not a CIDR like \"10.0.0.0/8\" or an address");
            }
        }
        if self.ssh.max_packet_size.0 < 1024 || self.ssh.max_packet_size.0 > 65535 {
            bail!("ssh.max_packet_size: must be between 1024 and 65535");
        }
        if self.ssh.window_size.0 < 65536 || self.ssh.window_size.0 > u32::MAX as u64 {
            bail!("ssh.window_size: must be between 64KiB and 4GiB");
        }
        if self.spool.max_file_size.0 == 0 {
            bail!("spool.max_file_size: must be greater than 0");
        }
        if !self.archive.layout.contains("{id}") {
            bail!("archive.layout: must contain {{id}} so names are unique across the pool");
        }
        for part in self.archive.layout.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                bail!(
                    "archive.layout: {:?} has an empty, '.' or '..' component",
                    self.archive.layout
                );
            }
        }
        let mut rest = self.archive.layout.as_str();
        while let Some(i) = rest.find('{') {
            let end = rest[i..]
                .find('}')
                .ok_or_else(|| anyhow::anyhow!("archive.layout: unclosed '{{'"))?;
            let var = &rest[i + 1..i + end];
            if !["date", "node", "id", "user", "name"].contains(&var) {
                bail!("archive.layout: unknown placeholder {{{var}}} (use date, node, id, user, name)");
            }
            rest = &rest[i + end + 1..];
        }
        if let Some(p) = &self.process {
            if p.command.is_empty() || p.command[0].is_empty() {
                bail!("process.command: must name a program, e.g. [\"/usr/local/bin/convert\"]");
            }
            if p.concurrency == 0 {
                bail!("process.concurrency: must be at least 1");
            }
            if p.timeout.0.is_zero() {
                bail!("process.timeout: must be greater than 0");
            }
        }
        if self.retry.max_attempts == 0 {
            bail!("retry.max_attempts: must be at least 1");
        }
        if self.retry.initial_backoff > self.retry.max_backoff {
            bail!("retry.initial_backoff: must not exceed retry.max_backoff");
        }
        if self.pipeline.archive_workers == 0 || self.pipeline.forward_workers == 0 {
            bail!("pipeline.archive_workers/forward_workers: must be at least 1");
        }
        if !self.health.listen.is_empty() && self.health.listen.parse::<SocketAddr>().is_err() {
            bail!(
                "health.listen: {:?} is not an address like \"127.0.0.1:9122\"",
                self.health.listen
            );
        }
        if self.health.census_interval.0 < Duration::from_millis(100) {
            bail!("health.census_interval: must be at least 100ms");
        }
        if !self.log.level.is_empty() {
            tracing_subscriber::EnvFilter::try_new(&self.log.level)
                .map_err(|e| anyhow::anyhow!("log.level: {:?}: {e}", self.log.level))?;
        }
        let spool = &self.spool.dir;
        for (key, d) in [
            ("archive.dir", &self.archive.dir),
            ("forward.dir", &self.forward.dir),
        ] {
            if d.starts_with(spool) || spool.starts_with(d) {
                bail!(
                    "{key}: {} must not overlap spool.dir {}",
                    d.display(),
                    spool.display()
                );
            }
        }
        if let Some(i) = &self.inbox {
            if i.dir.starts_with(spool) || spool.starts_with(&i.dir) {
                bail!("inbox.dir: must not overlap spool.dir");
            }
        }
        Ok(())
    }
}

/// `~/x` → `$HOME/x`.
pub fn expand_home(s: &str) -> String {
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return Path::new(&home).join(rest).to_string_lossy().into_owned();
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config> {
        Config::parse(t, Path::new("/etc/ingestd"))
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::parse(EMBEDDED_DEFAULT, Path::new("/tmp/x")).unwrap();
        assert_eq!(c.ssh.listen.to_vec(), vec!["127.0.0.1:2222".to_string()]);
        assert_eq!(c.spool.dir, Path::new("/tmp/x/ingestd-data/spool"));
    }

    #[test]
    fn contract_shape_parses() {
        let c = parse(
            r#"
node_id = "node-1"
[ssh]
listen = ["0.0.0.0:22", "[::]:22"]
host_key = "/etc/ingestd/ssh_host_ed25519_key"
authorized_keys = "/etc/ingestd/keys/%u"
[spool]
dir = "spool"
max_file_size = "512MiB"
[archive]
dir = "/srv/backup/ingestd"
[forward]
dir = "/srv/outgoing"
[process]
command = ["/bin/true"]
timeout = "10m"
[retry]
initial_backoff = "100ms"
[health]
listen = "127.0.0.1:9122"
"#,
        )
        .unwrap();
        assert_eq!(c.spool.dir, Path::new("/etc/ingestd/spool"));
        assert_eq!(c.spool.max_file_size.0, 512 << 20);
        assert_eq!(c.retry.initial_backoff.0, Duration::from_millis(100));
        assert_eq!(c.process.unwrap().timeout.0, Duration::from_secs(600));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[ssh]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("listen_port"), "{e:#}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("[ssh]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("ssh.listen"), "{e:#}");
        let e = parse("[spool]\nmax_file_size = \"lots\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("max_file_size"), "{e:#}");
        let e = parse("[retry]\nmax_backoff = \"soon\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("retry.max_backoff"), "{e:#}");
        let e = parse("[spool]\nmin_free = \"lots\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("spool.min_free"), "{e:#}");
        let e = parse("[archive]\nlayout = \"{date}/{name}\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("archive.layout"), "{e:#}");
    }
}
