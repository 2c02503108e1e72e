//! The plain-text log cannot be forged by what senders choose: a file named
//! `x size=999` or one holding a quote gives exactly one `landed` line, with its
//! path quoted and no extra field.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// Parse `key=value key="quoted \"value\""...` (logfmt as tracing writes it).
/// Returns every (key, raw value) pair in order, values unquoted.
fn logfmt(s: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == ' ' {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != '=' && b[i] != ' ' {
            i += 1;
        }
        let key: String = b[ks..i].iter().collect();
        if i >= b.len() || b[i] != '=' {
            out.push((key, String::new(), false));
            continue;
        }
        i += 1;
        let mut val = String::new();
        let quoted = i < b.len() && b[i] == '"';
        if quoted {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != ' ' {
                val.push(b[i]);
                i += 1;
            }
        }
        out.push((key, val, quoted));
    }
    out
}

#[test]
fn landed_lines_quote_sender_paths_and_cannot_be_forged() {
    let node = Node::start();
    let names = ["x size=999", "q\"uote it.txt", "plain.txt"];
    let mut sizes = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        let p = node.src.join(n);
        let content = random_file(&p, 100 + i);
        sizes.insert(n.to_string(), content.len());
        scp_o_ok(&node, &[path_str(&p), &node.target("alice", "")]);
    }
    let ok = poll(Duration::from_secs(20), || {
        (node.log().matches(" landed ").count() >= names.len()).then_some(())
    });
    assert!(ok.is_some(), "no landed lines:\n{}", node.log());
    let log = node.log();
    let landed: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(": landed ").map(|x| x.1))
        .collect();
    assert_eq!(landed.len(), names.len(), "landed lines:\n{log}");
    for n in names {
        let lines: Vec<Vec<(String, String, bool)>> = landed
            .iter()
            .map(|l| logfmt(l))
            .filter(|f| f.iter().any(|(k, v, _)| k == "path" && v == n))
            .collect();
        assert_eq!(lines.len(), 1, "exactly one landed line for {n:?}:\n{log}");
        let f = &lines[0];
        let keys: Vec<&str> = f.iter().map(|(k, _, _)| k.as_str()).collect();
        for k in ["id", "user", "remote", "protocol", "path", "size", "blake3"] {
            assert_eq!(
                keys.iter().filter(|x| **x == k).count(),
                1,
                "field {k} once in the line for {n:?}: {keys:?}\n{log}"
            );
        }
        assert!(
            keys.iter().all(|k| !k.is_empty()),
            "stray tokens in the line for {n:?}: {f:?}"
        );
        let path = f.iter().find(|(k, _, _)| k == "path").unwrap();
        assert!(path.2, "path not quoted for {n:?}: {f:?}");
        let size = f.iter().find(|(k, _, _)| k == "size").unwrap();
        assert_eq!(size.1, sizes[n].to_string(), "size of {n:?}");
    }
}
