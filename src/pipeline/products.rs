//! The products of a processed entry: the manifest `products.json` beside `out/`
//! (written by the process step, read by forward), or a listing of `out/`.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::Path;

/// Manifest of products beside `out/`.
pub const PRODUCTS: &str = "products.json";
pub const OUT: &str = "out";
/// Directories nested deeper than this in a process command's output fail the
/// attempt (and are never walked recursively).
pub const MAX_PRODUCT_DEPTH: usize = 64;

/// One product of the process step (a regular file under `out/`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Product {
    /// Relative path under `out/`, '/'-separated.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// The products of a processed entry: `products.json` if present, else a listing of
/// `out/` (without hashes).
pub fn load_products(entry: &Path) -> io::Result<Vec<Product>> {
    match fs::read(entry.join(PRODUCTS)) {
        Ok(t) => {
            serde_json::from_slice(&t).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut v = Vec::new();
            list_out(&entry.join(OUT), &entry.join(OUT), &mut v)?;
            v.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(v)
        }
        Err(e) => Err(e),
    }
}

/// A loop, not a recursion; refuses a tree deeper than [`MAX_PRODUCT_DEPTH`].
fn list_out(base: &Path, dir: &Path, v: &mut Vec<Product>) -> io::Result<()> {
    let mut todo = vec![(dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                if depth + 1 > MAX_PRODUCT_DEPTH {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "directories nested too deep in out/",
                    ));
                }
                todo.push((p, depth + 1));
            } else if let Some(rel) = p.strip_prefix(base).ok().and_then(|r| r.to_str()) {
                v.push(Product {
                    path: rel.to_string(),
                    size: e.metadata()?.len(),
                    blake3: String::new(),
                });
            }
        }
    }
    Ok(())
}
