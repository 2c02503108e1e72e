//! A file being landed, written by its own (blocking-pool) thread: protocol tasks hand over
//! chunks through a bounded queue and never block the SSH connection loop on disk
//! I/O. Errors are sticky and reported on the next call and at completion.
//! Dropping a writer without completing it removes the partial file.

use crate::spool::{Incoming, Partial, Refusal, Spool, Staged};
use bytes::Bytes;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

enum Cmd {
    Write(u64, Bytes),
    SetLen(u64),
    Complete(Finish, oneshot::Sender<io::Result<Staged>>),
}

/// What the protocol learned after the file was begun (SFTP: FSETSTAT, a rename
/// from a temporary name); `None` keeps what [`FileWriter::start`] was given.
#[derive(Clone, Debug, Default)]
pub struct Finish {
    pub path: Option<String>,
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
    pub atime: Option<i64>,
}

pub struct FileWriter {
    tx: mpsc::Sender<Cmd>,
    error: Arc<Mutex<Option<String>>>,
    /// Highest end offset written so far (the file's length, as seen by the protocol).
    len: u64,
}

impl FileWriter {
    /// Admit a file of `admit` bytes (see [`Spool::admit`]), create
    /// `partial/<id>/data` and start its writer on a blocking-pool thread: one hop
    /// off the async threads for all of it.
    pub async fn start(
        spool: Arc<Spool>,
        info: Incoming,
        admit: u64,
    ) -> Result<FileWriter, Refusal> {
        let (tx, rx) = mpsc::channel(32);
        let (started_tx, started_rx) = oneshot::channel();
        let error = Arc::new(Mutex::new(None));
        let err2 = error.clone();
        tokio::task::spawn_blocking(move || {
            let partial = spool.admit(admit).and_then(|()| spool.begin(info));
            match partial {
                Ok(p) => {
                    let _ = started_tx.send(Ok(()));
                    run(p, rx, err2);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        });
        started_rx
            .await
            .map_err(|_| Refusal::Io(io::Error::other("writer thread ended")))??;
        Ok(FileWriter { tx, error, len: 0 })
    }

    fn check(&self) -> io::Result<()> {
        match &*self.error.lock().unwrap() {
            Some(e) => Err(io::Error::other(e.clone())),
            None => Ok(()),
        }
    }

    async fn send(&self, c: Cmd) -> io::Result<()> {
        self.check()?;
        self.tx
            .send(c)
            .await
            .map_err(|_| io::Error::other("writer thread ended"))
    }

    pub async fn append(&mut self, data: Bytes) -> io::Result<()> {
        let off = self.len;
        self.write_at(off, data).await
    }

    pub async fn write_at(&mut self, off: u64, data: Bytes) -> io::Result<()> {
        self.len = self.len.max(off + data.len() as u64);
        self.send(Cmd::Write(off, data)).await
    }

    pub async fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.len = len;
        self.send(Cmd::SetLen(len)).await
    }

    /// Wait for every queued write, hash, write the record: the file is staged for
    /// [`Spool::commit`].
    pub async fn complete(self, finish: Finish) -> io::Result<Staged> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Complete(finish, tx)).await?;
        rx.await
            .map_err(|_| io::Error::other("writer thread ended"))?
    }
}

fn run(mut p: Partial, mut rx: mpsc::Receiver<Cmd>, error: Arc<Mutex<Option<String>>>) {
    let mut failed = false;
    while let Some(cmd) = rx.blocking_recv() {
        let r = match cmd {
            Cmd::Write(_, _) | Cmd::SetLen(_) if failed => Ok(()),
            Cmd::Write(off, data) => p.write_at(off, &data),
            Cmd::SetLen(len) => p.set_len(len),
            Cmd::Complete(f, reply) => {
                if let Some(v) = f.path {
                    p.info.path = v;
                }
                p.info.mode = f.mode.unwrap_or(p.info.mode);
                p.info.mtime = f.mtime.or(p.info.mtime);
                p.info.atime = f.atime.or(p.info.atime);
                let r = match error.lock().unwrap().clone() {
                    Some(e) => Err(io::Error::other(e)),
                    None => p.complete(),
                };
                let _ = reply.send(r);
                return;
            }
        };
        if let Err(e) = r {
            failed = true;
            *error.lock().unwrap() = Some(e.to_string());
        }
    }
    // sender dropped without completing: `p` is dropped, removing the partial entry
}
