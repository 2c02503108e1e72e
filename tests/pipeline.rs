//! The per-file pipeline (archive → process → forward) against the real daemon,
//! with files uploaded by the real OpenSSH client (`scp -O`).
//!
//! Process commands are small shell scripts written by each test into the node's
//! directory. Every check on content is byte-for-byte.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const USER: &str = "alice";
const LONG: Duration = Duration::from_secs(60);

/// Upload files from `node.src` (names relative to it) into the sender's root.
fn upload(node: &Node, names: &[&str]) {
    let mut args: Vec<String> = names
        .iter()
        .map(|n| path_str(&node.src.join(n)).to_string())
        .collect();
    args.push(node.target(USER, ""));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    scp_o_ok(node, &a);
}

/// Write an executable shell script into the node dir; returns its path.
fn script(node: &Node, name: &str, body: &str) -> PathBuf {
    let p = node.dir.path().join(format!("key_{name}.sh"));
    write_file(&p, format!("#!/bin/sh\n{body}\n").as_bytes());
    set_mode(&p, 0o755);
    p
}

fn toml_list(p: &Path) -> String {
    format!("[\"{}\"]", path_str(p))
}

/// `ingestd <args> --config <node config>`.
fn cli(node: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .args(args)
        .arg("--config")
        .arg(&node.config_path)
        .output()
        .expect("run ingestd")
}

fn cli_ok(node: &Node, args: &[&str]) -> String {
    let o = cli(node, args);
    assert!(o.status.success(), "ingestd {args:?}:\n{}", show(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn spool_count(node: &Node, state: &str) -> usize {
    fs::read_dir(node.state_dir(state))
        .map(|r| r.count())
        .unwrap_or(0)
}

fn spool_empty(node: &Node) -> bool {
    ["ready", "archived", "processed", "quarantine", "partial"]
        .iter()
        .all(|s| spool_count(node, s) == 0)
}

fn wait_for(node: &Node, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    if poll(timeout, || f().then_some(())).is_none() {
        panic!(
            "timed out after {timeout:?} waiting for {what}; forward dir: {:?}\nspool:\n{}\nlog:\n{}",
            forwarded(node).iter().map(|f| &f.0).collect::<Vec<_>>(),
            spool_dump(node),
            node.log()
        );
    }
}

/// Every entry in the spool with its files and state.json (for failure messages).
fn spool_dump(node: &Node) -> String {
    let mut out = String::new();
    for st in [
        "partial",
        "ready",
        "archived",
        "processed",
        "quarantine",
        "work",
    ] {
        let Ok(rd) = fs::read_dir(node.state_dir(st)) else {
            continue;
        };
        for e in rd.flatten() {
            let files = tree(&e.path());
            out.push_str(&format!(
                "  {st}/{}: {files:?}\n",
                e.file_name().to_string_lossy()
            ));
            if let Ok(s) = fs::read_to_string(e.path().join("state.json")) {
                out.push_str(&format!("    state.json: {s}\n"));
            }
        }
    }
    out
}

/// Every regular file under `dir` (relative paths).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Id of the file whose forwarded name ends with `__<suffix>`.
fn id_of(fwd: &[(String, Vec<u8>)], suffix: &str) -> String {
    let m: Vec<_> = fwd
        .iter()
        .filter(|(n, _)| n.ends_with(&format!("__{suffix}")))
        .collect();
    assert_eq!(m.len(), 1, "one product named *__{suffix}: {fwd:?}");
    m[0].0.split("__").next().unwrap().to_string()
}

#[test]
fn archive_happens_before_process_and_products_are_forwarded() {
    let (node, _) = node_with_process(
        |node| {
            format!(
                r#"set -e
arch={arch}
copy=$(find "$arch" -path "*/$INGEST_ID/*" -type f ! -name '*.record.json' | head -n 1)
[ -n "$copy" ] || {{ echo "archive copy of $INGEST_ID missing when processing" >&2; exit 9; }}
[ -f "$copy.record.json" ] || {{ echo "archive record missing" >&2; exit 9; }}
cmp -s "$copy" "$INGEST_INPUT" || {{ echo "archive copy differs" >&2; exit 9; }}
mkdir "$INGEST_OUTPUT_DIR/meta"
rev < "$INGEST_INPUT" > "$INGEST_OUTPUT_DIR/reversed.txt"
printf '%s\n' "name=$INGEST_NAME" "user=$INGEST_USER" "size=$INGEST_SIZE" "blake3=$INGEST_BLAKE3" "node=$INGEST_NODE" > "$INGEST_OUTPUT_DIR/meta/info"
"#,
                arch = path_str(&node.archive)
            )
        },
        "timeout = \"30s\"\nconcurrency = 2",
        "[pipeline]\nrescan_interval = \"1s\"\n",
    );

    let mut sent = Vec::new();
    for i in 0..4 {
        let name = format!("doc{i}.txt");
        let body = format!("line one of {i}\nline two\n")
            .repeat(i + 1)
            .into_bytes();
        write_file(&node.src.join(&name), &body);
        sent.push((name, body));
    }
    let names: Vec<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    upload(&node, &names);

    wait_for(&node, "8 products forwarded", LONG, || {
        forwarded(&node).len() == 8 && spool_empty(&node)
    });
    let fwd = forwarded(&node);
    let landed_records: Vec<_> = tree(&node.archive)
        .into_iter()
        .filter(|p| p.ends_with(".record.json"))
        .collect();
    assert_eq!(landed_records.len(), 4, "{landed_records:?}");
    for (name, body) in &sent {
        // find the id through the archive record of this file
        let rec_path = landed_records
            .iter()
            .find(|p| p.ends_with(&format!("/{name}.record.json")))
            .unwrap();
        let rec: ingestd::core::record::Record =
            serde_json::from_slice(&fs::read(node.archive.join(rec_path)).unwrap()).unwrap();
        assert_eq!(rec.path, *name);
        assert_eq!(rec.user, USER);
        assert_eq!(rec.blake3, blake3_hex(body));
        // archive copy: byte-for-byte
        let copy = node.archive.join(rec_path.trim_end_matches(".record.json"));
        assert_eq!(fs::read(&copy).unwrap(), *body);
        assert!(
            rec_path.starts_with(&format!("{}/test-node/{}/", &rec.received_at[..10], rec.id)),
            "layout {{date}}/{{node}}/{{id}}/{{name}}: {rec_path}"
        );
        // products
        let rev: Vec<u8> = String::from_utf8(body.clone())
            .unwrap()
            .lines()
            .map(|l| l.chars().rev().collect::<String>() + "\n")
            .collect::<String>()
            .into_bytes();
        let p = fwd
            .iter()
            .find(|(n, _)| *n == format!("{}__reversed.txt", rec.id))
            .unwrap_or_else(|| panic!("reversed product of {name}: {fwd:?}"));
        assert_eq!(p.1, rev);
        let info = fwd
            .iter()
            .find(|(n, _)| *n == format!("{}__meta__info", rec.id))
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&info.1),
            format!(
                "name={name}\nuser={USER}\nsize={}\nblake3={}\nnode=test-node\n",
                body.len(),
                blake3_hex(body)
            )
        );
    }
    assert!(fwd.iter().all(|(n, _)| !n.starts_with('.')), "{fwd:?}");
}

/// Change `node.opts` then call this: rewrites config.toml and restarts the daemon.
fn rewrite_config_and_restart(node: &mut Node) {
    // The harness writes the config on start; rebuild it by starting a throwaway
    // config writer: simplest is to patch the file's tail after the [health] section.
    let text = fs::read_to_string(&node.config_path).unwrap();
    let cut = text
        .find("[health]")
        .and_then(|i| text[i..].find("\n\n").map(|j| i + j + 2))
        .unwrap_or(text.len());
    let new = format!("{}{}\n", &text[..cut], node.opts.extra);
    write_file(&node.config_path, new.as_bytes());
    node.restart();
}

/// A node whose process command is `body` (a shell script), plus extra TOML.
fn node_with_process(
    body: impl FnOnce(&Node) -> String,
    process_extra: &str,
    extra: &str,
) -> (Node, PathBuf) {
    let mut node = Node::start();
    let b = body(&node);
    let s = script(&node, "process", &b);
    node.opts.extra = format!(
        "[process]\ncommand = {}\n{process_extra}\n{extra}\n",
        toml_list(&s)
    );
    rewrite_config_and_restart(&mut node);
    (node, s)
}

#[test]
fn without_process_the_file_itself_is_forwarded() {
    let node = Node::start_opts(NodeOpts {
        extra: "[pipeline]\nrescan_interval = \"1s\"\n".into(),
        ..Default::default()
    });
    let a = random_file(&node.src.join("a.bin"), 300_000);
    let b = random_file(&node.src.join("tree/sub/b.csv"), 1234);
    let empty = random_file(&node.src.join("empty"), 0);
    upload(&node, &["a.bin", "empty"]);
    scp_o_ok(
        &node,
        &[
            "-r",
            path_str(&node.src.join("tree")),
            &node.target(USER, ""),
        ],
    );
    wait_for(&node, "3 files forwarded", LONG, || {
        forwarded(&node).len() == 3 && spool_empty(&node)
    });
    let fwd = forwarded(&node);
    for (suffix, want) in [("a.bin", &a), ("b.csv", &b), ("empty", &empty)] {
        let id = id_of(&fwd, suffix);
        assert!(id.starts_with("test-node-"), "{id}");
        let got = &fwd
            .iter()
            .find(|(n, _)| *n == format!("{id}__{suffix}"))
            .unwrap()
            .1;
        assert!(got == want, "{suffix}: forwarded bytes differ");
    }
    // archive keeps the sender's directory structure under {date}/{node}/{id}/
    let arch = tree(&node.archive);
    assert!(
        arch.iter().any(|p| p.ends_with("/tree/sub/b.csv")),
        "{arch:?}"
    );
    assert_eq!(arch.len(), 6, "3 copies + 3 records: {arch:?}");
    assert!(
        node.unexpected_files().is_empty(),
        "{:?}",
        node.unexpected_files()
    );
}

#[test]
fn failing_command_is_retried_quarantined_explained_and_requeued() {
    let mut node = Node::start();
    let fixed = node.dir.path().join("key_fixed");
    let s = script(
        &node,
        "flaky",
        &format!(
            "if [ -e {fixed} ]; then cp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/result\"; exit 0; fi\n\
             echo \"converter: cannot parse $INGEST_NAME (attempt $INGEST_ATTEMPT)\" >&2\nexit 4",
            fixed = path_str(&fixed)
        ),
    );
    node.opts.extra = format!(
        "[process]\ncommand = {}\n[retry]\nmax_attempts = 3\ninitial_backoff = \"100ms\"\nmax_backoff = \"400ms\"\n[pipeline]\nrescan_interval = \"500ms\"\n",
        toml_list(&s)
    );
    rewrite_config_and_restart(&mut node);
    let one = random_file(&node.src.join("one.dat"), 5000);
    let two = random_file(&node.src.join("two.dat"), 7000);
    upload(&node, &["one.dat", "two.dat"]);
    wait_for(&node, "both quarantined", LONG, || {
        spool_count(&node, "quarantine") == 2
    });
    assert!(forwarded(&node).is_empty());

    let list = cli_ok(&node, &["quarantine", "list"]);
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.starts_with("test-node-"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    for l in list.lines().filter(|l| l.starts_with("test-node-")) {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[1], "process", "{l}");
        assert_eq!(cols[2], "3", "{l}");
        assert!(l.contains("exit status 4"), "{l}");
    }
    let show = cli_ok(&node, &["quarantine", "show", &ids[0]]);
    assert!(show.contains("state:        quarantine"), "{show}");
    assert!(show.contains("step process gave up after 3"), "{show}");
    for n in 1..=3 {
        assert!(
            show.contains(&format!("(attempt {n})")),
            "stderr of attempt {n} kept:\n{show}"
        );
        assert!(show.contains(&format!("#{n} ")), "{show}");
    }
    assert!(show.contains("converter: cannot parse"), "{show}");
    assert!(show.contains("(exit code 4)"), "{show}");
    let status = cli_ok(&node, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("quarantine") && l.split_whitespace().nth(1) == Some("2")),
        "{status}"
    );
    // unknown id: an error
    assert!(!cli(&node, &["retry", "test-node-nope"]).status.success());

    // fix the command; requeue one by id, the other with --all
    write_file(&fixed, b"");
    let out = cli_ok(&node, &["retry", &ids[0]]);
    assert!(
        out.contains(&format!("requeued {} -> archived", ids[0])),
        "{out}"
    );
    wait_for(&node, "first forwarded", LONG, || {
        forwarded(&node).len() == 1
    });
    assert_eq!(spool_count(&node, "quarantine"), 1);
    let out = cli_ok(&node, &["retry", "--all"]);
    assert!(out.contains("1 requeued"), "{out}");
    wait_for(&node, "both forwarded", LONG, || {
        forwarded(&node).len() == 2 && spool_empty(&node)
    });
    let fwd = forwarded(&node);
    let mut got: Vec<&Vec<u8>> = fwd.iter().map(|f| &f.1).collect();
    got.sort_by_key(|b| b.len());
    assert!(
        got[0] == &one && got[1] == &two,
        "forwarded products differ"
    );
}

#[test]
fn hanging_command_is_killed_at_the_timeout() {
    let pids = tempfile::tempdir().unwrap();
    let (node, _) = node_with_process(
        |_| {
            format!(
                "echo \"working on $INGEST_ID\" >&2\nsleep 300 &\necho $! >> {}/pids\nwait",
                path_str(pids.path())
            )
        },
        "timeout = \"700ms\"",
        "[retry]\nmax_attempts = 2\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n[pipeline]\nrescan_interval = \"500ms\"\n",
    );
    write_file(&node.src.join("h.bin"), b"hang");
    let t0 = std::time::Instant::now();
    upload(&node, &["h.bin"]);
    wait_for(&node, "quarantined", LONG, || {
        spool_count(&node, "quarantine") == 1
    });
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "two attempts of 700ms took {:?}",
        t0.elapsed()
    );
    let list = cli_ok(&node, &["quarantine", "list"]);
    let id = list
        .lines()
        .find(|l| l.starts_with("test-node-"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let show = cli_ok(&node, &["quarantine", "show", &id]);
    assert_eq!(
        show.matches("killed after timeout 700ms").count(),
        2,
        "{show}"
    );
    assert!(show.contains(&format!("| working on {id}")), "{show}");
    // the whole process group was killed: the background sleeps are gone
    let pids = fs::read_to_string(pids.path().join("pids")).unwrap();
    let pids: Vec<&str> = pids.lines().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    std::thread::sleep(Duration::from_millis(200));
    for p in pids {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "sleep {p} of a timed-out command is still running: {stat}"
        );
    }
}

#[test]
fn archive_outage_is_waited_out_and_heals_with_default_retry_settings() {
    // The archive dir sits below a regular file: unavailable. Default [retry] and
    // [pipeline] settings: the node must heal by itself once the target returns.
    let node = Node::start_opts(NodeOpts::held());
    let mut sent = Vec::new();
    for i in 0..5 {
        let n = format!("o{i}.bin");
        sent.push((n.clone(), random_file(&node.src.join(&n), 1000 + i * 100)));
    }
    let names: Vec<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    upload(&node, &names);
    // uploads keep being accepted during the outage
    let late = random_file(&node.src.join("late.bin"), 777);
    upload(&node, &["late.bin"]);
    sent.push(("late.bin".into(), late));
    std::thread::sleep(Duration::from_secs(3));
    let ready = node.ready_entries();
    assert_eq!(ready.len(), 6);
    for e in &ready {
        assert!(
            !e.dir.join("state.json").exists(),
            "an outage must not count as a failed attempt of {}",
            e.record.id
        );
    }
    let status = cli_ok(&node, &["status"]);
    assert!(
        status.contains("archive target") && status.contains("UNAVAILABLE"),
        "{status}"
    );

    // the target returns
    fs::remove_file(node.dir.path().join("blocker")).unwrap();
    fs::create_dir_all(&node.archive).unwrap();
    wait_for(
        &node,
        "healed: all forwarded",
        Duration::from_secs(30),
        || forwarded(&node).len() == 6 && spool_empty(&node),
    );
    let fwd = forwarded(&node);
    for (n, body) in &sent {
        let id = id_of(&fwd, n);
        let got = &fwd.iter().find(|f| f.0 == format!("{id}__{n}")).unwrap().1;
        assert!(got == body, "{n}: forwarded content differs");
    }
    let status = cli_ok(&node, &["status"]);
    assert!(!status.contains("UNAVAILABLE"), "{status}");
}

#[test]
fn kill_9_with_files_at_every_stage_then_each_completes_exactly_once() {
    // Slow processing so that a crash finds entries in every state; the product
    // is the input plus a trailer, so duplicates or torn copies are visible.
    let (mut node, _) = node_with_process(
        |_| {
            "sleep 1\n{ cat \"$INGEST_INPUT\"; printf 'END:%s' \"$INGEST_ID\"; } > \"$INGEST_OUTPUT_DIR/out.bin\"".into()
        },
        "concurrency = 2\ntimeout = \"60s\"",
        "[pipeline]\nrescan_interval = \"500ms\"\n",
    );
    let mut sent = Vec::new();
    for i in 0..10 {
        let n = format!("k{i}.bin");
        sent.push((
            n.clone(),
            random_file(&node.src.join(&n), 20_000 + i * 1000),
        ));
    }
    let first: Vec<&str> = sent[..8].iter().map(|s| s.0.as_str()).collect();
    upload(&node, &first);
    // wait until some are forwarded while others are still being processed
    wait_for(&node, "2 forwarded", LONG, || forwarded(&node).len() >= 2);
    assert!(spool_count(&node, "archived") >= 1, "processing in flight");
    // archive outage (root renamed away) so the next uploads stay in ready
    let aside = node.dir.path().join("key_archive_aside");
    fs::rename(&node.archive, &aside).unwrap();
    let rest: Vec<&str> = sent[8..].iter().map(|s| s.0.as_str()).collect();
    upload(&node, &rest);
    std::thread::sleep(Duration::from_millis(300));
    let before = (
        spool_count(&node, "ready"),
        spool_count(&node, "archived"),
        forwarded(&node).len(),
    );
    node.kill9();
    assert!(
        before.0 >= 2 && before.1 >= 1 && before.2 >= 2,
        "{before:?}"
    );

    fs::rename(&aside, &node.archive).unwrap();
    node.restart();
    wait_for(&node, "all 10 forwarded", LONG, || {
        forwarded(&node).len() == 10 && spool_empty(&node)
    });
    // settle: nothing else appears (no duplicate from a rerun)
    std::thread::sleep(Duration::from_secs(2));
    let fwd = forwarded(&node);
    assert_eq!(
        fwd.len(),
        10,
        "{:?}",
        fwd.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let mut seen = std::collections::HashSet::new();
    for (name, content) in &fwd {
        assert!(!name.starts_with('.'), "temporary file left: {name}");
        let id = name.split("__").next().unwrap();
        assert_eq!(name, &format!("{id}__out.bin"));
        let trailer = format!("END:{id}");
        assert!(
            content.ends_with(trailer.as_bytes()),
            "{name}: torn product"
        );
        let body = &content[..content.len() - trailer.len()];
        let m: Vec<_> = sent.iter().filter(|(_, b)| b == body).collect();
        assert_eq!(m.len(), 1, "{name}: content matches no sent file");
        assert!(seen.insert(m[0].0.clone()), "{} delivered twice", m[0].0);
    }
    assert_eq!(seen.len(), 10);
    // exactly one archive copy (and record) per file
    let arch = tree(&node.archive);
    assert_eq!(arch.len(), 20, "{arch:?}");
    assert!(arch
        .iter()
        .all(|p| !p.rsplit('/').next().unwrap().starts_with('.')));
    assert_eq!(spool_count(&node, "work"), 0);
}

#[test]
fn sigterm_stops_promptly_and_a_restart_resumes() {
    let (mut node, _) = node_with_process(
        |node| {
            format!(
                "[ -e {slow} ] && sleep 30\ncp \"$INGEST_INPUT\" \"$INGEST_OUTPUT_DIR/x\"",
                slow = path_str(&node.dir.path().join("key_slow"))
            )
        },
        "timeout = \"60s\"",
        "[pipeline]\nrescan_interval = \"500ms\"\n",
    );
    write_file(&node.dir.path().join("key_slow"), b"");
    write_file(&node.src.join("t.bin"), b"term");
    upload(&node, &["t.bin"]);
    wait_for(&node, "archived", LONG, || {
        spool_count(&node, "archived") == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let st = node.stop();
    assert!(st.success(), "exit status {st:?}\n{}", node.log());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // the interrupted attempt is not counted
    let e = fs::read_dir(node.state_dir("archived"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(!e.join("state.json").exists());
    fs::remove_file(node.dir.path().join("key_slow")).unwrap();
    node.restart();
    wait_for(&node, "forwarded after restart", LONG, || {
        forwarded(&node).len() == 1 && spool_empty(&node)
    });
    assert_eq!(forwarded(&node)[0].1, b"term");
}
