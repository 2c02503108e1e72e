//! Table tests of the SFTP session core: each client behaviour that
//! `tests/sftp.rs` drives with the real client, replayed here as the packets that
//! client sends, against a simulated driver (in-memory files, an in-memory view).

use super::*;
use russh_sftp::protocol::{
    Close, Extended, FSetStat, Fstat, Init, MkDir, Open as OpenPkt, OpenDir, Read as ReadPkt,
    ReadDir, RealPath, Remove, Rename, SetStat, Stat, Write,
};
use std::collections::{BTreeMap, HashMap};

// ---------------------------------------------------------------------------
// a simulated driver

#[derive(Default)]
struct MapView {
    nodes: BTreeMap<String, ViewNode>,
}

impl MapView {
    fn landed(&mut self, path: &str, size: u64, id: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            self.nodes.insert(parent.to_string(), ViewNode::Dir);
            p = parent;
        }
        self.nodes.insert(
            path.to_string(),
            ViewNode::File(ViewFile {
                id: id.into(),
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
        self.nodes.get(path).cloned()
    }
    fn list(&self, dir: &str) -> Vec<(String, ViewNode)> {
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
        if path.is_empty() || self.nodes.contains_key(path) {
            return false;
        }
        self.nodes.insert(path.into(), ViewNode::Dir);
        true
    }
    fn rmdir(&mut self, path: &str) -> bool {
        let prefix = format!("{path}/");
        let empty = !self.nodes.keys().any(|k| k.starts_with(&prefix));
        empty && self.nodes.get(path) == Some(&ViewNode::Dir) && self.nodes.remove(path).is_some()
    }
    fn rename(&mut self, from: &str, to: &str) -> bool {
        match self.nodes.remove(from) {
            Some(n) => {
                self.nodes.insert(to.into(), n);
                true
            }
            None => false,
        }
    }
}

/// A landed file: what the driver was asked to land.
#[derive(Debug, Clone, PartialEq)]
struct Landed {
    meta: Meta,
    data: Vec<u8>,
}

struct Sim {
    s: Session,
    view: MapView,
    files: HashMap<UploadId, Vec<u8>>,
    /// Parked uploads: the record's meta and the data.
    parked: HashMap<UploadId, (Meta, Vec<u8>)>,
    /// LandParked fails with this.
    fail_landing: Option<String>,
    landed: Vec<Landed>,
    discarded: usize,
    /// Every effect run, in order.
    log: Vec<String>,
    /// `Admit` fails with this (no space).
    no_space: bool,
    /// Every path a Begin/Land effect named (must all be normalized, confined).
    paths: Vec<String>,
    next_id: u32,
}

fn settings() -> Settings {
    Settings {
        temp_patterns: vec!["*.filepart".into(), "*.partial".into(), "*.part".into()],
        allow_download: false,
        max_file_size: 1 << 40,
    }
}

impl Sim {
    fn new() -> Sim {
        Sim::with(settings())
    }

    fn with(settings: Settings) -> Sim {
        let mut sim = Sim {
            s: Session::new(settings),
            view: MapView::default(),
            files: HashMap::new(),
            parked: HashMap::new(),
            fail_landing: None,
            landed: Vec::new(),
            discarded: 0,
            log: Vec::new(),
            no_space: false,
            paths: Vec::new(),
            next_id: 0,
        };
        let v = sim.req(Packet::Init(Init {
            version: 3,
            extensions: Default::default(),
        }));
        assert!(matches!(v, Packet::Version(_)), "{v:?}");
        sim
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn io(&mut self, e: Effect) -> Outcome {
        self.log.push(format!("{e:?}").chars().take(60).collect());
        match e {
            Effect::Begin {
                up, path, admit, ..
            } => {
                self.paths.push(path);
                if admit > self.s.settings.max_file_size {
                    return Outcome::Failed("file too large".into());
                }
                assert!(self.files.insert(up, Vec::new()).is_none(), "upload reused");
                Outcome::Ok
            }
            Effect::Admit { .. } if self.no_space => Outcome::Failed("no space".into()),
            Effect::Admit { .. } => Outcome::Ok,
            Effect::Write { up, offset, data } => {
                let f = self.files.get_mut(&up).expect("write to a live upload");
                let end = offset as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[offset as usize..end].copy_from_slice(&data);
                Outcome::Ok
            }
            Effect::SetLen { up, len } => {
                self.files
                    .get_mut(&up)
                    .expect("setlen of a live upload")
                    .resize(len as usize, 0);
                Outcome::Ok
            }
            Effect::Land { up, meta } => {
                let data = self.files.remove(&up).expect("land a live upload");
                self.paths.push(meta.path.clone());
                let n = self.landed.len();
                self.view
                    .landed(&meta.path, data.len() as u64, &format!("id{n}"));
                self.landed.push(Landed { meta, data });
                Outcome::Ok
            }
            Effect::Park { up, meta } => {
                let data = self.files.remove(&up).expect("park a live upload");
                self.paths.push(meta.path.clone());
                self.parked.insert(up, (meta, data));
                Outcome::Ok
            }
            Effect::Repark { up, meta } => {
                self.paths.push(meta.path.clone());
                self.parked.get_mut(&up).expect("repark a parked upload").0 = meta;
                Outcome::Ok
            }
            Effect::LandParked { .. } if self.fail_landing.is_some() => {
                Outcome::Failed(self.fail_landing.clone().unwrap())
            }
            Effect::LandParked { up, meta } => {
                let (_, data) = self.parked.remove(&up).expect("land a parked upload");
                self.paths.push(meta.path.clone());
                let n = self.landed.len();
                self.view
                    .landed(&meta.path, data.len() as u64, &format!("id{n}"));
                self.landed.push(Landed { meta, data });
                Outcome::Ok
            }
            Effect::Discard { up } => {
                assert!(
                    self.files.remove(&up).is_some() || self.parked.remove(&up).is_some(),
                    "discard a live upload"
                );
                self.discarded += 1;
                Outcome::Ok
            }
            Effect::OpenRead { .. } => Outcome::Ok,
            Effect::Read { .. } => Outcome::Data(Vec::new()),
            Effect::CloseRead { .. } => Outcome::Ok,
        }
    }

    fn drive(&mut self, mut step: Step) -> Packet {
        loop {
            for e in self.s.side_effects() {
                self.io(e);
            }
            match step {
                Step::Reply(p) => return p,
                Step::Run(e) => {
                    let o = self.io(e);
                    step = self.s.done(o, &mut self.view);
                }
            }
        }
    }

    fn req(&mut self, p: Packet) -> Packet {
        let step = self.s.handle(p, &mut self.view);
        self.drive(step)
    }

    fn raw(&mut self, body: Bytes) -> Packet {
        let step = self.s.request(body, &mut self.view);
        self.drive(step)
    }

    fn end(&mut self) {
        for e in self.s.end() {
            self.io(e);
        }
    }

    // requests -------------------------------------------------------------

    fn open(&mut self, path: &str, flags: OpenFlags, perms: Option<u32>) -> Result<String, St> {
        let id = self.id();
        let attrs = FileAttributes {
            permissions: perms,
            ..Default::default()
        };
        match self.req(Packet::Open(OpenPkt {
            id,
            filename: path.into(),
            pflags: flags,
            attrs,
        })) {
            Packet::Handle(h) => {
                assert_eq!(h.id, id);
                Ok(h.handle)
            }
            p => Err(st(p, id)),
        }
    }

    fn create(&mut self, path: &str) -> String {
        self.open(path, wct(), None)
            .unwrap_or_else(|e| panic!("open {path}: {e:?}"))
    }

    fn write(&mut self, h: &str, offset: u64, data: &[u8]) -> St {
        let id = self.id();
        let p = self.req(Packet::Write(Write {
            id,
            handle: h.into(),
            offset,
            data: data.to_vec(),
        }));
        st(p, id)
    }

    fn fsetstat(&mut self, h: &str, attrs: FileAttributes) -> St {
        let id = self.id();
        let p = self.req(Packet::FSetStat(FSetStat {
            id,
            handle: h.into(),
            attrs,
        }));
        st(p, id)
    }

    fn setstat(&mut self, path: &str, attrs: FileAttributes) -> St {
        let id = self.id();
        let p = self.req(Packet::SetStat(SetStat {
            id,
            path: path.into(),
            attrs,
        }));
        st(p, id)
    }

    fn close(&mut self, h: &str) -> St {
        let id = self.id();
        let p = self.req(Packet::Close(Close {
            id,
            handle: h.into(),
        }));
        st(p, id)
    }

    fn put(&mut self, path: &str, data: &[u8]) -> St {
        let h = self.create(path);
        for (i, c) in data.chunks(32 * 1024).enumerate() {
            assert_eq!(self.write(&h, (i * 32 * 1024) as u64, c).0, StatusCode::Ok);
        }
        self.close(&h)
    }

    fn stat(&mut self, path: &str) -> Result<FileAttributes, St> {
        let id = self.id();
        match self.req(Packet::Stat(Stat {
            id,
            path: path.into(),
        })) {
            Packet::Attrs(a) => Ok(a.attrs),
            p => Err(st(p, id)),
        }
    }

    fn realpath(&mut self, path: &str) -> Result<String, St> {
        let id = self.id();
        match self.req(Packet::RealPath(RealPath {
            id,
            path: path.into(),
        })) {
            Packet::Name(n) => Ok(n.files[0].filename.clone()),
            p => Err(st(p, id)),
        }
    }

    fn mkdir(&mut self, path: &str) -> St {
        let id = self.id();
        let p = self.req(Packet::MkDir(MkDir {
            id,
            path: path.into(),
            attrs: FileAttributes::default(),
        }));
        st(p, id)
    }

    fn rename(&mut self, from: &str, to: &str) -> St {
        let id = self.id();
        let p = self.req(Packet::Rename(Rename {
            id,
            oldpath: from.into(),
            newpath: to.into(),
        }));
        st(p, id)
    }

    fn posix_rename(&mut self, from: &str, to: &str) -> St {
        let id = self.id();
        let mut data = Vec::new();
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let p = self.req(Packet::Extended(Extended {
            id,
            request: "posix-rename@openssh.com".into(),
            data,
        }));
        st(p, id)
    }

    fn remove(&mut self, path: &str) -> St {
        let id = self.id();
        let p = self.req(Packet::Remove(Remove {
            id,
            filename: path.into(),
        }));
        st(p, id)
    }

    fn ls(&mut self, path: &str) -> Result<Vec<(String, u64)>, St> {
        let id = self.id();
        let h = match self.req(Packet::OpenDir(OpenDir {
            id,
            path: path.into(),
        })) {
            Packet::Handle(h) => h.handle,
            p => return Err(st(p, id)),
        };
        let id = self.id();
        let Packet::Name(n) = self.req(Packet::ReadDir(ReadDir {
            id,
            handle: h.clone(),
        })) else {
            panic!("readdir")
        };
        let id = self.id();
        let eof = self.req(Packet::ReadDir(ReadDir {
            id,
            handle: h.clone(),
        }));
        assert_eq!(st(eof, id).0, StatusCode::Eof);
        assert_eq!(self.close(&h).0, StatusCode::Ok);
        Ok(n.files
            .into_iter()
            .map(|f| (f.filename, f.attrs.size.unwrap_or(0)))
            .collect())
    }

    fn landed_paths(&self) -> Vec<&str> {
        self.landed.iter().map(|l| l.meta.path.as_str()).collect()
    }
}

/// A status: code and message.
type St = (StatusCode, String);

fn st(p: Packet, id: u32) -> St {
    match p {
        Packet::Status(s) => {
            assert_eq!(s.id, id, "status for the request");
            (s.status_code, s.error_message)
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

fn wct() -> OpenFlags {
    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
}

fn wc() -> OpenFlags {
    OpenFlags::WRITE | OpenFlags::CREATE
}

fn size(n: u64) -> FileAttributes {
    FileAttributes {
        size: Some(n),
        ..Default::default()
    }
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

fn ok_st(s: St) {
    assert_eq!(s.0, StatusCode::Ok, "{s:?}");
}

fn refused(s: St, code: StatusCode, words: &str) {
    assert_eq!(s.0, code, "{s:?}");
    assert!(
        s.1.to_lowercase().contains(words),
        "message {:?} names {words:?}",
        s.1
    );
}

// ---------------------------------------------------------------------------
// OpenSSH scp, SFTP mode

#[test]
fn scp_sftp_mode_open_without_trunc_then_fsetstat_size() {
    let mut sim = Sim::new();
    // STAT of the target ("" = ".") is a directory
    let a = sim.stat(".").unwrap();
    assert_eq!(a.permissions, Some(0o040755));
    let data = bytes(100_000, 1);
    let h = sim.open("big.bin", wc(), Some(0o644)).unwrap();
    // 64 outstanding writes may come in any order
    let chunks: Vec<_> = data.chunks(32 * 1024).enumerate().collect();
    for (i, c) in chunks.iter().rev() {
        ok_st(sim.write(&h, (*i * 32 * 1024) as u64, c));
    }
    ok_st(sim.fsetstat(&h, size(data.len() as u64)));
    ok_st(sim.close(&h));
    assert_eq!(sim.landed.len(), 1);
    assert_eq!(sim.landed[0].data, data);
    assert_eq!(
        sim.landed[0].meta,
        Meta {
            path: "big.bin".into(),
            mode: 0o644,
            mtime: None,
            atime: None
        }
    );
    // the truncation shrinks an overwritten longer file
    let h = sim.open("short", wc(), Some(0o600)).unwrap();
    ok_st(sim.write(&h, 0, b"0123456789"));
    ok_st(sim.fsetstat(&h, size(4)));
    // -p: mode and times
    ok_st(sim.fsetstat(
        &h,
        FileAttributes {
            permissions: Some(0o100640),
            mtime: Some(1_600_000_000),
            atime: Some(1_600_000_001),
            ..Default::default()
        },
    ));
    ok_st(sim.close(&h));
    let l = &sim.landed[1];
    assert_eq!(l.data, b"0123");
    assert_eq!(l.meta.mode, 0o640);
    assert_eq!(l.meta.mtime, Some(1_600_000_000));
    assert_eq!(l.meta.atime, Some(1_600_000_001));
    assert_eq!(sim.s.unfinished(), 0);
}

#[test]
fn scp_r_realpath_of_a_missing_path_and_mkdir_setstat() {
    let mut sim = Sim::new();
    assert_eq!(sim.realpath(".").unwrap(), "/");
    assert_eq!(sim.realpath("tree").unwrap(), "/tree");
    assert_eq!(sim.realpath("a/b/../c").unwrap(), "/a/c");
    assert_eq!(sim.realpath("/x/./y/").unwrap(), "/x/y");
    ok_st(sim.mkdir("tree"));
    refused(sim.mkdir("tree"), StatusCode::Failure, "already exists");
    ok_st(sim.setstat(
        "tree",
        FileAttributes {
            permissions: Some(0o40755),
            ..Default::default()
        },
    ));
    ok_st(sim.mkdir("tree/sub dir"));
    ok_st(sim.put("tree/sub dir/f f.bin", &bytes(70_000, 2)));
    assert_eq!(sim.landed_paths(), ["tree/sub dir/f f.bin"]);
    refused(
        sim.setstat("nothing", FileAttributes::default()),
        StatusCode::NoSuchFile,
        "no such file",
    );
}

// ---------------------------------------------------------------------------
// OpenSSH sftp -b

#[test]
fn sftp_batch_put_mkdir_ls_rename_rm() {
    let mut sim = Sim::new();
    assert_eq!(sim.realpath(".").unwrap(), "/");
    ok_st(sim.mkdir("incoming"));
    assert_eq!(sim.realpath("/incoming").unwrap(), "/incoming");
    assert_eq!(
        sim.stat("incoming").unwrap().permissions,
        Some(0o040755),
        "cd: a directory"
    );
    let a = bytes(1 << 20, 3);
    ok_st(sim.put("/incoming/a.bin", &a));
    let ls = sim.ls("/incoming").unwrap();
    assert!(ls.contains(&("a.bin".to_string(), 1 << 20)), "{ls:?}");
    assert_eq!(sim.stat("/incoming/a.bin").unwrap().size, Some(1 << 20));
    // a landed file is renamed in the view only
    ok_st(sim.rename("/incoming/a.bin", "/incoming/renamed.bin"));
    let names: Vec<_> = sim
        .ls("incoming")
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert!(names.contains(&"renamed.bin".to_string()) && !names.contains(&"a.bin".to_string()));
    assert_eq!(sim.landed_paths(), ["incoming/a.bin"]);
    // rm of a landed file is refused
    refused(
        sim.remove("incoming/renamed.bin"),
        StatusCode::PermissionDenied,
        "cannot be removed",
    );
    refused(sim.remove("incoming"), StatusCode::Failure, "directory");
    refused(sim.remove("nope"), StatusCode::NoSuchFile, "no such file");
    refused(
        sim.rename("nope", "other"),
        StatusCode::NoSuchFile,
        "no such file",
    );
    assert!(sim.ls("nope").is_err());
}

// ---------------------------------------------------------------------------
// curl (libssh2)

#[test]
fn curl_modes_arrive_with_the_file_type_bits() {
    let mut sim = Sim::new();
    let h = sim.open("curl.bin", wct(), Some(0o100644)).unwrap();
    ok_st(sim.write(&h, 0, &bytes(30_000, 4)));
    ok_st(sim.close(&h));
    assert_eq!(sim.landed[0].meta.mode, 0o644);
    // --ftp-create-dirs: MKDIR of each level, then the file
    ok_st(sim.mkdir("/c dir"));
    ok_st(sim.mkdir("/c dir/sub"));
    ok_st(sim.put("/c dir/sub/c.bin", b"x"));
    assert_eq!(sim.landed_paths(), ["curl.bin", "c dir/sub/c.bin"]);
}

// ---------------------------------------------------------------------------
// paramiko

#[test]
fn paramiko_stat_after_close_answers_the_landed_size() {
    let mut sim = Sim::new();
    let data = bytes(5 << 20, 5);
    ok_st(sim.put("pm.bin", &data));
    assert_eq!(sim.stat("pm.bin").unwrap().size, Some(5 << 20));
    assert_eq!(sim.stat("/pm.bin").unwrap().size, Some(5 << 20));
    // FSTAT on an open upload answers its size so far
    let h = sim.create("open.bin");
    ok_st(sim.write(&h, 0, b"abc"));
    let id = sim.id();
    let p = sim.req(Packet::Fstat(Fstat {
        id,
        handle: h.clone(),
    }));
    assert!(matches!(p, Packet::Attrs(a) if a.attrs.size == Some(3)));
    assert_eq!(sim.stat("open.bin").unwrap().size, Some(3));
}

#[test]
fn refused_pipelined_writes_are_sticky_and_fail_close() {
    let mut sim = Sim::with(Settings {
        max_file_size: 100,
        ..settings()
    });
    let h = sim.create("over.bin");
    ok_st(sim.write(&h, 0, &[1; 60]));
    refused(
        sim.write(&h, 60, &[1; 60]),
        StatusCode::Failure,
        "too large",
    );
    // a client that ignores that status and goes on is refused again
    refused(sim.write(&h, 0, &[1; 10]), StatusCode::Failure, "too large");
    refused(sim.fsetstat(&h, size(10)), StatusCode::Failure, "too large");
    refused(sim.close(&h), StatusCode::Failure, "discarded");
    assert!(sim.landed.is_empty());
    assert_eq!(sim.discarded, 1);
    assert_eq!(sim.s.unfinished(), 0);
    // FSETSTAT/SETSTAT size over the limit
    let h = sim.create("grown.bin");
    ok_st(sim.write(&h, 0, b"abc"));
    refused(
        sim.fsetstat(&h, size(4 << 20)),
        StatusCode::Failure,
        "too large",
    );
    refused(sim.close(&h), StatusCode::Failure, "too large");
    let h = sim.create("grown2.bin");
    refused(
        sim.setstat("grown2.bin", size(101)),
        StatusCode::Failure,
        "limit",
    );
    refused(sim.close(&h), StatusCode::Failure, "discarded");
    // at the limit is fine
    ok_st(sim.put("at.bin", &[7; 100]));
    assert_eq!(sim.landed_paths(), ["at.bin"]);
}

#[test]
fn free_space_is_rechecked_as_an_upload_grows() {
    let mut sim = Sim::new();
    let h = sim.create("big");
    ok_st(sim.write(&h, 0, b"x"));
    sim.no_space = true;
    refused(
        sim.write(&h, SPACE_CHECK_EVERY, b"y"),
        StatusCode::Failure,
        "no space",
    );
    sim.no_space = false;
    refused(sim.close(&h), StatusCode::Failure, "no space");
    assert!(sim.landed.is_empty());
    let h = sim.create("big2");
    ok_st(sim.write(&h, SPACE_CHECK_EVERY, b"y"));
    assert!(sim.log.iter().any(|l| l.starts_with("Admit")));
}

#[test]
fn temp_name_parked_at_close_and_landed_at_rename() {
    let mut sim = Sim::new();
    let a = bytes(2 << 20, 6);
    ok_st(sim.put("report.csv.filepart", &a));
    assert!(sim.landed.is_empty(), "a .filepart is not landed at CLOSE");
    assert_eq!(sim.stat("report.csv.filepart").unwrap().size, Some(2 << 20));
    let ls = sim.ls(".").unwrap();
    assert!(ls.iter().any(|(n, _)| n == "report.csv.filepart"), "{ls:?}");
    ok_st(sim.posix_rename("report.csv.filepart", "report.csv"));
    assert_eq!(sim.landed_paths(), ["report.csv"]);
    assert_eq!(sim.landed[0].data, a);
    assert_eq!(sim.stat("report.csv").unwrap().size, Some(2 << 20));
    refused(
        sim.stat("report.csv.filepart").unwrap_err(),
        StatusCode::NoSuchFile,
        "no such",
    );
    // temp → temp rename, into a dir, then final
    ok_st(sim.mkdir("final"));
    ok_st(sim.put("data.part", b"abc"));
    ok_st(sim.rename("data.part", "final/x.filepart"));
    assert_eq!(sim.landed.len(), 1);
    ok_st(sim.rename("final/x.filepart", "final/visible.dat"));
    assert_eq!(sim.landed_paths(), ["report.csv", "final/visible.dat"]);
    // rename of an open upload changes the name it will land under
    let h = sim.create("open.part");
    ok_st(sim.write(&h, 0, b"z"));
    ok_st(sim.rename("open.part", "opened.bin"));
    ok_st(sim.close(&h));
    assert_eq!(sim.landed.last().unwrap().meta.path, "opened.bin");
}

#[test]
fn rm_of_a_parked_upload_discards_it() {
    let mut sim = Sim::new();
    ok_st(sim.put("x.filepart", &[1; 15000]));
    ok_st(sim.remove("x.filepart"));
    assert_eq!(sim.discarded, 1);
    assert!(sim.stat("x.filepart").is_err());
    assert!(sim.rename("x.filepart", "x").0 != StatusCode::Ok);
    assert!(sim.landed.is_empty());
}

#[test]
fn trunc_on_a_parked_temp_upload_starts_it_over() {
    let mut sim = Sim::new();
    ok_st(sim.put("again.csv.filepart", &bytes(100_000, 1)));
    let second = bytes(30_000, 2);
    ok_st(sim.put("again.csv.filepart", &second));
    assert_eq!(sim.discarded, 1, "the first upload was discarded");
    assert_eq!(sim.stat("again.csv.filepart").unwrap().size, Some(30_000));
    ok_st(sim.posix_rename("again.csv.filepart", "again.csv"));
    assert_eq!(sim.landed.len(), 1);
    assert_eq!(sim.landed[0].data, second);
}

#[test]
fn downloads_are_refused() {
    let mut sim = Sim::new();
    ok_st(sim.put("up.bin", b"data"));
    refused(
        sim.open("up.bin", OpenFlags::READ, None).unwrap_err(),
        StatusCode::PermissionDenied,
        "download",
    );
    refused(
        sim.open("nothing-here", OpenFlags::READ, None).unwrap_err(),
        StatusCode::PermissionDenied,
        "download",
    );
    let h = sim.create("w.bin");
    let id = sim.id();
    let p = sim.req(Packet::Read(ReadPkt {
        id,
        handle: h,
        offset: 0,
        len: 10,
    }));
    refused(st(p, id), StatusCode::PermissionDenied, "download");
}

#[test]
fn escapes_are_confined() {
    let mut sim = Sim::new();
    for p in [
        "../esc",
        "/../esc",
        "a/../../esc",
        "/a/b/../../../esc",
        "../../../../../../tmp/esc",
    ] {
        refused(
            sim.open(p, wct(), None).unwrap_err(),
            StatusCode::PermissionDenied,
            "escapes",
        );
    }
    refused(sim.mkdir("../d"), StatusCode::PermissionDenied, "escapes");
    refused(
        sim.stat("../x").unwrap_err(),
        StatusCode::PermissionDenied,
        "escapes",
    );
    refused(
        sim.ls("..").unwrap_err(),
        StatusCode::PermissionDenied,
        "escapes",
    );
    refused(
        sim.realpath("..").unwrap_err(),
        StatusCode::PermissionDenied,
        "escapes",
    );
    ok_st(sim.put("ok.part", b"x"));
    refused(
        sim.posix_rename("ok.part", "../esc"),
        StatusCode::PermissionDenied,
        "escapes",
    );
    ok_st(sim.remove("ok.part"));
    ok_st(sim.mkdir("in"));
    ok_st(sim.put("in/../inside.bin", b"x"));
    ok_st(sim.put("/abs.dat", b"x"));
    assert_eq!(sim.landed_paths(), ["inside.bin", "abs.dat"]);
    // the root and directories are not files
    refused(
        sim.open("/", wct(), None).unwrap_err(),
        StatusCode::Failure,
        "directory",
    );
    refused(
        sim.open("in", wct(), None).unwrap_err(),
        StatusCode::Failure,
        "directory",
    );
}

#[test]
fn handle_limit_per_session() {
    let mut sim = Sim::new();
    let mut hs = Vec::new();
    for i in 0..MAX_HANDLES {
        hs.push(sim.create(&format!("f{i}")));
    }
    refused(
        sim.open("one-more", wct(), None).unwrap_err(),
        StatusCode::Failure,
        "too many open files",
    );
    ok_st(sim.close(&hs.pop().unwrap()));
    sim.create("now-fits");
    // session end discards every open upload
    sim.end();
    assert_eq!(sim.discarded, MAX_HANDLES);
    assert!(sim.files.is_empty());
}

#[test]
fn invalid_handles_and_unknown_requests() {
    let mut sim = Sim::new();
    refused(
        sim.write("h999", 0, b"x"),
        StatusCode::Failure,
        "invalid handle",
    );
    refused(sim.close("h999"), StatusCode::Failure, "invalid handle");
    refused(
        sim.fsetstat("nope", size(1)),
        StatusCode::Failure,
        "invalid handle",
    );
    let id = sim.id();
    let p = sim.req(Packet::Extended(Extended {
        id,
        request: "statvfs@openssh.com".into(),
        data: vec![],
    }));
    assert_eq!(st(p, id).0, StatusCode::OpUnsupported);
    let id = sim.id();
    let p = sim.req(Packet::Extended(Extended {
        id,
        request: "posix-rename@openssh.com".into(),
        data: vec![0, 0, 0, 9],
    }));
    assert_eq!(st(p, id).0, StatusCode::BadMessage);
    // a body that does not decode
    let p = sim.raw(Bytes::from_static(&[3, 0, 0]));
    assert!(matches!(p, Packet::Status(s) if s.status_code == StatusCode::BadMessage));
    let p = sim.raw(Bytes::from_static(&[250, 0, 0, 0, 1]));
    assert!(matches!(p, Packet::Status(s) if s.status_code == StatusCode::BadMessage));
    // ... answered under the request's own id, so the client is not left waiting
    // (a READ whose offset is 4 bytes instead of 8)
    let p = sim.raw(Bytes::from_static(&[
        5, 0, 0, 0, 42, 0, 0, 0, 1, b'h', 0, 0, 0, 0,
    ]));
    assert!(
        matches!(&p, Packet::Status(s) if s.status_code == StatusCode::BadMessage && s.id == 42),
        "{p:?}"
    );
}

// ---------------------------------------------------------------------------
// framing

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn realpath_body(id: u32, p: &str) -> Vec<u8> {
    let mut b = vec![16];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(p.len() as u32).to_be_bytes());
    b.extend_from_slice(p.as_bytes());
    b
}

#[test]
fn oversized_packet_is_answered_and_skipped() {
    let mut sim = Sim::new();
    let mut d = Decoder::default();
    // a 1 MiB WRITE with id 7, arriving in pieces
    let mut big = vec![6];
    big.extend_from_slice(&7u32.to_be_bytes());
    big.extend_from_slice(&[0, 0, 0, 2, b'h', b'1']);
    big.extend_from_slice(&0u64.to_be_bytes());
    big.extend_from_slice(&((1u32 << 20).to_be_bytes()));
    big.resize(big.len() + (1 << 20), b'x');
    let mut stream = frame(&big);
    stream.extend(frame(&realpath_body(8, ".")));
    let mut got = Vec::new();
    for piece in stream.chunks(32 * 1024 + 7) {
        d.push(piece);
        while let Some(f) = d.next_frame() {
            got.push(match f {
                Frame::TooLarge(p) => p,
                Frame::Request(b) => sim.raw(b),
            });
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        matches!(&got[0], Packet::Status(s) if s.id == 7 && s.status_code == StatusCode::Failure && s.error_message.contains("too large"))
    );
    assert!(matches!(&got[1], Packet::Name(n) if n.id == 8 && n.files[0].filename == "/"));
    // all at once
    let mut d = Decoder::default();
    let mut stream = frame(&big);
    stream.extend(frame(&realpath_body(9, "x")));
    d.push(&stream);
    assert!(matches!(d.next_frame(), Some(Frame::TooLarge(_))));
    assert!(matches!(d.next_frame(), Some(Frame::Request(_))));
    assert!(d.next_frame().is_none());
    // a packet at the limit is a request
    let mut d = Decoder::default();
    let mut w = big.clone();
    w.truncate(MAX_PACKET);
    d.push(&frame(&w));
    assert!(matches!(d.next_frame(), Some(Frame::Request(_))));
}

// ---------------------------------------------------------------------------
// fuzz-style: random request sequences

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "a",
    "b.part",
    "c.filepart",
    "d/e",
    "d",
    "/d/f.part",
    "..",
    "../x",
    "d/../../y",
    "/",
    ".",
    "",
    "a/./b",
    "~/z",
    "x\ny",
    "d//e",
    "very/deep/name.filepart",
    ".hidden",
];

fn random_packet(r: &mut Rng, handles: &[String]) -> Packet {
    let id = r.below(1000) as u32;
    let h = if handles.is_empty() || r.below(8) == 0 {
        format!("h{}", r.below(50))
    } else {
        handles[r.below(handles.len() as u64) as usize].clone()
    };
    let path = r.pick(NAMES).to_string();
    let flags = OpenFlags::from_bits_truncate(r.below(64) as u32);
    let attrs = FileAttributes {
        size: (r.below(3) == 0).then(|| r.below(1 << 20)),
        permissions: (r.below(2) == 0).then(|| r.below(0o200000) as u32),
        mtime: (r.below(3) == 0).then(|| r.below(u32::MAX as u64) as u32),
        ..Default::default()
    };
    match r.below(16) {
        0 | 1 => Packet::Open(OpenPkt {
            id,
            filename: path,
            pflags: flags,
            attrs,
        }),
        2..=4 => Packet::Write(Write {
            id,
            handle: h,
            offset: if r.below(10) == 0 {
                u64::MAX - r.below(10)
            } else {
                r.below(1 << 21)
            },
            data: vec![7; r.below(5000) as usize],
        }),
        5 => Packet::Close(Close { id, handle: h }),
        6 => Packet::FSetStat(FSetStat {
            id,
            handle: h,
            attrs,
        }),
        7 => Packet::SetStat(SetStat { id, path, attrs }),
        8 => Packet::Stat(Stat { id, path }),
        9 => Packet::Rename(Rename {
            id,
            oldpath: path,
            newpath: r.pick(NAMES).to_string(),
        }),
        10 => Packet::Remove(Remove { id, filename: path }),
        11 => Packet::MkDir(MkDir { id, path, attrs }),
        12 => Packet::OpenDir(OpenDir { id, path }),
        13 => Packet::ReadDir(ReadDir { id, handle: h }),
        14 => Packet::RealPath(RealPath { id, path }),
        _ => Packet::Fstat(Fstat { id, handle: h }),
    }
}

fn confined(p: &str) -> bool {
    !p.starts_with('/')
        && !p.ends_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !p.chars().any(char::is_control)
}

#[test]
fn random_request_sequences_never_panic_or_escape() {
    for seed in 1..=300u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut sim = Sim::with(Settings {
            max_file_size: 1 << (10 + r.below(12)),
            allow_download: r.below(2) == 0,
            ..settings()
        });
        let mut handles: Vec<String> = Vec::new();
        for _ in 0..200 {
            let p = random_packet(&mut r, &handles);
            sim.no_space = r.below(20) == 0;
            match sim.req(p) {
                Packet::Handle(h) => handles.push(h.handle),
                Packet::Status(_) | Packet::Attrs(_) | Packet::Name(_) | Packet::Data(_) => {}
                other => panic!("seed {seed}: unexpected reply {other:?}"),
            }
            assert!(sim.s.open_count() <= MAX_HANDLES, "seed {seed}");
            assert_eq!(
                sim.s.unfinished(),
                sim.files.len() + sim.parked.len(),
                "seed {seed}: uploads in step"
            );
        }
        // random raw bytes too
        for _ in 0..20 {
            let n = r.below(40) as usize;
            let b: Vec<u8> = (0..n).map(|_| r.below(256) as u8).collect();
            sim.raw(Bytes::from(b));
        }
        let parked = sim.parked.len();
        let landed = sim.landed.len();
        sim.end();
        assert!(sim.files.is_empty(), "seed {seed}: every upload ended");
        assert!(
            sim.parked.is_empty(),
            "seed {seed}: every parked upload landed"
        );
        assert_eq!(sim.landed.len(), landed + parked, "seed {seed}");
        for p in &sim.paths {
            assert!(
                confined(p),
                "seed {seed}: path {p:?} escapes or is not normalized"
            );
        }
        for l in &sim.landed {
            assert!(l.data.len() as u64 <= sim.s.settings.max_file_size);
            // every landed byte was sent: the random writes send only 7s
            assert!(
                l.data.iter().all(|b| *b == 7),
                "seed {seed}: a byte never sent landed"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// temporary names: parked durably at CLOSE, never vanishing

#[test]
fn temp_names_never_renamed_land_under_their_names_at_session_end() {
    let mut sim = Sim::new();
    // default patterns: `report.tmp` and `.env` are ordinary names, landed at CLOSE
    ok_st(sim.put("report.tmp", b"r"));
    ok_st(sim.put(".env", b"e"));
    ok_st(sim.put("plain.csv", b"p"));
    assert_eq!(sim.landed_paths(), ["report.tmp", ".env", "plain.csv"]);
    // real temporary names are parked (durable) at CLOSE
    ok_st(sim.put("x.filepart", b"xx"));
    ok_st(sim.put("y.partial", b"yy"));
    ok_st(sim.put("z.part", b"zz"));
    ok_st(sim.rename("z.part", "dir/z2.part"));
    assert_eq!(sim.parked.len(), 3);
    assert!(sim.log.iter().any(|l| l.starts_with("Park")));
    assert!(sim.log.iter().any(|l| l.starts_with("Repark")));
    // one never closed
    let h = sim.create("open.filepart");
    ok_st(sim.write(&h, 0, b"o"));
    sim.end();
    let mut got = sim.landed_paths()[3..].to_vec();
    got.sort();
    assert_eq!(got, ["dir/z2.part", "x.filepart", "y.partial"]);
    assert_eq!(sim.discarded, 1, "the unclosed upload");
    assert!(sim.parked.is_empty() && sim.files.is_empty());
}

#[test]
fn parked_upload_attributes_and_reopen() {
    let mut sim = Sim::new();
    ok_st(sim.put("a.filepart", b"abc"));
    // WinSCP sets times on the temporary name before renaming
    ok_st(sim.setstat(
        "a.filepart",
        FileAttributes {
            mtime: Some(1_500_000_000),
            atime: Some(1_500_000_001),
            permissions: Some(0o600),
            ..Default::default()
        },
    ));
    ok_st(sim.setstat("a.filepart", size(3)));
    refused(
        sim.setstat("a.filepart", size(1)),
        StatusCode::Failure,
        "already closed",
    );
    // reopening without TRUNC would continue a closed file: refused, and it stays
    refused(
        sim.open("a.filepart", wc(), None).unwrap_err(),
        StatusCode::Failure,
        "already uploaded and closed",
    );
    assert_eq!(sim.stat("a.filepart").unwrap().size, Some(3));
    ok_st(sim.posix_rename("a.filepart", "a"));
    assert_eq!(
        sim.landed[0].meta,
        Meta {
            path: "a".into(),
            mode: 0o600,
            mtime: Some(1_500_000_000),
            atime: Some(1_500_000_001)
        }
    );
    // a rename onto another upload's name is refused
    ok_st(sim.put("b.part", b"1"));
    ok_st(sim.put("c.part", b"2"));
    refused(
        sim.rename("b.part", "c.part"),
        StatusCode::Failure,
        "another upload",
    );
}

#[test]
fn a_failed_landing_at_rename_keeps_the_upload_parked() {
    let mut sim = Sim::new();
    ok_st(sim.put("f.filepart", b"data"));
    sim.fail_landing = Some("ingestd: cannot land the file: disk on fire".into());
    refused(
        sim.rename("f.filepart", "f"),
        StatusCode::Failure,
        "disk on fire",
    );
    assert_eq!(sim.stat("f.filepart").unwrap().size, Some(4));
    sim.fail_landing = None;
    ok_st(sim.rename("f.filepart", "f"));
    assert_eq!(sim.landed_paths(), ["f"]);
    sim.end();
    assert_eq!(sim.landed.len(), 1, "landed once");
}

#[test]
fn a_temp_upload_with_a_hole_is_refused_at_close_not_parked() {
    let mut sim = Sim::new();
    let h = sim.create("hole.filepart");
    ok_st(sim.write(&h, 10, b"x"));
    refused(sim.close(&h), StatusCode::Failure, "never written");
    assert!(sim.parked.is_empty());
    assert_eq!(sim.discarded, 1);
    sim.end();
    assert!(sim.landed.is_empty());
}

// ---------------------------------------------------------------------------
// append, resume and sparse writes: a byte the sender did not send never lands

#[test]
fn append_opens_are_refused() {
    let mut sim = Sim::new();
    ok_st(sim.put("f.bin", &[1; 1000]));
    // OpenSSH sftp `reput` / `put -a`, sshfs `>>`: OPEN with APPEND
    for flags in [
        OpenFlags::WRITE | OpenFlags::APPEND,
        OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::APPEND,
    ] {
        refused(
            sim.open("f.bin", flags, None).unwrap_err(),
            StatusCode::OpUnsupported,
            "appending to or resuming an upload is not supported",
        );
    }
    assert_eq!(sim.landed.len(), 1);
}

#[test]
fn writes_that_leave_holes_never_land() {
    let mut sim = Sim::new();
    // resume without APPEND: a new upload written from the old size on
    let h = sim.open("f.bin", wc(), None).unwrap();
    ok_st(sim.write(&h, 1 << 20, &[2; 1000]));
    let (code, msg) = sim.close(&h);
    assert_eq!(code, StatusCode::Failure);
    assert!(
        msg.contains("bytes 0..1048576 of 1049576 were never written"),
        "{msg}"
    );
    // one 5-byte write at 1 GiB - 5
    let h = sim.create("sparse.bin");
    ok_st(sim.write(&h, (1 << 30) - 5, b"12345"));
    refused(sim.close(&h), StatusCode::Failure, "never written");
    // FSETSTAT growing past the written end
    let h = sim.create("grown.bin");
    ok_st(sim.write(&h, 0, b"abc"));
    ok_st(sim.fsetstat(&h, size(10)));
    refused(sim.close(&h), StatusCode::Failure, "bytes 3..10");
    // ... unless the rest is written afterwards (any order)
    let h = sim.create("filled.bin");
    ok_st(sim.fsetstat(&h, size(6)));
    ok_st(sim.write(&h, 3, b"def"));
    ok_st(sim.write(&h, 0, b"abc"));
    ok_st(sim.close(&h));
    // shrinking is fine
    let h = sim.create("shrunk.bin");
    ok_st(sim.write(&h, 0, b"abcdef"));
    ok_st(sim.fsetstat(&h, size(2)));
    ok_st(sim.close(&h));
    // a shrink then growth re-opens a hole
    let h = sim.create("regrown.bin");
    ok_st(sim.write(&h, 0, b"abcdef"));
    ok_st(sim.fsetstat(&h, size(2)));
    ok_st(sim.fsetstat(&h, size(6)));
    refused(sim.close(&h), StatusCode::Failure, "bytes 2..6");
    // an empty file is complete
    let h = sim.create("empty");
    ok_st(sim.close(&h));
    assert_eq!(sim.landed_paths(), ["filled.bin", "shrunk.bin", "empty"]);
    assert_eq!(sim.landed[0].data, b"abcdef");
    assert_eq!(sim.landed[1].data, b"ab");
    assert_eq!(sim.discarded, 4);
    assert!(sim.files.is_empty());
}

#[test]
fn too_fragmented_uploads_are_refused() {
    let mut sim = Sim::new();
    let h = sim.create("frag");
    for i in 0..super::super::ranges::MAX_PIECES as u64 {
        ok_st(sim.write(&h, i * 2, b"x"));
    }
    refused(sim.write(&h, 1 << 30, b"x"), StatusCode::Failure, "pieces");
    refused(sim.close(&h), StatusCode::Failure, "pieces");
}

// ---------------------------------------------------------------------------
// SFTP-mode scp to a target directory that ends with '/'

#[test]
fn a_trailing_slash_names_a_directory() {
    let mut sim = Sim::new();
    // OpenSSH 9.2 scp `f host:some/dir/`: STAT "some/dir/", then (a directory)
    // OPEN "some/dir/f"
    let a = sim.stat("some/dir/").unwrap();
    assert_eq!(a.permissions, Some(0o040755));
    refused(
        sim.stat("some/dir").unwrap_err(),
        StatusCode::NoSuchFile,
        "no such",
    );
    ok_st(sim.put("some/dir/f", b"f"));
    assert_eq!(sim.landed_paths(), ["some/dir/f"]);
    // a file is not a directory
    refused(
        sim.stat("some/dir/f/").unwrap_err(),
        StatusCode::NoSuchFile,
        "not a directory",
    );
    let h = sim.create("open.bin");
    refused(
        sim.stat("open.bin/").unwrap_err(),
        StatusCode::NoSuchFile,
        "not a directory",
    );
    ok_st(sim.close(&h));
    // a file cannot be opened under a directory name
    refused(
        sim.open("other/", wc(), None).unwrap_err(),
        StatusCode::Failure,
        "names a directory",
    );
}

// ---------------------------------------------------------------------------
// names that are not UTF-8

fn sstr(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(s);
}

#[test]
fn non_utf8_names_are_refused_before_decoding() {
    let mut sim = Sim::new();
    let bad: &[u8] = b"caf\xe9.csv";
    // OPEN
    let mut b = vec![3];
    b.extend_from_slice(&5u32.to_be_bytes());
    sstr(&mut b, bad);
    b.extend_from_slice(&0x1au32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    let p = sim.raw(Bytes::from(b));
    let (code, msg) = st(p, 5);
    assert_eq!(code, StatusCode::Failure);
    assert!(
        msg.contains("not valid UTF-8") && msg.contains("caf"),
        "{msg}"
    );
    // RENAME (second name), STAT, MKDIR, REALPATH, REMOVE, OPENDIR, posix-rename
    let mut b = vec![18];
    b.extend_from_slice(&6u32.to_be_bytes());
    sstr(&mut b, b"ok");
    sstr(&mut b, bad);
    assert!(st(sim.raw(Bytes::from(b)), 6).1.contains("UTF-8"));
    for typ in [17u8, 14, 16, 13, 11] {
        let mut b = vec![typ];
        b.extend_from_slice(&7u32.to_be_bytes());
        sstr(&mut b, bad);
        b.extend_from_slice(&0u32.to_be_bytes());
        assert!(
            st(sim.raw(Bytes::from(b)), 7).1.contains("UTF-8"),
            "type {typ}"
        );
    }
    let mut b = vec![200];
    b.extend_from_slice(&8u32.to_be_bytes());
    sstr(&mut b, b"posix-rename@openssh.com");
    sstr(&mut b, b"a.part");
    sstr(&mut b, bad);
    assert!(st(sim.raw(Bytes::from(b)), 8).1.contains("UTF-8"));
    assert!(sim.files.is_empty() && sim.landed.is_empty());
    // valid UTF-8 beyond ASCII is fine
    let mut b = vec![3];
    b.extend_from_slice(&9u32.to_be_bytes());
    sstr(&mut b, "café.csv".as_bytes());
    b.extend_from_slice(&0x1au32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    assert!(matches!(sim.raw(Bytes::from(b)), Packet::Handle(_)));
    assert_eq!(non_utf8_name(&[]), None);
    assert_eq!(non_utf8_name(&[3, 0, 0, 0, 1, 0, 0, 0, 200]), None);
}

/// `CREAT|EXCL` is exclusive against every name the sender can see: landed,
/// parked (temporary name closed), or still open; a fresh name is created, and
/// the refusal goes on the wire as SSH_FX_FILE_ALREADY_EXISTS.
#[test]
fn exclusive_create_of_an_existing_name_is_refused() {
    let excl = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let mut sim = Sim::new();
    ok_st(sim.put("landed.bin", b"one"));
    let landed_before = sim.landed.len();
    let e = sim.open("landed.bin", excl, None).unwrap_err();
    refused(e.clone(), StatusCode::Failure, "already exists");
    assert_eq!(
        wire_status_code(&Status {
            id: 1,
            status_code: e.0,
            error_message: e.1.clone(),
            language_tag: "en".into(),
        }),
        FX_FILE_ALREADY_EXISTS
    );
    let wire = encode(status(7, e.0, &e.1)).unwrap();
    assert_eq!(&wire[4..13], &[101, 0, 0, 0, 7, 0, 0, 0, 11]);
    // parked under a temporary name
    ok_st(sim.put("p.filepart", b"two"));
    refused(
        sim.open("p.filepart", excl, None).unwrap_err(),
        StatusCode::Failure,
        "already exists",
    );
    // still open
    let h = sim.create("open.bin");
    refused(
        sim.open("open.bin", excl, None).unwrap_err(),
        StatusCode::Failure,
        "already exists",
    );
    ok_st(sim.close(&h));
    // a new name, and without EXCL the landed name may be sent again
    let h = sim.open("new.bin", excl, None).unwrap();
    ok_st(sim.close(&h));
    let h = sim.open("landed.bin", wct(), None).unwrap();
    ok_st(sim.close(&h));
    assert_eq!(sim.landed.len(), landed_before + 3);
    // an ordinary failure keeps its protocol-3 code on the wire
    let wire = encode(status(8, StatusCode::Failure, "no space")).unwrap();
    assert_eq!(&wire[9..13], &[0, 0, 0, 4]);
}
