//! authorized_keys entry options, pure: which options a key may carry on this
//! server and whether `from="..."` lets a connection from an address use it.
//! (The key lines themselves are parsed by ssh-key in `ingest/ssh/auth`.)

use crate::core::netmatch::from_matches;
use std::net::IpAddr;

/// Options that only switch off features this server never offers.
const HARMLESS: [&str; 9] = [
    "restrict",
    "no-pty",
    "no-port-forwarding",
    "no-agent-forwarding",
    "no-X11-forwarding",
    "no-user-rc",
    "no-touch-required",
    "verify-required",
    "pty",
];

/// `Ok(true)` if the options let a connection from `ip` use the key; `Err(option)`
/// for an option this server does not support.
pub fn options_allow<'a>(
    opts: impl Iterator<Item = &'a str>,
    ip: Option<IpAddr>,
) -> Result<bool, String> {
    let mut allowed = true;
    for opt in opts {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v.trim_matches('"'))),
            None => (opt, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("from", Some(list)) => {
                if !ip.is_some_and(|ip| from_matches(list, ip)) {
                    allowed = false;
                }
            }
            (n, None) if HARMLESS.iter().any(|h| h.eq_ignore_ascii_case(n)) => {}
            ("permitopen" | "permitlisten" | "environment", Some(_)) => {}
            _ => return Err(opt.to_string()),
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let ip: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            options_allow(["restrict", "no-pty"].into_iter(), ip),
            Ok(true)
        );
        assert_eq!(
            options_allow(["from=\"10.0.0.0/8\""].into_iter(), ip),
            Ok(true)
        );
        assert_eq!(
            options_allow(["from=\"192.168.*\""].into_iter(), ip),
            Ok(false)
        );
        assert_eq!(
            options_allow(["from=\"10.*\""].into_iter(), None),
            Ok(false)
        );
        assert!(options_allow(["command=\"/bin/sh\""].into_iter(), ip).is_err());
        assert!(options_allow(["cert-authority"].into_iter(), ip).is_err());
    }
}
