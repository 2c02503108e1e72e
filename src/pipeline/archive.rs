//! Step 1: copy `ready/<id>/data` to the archive, verify the copy against the
//! BLAKE3 recorded at landing, store the record beside it, then move the entry on.
//!
//! Archive path: `archive.dir` / `archive.layout` rendered for the entry; the record
//! is `<path>.record.json` in the same directory. Both are written under temporary
//! names (`.ingestd-<id>.tmp`, `.ingestd-<id>.record.tmp`) and renamed into place,
//! then the directory is fsynced once. The path is a pure function of the record, so
//! an attempt repeated after a crash replaces the same files.

use super::fsx::{self, CopyError, StepError};
use super::state;
use crate::config::Config;
use crate::record::Record;
use crate::spool::{fsync_dir, read_record, DATA, READY};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// UTC date of landing, from `received_at` (RFC 3339), else from the id's ULID.
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
        .unwrap_or_else(std::time::SystemTime::now);
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}

/// Where the archive copy of `rec` lives.
pub fn archive_path(cfg: &Config, rec: &Record) -> Result<PathBuf, String> {
    Ok(cfg
        .archive
        .dir
        .join(render_layout(&cfg.archive.layout, rec)?))
}

/// `<archive path>.record.json`
pub fn record_path(archived: &Path) -> PathBuf {
    let mut s = archived.as_os_str().to_os_string();
    s.push(".record.json");
    PathBuf::from(s)
}

/// Archive `ready/<id>` and rename it to `<to_state>/<id>` (`archived`, or
/// `processed` when there is no process step). Blocking.
pub fn archive(cfg: &Config, spool_root: &Path, id: &str, to_state: &str) -> Result<(), StepError> {
    let entry = spool_root.join(READY).join(id);
    let rec = read_record(&entry).map_err(|e| fsx::spool_error("reading record", &entry, e))?;
    let root = &cfg.archive.dir;
    let dst = archive_path(cfg, &rec).map_err(StepError::failed)?;
    fsx::check_root("archive dir", root)?;
    let dir = dst.parent().unwrap_or(root).to_path_buf();
    fsx::create_dirs_durable(root, &dir)
        .map_err(|e| fsx::target_error(&format!("creating {}", dir.display()), root, e))?;

    let tmp = dir.join(format!(".ingestd-{id}.tmp"));
    fsx::copy_verified(
        &entry.join(DATA),
        &tmp,
        &dst,
        Some((&rec.blake3, rec.size)),
        rec.mtime,
    )
    .map_err(|e| match e {
        CopyError::Source(e) => fsx::spool_error("reading spooled data", &entry, e),
        CopyError::Target(e) => fsx::target_error(&format!("writing {}", dst.display()), root, e),
        CopyError::Mismatch(m) => StepError::failed(m),
    })?;

    let rpath = record_path(&dst);
    let rtmp = dir.join(format!(".ingestd-{id}.record.tmp"));
    write_synced(&rtmp, &rpath, &rec)
        .map_err(|e| fsx::target_error(&format!("writing {}", rpath.display()), root, e))?;
    fsync_dir(&dir)
        .map_err(|e| fsx::target_error(&format!("syncing {}", dir.display()), root, e))?;

    // The archive copy is durable: the entry may move on. The state rename itself is
    // not fsynced: if a power failure loses it, this step simply runs again (same
    // path, same bytes); the next fsync of the spool (at the latest when the entry
    // is removed) makes it durable.
    state::reset_after_success(&entry).map_err(|e| fsx::spool_error("state", &entry, e))?;
    let to_dir = spool_root.join(to_state);
    fs::rename(&entry, to_dir.join(id)).map_err(|e| fsx::spool_error("moving entry", &entry, e))?;
    Ok(())
}

fn write_synced(tmp: &Path, dst: &Path, rec: &Record) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    let r = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(tmp, dst)
    })();
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r
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
}
