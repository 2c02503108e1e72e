//! Virtual paths: whatever a sender sends, a resolved path never escapes the
//! root (no empty, `.` or `..` component, never absolute) and is stable.
#![no_main]
use ingestd::core::vpath::{glob_match, resolve, validate_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (cwd, path) = s.split_once('\u{0}').unwrap_or(("", s));
    let _ = validate_name(path);
    let _ = glob_match(cwd, path);
    if let Ok(cwd) = resolve("", cwd) {
        if let Ok(p) = resolve(&cwd, path) {
            assert!(!p.starts_with('/'), "{p:?}");
            for c in p.split('/').filter(|_| !p.is_empty()) {
                assert!(!c.is_empty() && c != "." && c != "..", "{p:?}");
                assert!(validate_name(c).is_ok(), "{p:?}");
            }
            // Stable in the absolute form the node hands back (SFTP REALPATH
            // answers "/" + p); a relative "~/..." means the root, by design.
            let abs = format!("/{p}");
            assert_eq!(resolve("", &abs).as_deref(), Ok(p.as_str()), "idempotent");
        }
    }
});
