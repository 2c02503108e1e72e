//! The SCP sink state machine (`core::scp::sink`) fed any byte stream, cut into
//! any chunks, with every effect answered by the fuzzer (admit / refuse, write
//! ok / failed, finish ok / failed, commit ok / failed, a lost connection).
//!
//! Input: `[flags] [params] [n] [n control bytes] [stream...]`. The control
//! bytes choose chunk sizes and outcomes, in order (0 once used up: success).
//!
//! Asserts (with the seeded loop in `src/core/scp/sink_tests.rs`): no panic;
//! every file it asks to start is a normalized path inside the sender's root,
//! non-empty, at most `vpath::MAX_PATH` bytes, every component a valid name,
//! mode within 0o777, size within `max_file_size`; one file at a time, written
//! only once admitted, never more bytes than its header announced, finished
//! only when complete; every message line sent is framed and free of control
//! characters; the actions queued by one event stay bounded; nothing after
//! `Exit`, exactly one `Exit` once the stream ends.
#![no_main]
use bytes::Bytes;
use ingestd::core::scp::exec::ScpArgs;
use ingestd::core::scp::frame::MAX_LINE;
use ingestd::core::scp::sink::{Action, Event, Sink, SinkConfig, MAX_LISTED};
use ingestd::core::vpath::{self, MAX_PATH};
use libfuzzer_sys::fuzz_target;

const TARGETS: &[&str] = &[
    ".",
    "",
    "x",
    "a/b/",
    "../x",
    "/",
    "~/z",
    "t/.",
    "d/../e",
    "/abs/dir/",
];

/// The fuzzer's choices, in order; 0 once used up.
struct Ctl<'a>(&'a [u8]);

impl Ctl<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

struct File {
    size: u64,
    written: u64,
    admitted: bool,
}

struct Sim<'a> {
    sink: Sink,
    ctl: Ctl<'a>,
    max_file_size: u64,
    file: Option<File>,
    exit: Option<u32>,
    /// Actions handled since the last event from outside.
    burst: usize,
    burst_limit: usize,
}

/// A message line the sink sends: `\x01`/`\x02`, `scp: `, clean text, `\n`.
fn check_send(b: &[u8]) {
    if b.iter().all(|&c| c == 0) {
        return;
    }
    assert!(matches!(b[0], 1 | 2), "{b:?}");
    assert_eq!(b.last(), Some(&b'\n'), "{b:?}");
    let msg = std::str::from_utf8(&b[1..b.len() - 1]).expect("UTF-8 message");
    assert!(msg.starts_with("scp: "), "{msg:?}");
    assert!(!msg.chars().any(char::is_control), "{msg:?}");
    assert!(
        b.len() <= 2 * (MAX_PATH + MAX_LINE) + 1024,
        "message of {} bytes",
        b.len()
    );
}

impl Sim<'_> {
    fn handle(&mut self, ev: Event) {
        self.sink.handle(ev);
        self.run();
    }

    fn run(&mut self) {
        while let Some(a) = self.sink.poll_action() {
            self.burst += 1;
            assert!(
                self.burst <= self.burst_limit,
                "{} actions queued by one event (limit {})",
                self.burst,
                self.burst_limit
            );
            self.exec(a);
        }
    }

    fn exec(&mut self, a: Action) {
        assert!(self.exit.is_none(), "an action after Exit: {a:?}");
        match a {
            Action::Send(b) => check_send(&b),
            Action::Stderr(s) => {
                assert!(!s.chars().any(char::is_control), "{s:?}");
                assert!(
                    s.len() <= 64 * 1024 + MAX_LISTED * (MAX_PATH + 8),
                    "{}",
                    s.len()
                );
            }
            Action::StartFile(f) => {
                assert!(self.file.is_none(), "two files at once: {f:?}");
                assert!(!f.path.is_empty(), "{f:?}");
                assert!(f.path.len() <= MAX_PATH, "{} bytes", f.path.len());
                // Checked in the absolute form (a relative "~" means the root,
                // by design; a file may well be named "~").
                assert_eq!(
                    vpath::resolve("", &format!("/{}", f.path)).as_deref(),
                    Ok(f.path.as_str()),
                    "not a normalized path inside the root"
                );
                for c in f.path.split('/') {
                    assert!(vpath::validate_name(c).is_ok(), "{:?}", f.path);
                }
                assert!(f.mode <= 0o777, "{f:?}");
                assert!(f.size <= self.max_file_size, "{f:?}");
                match self.ctl.next() % 8 {
                    6 => self.sink.handle(Event::Refused {
                        reason: "no space".into(),
                        fatal: false,
                    }),
                    7 => self.sink.handle(Event::Refused {
                        reason: "EIO".into(),
                        fatal: true,
                    }),
                    _ => {
                        self.file = Some(File {
                            size: f.size,
                            written: 0,
                            admitted: true,
                        });
                        self.sink.handle(Event::Admitted);
                    }
                }
            }
            Action::Write(b) => {
                let f = self.file.as_mut().expect("a write without a file");
                assert!(f.admitted);
                assert!(!b.is_empty(), "an empty write");
                f.written += b.len() as u64;
                assert!(
                    f.written <= f.size,
                    "{} bytes written to a file announced with {}",
                    f.written,
                    f.size
                );
                if self.ctl.next() % 16 == 15 {
                    self.sink.handle(Event::WriteFailed("disk on fire".into()));
                }
            }
            Action::FinishFile => {
                let f = self.file.take().expect("finish without a file");
                assert_eq!(f.written, f.size, "finished short");
                if self.ctl.next() % 16 == 15 {
                    self.sink.handle(Event::FinishFailed("no record".into()));
                } else {
                    self.sink.handle(Event::Finished);
                }
            }
            Action::AbortFile => {
                assert!(self.file.take().is_some(), "abort without a file");
            }
            Action::Commit => {
                assert!(self.file.is_none(), "commit with a file open");
                if self.ctl.next() % 8 == 7 {
                    self.sink.handle(Event::CommitFailed("fsync: EIO".into()));
                } else {
                    self.sink.handle(Event::Committed);
                }
            }
            Action::Log(_) => {}
            Action::Exit(c) => {
                assert!(c <= 1);
                self.exit = Some(c);
                self.file = None;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, params, n, rest @ ..] = data else {
        return;
    };
    let n = (*n as usize).min(rest.len());
    let (ctl, stream) = rest.split_at(n);
    let args = ScpArgs {
        recursive: flags & 1 != 0,
        preserve: flags & 2 != 0,
        target_should_be_dir: flags & 4 != 0,
        verbose: flags & 8 != 0,
        target: TARGETS[(params % 16) as usize % TARGETS.len()].into(),
    };
    let max_file_size = if flags & 32 != 0 {
        (params >> 4) as u64
    } else {
        u64::MAX
    };
    let mut cfg = SinkConfig::new(args, flags & 16 != 0, max_file_size);
    if flags & 64 != 0 {
        cfg.group_max_files = 1 + (params & 3) as usize;
        cfg.group_max_bytes = 1 + (params >> 2) as u64;
    }
    // One event may queue: one action per input byte at most (an ack per line,
    // one write per chunk), plus the end of a session (a log line per staged
    // file, a few messages).
    let slack = cfg.group_max_files.min(stream.len() + 1) + 32;
    let mut sim = Sim {
        sink: Sink::new(cfg),
        ctl: Ctl(ctl),
        max_file_size,
        file: None,
        exit: None,
        burst: 0,
        burst_limit: 0,
    };
    sim.burst_limit = slack;
    sim.run();
    let mut i = 0;
    while i < stream.len() {
        let c = sim.ctl.next();
        if c == 0xff {
            sim.burst = 0;
            sim.handle(Event::SendFailed);
        }
        let len = if c == 0 { stream.len() } else { c as usize };
        let end = (i + len).min(stream.len());
        sim.burst = 0;
        sim.burst_limit = 2 * (end - i) + slack;
        sim.handle(Event::Data(Bytes::copy_from_slice(&stream[i..end])));
        i = end;
    }
    sim.burst = 0;
    sim.burst_limit = slack;
    sim.handle(Event::Eof);
    assert!(sim.exit.is_some(), "the session ends at EOF");
    assert!(sim.sink.is_done() && !sim.sink.wants_input());
    assert!(sim.file.is_none());
});
