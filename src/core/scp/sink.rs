//! The legacy SCP sink (`scp -t`) as a sans-IO state machine, in the style of
//! quinn-proto: the driver (`ingest::ssh::scp`) feeds it [`Event`]s (bytes and
//! EOF from the client, and the results of the effects it ran) and carries out
//! the [`Action`]s it returns from [`Sink::poll_action`] (bytes and stderr
//! lines for the client, start / write / finish / abort a file, group commit,
//! log lines, exit status).
//!
//! Every decision lives here: acks, warnings and fatal errors, the directory
//! stack, target naming, limits, the group-commit thresholds, and what is said
//! to the sender and the log when a session fails. Pure: no I/O, never panics
//! on any input; every message line it sends is free of control characters.
//!
//! Protocol (OpenSSH scp.c): the sink sends `\0`, then reads control lines
//! (`T`, `C`, `D`, `E`, or a `\x01`/`\x02` error line from the source). After a
//! `C` line is acked, exactly `size` bytes follow, then the source's status
//! byte: `\0`, or (its own read failed: it padded the file with zeros to keep
//! in sync) `\x01scp: <name>: <error>\n`, after which it waits for our reply.

use crate::core::scp::exec::ScpArgs;
use crate::core::scp::frame::{escape_bytes, parse_control, Control, ProtoError, MAX_LINE};
use crate::core::vpath::{self, PathError};
use bytes::Bytes;
use std::collections::VecDeque;

/// Commit early once a session has staged this many files or bytes (bounds open
/// files and the work lost to a dropped connection).
pub const GROUP_MAX_FILES: usize = 256;
pub const GROUP_MAX_BYTES: u64 = 1 << 30;

/// Most names listed on the sender's stderr when staged files are dropped
/// (every one is logged).
pub const MAX_LISTED: usize = 20;

/// When writing a file fails while its data is still arriving (the spool is
/// full), the rest of its data is read and dropped, so that the sender, which
/// reads nothing until it has sent the whole file (OpenSSH scp.c), then reads
/// the reason instead of losing the connection. Past this many bytes still to
/// come, the session ends at once (the sender sees the connection close).
pub const DRAIN_MAX: u64 = 1 << 30;

/// What the sink needs to know at the start of a session.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub args: ScpArgs,
    /// The target (as resolved by [`resolve_target`]) is an existing directory
    /// in the sender's view; the driver looks it up before the session starts.
    pub target_is_existing_dir: bool,
    /// Largest accepted file (the spool's `max_file_size`); `u64::MAX` for none.
    pub max_file_size: u64,
    pub group_max_files: usize,
    pub group_max_bytes: u64,
}

impl SinkConfig {
    pub fn new(args: ScpArgs, target_is_existing_dir: bool, max_file_size: u64) -> Self {
        SinkConfig {
            args,
            target_is_existing_dir,
            max_file_size,
            group_max_files: GROUP_MAX_FILES,
            group_max_bytes: GROUP_MAX_BYTES,
        }
    }
}

/// The target of `scp -t <target>` as a virtual path ("" = the sender's root).
pub fn resolve_target(raw: &str) -> Result<String, PathError> {
    vpath::resolve("", raw)
}

/// Something that happened: input from the client or the result of an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes from the client (channel data).
    Data(Bytes),
    /// The client sent EOF (or the channel closed).
    Eof,
    /// [`Action::StartFile`] succeeded: the file is open for writing.
    Admitted,
    /// [`Action::StartFile`] was refused. `fatal == false`: a policy refusal
    /// (too large, no space) the sender can skip; `true`: a storage error.
    Refused { reason: String, fatal: bool },
    /// A [`Action::Write`] failed (reported whenever the driver notices).
    WriteFailed(String),
    /// [`Action::FinishFile`] succeeded: the file is staged for the next commit.
    Finished,
    /// [`Action::FinishFile`] failed.
    FinishFailed(String),
    /// [`Action::Commit`] succeeded: every staged file is durable in `ready/`.
    Committed,
    /// [`Action::Commit`] failed.
    CommitFailed(String),
    /// Sending to the client failed: the connection is gone.
    SendFailed,
}

/// A file to admit and begin (answer: [`Event::Admitted`] / [`Event::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStart {
    /// Validated virtual path (relative, normalized, inside the sender's root).
    pub path: String,
    /// Permission bits (`& 0o777`).
    pub mode: u32,
    pub size: u64,
    pub mtime: Option<i64>,
    pub atime: Option<i64>,
}

/// Something for the driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the client (acks, `\x01`/`\x02` message lines).
    Send(Bytes),
    /// One line (without `\n`) for the client's stderr.
    Stderr(String),
    /// Admit and begin a file; answer with [`Event::Admitted`] / [`Event::Refused`].
    StartFile(FileStart),
    /// Append to the current file; a failure is reported with [`Event::WriteFailed`].
    Write(Bytes),
    /// The current file is complete: stage it; answer with [`Event::Finished`] /
    /// [`Event::FinishFailed`].
    FinishFile,
    /// Drop the current file (its partial entry is removed).
    AbortFile,
    /// Make every staged file durable; answer [`Event::Committed`] / [`Event::CommitFailed`].
    Commit,
    /// A log line (untrusted strings in it must be logged Debug-formatted).
    Log(LogEvent),
    /// The session is over: exit-status, EOF, close. Always the last action.
    Exit(u32),
}

/// What goes into the log, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// The session ends with a fatal error (sent to the client as `\x02`).
    Fatal { reason: String },
    /// One file refused with a warning (`\x01`); the session goes on.
    FileRefused { path: String, reason: String },
    /// The source reported an error line; `path` is the file it was sending.
    SourceError {
        path: Option<String>,
        fatal: bool,
        message: String,
    },
    /// The connection ended in the middle of a file, or inside a directory.
    Aborted {
        path: String,
        received: u64,
        size: u64,
    },
    /// A file acknowledged earlier in the session that will not be stored,
    /// because the session failed before its group commit.
    Dropped { path: String, reason: String },
    /// Sending to the client failed.
    ConnectionLost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Current {
    path: String,
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCommit {
    /// An early (threshold) commit: ack the last file and go on.
    Ack,
    /// The final commit at a clean end.
    Exit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading control lines.
    Lines,
    /// Waiting for the admission of `file`.
    Admitting(Current),
    /// Receiving `left` more bytes of the current file.
    Data {
        left: u64,
    },
    /// Waiting for the source's status byte after the data.
    Status,
    /// Reading the message of a `\x01`/`\x02` status after the data.
    SourceLine {
        fatal: bool,
    },
    /// Waiting for the current file to be staged.
    Finishing,
    Committing(AfterCommit),
    Done,
}

/// The SCP sink of one session.
#[derive(Debug)]
pub struct Sink {
    cfg: SinkConfig,
    /// Resolved target (virtual path, "" = root).
    target: String,
    target_is_dir: bool,
    /// Virtual paths of the directories entered with `D` lines, innermost last.
    stack: Vec<String>,
    top_level_items: usize,
    times: Option<(i64, i64)>,
    /// The file being received (started and not yet finished or aborted).
    file: Option<Current>,
    /// Paths staged since the last commit, and their bytes.
    staged: Vec<String>,
    staged_bytes: u64,
    /// Something was refused or failed: the exit status will be 1.
    failed: bool,
    /// Writing the current file failed (path, reason): the rest of its data is
    /// read and dropped, then the sender is told why (see [`DRAIN_MAX`]).
    drain: Option<(String, String)>,
    state: State,
    input: VecDeque<Bytes>,
    eof: bool,
    /// The control line being accumulated.
    line: Vec<u8>,
    actions: VecDeque<Action>,
}

/// A message safe to send on one line: control characters become `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("'\\x{b:02x}'")
    }
}

impl Sink {
    /// Start a session; the first actions are the initial `\0` (or a fatal
    /// error if the target is not acceptable).
    pub fn new(cfg: SinkConfig) -> Sink {
        let mut s = Sink {
            target: String::new(),
            target_is_dir: true,
            stack: Vec::new(),
            top_level_items: 0,
            times: None,
            file: None,
            staged: Vec::new(),
            staged_bytes: 0,
            failed: false,
            drain: None,
            state: State::Lines,
            input: VecDeque::new(),
            eof: false,
            line: Vec::new(),
            actions: VecDeque::new(),
            cfg,
        };
        let t = s.cfg.args.target.clone();
        match resolve_target(&t) {
            Ok(r) => {
                s.target_is_dir = r.is_empty()
                    || t.ends_with('/')
                    || t == "."
                    || t.ends_with("/.")
                    || s.cfg.args.target_should_be_dir
                    || s.cfg.target_is_existing_dir;
                s.target = r;
                s.send(b"\0");
            }
            Err(e) => s.fatal(&format!("{}: {e}", escape_bytes(t.as_bytes()))),
        }
        s
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The session is over (its last action is [`Action::Exit`]).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True when the sink can only make progress with more input from the
    /// client (no action pending, no effect result awaited).
    pub fn wants_input(&self) -> bool {
        self.actions.is_empty()
            && matches!(
                self.state,
                State::Lines | State::Data { .. } | State::Status | State::SourceLine { .. }
            )
    }

    /// The exit status will be non-zero (something was refused or failed).
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    pub fn handle(&mut self, ev: Event) {
        if self.state == State::Done {
            return;
        }
        match ev {
            Event::Data(b) => {
                if !b.is_empty() && !self.eof {
                    self.input.push_back(b);
                }
            }
            Event::Eof => self.eof = true,
            Event::Admitted => {
                if let State::Admitting(cur) = &self.state {
                    let left = cur.size;
                    self.file = Some(cur.clone());
                    self.send(b"\0");
                    self.state = State::Data { left };
                }
            }
            Event::Refused { reason, fatal } => {
                if let State::Admitting(cur) = &self.state {
                    let path = cur.path.clone();
                    if fatal {
                        self.fatal(&format!("{path}: cannot store file: {reason}"));
                    } else {
                        self.warn(&path, &reason);
                        self.state = State::Lines;
                    }
                }
            }
            Event::WriteFailed(e) => {
                if let Some(cur) = self.file.clone() {
                    // The queued writes and the finish of this file are moot.
                    self.actions
                        .retain(|a| !matches!(a, Action::Write(_) | Action::FinishFile));
                    let left = match self.state {
                        State::Data { left } => Some(left),
                        State::Status | State::SourceLine { .. } => Some(0),
                        // All its data arrived and the sender waits for the
                        // answer (the finish was dropped above): tell it now.
                        State::Finishing => {
                            self.abort_file();
                            self.warn(
                                &cur.path,
                                &format!("not stored: cannot write it: {}", clean(&e)),
                            );
                            self.state = State::Lines;
                            self.process();
                            return;
                        }
                        _ => None,
                    };
                    match left {
                        // Read (and drop) the rest, then tell the sender why.
                        Some(left) if left <= DRAIN_MAX => {
                            self.abort_file();
                            self.drain = Some((cur.path, clean(&e)));
                        }
                        _ => self.fatal(&format!("{}: write failed: {e}", cur.path)),
                    }
                }
            }
            Event::Finished => {
                if self.state == State::Finishing {
                    if let Some(cur) = self.file.take() {
                        self.staged_bytes = self.staged_bytes.saturating_add(cur.size);
                        self.staged.push(cur.path);
                    }
                    if self.staged.len() >= self.cfg.group_max_files
                        || self.staged_bytes >= self.cfg.group_max_bytes
                    {
                        self.state = State::Committing(AfterCommit::Ack);
                        self.actions.push_back(Action::Commit);
                    } else {
                        self.file_acked();
                    }
                }
            }
            Event::FinishFailed(e) => {
                if self.state == State::Finishing {
                    // The sender waits for this file's answer: a warning, and the
                    // session goes on (what it staged before is still committed).
                    let path = self.file.take().map(|c| c.path).unwrap_or_default();
                    self.warn(&path, &format!("not stored: {}", clean(&e)));
                    self.state = State::Lines;
                }
            }
            Event::Committed => {
                if let State::Committing(then) = self.state {
                    self.staged.clear();
                    self.staged_bytes = 0;
                    match then {
                        AfterCommit::Ack => self.file_acked(),
                        AfterCommit::Exit => self.exit(),
                    }
                }
            }
            Event::CommitFailed(e) => {
                if let State::Committing(then) = self.state {
                    let e = clean(&e);
                    match then {
                        // The sender still waits for its ack: a fatal error.
                        AfterCommit::Ack => self.fatal(&format!("cannot store files durably: {e}")),
                        // The sender waits for the exit status: tell it on stderr.
                        AfterCommit::Exit => {
                            self.stderr(format!("ingestd: could not store the files durably: {e}"));
                            self.log(LogEvent::Fatal {
                                reason: format!("cannot store files durably: {e}"),
                            });
                            self.end_failed(&format!("the group commit failed: {e}"));
                        }
                    }
                }
            }
            Event::SendFailed => {
                self.actions.clear();
                self.log(LogEvent::ConnectionLost);
                self.end_failed("the connection was lost");
            }
        }
        self.process();
    }

    // -- outputs -------------------------------------------------------------

    fn send(&mut self, b: &'static [u8]) {
        self.actions.push_back(Action::Send(Bytes::from_static(b)));
    }

    fn send_line(&mut self, kind: u8, msg: &str) {
        let mut v = Vec::with_capacity(msg.len() + 7);
        v.push(kind);
        v.extend_from_slice(b"scp: ");
        v.extend_from_slice(clean(msg).as_bytes());
        v.push(b'\n');
        self.actions.push_back(Action::Send(Bytes::from(v)));
    }

    fn stderr(&mut self, line: String) {
        self.actions.push_back(Action::Stderr(clean(&line)));
    }

    fn log(&mut self, ev: LogEvent) {
        self.actions.push_back(Action::Log(ev));
    }

    /// A warning: this file (or directory) is skipped, the session goes on.
    fn warn(&mut self, path: &str, reason: &str) {
        self.failed = true;
        self.log(LogEvent::FileRefused {
            path: path.to_string(),
            reason: reason.to_string(),
        });
        self.send_line(1, &format!("{path}: {reason}"));
    }

    /// A fatal error: tell the sender, drop everything, exit 1.
    fn fatal(&mut self, msg: &str) {
        let msg = clean(msg);
        self.abort_file();
        self.send_line(2, &msg);
        self.log(LogEvent::Fatal {
            reason: msg.clone(),
        });
        self.end_failed(&msg);
    }

    fn abort_file(&mut self) {
        if self.file.take().is_some() {
            self.actions.push_back(Action::AbortFile);
        }
    }

    /// End without storing what is staged: log and list every dropped file, exit 1.
    fn end_failed(&mut self, why: &str) {
        self.abort_file();
        self.failed = true;
        let dropped = std::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        for p in &dropped {
            self.log(LogEvent::Dropped {
                path: p.clone(),
                reason: why.to_string(),
            });
        }
        if !dropped.is_empty() {
            let mut names: Vec<String> = dropped
                .iter()
                .take(MAX_LISTED)
                .map(|p| format!("{p:?}"))
                .collect();
            if dropped.len() > MAX_LISTED {
                names.push(format!("and {} more", dropped.len() - MAX_LISTED));
            }
            self.stderr(format!(
                "ingestd: the session failed ({why}); {} file(s) acknowledged earlier were NOT stored: {}",
                dropped.len(),
                names.join(", ")
            ));
        }
        self.actions.push_back(Action::Exit(1));
        self.state = State::Done;
        self.input.clear();
    }

    fn exit(&mut self) {
        let code = u32::from(self.failed);
        self.actions.push_back(Action::Exit(code));
        self.state = State::Done;
        self.input.clear();
    }

    /// A file was staged (and committed if a threshold was hit): ack it, unless
    /// the source ended with EOF instead of its status byte (libssh2).
    fn file_acked(&mut self) {
        if !self.eof {
            self.send(b"\0");
        }
        self.state = State::Lines;
    }

    /// Clean EOF between messages: commit what is staged, then exit.
    fn finish(&mut self) {
        if self.staged.is_empty() {
            self.exit();
        } else {
            self.state = State::Committing(AfterCommit::Exit);
            self.actions.push_back(Action::Commit);
        }
    }

    // -- input ---------------------------------------------------------------

    /// The next complete line (without `\n`) from the input, `None` if more
    /// input is needed.
    fn next_line(&mut self) -> Option<Result<Vec<u8>, ProtoError>> {
        while let Some(front) = self.input.front_mut() {
            match front.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let part = front.split_to(i + 1);
                    if front.is_empty() {
                        self.input.pop_front();
                    }
                    self.line.extend_from_slice(&part[..i]);
                    if self.line.len() > MAX_LINE {
                        return Some(Err(ProtoError::LineTooLong));
                    }
                    return Some(Ok(std::mem::take(&mut self.line)));
                }
                None => {
                    self.line.extend_from_slice(front);
                    self.input.pop_front();
                    if self.line.len() > MAX_LINE {
                        return Some(Err(ProtoError::LineTooLong));
                    }
                }
            }
        }
        None
    }

    fn process(&mut self) {
        loop {
            match self.state {
                State::Lines => match self.next_line() {
                    Some(Ok(line)) => self.on_line(&line),
                    Some(Err(e)) => self.fatal(&e.to_string()),
                    None if self.eof => self.on_eof_between(),
                    None => return,
                },
                State::Data { left } => {
                    if left == 0 {
                        self.state = State::Status;
                        continue;
                    }
                    match self.input.front_mut() {
                        Some(front) => {
                            let n = (front.len() as u64).min(left) as usize;
                            let chunk = front.split_to(n);
                            if front.is_empty() {
                                self.input.pop_front();
                            }
                            self.state = State::Data {
                                left: left - n as u64,
                            };
                            if self.drain.is_none() {
                                self.actions.push_back(Action::Write(chunk));
                            }
                        }
                        None if self.eof => {
                            let cur = self.file.clone().unwrap_or(Current {
                                path: self.drain.take().map(|d| d.0).unwrap_or_default(),
                                size: left,
                            });
                            let received = cur.size - left;
                            self.log(LogEvent::Aborted {
                                path: cur.path.clone(),
                                received,
                                size: cur.size,
                            });
                            self.stderr(format!(
                                "ingestd: {}: the connection ended after {received} of {} bytes; the file was not stored",
                                cur.path, cur.size
                            ));
                            self.end_failed(&format!(
                                "the connection ended in the middle of {}",
                                cur.path
                            ));
                        }
                        None => return,
                    }
                }
                State::Status => match self.input.front_mut() {
                    Some(front) => {
                        let b = front[0];
                        let _ = front.split_to(1);
                        if front.is_empty() {
                            self.input.pop_front();
                        }
                        match b {
                            0 => match self.drain.take() {
                                Some((path, why)) => {
                                    self.warn(
                                        &path,
                                        &format!("not stored: cannot write it: {why}"),
                                    );
                                    self.state = State::Lines;
                                }
                                None => self.finish_file(),
                            },
                            1 | 2 => {
                                self.line.clear();
                                self.state = State::SourceLine { fatal: b == 2 };
                            }
                            // Not a status byte: the source sent more data than
                            // its header announced, or garbage. Say so.
                            other => {
                                let (path, size) = self
                                    .file
                                    .as_ref()
                                    .map(|c| (c.path.clone(), c.size))
                                    .unwrap_or_default();
                                self.fatal(&format!(
                                    "protocol error: {path}: expected the status byte \\0 after the {size} bytes announced in the header, got {}: more data than the header announced?",
                                    show_byte(other)
                                ));
                            }
                        }
                    }
                    // libssh2/curl send EOF instead of the final \0.
                    None if self.eof => match self.drain.take() {
                        Some((path, why)) => {
                            self.warn(&path, &format!("not stored: cannot write it: {why}"));
                            self.state = State::Lines;
                        }
                        None => self.finish_file(),
                    },
                    None => return,
                },
                State::SourceLine { fatal } => {
                    let line = match self.next_line() {
                        Some(Ok(l)) => l,
                        Some(Err(_)) => {
                            let mut l = std::mem::take(&mut self.line);
                            l.truncate(MAX_LINE);
                            l
                        }
                        None if self.eof => std::mem::take(&mut self.line),
                        None => return,
                    };
                    self.on_source_error_after_data(fatal, &line);
                }
                State::Admitting(_) | State::Finishing | State::Committing(_) | State::Done => {
                    return
                }
            }
        }
    }

    fn finish_file(&mut self) {
        self.state = State::Finishing;
        self.actions.push_back(Action::FinishFile);
    }

    /// The source could not read its own file: it padded the data to the
    /// announced size and sent `\x01scp: <name>: <error>\n` instead of `\0`,
    /// and now waits for our reply (OpenSSH scp.c `source()`). The file is
    /// dropped; the reply (a warning) tells the sender it was not stored; the
    /// session goes on with the sender's next file (the exit status will be 1),
    /// as OpenSSH's own sink does. A `\x02` status ends the session.
    fn on_source_error_after_data(&mut self, fatal: bool, raw: &[u8]) {
        let message = match parse_control(&[&[1u8][..], raw].concat()) {
            Ok(Control::SourceError { message, .. }) => message,
            _ => clean(&String::from_utf8_lossy(raw)),
        };
        let drained = self.drain.take().map(|(p, _)| p);
        let path = self.file.as_ref().map(|c| c.path.clone()).or(drained);
        self.log(LogEvent::SourceError {
            path: path.clone(),
            fatal,
            message: message.clone(),
        });
        self.abort_file();
        self.failed = true;
        let path = path.unwrap_or_default();
        if fatal {
            self.stderr(format!(
                "ingestd: {path}: not stored: the sender reported a fatal error: {message}"
            ));
            self.end_failed(&format!("the sender reported a fatal error: {message}"));
        } else {
            self.send_line(
                1,
                &format!(
                    "{path}: not stored: the sender reported an error while sending it ({message})"
                ),
            );
            self.state = State::Lines;
        }
    }

    fn on_eof_between(&mut self) {
        if !self.line.is_empty() {
            // A header the sender never finished: not a clean end.
            let l = std::mem::take(&mut self.line);
            let show = escape_bytes(&l[..l.len().min(64)]);
            self.fatal(&format!(
                "protocol error: the connection ended in the middle of a header line ({show})"
            ));
        } else if let Some(dir) = self.stack.last().cloned() {
            self.log(LogEvent::Aborted {
                path: dir.clone(),
                received: 0,
                size: 0,
            });
            self.stderr(format!(
                "ingestd: the connection ended inside directory {dir:?} (no 'E' line)"
            ));
            self.end_failed(&format!("the connection ended inside directory {dir}"));
        } else {
            self.finish();
        }
    }

    /// Virtual path for an item named `name` at the current depth. The first
    /// top-level item sent to a target that is not a directory takes the
    /// target's name (`scp f host:newname`, `scp -r dir host:newname`).
    fn item_path(&mut self, name: &str) -> String {
        match self.stack.last() {
            Some(dir) => vpath::join(dir, name),
            None => {
                self.top_level_items += 1;
                if !self.target_is_dir && self.top_level_items == 1 {
                    self.target.clone()
                } else {
                    vpath::join(&self.target, name)
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        let ctl = match parse_control(line) {
            Ok(c) => c,
            Err(e @ ProtoError::NameNotUtf8(_)) => {
                if line.first() == Some(&b'D') && !self.cfg.args.recursive {
                    return self.fatal("received a directory without -r");
                }
                // A name we cannot store, not an attack: the sender skips this
                // file (or directory) and goes on.
                self.times = None;
                self.failed = true;
                let reason = format!("{e}; not stored (only UTF-8 names are accepted)");
                self.log(LogEvent::FileRefused {
                    path: String::new(),
                    reason: reason.clone(),
                });
                return self.send_line(1, &reason);
            }
            Err(e) => return self.fatal(&e.to_string()),
        };
        match ctl {
            Control::SourceError { fatal, message } => {
                // Between files the source expects no reply (OpenSSH scp.c).
                self.log(LogEvent::SourceError {
                    path: None,
                    fatal,
                    message: message.clone(),
                });
                self.failed = true;
                if fatal {
                    self.end_failed(&format!("the sender reported a fatal error: {message}"));
                }
            }
            Control::Time { mtime, atime } => {
                self.times = Some((mtime, atime));
                self.send(b"\0");
            }
            Control::Dir { name, .. } => {
                if !self.cfg.args.recursive {
                    return self.fatal("received a directory without -r");
                }
                let path = self.item_path(&name);
                if self.stack.len() >= crate::core::naming::MAX_DEPTH {
                    // Refused like a file: OpenSSH's source then skips the whole
                    // subtree, so the rest of the tree still lands; the stack (and
                    // its memory) never grows past the limit.
                    let max = crate::core::naming::MAX_DEPTH;
                    self.warn(
                        &path,
                        &format!("directories nested too deep (this server accepts at most {max} levels)"),
                    );
                    self.times = None;
                    return;
                }
                if path.len() > vpath::MAX_PATH {
                    return self.fatal(&PathError::PathTooLong { len: path.len() }.to_string());
                }
                self.stack.push(path);
                self.times = None;
                self.send(b"\0");
            }
            Control::End => {
                if self.stack.pop().is_none() {
                    return self
                        .fatal("protocol error: unexpected end of directory ('E' without 'D')");
                }
                self.send(b"\0");
            }
            Control::File { mode, size, name } => {
                let path = self.item_path(&name);
                if path.len() > vpath::MAX_PATH {
                    return self.fatal(&PathError::PathTooLong { len: path.len() }.to_string());
                }
                let times = self.times.take();
                if size > self.cfg.max_file_size {
                    let max = self.cfg.max_file_size;
                    return self.warn(
                        &path,
                        &format!("file too large: {size} bytes exceeds the limit of {max} bytes"),
                    );
                }
                self.actions.push_back(Action::StartFile(FileStart {
                    path: path.clone(),
                    mode: mode & 0o777,
                    size,
                    mtime: times.map(|t| t.0),
                    atime: times.map(|t| t.1),
                }));
                self.state = State::Admitting(Current { path, size });
            }
        }
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
