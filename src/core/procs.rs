//! The kernel's process table as data, for the pipeline's reaper: parsing
//! `/proc/<pid>/stat` and `/proc/<pid>/environ` contents, and the set of
//! descendants of some processes. The reading and the killing are in
//! `pipeline::reaper`.

use std::collections::{HashMap, HashSet};

/// What the reaper needs from one `/proc/<pid>/stat` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// State `Z` (exited, not yet reaped by its parent) or `X`.
    pub zombie: bool,
    /// Field 22, clock ticks after boot: with the pid, identifies one process.
    pub start_ticks: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses: the fields resume after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut f = text.get(close + 1..)?.split_whitespace();
    let state = f.next()?; // field 3
    let ppid = f.next()?.parse().ok()?; // field 4
    let start_ticks = f.nth(17)?.parse().ok()?; // field 22
    Some(ProcStat {
        pid,
        ppid,
        zombie: state == "Z" || state == "X",
        start_ticks,
    })
}

/// Whether a `/proc/<pid>/environ` content (`KEY=value` strings, NUL-separated)
/// holds exactly `key=value`.
pub fn environ_has(environ: &[u8], key: &str, value: &str) -> bool {
    let (k, v) = (key.as_bytes(), value.as_bytes());
    environ.split(|b| *b == 0).any(|kv| {
        kv.len() == k.len() + 1 + v.len()
            && kv.starts_with(k)
            && kv[k.len()] == b'='
            && &kv[k.len() + 1..] == v
    })
}

/// `roots` that are in `procs`, and every process below them (by parent pid), each
/// once, parents before children.
pub fn descendants(procs: &[ProcStat], roots: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let present: HashSet<i32> = procs.iter().map(|p| p.pid).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut todo: Vec<i32> = roots
        .iter()
        .copied()
        .filter(|r| present.contains(r))
        .collect();
    let mut i = 0;
    while i < todo.len() {
        let p = todo[i];
        i += 1;
        if !seen.insert(p) {
            continue;
        }
        out.push(p);
        if let Some(c) = children.get(&p) {
            todo.extend(c.iter().copied());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let t = [
            (
                "1234 (sleep) S 1 1234 1234 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 987654 8192 200 18446744073709551615",
                Some((1234, 1, false, 987654)),
            ),
            // a name with spaces and parentheses
            (
                "77 (a) b (c) Z 5 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0",
                Some((77, 5, true, 42)),
            ),
            ("77 (x) X 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 43", Some((77, 5, true, 43))),
            ("", None),
            ("12 (short) S 1 2 3", None),
            ("x (a) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 43", None),
        ];
        for (line, want) in t {
            let got = parse_stat(line).map(|p| (p.pid, p.ppid, p.zombie, p.start_ticks));
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn environ_match() {
        let env = b"PATH=/bin\0INGEST_ID=n-1\0INGEST_IDX=n-2\0EMPTY=\0";
        let t = [
            ("INGEST_ID", "n-1", true),
            ("INGEST_ID", "n-2", false),
            ("INGEST_IDX", "n-2", true),
            ("INGEST_ID", "n-", false),
            ("EMPTY", "", true),
            ("PATH", "/bin", true),
            ("ATH", "/bin", false),
        ];
        for (k, v, want) in t {
            assert_eq!(environ_has(env, k, v), want, "{k}={v}");
        }
        assert!(!environ_has(b"", "A", ""));
    }

    #[test]
    fn closure() {
        let p = |pid, ppid| ProcStat {
            pid,
            ppid,
            zombie: false,
            start_ticks: 0,
        };
        // 1 ─ 10 ─ 11 ─ 12      20 ─ 21      (30's parent 99 is not listed)
        //          └─ 13
        let t = [
            p(1, 0),
            p(10, 1),
            p(11, 10),
            p(12, 11),
            p(13, 11),
            p(20, 1),
            p(21, 20),
            p(30, 99),
        ];
        let sorted = |mut v: Vec<i32>| {
            v.sort();
            v
        };
        assert_eq!(sorted(descendants(&t, &[10])), [10, 11, 12, 13]);
        assert_eq!(sorted(descendants(&t, &[11, 20])), [11, 12, 13, 20, 21]);
        assert_eq!(sorted(descendants(&t, &[12, 11])), [11, 12, 13]);
        assert_eq!(descendants(&t, &[99]), Vec::<i32>::new());
        assert_eq!(descendants(&t, &[30]), [30]);
        assert_eq!(descendants(&t, &[]), Vec::<i32>::new());
        // parents before children
        let d = descendants(&t, &[10]);
        assert_eq!(d[0], 10);
        assert!(d.iter().position(|x| *x == 11) < d.iter().position(|x| *x == 12));
    }
}
