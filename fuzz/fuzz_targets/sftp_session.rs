//! The SFTP session core (`core::sftp::session`) fed raw channel bytes, cut into
//! any chunks, framed by its `Decoder` and driven as `ingest::ssh::sftp` drives
//! it (`request`, `side_effects`, `done` until a reply; `end` at EOF), with every
//! effect's outcome chosen by the fuzzer.
//!
//! Input: `[flags] [n] [n control bytes] [stream...]`. The control bytes choose
//! chunk sizes and outcomes, in order (0 once used up: success).
//!
//! Asserts (with the random test in `src/core/sftp/session/tests.rs`): no panic;
//! every reply encodes to one well-framed packet that decodes again, answers the
//! request's id and fits in `MAX_PACKET`; every path an effect or the view is
//! given is normalized and inside the sender's root (at most `vpath::MAX_PATH`);
//! effects only name uploads in the state they need (written while open, landed
//! or parked once); the bytes written are the bytes the WRITE carried; nothing
//! lands with a byte the sender did not write, nor over `max_file_size`; open
//! handles stay within `MAX_HANDLES`, the decoder's buffer within one packet,
//! the session's uploads in step with the driver's; at the end every open upload
//! is discarded and every parked one landed.
#![no_main]
use bytes::Bytes;
use ingestd::core::sftp::session::{
    Decoder, Effect, Frame, Outcome, Session, Settings, Step, UploadId, View, ViewFile, ViewNode,
    MAX_HANDLES, MAX_PACKET, MAX_WRITE,
};
use ingestd::core::vpath::{self, MAX_PATH};
use libfuzzer_sys::fuzz_target;
use russh_sftp::protocol::{Packet, StatusCode};
use std::collections::BTreeMap;

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

    fn outcome(&mut self) -> Outcome {
        if self.next() % 8 == 7 {
            Outcome::Failed("refused by the fuzzer".into())
        } else {
            Outcome::Ok
        }
    }
}

/// A path the view is given: the root ("") or a confined path.
fn in_root(p: &str) -> bool {
    p.is_empty() || confined(p)
}

fn confined(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PATH
        // the absolute form: a relative "~" means the root, by design
        && vpath::resolve("", &format!("/{p}")).as_deref() == Ok(p)
        && p.split('/').all(|c| vpath::validate_name(c).is_ok())
}

#[derive(Default)]
struct MapView {
    nodes: BTreeMap<String, ViewNode>,
    /// Calls that may add a node, since the last request.
    adds: usize,
}

impl MapView {
    fn landed(&mut self, path: &str, size: u64) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            self.nodes.insert(parent.to_string(), ViewNode::Dir);
            p = parent;
        }
        let n = self.nodes.len();
        self.nodes.insert(
            path.to_string(),
            ViewNode::File(ViewFile {
                id: format!("id{n}"),
                size,
                mode: 0o644,
                mtime: 0,
                atime: 0,
            }),
        );
    }
}

impl View for MapView {
    fn lookup(&self, path: &str) -> Option<ViewNode> {
        if path.is_empty() {
            return Some(ViewNode::Dir);
        }
        assert!(in_root(path), "lookup of {path:?}");
        self.nodes.get(path).cloned()
    }
    fn list(&self, dir: &str) -> Vec<(String, ViewNode)> {
        assert!(in_root(dir), "list of {dir:?}");
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .iter()
            .filter_map(|(k, n)| {
                let rest = k.strip_prefix(&prefix)?;
                (!rest.is_empty() && !rest.contains('/')).then(|| (rest.to_string(), n.clone()))
            })
            .collect()
    }
    fn mkdir(&mut self, path: &str) -> bool {
        assert!(in_root(path), "mkdir of {path:?}");
        self.adds += 1;
        if path.is_empty() || self.nodes.contains_key(path) {
            return false;
        }
        self.nodes.insert(path.into(), ViewNode::Dir);
        true
    }
    fn rmdir(&mut self, path: &str) -> bool {
        assert!(in_root(path), "rmdir of {path:?}");
        let prefix = format!("{path}/");
        let empty = !self.nodes.keys().any(|k| k.starts_with(&prefix));
        empty && self.nodes.get(path) == Some(&ViewNode::Dir) && self.nodes.remove(path).is_some()
    }
    fn rename(&mut self, from: &str, to: &str) -> bool {
        assert!(in_root(from) && in_root(to), "rename {from:?} -> {to:?}");
        match self.nodes.remove(from) {
            Some(n) => {
                self.nodes.insert(to.into(), n);
                true
            }
            None => false,
        }
    }
}

/// The driver's side of one upload: its length and what the sender wrote.
#[derive(Default)]
struct Up {
    len: u64,
    /// Written byte ranges `[start, end)`, sorted, disjoint, not adjacent.
    written: Vec<(u64, u64)>,
    parked: bool,
}

impl Up {
    fn write(&mut self, start: u64, end: u64) {
        if start == end {
            return; // an empty WRITE writes nothing (not even the length)
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.written.len() + 1);
        for &(a, b) in &self.written {
            if b < s || a > e {
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        out.push((s, e));
        out.sort_unstable();
        self.written = out;
        self.len = self.len.max(end);
    }

    fn set_len(&mut self, len: u64) {
        self.written.retain_mut(|r| {
            r.1 = r.1.min(len);
            r.0 < r.1
        });
        self.len = len;
    }

    /// Every byte of `[0, len)` was written by the sender.
    fn whole(&self) -> bool {
        self.len == 0 || self.written.first() == Some(&(0, self.len))
    }
}

struct Sim<'a> {
    s: Session,
    view: MapView,
    ctl: Ctl<'a>,
    max_file_size: u64,
    ups: BTreeMap<UploadId, Up>,
    /// The WRITE being served: its offset and data.
    writing: Option<(u64, Vec<u8>)>,
    landed: usize,
}

impl Sim<'_> {
    fn io(&mut self, e: Effect) -> Outcome {
        match e {
            Effect::Begin {
                up, path, admit, ..
            } => {
                assert!(confined(&path), "begin {path:?}");
                assert!(!self.ups.contains_key(&up), "upload {up:?} reused");
                let _ = admit;
                let o = self.ctl.outcome();
                if o == Outcome::Ok {
                    self.ups.insert(up, Up::default());
                }
                o
            }
            Effect::Admit { .. } => self.ctl.outcome(),
            Effect::Write { up, offset, data } => {
                let u = self.ups.get_mut(&up).expect("a write to a live upload");
                assert!(!u.parked, "a write to a parked upload");
                let (o, sent) = self.writing.as_ref().expect("a write outside WRITE");
                let at = offset
                    .checked_sub(*o)
                    .expect("written before the WRITE's offset") as usize;
                assert_eq!(
                    sent.get(at..at + data.len()),
                    Some(&data[..]),
                    "written bytes are not the bytes sent"
                );
                let end = offset
                    .checked_add(data.len() as u64)
                    .expect("offset overflow");
                assert!(end <= self.max_file_size, "a write past max_file_size");
                u.write(offset, end);
                self.ctl.outcome()
            }
            Effect::SetLen { up, len } => {
                let u = self.ups.get_mut(&up).expect("setlen of a live upload");
                assert!(!u.parked, "setlen of a parked upload");
                assert!(len <= self.max_file_size, "a length past max_file_size");
                u.set_len(len);
                self.ctl.outcome()
            }
            Effect::Land { up, meta } => {
                assert!(confined(&meta.path), "land {:?}", meta.path);
                let u = self.ups.remove(&up).expect("land a live upload");
                assert!(!u.parked, "Land of a parked upload");
                self.land(&u, &meta.path)
            }
            Effect::Park { up, meta } => {
                assert!(confined(&meta.path), "park {:?}", meta.path);
                let u = self.ups.get_mut(&up).expect("park a live upload");
                assert!(!u.parked, "parked twice");
                assert!(
                    u.whole(),
                    "a parked upload has a hole: {:?} of {}",
                    u.written,
                    u.len
                );
                let o = self.ctl.outcome();
                if o == Outcome::Ok {
                    u.parked = true;
                } else {
                    self.ups.remove(&up);
                }
                o
            }
            Effect::Repark { up, meta } => {
                assert!(confined(&meta.path), "repark {:?}", meta.path);
                assert!(self.ups.get(&up).expect("repark a parked upload").parked);
                self.ctl.outcome()
            }
            Effect::LandParked { up, meta } => {
                assert!(confined(&meta.path), "land parked {:?}", meta.path);
                let u = self.ups.get(&up).expect("land a parked upload");
                assert!(u.parked, "LandParked of an open upload");
                let o = self.ctl.outcome();
                if o == Outcome::Ok {
                    let u = self.ups.remove(&up).unwrap();
                    self.land(&u, &meta.path);
                }
                o
            }
            Effect::Discard { up } => {
                assert!(self.ups.remove(&up).is_some(), "discard a live upload");
                Outcome::Ok
            }
            Effect::OpenRead { .. } | Effect::CloseRead { .. } => self.ctl.outcome(),
            Effect::Read { len, .. } => {
                assert!(len as u64 <= MAX_WRITE);
                match self.ctl.next() {
                    255 => Outcome::Failed("EIO".into()),
                    n => Outcome::Data(vec![9; (n as usize * 17).min(len as usize)]),
                }
            }
        }
    }

    fn land(&mut self, u: &Up, path: &str) -> Outcome {
        assert!(
            u.whole(),
            "{path:?} lands with a hole: {:?} of {}",
            u.written,
            u.len
        );
        assert!(u.len <= self.max_file_size, "{path:?}: {} bytes", u.len);
        let o = self.ctl.outcome();
        if o == Outcome::Ok {
            self.view.landed(path, u.len);
            self.landed += 1;
        }
        o
    }

    fn serve(&mut self, body: Bytes) -> (Packet, Option<u32>) {
        let mut b = body.clone();
        let parsed = Packet::try_from(&mut b).ok();
        self.writing = match &parsed {
            Some(Packet::Write(w)) => Some((w.offset, w.data.clone())),
            _ => None,
        };
        self.view.adds = 0;
        let mut step = self.s.request(body, &mut self.view);
        let reply = loop {
            for e in self.s.side_effects() {
                self.io(e);
            }
            match step {
                Step::Reply(p) => break p,
                Step::Run(e) => {
                    let o = self.io(e);
                    step = self.s.done(o, &mut self.view);
                }
            }
        };
        assert!(
            self.view.adds <= 1,
            "one request made {} directories",
            self.view.adds
        );
        // The request id the reply must carry (a malformed request is answered with 0).
        let bad = matches!(&reply, Packet::Status(s) if s.status_code == StatusCode::BadMessage);
        let expect = match &parsed {
            Some(Packet::Init(_)) => {
                assert!(matches!(reply, Packet::Version(_)), "{reply:?}");
                None
            }
            Some(p) if !bad => Some(p.get_request_id()),
            _ => None,
        };
        (reply, expect)
    }

    fn check(&self) {
        assert!(
            self.s.open_count() <= MAX_HANDLES,
            "{} open",
            self.s.open_count()
        );
        assert_eq!(self.s.unfinished(), self.ups.len(), "uploads out of step");
    }
}

/// A reply is one framed packet that decodes again, within the packet limit;
/// its request id (none for VERSION).
fn check_reply(p: Packet) -> Option<u32> {
    let b = Bytes::try_from(p).expect("a reply encodes");
    assert!(b.len() >= 5);
    let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
    assert_eq!(len, b.len() - 4, "reply framing");
    assert!(b.len() <= MAX_PACKET + 1024, "a reply of {} bytes", b.len());
    let mut body = b.slice(4..);
    let back = Packet::try_from(&mut body).expect("a reply decodes");
    assert!(
        matches!(
            back,
            Packet::Version(_)
                | Packet::Status(_)
                | Packet::Handle(_)
                | Packet::Data(_)
                | Packet::Name(_)
                | Packet::Attrs(_)
                | Packet::ExtendedReply(_)
        ),
        "{back:?}"
    );
    match back {
        Packet::Version(_) => None,
        _ => Some(u32::from_be_bytes(b[5..9].try_into().unwrap())),
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, n, rest @ ..] = data else {
        return;
    };
    let n = (*n as usize).min(rest.len());
    let (ctl, stream) = rest.split_at(n);
    let max_file_size = match flags & 3 {
        0 => 1 << 40,
        1 => 1 << 10,
        2 => 16,
        _ => 0,
    };
    let settings = Settings {
        temp_patterns: if flags & 4 != 0 {
            vec![]
        } else {
            vec!["*.filepart".into(), "*.part".into(), ".*".into()]
        },
        allow_download: flags & 8 != 0,
        max_file_size,
    };
    let mut sim = Sim {
        s: Session::new(settings),
        view: MapView::default(),
        ctl: Ctl(ctl),
        max_file_size,
        ups: BTreeMap::new(),
        writing: None,
        landed: 0,
    };
    let mut dec = Decoder::default();
    let mut i = 0;
    while i < stream.len() {
        let c = sim.ctl.next();
        let len = if c == 0 { stream.len() } else { c as usize };
        let end = (i + len).min(stream.len());
        dec.push(&stream[i..end]);
        i = end;
        assert!(
            dec.buffered() <= MAX_PACKET + 1024 + 4,
            "decoder holds {}",
            dec.buffered()
        );
        while let Some(frame) = dec.next_frame() {
            let (reply, expect) = match frame {
                Frame::TooLarge(p) => (p, None),
                Frame::Request(body) => sim.serve(body),
            };
            let id = check_reply(reply);
            if expect.is_some() {
                assert_eq!(id, expect, "the reply's request id");
            }
            sim.check();
        }
    }
    let parked: usize = sim.ups.values().filter(|u| u.parked).count();
    let open = sim.ups.len() - parked;
    let (mut discards, mut landings) = (0, 0);
    for e in sim.s.end() {
        match &e {
            Effect::Discard { .. } => discards += 1,
            Effect::LandParked { .. } => landings += 1,
            _ => {}
        }
        sim.io(e);
    }
    assert_eq!((discards, landings), (open, parked), "every upload ended");
    assert_eq!(sim.s.unfinished(), 0);
});
