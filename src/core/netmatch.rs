//! Address patterns, pure: OpenSSH's `from="..."` pattern lists (`*`/`?` globs on
//! the address text, `!` negation, CIDR) and CIDR lists such as
//! `defender.allow`.

use crate::core::vpath::glob_match;
use std::net::IpAddr;

/// OpenSSH `from=` pattern list against an address: a matching negated pattern
/// denies; otherwise any matching positive pattern allows.
pub fn from_matches(list: &str, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    let text = ip.to_string();
    let mut any = false;
    for pat in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (neg, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        let hit = if let Some((net, bits)) = pat.split_once('/') {
            cidr_contains(net, bits, ip)
        } else {
            glob_match(pat, &text)
        };
        if hit && neg {
            return false;
        }
        any |= hit;
    }
    any
}

fn cidr_contains(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Does any CIDR (or single address) in `list` contain `ip`?
pub fn in_cidrs(list: &[String], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    list.iter().any(|c| match c.split_once('/') {
        Some((net, bits)) => cidr_contains(net, bits, ip),
        None => c.parse::<IpAddr>().is_ok_and(|a| canonical(a) == ip),
    })
}

/// Is `s` a valid CIDR (`10.0.0.0/8`, `::1/128`) or address?
pub fn valid_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((net, bits)) => match (net.parse::<IpAddr>(), bits.parse::<u32>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
        None => s.parse::<IpAddr>().is_ok(),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_patterns() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(from_matches("10.1.2.3", a));
        assert!(from_matches("10.1.*", a));
        assert!(from_matches("192.168.0.1,10.0.0.0/8", a));
        assert!(!from_matches("10.0.0.0/8,!10.1.2.3", a));
        assert!(!from_matches("192.168.*", a));
        assert!(from_matches(
            "127.0.0.1",
            "::ffff:127.0.0.1".parse().unwrap()
        ));
    }

    #[test]
    fn cidr_lists() {
        let l = vec!["127.0.0.0/8".to_string(), "::1".to_string()];
        assert!(in_cidrs(&l, "127.5.0.1".parse().unwrap()));
        assert!(in_cidrs(&l, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(in_cidrs(&l, "::1".parse().unwrap()));
        assert!(!in_cidrs(&l, "10.0.0.1".parse().unwrap()));
        assert!(!in_cidrs(&[], "127.0.0.1".parse().unwrap()));
        assert!(valid_cidr("10.0.0.0/8") && valid_cidr("fe80::/10") && valid_cidr("1.2.3.4"));
        assert!(!valid_cidr("10.0.0.0/33") && !valid_cidr("nope") && !valid_cidr("1.2.3.4/x"));
    }
}
