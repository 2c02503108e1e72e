//! The SSH `exec` request: decides whether a command string is a legacy SCP
//! upload (`scp [-v] [-r] [-p] [-d] -t [--] <target>`, as OpenSSH, libssh2 and
//! curl send it) and extracts its options, or refuses it with a one-line
//! message for the client's stderr.
//!
//! Pure: the command is split as a shell word list (shell-words) but no shell
//! is ever run; never panics on any input.

/// Longest accepted exec command, in bytes.
pub const MAX_COMMAND: usize = 16 * 1024;

/// Refusal for anything that is not an SCP upload.
pub const MSG_NOT_ALLOWED: &str =
    "ingestd: command not allowed: this server only accepts file uploads (scp, sftp)";
/// Refusal for `scp -f` (the client wants to download).
pub const MSG_NO_DOWNLOADS: &str =
    "ingestd: downloads are not allowed; this server accepts uploads only";

/// Options of an `scp -t` (sink) invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpArgs {
    /// `-r`: directories (`D`/`E` lines) may be sent.
    pub recursive: bool,
    /// `-p`: `T` lines (times) may be sent.
    pub preserve: bool,
    /// `-d`: the target must be a directory (the client sends several files).
    pub target_should_be_dir: bool,
    /// `-v`.
    pub verbose: bool,
    /// Target path as the client wrote it, unresolved; `"."` when empty or absent.
    pub target: String,
}

/// What to do with an exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecRequest {
    /// Run the built-in SCP sink.
    ScpSink(ScpArgs),
    /// Refuse: send this one-line message on stderr and exit non-zero.
    Refused(String),
}

fn refused(msg: &str) -> ExecRequest {
    ExecRequest::Refused(msg.to_string())
}

/// Parse the command string of an SSH exec request.
pub fn parse_exec(cmd: &[u8]) -> ExecRequest {
    if cmd.len() > MAX_COMMAND {
        return refused("ingestd: command too long");
    }
    let Ok(cmd) = std::str::from_utf8(cmd) else {
        return refused("ingestd: command is not valid UTF-8");
    };
    let Ok(words) = shell_words::split(cmd) else {
        return refused(MSG_NOT_ALLOWED);
    };
    let Some((argv0, args)) = words.split_first() else {
        return refused(MSG_NOT_ALLOWED);
    };
    if argv0.rsplit('/').next() != Some("scp") {
        return refused(MSG_NOT_ALLOWED);
    }

    let mut out = ScpArgs {
        recursive: false,
        preserve: false,
        target_should_be_dir: false,
        verbose: false,
        target: String::new(),
    };
    let (mut sink, mut source) = (false, false);
    // getopt-style: options end at "--" or at the first non-option word.
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for f in flags.chars() {
            match f {
                't' => sink = true,
                'f' => source = true,
                'r' => out.recursive = true,
                'p' => out.preserve = true,
                'd' => out.target_should_be_dir = true,
                'v' => out.verbose = true,
                other => {
                    return ExecRequest::Refused(format!(
                        "ingestd: unsupported scp option '-{}'",
                        other.escape_default()
                    ))
                }
            }
        }
        i += 1;
    }
    if source {
        return refused(MSG_NO_DOWNLOADS);
    }
    if !sink {
        return refused(MSG_NOT_ALLOWED);
    }
    match &args[i..] {
        [] => out.target = ".".to_string(),
        [t] if t.is_empty() => out.target = ".".to_string(),
        [t] => out.target = t.clone(),
        _ => return refused(MSG_NOT_ALLOWED),
    }
    ExecRequest::ScpSink(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vpath::tests::XorShift;

    fn sink(r: bool, p: bool, d: bool, v: bool, target: &str) -> ExecRequest {
        ExecRequest::ScpSink(ScpArgs {
            recursive: r,
            preserve: p,
            target_should_be_dir: d,
            verbose: v,
            target: target.into(),
        })
    }

    fn not_allowed() -> ExecRequest {
        ExecRequest::Refused(MSG_NOT_ALLOWED.into())
    }

    /// Every sink form OpenSSH, libssh2 and curl send (quoted targets, glued
    /// flags, metacharacters taken literally: no shell ever runs).
    #[test]
    fn sink_forms() {
        for (cmd, want) in [
            (
                b"scp -t .".as_slice(),
                sink(false, false, false, false, "."),
            ),
            (
                b"scp -t /tmp/x".as_slice(),
                sink(false, false, false, false, "/tmp/x"),
            ),
            (
                b"scp -v -r -p -d -t -- some/dir/".as_slice(),
                sink(true, true, true, true, "some/dir/"),
            ),
            (
                b"scp -r -t -- d".as_slice(),
                sink(true, false, false, false, "d"),
            ),
            (
                b"scp -t -- -weird".as_slice(),
                sink(false, false, false, false, "-weird"),
            ),
            (
                b"scp -t -- --".as_slice(),
                sink(false, false, false, false, "--"),
            ),
            (
                b"scp -t -".as_slice(),
                sink(false, false, false, false, "-"),
            ),
            (b"scp -t ".as_slice(), sink(false, false, false, false, ".")),
            (b"scp -t".as_slice(), sink(false, false, false, false, ".")),
            (
                b"scp -t --".as_slice(),
                sink(false, false, false, false, "."),
            ),
            (
                b"scp -t ''".as_slice(),
                sink(false, false, false, false, "."),
            ),
            (
                b"  scp   -t   x  ".as_slice(),
                sink(false, false, false, false, "x"),
            ),
            (
                b"scp\t-t\tx".as_slice(),
                sink(false, false, false, false, "x"),
            ),
            (
                b"scp -pt .".as_slice(),
                sink(false, true, false, false, "."),
            ),
            (
                b"scp -rpt .".as_slice(),
                sink(true, true, false, false, "."),
            ),
            (
                b"scp -prt .".as_slice(),
                sink(true, true, false, false, "."),
            ),
            (
                b"scp -dt .".as_slice(),
                sink(false, false, true, false, "."),
            ),
            (
                b"scp -vrpdt d".as_slice(),
                sink(true, true, true, true, "d"),
            ),
            (
                b"scp -t -p x".as_slice(),
                sink(false, true, false, false, "x"),
            ),
            (
                b"scp -tt x".as_slice(),
                sink(false, false, false, false, "x"),
            ),
            (
                b"scp -t '/path with space'".as_slice(),
                sink(false, false, false, false, "/path with space"),
            ),
            (
                b"scp -pt '/up/file.bin'".as_slice(),
                sink(false, true, false, false, "/up/file.bin"),
            ),
            (
                br"scp -t 'it'\''s'".as_slice(),
                sink(false, false, false, false, "it's"),
            ),
            (
                br#"scp -t "dq dir""#.as_slice(),
                sink(false, false, false, false, "dq dir"),
            ),
            (
                br"scp -t a\ b".as_slice(),
                sink(false, false, false, false, "a b"),
            ),
            (
                b"scp -t '; id'".as_slice(),
                sink(false, false, false, false, "; id"),
            ),
            (
                b"scp -t .;id".as_slice(),
                sink(false, false, false, false, ".;id"),
            ),
            (
                b"scp -t '$(id)'".as_slice(),
                sink(false, false, false, false, "$(id)"),
            ),
        ] {
            assert_eq!(parse_exec(cmd), want, "{:?}", String::from_utf8_lossy(cmd));
        }
    }

    #[test]
    fn argv0_forms() {
        assert_eq!(
            parse_exec(b"/usr/bin/scp -t ."),
            sink(false, false, false, false, ".")
        );
        assert_eq!(
            parse_exec(b"'/usr/bin/scp' -t ."),
            sink(false, false, false, false, ".")
        );
        for c in [
            &b"scpx -t ."[..],
            b"xscp -t .",
            b"/usr/bin/scp/ -t .",
            b"SCP -t .",
            b"scp.exe -t .",
            b"/usr/bin/sh -c 'scp -t .'",
        ] {
            assert_eq!(parse_exec(c), not_allowed(), "{c:?}");
        }
    }

    #[test]
    fn downloads_refused() {
        let dl = ExecRequest::Refused(MSG_NO_DOWNLOADS.into());
        assert_eq!(parse_exec(b"scp -f /etc/passwd"), dl);
        assert_eq!(parse_exec(b"scp -f ."), dl);
        assert_eq!(parse_exec(b"scp -pf x"), dl);
        assert_eq!(parse_exec(b"scp -r -f -- d"), dl);
        assert_eq!(parse_exec(b"scp -tf x"), dl);
        assert_eq!(parse_exec(b"scp -f -t x"), dl);
    }

    #[test]
    fn other_commands_refused() {
        for c in [
            &b""[..],
            b"   ",
            b"id",
            b"ls -la",
            b"sh -c 'id'",
            b"bash",
            b"sftp",
            b"internal-sftp",
            b"/usr/lib/openssh/sftp-server",
            b"rsync --server -e.LsfxC . /tmp",
            b"git-receive-pack 'repo'",
            b"scp",
            b"scp .",
            b"scp -r -p x",
            b"scp -- -t",
            b"scp x -t",
            // Shell tricks become extra words: more than one target is refused.
            b"scp -t . ; id",
            b"scp -t . && id",
            b"scp -t . | sh",
            b"scp -t . `id`",
            b"scp -t . $(id)",
            b"scp -t a b",
            b"scp -t . -v",
            b"scp -t -- a b",
            b"scp -t . \n id",
            // Unbalanced quotes.
            b"scp -t 'x",
            b"scp -t \"x",
            b"\0",
        ] {
            assert_eq!(
                parse_exec(c),
                not_allowed(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn unknown_flags_named() {
        assert_eq!(
            parse_exec(b"scp -x -t ."),
            ExecRequest::Refused("ingestd: unsupported scp option '-x'".into())
        );
        assert_eq!(
            parse_exec(b"scp -t -S /bin/sh ."),
            ExecRequest::Refused("ingestd: unsupported scp option '-S'".into())
        );
        assert_eq!(
            parse_exec(b"scp -tq ."),
            ExecRequest::Refused("ingestd: unsupported scp option '-q'".into())
        );
        assert_eq!(
            parse_exec(b"scp --target ."),
            ExecRequest::Refused("ingestd: unsupported scp option '--'".into())
        );
        // A control character in a flag is escaped, not echoed raw.
        assert_eq!(
            parse_exec(b"scp -\x1b -t ."),
            ExecRequest::Refused("ingestd: unsupported scp option '-\\u{1b}'".into())
        );
    }

    #[test]
    fn non_utf8_and_too_long() {
        assert_eq!(
            parse_exec(b"scp -t \xff"),
            ExecRequest::Refused("ingestd: command is not valid UTF-8".into())
        );
        assert_eq!(
            parse_exec(b"\xc0\xaf"),
            ExecRequest::Refused("ingestd: command is not valid UTF-8".into())
        );
        let mut long = b"scp -t ".to_vec();
        long.extend_from_slice(&[b'a'; MAX_COMMAND]);
        assert_eq!(
            parse_exec(&long),
            ExecRequest::Refused("ingestd: command too long".into())
        );
    }

    #[test]
    fn messages_are_one_line() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        let alphabet = b"scp -tfrpdv'\"\\;x/. \n\x1b";
        for _ in 0..5000 {
            let mut c = rng.bytes(40, alphabet);
            if rng.next() & 1 == 0 {
                let mut p = b"scp -".to_vec();
                p.append(&mut c);
                c = p;
            }
            match parse_exec(&c) {
                ExecRequest::Refused(m) => {
                    assert!(m.starts_with("ingestd: "), "{m:?}");
                    assert!(!m.chars().any(char::is_control), "{m:?}");
                }
                ExecRequest::ScpSink(a) => assert!(!a.target.is_empty()),
            }
        }
    }
}
