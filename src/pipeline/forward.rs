//! Step 3: deliver every product of `processed/<id>` to `forward.dir`, then remove
//! the entry from the spool.
//!
//! Forward names are flat and a pure function of the entry:
//! `<id>__<product path with '/' replaced by "__">`; without a process step the
//! product is the landed file itself, named `<id>__<record.file_name()>`. Each product
//! is written as `.ingestd-<id>-<n>.tmp` in `forward.dir`, fsynced, verified against
//! its BLAKE3, renamed to its final name; then `forward.dir` is fsynced once. A retry
//! after a crash therefore replaces, never duplicates, and no reader ever sees a
//! torn file under a final name.
//!
//! Zero copy: when the product is the landed file itself and `forward.dir` is on the
//! spool's file system (same `st_dev`), the temporary name is a hard link to the
//! spool's `data` ([`fsx::link_verified`]: same inode, size checked, fsynced,
//! renamed, then the directory fsync as above); removing the entry afterwards
//! leaves the delivered name as the file's only link. Where linking is refused
//! (`EXDEV`, `EPERM`, ...) the file is copied.

use super::fsx::{self, CopyError, StepError};
use super::products::{self, OUT};
use crate::config::Config;
use crate::core::naming::forward_name;
use crate::spool::{fsync_dir, read_record, DATA, PROCESSED, WORK};
use std::fs;
use std::path::{Path, PathBuf};

struct Item {
    src: PathBuf,
    name: String,
    expect: Option<(String, u64)>,
    mtime: Option<i64>,
    /// The landed file itself (no process step): may be delivered by a hard link.
    landed: bool,
}

/// Forward `processed/<id>` and remove it. Blocking.
pub fn forward(cfg: &Config, spool_root: &Path, id: &str) -> Result<(), StepError> {
    let entry = spool_root.join(PROCESSED).join(id);
    let rec = read_record(&entry).map_err(|e| fsx::spool_error("reading record", &entry, e))?;
    let out = entry.join(OUT);
    let items: Vec<Item> = if out.is_dir() {
        products::load_products(&entry)
            .map_err(|e| fsx::spool_error("reading products", &entry, e))?
            .into_iter()
            .map(|p| Item {
                src: out.join(&p.path),
                name: forward_name(id, &p.path),
                expect: (!p.blake3.is_empty()).then_some((p.blake3, p.size)),
                mtime: None,
                landed: false,
            })
            .collect()
    } else {
        vec![Item {
            src: entry.join(DATA),
            name: forward_name(id, rec.file_name()),
            expect: Some((rec.blake3.clone(), rec.size)),
            mtime: rec.mtime,
            landed: true,
        }]
    };

    let root = &cfg.forward.dir;
    fsx::check_root("forward dir", root)?;
    let same_fs = same_file_system(spool_root, root);
    for (n, it) in items.iter().enumerate() {
        let tmp = root.join(format!(".ingestd-{id}-{n}.tmp"));
        let dst = root.join(&it.name);
        if same_fs && it.landed {
            let size = it.expect.as_ref().map_or(0, |(_, s)| *s);
            match fsx::link_verified(&it.src, &tmp, &dst, size, it.mtime, cfg.forward.file_mode.0) {
                Ok(fsx::Linked::Done) => continue,
                Ok(fsx::Linked::Unsupported) => {} // copy below
                Err(e) => return Err(map_copy_error(e, &entry, &dst, root)),
            }
        }
        fsx::copy_verified(
            &it.src,
            &tmp,
            &dst,
            it.expect.as_ref().map(|(h, s)| (h.as_str(), *s)),
            it.mtime,
            cfg.forward.file_mode.0,
        )
        .map_err(|e| map_copy_error(e, &entry, &dst, root))?;
    }
    fsync_dir(root).map_err(|e| fsx::target_error("syncing forward dir", root, e))?;

    // Delivered and durable: the entry ends here.
    let scratch = spool_root
        .join(WORK)
        .join(format!("{id}.done-{}", fsx::nonce()));
    fsx::remove_entry(&entry, &spool_root.join(PROCESSED), &scratch)
        .map_err(|e| fsx::spool_error("removing entry", &entry, e))?;
    Ok(())
}

fn map_copy_error(e: CopyError, entry: &Path, dst: &Path, root: &Path) -> StepError {
    match e {
        CopyError::Source(e) => fsx::spool_error("reading product", entry, e),
        CopyError::Target(e) => fsx::target_error(&format!("writing {}", dst.display()), root, e),
        CopyError::Mismatch(m) => StepError::failed(m),
    }
}

/// Are the spool and the forward directory on one file system (`st_dev`)? Then the
/// landed file is delivered by a hard link, not copied.
fn same_file_system(spool_root: &Path, forward_root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(spool_root), fs::metadata(forward_root)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}
