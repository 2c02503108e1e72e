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
use crate::core::naming::{record_path, render_layout};
use crate::core::record::Record;
use crate::spool::{fsync_dir, read_record, DATA, READY};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the archive copy of `rec` lives.
pub fn archive_path(cfg: &Config, rec: &Record) -> Result<PathBuf, String> {
    Ok(cfg
        .archive
        .dir
        .join(render_layout(&cfg.archive.layout, rec)?))
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
        cfg.archive.file_mode.0,
    )
    .map_err(|e| match e {
        CopyError::Source(e) => fsx::spool_error("reading spooled data", &entry, e),
        CopyError::Target(e) => fsx::target_error(&format!("writing {}", dst.display()), root, e),
        CopyError::Mismatch(m) => StepError::failed(m),
    })?;

    let rpath = record_path(&dst);
    let rtmp = dir.join(format!(".ingestd-{id}.record.tmp"));
    write_synced(&rtmp, &rpath, &rec, cfg.archive.file_mode.0)
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

fn write_synced(tmp: &Path, dst: &Path, rec: &Record, mode: u32) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    crate::spool::durable::write_synced(tmp, dst, &json, mode)
}
