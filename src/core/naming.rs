//! Names that are pure functions of an entry: where a file goes in the archive
//! and under which name each product is forwarded. Pure, so every step that
//! writes them is idempotent: a rerun after a crash writes the same name.

use crate::core::record::Record;
use std::path::{Path, PathBuf};

/// Longest file name most file systems accept.
const NAME_MAX: usize = 255;

/// The forward name of product `rel` (path relative to `out/`, or the landed file's
/// name) of entry `id`. Names longer than 255 bytes keep the id, a 16-hex-digit
/// BLAKE3 of `rel` and as much of the end of the flattened name as fits.
pub fn forward_name(id: &str, rel: &str) -> String {
    let flat = rel.replace('/', "__");
    let name = format!("{id}__{flat}");
    if name.len() <= NAME_MAX {
        return name;
    }
    let h = &blake3::hash(rel.as_bytes()).to_hex()[..16];
    let head = format!("{id}__{h}__");
    let room = NAME_MAX.saturating_sub(head.len());
    let mut start = flat.len().saturating_sub(room);
    while !flat.is_char_boundary(start) {
        start += 1;
    }
    format!("{head}{}", &flat[start..])
}

/// Render `layout` for a record: `{date}` (UTC YYYY-MM-DD of landing), `{node}`,
/// `{id}`, `{user}`, `{name}` (sender path, '/' kept). Errors on a result that
/// would escape the archive (empty, `.` or `..` components).
pub fn render_layout(layout: &str, rec: &Record) -> Result<PathBuf, String> {
    let date = landing_date(rec);
    let clean = |s: &str| -> String {
        let s = s.replace('/', "_");
        if s.is_empty() || s == "." || s == ".." {
            "_".to_string()
        } else {
            s
        }
    };
    let out = layout
        .replace("{date}", &date)
        .replace("{node}", &clean(&rec.node))
        .replace("{id}", &clean(&rec.id))
        .replace("{user}", &clean(&rec.user))
        .replace("{name}", &rec.path);
    let mut p = PathBuf::new();
    for c in out.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
            return Err(format!(
                "archive path {out:?} (layout {layout:?}) has an empty, '.' or '..' component"
            ));
        }
        p.push(c);
    }
    Ok(p)
}

/// UTC date of landing, from `received_at` (RFC 3339), else from the id's ULID
/// (else 1970-01-01: never a clock read, so the name stays a pure function).
fn landing_date(rec: &Record) -> String {
    let d = rec.received_at.get(..10).unwrap_or("");
    let ok = d.len() == 10
        && d.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if ok {
        return d.to_string();
    }
    let t = rec
        .id
        .rsplit_once('-')
        .and_then(|(_, u)| ulid::Ulid::from_string(u).ok())
        .map(|u| u.datetime())
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}

/// Deepest sender path accepted (components of `a/b/c`), so `scp -r` of an
/// absurdly deep tree cannot fill the archive with directories.
pub const MAX_DEPTH: usize = 64;
/// Longest archive path accepted (archive dir + rendered layout + `.record.json`),
/// well under Linux's PATH_MAX of 4096, leaving room for mount points moving.
pub const MAX_ARCHIVE_PATH: usize = 3072;
/// Suffix of the archived record beside each copy.
pub const RECORD_SUFFIX: &str = ".record.json";

/// Can the file of `rec` be archived under `layout` in `archive_dir` (and then
/// forwarded)? Every component of the archive path, including the record's
/// `.record.json` name and the step's temporary names, must fit in 255 bytes, the
/// whole path in [`MAX_ARCHIVE_PATH`] bytes, and the sender path must be at most
/// [`MAX_DEPTH`] levels deep. Forward names are bounded by [`forward_name`]. Checked
/// when a file is admitted, so nothing is acknowledged that could never be
/// delivered. The error is shown to the sender.
pub fn check_storable(archive_dir: &Path, layout: &str, rec: &Record) -> Result<(), String> {
    let depth = rec.path.split('/').count();
    if depth > MAX_DEPTH {
        return Err(format!(
            "path too deep: {depth} levels (this server accepts at most {MAX_DEPTH})"
        ));
    }
    let rel = render_layout(layout, rec)?;
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        let mut len = c.as_os_str().len();
        if i + 1 == n {
            len += RECORD_SUFFIX.len();
        }
        if len > NAME_MAX {
            return Err(format!(
                "name too long: the archive copy would need a name of {len} bytes \
                 (at most {NAME_MAX}, including the {RECORD_SUFFIX:?} of its record); \
                 shorten the file or directory name"
            ));
        }
    }
    let tmp = format!(".ingestd-{}.record.tmp", rec.id);
    if tmp.len() > NAME_MAX {
        return Err(format!(
            "name too long: node id and id make a {}-byte name",
            tmp.len()
        ));
    }
    let total = archive_dir.as_os_str().len() + 1 + rel.as_os_str().len() + RECORD_SUFFIX.len();
    if total > MAX_ARCHIVE_PATH {
        return Err(format!(
            "path too long: the archive path would be {total} bytes (at most {MAX_ARCHIVE_PATH})"
        ));
    }
    Ok(())
}

/// `<archive path>.record.json`
pub fn record_path(archived: &Path) -> PathBuf {
    let mut s = archived.as_os_str().to_os_string();
    s.push(RECORD_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            id: "n1-01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
            node: "n1".into(),
            user: "alice".into(),
            path: "dir/sub/file.txt".into(),
            size: 3,
            mode: 0o644,
            mtime: None,
            atime: None,
            blake3: String::new(),
            remote_addr: "x".into(),
            received_at: "2024-05-06T07:08:09.123Z".into(),
            protocol: "scp".into(),
        }
    }

    #[test]
    fn layout_rendering() {
        let r = rec();
        assert_eq!(
            render_layout("{date}/{node}/{id}/{name}", &r).unwrap(),
            PathBuf::from("2024-05-06/n1/n1-01JABCDEFGHJKMNPQRSTVWXYZ0/dir/sub/file.txt")
        );
        assert_eq!(
            render_layout("{user}/{id}-{name}", &r).unwrap(),
            PathBuf::from("alice/n1-01JABCDEFGHJKMNPQRSTVWXYZ0-dir/sub/file.txt")
        );
        let mut bad = rec();
        bad.path = "../etc/passwd".into();
        assert!(render_layout("{id}/{name}", &bad).is_err());
        let mut odd = rec();
        odd.user = "..".into();
        odd.received_at = "garbage".into();
        let p = render_layout("{date}/{user}/{id}", &odd).unwrap();
        assert!(p.to_str().unwrap().starts_with("20"), "{p:?}");
        assert!(p.to_str().unwrap().contains("/_/"));
        assert_eq!(
            record_path(Path::new("/a/b.txt")),
            PathBuf::from("/a/b.txt.record.json")
        );
    }

    #[test]
    fn storable_names() {
        let dir = Path::new("/srv/backup/ingestd");
        let lay = "{date}/{node}/{id}/{name}";
        let mut r = rec();
        assert!(check_storable(dir, lay, &r).is_ok());
        r.path = "d/".to_string() + &"n".repeat(243);
        assert!(check_storable(dir, lay, &r).is_ok());
        r.path = "d/".to_string() + &"n".repeat(244);
        let e = check_storable(dir, lay, &r).unwrap_err();
        assert!(e.starts_with("name too long"), "{e}");
        // a directory component may use all 255 bytes; 256 do not fit
        r.path = "d".repeat(255) + "/f";
        assert!(check_storable(dir, lay, &r).is_ok());
        r.path = "d".repeat(256) + "/f";
        assert!(check_storable(dir, lay, &r).is_err());
        // {user}-{name} in one component: both count
        r.path = "n".repeat(240);
        assert!(check_storable(dir, "{id}/{user}-{name}", &r).is_err());
        assert!(check_storable(dir, "{id}/{user}/{name}", &r).is_ok());
        r.path = vec!["d"; MAX_DEPTH - 1].join("/") + "/f";
        assert!(check_storable(dir, lay, &r).is_ok());
        r.path = vec!["d"; MAX_DEPTH].join("/") + "/f";
        let e = check_storable(dir, lay, &r).unwrap_err();
        assert!(e.starts_with("path too deep"), "{e}");
        r.path = vec!["x".repeat(200); 16].join("/");
        let e = check_storable(dir, lay, &r).unwrap_err();
        assert!(e.starts_with("path too long"), "{e}");
        r.path = "../x".into();
        assert!(check_storable(dir, lay, &r).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(forward_name("n1-X", "a.txt"), "n1-X__a.txt");
        assert_eq!(forward_name("n1-X", "d/e/f.csv"), "n1-X__d__e__f.csv");
        let long = "é".repeat(200) + "/tail.bin";
        let n = forward_name("n1-X", &long);
        assert!(n.len() <= NAME_MAX, "{}", n.len());
        assert!(n.starts_with("n1-X__") && n.ends_with("__tail.bin"));
        assert_eq!(n, forward_name("n1-X", &long));
        assert_ne!(n, forward_name("n1-X", &("é".repeat(201) + "/tail.bin")));
    }
}
