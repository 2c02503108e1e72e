//! The SFTP subsystem (protocol version 3) driver. Every decision is made by the
//! sans-IO session in [`crate::core::sftp::session`]; this file only moves bytes
//! between the channel and the core and carries out the effects it asks for
//! (writers, landing, downloads), then ends the session with `exit-status 0`, EOF
//! and CLOSE.

use crate::core::sftp::session::{
    Decoder, Effect, Frame, Meta, Outcome, ReadId, Session, Settings, Step, UploadId, View,
    ViewFile, ViewNode,
};
use crate::ingest::context::Shared;
use crate::ingest::limits::ConnLimits;
use crate::ingest::vfs::{Node, Vfs};
use crate::ingest::writer::{FileWriter, Finish};
use crate::spool::{Incoming, Staged, DATA, STATES};
use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use russh_sftp::protocol::{Packet, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The sender's view, as the core sees it.
struct UserView<'a> {
    vfs: &'a Vfs,
    user: &'a str,
}

fn node(n: Node) -> ViewNode {
    match n {
        Node::Dir => ViewNode::Dir,
        Node::File(f) => ViewNode::File(ViewFile {
            id: f.id,
            size: f.size,
            mode: f.mode,
            mtime: f.mtime,
            atime: f.atime,
        }),
    }
}

impl View for UserView<'_> {
    fn lookup(&self, path: &str) -> Option<ViewNode> {
        self.vfs.lookup(self.user, path).map(node)
    }
    fn list(&self, dir: &str) -> Vec<(String, ViewNode)> {
        self.vfs
            .list(self.user, dir)
            .into_iter()
            .map(|(k, n)| (k, node(n)))
            .collect()
    }
    fn mkdir(&mut self, path: &str) -> bool {
        self.vfs.mkdir(self.user, path)
    }
    fn rmdir(&mut self, path: &str) -> bool {
        self.vfs.rmdir(self.user, path)
    }
    fn rename(&mut self, from: &str, to: &str) -> bool {
        self.vfs.rename(self.user, from, to)
    }
}

/// What the driver holds for the core: one writer per upload, one file per download.
struct Io {
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    user: String,
    peer: SocketAddr,
    writers: HashMap<UploadId, FileWriter>,
    /// Parked uploads: spool id, and when the upload started.
    parked: HashMap<UploadId, (String, Instant)>,
    reads: HashMap<ReadId, Arc<std::fs::File>>,
}

pub async fn run(
    channel: Channel<Msg>,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    user: String,
    peer: SocketAddr,
) {
    let (mut rx, out) = channel.split();
    let cfg = &shared.cfg.sftp;
    let mut core = Session::new(Settings {
        temp_patterns: cfg.temp_patterns.clone(),
        allow_download: cfg.allow_download,
        max_file_size: shared.spool.max_file_size(),
    });
    let mut io = Io {
        shared: shared.clone(),
        limits,
        user: user.clone(),
        peer,
        writers: HashMap::new(),
        parked: HashMap::new(),
        reads: HashMap::new(),
    };
    let mut dec = Decoder::default();
    'outer: loop {
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => dec.push(&data),
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
            Some(_) => continue,
        }
        while let Some(frame) = dec.next_frame() {
            let reply = match frame {
                Frame::TooLarge(p) => p,
                Frame::Request(body) => {
                    let mut view = UserView {
                        vfs: &shared.vfs,
                        user: &user,
                    };
                    let mut step = core.request(body, &mut view);
                    loop {
                        for e in core.side_effects() {
                            io.run(e).await;
                        }
                        match step {
                            Step::Reply(p) => break p,
                            Step::Run(e) => {
                                let o = io.run(e).await;
                                step = core.done(o, &mut view);
                            }
                        }
                    }
                }
            };
            if let Packet::Status(s) = &reply {
                if !matches!(
                    s.status_code,
                    StatusCode::Ok | StatusCode::Eof | StatusCode::NoSuchFile
                ) {
                    tracing::info!(user = ?user, remote = %peer, reason = ?s.error_message, "sftp request refused");
                }
            }
            if send(&out, reply).await.is_err() {
                break 'outer;
            }
        }
    }
    // Closed uploads still under a temporary name land under that name; uploads
    // never closed are discarded (their sender was never told they arrived).
    let (mut landed, mut discarded, mut failed) = (0usize, 0usize, 0usize);
    for e in core.end() {
        let what = match &e {
            Effect::LandParked { .. } => Some(true),
            Effect::Discard { .. } => Some(false),
            _ => None,
        };
        match (what, io.run(e).await) {
            (Some(true), Outcome::Ok) => landed += 1,
            (Some(true), Outcome::Failed(r)) => {
                failed += 1;
                tracing::warn!(user = ?user, remote = %peer, reason = ?r, "cannot land a parked upload at session end; it lands at the next start");
            }
            (Some(false), _) => {
                discarded += 1;
                shared.metrics.upload_failed("sftp", 0);
            }
            _ => {}
        }
    }
    if landed + discarded + failed > 0 {
        tracing::info!(user = ?user, remote = %peer, landed_parked = landed, discarded_unclosed = discarded, "sftp session ended with unfinished uploads");
    }
    drop(io); // anything left is removed from partial/
    let _ = out.exit_status(0).await;
    let _ = out.eof().await;
    let _ = out.close().await;
}

async fn send(out: &ChannelWriteHalf<Msg>, p: Packet) -> Result<(), ()> {
    let b = crate::core::sftp::session::encode(p).ok_or(())?;
    out.data_bytes(b).await.map_err(|_| ())
}

fn finish(meta: Meta) -> Finish {
    Finish {
        path: Some(meta.path),
        mode: Some(meta.mode),
        mtime: meta.mtime,
        atime: meta.atime,
    }
}

/// A parked record takes the name, mode and times the sender gave since.
fn update(r: &mut crate::core::record::Record, meta: Meta) {
    r.path = meta.path;
    r.mode = meta.mode;
    if meta.mtime.is_some() {
        r.mtime = meta.mtime;
        r.atime = meta.atime;
    }
}

fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(e.to_string())
}

impl Io {
    /// Finish an upload's writer: the file is complete and staged (not yet durable).
    async fn complete(&mut self, up: UploadId, meta: Meta) -> Result<Staged, Outcome> {
        let Some(w) = self.writers.remove(&up) else {
            return Err(failed("ingestd: no such upload"));
        };
        w.complete(finish(meta))
            .await
            .map_err(|e| failed(format!("ingestd: cannot store file: {e}")))
    }

    async fn run(&mut self, e: Effect) -> Outcome {
        match e {
            Effect::Begin {
                up,
                path,
                mode,
                admit,
            } => {
                let info = Incoming {
                    user: self.user.clone(),
                    path,
                    mode,
                    mtime: None,
                    atime: None,
                    remote_addr: self.peer.to_string(),
                    protocol: "sftp",
                };
                match FileWriter::start(self.shared.spool.clone(), &self.limits, info, admit).await
                {
                    Ok(w) => {
                        self.writers.insert(up, w);
                        Outcome::Ok
                    }
                    Err(r) => failed(r),
                }
            }
            Effect::Admit { bytes } => {
                let spool = self.shared.spool.clone();
                match tokio::task::spawn_blocking(move || spool.admit(bytes)).await {
                    Ok(Ok(())) => Outcome::Ok,
                    Ok(Err(r)) => failed(r),
                    Err(e) => failed(e),
                }
            }
            Effect::Write { up, offset, data } => match self.writers.get_mut(&up) {
                Some(w) => match w.write_at(offset, Bytes::from(data)).await {
                    Ok(()) => Outcome::Ok,
                    Err(e) => failed(e),
                },
                None => failed("no such upload"),
            },
            Effect::SetLen { up, len } => match self.writers.get_mut(&up) {
                Some(w) => match w.set_len(len).await {
                    Ok(()) => Outcome::Ok,
                    Err(e) => failed(e),
                },
                None => failed("no such upload"),
            },
            Effect::Land { up, meta } => {
                let staged = match self.complete(up, meta).await {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                let started = staged.started;
                let spool = self.shared.spool.clone();
                match spool.commit_one(staged).await {
                    Ok(rec) => {
                        self.shared.landed(&rec, started);
                        Outcome::Ok
                    }
                    Err(e) => failed(format!("ingestd: cannot store file durably: {e}")),
                }
            }
            Effect::Park { up, meta } => {
                let staged = match self.complete(up, meta).await {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                let started = staged.started;
                let spool = self.shared.spool.clone();
                match tokio::task::spawn_blocking(move || spool.park(staged)).await {
                    Ok(Ok(rec)) => {
                        tracing::info!(id = %rec.id, user = ?rec.user, path = ?rec.path, size = rec.size, "parked (temporary name, waiting for its rename)");
                        self.parked.insert(up, (rec.id, started));
                        Outcome::Ok
                    }
                    Ok(Err(e)) => failed(format!("ingestd: cannot store file durably: {e}")),
                    Err(e) => failed(e),
                }
            }
            Effect::LandParked { up, meta } | Effect::Repark { up, meta }
                if !self.parked.contains_key(&up) =>
            {
                failed(format!("ingestd: {}: no such upload", meta.path))
            }
            Effect::LandParked { up, meta } => {
                let (id, started) = self.parked[&up].clone();
                let spool = self.shared.spool.clone();
                let r = tokio::task::spawn_blocking(move || {
                    spool.land_parked(&id, |r| update(r, meta))
                })
                .await;
                match r {
                    Ok(Ok(rec)) => {
                        self.parked.remove(&up);
                        self.shared.landed(&rec, started);
                        Outcome::Ok
                    }
                    Ok(Err(e)) => failed(format!("ingestd: cannot land the file: {e}")),
                    Err(e) => failed(e),
                }
            }
            Effect::Repark { up, meta } => {
                let id = self.parked[&up].0.clone();
                let spool = self.shared.spool.clone();
                match tokio::task::spawn_blocking(move || spool.repark(&id, |r| update(r, meta)))
                    .await
                {
                    Ok(Ok(_)) => Outcome::Ok,
                    Ok(Err(e)) => failed(format!("ingestd: cannot rename the file: {e}")),
                    Err(e) => failed(e),
                }
            }
            Effect::Discard { up } => {
                // dropping a writer removes its partial file
                if self.writers.remove(&up).is_none() {
                    if let Some((id, _)) = self.parked.remove(&up) {
                        let spool = self.shared.spool.clone();
                        let r =
                            tokio::task::spawn_blocking(move || spool.discard_parked(&id)).await;
                        if let Ok(Err(e)) = r {
                            tracing::warn!(error = %e, "cannot remove a parked upload");
                        }
                    }
                }
                Outcome::Ok
            }
            Effect::OpenRead { rd, id } => {
                let root = self.shared.spool.root().to_path_buf();
                let file = tokio::task::spawn_blocking(move || {
                    STATES
                        .iter()
                        .find_map(|s| std::fs::File::open(root.join(s).join(&id).join(DATA)).ok())
                })
                .await
                .ok()
                .flatten();
                match file {
                    Some(f) => {
                        self.reads.insert(rd, Arc::new(f));
                        Outcome::Ok
                    }
                    None => failed("no longer in the spool"),
                }
            }
            Effect::Read { rd, offset, len } => {
                let Some(file) = self.reads.get(&rd).cloned() else {
                    return failed("invalid handle");
                };
                let len = len as usize;
                let r = tokio::task::spawn_blocking(move || {
                    let mut b = vec![0u8; len];
                    std::os::unix::fs::FileExt::read_at(&*file, &mut b, offset).map(|n| {
                        b.truncate(n);
                        b
                    })
                })
                .await;
                match r {
                    Ok(Ok(d)) => Outcome::Data(d),
                    Ok(Err(e)) => failed(e),
                    Err(e) => failed(e),
                }
            }
            Effect::CloseRead { rd } => {
                self.reads.remove(&rd);
                Outcome::Ok
            }
        }
    }
}
