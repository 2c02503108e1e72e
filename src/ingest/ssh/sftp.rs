//! The SFTP subsystem (protocol version 3), upload-oriented. russh-sftp supplies
//! the packet codec; the request loop is ours, so an oversized packet is skipped
//! without desynchronising the stream and the session ends with `exit-status 0`,
//! EOF and CLOSE. Writes go to a [`FileWriter`] (any offset); a file is landed
//! through the shared spool path when it is closed, or, if its name matches
//! `sftp.temp_patterns`, when it is renamed to its final name.

use crate::core::vpath;
use crate::ingest::context::Shared;
use crate::ingest::vfs::Node;
use crate::ingest::writer::{FileWriter, Finish};
use crate::spool::{Incoming, DATA, STATES};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request accepted (a 255 KiB write plus headers), as OpenSSH's sftp-server.
const MAX_PACKET: usize = 256 * 1024;
const MAX_WRITE: u64 = 255 * 1024;
/// Open handles plus parked temporary uploads per session (each upload holds a
/// writer thread and a file descriptor).
const MAX_HANDLES: usize = 32;
/// Free space is re-checked whenever an upload grows by this much.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

type Reply = Result<Packet, (StatusCode, String)>;

fn err<T>(code: StatusCode, msg: impl Into<String>) -> Result<T, (StatusCode, String)> {
    Err((code, msg.into()))
}

/// An upload in progress (open handle, or closed under a temporary name).
struct Upload {
    path: String,
    writer: FileWriter,
    finish: Finish,
    next_space_check: u64,
    /// A write or size change was refused: the upload can no longer land, and
    /// CLOSE/RENAME answer with this reason (clients that ignore errors on
    /// pipelined writes still learn it).
    refused: Option<String>,
}

impl Upload {
    /// Record a refusal and pass it on.
    fn refuse<T>(&mut self, msg: String) -> Result<T, (StatusCode, String)> {
        self.refused.get_or_insert_with(|| msg.clone());
        err(StatusCode::Failure, msg)
    }
}

enum Open {
    Write(Upload),
    Read { file: std::sync::Arc<std::fs::File> },
    Dir { entries: Vec<File>, sent: bool },
}

struct Sftp {
    shared: Arc<Shared>,
    user: String,
    peer: SocketAddr,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Closed uploads with a temporary name, by virtual path: landed on rename.
    parked: HashMap<String, Upload>,
}

pub async fn run(channel: Channel<Msg>, shared: Arc<Shared>, user: String, peer: SocketAddr) {
    let (mut rx, out) = channel.split();
    let mut s = Sftp {
        shared,
        user,
        peer,
        handles: HashMap::new(),
        next_handle: 0,
        parked: HashMap::new(),
    };
    let mut buf = BytesMut::new();
    let mut skip = 0usize;
    'outer: loop {
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => {
                let mut data = &data[..];
                if skip > 0 {
                    let n = skip.min(data.len());
                    skip -= n;
                    data = &data[n..];
                }
                buf.extend_from_slice(data);
            }
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
            Some(_) => continue,
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if len > MAX_PACKET + 1024 {
                // Answer with the request id if we have it, skip the body, go on.
                if buf.len() < 9 {
                    break;
                }
                let id = u32::from_be_bytes(buf[5..9].try_into().unwrap());
                let have = buf.len() - 4;
                skip = len.saturating_sub(have);
                buf.clear();
                let st = status(id, StatusCode::Failure, "ingestd: request too large");
                if send(&out, st).await.is_err() {
                    break 'outer;
                }
                continue;
            }
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4);
            let mut body = buf.split_to(len).freeze();
            let reply = match Packet::try_from(&mut body) {
                Ok(p) => s.handle(p).await,
                Err(_) => status(0, StatusCode::BadMessage, "malformed request"),
            };
            if send(&out, reply).await.is_err() {
                break 'outer;
            }
        }
    }
    let open = s.handles.len() + s.parked.len();
    if open > 0 {
        tracing::info!(user = %s.user, remote = %s.peer, unfinished = open, "sftp session ended with unfinished uploads; discarded");
        (0..open).for_each(|_| s.shared.metrics.upload_failed("sftp", 0));
    }
    drop(s); // unfinished uploads are removed from partial/
    let _ = out.exit_status(0).await;
    let _ = out.eof().await;
    let _ = out.close().await;
}

async fn send(out: &ChannelWriteHalf<Msg>, p: Packet) -> Result<(), ()> {
    let b = Bytes::try_from(p).map_err(|_| ())?;
    out.data_bytes(b).await.map_err(|_| ())
}

fn status(id: u32, code: StatusCode, msg: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: msg.to_string(),
        language_tag: "en-US".into(),
    })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "OK")
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

impl Sftp {
    async fn handle(&mut self, p: Packet) -> Packet {
        let id = p.get_request_id();
        let r = match p {
            Packet::Init(_) => {
                let mut v = Version::new();
                for (k, val) in [
                    ("posix-rename@openssh.com", "1"),
                    ("limits@openssh.com", "1"),
                    ("fsync@openssh.com", "1"),
                ] {
                    v.extensions.insert(k.into(), val.into());
                }
                Ok(Packet::Version(v))
            }
            Packet::RealPath(r) => self.resolve(&r.path).map(|p| {
                let abs = format!("/{p}");
                Packet::Name(Name {
                    id,
                    files: vec![File {
                        filename: abs.clone(),
                        longname: abs,
                        attrs: FileAttributes::default(),
                    }],
                })
            }),
            Packet::Stat(s) => self.stat(id, &s.path),
            Packet::Lstat(s) => self.stat(id, &s.path),
            Packet::Fstat(f) => self.fstat(id, &f.handle),
            Packet::Open(o) => self.open(id, &o.filename, o.pflags, o.attrs).await,
            Packet::Write(w) => self.write(id, &w.handle, w.offset, w.data).await,
            Packet::Read(r) => self.read(id, &r.handle, r.offset, r.len).await,
            Packet::Close(c) => self.close(id, &c.handle).await,
            Packet::FSetStat(f) => self.setattr_handle(id, &f.handle, f.attrs).await,
            Packet::SetStat(s) => self.setstat(id, &s.path, s.attrs).await,
            Packet::MkDir(m) => self.resolve(&m.path).and_then(|p| {
                if p.is_empty()
                    || self.shared.vfs.lookup(&self.user, &p).is_some()
                    || self.parked.contains_key(&p)
                {
                    err(StatusCode::Failure, format!("{}: already exists", m.path))
                } else {
                    self.shared.vfs.mkdir(&self.user, &p);
                    Ok(ok(id))
                }
            }),
            Packet::RmDir(r) => self.resolve(&r.path).and_then(|p| {
                if self.shared.vfs.rmdir(&self.user, &p) {
                    Ok(ok(id))
                } else {
                    err(
                        StatusCode::Failure,
                        format!("{}: not an empty directory", r.path),
                    )
                }
            }),
            Packet::OpenDir(o) => self.opendir(id, &o.path),
            Packet::ReadDir(r) => match self.handles.get_mut(&r.handle) {
                Some(Open::Dir { entries, sent }) => {
                    if *sent {
                        err(StatusCode::Eof, "end of directory")
                    } else {
                        *sent = true;
                        Ok(Packet::Name(Name {
                            id,
                            files: std::mem::take(entries),
                        }))
                    }
                }
                _ => err(StatusCode::Failure, "invalid handle"),
            },
            Packet::Remove(r) => self.remove(id, &r.filename),
            Packet::Rename(r) => self.rename(id, &r.oldpath, &r.newpath).await,
            Packet::ReadLink(_) | Packet::Symlink(_) => err(
                StatusCode::OpUnsupported,
                "ingestd: symbolic links are not supported",
            ),
            Packet::Extended(e) => self.extended(id, &e.request, &e.data).await,
            _ => err(StatusCode::BadMessage, "unexpected packet"),
        };
        match r {
            Ok(p) => p,
            Err((code, msg)) => {
                if code != StatusCode::Eof && code != StatusCode::NoSuchFile {
                    tracing::info!(user = %self.user, remote = %self.peer, reason = %msg, "sftp request refused");
                }
                status(id, code, &msg)
            }
        }
    }

    fn resolve(&self, path: &str) -> Result<String, (StatusCode, String)> {
        vpath::resolve("", path).map_err(|e| (StatusCode::PermissionDenied, format!("{path}: {e}")))
    }

    fn is_temp(&self, path: &str) -> bool {
        let name = vpath::file_name(path);
        self.shared
            .cfg
            .sftp
            .temp_patterns
            .iter()
            .any(|p| vpath::glob_match(p, name))
    }

    fn check_handle_room(&self) -> Result<(), (StatusCode, String)> {
        if self.handles.len() + self.parked.len() >= MAX_HANDLES {
            return err(
                StatusCode::Failure,
                format!("ingestd: too many open files in this session (limit {MAX_HANDLES})"),
            );
        }
        Ok(())
    }

    fn new_handle(&mut self, o: Open) -> Result<String, (StatusCode, String)> {
        self.check_handle_room()?;
        self.next_handle += 1;
        let h = format!("h{}", self.next_handle);
        self.handles.insert(h.clone(), o);
        Ok(h)
    }

    /// An upload in progress (open or parked) under `path`.
    fn upload_at(&self, path: &str) -> Option<&Upload> {
        self.parked.get(path).or_else(|| {
            self.handles.values().find_map(|o| match o {
                Open::Write(u) if u.path == path => Some(u),
                _ => None,
            })
        })
    }

    fn stat(&self, id: u32, path: &str) -> Reply {
        let p = self.resolve(path)?;
        if let Some(u) = self.upload_at(&p) {
            return Ok(Packet::Attrs(Attrs {
                id,
                attrs: file_attrs(
                    u.writer.size(),
                    u.finish.mode.unwrap_or(0o644),
                    u.finish.mtime,
                    u.finish.atime,
                ),
            }));
        }
        match self.shared.vfs.lookup(&self.user, &p) {
            Some(Node::Dir) => Ok(Packet::Attrs(Attrs {
                id,
                attrs: dir_attrs(),
            })),
            Some(Node::File(f)) => Ok(Packet::Attrs(Attrs {
                id,
                attrs: file_attrs(f.size, f.mode, Some(f.mtime), Some(f.atime)),
            })),
            None => err(StatusCode::NoSuchFile, format!("{path}: no such file")),
        }
    }

    fn fstat(&self, id: u32, handle: &str) -> Reply {
        match self.handles.get(handle) {
            Some(Open::Write(u)) => Ok(Packet::Attrs(Attrs {
                id,
                attrs: file_attrs(
                    u.writer.size(),
                    u.finish.mode.unwrap_or(0o644),
                    u.finish.mtime,
                    u.finish.atime,
                ),
            })),
            Some(Open::Read { file }) => {
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Ok(Packet::Attrs(Attrs {
                    id,
                    attrs: file_attrs(size, 0o644, None, None),
                }))
            }
            Some(Open::Dir { .. }) => Ok(Packet::Attrs(Attrs {
                id,
                attrs: dir_attrs(),
            })),
            None => err(StatusCode::Failure, "invalid handle"),
        }
    }

    fn opendir(&mut self, id: u32, path: &str) -> Reply {
        let p = self.resolve(path)?;
        if self.shared.vfs.lookup(&self.user, &p) != Some(Node::Dir) {
            return err(StatusCode::NoSuchFile, format!("{path}: no such directory"));
        }
        let mut entries: Vec<File> =
            vec![File::new(".", dir_attrs()), File::new("..", dir_attrs())];
        for (name, node) in self.shared.vfs.list(&self.user, &p) {
            let attrs = match node {
                Node::Dir => dir_attrs(),
                Node::File(f) => file_attrs(f.size, f.mode, Some(f.mtime), Some(f.atime)),
            };
            entries.push(File::new(name, attrs));
        }
        let prefix = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let uploads: Vec<(String, u64)> = self
            .parked
            .values()
            .chain(self.handles.values().filter_map(|o| match o {
                Open::Write(u) => Some(u),
                _ => None,
            }))
            .filter(|u| u.path.starts_with(&prefix) && !u.path[prefix.len()..].contains('/'))
            .map(|u| (u.path[prefix.len()..].to_string(), u.writer.size()))
            .collect();
        for (name, size) in uploads {
            entries.push(File::new(name, file_attrs(size, 0o644, None, None)));
        }
        let h = self.new_handle(Open::Dir {
            entries,
            sent: false,
        })?;
        Ok(Packet::Handle(Handle { id, handle: h }))
    }

    async fn open(
        &mut self,
        id: u32,
        filename: &str,
        flags: OpenFlags,
        attrs: FileAttributes,
    ) -> Reply {
        let p = self.resolve(filename)?;
        if p.is_empty() || self.shared.vfs.lookup(&self.user, &p) == Some(Node::Dir) {
            return err(StatusCode::Failure, format!("{filename}: is a directory"));
        }
        if !flags.contains(OpenFlags::WRITE) {
            return self.open_read(id, filename, &p).await;
        }
        // Re-opening a parked temporary file continues it (resume), unless TRUNC asks
        // for a fresh one (the old upload is then discarded).
        if let Some(u) = self.parked.remove(&p) {
            if !flags.contains(OpenFlags::TRUNCATE) && u.refused.is_none() {
                let h = self.new_handle(Open::Write(u))?;
                return Ok(Packet::Handle(Handle { id, handle: h }));
            }
        }
        let mode = attrs.permissions.map(|m| m & 0o777).unwrap_or(0o644);
        let info = Incoming {
            user: self.user.clone(),
            path: p.clone(),
            mode,
            mtime: None,
            atime: None,
            remote_addr: self.peer.to_string(),
            protocol: "sftp",
        };
        self.check_handle_room()?;
        let want = attrs.size.unwrap_or(0);
        let writer = FileWriter::start(self.shared.spool.clone(), info, want)
            .await
            .map_err(|r| (StatusCode::Failure, format!("ingestd: {filename}: {r}")))?;
        let u = Upload {
            path: p,
            writer,
            finish: Finish::default(),
            next_space_check: SPACE_CHECK_EVERY,
            refused: None,
        };
        let h = self.new_handle(Open::Write(u))?;
        Ok(Packet::Handle(Handle { id, handle: h }))
    }

    async fn open_read(&mut self, id: u32, filename: &str, p: &str) -> Reply {
        if !self.shared.cfg.sftp.allow_download {
            return err(StatusCode::PermissionDenied, format!("ingestd: {filename}: downloads are not allowed; this server accepts uploads only"));
        }
        let Some(Node::File(f)) = self.shared.vfs.lookup(&self.user, p) else {
            return err(StatusCode::NoSuchFile, format!("{filename}: no such file"));
        };
        let root = self.shared.spool.root().to_path_buf();
        let file = tokio::task::spawn_blocking(move || {
            STATES
                .iter()
                .find_map(|s| std::fs::File::open(root.join(s).join(&f.id).join(DATA)).ok())
        })
        .await
        .ok()
        .flatten()
        .ok_or((
            StatusCode::NoSuchFile,
            format!("{filename}: no longer in the spool"),
        ))?;
        let h = self.new_handle(Open::Read {
            file: Arc::new(file),
        })?;
        Ok(Packet::Handle(Handle { id, handle: h }))
    }

    async fn read(&mut self, id: u32, handle: &str, offset: u64, len: u32) -> Reply {
        let Some(Open::Read { file }) = self.handles.get(handle) else {
            return err(
                StatusCode::PermissionDenied,
                "ingestd: downloads are not allowed; this server accepts uploads only",
            );
        };
        let file = file.clone();
        let len = len.min(MAX_WRITE as u32) as usize;
        let data = tokio::task::spawn_blocking(move || {
            let mut b = vec![0u8; len];
            std::os::unix::fs::FileExt::read_at(&*file, &mut b, offset).map(|n| {
                b.truncate(n);
                b
            })
        })
        .await
        .map_err(|e| (StatusCode::Failure, e.to_string()))?
        .map_err(|e| (StatusCode::Failure, e.to_string()))?;
        if data.is_empty() {
            return err(StatusCode::Eof, "end of file");
        }
        Ok(Packet::Data(Data { id, data }))
    }

    async fn write(&mut self, id: u32, handle: &str, offset: u64, data: Vec<u8>) -> Reply {
        let max = self.shared.spool.max_file_size();
        let spool = self.shared.spool.clone();
        let Some(Open::Write(u)) = self.handles.get_mut(handle) else {
            return err(StatusCode::Failure, "invalid handle (not open for writing)");
        };
        if let Some(r) = &u.refused {
            return err(StatusCode::Failure, r.clone());
        }
        let end = offset.saturating_add(data.len() as u64);
        check_growth(u, end, max, spool).await?;
        if let Err(e) = u.writer.write_at(offset, Bytes::from(data)).await {
            return u.refuse(format!("ingestd: write failed: {e}"));
        }
        Ok(ok(id))
    }

    async fn setattr_handle(&mut self, id: u32, handle: &str, attrs: FileAttributes) -> Reply {
        match self.handles.get_mut(handle) {
            Some(Open::Write(u)) => apply_attrs(u, attrs, &self.shared).await.map(|_| ok(id)),
            Some(_) => Ok(ok(id)),
            None => err(StatusCode::Failure, "invalid handle"),
        }
    }

    async fn setstat(&mut self, id: u32, path: &str, attrs: FileAttributes) -> Reply {
        let p = self.resolve(path)?;
        if let Some(u) = self.parked.get_mut(&p) {
            return apply_attrs(u, attrs, &self.shared).await.map(|_| ok(id));
        }
        for o in self.handles.values_mut() {
            if let Open::Write(u) = o {
                if u.path == p {
                    return apply_attrs(u, attrs, &self.shared).await.map(|_| ok(id));
                }
            }
        }
        match self.shared.vfs.lookup(&self.user, &p) {
            // Directories are virtual; a landed file's attributes are already recorded.
            Some(_) => Ok(ok(id)),
            None => err(StatusCode::NoSuchFile, format!("{path}: no such file")),
        }
    }

    async fn close(&mut self, id: u32, handle: &str) -> Reply {
        match self.handles.remove(handle) {
            Some(Open::Write(u)) => {
                if self.is_temp(&u.path) {
                    self.parked.insert(u.path.clone(), u);
                    return Ok(ok(id));
                }
                self.land(u, None).await.map(|_| ok(id))
            }
            Some(_) => Ok(ok(id)),
            None => err(StatusCode::Failure, "invalid handle"),
        }
    }

    /// The one point where an SFTP upload is done: complete, group-commit, remember.
    async fn land(
        &mut self,
        u: Upload,
        final_path: Option<String>,
    ) -> Result<(), (StatusCode, String)> {
        if let Some(r) = u.refused {
            return err(
                StatusCode::Failure,
                format!("{r}; the upload was discarded"),
            );
        }
        let mut finish = u.finish;
        finish.path = final_path;
        let staged = u.writer.complete(finish).await.map_err(|e| {
            (
                StatusCode::Failure,
                format!("ingestd: cannot store file: {e}"),
            )
        })?;
        let started = staged.started;
        let spool = self.shared.spool.clone();
        let rec = tokio::task::spawn_blocking(move || spool.commit(vec![staged]))
            .await
            .map_err(|e| (StatusCode::Failure, e.to_string()))?
            .map_err(|e| {
                (
                    StatusCode::Failure,
                    format!("ingestd: cannot store file durably: {e}"),
                )
            })?
            .remove(0);
        self.shared.landed(&rec, started);
        Ok(())
    }

    fn remove(&mut self, id: u32, filename: &str) -> Reply {
        let p = self.resolve(filename)?;
        if self.parked.remove(&p).is_some() {
            return Ok(ok(id)); // dropping the upload removes its partial file
        }
        match self.shared.vfs.lookup(&self.user, &p) {
            Some(Node::File(_)) => err(
                StatusCode::PermissionDenied,
                format!(
                    "ingestd: {filename}: already accepted for processing; it cannot be removed"
                ),
            ),
            Some(Node::Dir) => err(StatusCode::Failure, format!("{filename}: is a directory")),
            None => err(StatusCode::NoSuchFile, format!("{filename}: no such file")),
        }
    }

    async fn rename(&mut self, id: u32, from: &str, to: &str) -> Reply {
        let (pf, pt) = (self.resolve(from)?, self.resolve(to)?);
        if pt.is_empty() {
            return err(StatusCode::Failure, format!("{to}: is a directory"));
        }
        if let Some(mut u) = self.parked.remove(&pf) {
            if self.is_temp(&pt) {
                u.path = pt.clone();
                self.parked.insert(pt, u);
                return Ok(ok(id));
            }
            return self.land(u, Some(pt)).await.map(|_| ok(id));
        }
        for o in self.handles.values_mut() {
            if let Open::Write(u) = o {
                if u.path == pf {
                    u.path = pt;
                    return Ok(ok(id));
                }
            }
        }
        if self.shared.vfs.rename(&self.user, &pf, &pt) {
            return Ok(ok(id));
        }
        err(StatusCode::NoSuchFile, format!("{from}: no such file"))
    }

    async fn extended(&mut self, id: u32, request: &str, data: &[u8]) -> Reply {
        match request {
            "limits@openssh.com" => {
                let mut b = BytesMut::new();
                b.put_u64(MAX_PACKET as u64); // max packet length
                b.put_u64(MAX_WRITE); // max read length
                b.put_u64(MAX_WRITE); // max write length
                b.put_u64(MAX_HANDLES as u64); // max open handles
                Ok(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: b.to_vec(),
                }))
            }
            "posix-rename@openssh.com" => {
                let mut d = data;
                match (ssh_string(&mut d), ssh_string(&mut d)) {
                    (Some(a), Some(b)) => self.rename(id, &a, &b).await,
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
}

/// Refuse (stickily) growth of an upload to `end` bytes beyond `spool.max_file_size`,
/// and re-check free space every `SPACE_CHECK_EVERY` bytes.
async fn check_growth(
    u: &mut Upload,
    end: u64,
    max: u64,
    spool: Arc<crate::spool::Spool>,
) -> Result<(), (StatusCode, String)> {
    if end > max {
        return u.refuse(format!("ingestd: file too large: limit is {max} bytes"));
    }
    if end >= u.next_space_check {
        let grow = end.saturating_sub(u.writer.size()).max(SPACE_CHECK_EVERY);
        u.next_space_check = end + SPACE_CHECK_EVERY;
        let r = tokio::task::spawn_blocking(move || spool.admit(grow))
            .await
            .map_err(|e| (StatusCode::Failure, e.to_string()))?;
        if let Err(r) = r {
            return u.refuse(format!("ingestd: {r}"));
        }
    }
    Ok(())
}

async fn apply_attrs(
    u: &mut Upload,
    a: FileAttributes,
    shared: &Shared,
) -> Result<(), (StatusCode, String)> {
    if let Some(r) = &u.refused {
        return err(StatusCode::Failure, r.clone());
    }
    if let Some(size) = a.size {
        let (max, spool) = (shared.spool.max_file_size(), shared.spool.clone());
        check_growth(u, size, max, spool).await?;
        if let Err(e) = u.writer.set_len(size).await {
            return u.refuse(format!("ingestd: {e}"));
        }
    }
    if let Some(m) = a.permissions {
        u.finish.mode = Some(m & 0o777);
    }
    if let Some(m) = a.mtime {
        u.finish.mtime = Some(m as i64);
        u.finish.atime = a.atime.map(|t| t as i64);
    }
    Ok(())
}
