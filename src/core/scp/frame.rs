//! Legacy SCP sink (`scp -t`) wire format: splitting the byte stream from the
//! source into control lines ([`LineBuf`]) and parsing one control line
//! ([`parse_control`]) with OpenSSH scp.c sink semantics, but stricter about
//! names (every name goes through [`crate::core::vpath::validate_name`]).
//!
//! Pure: no I/O, never panics on any input; error Display texts are meant to
//! be sent to the client after "scp: ".

use crate::core::vpath::{self, PathError};

/// Longest accepted control line, in bytes, without its trailing `\n`.
pub const MAX_LINE: usize = 4096;

/// Largest accepted permission mode (`C`/`D` lines).
pub const MAX_MODE: u32 = 0o7777;

/// Largest accepted microseconds field in a `T` line.
pub const MAX_USEC: u32 = 999_999;

/// One control line from the SCP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `T<mtime> <mtime_usec> <atime> <atime_usec>`: times for the next file or
    /// directory. Only the whole seconds are kept.
    Time { mtime: i64, atime: i64 },
    /// `C<mode> <size> <name>`: a file of exactly `size` bytes follows.
    File { mode: u32, size: u64, name: String },
    /// `D<mode> <size> <name>`: enter a directory (size is ignored, as OpenSSH does).
    Dir { mode: u32, name: String },
    /// `E`: leave the current directory.
    End,
    /// A line starting with byte 1 (warning, `fatal == false`) or 2 (fatal
    /// error) from the source. Control characters in the message are replaced
    /// by `?` and invalid UTF-8 lossily, so it is safe to log or display.
    SourceError { fatal: bool, message: String },
}

/// Why a control line was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("empty control line")]
    EmptyLine,
    #[error("header line too long (more than {MAX_LINE} bytes)")]
    LineTooLong,
    #[error("unknown control message '{}'", show_byte(*.0))]
    UnknownControl(u8),
    #[error("malformed mode in header")]
    BadMode,
    #[error("malformed size in header")]
    BadSize,
    #[error("malformed time in header")]
    BadTime,
    #[error("unexpected data after 'E'")]
    BadEnd,
    #[error("missing file name in header")]
    MissingName,
    /// The raw name is kept so the refusal can show it (escaped).
    #[error("file name {} is not valid UTF-8", escape_bytes(.0))]
    NameNotUtf8(Vec<u8>),
    #[error(transparent)]
    BadName(#[from] PathError),
}

/// `"name"` with every byte that is not printable ASCII escaped (`\xe9`, `\n`,
/// `\"`): safe to show on a terminal and to put in a log line.
pub fn escape_bytes(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

/// Printable form of a byte for error messages (never a raw control byte).
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        (b as char).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// Parse one control line WITHOUT its trailing `\n`.
pub fn parse_control(line: &[u8]) -> Result<Control, ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::LineTooLong);
    }
    let (&kind, rest) = line.split_first().ok_or(ProtoError::EmptyLine)?;
    match kind {
        1 | 2 => Ok(Control::SourceError {
            fatal: kind == 2,
            message: sanitize_message(rest),
        }),
        b'T' => parse_time(rest),
        b'C' => {
            let (mode, size, name) = parse_entry(rest)?;
            Ok(Control::File { mode, size, name })
        }
        b'D' => {
            let (mode, _size, name) = parse_entry(rest)?;
            Ok(Control::Dir { mode, name })
        }
        b'E' => {
            if rest.is_empty() {
                Ok(Control::End)
            } else {
                Err(ProtoError::BadEnd)
            }
        }
        other => Err(ProtoError::UnknownControl(other)),
    }
}

fn sanitize_message(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Split off the field up to the next single space; `None` if there is no space.
fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// Plain decimal digits (at least one, no sign, no spaces) that fit in u64.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `<mtime> <mtime_usec> <atime> <atime_usec>`, single spaces, nothing after.
fn parse_time(rest: &[u8]) -> Result<Control, ProtoError> {
    let bad = || ProtoError::BadTime;
    let secs = |s: &[u8]| -> Result<i64, ProtoError> {
        parse_u64(s)
            .and_then(|v| i64::try_from(v).ok())
            .ok_or_else(bad)
    };
    let usec = |s: &[u8]| -> Result<(), ProtoError> {
        match parse_u64(s) {
            Some(v) if v <= u64::from(MAX_USEC) => Ok(()),
            _ => Err(bad()),
        }
    };
    let (mtime, rest) = split_space(rest).ok_or_else(bad)?;
    let (mtime_usec, rest) = split_space(rest).ok_or_else(bad)?;
    let (atime, atime_usec) = split_space(rest).ok_or_else(bad)?;
    let mtime = secs(mtime)?;
    usec(mtime_usec)?;
    let atime = secs(atime)?;
    usec(atime_usec)?;
    Ok(Control::Time { mtime, atime })
}

/// `<mode> <size> <name>` of a `C` or `D` line.
fn parse_entry(rest: &[u8]) -> Result<(u32, u64, String), ProtoError> {
    let (mode, rest) = split_space(rest).ok_or(ProtoError::BadMode)?;
    // OpenSSH writes exactly 4 octal digits; accept 3 or 4 (e.g. "644").
    if !(3..=4).contains(&mode.len()) || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(ProtoError::BadMode);
    }
    let mode = mode
        .iter()
        .fold(0u32, |acc, &d| (acc << 3) | u32::from(d - b'0'));
    debug_assert!(mode <= MAX_MODE);
    let (size, name) = split_space(rest).ok_or(ProtoError::BadSize)?;
    let size = parse_u64(size).ok_or(ProtoError::BadSize)?;
    if name.is_empty() {
        return Err(ProtoError::MissingName);
    }
    let name = std::str::from_utf8(name).map_err(|_| ProtoError::NameNotUtf8(name.to_vec()))?;
    vpath::validate_name(name)?;
    Ok((mode, size, name.to_string()))
}

/// Incremental line splitter for the sink's input stream: push bytes as they
/// arrive, pop complete control lines, and take the remaining bytes (file data
/// that followed a `C` line in the same packet) with [`LineBuf::take_rest`].
///
/// The caller must call [`LineBuf::next_line`] after each push; a pending
/// line longer than [`MAX_LINE`] is an error (and stays one).
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already known to contain no `\n`.
    scanned: usize,
}

impl LineBuf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line without its `\n`, `Ok(None)` if none is
    /// complete yet, or [`ProtoError::LineTooLong`] if a line (complete or
    /// not) is longer than [`MAX_LINE`].
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(off) => {
                let end = self.scanned + off;
                if end > MAX_LINE {
                    return Err(ProtoError::LineTooLong);
                }
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                self.scanned = 0;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_LINE {
                    Err(ProtoError::LineTooLong)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// All bytes after the last returned line; leaves the buffer empty.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// True when no bytes are pending.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vpath::tests::XorShift;

    fn file(mode: u32, size: u64, name: &str) -> Result<Control, ProtoError> {
        Ok(Control::File {
            mode,
            size,
            name: name.into(),
        })
    }

    #[test]
    fn file_lines() {
        assert_eq!(parse_control(b"C0644 12 a.txt"), file(0o644, 12, "a.txt"));
        assert_eq!(parse_control(b"C0755 0 x"), file(0o755, 0, "x"));
        assert_eq!(parse_control(b"C7777 1 x"), file(0o7777, 1, "x"));
        assert_eq!(parse_control(b"C0000 1 x"), file(0, 1, "x"));
        assert_eq!(parse_control(b"C644 1 x"), file(0o644, 1, "x"));
        assert_eq!(
            parse_control(b"C0644 18446744073709551615 big"),
            file(0o644, u64::MAX, "big")
        );
        assert_eq!(parse_control(b"C0644 007 x"), file(0o644, 7, "x"));
        // Spaces inside the name are part of the name.
        assert_eq!(
            parse_control(b"C0644 5 name with  spaces "),
            file(0o644, 5, "name with  spaces ")
        );
        assert_eq!(
            parse_control(b"C0644 5 `touch metachartest`"),
            file(0o644, 5, "`touch metachartest`")
        );
        assert_eq!(
            parse_control("C0644 5 日本語.txt".as_bytes()),
            file(0o644, 5, "日本語.txt")
        );
        assert_eq!(parse_control(b"C0644 5 .hidden"), file(0o644, 5, ".hidden"));
        assert_eq!(parse_control(b"C0644 5 ..."), file(0o644, 5, "..."));
    }

    #[test]
    fn dir_end_time_lines() {
        assert_eq!(
            parse_control(b"D0755 0 sub"),
            Ok(Control::Dir {
                mode: 0o755,
                name: "sub".into()
            })
        );
        // The size of a D line is ignored like OpenSSH, but must be digits.
        assert_eq!(
            parse_control(b"D0755 4096 sub"),
            Ok(Control::Dir {
                mode: 0o755,
                name: "sub".into()
            })
        );
        assert_eq!(parse_control(b"D0755 -1 sub"), Err(ProtoError::BadSize));
        assert_eq!(
            parse_control(b"D0755 0 .."),
            Err(PathError::DotName("..".into()).into())
        );
        assert_eq!(
            parse_control(b"D0755 0 ."),
            Err(PathError::DotName(".".into()).into())
        );
        assert_eq!(parse_control(b"E"), Ok(Control::End));
        assert_eq!(parse_control(b"E "), Err(ProtoError::BadEnd));
        assert_eq!(parse_control(b"Ex"), Err(ProtoError::BadEnd));
        assert_eq!(
            parse_control(b"T1700000000 0 1700000001 0"),
            Ok(Control::Time {
                mtime: 1_700_000_000,
                atime: 1_700_000_001
            })
        );
        assert_eq!(
            parse_control(b"T0 999999 9223372036854775807 123"),
            Ok(Control::Time {
                mtime: 0,
                atime: i64::MAX
            })
        );
    }

    #[test]
    fn time_malformed() {
        for l in [
            &b"T"[..],
            b"T ",
            b"T1",
            b"T1 0",
            b"T1 0 2",
            b"T1 0 2 ",
            b"T1 0 2 0 ",
            b"T1 0 2 0 9",
            b"T1  0 2 0",
            b"T 1 0 2 0",
            b"T-1 0 2 0",
            b"T+1 0 2 0",
            b"T1 -0 2 0",
            b"T1 1000000 2 0",
            b"T1 0 2 1000000",
            b"T1 0 2 99999999999999999999",
            b"T9223372036854775808 0 1 0",
            b"T99999999999999999999999 0 1 0",
            b"T0x10 0 1 0",
            b"T1.5 0 1 0",
            b"T1\t0\t2\t0",
            b"T1 0 2 0\r",
            b"T1 0 2 0\0",
        ] {
            assert_eq!(parse_control(l), Err(ProtoError::BadTime), "{l:?}");
        }
    }

    #[test]
    fn mode_malformed() {
        for l in [
            &b"C 1 x"[..],
            b"C",
            b"C0644",
            b"C08 1 x",
            b"C0648 1 x",
            b"C0 1 x",
            b"C64 1 x",
            b"C10644 1 x",
            b"C00644 1 x",
            b"C-644 1 x",
            b"C+644 1 x",
            b"C 0644 1 x",
            b"C0x64 1 x",
            b"Cabcd 1 x",
            b"C0644\t1 x",
            b"D 0 x",
            b"D07755 0 x",
            b"D9999 0 x",
        ] {
            assert_eq!(parse_control(l), Err(ProtoError::BadMode), "{l:?}");
        }
    }

    #[test]
    fn size_malformed() {
        for l in [
            &b"C0644 "[..],
            b"C0644 12",
            b"C0644  12 x",
            b"C0644 -1 x",
            b"C0644 +1 x",
            b"C0644 0x10 x",
            b"C0644 1e3 x",
            b"C0644 1.0 x",
            b"C0644 18446744073709551616 x",
            b"C0644 99999999999999999999999999 x",
            b"C0644 12\tx",
            b"C0644 \xd9\xa3 x",
            b"D0755  x",
        ] {
            assert_eq!(parse_control(l), Err(ProtoError::BadSize), "{l:?}");
        }
    }

    #[test]
    fn names_hostile() {
        assert_eq!(parse_control(b"C0644 1 "), Err(ProtoError::MissingName));
        assert_eq!(parse_control(b"D0755 0 "), Err(ProtoError::MissingName));
        let dot = |n: &str| Err(ProtoError::BadName(PathError::DotName(n.into())));
        assert_eq!(parse_control(b"C0644 1 .."), dot(".."));
        assert_eq!(parse_control(b"C0644 1 ."), dot("."));
        let slash = Err(ProtoError::BadName(PathError::ContainsSlash));
        for l in [
            &b"C0644 1 ../etc/passwd"[..],
            b"C0644 1 /etc/passwd",
            b"C0644 1 a/b",
            b"C0644 1 /",
            b"C0644 1 x/",
            b"D0755 0 ../..",
        ] {
            assert_eq!(parse_control(l), slash, "{l:?}");
        }
        let ctl = Err(ProtoError::BadName(PathError::ControlChar));
        for l in [
            &b"C0644 1 a\0b"[..],
            b"C0644 1 \0",
            b"C0644 1 a\rb",
            b"C0644 1 a\nb",
            b"C0644 1 x\x1b[1A\x1b[2Kevil",
            b"C0644 1 x\x7f",
            b"C0644 1 x\t",
            b"C0644 1 \xc2\x9b31m",
            b"D0755 0 a\x07",
        ] {
            assert_eq!(parse_control(l), ctl, "{l:?}");
        }
        for l in [
            &b"C0644 1 \xff"[..],
            b"C0644 1 a\xc3",
            b"C0644 1 \xed\xa0\x80",
            b"C0644 1 \xc0\xaf",
            b"D0755 0 \xfe\xfe",
        ] {
            assert_eq!(
                parse_control(l),
                Err(ProtoError::NameNotUtf8(
                    l[l.iter().rposition(|&b| b == b' ').unwrap() + 1..].to_vec()
                )),
                "{l:?}"
            );
        }
        let mut long = b"C0644 1 ".to_vec();
        long.extend_from_slice(&[b'n'; 256]);
        assert_eq!(
            parse_control(&long),
            Err(ProtoError::BadName(PathError::NameTooLong { len: 256 }))
        );
        let mut ok = b"C0644 1 ".to_vec();
        ok.extend_from_slice(&[b'n'; 255]);
        assert!(parse_control(&ok).is_ok());
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(parse_control(b""), Err(ProtoError::EmptyLine));
        assert_eq!(parse_control(b"X"), Err(ProtoError::UnknownControl(b'X')));
        assert_eq!(
            parse_control(b"c0644 1 x"),
            Err(ProtoError::UnknownControl(b'c'))
        );
        assert_eq!(
            parse_control(b" C0644 1 x"),
            Err(ProtoError::UnknownControl(b' '))
        );
        assert_eq!(parse_control(b"\0"), Err(ProtoError::UnknownControl(0)));
        assert_eq!(parse_control(b"\x03x"), Err(ProtoError::UnknownControl(3)));
        assert_eq!(
            parse_control(b"\x1b[2J"),
            Err(ProtoError::UnknownControl(0x1b))
        );
        assert_eq!(
            parse_control(b"\xffabc"),
            Err(ProtoError::UnknownControl(0xff))
        );
        assert_eq!(parse_control(b"\r"), Err(ProtoError::UnknownControl(b'\r')));
    }

    #[test]
    fn source_errors() {
        assert_eq!(
            parse_control(b"\x01scp: a.txt: Permission denied"),
            Ok(Control::SourceError {
                fatal: false,
                message: "scp: a.txt: Permission denied".into()
            })
        );
        assert_eq!(
            parse_control(b"\x02scp: fatal"),
            Ok(Control::SourceError {
                fatal: true,
                message: "scp: fatal".into()
            })
        );
        assert_eq!(
            parse_control(b"\x02"),
            Ok(Control::SourceError {
                fatal: true,
                message: String::new()
            })
        );
        assert_eq!(
            parse_control(b"\x01x\x1b[2J\0\xffy"),
            Ok(Control::SourceError {
                fatal: false,
                message: "x?[2J?\u{fffd}y".into()
            })
        );
    }

    #[test]
    fn line_length_limit() {
        let mut l = b"\x01".to_vec();
        l.extend_from_slice(&[b'a'; MAX_LINE - 1]);
        assert!(parse_control(&l).is_ok());
        l.push(b'a');
        assert_eq!(parse_control(&l), Err(ProtoError::LineTooLong));
        let mut c = b"C0644 1 ".to_vec();
        c.extend_from_slice(&[b'a'; MAX_LINE]);
        assert_eq!(parse_control(&c), Err(ProtoError::LineTooLong));
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            ProtoError::UnknownControl(b'X').to_string(),
            "unknown control message 'X'"
        );
        assert_eq!(
            ProtoError::UnknownControl(0x1b).to_string(),
            "unknown control message '\\x1b'"
        );
        assert_eq!(
            ProtoError::UnknownControl(b'\n').to_string(),
            "unknown control message '\\x0a'"
        );
        assert_eq!(ProtoError::BadSize.to_string(), "malformed size in header");
        assert_eq!(ProtoError::BadMode.to_string(), "malformed mode in header");
        assert_eq!(
            ProtoError::from(PathError::DotName("..".into())).to_string(),
            "invalid file name \"..\""
        );
        assert_eq!(
            ProtoError::from(PathError::ControlChar).to_string(),
            "file name contains a control character"
        );
        assert!(ProtoError::LineTooLong
            .to_string()
            .starts_with("header line too long"));
        // No error text may carry a control character to the client's terminal.
        let mut rng = XorShift(42);
        for _ in 0..3000 {
            let mut line = rng.bytes(24, b"CDTE0123456789 ./\0\n\x1b");
            if rng.next() & 1 == 0 {
                line.insert(0, b"CDTE"[(rng.next() % 4) as usize]);
            }
            if let Err(e) = parse_control(&line) {
                let s = e.to_string();
                assert!(!s.chars().any(char::is_control), "{s:?}");
            }
        }
    }

    #[test]
    fn linebuf_basic() {
        let mut b = LineBuf::new();
        assert!(b.is_empty());
        assert_eq!(b.next_line(), Ok(None));
        b.push(b"T1 0 2 0\nC0644 5 a.t");
        assert_eq!(b.next_line(), Ok(Some(b"T1 0 2 0".to_vec())));
        assert_eq!(b.next_line(), Ok(None));
        assert!(!b.is_empty());
        b.push(b"xt\nhello\0");
        assert_eq!(b.next_line(), Ok(Some(b"C0644 5 a.txt".to_vec())));
        assert_eq!(b.take_rest(), b"hello\0".to_vec());
        assert!(b.is_empty());
        assert_eq!(b.take_rest(), Vec::<u8>::new());
        b.push(b"E\nE\n");
        assert_eq!(b.next_line(), Ok(Some(b"E".to_vec())));
        assert_eq!(b.next_line(), Ok(Some(b"E".to_vec())));
        assert_eq!(b.next_line(), Ok(None));
        assert!(b.is_empty());
        // Empty lines come out as empty lines (parse_control refuses them).
        b.push(b"\n\n");
        assert_eq!(b.next_line(), Ok(Some(vec![])));
        assert_eq!(b.next_line(), Ok(Some(vec![])));
        assert_eq!(b.next_line(), Ok(None));
        // A CR is data, not a line end.
        b.push(b"E\r\n");
        assert_eq!(b.next_line(), Ok(Some(b"E\r".to_vec())));
    }

    #[test]
    fn linebuf_byte_at_a_time() {
        let stream = b"D0755 0 d\nC0644 3 f\nabc\0E\n";
        let mut b = LineBuf::new();
        let mut lines = vec![];
        for &byte in &stream[..20] {
            b.push(&[byte]);
            while let Some(l) = b.next_line().unwrap() {
                lines.push(l);
            }
        }
        assert_eq!(lines, vec![b"D0755 0 d".to_vec(), b"C0644 3 f".to_vec()]);
        assert!(b.is_empty());
    }

    #[test]
    fn linebuf_too_long() {
        let mut b = LineBuf::new();
        b.push(&[b'a'; MAX_LINE]);
        assert_eq!(b.next_line(), Ok(None));
        b.push(b"\n");
        assert_eq!(
            b.next_line().map(|l| l.map(|l| l.len())),
            Ok(Some(MAX_LINE))
        );

        let mut b = LineBuf::new();
        b.push(&[b'a'; MAX_LINE]);
        assert_eq!(b.next_line(), Ok(None));
        b.push(b"a");
        assert_eq!(b.next_line(), Err(ProtoError::LineTooLong));
        assert_eq!(b.next_line(), Err(ProtoError::LineTooLong));

        // Complete but too long.
        let mut b = LineBuf::new();
        let mut data = vec![b'a'; MAX_LINE + 1];
        data.push(b'\n');
        b.push(&data);
        assert_eq!(b.next_line(), Err(ProtoError::LineTooLong));

        // A short line followed by lots of (file) data: the line is fine, the
        // rest is only a problem if the caller asks for another line.
        let mut b = LineBuf::new();
        let mut data = b"C0644 100000 f\n".to_vec();
        data.extend(vec![0u8; 100_000]);
        b.push(&data);
        assert_eq!(b.next_line(), Ok(Some(b"C0644 100000 f".to_vec())));
        assert_eq!(b.take_rest().len(), 100_000);
    }

    #[test]
    fn fuzz_parse_control_no_panic() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let alphabet = b"CDTE\x01\x020123456789  ./\n\0\xff";
        for _ in 0..5000 {
            let mut line = rng.bytes(40, alphabet);
            if rng.next() & 1 == 0 {
                line.insert(0, b"CDTE"[(rng.next() % 4) as usize]);
            }
            if let Ok(Control::File { mode, name, .. } | Control::Dir { mode, name }) =
                parse_control(&line)
            {
                assert!(mode <= MAX_MODE);
                assert_eq!(vpath::validate_name(&name), Ok(()));
            }
        }
    }

    #[test]
    fn fuzz_linebuf_no_panic() {
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        for _ in 0..3000 {
            let mut b = LineBuf::new();
            let mut fed = Vec::new();
            let mut got = Vec::new();
            for _ in 0..(rng.next() % 8) {
                let chunk = rng.bytes(600, b"ab\n");
                fed.extend_from_slice(&chunk);
                b.push(&chunk);
                while let Ok(Some(l)) = b.next_line() {
                    assert!(l.len() <= MAX_LINE && !l.contains(&b'\n'));
                    got.extend_from_slice(&l);
                    got.push(b'\n');
                }
            }
            // Lines returned + rest == everything pushed (when no error hit).
            got.extend(b.take_rest());
            if fed.len() < MAX_LINE {
                assert_eq!(got, fed);
            }
            assert!(b.is_empty());
        }
    }
}
