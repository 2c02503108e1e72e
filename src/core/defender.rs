//! The defender, pure: counts failed authentications per source address within a
//! sliding window and bans an address that reaches the limit, for a fixed time
//! (as SFTPGo's defender and OpenSSH's PerSourcePenalties do). Time is passed in
//! (milliseconds on any monotonic clock), so every rule is a table test.
//! Memory is bounded: at most [`MAX_HOSTS`] addresses are tracked.

use crate::core::netmatch::{canonical, in_cidrs};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Addresses tracked at once; beyond, the stalest entry is forgotten.
pub const MAX_HOSTS: usize = 65_536;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Failures within `window_ms` that ban an address (0 disables the defender).
    pub max_failures: u32,
    pub window_ms: u64,
    pub ban_ms: u64,
    /// CIDRs never banned.
    pub allow: Vec<String>,
}

#[derive(Debug, Default)]
struct Host {
    /// Times of the failures within the window, oldest first (at most max_failures).
    failures: VecDeque<u64>,
    banned_until: u64,
    last: u64,
}

/// What a failure led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted: `n` failures within the window so far.
    Counted(u32),
    /// This failure banned the address until `until_ms`.
    Banned { until_ms: u64 },
    /// The address was already banned (a connection opened before the ban).
    AlreadyBanned { until_ms: u64 },
    /// The address is on the allow list: never banned.
    Allowed,
}

pub struct Defender {
    policy: Policy,
    hosts: HashMap<IpAddr, Host>,
}

impl Defender {
    pub fn new(policy: Policy) -> Defender {
        Defender {
            policy,
            hosts: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replace the policy (configuration reload); bans in force stay.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// If `ip` is banned at `now`, the time its ban ends.
    pub fn banned_until(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let h = self.hosts.get(&canonical(ip))?;
        (h.banned_until > now).then_some(h.banned_until)
    }

    /// One failed authentication from `ip` at `now`.
    pub fn failure(&mut self, ip: IpAddr, now: u64) -> Outcome {
        let ip = canonical(ip);
        if self.policy.max_failures == 0 || in_cidrs(&self.policy.allow, ip) {
            return Outcome::Allowed;
        }
        if !self.hosts.contains_key(&ip) && self.hosts.len() >= MAX_HOSTS {
            self.evict(now);
        }
        let (max, window, ban) = (
            self.policy.max_failures as usize,
            self.policy.window_ms,
            self.policy.ban_ms,
        );
        let h = self.hosts.entry(ip).or_default();
        h.last = now;
        if h.banned_until > now {
            return Outcome::AlreadyBanned {
                until_ms: h.banned_until,
            };
        }
        while h
            .failures
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            h.failures.pop_front();
        }
        h.failures.push_back(now);
        if h.failures.len() >= max {
            h.failures.clear();
            h.banned_until = now.saturating_add(ban);
            return Outcome::Banned {
                until_ms: h.banned_until,
            };
        }
        Outcome::Counted(h.failures.len() as u32)
    }

    /// A successful login from `ip`: its failures are forgiven (a ban in force stays).
    pub fn success(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        if let Some(h) = self.hosts.get_mut(&ip) {
            h.failures.clear();
            if h.banned_until == 0 {
                self.hosts.remove(&ip);
            }
        }
    }

    /// Addresses tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.hosts.len()
    }

    /// Addresses banned at `now`.
    pub fn banned(&self, now: u64) -> usize {
        self.hosts.values().filter(|h| h.banned_until > now).count()
    }

    /// Forget what no longer matters; if still full, the stalest address.
    fn evict(&mut self, now: u64) {
        let window = self.policy.window_ms;
        self.hosts.retain(|_, h| {
            h.banned_until > now
                || h.failures
                    .back()
                    .is_some_and(|&t| t.saturating_add(window) > now)
        });
        if self.hosts.len() >= MAX_HOSTS {
            if let Some(ip) = self
                .hosts
                .iter()
                .min_by_key(|(_, h)| h.last)
                .map(|(ip, _)| *ip)
            {
                self.hosts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(max: u32, allow: &[&str]) -> Defender {
        Defender::new(Policy {
            max_failures: max,
            window_ms: 60_000,
            ban_ms: 600_000,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        })
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_after_max_failures_within_the_window_and_lifts_by_itself() {
        let mut d = d(3, &[]);
        let a = ip("10.0.0.1");
        assert_eq!(d.failure(a, 1_000), Outcome::Counted(1));
        assert_eq!(d.failure(a, 2_000), Outcome::Counted(2));
        assert_eq!(d.banned_until(a, 2_000), None);
        assert_eq!(d.failure(a, 3_000), Outcome::Banned { until_ms: 603_000 });
        assert_eq!(d.banned_until(a, 3_000), Some(603_000));
        assert_eq!(
            d.failure(a, 4_000),
            Outcome::AlreadyBanned { until_ms: 603_000 }
        );
        assert_eq!(d.banned_until(a, 602_999), Some(603_000));
        assert_eq!(d.banned_until(a, 603_000), None, "lifts by itself");
        assert_eq!(d.banned(3_000), 1);
        // others are not affected; IPv4-mapped is the same address
        assert_eq!(d.banned_until(ip("10.0.0.2"), 3_000), None);
        assert!(d.banned_until(ip("::ffff:10.0.0.1"), 3_000).is_some());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut d = d(3, &[]);
        let a = ip("10.0.0.1");
        d.failure(a, 0);
        d.failure(a, 30_000);
        assert_eq!(
            d.failure(a, 61_000),
            Outcome::Counted(2),
            "the first expired"
        );
        assert_eq!(d.failure(a, 62_000), Outcome::Banned { until_ms: 662_000 });
    }

    #[test]
    fn allow_list_and_disabled_never_ban() {
        let mut d1 = d(1, &["127.0.0.0/8"]);
        for t in 0..100 {
            assert_eq!(d1.failure(ip("127.0.0.1"), t), Outcome::Allowed);
        }
        assert_eq!(d1.banned_until(ip("127.0.0.1"), 50), None);
        let mut d0 = d(0, &[]);
        assert_eq!(d0.failure(ip("10.0.0.1"), 0), Outcome::Allowed);
    }

    #[test]
    fn success_forgives_failures_but_not_a_ban() {
        let mut d = d(3, &[]);
        let a = ip("10.0.0.1");
        d.failure(a, 0);
        d.failure(a, 1);
        d.success(a);
        assert_eq!(d.failure(a, 2), Outcome::Counted(1));
        d.failure(a, 3);
        d.failure(a, 4);
        d.success(a);
        assert!(d.banned_until(a, 5).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = d(5, &[]);
        for i in 0..(MAX_HOSTS as u32 + 1000) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            d.failure(a, i as u64);
        }
        assert!(d.tracked() <= MAX_HOSTS);
    }
}
