//! The SSH front end: listeners, the russh configuration tuned for bulk upload,
//! per-connection handlers (public-key auth, session limits) and the dispatch of
//! channel requests: exec `scp -t` → the SCP sink, subsystem `sftp` → the SFTP
//! server; every other exec, shell or pty request is refused. No shell, ever.
//! Nothing here blocks: disk work runs in the protocol tasks and writer threads.
//! Every failed authentication is logged (`ingestd::auth`, the lines
//! `config/fail2ban/` matches) and counted by the defender: a refused key, a
//! password or keyboard-interactive attempt (never offered), and a peer that
//! asked to authenticate and left with nothing counted yet (`[preauth]`).

use crate::config::Config;
use crate::core::scp::exec::{parse_exec, ExecRequest};
use crate::ingest::context::Shared;
use crate::ingest::ssh::auth;
use crate::ingest::ssh::gate::{Gate, Refused, Ticket};
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use russh::keys::ssh_key::Algorithm;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{cipher, kex, mac, Channel, ChannelId, MethodKind, MethodSet, Preferred};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Algorithms: `[ssh] ciphers`, `kex`, `macs`, `host_key_algorithms` (OpenSSH
/// names, validated by the config) or the built-in lists: chacha20-poly1305 and
/// AES-GCM first (OpenSSH clients pick chacha20, as with sshd), no compression;
/// NIST ECDH, DH and AES-CTR + HMAC for older libraries (JSch, paramiko).
fn preferred(cfg: &Config) -> Preferred {
    let [ciphers, kexes, macs, keys] = cfg.ssh.algorithms();
    // Names were checked by `Config::validate`; one russh lacks is skipped.
    let mut kex: Vec<kex::Name> = kexes
        .iter()
        .filter_map(|n| kex::Name::try_from(*n).ok())
        .collect();
    kex.extend([
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ]);
    Preferred {
        kex: Cow::Owned(kex),
        key: Cow::Owned(keys.iter().filter_map(|n| Algorithm::new(n).ok()).collect()),
        cipher: Cow::Owned(
            ciphers
                .iter()
                .filter_map(|n| cipher::Name::try_from(*n).ok())
                .collect(),
        ),
        mac: Cow::Owned(
            macs.iter()
                .filter_map(|n| mac::Name::try_from(*n).ok())
                .collect(),
        ),
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
        preferred: preferred(cfg),
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

/// Accept connections until the node stops. Every connection is admitted by
/// the [`Gate`] (bans, `max_startups`) and runs as a tracked task: when the node
/// stops, a connection with no upload in flight is closed at once ("node is
/// stopping"); one with uploads in flight is left to finish them (the caller
/// bounds that by `ssh.drain_time`) and is closed when they are done.
pub async fn serve(
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    listeners: Vec<TcpListener>,
    shutdown: Shutdown,
) {
    let gate = Gate::new(shared.cfg.clone(), shared.connections.clone());
    let keys = auth::KeyCache::new(shared.cfg.ssh.authorized_keys_cache.0);
    let mut tasks = Vec::new();
    for l in listeners {
        let (shared, config, sd, gate, keys) = (
            shared.clone(),
            config.clone(),
            shutdown.clone(),
            gate.clone(),
            keys.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let (sock, peer) = tokio::select! {
                    r = l.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = sd.stopped() => return,
                };
                let ticket = match gate.admit(peer.ip()) {
                    Ok(t) => t,
                    Err(Refused::Banned { remaining_s }) => {
                        tracing::debug!(target: "ingestd::auth", remote_ip = %peer.ip(), remaining_s, "connection from a banned address closed");
                        continue;
                    }
                };
                let evicted = ticket.evicted();
                let _ = sock.set_nodelay(true);
                let handler = Conn::new(shared.clone(), peer, sd.clone(), ticket, gate.clone(), keys.clone());
                let watch = handler.watch.clone();
                let config = config.clone();
                let (sd2, cfg) = (sd.clone(), shared.cfg.clone());
                sd.spawn(async move {
                    // The client's version line is awaited inside run_stream:
                    // bound it by the grace time and eviction too.
                    let grace = tokio::time::Instant::now() + cfg.ssh.login_grace_time.0;
                    let kill = tokio_util::sync::CancellationToken::new();
                    let sock = Killable::new(sock, &kill);
                    let started = tokio::select! {
                        r = tokio::time::timeout_at(grace, russh::server::run_stream(config, sock, handler)) => r,
                        _ = evicted.cancelled() => return,
                    };
                    match started {
                        Ok(Ok(session)) => {
                            let ends = Ends { grace, evicted, kill };
                            connection(session, watch, sd2, peer, cfg, ends).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection setup failed"),
                        Err(_) => grace_expired(peer),
                    }
                });
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The TCP stream under one connection, which the node can cut: once `kill`
/// is cancelled every read and write fails, so russh's session loop ends even
/// when the peer never completes key exchange (a polite SSH disconnect cannot
/// be sent then).
struct Killable {
    inner: tokio::net::TcpStream,
    kill: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Killable {
    fn new(inner: tokio::net::TcpStream, kill: &tokio_util::sync::CancellationToken) -> Killable {
        Killable {
            inner,
            kill: Box::pin(kill.clone().cancelled_owned()),
        }
    }

    fn killed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        std::future::Future::poll(self.kill.as_mut(), cx).is_ready()
    }
}

fn cut() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed by ingestd")
}

impl tokio::io::AsyncRead for Killable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.killed(cx) {
            return std::task::Poll::Ready(Err(cut()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Killable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.killed(cx) {
            return std::task::Poll::Ready(Err(cut()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A short fixed label for a refusal reason (a metrics label: never client text).
fn auth_reason_class(reason: &str) -> &'static str {
    if reason.contains("SHA-1") {
        "sha1_rsa"
    } else if reason.contains("from=") {
        "from_mismatch"
    } else if reason.contains("no authorized_keys file") {
        "no_keys_file"
    } else if reason.contains("cannot read") {
        "keys_unreadable"
    } else if reason.contains("not support") {
        "unsupported_option"
    } else {
        "unknown_key"
    }
}

/// What ends an unauthenticated or misbehaving connection.
struct Ends {
    /// Unauthenticated by then: closed.
    grace: tokio::time::Instant,
    /// Cancelled to make room under `ssh.max_startups` (if still unauthenticated).
    evicted: tokio_util::sync::CancellationToken,
    /// Cuts the socket.
    kill: tokio_util::sync::CancellationToken,
}

/// What the connection task watches of its handler.
#[derive(Clone, Default)]
struct Watch {
    /// Protocol tasks (SCP/SFTP channels) running on this connection.
    busy: Arc<AtomicUsize>,
    authenticated: Arc<AtomicBool>,
    /// Channel data bytes received so far.
    received: Arc<AtomicU64>,
    /// The node closed this connection (grace time, eviction, stopping, too
    /// slow): its end is not the peer giving up on authentication.
    closed_by_us: Arc<AtomicBool>,
}

/// Wait for one connection to end, enforcing what russh does not: the login
/// grace time, the minimum upload rate, and the node's shutdown (close as soon
/// as no upload is in flight).
fn grace_expired(peer: SocketAddr) {
    tracing::info!(
        target: "ingestd::auth",
        "connection closed: not authenticated within ssh.login_grace_time remote_ip={} remote_port={}",
        peer.ip(),
        peer.port()
    );
}

async fn connection(
    mut session: russh::server::RunningSession<Conn>,
    w: Watch,
    sd: Shutdown,
    peer: SocketAddr,
    cfg: Arc<Config>,
    ends: Ends,
) {
    let Ends {
        grace,
        evicted,
        kill,
    } = ends;
    let handle = session.handle();
    // A polite SSH disconnect with the reason; the socket is cut a second later
    // in case the peer is not at a point where it can be sent or heard.
    let kill2 = kill.clone();
    let closed_by_us = w.closed_by_us.clone();
    let bye = |msg: String| {
        let (handle, kill) = (handle.clone(), kill2.clone());
        closed_by_us.store(true, Ordering::SeqCst);
        async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                handle.disconnect(russh::Disconnect::ByApplication, msg, "en".into()),
            )
            .await;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                kill.cancel();
            });
        }
    };
    let grace = tokio::time::sleep_until(grace);
    tokio::pin!(grace);
    let mut grace_done = false;
    let window = cfg.ssh.inactivity_timeout.0;
    let min_bytes = (cfg.ssh.min_rate.0 as f64 * window.as_secs_f64()) as u64;
    let mut tick = tokio::time::interval(window.max(Duration::from_millis(100)));
    tick.tick().await;
    let mut last = (0u64, 0usize); // (bytes received, busy) at the last tick
    let mut stopping = false;
    let mut stop_sent = false;
    let r = loop {
        tokio::select! {
            r = &mut session => break r,
            _ = &mut grace, if !grace_done => {
                grace_done = true;
                if !w.authenticated.load(Ordering::SeqCst) {
                    grace_expired(peer);
                    bye(format!("ingestd: not authenticated within {}", humantime::format_duration(cfg.ssh.login_grace_time.0))).await;
                }
            }
            _ = evicted.cancelled(), if !grace_done => {
                grace_done = true;
                if !w.authenticated.load(Ordering::SeqCst) {
                    bye("ingestd: too many unauthenticated connections; try again".into()).await;
                }
            }
            _ = tick.tick(), if min_bytes > 0 => {
                let now = (w.received.load(Ordering::Relaxed), w.busy.load(Ordering::SeqCst));
                // An upload was running for the whole window and received too little.
                if now.1 > 0 && last.1 > 0 && now.0.saturating_sub(last.0) < min_bytes {
                    let msg = format!(
                        "ingestd: upload too slow: {} bytes in {}, below ssh.min_rate {}/s",
                        now.0 - last.0,
                        humantime::format_duration(window),
                        cfg.ssh.min_rate.0
                    );
                    tracing::info!(remote = %peer, reason = %msg, "connection closed");
                    bye(msg).await;
                }
                last = now;
            }
            _ = sd.stopped(), if !stopping => stopping = true,
            _ = tokio::time::sleep(Duration::from_millis(100)), if stopping => {}
        }
        if stopping && !stop_sent && w.busy.load(Ordering::SeqCst) == 0 {
            stop_sent = true;
            bye("ingestd: node is stopping".into()).await;
        }
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
    /// Session channels open now (bounded by `ssh.max_channels`).
    open: std::collections::HashSet<ChannelId>,
    /// Set at login when this connection is over a session limit: every request
    /// is refused with this message.
    over_limit: Option<String>,
    ticket: Ticket,
    gate: Arc<Gate>,
    watch: Watch,
    shutdown: Shutdown,
    /// This connection in the `sessions` gauge.
    session_metric: crate::ops::metrics::SessionMetric,
    /// This connection's share of open uploads and buffered bytes.
    limits: Arc<crate::ingest::limits::ConnLimits>,
    /// What the peer tried before authenticating (for the line logged when it
    /// gives up): see [`AuthTrace`].
    trace: AuthTrace,
    /// The login grace time ends (the grace line is logged by the connection task).
    grace: std::time::Instant,
    /// Cancelled when this connection is evicted under `ssh.max_startups`.
    evicted: tokio_util::sync::CancellationToken,
    /// The parsed authorized_keys files (shared by every connection).
    keys: Arc<auth::KeyCache>,
}

/// The authentication methods a peer tried on one connection, and how many of
/// its failures were already counted (logged as `authentication failed`).
#[derive(Default)]
struct AuthTrace {
    /// The last login name asked for (`None`: no authentication request yet).
    user: Option<String>,
    /// Methods tried, in order, each once ("none", "publickey", ...).
    methods: Vec<&'static str>,
    /// Failures already logged and counted by the defender.
    counted: u32,
}

impl AuthTrace {
    fn tried(&mut self, user: &str, method: &'static str) {
        if self.user.as_deref() != Some(user) {
            self.user = Some(user.to_string());
        }
        if !self.methods.contains(&method) {
            self.methods.push(method);
        }
    }
}

impl Conn {
    fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        shutdown: Shutdown,
        ticket: Ticket,
        gate: Arc<Gate>,
        keys: Arc<auth::KeyCache>,
    ) -> Conn {
        let shared_grace = shared.cfg.ssh.login_grace_time.0;
        let evicted = ticket.evicted();
        Conn {
            session_metric: shared.metrics.session_opened(),
            limits: shared.limits.connection(),
            shared,
            peer,
            user: String::new(),
            channels: HashMap::new(),
            open: Default::default(),
            over_limit: None,
            ticket,
            gate,
            watch: Watch::default(),
            shutdown,
            trace: AuthTrace::default(),
            grace: std::time::Instant::now() + shared_grace,
            evicted,
            keys,
        }
    }

    /// Log one failed authentication in the stable format fail2ban reads (see
    /// `config/fail2ban/`), count it, and close the connection if the address
    /// is now banned. `key`: the key offered (publickey), else `method` names
    /// what was tried (password, keyboard-interactive).
    fn auth_failure(
        &mut self,
        user: &str,
        method: &'static str,
        key: Option<&russh::keys::PublicKey>,
        reason: &str,
    ) -> Result<(), russh::Error> {
        match key {
            Some(key) => tracing::info!(
                target: "ingestd::auth",
                remote_ip = %self.peer.ip(),
                remote_port = self.peer.port(),
                user = ?user,
                key_type = %key.algorithm().as_str(),
                fingerprint = %key.fingerprint(Default::default()),
                reason = ?reason,
                "authentication failed"
            ),
            None => tracing::info!(
                target: "ingestd::auth",
                remote_ip = %self.peer.ip(),
                remote_port = self.peer.port(),
                user = ?user,
                method,
                reason = ?reason,
                "authentication failed"
            ),
        }
        self.trace.counted += 1;
        let class = if key.is_some() {
            auth_reason_class(reason)
        } else {
            "method_not_offered"
        };
        self.count_failure(class)
    }

    /// Count one failure towards the defender's ban (and the metrics).
    fn count_failure(&self, class: &'static str) -> Result<(), russh::Error> {
        self.shared.metrics.auth_failure(class);
        match self.gate.auth_failed(self.peer.ip()) {
            Some(new_ban) => {
                if new_ban {
                    self.shared.metrics.ban();
                }
                Err(russh::Error::Disconnect) // banned: close now
            }
            None => Ok(()),
        }
    }

    /// May `user` log in with `key`, signed with `algorithm`? `Err(reason)` if not.
    async fn verdict(
        &self,
        user: &str,
        key: &russh::keys::PublicKey,
        algorithm: &Algorithm,
    ) -> Result<(), String> {
        if *algorithm == (Algorithm::Rsa { hash: None }) && !self.shared.cfg.ssh.allow_sha1_rsa {
            return Err(
                "ssh-rsa (SHA-1) signatures are refused; use rsa-sha2-256/512 (ssh.allow_sha1_rsa)"
                    .into(),
            );
        }
        self.check_key(user, key).await
    }

    async fn check_key(&self, user: &str, key: &russh::keys::PublicKey) -> Result<(), String> {
        let pats = self.shared.authorized_keys();
        self.keys.check(pats, user, Some(self.peer.ip()), key).await
    }

    /// Refuse a channel request: a one-line message on stderr, exit status 1, close.
    fn refuse(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        msg: &str,
    ) -> Result<(), russh::Error> {
        tracing::info!(user = ?self.user, remote = %self.peer, reason = ?msg, "request refused");
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
        let busy = self.watch.busy.clone();
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
        self.over_limit.clone()
    }
}

/// A peer that asked to authenticate and went away unauthenticated, without
/// any failure logged yet (it only asked "none", or probed a key and never
/// signed), is logged like OpenSSH's "Connection closed by authenticating
/// user ... [preauth]" and counts as one failed attempt. Not when the node
/// closed it (grace time, eviction, stopping: logged where that happens), nor
/// a peer that never asked to authenticate (a director's TCP check, a scan of
/// host keys), nor one whose failures were logged already.
impl Drop for Conn {
    fn drop(&mut self) {
        let Some(user) = self.trace.user.take() else {
            return;
        };
        if self.watch.authenticated.load(Ordering::SeqCst)
            || self.trace.counted > 0
            || self.watch.closed_by_us.load(Ordering::SeqCst)
            || self.evicted.is_cancelled()
            || std::time::Instant::now() >= self.grace
        {
            return;
        }
        tracing::info!(
            target: "ingestd::auth",
            remote_ip = %self.peer.ip(),
            remote_port = self.peer.port(),
            user = ?user,
            methods = %self.trace.methods.join(","),
            "connection closed by authenticating user [preauth]"
        );
        let _ = self.count_failure("closed_preauth");
    }
}

impl Handler for Conn {
    type Error = russh::Error;

    /// OpenSSH clients always ask "none" first to learn the methods: not a
    /// failure by itself (see [`Conn`]'s `Drop` for a peer that stops there).
    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.trace.tried(user, "none");
        Ok(Auth::reject())
    }

    /// Never offered (only publickey is): a client sending a password anyway
    /// is guessing. Logged and counted like a refused key.
    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        self.trace.tried(user, "password");
        self.auth_failure(
            user,
            "password",
            None,
            "password authentication is not offered",
        )?;
        Ok(Auth::reject())
    }

    /// Never offered either; the first request of an exchange (no responses
    /// yet) is logged and counted, and refused at once.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.trace.tried(user, "keyboard-interactive");
        if response.is_none() {
            self.auth_failure(
                user,
                "keyboard-interactive",
                None,
                "keyboard-interactive authentication is not offered",
            )?;
        }
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.trace.tried(user, "publickey");
        match self.verdict(user, offer.public_key, offer.algorithm).await {
            Ok(()) => Ok(Auth::Accept),
            Err(reason) => {
                self.auth_failure(user, "publickey", Some(offer.public_key), &reason)?;
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.trace.tried(user, "publickey");
        match self.verdict(user, key.public_key, key.algorithm).await {
            Ok(()) => {
                self.user = user.to_string();
                self.over_limit = self
                    .ticket
                    .login(self.shared.max_sessions.load(Ordering::SeqCst));
                self.session_metric.authenticated();
                self.watch.authenticated.store(true, Ordering::SeqCst);
                tracing::info!(target: "ingestd::auth", user = ?user, remote = %self.peer, key_type = %key.public_key.algorithm().as_str(), fingerprint = %key.public_key.fingerprint(Default::default()), "authenticated");
                Ok(Auth::Accept)
            }
            Err(reason) => {
                self.auth_failure(user, "publickey", Some(key.public_key), &reason)?;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let max = self.shared.cfg.ssh.max_channels;
        if self.open.len() >= max {
            let reason = format!("ingestd: too many channels on this connection (limit {max})");
            tracing::info!(user = ?self.user, remote = %self.peer, reason = %reason, "channel refused");
            reply
                .reject(russh::ChannelOpenFailure::Other {
                    code: 4, // SSH_OPEN_RESOURCE_SHORTAGE
                    reason,
                })
                .await;
            return Ok(());
        }
        self.open.insert(channel.id());
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn data(
        &mut self,
        _channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.watch
            .received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
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
                    self.limits.clone(),
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
                self.limits.clone(),
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
        self.open.remove(&channel);
        Ok(())
    }
}
