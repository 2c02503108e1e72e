//! What a SIGHUP may change in a running node: the keys in [`RELOADABLE`] take
//! effect at once (connections already open keep going); every other changed key
//! is reported as needing a restart.
//!
//! A reload never silently falls back to a default ([`reload_refusal`]): a file
//! caught half-written (a config tool that truncates before writing, a reload
//! racing the write) must not replace the running `authorized_keys`, spool or
//! directories with defaults. The rule: every key the running file set must
//! still be set by the new one (removing a key takes a restart, or setting it
//! explicitly to the value wanted), and the new file must end with a newline
//! (a file cut inside its last line can still parse: `max_sessions = 25` from
//! `256`). Together they refuse a truncation at any offset: one that drops a
//! key is refused by the first, one inside a line fails to parse or lacks the
//! final newline. An empty or comment-only file is refused by `Config::load`.

use super::Config;
use serde_json::Value;
use std::collections::BTreeSet;

/// Keys applied by a reload.
pub const RELOADABLE: &[&str] = &[
    "ssh.authorized_keys",
    "ssh.max_sessions",
    "health.maintenance_file",
    "health.archive_failing_for",
    "health.max_backlog",
    "log.level",
];

/// The dotted keys whose values differ between `a` and `b` (tables are walked;
/// lists and scalars compare whole), sorted.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).unwrap_or(Value::Null),
        serde_json::to_value(b).unwrap_or(Value::Null),
    );
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out.sort();
    out
}

fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        // A section added or removed ([process], [inbox]): one key.
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The dotted keys a TOML text sets (tables walked; arrays, arrays of tables
/// and scalars are one key each). Empty for a text that does not parse.
pub fn explicit_keys(text: &str) -> BTreeSet<String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in t {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) if !sub.is_empty() => walk(&p, sub, out),
                _ => {
                    out.insert(p);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Ok(t) = text.parse::<toml::Table>() {
        walk("", &t, &mut out);
    }
    out
}

/// Why a reload to `new` (whose file text is `new_text`) must be refused while
/// `running` is in force; `None` if it may go ahead.
pub fn reload_refusal(running: &Config, new: &Config, new_text: &str) -> Option<String> {
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        return Some(
            "the file does not end with a newline: it looks cut off in its last line \
             (write it whole, then send SIGHUP)"
                .into(),
        );
    }
    let dropped: Vec<&str> = running
        .explicit_keys
        .difference(&new.explicit_keys)
        .map(String::as_str)
        // a key inside a table the new file still sets whole (an empty table) is not dropped
        .collect();
    if dropped.is_empty() {
        return None;
    }
    let mut list = dropped
        .iter()
        .take(8)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if dropped.len() > 8 {
        list.push_str(&format!(" and {} more", dropped.len() - 8));
    }
    Some(format!(
        "the new file no longer sets {list}, which the running configuration set: \
         a reload never falls back to a default (a truncated file?); set the key \
         explicitly, or restart to drop it"
    ))
}

/// Copy the reloadable settings of `new` into `running`.
pub fn take_reloadable(running: &mut Config, new: &Config) {
    running.ssh.authorized_keys = new.ssh.authorized_keys.clone();
    running.ssh.max_sessions = new.ssh.max_sessions;
    running.health.maintenance_file = new.health.maintenance_file.clone();
    running.health.archive_failing_for = new.health.archive_failing_for;
    running.health.max_backlog = new.health.max_backlog;
    running.log = new.log.clone();
    // Keys the new file set stay required from now on (removing one takes a restart).
    running
        .explicit_keys
        .extend(new.explicit_keys.iter().cloned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FULL: &str = "node_id = \"n1\"\n# keys\n[ssh]\nlisten = \"127.0.0.1:2222\"\n\
        authorized_keys = \"/etc/ingestd/authorized_keys\"\nmax_sessions = 256\n\n\
        [spool]\ndir = \"/srv/spool\"\n[health]\nmaintenance_file = \"/run/m\"\n";

    /// The file cut at every byte offset: each cut is refused (it fails to
    /// parse, drops a key the running file set, sets nothing, or lacks the final
    /// newline) or is exactly the running configuration's keys and values.
    #[test]
    fn a_truncated_file_is_refused_at_every_offset() {
        let base = Path::new("/etc/ingestd");
        let running = Config::parse(FULL, base).unwrap();
        let mut accepted = 0;
        for cut in 0..=FULL.len() {
            let text = &FULL[..cut];
            let new = match Config::parse(text, base) {
                Ok(c) => c,
                Err(_) => continue,
            };
            if new.explicit_keys.is_empty() {
                continue; // Config::load refuses a file that sets nothing
            }
            if reload_refusal(&running, &new, text).is_some() {
                continue;
            }
            accepted += 1;
            assert!(
                changed_keys(&running, &new).is_empty(),
                "cut at {cut} accepted with changes {:?}: {text:?}",
                changed_keys(&running, &new)
            );
        }
        assert_eq!(accepted, 1, "only the whole file");
    }

    #[test]
    fn explicit_keys_and_refusals_name_the_keys() {
        let k = explicit_keys(
            "a = 1\n[ssh]\nlisten = \"x\"\n[[forward.target]]\nname = \"p\"\n[log]\n",
        );
        assert_eq!(
            k.into_iter().collect::<Vec<_>>(),
            ["a", "forward.target", "log", "ssh.listen"]
        );
        let base = Path::new("/x");
        let running = Config::parse(FULL, base).unwrap();
        let cut = FULL.replace("authorized_keys = \"/etc/ingestd/authorized_keys\"\n", "");
        let new = Config::parse(&cut, base).unwrap();
        let why = reload_refusal(&running, &new, &cut).unwrap();
        assert!(why.contains("ssh.authorized_keys"), "{why}");
        // adding keys and changing values is fine
        let more = FULL.replace(
            "max_sessions = 256",
            "max_sessions = 2\nmax_sessions_per_ip = 1",
        );
        let new = Config::parse(&more, base).unwrap();
        assert_eq!(reload_refusal(&running, &new, &more), None);
    }

    #[test]
    fn changed_keys_are_named_and_reloadable_ones_taken() {
        let base = "[ssh]\nlisten = \"127.0.0.1:2\"\nmax_sessions = 4\n";
        let a = Config::parse(base, Path::new("/x")).unwrap();
        let b = Config::parse(
            "[ssh]\nlisten = \"127.0.0.1:3\"\nmax_sessions = 5\nauthorized_keys = [\"/a\", \"/b\"]\n[log]\nlevel = \"debug\"\n[process]\ncommand = [\"/bin/true\"]\n",
            Path::new("/x"),
        )
        .unwrap();
        let c = changed_keys(&a, &b);
        assert_eq!(
            c,
            [
                "log.level",
                "process",
                "ssh.authorized_keys",
                "ssh.listen",
                "ssh.max_sessions"
            ]
        );
        let mut r = a.clone();
        take_reloadable(&mut r, &b);
        assert_eq!(changed_keys(&r, &b), ["process", "ssh.listen"]);
        assert!(changed_keys(&a, &a).is_empty());
    }
}
