//! Operator commands that read and change the spool directly: `status`,
//! `quarantine list|show`, `retry`.
//!
//! They run in their own process beside a running daemon, so they never call
//! `Spool::open` (which sweeps `partial/` and `work/`): they only list directories,
//! read records and states, and requeue with the same crash-safe renames the
//! daemon uses. The daemon notices requeued entries at its next rescan
//! (`pipeline.rescan_interval`).

use crate::config::Config;
use crate::core::record::{EntryState, Record};
use crate::pipeline::state;
use crate::spool::{read_record, ARCHIVED, PARTIAL, PROCESSED, QUARANTINE, READY};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Landing time of an entry in Unix ms: the ULID in its id, else the directory's mtime.
fn entry_time_ms(dir: &Path, id: &str) -> Option<u64> {
    id.rsplit_once('-')
        .and_then(|(_, u)| ulid::Ulid::from_string(u).ok())
        .map(|u| u.timestamp_ms())
        .or_else(|| {
            fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
        })
}

/// "3m 12s" (rounded to seconds; "0s" under a second).
fn age(since_ms: u64) -> String {
    let secs = state::now_ms().saturating_sub(since_ms) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Names of the entries in `spool/<state>` (hidden names skipped), unsorted.
fn entry_names(dir: &Path) -> Result<impl Iterator<Item = String>> {
    let rd = match fs::read_dir(dir) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    Ok(rd
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.')))
}

/// Count and oldest landing time of one state directory (streaming: bounded memory).
pub(crate) fn census(dir: &Path) -> Result<(u64, Option<u64>)> {
    let mut n = 0;
    let mut oldest: Option<u64> = None;
    for id in entry_names(dir)? {
        n += 1;
        if let Some(t) = entry_time_ms(&dir.join(&id), &id) {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
    }
    Ok((n, oldest))
}

/// Is a pipeline target usable? A probe file is created and removed.
fn probe_target(dir: &Path) -> std::result::Result<(), String> {
    let m = fs::metadata(dir).map_err(|e| e.to_string())?;
    if !m.is_dir() {
        return Err("not a directory".into());
    }
    crate::spool::durable::probe(dir).map_err(|e| format!("not writable: {e}"))
}

pub fn status(cfg: &Config) -> Result<()> {
    let mut out = std::io::stdout().lock();
    status_to(cfg, &mut out)
}

fn status_to(cfg: &Config, out: &mut impl Write) -> Result<()> {
    let spool = &cfg.spool.dir;
    if !spool.is_dir() {
        bail!("spool.dir {} does not exist", spool.display());
    }
    writeln!(out, "{:<11} {:>8}  OLDEST", "STAGE", "FILES")?;
    for (st, label) in [
        (PARTIAL, "partial"),
        (READY, "ready"),
        (ARCHIVED, "archived"),
        (PROCESSED, "processed"),
        (QUARANTINE, "quarantine"),
    ] {
        let (n, oldest) = census(&spool.join(st))?;
        let o = oldest.map(age).unwrap_or_else(|| "-".into());
        writeln!(out, "{label:<11} {n:>8}  {o}")?;
    }
    for (what, d) in [("archive", &cfg.archive.dir), ("forward", &cfg.forward.dir)] {
        let h = match probe_target(d) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("UNAVAILABLE ({e})"),
        };
        writeln!(out, "{what} target {}: {h}", d.display())?;
    }
    Ok(())
}

fn load_quarantined(spool: &Path, id: &str) -> Result<(Record, EntryState)> {
    let dir = spool.join(QUARANTINE).join(id);
    let rec = read_record(&dir).with_context(|| format!("{id}: cannot read its record"))?;
    let st = state::load(&dir)
        .with_context(|| format!("{id}: cannot read its state"))?
        .unwrap_or_default();
    Ok((rec, st))
}

pub fn quarantine_list(cfg: &Config) -> Result<()> {
    let mut out = std::io::stdout().lock();
    quarantine_list_to(cfg, &mut out)
}

fn quarantine_list_to(cfg: &Config, out: &mut impl Write) -> Result<()> {
    let q = cfg.spool.dir.join(QUARANTINE);
    let mut ids: Vec<String> = entry_names(&q)?.collect();
    ids.sort();
    if ids.is_empty() {
        writeln!(out, "quarantine is empty")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<40} {:<8} {:>8} {:>10}  LAST REASON",
        "ID", "STEP", "ATTEMPTS", "AGE"
    )?;
    for id in ids {
        let dir = q.join(&id);
        let st = state::load(&dir).ok().flatten().unwrap_or_default();
        let step = st.quarantined_step.as_deref().unwrap_or("?");
        let last = st
            .history
            .last()
            .map(|a| one_line(&a.reason))
            .unwrap_or_default();
        let a = entry_time_ms(&dir, &id).map(age).unwrap_or_default();
        writeln!(out, "{id:<40} {step:<8} {:>8} {a:>10}  {last}", st.attempts)?;
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn quarantine_show(cfg: &Config, id: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    quarantine_show_to(cfg, id, &mut out)
}

fn quarantine_show_to(cfg: &Config, id: &str, out: &mut impl Write) -> Result<()> {
    check_id(id)?;
    let spool = &cfg.spool.dir;
    let in_q = spool.join(QUARANTINE).join(id).is_dir();
    let (rec, st, where_) = if in_q {
        let (r, s) = load_quarantined(spool, id)?;
        (r, s, QUARANTINE)
    } else {
        // Not quarantined: still explain where it is.
        let Some(stname) = [READY, ARCHIVED, PROCESSED]
            .into_iter()
            .find(|s| spool.join(s).join(id).is_dir())
        else {
            bail!("{id}: no such entry in the spool");
        };
        let dir = spool.join(stname).join(id);
        let r = read_record(&dir).with_context(|| format!("{id}: cannot read its record"))?;
        let s = state::load(&dir).ok().flatten().unwrap_or_default();
        (r, s, stname)
    };
    writeln!(out, "id:           {}", rec.id)?;
    writeln!(out, "state:        {where_}")?;
    if let Some(step) = &st.quarantined_step {
        writeln!(
            out,
            "quarantined:  step {step} gave up after {} failed attempts",
            st.attempts
        )?;
    }
    writeln!(out, "path:         {}", rec.path)?;
    writeln!(out, "user:         {}", rec.user)?;
    writeln!(out, "size:         {}", rec.size)?;
    writeln!(out, "blake3:       {}", rec.blake3)?;
    writeln!(out, "received_at:  {}", rec.received_at)?;
    writeln!(out, "node:         {}", rec.node)?;
    writeln!(
        out,
        "protocol:     {} from {}",
        rec.protocol, rec.remote_addr
    )?;
    writeln!(out, "mode:         {:o}", rec.mode)?;
    if let Some(m) = rec.mtime {
        let t = UNIX_EPOCH + Duration::from_secs(m.max(0) as u64);
        writeln!(out, "mtime:        {}", humantime::format_rfc3339(t))?;
    }
    if st.next_try_ms > 0 && where_ != QUARANTINE {
        let t = UNIX_EPOCH + Duration::from_millis(st.next_try_ms);
        let when = if t > SystemTime::now() {
            "next try"
        } else {
            "due since"
        };
        writeln!(out, "{when}:     {}", humantime::format_rfc3339_seconds(t))?;
    }
    writeln!(out, "attempts ({} recorded):", st.history.len())?;
    for (i, a) in st.history.iter().enumerate() {
        let code = a
            .exit_code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  #{:<3} {}  {:<8} {}{code}",
            i + 1,
            a.at,
            a.step,
            a.reason
        )?;
        if let Some(t) = &a.stderr_tail {
            writeln!(out, "        stderr (tail):")?;
            for l in t.lines() {
                writeln!(out, "        | {l}")?;
            }
        }
    }
    Ok(())
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        bail!("{id:?} is not an entry id");
    }
    Ok(())
}

/// Requeue one quarantined entry (`Some(id)`) or all of them (`None`).
pub fn retry(cfg: &Config, id: Option<&str>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    retry_to(cfg, id, &mut out)
}

fn retry_to(cfg: &Config, id: Option<&str>, out: &mut impl Write) -> Result<()> {
    let spool = &cfg.spool.dir;
    let ids: Vec<String> = match id {
        Some(i) => {
            check_id(i)?;
            vec![i.to_string()]
        }
        None => {
            let mut v: Vec<String> = entry_names(&spool.join(QUARANTINE))?.collect();
            v.sort();
            v
        }
    };
    let mut failed = 0;
    for i in &ids {
        match state::requeue(spool, i) {
            Ok(dest) => {
                let st = dest
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                writeln!(out, "requeued {i} -> {st}")?;
            }
            Err(e) => {
                failed += 1;
                eprintln!("ingestd: retry {i}: {e}");
            }
        }
    }
    if id.is_none() {
        writeln!(out, "{} requeued, {failed} failed", ids.len() - failed)?;
    }
    if failed > 0 {
        bail!("{failed} of {} entries could not be requeued", ids.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Attempt;
    use crate::spool::{Incoming, Spool};

    fn setup() -> (tempfile::TempDir, Config, Spool) {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let text = format!(
            "node_id = \"n1\"\n[spool]\ndir = \"{}\"\nmin_free = \"0\"\n[archive]\ndir = \"{}\"\n[forward]\ndir = \"{}\"\n",
            d.join("spool").display(),
            d.join("archive").display(),
            d.join("blocker/out").display()
        );
        fs::create_dir(d.join("archive")).unwrap();
        fs::write(d.join("blocker"), b"").unwrap();
        let cfg = Config::parse(&text, d).unwrap();
        let s = Spool::open(&cfg.spool.dir, "n1", 1 << 30, 0).unwrap();
        (t, cfg, s)
    }

    fn land(s: &Spool, name: &str) -> Record {
        let mut p = s
            .begin(Incoming {
                user: "alice".into(),
                path: name.into(),
                mode: 0o644,
                mtime: None,
                atime: None,
                remote_addr: "127.0.0.1:9".into(),
                protocol: "scp",
            })
            .unwrap();
        p.write(b"data").unwrap();
        s.commit(vec![p.complete().unwrap()]).unwrap().remove(0)
    }

    #[test]
    fn status_list_show_retry() {
        let (_t, cfg, s) = setup();
        let a = land(&s, "a.txt");
        let b = land(&s, "dir/b.txt");
        let root = s.root().to_path_buf();
        fs::rename(
            root.join(READY).join(&b.id),
            root.join(ARCHIVED).join(&b.id),
        )
        .unwrap();
        let retry_cfg = crate::config::RetryConfig {
            max_attempts: 2,
            ..Default::default()
        };
        for i in 0..2 {
            state::record_failure(
                &root,
                ARCHIVED,
                &b.id,
                Attempt {
                    step: "process".into(),
                    at: state::rfc3339_now(),
                    reason: format!("exit status {i}"),
                    exit_code: Some(i),
                    stderr_tail: Some("oops\nline2\n".into()),
                },
                &retry_cfg,
            )
            .unwrap();
        }
        let mut o = Vec::new();
        status_to(&cfg, &mut o).unwrap();
        let o = String::from_utf8(o).unwrap();
        assert!(o.contains("ready              1  0s"), "{o}");
        assert!(o.contains("quarantine         1  0s"), "{o}");
        assert!(o.contains("archived           0  -"), "{o}");
        assert!(o.contains("archive target"), "{o}");
        assert!(
            o.contains("forward target") && o.contains("UNAVAILABLE"),
            "{o}"
        );

        let mut o = Vec::new();
        quarantine_list_to(&cfg, &mut o).unwrap();
        let o = String::from_utf8(o).unwrap();
        assert!(
            o.contains(&b.id) && o.contains("process") && o.contains("exit status 1"),
            "{o}"
        );
        assert!(!o.contains(&a.id));

        let mut o = Vec::new();
        quarantine_show_to(&cfg, &b.id, &mut o).unwrap();
        let o = String::from_utf8(o).unwrap();
        assert!(o.contains("path:         dir/b.txt"), "{o}");
        assert!(
            o.contains("#1") && o.contains("#2") && o.contains("| line2"),
            "{o}"
        );
        assert!(o.contains("(exit code 1)"), "{o}");
        assert!(quarantine_show_to(&cfg, "nope", &mut Vec::new()).is_err());

        let mut o = Vec::new();
        retry_to(&cfg, None, &mut o).unwrap();
        let o = String::from_utf8(o).unwrap();
        assert!(o.contains(&format!("requeued {} -> archived", b.id)), "{o}");
        assert!(root.join(ARCHIVED).join(&b.id).is_dir());
        let st = state::load(&root.join(ARCHIVED).join(&b.id))
            .unwrap()
            .unwrap();
        assert_eq!((st.attempts, st.quarantined_step), (0, None));
        assert!(retry_to(&cfg, Some(&b.id), &mut Vec::new()).is_err());
    }
}
