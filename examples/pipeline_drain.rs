//! Drain-rate benchmark of the pipeline (no process command): land N files of S
//! bytes directly in a fresh spool, then start the pipeline and time until every
//! file is forwarded and the spool is empty.
//!
//! `cargo run --release --example pipeline_drain -- [N] [SIZE] [DIR]`
//! (defaults: 2000 files, 4096 bytes, a temporary directory).

use ingestd::config::Config;
use ingestd::pipeline;
use ingestd::spool::{Incoming, Spool, ARCHIVED, PROCESSED, READY};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(4096);
    let tmp = tempfile::Builder::new()
        .prefix("ingestd-drain-")
        .tempdir_in(
            args.get(3)
                .map(PathBuf::from)
                .unwrap_or(std::env::temp_dir()),
        )?;
    let d = tmp.path();
    // optional: BENCH_ARCHIVE_WORKERS / BENCH_FORWARD_WORKERS (default: the config defaults)
    let mut pipeline = String::new();
    for (var, key) in [
        ("BENCH_ARCHIVE_WORKERS", "archive_workers"),
        ("BENCH_FORWARD_WORKERS", "forward_workers"),
    ] {
        if let Ok(v) = std::env::var(var) {
            pipeline.push_str(&format!("{key} = {v}\n"));
        }
    }
    let text = format!(
        "node_id = \"bench\"\n[spool]\ndir = \"{}\"\nmin_free = \"0\"\n\
         [archive]\ndir = \"{}\"\n[forward]\ndir = \"{}\"\n[pipeline]\n{pipeline}",
        d.join("spool").display(),
        d.join("archive").display(),
        d.join("out").display()
    );
    let cfg = Arc::new(Config::parse(&text, d)?);
    let spool = Arc::new(Spool::open(&cfg.spool.dir, &cfg.node_id, 1 << 40, 0)?);

    // land: group commits of 64, like a busy SCP sink
    let t0 = Instant::now();
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let mut staged = Vec::new();
        for i in chunk {
            let mut p = spool.begin(Incoming {
                user: "bench".into(),
                path: format!("dir{}/file{i}.bin", i % 10),
                mode: 0o644,
                mtime: None,
                atime: None,
                remote_addr: "127.0.0.1:1".into(),
                protocol: "scp",
            })?;
            p.write(&data)?;
            staged.push(p.complete()?);
        }
        spool.commit(staged)?;
    }
    let land = t0.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tx = ingestd::shutdown::Shutdown::new();
    let count = |p: &std::path::Path| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    let t1 = Instant::now();
    let h = rt.spawn(pipeline::run(cfg.clone(), spool.clone(), tx.clone()));
    loop {
        let fwd = count(&cfg.forward.dir);
        let left: usize = [READY, ARCHIVED, PROCESSED]
            .iter()
            .map(|s| count(&spool.dir(s)))
            .sum();
        if fwd >= n && left == 0 {
            break;
        }
        if t1.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not drained after 600s: {fwd} forwarded, {left} left");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain = t1.elapsed();
    tx.trigger();
    rt.block_on(h)?;
    println!(
        "files={n} size={size} land={:.3}s drain={:.3}s rate={:.0} files/s ({:.1} MiB/s)",
        land.as_secs_f64(),
        drain.as_secs_f64(),
        n as f64 / drain.as_secs_f64(),
        (n * size) as f64 / drain.as_secs_f64() / (1 << 20) as f64
    );
    Ok(())
}
