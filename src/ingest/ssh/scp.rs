//! The built-in legacy SCP sink (`scp -t`) over one SSH channel: a driver for
//! the pure state machine in [`crate::core::scp::sink`]. It only moves bytes
//! between the channel and the core and runs the effects the core asks for:
//! a [`FileWriter`] per file, the group commit into the spool, the `landed`
//! fan-out, log lines, and the exit status. Every decision (acks, refusals,
//! names, limits, when to commit) is the core's.

use crate::core::scp::exec::ScpArgs;
use crate::core::scp::sink::{self, Action, Event, FileStart, LogEvent, Sink, SinkConfig};
use crate::ingest::context::Shared;
use crate::ingest::limits::ConnLimits;
use crate::ingest::writer::FileWriter;
use crate::spool::{Incoming, Refusal, Staged};
use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use std::net::SocketAddr;
use std::sync::Arc;

struct Driver {
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    user: String,
    peer: SocketAddr,
    out: ChannelWriteHalf<Msg>,
    writer: Option<FileWriter>,
    staged: Vec<Staged>,
}

pub async fn run(
    channel: Channel<Msg>,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    user: String,
    peer: SocketAddr,
    args: ScpArgs,
) {
    let (mut rx, out) = channel.split();
    let existing_dir = sink::resolve_target(&args.target)
        .ok()
        .is_some_and(|p| shared.vfs.lookup(&user, &p) == Some(crate::ingest::vfs::Node::Dir));
    let cfg = SinkConfig::new(args, existing_dir, shared.spool.max_file_size());
    let mut core = Sink::new(cfg);
    let mut d = Driver {
        shared,
        limits,
        user,
        peer,
        out,
        writer: None,
        staged: Vec::new(),
    };
    let mut eof = false;
    loop {
        while let Some(a) = core.poll_action() {
            d.run(a, &mut core).await;
        }
        if core.is_done() {
            break;
        }
        if eof {
            // Cannot happen (the core ends every session at EOF); never spin.
            tracing::error!(user = ?d.user, remote = %d.peer, "scp sink still running after EOF");
            let _ = d.out.exit_status(1).await;
            break;
        }
        let ev = match rx.wait().await {
            Some(ChannelMsg::Data { data }) => Event::Data(data),
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => {
                eof = true;
                Event::Eof
            }
            Some(_) => continue,
        };
        core.handle(ev);
    }
    // Anything not committed is removed (partial entries are dropped).
    drop(d.writer.take());
    drop(std::mem::take(&mut d.staged));
}

impl Driver {
    async fn run(&mut self, a: Action, core: &mut Sink) {
        match a {
            Action::Send(b) => {
                if self.out.data_bytes(b).await.is_err() {
                    core.handle(Event::SendFailed);
                }
            }
            Action::Stderr(line) => {
                let _ = self
                    .out
                    .extended_data_bytes(1, Bytes::from(format!("{line}\n")))
                    .await;
            }
            Action::StartFile(f) => core.handle(self.start(f).await),
            Action::Write(b) => {
                if let Some(w) = self.writer.as_mut() {
                    if let Err(e) = w.append(b).await {
                        core.handle(Event::WriteFailed(e.to_string()));
                    }
                }
            }
            Action::FinishFile => {
                let ev = match self.writer.take() {
                    Some(w) => match w.complete(Default::default()).await {
                        Ok(staged) => {
                            self.staged.push(staged);
                            Event::Finished
                        }
                        Err(e) => Event::FinishFailed(e.to_string()),
                    },
                    None => Event::FinishFailed("no file open".into()),
                };
                core.handle(ev);
            }
            Action::AbortFile => drop(self.writer.take()),
            Action::Commit => {
                let ev = match self.commit().await {
                    Ok(()) => Event::Committed,
                    Err(e) => Event::CommitFailed(e.to_string()),
                };
                core.handle(ev);
            }
            Action::Log(ev) => self.log(ev),
            Action::Exit(code) => {
                let _ = self.out.exit_status(code).await;
                let _ = self.out.eof().await;
                let _ = self.out.close().await;
            }
        }
    }

    async fn start(&mut self, f: FileStart) -> Event {
        let info = Incoming {
            user: self.user.clone(),
            path: f.path,
            mode: f.mode,
            mtime: f.mtime,
            atime: f.atime,
            remote_addr: self.peer.to_string(),
            protocol: "scp",
        };
        match FileWriter::start(self.shared.spool.clone(), &self.limits, info, f.size).await {
            Ok(w) => {
                self.writer = Some(w);
                Event::Admitted
            }
            Err(Refusal::Io(e)) => Event::Refused {
                reason: e.to_string(),
                fatal: true,
            },
            Err(r) => Event::Refused {
                reason: r.to_string(),
                fatal: false,
            },
        }
    }

    /// Group commit of everything staged so far, off the async threads.
    async fn commit(&mut self) -> std::io::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        if staged.is_empty() {
            return Ok(());
        }
        let spool = self.shared.spool.clone();
        let (records, started) = tokio::task::spawn_blocking(move || {
            let started: Vec<_> = staged.iter().map(|s| s.started).collect();
            spool.commit(staged).map(|r| (r, started))
        })
        .await
        .map_err(std::io::Error::other)??;
        for (r, started) in records.iter().zip(started) {
            self.shared.landed(r, started);
        }
        Ok(())
    }

    /// Untrusted strings (names, messages from the client) are Debug-formatted.
    fn log(&self, ev: LogEvent) {
        let (user, remote) = (&self.user, &self.peer);
        let m = &self.shared.metrics;
        match &ev {
            LogEvent::Fatal { .. } | LogEvent::FileRefused { .. } => m.upload_refused("scp"),
            LogEvent::Aborted { received, .. } => m.upload_failed("scp", *received),
            LogEvent::Dropped { .. } => m.upload_failed("scp", 0),
            _ => {}
        }
        match ev {
            LogEvent::Fatal { reason } => {
                tracing::info!(user = ?user, remote = %remote, reason = ?reason, "scp upload refused")
            }
            LogEvent::FileRefused { path, reason } => {
                tracing::info!(user = ?user, remote = %remote, path = ?path, reason = ?reason, "scp file refused")
            }
            LogEvent::SourceError {
                path,
                fatal,
                message,
            } => tracing::info!(
                user = ?user, remote = %remote, path = ?path, fatal, message = ?message,
                "scp source reported an error"
            ),
            LogEvent::Aborted {
                path,
                received,
                size,
            } => tracing::info!(
                user = ?user, remote = %remote, path = ?path, received, size,
                "scp transfer aborted"
            ),
            LogEvent::Dropped { path, reason } => tracing::warn!(
                user = ?user, remote = %remote, path = ?path, reason = ?reason,
                "scp file acknowledged but not stored: the session failed before its commit"
            ),
            LogEvent::ConnectionLost => {
                tracing::info!(user = ?user, remote = %remote, "scp connection lost")
            }
        }
    }
}
