//! The metadata record kept beside every spooled file (`record.json`), and the
//! pipeline's per-entry state (`state.json`). Both are rewritten only by
//! write-temp + fsync + rename, so a reader sees an old or a new version, never a torn one.

use serde::{Deserialize, Serialize};

/// What is known about one landed file. Written once at landing; never changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Unique across the pool: `<node_id>-<ULID>`.
    pub id: String,
    /// node_id of the node that landed it.
    pub node: String,
    /// Login name (sender identity), or the inbox's configured user.
    pub user: String,
    /// Sender-given path relative to the sender's virtual root, '/'-separated,
    /// already validated (no empty, `.`, `..` components, no control characters).
    pub path: String,
    pub size: u64,
    /// Permission bits (`& 0o777`).
    pub mode: u32,
    /// Modification/access time given by the sender (`scp -p`, SFTP setstat), seconds since the epoch.
    pub mtime: Option<i64>,
    pub atime: Option<i64>,
    /// BLAKE3 of the content, lowercase hex.
    pub blake3: String,
    /// Peer address ("ip:port"), or "inbox".
    pub remote_addr: String,
    /// RFC 3339 UTC time at which the file was landed.
    pub received_at: String,
    /// "scp", "sftp" or "inbox".
    pub protocol: String,
}

impl Record {
    /// Last component of the sender-given path.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// One failed attempt of a pipeline step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    /// "archive", "process" or "forward".
    pub step: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// Human-readable reason (error text, "exit status 3", "killed after timeout 10s", ...).
    pub reason: String,
    pub exit_code: Option<i32>,
    /// Tail of the process command's stderr (bounded).
    pub stderr_tail: Option<String>,
}

/// Pipeline bookkeeping for one entry (`state.json`, absent until the first failure).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EntryState {
    /// Failed attempts of the current step since it last succeeded or was requeued.
    pub attempts: u32,
    /// Unix milliseconds before which the current step is not retried.
    pub next_try_ms: u64,
    /// Every failed attempt, all steps, oldest first (bounded to the last 100).
    pub history: Vec<Attempt>,
    /// Set when the entry is in quarantine: the step that gave up.
    pub quarantined_step: Option<String>,
}
