//! The SSH front end: listeners, the russh configuration tuned for bulk upload,
//! per-connection handlers (public-key auth, session limits) and the dispatch of
//! channel requests: exec `scp -t` → the SCP sink, subsystem `sftp` → the SFTP
//! server; every other exec, shell or pty request is refused. No shell, ever.
//! Nothing here blocks: disk work runs in the protocol tasks and writer threads.

use crate::config::Config;
use crate::core::scp::exec::{parse_exec, ExecRequest};
use crate::ingest::context::Shared;
use crate::ingest::ssh::auth;
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, HashAlg};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{cipher, kex, mac, Channel, ChannelId, MethodKind, MethodSet, Preferred};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Algorithms: fast AEAD first, no chacha20 (OpenSSH clients would pick it and it
/// is ~8x slower in russh), no compression; NIST ECDH, DH and AES-CTR + HMAC for
/// older libraries (JSch, paramiko).
fn preferred() -> Preferred {
    Preferred {
        kex: Cow::Owned(vec![
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::MLKEM768X25519_SHA256,
            kex::ECDH_SHA2_NISTP256,
            kex::ECDH_SHA2_NISTP384,
            kex::ECDH_SHA2_NISTP521,
            kex::DH_GEX_SHA256,
            kex::DH_G16_SHA512,
            kex::DH_G14_SHA256,
            kex::DH_G14_SHA1,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
            Algorithm::Rsa { hash: None },
        ]),
        cipher: Cow::Owned(vec![
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::AES_256_CTR,
            cipher::AES_192_CTR,
            cipher::AES_128_CTR,
        ]),
        mac: Cow::Owned(vec![
            mac::HMAC_SHA256_ETM,
            mac::HMAC_SHA512_ETM,
            mac::HMAC_SHA256,
            mac::HMAC_SHA512,
            mac::HMAC_SHA1,
        ]),
        compression: Cow::Owned(vec![russh::compression::NONE]),
        ..Preferred::DEFAULT
    }
}

pub fn russh_config(cfg: &Config, keys: Vec<russh::keys::PrivateKey>) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Owned(format!(
            "SSH-2.0-ingestd_{}",
            env!("CARGO_PKG_VERSION")
        ))),
        methods,
        keys,
        auth_rejection_time: std::time::Duration::from_millis(500),
        auth_rejection_time_initial: Some(std::time::Duration::from_millis(0)),
        window_size: cfg.ssh.window_size.0 as u32,
        maximum_packet_size: cfg.ssh.max_packet_size.0 as u32,
        channel_buffer_size: 256,
        max_auth_attempts: cfg.ssh.max_auth_attempts,
        inactivity_timeout: Some(cfg.ssh.inactivity_timeout.0),
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        nodelay: true,
        preferred: preferred(),
        ..Default::default()
    }
}

/// Bind every `ssh.listen` address (so the caller learns of a busy port at once).
pub async fn bind(cfg: &Config) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in cfg.ssh.listen.to_vec() {
        let l = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("ssh.listen: cannot listen on {addr}"))?;
        tracing::info!(%addr, "listening for SSH");
        out.push(l);
    }
    Ok(out)
}

/// Accept connections until the node stops. Every connection is a tracked task:
/// when the node stops, a connection with no upload in flight is closed at once
/// ("node is stopping"); one with uploads in flight is left to finish them (the
/// caller bounds that by `ssh.drain_time`) and is closed when they are done.
pub async fn serve(
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    listeners: Vec<TcpListener>,
    shutdown: Shutdown,
) {
    let mut tasks = Vec::new();
    for l in listeners {
        let (shared, config, sd) = (shared.clone(), config.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let (sock, peer) = tokio::select! {
                    r = l.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = sd.stopped() => return,
                };
                let _ = sock.set_nodelay(true);
                let handler = Conn::new(shared.clone(), peer, sd.clone());
                let busy = handler.busy.clone();
                let config = config.clone();
                let sd2 = sd.clone();
                sd.spawn(async move {
                    match russh::server::run_stream(config, sock, handler).await {
                        Ok(session) => connection(session, busy, sd2, peer).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "connection setup failed"),
                    }
                });
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Wait for one connection to end; once the node is stopping, close it as soon
/// as it has no upload in flight.
async fn connection(
    mut session: russh::server::RunningSession<Conn>,
    busy: Arc<AtomicUsize>,
    sd: Shutdown,
    peer: SocketAddr,
) {
    let r = tokio::select! {
        r = &mut session => Some(r),
        _ = sd.stopped() => None,
    };
    let r = match r {
        Some(r) => r,
        None => loop {
            if busy.load(Ordering::SeqCst) == 0 {
                let _ = session
                    .handle()
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "ingestd: node is stopping".into(),
                        "en".into(),
                    )
                    .await;
            }
            tokio::select! {
                r = &mut session => break r,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        },
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// One SSH connection.
pub struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    user: String,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// This connection pushed the count over `ssh.max_sessions`: every request is refused.
    over_limit: bool,
    /// Protocol tasks (SCP/SFTP channels) running on this connection.
    busy: Arc<AtomicUsize>,
    shutdown: Shutdown,
    /// This connection in the `sessions` gauge.
    session_metric: crate::ops::metrics::SessionMetric,
}

impl Conn {
    fn new(shared: Arc<Shared>, peer: SocketAddr, shutdown: Shutdown) -> Conn {
        let n = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let over_limit = n > shared.max_sessions.load(Ordering::SeqCst);
        Conn {
            session_metric: shared.metrics.session_opened(),
            shared,
            peer,
            user: String::new(),
            channels: HashMap::new(),
            over_limit,
            busy: Arc::new(AtomicUsize::new(0)),
            shutdown,
        }
    }

    async fn check_key(&self, user: &str, key: &russh::keys::PublicKey) -> Auth {
        let pats = self.shared.authorized_keys();
        let (user2, key2, ip) = (user.to_string(), key.clone(), self.peer.ip());
        let ok = tokio::task::spawn_blocking(move || {
            auth::is_authorized(&pats, &user2, Some(ip), &key2)
        })
        .await
        .unwrap_or(false);
        if ok {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }

    /// Refuse a channel request: a one-line message on stderr, exit status 1, close.
    fn refuse(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        msg: &str,
    ) -> Result<(), russh::Error> {
        tracing::info!(user = %self.user, remote = %self.peer, reason = msg, "request refused");
        self.channels.remove(&channel);
        session.channel_success(channel)?;
        session.extended_data(channel, 1, bytes::Bytes::from(format!("{msg}\r\n")))?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }

    /// Run a protocol task for one channel, tracked by the node's shutdown and
    /// counted as this connection's work in flight.
    fn start(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let busy = self.busy.clone();
        busy.fetch_add(1, Ordering::SeqCst);
        self.shutdown.spawn(async move {
            task.await;
            busy.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Why a new channel request is refused outright, if it is.
    fn refusal(&self) -> Option<String> {
        if self.shutdown.is_stopping() {
            return Some(
                "ingestd: this node is stopping; try again (another node will take it)".into(),
            );
        }
        self.over_limit.then(|| self.too_many())
    }

    fn too_many(&self) -> String {
        format!(
            "ingestd: too many sessions on this node (limit {}); try again later",
            self.shared.max_sessions.load(Ordering::SeqCst)
        )
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let r = self.check_key(user, offer.public_key).await;
        if r != Auth::Accept {
            self.shared.metrics.auth_failure("publickey");
        }
        Ok(r)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let r = self.check_key(user, key.public_key).await;
        if r == Auth::Accept {
            self.user = user.to_string();
            self.session_metric.authenticated();
            tracing::info!(user, remote = %self.peer, key = %key.public_key.fingerprint(Default::default()), "authenticated");
        } else {
            self.shared.metrics.auth_failure("publickey");
            tracing::info!(user, remote = %self.peer, "public key refused");
        }
        Ok(r)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted so that the following shell/exec request gets its clear refusal
        // (OpenSSH gives up silently when an explicitly requested pty fails).
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(
            channel,
            session,
            "ingestd: no shell here: this server only accepts file uploads (scp, sftp)",
        )
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(m) = self.refusal() {
            return self.refuse(channel, session, &m);
        }
        match parse_exec(data) {
            ExecRequest::Refused(msg) => self.refuse(channel, session, &msg),
            ExecRequest::ScpSink(args) => {
                let Some(ch) = self.channels.remove(&channel) else {
                    session.channel_failure(channel)?;
                    return Ok(());
                };
                session.channel_success(channel)?;
                self.start(super::scp::run(
                    ch,
                    self.shared.clone(),
                    self.user.clone(),
                    self.peer,
                    args,
                ));
                Ok(())
            }
        }
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(m) = self.refusal() {
            return self.refuse(channel, session, &m);
        }
        if name == "sftp" {
            let Some(ch) = self.channels.remove(&channel) else {
                session.channel_failure(channel)?;
                return Ok(());
            };
            session.channel_success(channel)?;
            self.start(super::sftp::run(
                ch,
                self.shared.clone(),
                self.user.clone(),
                self.peer,
            ));
            return Ok(());
        }
        self.refuse(
            channel,
            session,
            &format!("ingestd: unknown subsystem {name:?}"),
        )
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}
