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

use super::fsx::{self, CopyError, StepError};
use super::products::{self, OUT};
use crate::config::Config;
use crate::core::naming::forward_name;
use crate::spool::{fsync_dir, read_record, DATA, PROCESSED, WORK};
use std::path::{Path, PathBuf};

struct Item {
    src: PathBuf,
    name: String,
    expect: Option<(String, u64)>,
    mtime: Option<i64>,
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
            })
            .collect()
    } else {
        vec![Item {
            src: entry.join(DATA),
            name: forward_name(id, rec.file_name()),
            expect: Some((rec.blake3.clone(), rec.size)),
            mtime: rec.mtime,
        }]
    };

    let root = &cfg.forward.dir;
    fsx::check_root("forward dir", root)?;
    for (n, it) in items.iter().enumerate() {
        let tmp = root.join(format!(".ingestd-{id}-{n}.tmp"));
        let dst = root.join(&it.name);
        fsx::copy_verified(
            &it.src,
            &tmp,
            &dst,
            it.expect.as_ref().map(|(h, s)| (h.as_str(), *s)),
            it.mtime,
            cfg.forward.file_mode.0,
        )
        .map_err(|e| match e {
            CopyError::Source(e) => fsx::spool_error("reading product", &entry, e),
            CopyError::Target(e) => {
                fsx::target_error(&format!("writing {}", dst.display()), root, e)
            }
            CopyError::Mismatch(m) => StepError::failed(m),
        })?;
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
