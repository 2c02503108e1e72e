//! What a SIGHUP may change in a running node: the keys in [`RELOADABLE`] take
//! effect at once (connections already open keep going); every other changed key
//! is reported as needing a restart.

use super::Config;
use serde_json::Value;

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

/// Copy the reloadable settings of `new` into `running`.
pub fn take_reloadable(running: &mut Config, new: &Config) {
    running.ssh.authorized_keys = new.ssh.authorized_keys.clone();
    running.ssh.max_sessions = new.ssh.max_sessions;
    running.health.maintenance_file = new.health.maintenance_file.clone();
    running.health.archive_failing_for = new.health.archive_failing_for;
    running.health.max_backlog = new.health.max_backlog;
    running.log = new.log.clone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
