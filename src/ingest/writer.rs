//! A file being landed. Protocol tasks hand chunks to the file's writer task
//! through a bounded queue and never block the SSH connection loop on disk I/O;
//! the writer task takes a blocking-pool thread only while it writes a batch, so
//! an unfinished upload holds an open file and no thread. Every upload holds a
//! [`FileTicket`] and every queued chunk a byte reservation (see
//! [`crate::ingest::limits`]). Errors are sticky and reported on the next call and
//! at completion. Dropping a writer without completing it removes the partial file.

use crate::ingest::limits::{ConnLimits, FileTicket, Reserved};
use crate::spool::{Incoming, Partial, Refusal, Spool, Staged};
use bytes::Bytes;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

enum Cmd {
    Write(u64, Bytes, Reserved),
    SetLen(u64),
    Complete(Finish, oneshot::Sender<io::Result<Staged>>),
}

/// Commands written in one blocking-pool hop at most.
const BATCH: usize = 64;

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
    conn: Arc<ConnLimits>,
    /// Highest end offset written so far (the file's length, as seen by the protocol).
    len: u64,
}

impl FileWriter {
    /// Admit a file of `admit` bytes (see [`Spool::admit`]) within the
    /// connection's and node's open-file bounds, create `partial/<id>/data` and
    /// start its writer task.
    pub async fn start(
        spool: Arc<Spool>,
        conn: &Arc<ConnLimits>,
        info: Incoming,
        admit: u64,
    ) -> Result<FileWriter, Refusal> {
        let ticket = conn.open_file().map_err(|b| Refusal::Busy(b.to_string()))?;
        let partial = tokio::task::spawn_blocking(move || {
            spool.admit(admit).and_then(|()| spool.begin(info))
        })
        .await
        .map_err(|e| Refusal::Io(io::Error::other(e)))??;
        let (tx, rx) = mpsc::channel(BATCH);
        let error = Arc::new(Mutex::new(None));
        tokio::spawn(run(partial, rx, error.clone(), ticket));
        Ok(FileWriter {
            tx,
            error,
            conn: conn.clone(),
            len: 0,
        })
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
            .map_err(|_| io::Error::other("writer ended"))
    }

    pub async fn append(&mut self, data: Bytes) -> io::Result<()> {
        let off = self.len;
        self.write_at(off, data).await
    }

    /// Queue a write; waits while this connection (or the node) has too many
    /// bytes queued.
    pub async fn write_at(&mut self, off: u64, data: Bytes) -> io::Result<()> {
        self.check()?;
        let reserved = self.conn.reserve(data.len()).await;
        self.len = self.len.max(off + data.len() as u64);
        self.send(Cmd::Write(off, data, reserved)).await
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
        rx.await.map_err(|_| io::Error::other("writer ended"))?
    }
}

/// The writer task: batches what is queued and writes it on the blocking pool.
async fn run(
    p: Partial,
    mut rx: mpsc::Receiver<Cmd>,
    error: Arc<Mutex<Option<String>>>,
    ticket: FileTicket,
) {
    let mut p = Some(p);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH && !matches!(batch.last(), Some(Cmd::Complete(..))) {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let Some(part) = p.take() else { break };
        let err = error.clone();
        match tokio::task::spawn_blocking(move || write_batch(part, batch, &err)).await {
            Ok(Some(part)) => p = Some(part),
            Ok(None) => break, // completed
            Err(e) => {
                *error.lock().unwrap() = Some(format!("writer failed: {e}"));
                break;
            }
        }
    }
    drop(ticket);
    // Sender gone without completing: remove the partial entry, off the async threads.
    if let Some(part) = p {
        let _ = tokio::task::spawn_blocking(move || drop(part)).await;
    }
}

/// Carry out a batch; `None` once the file is completed (or given up).
fn write_batch(mut p: Partial, batch: Vec<Cmd>, error: &Mutex<Option<String>>) -> Option<Partial> {
    for cmd in batch {
        let failed = error.lock().unwrap().is_some();
        let r = match cmd {
            Cmd::Write(..) | Cmd::SetLen(_) if failed => Ok(()),
            Cmd::Write(off, data, _reserved) => p.write_at(off, &data),
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
                return None;
            }
        };
        if let Err(e) = r {
            *error.lock().unwrap() = Some(e.to_string());
        }
    }
    Some(p)
}
