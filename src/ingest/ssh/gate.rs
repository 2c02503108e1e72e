//! Admission of SSH connections: what bounds the node against hostile peers
//! before and after they log in.
//!
//! - at accept: a banned address (the defender, `core::defender`) is closed
//!   before key exchange; when `ssh.max_startups` unauthenticated connections
//!   are open, the *oldest* of them is closed to make room (so a flood of idle
//!   pre-auth connections cannot lock a real sender out: it connects, and is the
//!   newest); every unauthenticated connection is closed at
//!   `ssh.login_grace_time` anyway;
//! - at login: the connection stops counting as unauthenticated and counts
//!   towards `ssh.max_sessions` and `ssh.max_sessions_per_ip`; beyond them its
//!   requests are refused with a message;
//! - each failed authentication is counted by the defender, which bans an
//!   address after `defender.max_failures` within `defender.window`.
//!
//! A [`Ticket`] is one admitted connection; dropping it gives its place back.

use crate::config::Config;
use crate::core::defender::{Defender, Outcome, Policy};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct Gate {
    cfg: Arc<Config>,
    start: Instant,
    /// Connections not (yet) authenticated.
    pub unauthenticated: Arc<AtomicUsize>,
    /// Authenticated connections (shared with the metrics).
    pub authenticated: Arc<AtomicUsize>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Unauthenticated connections by age (admission order): the oldest is
    /// evicted when `max_startups` is reached.
    pending: Mutex<BTreeMap<u64, CancellationToken>>,
    seq: AtomicU64,
    defender: Mutex<Defender>,
    /// Failed authentications and bans since start.
    pub auth_failures: AtomicU64,
    pub bans: AtomicU64,
    /// Connections closed at accept (banned).
    pub refused_at_accept: AtomicU64,
    /// Unauthenticated connections closed to make room (max_startups).
    pub evicted: AtomicU64,
    last_full_log_ms: AtomicU64,
}

/// Why a connection was closed at accept.
#[derive(Debug)]
pub enum Refused {
    Banned { remaining_s: u64 },
}

pub fn policy(cfg: &Config) -> Policy {
    Policy {
        max_failures: cfg.defender.max_failures,
        window_ms: cfg.defender.window.0.as_millis() as u64,
        ban_ms: cfg.defender.ban_time.0.as_millis() as u64,
        allow: cfg.defender.allow.clone(),
    }
}

impl Gate {
    pub fn new(cfg: Arc<Config>, authenticated: Arc<AtomicUsize>) -> Arc<Gate> {
        Arc::new(Gate {
            defender: Mutex::new(Defender::new(policy(&cfg))),
            cfg,
            start: Instant::now(),
            unauthenticated: Arc::default(),
            authenticated,
            per_ip: Mutex::new(HashMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            bans: AtomicU64::new(0),
            refused_at_accept: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            last_full_log_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A new TCP connection from `ip`: admitted as unauthenticated, or refused.
    pub fn admit(self: &Arc<Gate>, ip: IpAddr) -> Result<Ticket, Refused> {
        let now = self.now_ms();
        if let Some(until) = self.defender.lock().unwrap().banned_until(ip, now) {
            self.refused_at_accept.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Banned {
                remaining_s: (until - now).div_ceil(1000),
            });
        }
        let limit = self.cfg.ssh.max_startups;
        let n = self.unauthenticated.fetch_add(1, Ordering::SeqCst);
        let evict = CancellationToken::new();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.pending.lock().unwrap();
            if n >= limit {
                if let Some((_, oldest)) = pending.pop_first() {
                    oldest.cancel();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                // one log line per second at most: a flood must not flood the log
                // (0 = never logged yet: the first time is always logged)
                let last = self.last_full_log_ms.load(Ordering::Relaxed);
                if (last == 0 || now >= last + 1000)
                    && self
                        .last_full_log_ms
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        limit,
                        "ssh.max_startups unauthenticated connections open: closing the oldest to make room"
                    );
                }
            }
            pending.insert(seq, evict.clone());
        }
        Ok(Ticket {
            gate: self.clone(),
            ip,
            authed: false,
            seq,
            evict,
        })
    }

    /// A failed authentication from `ip`: counted. `Some(true)` if this failure
    /// banned the address, `Some(false)` if it was banned already, `None` if not banned.
    pub fn auth_failed(&self, ip: IpAddr) -> Option<bool> {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        match self.defender.lock().unwrap().failure(ip, now) {
            Outcome::Banned { .. } => {
                self.bans.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "ingestd::auth",
                    remote_ip = %ip,
                    failures = self.cfg.defender.max_failures,
                    window = %humantime::format_duration(self.cfg.defender.window.0),
                    ban_time = %humantime::format_duration(self.cfg.defender.ban_time.0),
                    "address banned"
                );
                Some(true)
            }
            Outcome::AlreadyBanned { .. } => Some(false),
            _ => None,
        }
    }
}

/// One admitted connection's place: unauthenticated until [`Ticket::login`].
pub struct Ticket {
    gate: Arc<Gate>,
    ip: IpAddr,
    authed: bool,
    seq: u64,
    /// Cancelled when this unauthenticated connection must make room.
    evict: CancellationToken,
}

impl Ticket {
    /// Cancelled when this connection, still unauthenticated, is evicted.
    pub fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// The connection authenticated: it now counts towards `max_sessions` and
    /// `max_sessions_per_ip`. `Some(message)` if that is over a limit (its
    /// requests are then refused with the message).
    pub fn login(&mut self, max_sessions: usize) -> Option<String> {
        if self.authed {
            return None;
        }
        self.authed = true;
        let g = &self.gate;
        g.pending.lock().unwrap().remove(&self.seq);
        g.defender.lock().unwrap().success(self.ip);
        g.unauthenticated.fetch_sub(1, Ordering::SeqCst);
        let total = g.authenticated.fetch_add(1, Ordering::SeqCst) + 1;
        let from_ip = {
            let mut m = g.per_ip.lock().unwrap();
            let c = m.entry(self.ip).or_insert(0);
            *c += 1;
            *c
        };
        let ssh = &g.cfg.ssh;
        if total > max_sessions {
            Some(format!(
                "ingestd: too many sessions on this node (limit {max_sessions}); try again later"
            ))
        } else if from_ip > ssh.max_sessions_per_ip {
            Some(format!(
                "ingestd: too many sessions from your address (limit {}); try again later",
                ssh.max_sessions_per_ip
            ))
        } else {
            None
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let g = &self.gate;
        if !self.authed {
            g.pending.lock().unwrap().remove(&self.seq);
            g.unauthenticated.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        g.authenticated.fetch_sub(1, Ordering::SeqCst);
        let mut m = g.per_ip.lock().unwrap();
        if let Some(c) = m.get_mut(&self.ip) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
