//! Table tests of the SCP sink state machine: the client behaviours that
//! `tests/scp.rs` drives with the real OpenSSH client, as event sequences in
//! and replies / effects out, plus a seeded fuzz loop.

use super::*;
use crate::core::vpath::tests::XorShift;

fn args(recursive: bool, preserve: bool, dir: bool, target: &str) -> ScpArgs {
    ScpArgs {
        recursive,
        preserve,
        target_should_be_dir: dir,
        verbose: false,
        target: target.into(),
    }
}

fn cfg(a: ScpArgs) -> SinkConfig {
    SinkConfig::new(a, false, u64::MAX)
}

/// A fake driver: runs every action at once and records what happened.
struct Sim {
    sink: Sink,
    sent: Vec<u8>,
    stderr: Vec<String>,
    logs: Vec<LogEvent>,
    exit: Option<u32>,
    /// The file being written.
    cur: Option<(FileStart, Vec<u8>)>,
    staged: Vec<(FileStart, Vec<u8>)>,
    /// Committed (landed) files, in order.
    landed: Vec<(FileStart, Vec<u8>)>,
    aborted: Vec<String>,
    started: Vec<FileStart>,
    commits: usize,
    /// Effects that fail: (reason, fatal) for a path given to `StartFile`.
    refuse: Option<(String, String, bool)>,
    fail_write_after: Option<usize>,
    fail_finish: bool,
    fail_commit: bool,
    writes: usize,
    actions_after_exit: usize,
}

impl Sim {
    fn new(cfg: SinkConfig) -> Sim {
        let mut s = Sim {
            sink: Sink::new(cfg),
            sent: vec![],
            stderr: vec![],
            logs: vec![],
            exit: None,
            cur: None,
            staged: vec![],
            landed: vec![],
            aborted: vec![],
            started: vec![],
            commits: 0,
            refuse: None,
            fail_write_after: None,
            fail_finish: false,
            fail_commit: false,
            writes: 0,
            actions_after_exit: 0,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        while let Some(a) = self.sink.poll_action() {
            self.exec(a);
        }
    }

    fn exec(&mut self, a: Action) {
        if self.exit.is_some() {
            self.actions_after_exit += 1;
        }
        match a {
            Action::Send(b) => self.sent.extend_from_slice(&b),
            Action::Stderr(s) => self.stderr.push(s),
            Action::StartFile(f) => {
                self.started.push(f.clone());
                match &self.refuse {
                    Some((p, reason, fatal)) if *p == f.path => {
                        let ev = Event::Refused {
                            reason: reason.clone(),
                            fatal: *fatal,
                        };
                        self.sink.handle(ev);
                    }
                    _ => {
                        assert!(self.cur.is_none(), "two files open at once");
                        self.cur = Some((f, vec![]));
                        self.sink.handle(Event::Admitted);
                    }
                }
            }
            Action::Write(b) => {
                let cur = self.cur.as_mut().expect("write without a file");
                cur.1.extend_from_slice(&b);
                self.writes += 1;
                if self.fail_write_after == Some(self.writes) {
                    self.sink.handle(Event::WriteFailed("disk on fire".into()));
                }
            }
            Action::FinishFile => {
                let cur = self.cur.take().expect("finish without a file");
                assert_eq!(cur.1.len() as u64, cur.0.size, "finished short");
                if self.fail_finish {
                    self.sink.handle(Event::FinishFailed("no record".into()));
                } else {
                    self.staged.push(cur);
                    self.sink.handle(Event::Finished);
                }
            }
            Action::AbortFile => {
                let cur = self.cur.take().expect("abort without a file");
                self.aborted.push(cur.0.path);
            }
            Action::Commit => {
                self.commits += 1;
                if self.fail_commit {
                    self.staged.clear();
                    self.sink.handle(Event::CommitFailed("fsync: EIO".into()));
                } else {
                    self.landed.append(&mut self.staged);
                    self.sink.handle(Event::Committed);
                }
            }
            Action::Log(l) => self.logs.push(l),
            Action::Exit(c) => {
                assert!(self.exit.is_none(), "two exits");
                self.exit = Some(c);
                // The driver drops whatever is left.
                self.staged.clear();
                self.cur = None;
            }
        }
    }

    fn feed(&mut self, b: &[u8]) -> &mut Self {
        self.sink.handle(Event::Data(Bytes::copy_from_slice(b)));
        self.run();
        self
    }

    fn eof(&mut self) -> &mut Self {
        self.sink.handle(Event::Eof);
        self.run();
        self
    }

    fn landed_paths(&self) -> Vec<&str> {
        self.landed.iter().map(|f| f.0.path.as_str()).collect()
    }

    /// The `\x01`/`\x02` message lines sent, as (kind, text without "scp: ").
    fn messages(&self) -> Vec<(u8, String)> {
        let mut out = vec![];
        let mut i = 0;
        while i < self.sent.len() {
            match self.sent[i] {
                0 => i += 1,
                k @ (1 | 2) => {
                    let end = self.sent[i..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map(|p| i + p)
                        .expect("message ends with \\n");
                    let text = String::from_utf8(self.sent[i + 1..end].to_vec()).unwrap();
                    let text = text.strip_prefix("scp: ").expect("scp: prefix").to_string();
                    out.push((k, text));
                    i = end + 1;
                }
                other => panic!("unexpected byte {other} in {:?}", self.sent),
            }
        }
        out
    }

    fn acks(&self) -> usize {
        // Only meaningful when no message was sent.
        self.sent.iter().filter(|&&b| b == 0).count()
    }
}

fn run_session(cfg: SinkConfig, input: &[u8]) -> Sim {
    let mut s = Sim::new(cfg);
    s.feed(input).eof();
    s
}

// ---------------------------------------------------------------------------
// uploads that land

#[test]
fn single_file() {
    let s = run_session(
        cfg(args(false, false, false, ".")),
        b"C0644 5 a.txt\nhello\0",
    );
    assert_eq!(s.sent, b"\0\0\0");
    assert_eq!(s.landed_paths(), ["a.txt"]);
    assert_eq!(s.landed[0].1, b"hello");
    assert_eq!(s.landed[0].0.mode, 0o644);
    assert_eq!(s.landed[0].0.mtime, None);
    assert_eq!(s.commits, 1);
    assert_eq!(s.exit, Some(0));
    assert!(s.stderr.is_empty() && s.aborted.is_empty());
    assert_eq!(s.actions_after_exit, 0);
}

#[test]
fn several_files_and_an_empty_one() {
    let s = run_session(
        cfg(args(false, false, true, ".")),
        b"C0644 3 a.bin\nabc\0C0600 0 empty\n\0C0755 2 my report (final).txt\nxy\0",
    );
    assert_eq!(s.acks(), 1 + 3 * 2);
    assert_eq!(
        s.landed_paths(),
        ["a.bin", "empty", "my report (final).txt"]
    );
    assert_eq!(s.landed[1].1, b"");
    assert_eq!(s.landed[1].0.mode, 0o600);
    assert_eq!(s.landed[2].0.mode, 0o755);
    assert_eq!(s.commits, 1, "one group commit");
    assert_eq!(s.exit, Some(0));
}

#[test]
fn byte_at_a_time_is_the_same_as_one_chunk() {
    let input = b"T1500000000 0 1500000001 0\nC0644 5 a\nhello\0D0755 0 d\nC0640 3 b\nxyz\0E\n";
    let whole = run_session(cfg(args(true, true, false, ".")), input);
    let mut s = Sim::new(cfg(args(true, true, false, ".")));
    for b in input {
        s.feed(&[*b]);
    }
    s.eof();
    assert_eq!(s.sent, whole.sent);
    assert_eq!(s.landed, whole.landed);
    assert_eq!(s.exit, Some(0));
    assert_eq!(s.landed_paths(), ["a", "d/b"]);
}

#[test]
fn recursive_tree_with_times_and_modes() {
    // What `scp -r -p tree host:` sends (OpenSSH rsource): T before D and C.
    let input = b"T1500000000 0 1500000000 0\nD0755 0 tree\n\
T1500000000 0 1500000001 0\nC0640 4 a.txt\nAAAA\0\
T1 0 1 0\nD0755 0 sub\nT1500000100 0 1500000101 0\nC0644 2 f\nff\0\
D0755 0 deeper\nT1500000200 0 7 0\nC0600 0 g\n\0C0755 5 h h\nhhhhh\0E\nE\n\
D0700 0 emptydir\nE\nE\n";
    let s = run_session(cfg(args(true, true, false, ".")), input);
    assert_eq!(s.messages(), vec![]);
    assert_eq!(
        s.landed_paths(),
        [
            "tree/a.txt",
            "tree/sub/f",
            "tree/sub/deeper/g",
            "tree/sub/deeper/h h"
        ]
    );
    let t = |i: usize| (s.landed[i].0.mtime, s.landed[i].0.atime);
    assert_eq!(t(0), (Some(1_500_000_000), Some(1_500_000_001)));
    assert_eq!(t(1), (Some(1_500_000_100), Some(1_500_000_101)));
    assert_eq!(t(2), (Some(1_500_000_200), Some(7)));
    assert_eq!(t(3), (None, None), "a T line applies to the next item only");
    assert_eq!(s.landed[0].0.mode, 0o640);
    assert_eq!(s.exit, Some(0));
}

#[test]
fn times_before_a_directory_do_not_leak_into_its_first_file() {
    let s = run_session(
        cfg(args(true, true, false, ".")),
        b"T5 0 6 0\nD0755 0 d\nC0644 1 f\nx\0E\n",
    );
    assert_eq!(s.landed[0].0.mtime, None);
    assert_eq!(s.exit, Some(0));
}

#[test]
fn target_naming() {
    // (target, existing dir in the sender's view, -d, -r, input, expected paths)
    type Case = (
        &'static str,
        bool,
        bool,
        bool,
        &'static [u8],
        &'static [&'static str],
    );
    let one = b"C0644 1 f.dat\nx\0";
    let two = b"C0644 1 a\nx\0C0644 1 b\ny\0";
    let tree = b"D0755 0 tree\nC0644 1 g.dat\nx\0E\n";
    let cases: &[Case] = &[
        (".", false, false, false, one, &["f.dat"]),
        ("", false, false, false, one, &["f.dat"]),
        ("/", false, false, false, one, &["f.dat"]),
        ("~", false, false, false, one, &["f.dat"]),
        ("renamed.dat", false, false, false, one, &["renamed.dat"]),
        (
            "x/renamed.dat",
            false,
            false,
            false,
            one,
            &["x/renamed.dat"],
        ),
        ("some/dir/", false, false, false, one, &["some/dir/f.dat"]),
        ("some/dir/.", false, false, false, one, &["some/dir/f.dat"]),
        ("existing", true, false, false, one, &["existing/f.dat"]),
        ("many", false, true, false, two, &["many/a", "many/b"]),
        // Without -d, only the first top-level item takes the target's name.
        ("t", false, false, false, two, &["t", "t/b"]),
        ("new", false, false, true, tree, &["new/g.dat"]),
        ("new", true, false, true, tree, &["new/tree/g.dat"]),
        (
            "/abs/./x/../dir/",
            false,
            false,
            true,
            tree,
            &["abs/dir/tree/g.dat"],
        ),
    ];
    for (target, existing, d, r, input, want) in cases {
        let c = SinkConfig::new(args(*r, false, *d, target), *existing, u64::MAX);
        let s = run_session(c, input);
        assert_eq!(s.landed_paths(), *want, "target {target:?}");
        assert_eq!(s.exit, Some(0), "target {target:?}");
    }
}

#[test]
fn bad_target_is_refused_before_the_first_ack() {
    for t in ["..", "../x", "a/../../x", "x/\u{1b}[2J"] {
        let s = run_session(cfg(args(false, false, false, t)), b"C0644 1 f\nx\0");
        assert_eq!(s.sent.first(), Some(&2), "{t:?}");
        let m = s.messages();
        assert_eq!(m.len(), 1);
        assert!(!m[0].1.chars().any(char::is_control), "{m:?}");
        assert_eq!(s.exit, Some(1));
        assert!(s.started.is_empty());
    }
}

#[test]
fn libssh2_eof_instead_of_the_final_status_byte() {
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.feed(b"C0644 5 a.txt\nhello");
    assert!(s.sink.wants_input());
    s.eof();
    assert_eq!(s.sent, b"\0\0", "no ack after EOF");
    assert_eq!(s.landed_paths(), ["a.txt"]);
    assert_eq!(s.exit, Some(0));
}

#[test]
fn eof_at_once_is_a_clean_empty_session() {
    let s = run_session(cfg(args(false, false, false, ".")), b"");
    assert_eq!(s.sent, b"\0");
    assert_eq!(s.exit, Some(0));
    assert_eq!(s.commits, 0);
}

// ---------------------------------------------------------------------------
// hostile or broken senders

#[test]
fn hostile_headers_are_fatal() {
    const NAME: &[&str] = &["name", "path"];
    const SIZE: &[&str] = &["size"];
    const MODE: &[&str] = &["mode"];
    const PROTO: &[&str] = &["protocol", "unexpected", "unknown"];
    let cases: &[(bool, &[u8], &[&str])] = &[
        (false, b"C0644 5 ../evil\nhello\0", NAME),
        (false, b"C0644 5 ../../../../tmp/evil\nhello\0", NAME),
        (false, b"C0644 5 /tmp/evil\nhello\0", NAME),
        (false, b"C0644 5 a/evil\nhello\0", NAME),
        (false, b"C0644 5 .\nhello\0", NAME),
        (false, b"C0644 5 ..\nhello\0", NAME),
        (false, b"C0644 5 \nhello\0", NAME),
        (false, b"C0644 5 evil\x01x\nhello\0", NAME),
        (false, b"C0644 5 evil\x1b[2J\nhello\0", NAME),
        (false, b"C0644 -5 evil\nhello\0", SIZE),
        (false, b"C0644 5x evil\nhello\0", SIZE),
        (false, b"C0644 99999999999999999999999 evil\nhello\0", SIZE),
        (false, b"C9999 5 evil\nhello\0", MODE),
        (false, b"Cxyz 5 evil\nhello\0", MODE),
        (false, b"Qgarbage\nhello\0", PROTO),
        (
            false,
            b"D0755 0 evil\nC0644 5 x\nhello\0E\n",
            &["director", "-r"],
        ),
        (false, b"Tabc 0 0 0\nC0644 5 evil\nhello\0", &["time"]),
        (true, b"D0755 0 ..\nC0644 5 evil\nhello\0E\n", NAME),
        (true, b"D0755 0 a/../../x\nC0644 5 evil\nhello\0E\n", NAME),
        (true, b"E\n", &["end of directory"]),
        (true, b"D0755 0 d\nE\nE\n", &["end of directory"]),
        (false, b"\n", &["empty"]),
    ];
    for (r, input, words) in cases {
        let s = run_session(cfg(args(*r, false, false, ".")), input);
        let ctx = String::from_utf8_lossy(input);
        assert_eq!(s.sent.first(), Some(&0), "{ctx}: starts with \\0");
        let m = s.messages();
        let fatal: Vec<_> = m.iter().filter(|(k, _)| *k == 2).collect();
        assert_eq!(fatal.len(), 1, "{ctx}: one fatal line: {m:?}");
        let text = fatal[0].1.to_lowercase();
        assert!(
            words.iter().any(|w| text.contains(w)),
            "{ctx}: {text:?} should mention one of {words:?}"
        );
        assert!(!text.chars().any(char::is_control), "{ctx}: {text:?}");
        assert!(s.landed.is_empty(), "{ctx}: nothing lands");
        assert_eq!(s.exit, Some(1), "{ctx}");
        assert!(
            s.logs.iter().any(|l| matches!(l, LogEvent::Fatal { .. })),
            "{ctx}: logged"
        );
        assert_eq!(s.actions_after_exit, 0);
    }
}

#[test]
fn overlong_header_line_is_fatal_even_unterminated() {
    let mut input = b"C0644 5 evil".to_vec();
    input.extend(std::iter::repeat_n(b'a', 100_000));
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.feed(&input);
    assert_eq!(s.exit, Some(1), "refused before the line ends");
    assert!(s.messages()[0].1.contains("too long"));
}

#[test]
fn oversized_file_is_a_warning_and_the_session_goes_on() {
    let c = SinkConfig::new(args(false, false, false, "."), false, 10);
    let s = run_session(c, b"C0644 11 big\nC0644 10 ok\n0123456789\0");
    let m = s.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, 1);
    assert!(m[0].1.starts_with("big: file too large"), "{m:?}");
    assert_eq!(s.started.len(), 1, "the oversized file is never started");
    assert_eq!(s.landed_paths(), ["ok"]);
    assert_eq!(s.exit, Some(1), "a refused file makes the exit status 1");
}

#[test]
fn spool_refusals_warning_and_fatal() {
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.refuse = Some(("full".into(), "no space: ...".into(), false));
    s.feed(b"C0644 1 full\nC0644 1 ok\nx\0").eof();
    assert_eq!(s.messages(), vec![(1, "full: no space: ...".to_string())]);
    assert_eq!(s.landed_paths(), ["ok"]);
    assert_eq!(s.exit, Some(1));

    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.refuse = Some(("b".into(), "spool error: EIO".into(), true));
    s.feed(b"C0644 1 a\nx\0C0644 1 b\n");
    assert_eq!(s.exit, Some(1));
    let m = s.messages();
    assert_eq!(
        m,
        vec![(2, "b: cannot store file: spool error: EIO".to_string())]
    );
    assert!(s.landed.is_empty());
    assert!(s.logs.contains(&LogEvent::Dropped {
        path: "a".into(),
        reason: "b: cannot store file: spool error: EIO".into()
    }));
}

#[test]
fn truncated_data_then_eof() {
    let s = run_session(cfg(args(false, false, false, ".")), b"C0644 5 evil\nabc");
    assert_eq!(s.sent, b"\0\0");
    assert_eq!(s.aborted, ["evil"]);
    assert!(s.landed.is_empty());
    assert_eq!(s.exit, Some(1));
    assert!(s.logs.contains(&LogEvent::Aborted {
        path: "evil".into(),
        received: 3,
        size: 5
    }));
}

#[test]
fn eof_inside_a_directory_or_a_header_line_fails() {
    let s = run_session(
        cfg(args(true, false, false, ".")),
        b"D0755 0 d\nC0644 1 f\nx\0",
    );
    assert_eq!(s.exit, Some(1));
    assert!(s.landed.is_empty());
    assert!(
        s.stderr.iter().any(|l| l.contains("\"d/f\"")),
        "{:?}",
        s.stderr
    );

    // EOF in the middle of a header line is not a clean end.
    for input in [&b"C0644 1 f"[..], b"T1 0 1 0", b"C0644 1 a\nx\0E"] {
        let s = run_session(cfg(args(false, false, false, ".")), input);
        assert_eq!(s.exit, Some(1), "{input:?}");
        assert!(s.landed.is_empty(), "{input:?}");
        let m = s.messages();
        assert!(
            m.last().unwrap().1.contains("middle of a header line"),
            "{m:?}"
        );
    }
}

#[test]
fn source_error_lines_between_files() {
    // A warning between files (e.g. "not a regular file") expects no reply.
    let s = run_session(
        cfg(args(false, false, false, ".")),
        b"\x01scp: /dev/x: not a regular file\nC0644 1 a\nx\0",
    );
    assert_eq!(s.sent, b"\0\0\0");
    assert_eq!(s.landed_paths(), ["a"]);
    assert_eq!(s.exit, Some(1));
    assert!(s.logs.contains(&LogEvent::SourceError {
        path: None,
        fatal: false,
        message: "scp: /dev/x: not a regular file".into()
    }));
    // A fatal one ends the session; nothing staged lands.
    let s = run_session(
        cfg(args(false, false, false, ".")),
        b"C0644 1 a\nx\0\x02scp: gave up\nC0644 1 b\ny\0",
    );
    assert_eq!(s.exit, Some(1));
    assert!(s.landed.is_empty());
    assert!(s.stderr.iter().any(|l| l.contains("\"a\"")));
}

/// Issue 7: the source's read failed mid-file (it shrank). OpenSSH pads the
/// data with zeros to the announced size, sends `\x01scp: <name>: <error>\n`
/// instead of `\0` and waits for our reply: we must answer at once.
#[test]
fn source_read_error_mid_file_is_answered_at_once() {
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.feed(b"C0644 8 big.bin\nabc\0\0\0\0\0\x01scp: /src/big.bin: Broken pipe\n");
    // No EOF yet: the sender is waiting in response().
    let m = s.messages();
    assert_eq!(m.len(), 1, "a reply without waiting for EOF: {:?}", s.sent);
    assert_eq!(m[0].0, 1);
    assert!(m[0].1.starts_with("big.bin: not stored"), "{m:?}");
    assert!(m[0].1.contains("Broken pipe"));
    assert_eq!(s.aborted, ["big.bin"]);
    assert!(s.logs.contains(&LogEvent::SourceError {
        path: Some("big.bin".into()),
        fatal: false,
        message: "scp: /src/big.bin: Broken pipe".into()
    }));
    // OpenSSH's source goes on with its next file; then EOF: exit 1.
    s.feed(b"C0644 2 next\nok\0").eof();
    assert_eq!(s.landed_paths(), ["next"]);
    assert_eq!(s.exit, Some(1));

    // The message split across packets, then EOF at once.
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.feed(b"C0644 2 a\n\0\0\x01scp: a: Inp")
        .feed(b"ut/output error\n")
        .eof();
    assert_eq!(s.exit, Some(1));
    assert!(s.landed.is_empty());
    assert_eq!(s.messages().len(), 1);
    // A fatal status after the data ends the session.
    let s = run_session(
        cfg(args(false, false, false, ".")),
        b"C0644 1 a\nx\x02boom\n",
    );
    assert_eq!(s.exit, Some(1));
    assert!(s.landed.is_empty());
}

/// Issue 8: more data than announced, or garbage where the status byte belongs.
#[test]
fn garbage_status_byte_is_explained() {
    for input in [
        &b"C0644 5 a.txt\nhello world\0"[..],
        b"C0644 5 a.txt\nhelloX",
        b"C0644 0 a.txt\n\n",
    ] {
        let mut s = Sim::new(cfg(args(false, false, false, ".")));
        s.feed(input);
        assert_eq!(s.exit, Some(1), "ends at once: {input:?}");
        let m = s.messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, 2);
        assert!(m[0].1.contains("status byte"), "{m:?}");
        assert!(
            m[0].1.contains("more data than the header announced"),
            "{m:?}"
        );
        assert!(m[0].1.contains("a.txt"));
        assert!(!m[0].1.chars().any(char::is_control));
        assert_eq!(s.aborted, ["a.txt"]);
        assert!(s.landed.is_empty());
        assert!(s.logs.iter().any(|l| matches!(l, LogEvent::Fatal { .. })));
    }
}

/// Issue 9: a failure after files were acked: each dropped file is logged and
/// named to the sender.
#[test]
fn dropped_files_are_logged_and_named() {
    let s = run_session(
        cfg(args(false, false, false, ".")),
        b"C0644 1 first\nx\0C0644 1 \"quoted\" name\ny\0Qgarbage\n",
    );
    assert_eq!(s.exit, Some(1));
    assert!(s.landed.is_empty());
    let dropped: Vec<_> = s
        .logs
        .iter()
        .filter_map(|l| match l {
            LogEvent::Dropped { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, ["first", "\"quoted\" name"]);
    assert_eq!(s.stderr.len(), 1, "{:?}", s.stderr);
    assert!(s.stderr[0].contains("2 file(s)"));
    assert!(s.stderr[0].contains("\"first\""));
    assert!(
        s.stderr[0].contains(r#""\"quoted\" name""#),
        "{:?}",
        s.stderr
    );

    // Many files: every one logged, the stderr line is bounded.
    let mut input = vec![];
    for i in 0..50 {
        input.extend_from_slice(format!("C0644 1 f{i}\nx\0").as_bytes());
    }
    input.extend_from_slice(b"C0644 1 last\nxy");
    let s = run_session(cfg(args(false, false, false, ".")), &input);
    assert_eq!(
        s.logs
            .iter()
            .filter(|l| matches!(l, LogEvent::Dropped { .. }))
            .count(),
        50
    );
    assert!(s.stderr.iter().any(|l| l.contains("and 30 more")));
    assert!(
        s.logs.contains(&LogEvent::Aborted {
            path: "last".into(),
            received: 2,
            size: 1
        }) || s.messages().iter().any(|(k, _)| *k == 2)
    );
}

/// A file that cannot be written (the spool filled) is refused with a warning
/// once its data has arrived: the rest of its bytes are read and dropped, so the
/// sender, which reads nothing until it has sent the whole file, reads the
/// reason instead of losing the connection; the session goes on.
#[test]
fn write_and_finish_failures_drain_and_warn() {
    // the write fails once the whole file is in (the sender waits for the answer)
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.fail_write_after = Some(1);
    s.feed(b"C0644 1 a\nx\0C0644 6 b\nab")
        .feed(b"cd")
        .feed(b"ef\0")
        .eof();
    assert_eq!(s.exit, Some(1));
    assert_eq!(
        s.messages(),
        vec![(
            1,
            "a: not stored: cannot write it: disk on fire".to_string()
        )]
    );
    assert_eq!(s.aborted, ["a"]);
    assert_eq!(s.landed_paths(), ["b"]);

    // the write fails in the middle: the rest is drained (no more writes), then
    // the warning; the next file lands
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.fail_write_after = Some(1);
    s.feed(b"C0644 6 b\nab");
    assert!(
        s.messages().is_empty(),
        "nothing said before the data is in"
    );
    s.feed(b"cd").feed(b"ef");
    assert!(s.messages().is_empty());
    s.feed(b"\0C0644 1 c\nz\0").eof();
    assert_eq!(
        s.messages(),
        vec![(
            1,
            "b: not stored: cannot write it: disk on fire".to_string()
        )]
    );
    assert_eq!(s.writes, 2, "nothing of the drained bytes is written");
    assert_eq!(s.landed_paths(), ["c"]);
    assert_eq!(s.exit, Some(1));

    // far from the end of a huge file: the session ends at once
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.fail_write_after = Some(1);
    s.feed(format!("C0644 {} big\nab", DRAIN_MAX + 10).as_bytes());
    assert_eq!(s.exit, Some(1));
    assert_eq!(s.messages()[0].0, 2);

    // the sender gives up (EOF) while its rest is drained
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.fail_write_after = Some(1);
    s.feed(b"C0644 6 b\nab").eof();
    assert_eq!(s.exit, Some(1));
    assert!(s
        .logs
        .iter()
        .any(|l| matches!(l, LogEvent::Aborted { path, .. } if path == "b")));

    // staging fails: a warning, and what was staged before still lands
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.feed(b"C0644 1 a\nx\0");
    s.fail_finish = true;
    s.feed(b"C0644 1 b\ny\0");
    s.fail_finish = false;
    s.feed(b"C0644 1 c\nz\0").eof();
    assert_eq!(s.exit, Some(1));
    assert_eq!(
        s.messages(),
        vec![(1, "b: not stored: no record".to_string())]
    );
    assert_eq!(s.landed_paths(), ["a", "c"]);
}

#[test]
fn group_commit_thresholds() {
    let mut c = cfg(args(false, false, false, "."));
    c.group_max_files = 2;
    let s = run_session(c.clone(), b"C0644 1 a\nx\0C0644 1 b\ny\0C0644 1 c\nz\0");
    assert_eq!(s.commits, 2, "one early commit, one at the end");
    assert_eq!(s.landed_paths(), ["a", "b", "c"]);
    assert_eq!(s.sent, b"\0\0\0\0\0\0\0");
    assert_eq!(s.exit, Some(0));

    let mut c = cfg(args(false, false, false, "."));
    c.group_max_bytes = 10;
    let s = run_session(c, b"C0644 6 a\nxxxxxx\0C0644 6 b\nyyyyyy\0C0644 1 c\nz\0");
    assert_eq!(s.commits, 2);
    assert_eq!(s.exit, Some(0));

    // The early commit succeeded, a later failure drops only what followed it.
    let mut c = cfg(args(false, false, false, "."));
    c.group_max_files = 2;
    let s = run_session(c, b"C0644 1 a\nx\0C0644 1 b\ny\0C0644 1 c\nz\0Qbad\n");
    assert_eq!(s.landed_paths(), ["a", "b"]);
    assert_eq!(s.exit, Some(1));
    let dropped: Vec<_> = s
        .logs
        .iter()
        .filter(|l| matches!(l, LogEvent::Dropped { .. }))
        .collect();
    assert_eq!(dropped.len(), 1);

    // A failed commit: everything staged is named as not stored.
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.fail_commit = true;
    s.feed(b"C0644 1 a\nx\0").eof();
    assert_eq!(s.exit, Some(1));
    assert!(s.stderr.iter().any(|l| l.contains("could not store")));
    assert!(s.stderr.iter().any(|l| l.contains("\"a\"")));
    assert!(s
        .logs
        .iter()
        .any(|l| matches!(l, LogEvent::Dropped { path, .. } if path == "a")));
}

#[test]
fn send_failure_ends_the_session() {
    let mut s = Sim::new(cfg(args(false, false, false, ".")));
    s.feed(b"C0644 1 a\nx\0C0644 5 b\nab");
    s.sink.handle(Event::SendFailed);
    s.run();
    assert_eq!(s.exit, Some(1));
    assert!(s.sink.is_done() && !s.sink.wants_input());
    assert!(s.logs.contains(&LogEvent::ConnectionLost));
    assert!(s
        .logs
        .iter()
        .any(|l| matches!(l, LogEvent::Dropped { path, .. } if path == "a")));
    // Events after the end change nothing.
    s.feed(b"C0644 1 c\nx\0").eof();
    assert_eq!(s.actions_after_exit, 0);
}

/// Issue 6: a name that is not UTF-8 is refused with a warning naming it, escaped.
#[test]
fn non_utf8_names_are_refused_clearly() {
    let s = run_session(
        cfg(args(true, false, false, ".")),
        // The source skips a refused directory: no E follows.
        b"C0644 3 caf\xe9.txt\nC0644 2 ok\nok\0D0755 0 d\xff\"\n",
    );
    let m = s.messages();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].0, 1);
    assert!(
        m[0].1
            .contains(r#"file name "caf\xe9.txt" is not valid UTF-8"#),
        "{m:?}"
    );
    assert!(m[1].1.contains(r#""d\xff\"""#), "{m:?}");
    assert_eq!(s.landed_paths(), ["ok"]);
    assert_eq!(s.exit, Some(1));
}

/// Found by the `scp_sink` fuzz target (its own check was wrong, not the sink):
/// a file may be named `~`. Its path is "~", which names it in the absolute form
/// the node answers with ("/~"); a relative "~" means the root, by design.
#[test]
fn a_file_named_tilde_is_stored_under_its_name() {
    let s = run_session(cfg(args(false, false, false, ".")), b"C0600 3 ~\nabc\0");
    assert_eq!(s.landed_paths(), ["~"]);
    assert_eq!(s.exit, Some(0));
    assert_eq!(vpath::resolve("", "/~").as_deref(), Ok("~"));
    let s = run_session(
        cfg(args(true, false, false, ".")),
        b"D0755 0 ~\nC0600 1 ~\nx\0E\n",
    );
    assert_eq!(s.landed_paths(), ["~/~"]);
    assert_eq!(vpath::resolve("", "/~/~").as_deref(), Ok("~/~"));
}

// ---------------------------------------------------------------------------
// fuzz

const FRAGMENTS: &[&[u8]] = &[
    b"C0644 5 a\n",
    b"C0644 0 e\n",
    b"C0755 3 sub dir\n",
    b"hello",
    b"\0",
    b"\0\0\0",
    b"D0755 0 d\n",
    b"D0755 0 ..\n",
    b"D0755 0 /\n",
    b"E\n",
    b"T1 0 2 0\n",
    b"\x01scp: x: Broken pipe\n",
    b"\x02scp: fatal\n",
    b"\x01",
    b"C0644 3 ..\n",
    b"C0644 3 ../../x\n",
    b"C0644 2 /etc/x\n",
    b"C0644 1 \xff\n",
    b"C0644 1 a\x1bb\n",
    b"C0644 18446744073709551615 huge\n",
    b"\n",
    b"X",
];

#[test]
fn fuzz_never_panics_and_never_escapes_the_root() {
    let mut rng = XorShift(0x05ca_1ab1_e0dd_ba11);
    let targets = [".", "", "x", "a/b/", "../x", "/", "~/z", "t/.", "d/../e"];
    for round in 0..10_000 {
        let target = targets[(rng.next() % targets.len() as u64) as usize];
        let mut c = SinkConfig::new(
            args(
                rng.next() & 1 == 0,
                rng.next() & 1 == 0,
                rng.next() & 3 == 0,
                target,
            ),
            rng.next() & 3 == 0,
            if rng.next() & 3 == 0 { 4 } else { u64::MAX },
        );
        c.group_max_files = 1 + (rng.next() % 4) as usize;
        c.group_max_bytes = 1 + rng.next() % 16;
        let mut s = Sim::new(c);
        if rng.next().is_multiple_of(8) {
            s.refuse = Some(("a".into(), "no".into(), rng.next() & 1 == 0));
        }
        if rng.next().is_multiple_of(8) {
            s.fail_write_after = Some(1 + (rng.next() % 3) as usize);
        }
        s.fail_finish = rng.next().is_multiple_of(16);
        s.fail_commit = rng.next().is_multiple_of(16);
        let mut stream = Vec::new();
        for _ in 0..(rng.next() % 12) {
            if rng.next().is_multiple_of(5) {
                stream.extend(rng.bytes(12, b"CDTE0 \n\0\x01a"));
            } else {
                stream.extend_from_slice(FRAGMENTS[(rng.next() % FRAGMENTS.len() as u64) as usize]);
            }
        }
        let mut i = 0;
        while i < stream.len() {
            let n = 1 + (rng.next() % 9) as usize;
            let end = (i + n).min(stream.len());
            s.feed(&stream[i..end]);
            i = end;
            if rng.next().is_multiple_of(200) {
                s.sink.handle(Event::SendFailed);
                s.run();
            }
        }
        s.eof();
        let ctx = format!("round {round}, target {target:?}, stream {stream:?}");
        assert!(s.exit.is_some(), "{ctx}: the session ends at EOF");
        assert!(s.sink.is_done() && !s.sink.wants_input(), "{ctx}");
        assert_eq!(s.actions_after_exit, 0, "{ctx}");
        for f in &s.started {
            assert_eq!(
                vpath::resolve("", &f.path).as_deref(),
                Ok(f.path.as_str()),
                "{ctx}: path {:?} is not a normalized path inside the root",
                f.path
            );
            assert!(!f.path.is_empty(), "{ctx}");
            assert!(f.mode <= 0o777);
        }
        if s.exit == Some(0) {
            assert!(!s.sink.has_failed());
            assert!(s.messages().is_empty(), "{ctx}");
            assert_eq!(s.landed.len(), s.started.len(), "{ctx}");
        }
        // every message line is clean (messages() also checks the framing)
        for (_, m) in s.messages() {
            assert!(!m.chars().any(char::is_control), "{ctx}: {m:?}");
        }
        for l in &s.stderr {
            assert!(!l.chars().any(char::is_control), "{ctx}: {l:?}");
        }
    }
}

#[test]
fn directory_nesting_is_bounded_before_memory_grows() {
    // 4,000 levels of short names: each level past MAX_DEPTH is refused with a
    // clear reason (OpenSSH's source then skips that subtree), and the stack of
    // paths (quadratic in depth) never grows past the limit.
    let mut input = b"C0644 3 top\nabc\0".to_vec();
    for _ in 0..4000 {
        input.extend_from_slice(b"D0755 0 d\n");
    }
    input.extend_from_slice(b"C0644 4 deep\nabcd\0");
    input.extend_from_slice(&b"E\n".repeat(crate::core::naming::MAX_DEPTH));
    let mut s = Sim::new(cfg(args(true, false, false, ".")));
    s.feed(&input);
    assert!(s.sink.stack.len() <= crate::core::naming::MAX_DEPTH);
    s.eof();
    assert_eq!(s.exit, Some(1));
    let msg = &s.messages()[0].1;
    assert!(msg.contains("nested too deep"), "{msg}");
    assert!(
        msg.contains(&crate::core::naming::MAX_DEPTH.to_string()),
        "{msg}"
    );
    // The shallow file still lands; the file sent at the deepest accepted
    // level goes on to the spool's own depth check (core::naming).
    let landed = s.landed_paths();
    assert_eq!(landed[0], "top", "{landed:?}");
    assert!(landed
        .iter()
        .all(|p| p.split('/').count() <= crate::core::naming::MAX_DEPTH + 1));
}
