//! The built-in legacy SCP sink (`scp -t`): drives the pure framing in
//! `scp_proto` over one SSH channel, streams each file into the spool through a
//! [`FileWriter`], and group-commits the session's files before it reports
//! `exit-status 0`. Any refusal is sent as SCP's `\x01`/`\x02` + "scp: ..." line.

use crate::core::scp::exec::ScpArgs;
use crate::core::scp::frame::{parse_control, Control, LineBuf};
use crate::core::vpath;
use crate::ingest::context::Shared;
use crate::ingest::writer::FileWriter;
use crate::spool::{Incoming, Refusal, Staged};
use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::net::SocketAddr;
use std::sync::Arc;

/// Commit early once a session has staged this many files or bytes (bounds open
/// files and the work lost to a dropped connection).
const GROUP_MAX_FILES: usize = 256;
const GROUP_MAX_BYTES: u64 = 1 << 30;

/// How a session ended.
enum End {
    /// The source sent EOF after complete files.
    Clean,
    /// We sent a fatal `\x02` error (or the source reported one).
    Fatal,
    /// The connection went away mid-transfer; nothing more can be said.
    Lost,
}

/// Buffered input from the channel: control lines and file data.
struct Input {
    rx: ChannelReadHalf,
    lines: LineBuf,
    buf: Bytes,
    eof: bool,
}

impl Input {
    /// Refill `buf` if empty; false at EOF.
    async fn fill(&mut self) -> bool {
        while self.buf.is_empty() {
            if self.eof {
                return false;
            }
            match self.rx.wait().await {
                Some(ChannelMsg::Data { data }) => self.buf = data,
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => self.eof = true,
                Some(_) => {}
            }
        }
        true
    }

    /// Next control line; `Ok(None)` at EOF between messages.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, crate::core::scp::frame::ProtoError> {
        loop {
            if let Some(l) = self.lines.next_line()? {
                self.buf = Bytes::from(self.lines.take_rest());
                return Ok(Some(l));
            }
            if !self.fill().await {
                return Ok(None);
            }
            let b = std::mem::take(&mut self.buf);
            self.lines.push(&b);
        }
    }

    /// Up to `max` bytes of file data; `None` at EOF.
    async fn chunk(&mut self, max: u64) -> Option<Bytes> {
        if !self.fill().await {
            return None;
        }
        let n = (self.buf.len() as u64).min(max) as usize;
        Some(self.buf.split_to(n))
    }

    /// One status byte; `None` at EOF.
    async fn byte(&mut self) -> Option<u8> {
        self.chunk(1).await.map(|b| b[0])
    }
}

struct Sink {
    shared: Arc<Shared>,
    user: String,
    peer: SocketAddr,
    args: ScpArgs,
    out: ChannelWriteHalf<Msg>,
    /// Resolved target (virtual path, "" = root).
    target: String,
    target_is_dir: bool,
    /// Virtual paths of the directories entered with `D` lines, innermost last.
    stack: Vec<String>,
    top_level_items: usize,
    times: Option<(i64, i64)>,
    staged: Vec<Staged>,
    staged_bytes: u64,
    /// A file was refused with a warning: the exit status will be 1.
    failed: bool,
}

pub async fn run(
    channel: Channel<Msg>,
    shared: Arc<Shared>,
    user: String,
    peer: SocketAddr,
    args: ScpArgs,
) {
    let (rx, out) = channel.split();
    let mut input = Input {
        rx,
        lines: LineBuf::new(),
        buf: Bytes::new(),
        eof: false,
    };
    let mut sink = Sink {
        shared,
        user,
        peer,
        out,
        target: String::new(),
        target_is_dir: true,
        stack: Vec::new(),
        top_level_items: 0,
        times: None,
        staged: Vec::new(),
        staged_bytes: 0,
        failed: false,
        args,
    };
    let end = sink.session(&mut input).await;
    let ok = match end {
        End::Clean => match sink.commit().await {
            Ok(()) => !sink.failed,
            Err(e) => {
                sink.stderr(&format!("ingestd: could not store the files durably: {e}"))
                    .await;
                false
            }
        },
        End::Fatal | End::Lost => false,
    };
    drop(std::mem::take(&mut sink.staged)); // anything uncommitted is removed
    if !matches!(end, End::Lost) || input.eof {
        let _ = sink.out.exit_status(if ok { 0 } else { 1 }).await;
        let _ = sink.out.eof().await;
        let _ = sink.out.close().await;
    }
}

impl Sink {
    async fn send(&self, b: &[u8]) -> bool {
        self.out.data_bytes(Bytes::copy_from_slice(b)).await.is_ok()
    }

    async fn stderr(&self, msg: &str) {
        let _ = self
            .out
            .extended_data_bytes(1, Bytes::from(format!("{msg}\n")))
            .await;
    }

    async fn fatal(&self, msg: &str) -> End {
        tracing::info!(user = %self.user, remote = %self.peer, reason = msg, "scp upload refused");
        self.shared.metrics.upload_refused("scp");
        self.send(format!("\x02scp: {msg}\n").as_bytes()).await;
        End::Fatal
    }

    async fn warn(&mut self, msg: &str) {
        tracing::info!(user = %self.user, remote = %self.peer, reason = msg, "scp file refused");
        self.shared.metrics.upload_refused("scp");
        self.failed = true;
        self.send(format!("\x01scp: {msg}\n").as_bytes()).await;
    }

    /// Virtual path for an item named `name` at the current depth. The first
    /// top-level item sent to a target that is not a directory takes the target's
    /// name (`scp f host:newname`, `scp -r dir host:newname`).
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

    async fn session(&mut self, input: &mut Input) -> End {
        let t = self.args.target.clone();
        match vpath::resolve("", &t) {
            Ok(r) => {
                self.target_is_dir = r.is_empty()
                    || t.ends_with('/')
                    || t == "."
                    || t.ends_with("/.")
                    || self.args.target_should_be_dir
                    || self.shared.vfs.lookup(&self.user, &r)
                        == Some(crate::ingest::vfs::Node::Dir);
                self.target = r;
            }
            Err(e) => return self.fatal(&format!("{t}: {e}")).await,
        }
        if !self.send(b"\0").await {
            return End::Lost;
        }
        loop {
            let line = match input.line().await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    return if self.stack.is_empty() {
                        End::Clean
                    } else {
                        End::Lost
                    }
                }
                Err(e) => return self.fatal(&e.to_string()).await,
            };
            let ctl = match parse_control(&line) {
                Ok(c) => c,
                Err(e) => return self.fatal(&e.to_string()).await,
            };
            match ctl {
                Control::SourceError { fatal, message } => {
                    tracing::info!(user = %self.user, remote = %self.peer, message, "scp source reported an error");
                    self.failed = true;
                    if fatal {
                        return End::Fatal;
                    }
                }
                Control::Time { mtime, atime } => {
                    self.times = Some((mtime, atime));
                    if !self.send(b"\0").await {
                        return End::Lost;
                    }
                }
                Control::Dir { name, .. } => {
                    if !self.args.recursive {
                        return self.fatal("received a directory without -r").await;
                    }
                    let path = self.item_path(&name);
                    self.stack.push(path);
                    self.times = None;
                    if !self.send(b"\0").await {
                        return End::Lost;
                    }
                }
                Control::End => {
                    if self.stack.pop().is_none() {
                        return self.fatal("unexpected end of directory").await;
                    }
                    if !self.send(b"\0").await {
                        return End::Lost;
                    }
                }
                Control::File { mode, size, name } => {
                    let path = self.item_path(&name);
                    if let Some(end) = self.file(input, mode, size, path).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Receive one file; `Some(end)` if the session must stop.
    async fn file(&mut self, input: &mut Input, mode: u32, size: u64, path: String) -> Option<End> {
        let times = self.times.take();
        let info = Incoming {
            user: self.user.clone(),
            path: path.clone(),
            mode: mode & 0o777,
            mtime: times.map(|t| t.0),
            atime: times.map(|t| t.1),
            remote_addr: self.peer.to_string(),
            protocol: "scp",
        };
        let mut w = match FileWriter::start(self.shared.spool.clone(), info, size).await {
            Ok(w) => w,
            Err(Refusal::Io(e)) => {
                return Some(self.fatal(&format!("{path}: cannot store file: {e}")).await)
            }
            Err(r) => {
                // a warning: the source skips this file and goes on with the next
                self.warn(&format!("{path}: {r}")).await;
                return None;
            }
        };
        if !self.send(b"\0").await {
            return Some(End::Lost);
        }
        let mut left = size;
        while left > 0 {
            let Some(chunk) = input.chunk(left).await else {
                tracing::info!(user = %self.user, remote = %self.peer, path, received = size - left, size, "scp transfer aborted");
                self.shared.metrics.upload_failed("scp", size - left);
                return Some(End::Lost);
            };
            left -= chunk.len() as u64;
            if let Err(e) = w.append(chunk).await {
                return Some(self.fatal(&format!("{path}: write failed: {e}")).await);
            }
        }
        match input.byte().await {
            Some(0) | None => {}
            Some(_) => {
                // the source failed to read its own file; a message line follows
                let msg = input.line().await.ok().flatten().unwrap_or_default();
                tracing::info!(user = %self.user, path, message = %String::from_utf8_lossy(&msg), "scp source failed mid-file");
                self.failed = true;
                return None;
            }
        }
        match w.complete(Default::default()).await {
            Ok(staged) => {
                self.staged_bytes += staged.record.size;
                self.staged.push(staged);
            }
            Err(e) => return Some(self.fatal(&format!("{path}: cannot store file: {e}")).await),
        }
        if self.staged.len() >= GROUP_MAX_FILES || self.staged_bytes >= GROUP_MAX_BYTES {
            if let Err(e) = self.commit().await {
                return Some(
                    self.fatal(&format!("cannot store files durably: {e}"))
                        .await,
                );
            }
        }
        if !input.eof && !self.send(b"\0").await {
            return Some(End::Lost);
        }
        None
    }

    /// Group commit of everything staged so far, off the async threads.
    async fn commit(&mut self) -> std::io::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        if staged.is_empty() {
            return Ok(());
        }
        let spool = self.shared.spool.clone();
        let records = tokio::task::spawn_blocking(move || {
            let started: Vec<_> = staged.iter().map(|s| s.started).collect();
            spool.commit(staged).map(|r| (r, started))
        })
        .await
        .map_err(std::io::Error::other)??;
        for (r, started) in records.0.iter().zip(records.1) {
            self.shared.landed(r, started);
        }
        Ok(())
    }
}
