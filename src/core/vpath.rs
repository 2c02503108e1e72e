//! Sender virtual-root paths: validation of single names and resolution of
//! client-supplied paths (SCP names, SFTP paths) into normalized relative
//! paths that can never leave the sender's upload root.
//!
//! Pure: no I/O, no panics on any input. A normalized path is `""` for the
//! root, else `a/b/c` (no leading, trailing or repeated slash, no `.`/`..`,
//! every component accepted by [`validate_name`]).

/// Longest accepted single path component, in bytes (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Longest accepted path (as given by a client, and as resolved), in bytes.
pub const MAX_PATH: usize = 4096;

/// Why a name or path was refused. Display texts are shown to clients.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("empty file name")]
    EmptyName,
    /// `.` or `..` used as a name.
    #[error("invalid file name \"{0}\"")]
    DotName(String),
    #[error("file name contains a '/'")]
    ContainsSlash,
    #[error("file name contains a control character")]
    ControlChar,
    #[error("file name too long ({len} bytes, at most {MAX_NAME})")]
    NameTooLong { len: usize },
    #[error("path too long ({len} bytes, at most {MAX_PATH})")]
    PathTooLong { len: usize },
    #[error("path escapes the upload root")]
    Escape,
}

/// One path component from a sender (SCP file/dir name, SFTP path component).
///
/// Rejects: empty, `.`, `..`, anything containing `/`, any control character
/// (C0 incl. NUL, CR, LF, ESC; DEL; C1 controls), names over [`MAX_NAME`] bytes.
pub fn validate_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::EmptyName);
    }
    if name == "." || name == ".." {
        return Err(PathError::DotName(name.to_string()));
    }
    if name.len() > MAX_NAME {
        return Err(PathError::NameTooLong { len: name.len() });
    }
    if name.contains('/') {
        return Err(PathError::ContainsSlash);
    }
    if name.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    Ok(())
}

/// Resolve `path` (as given by a client; may be absolute "/x/y" meaning the
/// sender's virtual root, relative to `cwd`, may contain "." and "..",
/// repeated or trailing slashes) against `cwd` (a normalized virtual path,
/// "" = root). Returns the normalized relative path ("" for the root, else
/// "a/b/c"). ".." above the virtual root is [`PathError::Escape`] (never
/// clamped). Empty `path` means `cwd`; `~` and `~/x` start at the root.
/// `cwd` is re-checked too (as if it were absolute), so a bad `cwd` is an error.
pub fn resolve(cwd: &str, path: &str) -> Result<String, PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::PathTooLong { len: path.len() });
    }
    let mut parts: Vec<&str> = Vec::new();
    let rest = if path == "~" {
        ""
    } else if let Some(r) = path.strip_prefix("~/") {
        r
    } else if path.starts_with('/') {
        path
    } else {
        push_components(&mut parts, cwd)?;
        path
    };
    push_components(&mut parts, rest)?;
    let out = parts.join("/");
    if out.len() > MAX_PATH {
        return Err(PathError::PathTooLong { len: out.len() });
    }
    Ok(out)
}

fn push_components<'a>(parts: &mut Vec<&'a str>, path: &'a str) -> Result<(), PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::PathTooLong { len: path.len() });
    }
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escape);
                }
            }
            name => {
                validate_name(name)?;
                parts.push(name);
            }
        }
    }
    Ok(())
}

/// Join a validated relative dir and a name: `join("", "f") == "f"`,
/// `join("a/b", "f") == "a/b/f"`. An empty `name` yields `dir` unchanged.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        dir.to_string()
    } else {
        let mut s = String::with_capacity(dir.len() + 1 + name.len());
        s.push_str(dir);
        s.push('/');
        s.push_str(name);
        s
    }
}

/// `parent("a/b/c") == "a/b"`, `parent("f") == ""`, `parent("") == ""`.
pub fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(i) => &p[..i],
        None => "",
    }
}

/// Last component: `file_name("a/b/c") == "c"`, `file_name("") == ""`.
pub fn file_name(p: &str) -> &str {
    match p.rfind('/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// Glob match of `name` against `pattern`: `*` matches any run of characters
/// (including none, including a leading `.`), `?` exactly one character,
/// everything else itself. No escapes, no classes. Linear-time backtracking,
/// so hostile patterns cannot blow up.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Position of the last '*' seen and the name index it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Simple xorshift64 generator for the no-panic fuzz tests.
    pub(crate) struct XorShift(pub u64);
    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        /// A byte string biased towards `alphabet`, sometimes fully random.
        pub(crate) fn bytes(&mut self, max_len: usize, alphabet: &[u8]) -> Vec<u8> {
            let len = (self.next() as usize) % (max_len + 1);
            (0..len)
                .map(|_| {
                    let r = self.next();
                    if r & 3 == 0 || alphabet.is_empty() {
                        (r >> 8) as u8
                    } else {
                        alphabet[((r >> 8) as usize) % alphabet.len()]
                    }
                })
                .collect()
        }
    }

    #[test]
    fn names_ok() {
        for n in [
            "f",
            "file.txt",
            ".hidden",
            "...",
            "..a",
            "a..",
            "name with space",
            "`touch metachartest`",
            "$(id)",
            "a\\b",
            "~",
            "-rf",
            "ünïcödé",
            "日本語.txt",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_name(n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn names_bad() {
        assert_eq!(validate_name(""), Err(PathError::EmptyName));
        assert_eq!(validate_name("."), Err(PathError::DotName(".".into())));
        assert_eq!(validate_name(".."), Err(PathError::DotName("..".into())));
        assert_eq!(validate_name("a/b"), Err(PathError::ContainsSlash));
        assert_eq!(validate_name("/"), Err(PathError::ContainsSlash));
        assert_eq!(validate_name("../x"), Err(PathError::ContainsSlash));
        for n in [
            "a\0b",
            "\0",
            "a\nb",
            "a\rb",
            "\x1b[2J",
            "a\x7f",
            "\t",
            "x\u{85}",
            "\u{9b}31m",
        ] {
            assert_eq!(validate_name(n), Err(PathError::ControlChar), "{n:?}");
        }
        assert_eq!(
            validate_name(&"x".repeat(256)),
            Err(PathError::NameTooLong { len: 256 })
        );
        // 128 two-byte chars = 256 bytes.
        assert_eq!(
            validate_name(&"é".repeat(128)),
            Err(PathError::NameTooLong { len: 256 })
        );
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            PathError::DotName("..".into()).to_string(),
            "invalid file name \"..\""
        );
        assert_eq!(
            PathError::Escape.to_string(),
            "path escapes the upload root"
        );
        assert_eq!(
            PathError::ControlChar.to_string(),
            "file name contains a control character"
        );
        assert!(PathError::NameTooLong { len: 300 }
            .to_string()
            .contains("300"));
        for e in [
            PathError::EmptyName,
            PathError::ContainsSlash,
            PathError::PathTooLong { len: 5000 },
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'));
        }
    }

    #[test]
    fn resolve_basic() {
        assert_eq!(resolve("", ""), Ok("".into()));
        assert_eq!(resolve("", "."), Ok("".into()));
        assert_eq!(resolve("", "/"), Ok("".into()));
        assert_eq!(resolve("", "//"), Ok("".into()));
        assert_eq!(resolve("a/b", ""), Ok("a/b".into()));
        assert_eq!(resolve("a/b", "."), Ok("a/b".into()));
        assert_eq!(resolve("a/b", "./"), Ok("a/b".into()));
        assert_eq!(resolve("", "x"), Ok("x".into()));
        assert_eq!(resolve("a", "x/y"), Ok("a/x/y".into()));
        assert_eq!(resolve("a", "x//y/"), Ok("a/x/y".into()));
        assert_eq!(resolve("a", "./x/./y/."), Ok("a/x/y".into()));
        assert_eq!(resolve("a/b", "/x"), Ok("x".into()));
        assert_eq!(resolve("a/b", "///x///y///"), Ok("x/y".into()));
        assert_eq!(resolve("a/b", ".."), Ok("a".into()));
        assert_eq!(resolve("a/b", "../.."), Ok("".into()));
        assert_eq!(resolve("a/b", "../c"), Ok("a/c".into()));
        assert_eq!(resolve("a/b", "x/../y"), Ok("a/b/y".into()));
        assert_eq!(resolve("", "x/.."), Ok("".into()));
        assert_eq!(resolve("", "/x/../y"), Ok("y".into()));
    }

    #[test]
    fn resolve_tilde() {
        assert_eq!(resolve("a/b", "~"), Ok("".into()));
        assert_eq!(resolve("a/b", "~/"), Ok("".into()));
        assert_eq!(resolve("a/b", "~/x/y"), Ok("x/y".into()));
        assert_eq!(resolve("a/b", "~/.."), Err(PathError::Escape));
        // "~user" is an ordinary name, not a home directory.
        assert_eq!(resolve("a", "~user"), Ok("a/~user".into()));
        assert_eq!(resolve("a", "x/~"), Ok("a/x/~".into()));
    }

    #[test]
    fn resolve_escape() {
        assert_eq!(resolve("", ".."), Err(PathError::Escape));
        assert_eq!(resolve("", "../x"), Err(PathError::Escape));
        assert_eq!(resolve("", "/.."), Err(PathError::Escape));
        assert_eq!(resolve("", "/../etc/passwd"), Err(PathError::Escape));
        assert_eq!(resolve("a", "../.."), Err(PathError::Escape));
        assert_eq!(resolve("a/b", "../../../x"), Err(PathError::Escape));
        // Not clamped, even if it would come back down afterwards.
        assert_eq!(resolve("", "../a"), Err(PathError::Escape));
        assert_eq!(resolve("a", "x/../../../a"), Err(PathError::Escape));
        assert_eq!(resolve("", "a/../.."), Err(PathError::Escape));
    }

    #[test]
    fn resolve_bad_components() {
        assert_eq!(resolve("", "a\0b"), Err(PathError::ControlChar));
        assert_eq!(resolve("", "x/a\nb/y"), Err(PathError::ControlChar));
        assert_eq!(resolve("", "\x1b]0;pwned\x07"), Err(PathError::ControlChar));
        assert_eq!(
            resolve("", &format!("d/{}", "n".repeat(256))),
            Err(PathError::NameTooLong { len: 256 })
        );
        // A bad name that a later ".." would remove is still refused.
        assert_eq!(resolve("", "a\n/.."), Err(PathError::ControlChar));
    }

    #[test]
    fn resolve_bad_cwd() {
        assert_eq!(resolve("..", "x"), Err(PathError::Escape));
        assert_eq!(resolve("a\0", "x"), Err(PathError::ControlChar));
        // Absolute paths and "~" do not look at cwd.
        assert_eq!(resolve("..", "/x"), Ok("x".into()));
        // A sloppy but harmless cwd is normalized.
        assert_eq!(resolve("/a//b/", "c"), Ok("a/b/c".into()));
    }

    #[test]
    fn resolve_lengths() {
        let long = "a/".repeat(2048); // 4096 bytes
        assert_eq!(resolve("", &long).map(|s| s.len()), Ok(4095));
        let longer = format!("{long}a");
        assert_eq!(
            resolve("", &longer),
            Err(PathError::PathTooLong { len: 4097 })
        );
        // Long cwd + relative path over the limit.
        let cwd = "b/".repeat(1500);
        let cwd = cwd.trim_end_matches('/');
        let p = "c/".repeat(1000);
        assert!(matches!(
            resolve(cwd, &p),
            Err(PathError::PathTooLong { .. })
        ));
        // Lots of "." components are fine while the input is within bounds.
        assert_eq!(resolve("", &"./".repeat(2000)), Ok("".into()));
    }

    #[test]
    fn resolve_output_is_normalized() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let alphabet = b"ab./~\0\n ";
        for _ in 0..5000 {
            let cwd_raw = rng.bytes(12, b"ab/");
            let cwd = String::from_utf8_lossy(&cwd_raw);
            let cwd = resolve("", &cwd).unwrap_or_default();
            let p = rng.bytes(40, alphabet);
            let p = String::from_utf8_lossy(&p);
            if let Ok(out) = resolve(&cwd, &p) {
                assert!(!out.starts_with('/') && !out.ends_with('/'), "{out:?}");
                assert!(!out.contains("//"), "{out:?}");
                if !out.is_empty() {
                    for c in out.split('/') {
                        assert_eq!(validate_name(c), Ok(()), "{out:?}");
                    }
                }
                // Idempotent (as an absolute path: a leading "~" component
                // would otherwise mean the root).
                assert_eq!(resolve("", &format!("/{out}")), Ok(out.clone()));
            }
        }
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let a = rng.bytes(64, b"./~a\0\n\x7f");
            let b = rng.bytes(64, b"./~a*?");
            let a = String::from_utf8_lossy(&a);
            let b = String::from_utf8_lossy(&b);
            let _ = validate_name(&a);
            let _ = resolve(&a, &b);
            let _ = resolve(&b, &a);
            let _ = glob_match(&a, &b);
            let _ = glob_match(&b, &a);
            let _ = parent(&a);
            let _ = file_name(&a);
            let _ = join(&a, &b);
        }
    }

    #[test]
    fn join_parent_file_name() {
        assert_eq!(join("", "f"), "f");
        assert_eq!(join("a/b", "f"), "a/b/f");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("", ""), "");
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a/b"), "a");
        assert_eq!(parent("f"), "");
        assert_eq!(parent(""), "");
        assert_eq!(file_name("a/b/c"), "c");
        assert_eq!(file_name("f"), "f");
        assert_eq!(file_name(""), "");
        assert_eq!(file_name("日本/語"), "語");
        for p in ["a", "a/b", "a/b/c", "x/日本/é"] {
            assert_eq!(join(parent(p), file_name(p)), p);
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.filepart", "a.filepart"));
        assert!(glob_match("*.filepart", ".filepart"));
        assert!(glob_match("*.filepart", "x.y.filepart"));
        assert!(!glob_match("*.filepart", "a.filepart.txt"));
        assert!(!glob_match("*.filepart", "afilepart"));
        assert!(glob_match(".*", ".hidden"));
        assert!(glob_match(".*", "."));
        assert!(!glob_match(".*", "visible"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(!glob_match("a", ""));
        assert!(glob_match("?", "é"));
        assert!(!glob_match("?", ""));
        assert!(!glob_match("?", "ab"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("a*b*c", "a__b__c"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("**", "x"));
        assert!(glob_match("*a*", "banana"));
        assert!(glob_match("*ana", "banana"));
        assert!(glob_match("~*.tmp", "~lock.tmp"));
        assert!(!glob_match("abc", "ABC"));
        // Pathological pattern stays fast.
        let name = "a".repeat(5000);
        assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &name));
    }

    /// Found by the fuzzer (fuzz/artifacts/vpath): a directory literally named
    /// `~` inside an absolute path is kept, and the absolute form the node
    /// answers with resolves back to the same path; only a relative `~/...`
    /// means the root.
    #[test]
    fn tilde_component_round_trips_in_absolute_form() {
        let p = resolve("", "/~/b.a").unwrap();
        assert_eq!(p, "~/b.a");
        assert_eq!(resolve("", &format!("/{p}")).unwrap(), p);
        assert_eq!(resolve("", "~/b.a").unwrap(), "b.a");
        assert_eq!(resolve(&p, "!c/.////e").unwrap(), "~/b.a/!c/e");
    }
}
