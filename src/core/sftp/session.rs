//! The SFTP v3 upload session, sans-IO (quinn-proto style). Every decision of a
//! session is made here: framing and oversized packets, path confinement, handles,
//! temporary names, renames, per-session limits, what `stat`/`ls`/`realpath`
//! answer. The driver (`ingest::ssh::sftp`) only moves bytes and carries out the
//! [`Effect`]s this core asks for, feeding each one's [`Outcome`] back:
//!
//! ```text
//! let mut step = session.request(body, &mut view);
//! loop {
//!     match step {
//!         Step::Reply(p) => { send(p); break }
//!         Step::Run(effect) => step = session.done(run(effect).await, &mut view),
//!     }
//! }
//! ```
//!
//! The sender's view of what they uploaded before (landed files, directories) is
//! reached through the [`View`] trait: an in-memory map in the daemon, a plain map
//! in tests. Nothing here does I/O, reads a clock or panics on any input.
//!
//! The rules kept here:
//! * A file lands at CLOSE; one whose name matches `sftp.temp_patterns` is made
//!   durable at CLOSE instead ([`Effect::Park`]) and lands at its rename to a final
//!   name, or under the name it has when the session ends: a closed file never
//!   vanishes. An upload never closed is discarded (its sender was never told).
//! * Only bytes the sender wrote land: every write is recorded in a
//!   [`Ranges`] set, and an upload with a hole (a write past the end, a size set
//!   past the written end) is refused at CLOSE with the range named. Opens with
//!   APPEND (resume, `>>`) are refused: ingestd accepts whole files only.
//! * Paths are confined to the sender's virtual root (`vpath`); a path ending in
//!   `/` is a directory; names that are not UTF-8 are refused before decoding.

use super::ranges::Ranges;
use crate::core::vpath;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use std::collections::BTreeMap;

/// Largest request accepted (a 255 KiB write plus headers), as OpenSSH's sftp-server.
pub const MAX_PACKET: usize = 256 * 1024;
/// Largest write (and read) length announced in `limits@openssh.com`.
pub const MAX_WRITE: u64 = 255 * 1024;
/// Open handles plus parked temporary uploads per session.
pub const MAX_HANDLES: usize = 32;
/// Free space is re-checked whenever an upload grows by this much.
pub const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// The node's settings a session needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Globs on the last path component: such uploads are landed at their rename.
    pub temp_patterns: Vec<String>,
    pub allow_download: bool,
    /// `spool.max_file_size`.
    pub max_file_size: u64,
}

/// A landed file in the sender's view.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewFile {
    pub id: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub atime: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ViewNode {
    Dir,
    File(ViewFile),
}

/// The sender's view of their virtual root (what they landed recently and the
/// directories they made). Paths are normalized virtual paths ("" is the root).
pub trait View {
    fn lookup(&self, path: &str) -> Option<ViewNode>;
    /// Immediate children of directory `dir`.
    fn list(&self, dir: &str) -> Vec<(String, ViewNode)>;
    /// false if something already has that name.
    fn mkdir(&mut self, path: &str) -> bool;
    /// `rmdir` of an empty directory.
    fn rmdir(&mut self, path: &str) -> bool;
    /// Rename in the view only (a landed record keeps its name).
    fn rename(&mut self, from: &str, to: &str) -> bool;
}

/// One upload of this session (the driver's writer, or parked entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub u64);

/// One download handle (only with `allow_download`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadId(pub u64);

/// What a file is landed with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    /// Normalized virtual path.
    pub path: String,
    /// Permission bits (`& 0o777`).
    pub mode: u32,
    pub mtime: Option<i64>,
    pub atime: Option<i64>,
}

/// Work for the driver. Each one is answered with [`Session::done`].
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Admit `admit` bytes (size limit, free space) and start an upload.
    Begin {
        up: UploadId,
        path: String,
        mode: u32,
        admit: u64,
    },
    /// Re-check free space for `bytes` more.
    Admit {
        bytes: u64,
    },
    Write {
        up: UploadId,
        offset: u64,
        data: Vec<u8>,
    },
    SetLen {
        up: UploadId,
        len: u64,
    },
    /// Complete the upload and land it durably in `ready/` (answered after the commit).
    Land {
        up: UploadId,
        meta: Meta,
    },
    /// Complete the upload and make it durable in `parked/` under `meta` (a closed
    /// temporary name waiting for its rename; a restart lands it under that name).
    Park {
        up: UploadId,
        meta: Meta,
    },
    /// Land a parked upload: its record durably rewritten with `meta` (the final
    /// name), then moved into `ready/`.
    LandParked {
        up: UploadId,
        meta: Meta,
    },
    /// Rewrite a parked upload's record durably with `meta` (renamed to another
    /// temporary name).
    Repark {
        up: UploadId,
        meta: Meta,
    },
    /// Drop an upload, open or parked: nothing of it remains.
    Discard {
        up: UploadId,
    },
    /// Open landed file `id` for reading.
    OpenRead {
        rd: ReadId,
        id: String,
    },
    /// Read up to `len` bytes at `offset` (an empty [`Outcome::Data`] is the end).
    Read {
        rd: ReadId,
        offset: u64,
        len: u32,
    },
    CloseRead {
        rd: ReadId,
    },
}

/// The result of an [`Effect`].
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Ok,
    /// Refused or failed, with a reason for the sender.
    Failed(String),
    Data(Vec<u8>),
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Send this packet; the request is done.
    Reply(Packet),
    /// Run this effect and call [`Session::done`] with its outcome.
    Run(Effect),
}

type Refusal = (StatusCode, String);
type Reply = Result<Step, Refusal>;

fn err<T>(code: StatusCode, msg: impl Into<String>) -> Result<T, Refusal> {
    Err((code, msg.into()))
}

/// The end of the message of an OPEN with `CREAT|EXCL` refused because the name
/// exists; such a status goes on the wire as [`FX_FILE_ALREADY_EXISTS`].
pub const ALREADY_EXISTS: &str = ": already exists (opened with CREAT|EXCL; not replaced)";

/// `SSH_FX_FILE_ALREADY_EXISTS` (filexfer drafts 05 and later). Protocol 3, which
/// russh-sftp's `StatusCode` models, has no such code; clients (paramiko, libssh2,
/// OpenSSH) treat a code they do not know as a failure and show the message.
pub const FX_FILE_ALREADY_EXISTS: u32 = 11;

/// The status code a reply carries on the wire: the protocol-3 code, except for an
/// exclusive create of an existing name ([`FX_FILE_ALREADY_EXISTS`]).
pub fn wire_status_code(s: &Status) -> u32 {
    if s.status_code == StatusCode::Failure && s.error_message.ends_with(ALREADY_EXISTS) {
        FX_FILE_ALREADY_EXISTS
    } else {
        s.status_code as u32
    }
}

/// Encode a reply packet (length, type, payload), with the status code from
/// [`wire_status_code`].
pub fn encode(p: Packet) -> Option<Bytes> {
    let code = match &p {
        Packet::Status(s) => Some(wire_status_code(s)),
        _ => None,
    };
    let b = Bytes::try_from(p).ok()?;
    match code {
        // length (4), type (1), id (4), then the code
        Some(c) if b.len() >= 13 => {
            let mut m = BytesMut::from(&b[..]);
            m[9..13].copy_from_slice(&c.to_be_bytes());
            Some(m.freeze())
        }
        _ => Some(b),
    }
}

pub fn status(id: u32, code: StatusCode, msg: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: msg.to_string(),
        language_tag: "en-US".into(),
    })
}

fn ok(id: u32) -> Step {
    Step::Reply(status(id, StatusCode::Ok, "OK"))
}

fn dir_attrs() -> FileAttributes {
    FileAttributes {
        permissions: Some(0o040755),
        size: Some(0),
        ..Default::default()
    }
}

fn file_attrs(size: u64, mode: u32, mtime: Option<i64>, atime: Option<i64>) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        permissions: Some(0o100000 | (mode & 0o777)),
        mtime: mtime.map(|t| t as u32),
        atime: atime.or(mtime).map(|t| t as u32),
        ..Default::default()
    }
}

fn view_attrs(n: &ViewNode) -> FileAttributes {
    match n {
        ViewNode::Dir => dir_attrs(),
        ViewNode::File(f) => file_attrs(f.size, f.mode, Some(f.mtime), Some(f.atime)),
    }
}

/// Read an SSH string from extended-request data.
fn ssh_string(b: &mut &[u8]) -> Option<String> {
    if b.len() < 4 {
        return None;
    }
    let n = u32::from_be_bytes(b[..4].try_into().ok()?) as usize;
    if b.len() < 4 + n {
        return None;
    }
    let s = String::from_utf8(b[4..4 + n].to_vec()).ok()?;
    *b = &b[4 + n..];
    Some(s)
}

/// The request id and a refusal if a path string in request `body` (type byte
/// first) is not valid UTF-8.
pub fn non_utf8_name(body: &[u8]) -> Option<(u32, String)> {
    let (&typ, rest) = body.split_first()?;
    let id = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let mut rest = rest.get(4..)?;
    let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = b.get(4..4usize.checked_add(n)?)?.to_vec();
        *b = &b[4 + n..];
        Some(s)
    };
    // how many leading strings are paths
    let paths = match typ {
        // OPEN, LSTAT, SETSTAT, OPENDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, READLINK
        3 | 7 | 9 | 11 | 13 | 14 | 15 | 16 | 17 | 19 => 1,
        // RENAME, SYMLINK
        18 | 20 => 2,
        // EXTENDED: the request name, then (posix-rename, hardlink) two paths
        200 => {
            let name = take(&mut rest)?;
            match &name[..] {
                b"posix-rename@openssh.com" | b"hardlink@openssh.com" => 2,
                b"statvfs@openssh.com" | b"lsetstat@openssh.com" | b"expand-path@openssh.com" => 1,
                _ => 0,
            }
        }
        _ => 0,
    };
    for _ in 0..paths {
        let s = take(&mut rest)?;
        if let Err(e) = std::str::from_utf8(&s) {
            let shown = String::from_utf8_lossy(&s).escape_debug().to_string();
            return Some((
                id,
                format!(
                    "ingestd: file name \"{shown}\" is not valid UTF-8 (invalid byte at \
                     offset {}); only UTF-8 names are accepted",
                    e.valid_up_to()
                ),
            ));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// framing

/// One frame cut from the channel's byte stream.
#[derive(Debug)]
pub enum Frame {
    /// A request body (type byte first), to [`Session::request`].
    Request(Bytes),
    /// A request over [`MAX_PACKET`]: its body is skipped; answer with this status.
    TooLarge(Packet),
}

/// Cuts the channel's byte stream into SFTP packets. A packet over the limit is
/// answered (with its request id) and its body skipped, so the stream stays in step.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
    skip: usize,
}

impl Decoder {
    pub fn push(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held for a packet not yet complete (at most one packet's worth).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.skip > 0 || self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().ok()?) as usize;
        if len > MAX_PACKET + 1024 {
            if self.buf.len() < 9 {
                return None;
            }
            let id = u32::from_be_bytes(self.buf[5..9].try_into().ok()?);
            let have = self.buf.len() - 4;
            if have >= len {
                self.buf.advance(4 + len);
            } else {
                self.skip = len - have;
                self.buf.clear();
            }
            return Some(Frame::TooLarge(status(
                id,
                StatusCode::Failure,
                "ingestd: request too large",
            )));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        self.buf.advance(4);
        Some(Frame::Request(self.buf.split_to(len).freeze()))
    }
}

// ---------------------------------------------------------------------------
// the session

#[derive(Debug)]
struct Upload {
    path: String,
    /// Mode given at OPEN.
    open_mode: u32,
    /// Set by (F)SETSTAT.
    mode: Option<u32>,
    mtime: Option<i64>,
    atime: Option<i64>,
    /// Highest end offset written, or the length set.
    size: u64,
    next_space_check: u64,
    /// A write or size change was refused: the upload can no longer land, and
    /// CLOSE/RENAME answer with this reason (clients that ignore errors on
    /// pipelined writes still learn it).
    refused: Option<String>,
    /// Closed under a temporary name, durable in `parked/`, waiting for its rename.
    parked: bool,
    /// What the sender wrote (an upload with a hole never lands).
    written: Ranges,
}

impl Upload {
    fn meta(&self) -> Meta {
        Meta {
            path: self.path.clone(),
            mode: self.mode.unwrap_or(self.open_mode) & 0o777,
            mtime: self.mtime,
            atime: self.atime,
        }
    }

    fn attrs(&self) -> FileAttributes {
        file_attrs(
            self.size,
            self.mode.unwrap_or(0o644),
            self.mtime,
            self.atime,
        )
    }

    /// Record a refusal (sticky) and pass it on.
    fn refuse<T>(&mut self, msg: String) -> Result<T, Refusal> {
        self.refused.get_or_insert_with(|| msg.clone());
        err(StatusCode::Failure, msg)
    }
}

#[derive(Debug)]
enum Open {
    Write(UploadId),
    Read { rd: ReadId, size: u64 },
    Dir { entries: Vec<File>, sent: bool },
}

/// What to do with the outcome of the effect in flight.
#[derive(Debug)]
enum Cont {
    /// OPEN for writing: Begin ran.
    Open {
        id: u32,
        up: UploadId,
        filename: String,
    },
    /// WRITE: Admit ran (data still to write) or Write ran (`data` is None).
    Write {
        id: u32,
        up: UploadId,
        offset: u64,
        data: Option<Vec<u8>>,
    },
    /// (F)SETSTAT: Admit ran (`admitted` false) or SetLen ran.
    Attrs {
        id: u32,
        up: UploadId,
        attrs: FileAttributes,
        admitted: bool,
    },
    /// CLOSE or RENAME: Land ran.
    Land {
        id: u32,
        up: UploadId,
    },
    /// CLOSE of a temporary name: Park ran.
    Park {
        id: u32,
        up: UploadId,
    },
    /// RENAME of a parked upload to a final name: LandParked ran.
    LandParked {
        id: u32,
        up: UploadId,
    },
    /// RENAME of a parked upload to another temporary name: Repark ran.
    Repark {
        id: u32,
        up: UploadId,
        path: String,
    },
    OpenRead {
        id: u32,
        rd: ReadId,
        size: u64,
        filename: String,
    },
    Read {
        id: u32,
    },
}

pub struct Session {
    settings: Settings,
    uploads: BTreeMap<UploadId, Upload>,
    handles: BTreeMap<String, Open>,
    next_id: u64,
    pending: Option<Cont>,
    /// Effects whose outcome needs no answer (discards, closing a download), run
    /// by the driver before the step it is given (see [`Session::side_effects`]).
    side: Vec<Effect>,
}

impl Session {
    pub fn new(settings: Settings) -> Session {
        Session {
            settings,
            uploads: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_id: 0,
            pending: None,
            side: Vec::new(),
        }
    }

    /// Effects to run (in order, before the step just returned) whose outcome
    /// needs no answer: discarding an upload, closing a download.
    pub fn side_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.side)
    }

    /// Open handles plus parked uploads.
    pub fn open_count(&self) -> usize {
        self.handles.len() + self.uploads.values().filter(|u| u.parked).count()
    }

    /// Uploads not yet landed or discarded (open or parked).
    pub fn unfinished(&self) -> usize {
        self.uploads.len()
    }

    /// One request body (type byte first), as cut by [`Decoder`].
    pub fn request(&mut self, mut body: Bytes, view: &mut dyn View) -> Step {
        // russh-sftp decodes names lossily (U+FFFD): refuse them before that.
        if let Some((id, msg)) = non_utf8_name(&body) {
            return Step::Reply(status(id, StatusCode::Failure, &msg));
        }
        // A request that cannot be decoded is still answered under its id (every
        // request but INIT carries one right after the type), so the client is
        // told instead of waiting forever.
        let id = match &body[..] {
            [t, a, b, c, d, ..] if *t != 1 => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => 0,
        };
        match Packet::try_from(&mut body) {
            Ok(p) => self.handle(p, view),
            Err(_) => Step::Reply(status(id, StatusCode::BadMessage, "malformed request")),
        }
    }

    /// One decoded request.
    pub fn handle(&mut self, p: Packet, view: &mut dyn View) -> Step {
        debug_assert!(self.pending.is_none(), "a request while an effect runs");
        self.pending = None;
        let id = p.get_request_id();
        let r = self.dispatch(id, p, view);
        self.answer(id, r)
    }

    /// The outcome of the effect the last [`Step::Run`] asked for.
    pub fn done(&mut self, outcome: Outcome, _view: &mut dyn View) -> Step {
        let Some(cont) = self.pending.take() else {
            return Step::Reply(status(0, StatusCode::Failure, "ingestd: internal error"));
        };
        let id = cont_id(&cont);
        let r = self.resume(cont, outcome);
        self.answer(id, r)
    }

    /// The session ended (EOF, close, disconnect): what becomes of every upload
    /// still open or parked. Run each effect; their outcomes need no answer.
    pub fn end(&mut self) -> Vec<Effect> {
        self.pending = None;
        let mut out = std::mem::take(&mut self.side);
        for o in std::mem::take(&mut self.handles).into_values() {
            if let Open::Read { rd, .. } = o {
                out.push(Effect::CloseRead { rd });
            }
        }
        for (up, u) in std::mem::take(&mut self.uploads) {
            if u.parked {
                // closed but never renamed: it lands under the name it has now
                out.push(Effect::LandParked { up, meta: u.meta() });
            } else {
                // never closed: the sender was never told it arrived
                out.push(Effect::Discard { up });
            }
        }
        out
    }

    fn answer(&mut self, id: u32, r: Reply) -> Step {
        match r {
            Ok(s) => s,
            Err((code, msg)) => {
                self.pending = None;
                Step::Reply(status(id, code, &msg))
            }
        }
    }

    fn run(&mut self, cont: Cont, e: Effect) -> Reply {
        self.pending = Some(cont);
        Ok(Step::Run(e))
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn resolve(&self, path: &str) -> Result<String, Refusal> {
        vpath::resolve("", path).map_err(|e| (StatusCode::PermissionDenied, format!("{path}: {e}")))
    }

    fn is_temp(&self, path: &str) -> bool {
        let name = vpath::file_name(path);
        self.settings
            .temp_patterns
            .iter()
            .any(|p| vpath::glob_match(p, name))
    }

    fn check_handle_room(&self) -> Result<(), Refusal> {
        if self.open_count() >= MAX_HANDLES {
            return err(
                StatusCode::Failure,
                format!("ingestd: too many open files in this session (limit {MAX_HANDLES})"),
            );
        }
        Ok(())
    }

    fn new_handle(&mut self, o: Open) -> Result<String, Refusal> {
        self.check_handle_room()?;
        let h = format!("h{}", self.new_id());
        self.handles.insert(h.clone(), o);
        Ok(h)
    }

    /// An upload (open or parked) under `path`; open ones first.
    fn upload_at(&self, path: &str) -> Option<UploadId> {
        let open = self
            .uploads
            .iter()
            .find(|(_, u)| !u.parked && u.path == path);
        let parked = || {
            self.uploads
                .iter()
                .find(|(_, u)| u.parked && u.path == path)
        };
        open.or_else(parked).map(|(k, _)| *k)
    }

    fn parked_at(&self, path: &str) -> Option<UploadId> {
        self.uploads
            .iter()
            .find(|(_, u)| u.parked && u.path == path)
            .map(|(k, _)| *k)
    }

    fn write_handle(&self, handle: &str) -> Option<UploadId> {
        match self.handles.get(handle) {
            Some(Open::Write(up)) => Some(*up),
            _ => None,
        }
    }

    fn dispatch(&mut self, id: u32, p: Packet, view: &mut dyn View) -> Reply {
        match p {
            Packet::Init(_) => {
                let mut v = Version::new();
                for (k, val) in [
                    ("posix-rename@openssh.com", "1"),
                    ("limits@openssh.com", "1"),
                    ("fsync@openssh.com", "1"),
                ] {
                    v.extensions.insert(k.into(), val.into());
                }
                Ok(Step::Reply(Packet::Version(v)))
            }
            Packet::RealPath(r) => self.resolve(&r.path).map(|p| {
                let abs = format!("/{p}");
                Step::Reply(Packet::Name(Name {
                    id,
                    files: vec![File {
                        filename: abs.clone(),
                        longname: abs,
                        attrs: FileAttributes::default(),
                    }],
                }))
            }),
            Packet::Stat(s) => self.stat(id, &s.path, view),
            Packet::Lstat(s) => self.stat(id, &s.path, view),
            Packet::Fstat(f) => self.fstat(id, &f.handle),
            Packet::Open(o) => self.open(id, &o.filename, o.pflags, o.attrs, view),
            Packet::Write(w) => self.write(id, &w.handle, w.offset, w.data),
            Packet::Read(r) => self.read(id, &r.handle, r.offset, r.len),
            Packet::Close(c) => self.close(id, &c.handle),
            Packet::FSetStat(f) => match self.handles.get(&f.handle) {
                Some(Open::Write(up)) => {
                    let up = *up;
                    self.set_attrs(id, up, f.attrs)
                }
                Some(_) => Ok(ok(id)),
                None => err(StatusCode::Failure, "invalid handle"),
            },
            Packet::SetStat(s) => self.setstat(id, &s.path, s.attrs, view),
            Packet::MkDir(m) => {
                let p = self.resolve(&m.path)?;
                if p.is_empty() || view.lookup(&p).is_some() || self.parked_at(&p).is_some() {
                    err(StatusCode::Failure, format!("{}: already exists", m.path))
                } else if view.mkdir(&p) {
                    Ok(ok(id))
                } else {
                    err(
                        StatusCode::Failure,
                        format!(
                            "{}: not created: too many directories remembered for this user; \
                             upload files into it directly (no mkdir is needed)",
                            m.path
                        ),
                    )
                }
            }
            Packet::RmDir(r) => {
                let p = self.resolve(&r.path)?;
                if view.rmdir(&p) {
                    Ok(ok(id))
                } else {
                    err(
                        StatusCode::Failure,
                        format!("{}: not an empty directory", r.path),
                    )
                }
            }
            Packet::OpenDir(o) => self.opendir(id, &o.path, view),
            Packet::ReadDir(r) => match self.handles.get_mut(&r.handle) {
                Some(Open::Dir { entries, sent }) => {
                    if *sent {
                        err(StatusCode::Eof, "end of directory")
                    } else {
                        *sent = true;
                        Ok(Step::Reply(Packet::Name(Name {
                            id,
                            files: std::mem::take(entries),
                        })))
                    }
                }
                _ => err(StatusCode::Failure, "invalid handle"),
            },
            Packet::Remove(r) => self.remove(id, &r.filename, view),
            Packet::Rename(r) => self.rename(id, &r.oldpath, &r.newpath, view),
            Packet::ReadLink(_) | Packet::Symlink(_) => err(
                StatusCode::OpUnsupported,
                "ingestd: symbolic links are not supported",
            ),
            Packet::Extended(e) => self.extended(id, &e.request, &e.data, view),
            _ => err(StatusCode::BadMessage, "unexpected packet"),
        }
    }

    fn stat(&self, id: u32, path: &str, view: &dyn View) -> Reply {
        let p = self.resolve(path)?;
        if let Some(up) = self.upload_at(&p) {
            if path.ends_with('/') {
                return err(StatusCode::NoSuchFile, format!("{path}: not a directory"));
            }
            let attrs = self.uploads[&up].attrs();
            return Ok(Step::Reply(Packet::Attrs(Attrs { id, attrs })));
        }
        match view.lookup(&p) {
            Some(ViewNode::File(_)) if path.ends_with('/') => {
                err(StatusCode::NoSuchFile, format!("{path}: not a directory"))
            }
            Some(n) => Ok(Step::Reply(Packet::Attrs(Attrs {
                id,
                attrs: view_attrs(&n),
            }))),
            // A trailing '/' names a directory, and directories are virtual: it
            // exists. (OpenSSH scp in SFTP mode STATs "some/dir/" and, only if that
            // is a directory, uploads "some/dir/<name>"; otherwise it would send
            // the file to "some/dir/" and its own name would be lost.)
            None if path.ends_with('/') => Ok(Step::Reply(Packet::Attrs(Attrs {
                id,
                attrs: dir_attrs(),
            }))),
            None => err(StatusCode::NoSuchFile, format!("{path}: no such file")),
        }
    }

    fn fstat(&self, id: u32, handle: &str) -> Reply {
        let attrs = match self.handles.get(handle) {
            Some(Open::Write(up)) => self.uploads[up].attrs(),
            Some(Open::Read { size, .. }) => file_attrs(*size, 0o644, None, None),
            Some(Open::Dir { .. }) => dir_attrs(),
            None => return err(StatusCode::Failure, "invalid handle"),
        };
        Ok(Step::Reply(Packet::Attrs(Attrs { id, attrs })))
    }

    fn opendir(&mut self, id: u32, path: &str, view: &dyn View) -> Reply {
        let p = self.resolve(path)?;
        if view.lookup(&p) != Some(ViewNode::Dir) {
            return err(StatusCode::NoSuchFile, format!("{path}: no such directory"));
        }
        let mut entries: Vec<File> =
            vec![File::new(".", dir_attrs()), File::new("..", dir_attrs())];
        for (name, node) in view.list(&p) {
            entries.push(File::new(name, view_attrs(&node)));
        }
        let prefix = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        for u in self.uploads.values() {
            if let Some(name) = u.path.strip_prefix(&prefix) {
                if !name.contains('/') && !name.is_empty() {
                    entries.push(File::new(name, file_attrs(u.size, 0o644, None, None)));
                }
            }
        }
        let handle = self.new_handle(Open::Dir {
            entries,
            sent: false,
        })?;
        Ok(Step::Reply(Packet::Handle(Handle { id, handle })))
    }

    fn open(
        &mut self,
        id: u32,
        filename: &str,
        flags: OpenFlags,
        attrs: FileAttributes,
        view: &mut dyn View,
    ) -> Reply {
        let p = self.resolve(filename)?;
        if p.is_empty() || view.lookup(&p) == Some(ViewNode::Dir) {
            return err(StatusCode::Failure, format!("{filename}: is a directory"));
        }
        // CREAT|EXCL: exclusive against every name in the sender's view (landed,
        // parked, or still being uploaded), so a client that uses EXCL to avoid
        // sending twice never makes a second copy.
        if flags.contains(OpenFlags::CREATE | OpenFlags::EXCLUDE)
            && (matches!(view.lookup(&p), Some(ViewNode::File(_))) || self.upload_at(&p).is_some())
        {
            return err(StatusCode::Failure, format!("{filename}{ALREADY_EXISTS}"));
        }
        // CREAT without WRITE (paramiko's mode "x") still asks for a new file.
        if !flags.intersects(OpenFlags::WRITE | OpenFlags::CREATE) {
            return self.open_read(id, filename, &p, view);
        }
        if filename.ends_with('/') {
            return err(
                StatusCode::Failure,
                format!("{filename}: names a directory (ends with '/'), not a file"),
            );
        }
        if flags.contains(OpenFlags::APPEND) {
            return err(
                StatusCode::OpUnsupported,
                format!(
                    "ingestd: {filename}: appending to or resuming an upload is not supported; \
                     upload the whole file again"
                ),
            );
        }
        // A parked (closed, durable) temporary upload under this name: TRUNC replaces
        // it; anything else would write into a file that is already closed.
        if let Some(up) = self.parked_at(&p) {
            if !flags.contains(OpenFlags::TRUNCATE) {
                return err(
                    StatusCode::Failure,
                    format!(
                        "ingestd: {filename}: already uploaded and closed; it cannot be \
                         continued (open it with truncation to replace it, or rename it)"
                    ),
                );
            }
            self.discard(up);
        }
        self.check_handle_room()?;
        let up = UploadId(self.new_id());
        let mode = attrs.permissions.map(|m| m & 0o777).unwrap_or(0o644);
        self.uploads.insert(
            up,
            Upload {
                path: p.clone(),
                open_mode: mode,
                mode: None,
                mtime: None,
                atime: None,
                size: 0,
                next_space_check: SPACE_CHECK_EVERY,
                refused: None,
                parked: false,
                written: Ranges::new(),
            },
        );
        let admit = attrs.size.unwrap_or(0);
        self.run(
            Cont::Open {
                id,
                up,
                filename: filename.to_string(),
            },
            Effect::Begin {
                up,
                path: p,
                mode,
                admit,
            },
        )
    }

    fn open_read(&mut self, id: u32, filename: &str, p: &str, view: &dyn View) -> Reply {
        if !self.settings.allow_download {
            return err(
                StatusCode::PermissionDenied,
                format!("ingestd: {filename}: downloads are not allowed; this server accepts uploads only"),
            );
        }
        let Some(ViewNode::File(f)) = view.lookup(p) else {
            return err(StatusCode::NoSuchFile, format!("{filename}: no such file"));
        };
        self.check_handle_room()?;
        let rd = ReadId(self.new_id());
        self.run(
            Cont::OpenRead {
                id,
                rd,
                size: f.size,
                filename: filename.to_string(),
            },
            Effect::OpenRead { rd, id: f.id },
        )
    }

    fn read(&mut self, id: u32, handle: &str, offset: u64, len: u32) -> Reply {
        let Some(Open::Read { rd, .. }) = self.handles.get(handle) else {
            return err(
                StatusCode::PermissionDenied,
                "ingestd: downloads are not allowed; this server accepts uploads only",
            );
        };
        let rd = *rd;
        let len = len.min(MAX_WRITE as u32);
        self.run(Cont::Read { id }, Effect::Read { rd, offset, len })
    }

    /// Drop an upload now (its removal runs before the answer).
    fn discard(&mut self, up: UploadId) {
        self.uploads.remove(&up);
        self.side.push(Effect::Discard { up });
    }

    /// Refuse (stickily) growth of an upload to `end` bytes beyond the size limit;
    /// `Some(bytes)` when free space must be re-checked first.
    fn growth(&mut self, up: UploadId, end: u64) -> Result<Option<u64>, Refusal> {
        let max = self.settings.max_file_size;
        let Some(u) = self.uploads.get_mut(&up) else {
            return err(StatusCode::Failure, "invalid handle");
        };
        if let Some(r) = &u.refused {
            return err(StatusCode::Failure, r.clone());
        }
        if end > max {
            return u.refuse(format!("ingestd: file too large: limit is {max} bytes"));
        }
        if end >= u.next_space_check {
            let grow = end.saturating_sub(u.size).max(SPACE_CHECK_EVERY);
            u.next_space_check = end.saturating_add(SPACE_CHECK_EVERY);
            return Ok(Some(grow));
        }
        Ok(None)
    }

    fn write(&mut self, id: u32, handle: &str, offset: u64, data: Vec<u8>) -> Reply {
        let Some(up) = self.write_handle(handle) else {
            return err(StatusCode::Failure, "invalid handle (not open for writing)");
        };
        let end = offset.saturating_add(data.len() as u64);
        match self.growth(up, end)? {
            Some(bytes) => self.run(
                Cont::Write {
                    id,
                    up,
                    offset,
                    data: Some(data),
                },
                Effect::Admit { bytes },
            ),
            None => self.do_write(id, up, offset, data),
        }
    }

    fn do_write(&mut self, id: u32, up: UploadId, offset: u64, data: Vec<u8>) -> Reply {
        let Some(u) = self.uploads.get_mut(&up) else {
            return err(StatusCode::Failure, "invalid handle");
        };
        let end = offset.saturating_add(data.len() as u64);
        if u.written.insert(offset, end).is_err() {
            return u.refuse(format!(
                "ingestd: {}: too many separate pieces written out of order",
                u.path
            ));
        }
        u.size = u.size.max(end);
        self.run(
            Cont::Write {
                id,
                up,
                offset,
                data: None,
            },
            Effect::Write { up, offset, data },
        )
    }

    fn set_attrs(&mut self, id: u32, up: UploadId, attrs: FileAttributes) -> Reply {
        if let Some(r) = self.uploads.get(&up).and_then(|u| u.refused.clone()) {
            return err(StatusCode::Failure, r);
        }
        if let Some(u) = self.uploads.get(&up).filter(|u| u.parked) {
            // closed: mode and times are kept for its landing; its size is final
            if attrs.size.is_some_and(|n| n != u.size) {
                return err(
                    StatusCode::Failure,
                    format!(
                        "ingestd: {}: already closed; its size cannot change",
                        u.path
                    ),
                );
            }
            return self.finish_attrs(id, up, attrs);
        }
        if let Some(size) = attrs.size {
            if let Some(bytes) = self.growth(up, size)? {
                return self.run(
                    Cont::Attrs {
                        id,
                        up,
                        attrs,
                        admitted: false,
                    },
                    Effect::Admit { bytes },
                );
            }
            return self.set_len(id, up, attrs);
        }
        self.finish_attrs(id, up, attrs)
    }

    fn set_len(&mut self, id: u32, up: UploadId, attrs: FileAttributes) -> Reply {
        let Some(len) = attrs.size else {
            return self.finish_attrs(id, up, attrs);
        };
        let Some(u) = self.uploads.get_mut(&up) else {
            return err(StatusCode::Failure, "invalid handle");
        };
        u.size = len;
        u.written.truncate(len);
        self.run(
            Cont::Attrs {
                id,
                up,
                attrs,
                admitted: true,
            },
            Effect::SetLen { up, len },
        )
    }

    fn finish_attrs(&mut self, id: u32, up: UploadId, a: FileAttributes) -> Reply {
        let Some(u) = self.uploads.get_mut(&up) else {
            return err(StatusCode::Failure, "invalid handle");
        };
        if let Some(m) = a.permissions {
            u.mode = Some(m & 0o777);
        }
        if let Some(m) = a.mtime {
            u.mtime = Some(m as i64);
            u.atime = a.atime.map(|t| t as i64);
        }
        Ok(ok(id))
    }

    fn setstat(&mut self, id: u32, path: &str, attrs: FileAttributes, view: &dyn View) -> Reply {
        let p = self.resolve(path)?;
        if let Some(up) = self.parked_at(&p).or_else(|| self.upload_at(&p)) {
            return self.set_attrs(id, up, attrs);
        }
        match view.lookup(&p) {
            // Directories are virtual; a landed file's attributes are already recorded.
            Some(_) => Ok(ok(id)),
            None => err(StatusCode::NoSuchFile, format!("{path}: no such file")),
        }
    }

    fn close(&mut self, id: u32, handle: &str) -> Reply {
        match self.handles.remove(handle) {
            Some(Open::Write(up)) => {
                let Some(u) = self.uploads.get_mut(&up) else {
                    return err(StatusCode::Failure, "invalid handle");
                };
                let temp = self
                    .settings
                    .temp_patterns
                    .iter()
                    .any(|p| vpath::glob_match(p, vpath::file_name(&u.path)));
                if temp {
                    if let Some(e) = self.incomplete(up) {
                        return Err(e);
                    }
                    let meta = self.uploads[&up].meta();
                    return self.run(Cont::Park { id, up }, Effect::Park { up, meta });
                }
                self.land(id, up, None)
            }
            Some(Open::Read { rd, .. }) => {
                self.side.push(Effect::CloseRead { rd });
                Ok(ok(id))
            }
            Some(Open::Dir { .. }) => Ok(ok(id)),
            None => err(StatusCode::Failure, "invalid handle"),
        }
    }

    /// An upload that cannot land (a refused write, or bytes never written) is
    /// discarded, with the reason for the sender.
    fn incomplete(&mut self, up: UploadId) -> Option<Refusal> {
        let u = self.uploads.get(&up)?;
        let why = if let Some(r) = u.refused.clone() {
            format!("{r}; the upload was discarded")
        } else if let Some((a, b)) = u.written.first_hole(u.size) {
            format!(
                "ingestd: {}: bytes {a}..{b} of {} were never written (only whole files \
                 are accepted: no appending, resuming or sparse writes); nothing was stored",
                u.path, u.size
            )
        } else {
            return None;
        };
        self.discard(up);
        Some((StatusCode::Failure, why))
    }

    /// The one point where an upload is done: complete, commit, then answer.
    fn land(&mut self, id: u32, up: UploadId, final_path: Option<String>) -> Reply {
        if let Some(e) = self.incomplete(up) {
            return Err(e);
        }
        let Some(u) = self.uploads.get(&up) else {
            return err(StatusCode::Failure, "invalid handle");
        };
        let mut meta = u.meta();
        if let Some(p) = final_path {
            meta.path = p;
        }
        self.run(Cont::Land { id, up }, Effect::Land { up, meta })
    }

    fn remove(&mut self, id: u32, filename: &str, view: &dyn View) -> Reply {
        let p = self.resolve(filename)?;
        if let Some(up) = self.parked_at(&p) {
            self.discard(up);
            return Ok(ok(id));
        }
        match view.lookup(&p) {
            Some(ViewNode::File(_)) => err(
                StatusCode::PermissionDenied,
                format!(
                    "ingestd: {filename}: already accepted for processing; it cannot be removed"
                ),
            ),
            Some(ViewNode::Dir) => err(StatusCode::Failure, format!("{filename}: is a directory")),
            None => err(StatusCode::NoSuchFile, format!("{filename}: no such file")),
        }
    }

    fn rename(&mut self, id: u32, from: &str, to: &str, view: &mut dyn View) -> Reply {
        let (pf, pt) = (self.resolve(from)?, self.resolve(to)?);
        if pt.is_empty() {
            return err(StatusCode::Failure, format!("{to}: is a directory"));
        }
        if let Some(up) = self.parked_at(&pf) {
            if self.upload_at(&pt).is_some_and(|o| o != up) {
                return err(
                    StatusCode::Failure,
                    format!("ingestd: {to}: another upload has that name"),
                );
            }
            let mut meta = self.uploads[&up].meta();
            meta.path = pt.clone();
            if self.is_temp(&pt) {
                return self.run(
                    Cont::Repark { id, up, path: pt },
                    Effect::Repark { up, meta },
                );
            }
            return self.run(Cont::LandParked { id, up }, Effect::LandParked { up, meta });
        }
        if let Some(u) = self
            .uploads
            .values_mut()
            .find(|u| !u.parked && u.path == pf)
        {
            u.path = pt;
            return Ok(ok(id));
        }
        if view.rename(&pf, &pt) {
            return Ok(ok(id));
        }
        err(StatusCode::NoSuchFile, format!("{from}: no such file"))
    }

    fn extended(&mut self, id: u32, request: &str, data: &[u8], view: &mut dyn View) -> Reply {
        match request {
            "limits@openssh.com" => {
                let mut b = BytesMut::new();
                b.put_u64(MAX_PACKET as u64); // max packet length
                b.put_u64(MAX_WRITE); // max read length
                b.put_u64(MAX_WRITE); // max write length
                b.put_u64(MAX_HANDLES as u64); // max open handles
                Ok(Step::Reply(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: b.to_vec(),
                })))
            }
            "posix-rename@openssh.com" => {
                let mut d = data;
                match (ssh_string(&mut d), ssh_string(&mut d)) {
                    (Some(a), Some(b)) => self.rename(id, &a, &b, view),
                    _ => err(StatusCode::BadMessage, "malformed posix-rename"),
                }
            }
            // Every file is fsynced before CLOSE is answered anyway.
            "fsync@openssh.com" => Ok(ok(id)),
            _ => err(
                StatusCode::OpUnsupported,
                format!("{request}: not supported"),
            ),
        }
    }

    /// Continue the request whose effect just ran.
    fn resume(&mut self, cont: Cont, outcome: Outcome) -> Reply {
        let failed = match &outcome {
            Outcome::Failed(r) => Some(r.clone()),
            _ => None,
        };
        match cont {
            Cont::Open { id, up, filename } => match failed {
                None => {
                    let handle = self.new_handle(Open::Write(up));
                    if handle.is_err() {
                        self.discard(up);
                    }
                    Ok(Step::Reply(Packet::Handle(Handle {
                        id,
                        handle: handle?,
                    })))
                }
                Some(r) => {
                    // Begin failed: the driver holds nothing for this upload.
                    self.uploads.remove(&up);
                    err(StatusCode::Failure, format!("ingestd: {filename}: {r}"))
                }
            },
            Cont::Write {
                id,
                up,
                offset,
                data,
            } => match (failed, data) {
                (None, Some(data)) => self.do_write(id, up, offset, data),
                (None, None) => Ok(ok(id)),
                (Some(r), Some(_)) => self.refuse(up, format!("ingestd: {r}")),
                (Some(r), None) => self.refuse(up, format!("ingestd: write failed: {r}")),
            },
            Cont::Attrs {
                id,
                up,
                attrs,
                admitted,
            } => match (failed, admitted) {
                (None, false) => self.set_len(id, up, attrs),
                (None, true) => self.finish_attrs(id, up, attrs),
                (Some(r), _) => self.refuse(up, format!("ingestd: {r}")),
            },
            Cont::Land { id, up } => {
                // Landed or failed, the upload is gone (a failed landing removed it).
                self.uploads.remove(&up);
                match failed {
                    None => Ok(ok(id)),
                    Some(r) => err(StatusCode::Failure, r),
                }
            }
            Cont::Park { id, up } => match failed {
                None => {
                    if let Some(u) = self.uploads.get_mut(&up) {
                        u.parked = true;
                    }
                    Ok(ok(id))
                }
                Some(r) => {
                    // the driver dropped it
                    self.uploads.remove(&up);
                    err(StatusCode::Failure, r)
                }
            },
            Cont::LandParked { id, up } => match failed {
                None => {
                    self.uploads.remove(&up);
                    Ok(ok(id))
                }
                // still parked (and landed at the end of the session, or at restart)
                Some(r) => err(StatusCode::Failure, r),
            },
            Cont::Repark { id, up, path } => match failed {
                None => {
                    if let Some(u) = self.uploads.get_mut(&up) {
                        u.path = path;
                    }
                    Ok(ok(id))
                }
                Some(r) => err(StatusCode::Failure, r),
            },
            Cont::OpenRead {
                id,
                rd,
                size,
                filename,
            } => match failed {
                None => match self.new_handle(Open::Read { rd, size }) {
                    Ok(handle) => Ok(Step::Reply(Packet::Handle(Handle { id, handle }))),
                    Err(e) => {
                        self.side.push(Effect::CloseRead { rd });
                        Err(e)
                    }
                },
                Some(_) => err(
                    StatusCode::NoSuchFile,
                    format!("{filename}: no longer in the spool"),
                ),
            },
            Cont::Read { id } => match outcome {
                Outcome::Data(d) if d.is_empty() => err(StatusCode::Eof, "end of file"),
                Outcome::Data(data) => Ok(Step::Reply(Packet::Data(Data { id, data }))),
                Outcome::Ok => err(StatusCode::Eof, "end of file"),
                Outcome::Failed(r) => err(StatusCode::Failure, r),
            },
        }
    }

    fn refuse<T>(&mut self, up: UploadId, msg: String) -> Result<T, Refusal> {
        match self.uploads.get_mut(&up) {
            Some(u) => u.refuse(msg),
            None => err(StatusCode::Failure, msg),
        }
    }
}

fn cont_id(c: &Cont) -> u32 {
    match c {
        Cont::Open { id, .. }
        | Cont::Write { id, .. }
        | Cont::Attrs { id, .. }
        | Cont::Land { id, .. }
        | Cont::Park { id, .. }
        | Cont::LandParked { id, .. }
        | Cont::Repark { id, .. }
        | Cont::OpenRead { id, .. }
        | Cont::Read { id } => *id,
    }
}

#[cfg(test)]
mod tests;
