//! The `ingestd` command line: `run` a node, `check-config`, and the operator
//! commands `status`, `quarantine list|show`, `retry`.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ingestd::config::Config;
use ingestd::{admin, hostkey, inbox, pipeline, server, spool::Spool};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ingestd",
    version,
    about = "Durable high-volume file ingest over SCP and SFTP"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (without --config: the embedded default, data under ./ingestd-data).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log as JSON lines instead of key=value text.
        #[arg(long)]
        log_json: bool,
    },
    /// Validate a configuration file and exit (non-zero with the key and the problem).
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Counts per pipeline stage and quarantine, with the oldest age.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Inspect quarantined files.
    Quarantine {
        #[command(subcommand)]
        cmd: QuarantineCmd,
    },
    /// Requeue a quarantined file (or all of them).
    Retry {
        /// Entry id.
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QuarantineCmd {
    /// One line per quarantined file.
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Everything known about one quarantined file, every attempt's reason.
    Show {
        id: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { config, log_json } => run(config, log_json),
        Cmd::CheckConfig { config } => Config::load(config.as_deref()).map(|c| {
            println!("configuration OK (node_id = {:?})", c.node_id);
        }),
        Cmd::Status { config } => Config::load(config.as_deref()).and_then(|c| admin::status(&c)),
        Cmd::Quarantine {
            cmd: QuarantineCmd::List { config },
        } => Config::load(config.as_deref()).and_then(|c| admin::quarantine_list(&c)),
        Cmd::Quarantine {
            cmd: QuarantineCmd::Show { id, config },
        } => Config::load(config.as_deref()).and_then(|c| admin::quarantine_show(&c, &id)),
        Cmd::Retry { id, all, config } => Config::load(config.as_deref()).and_then(|c| {
            if !all && id.is_none() {
                anyhow::bail!("retry: give an entry id or --all");
            }
            admin::retry(&c, id.as_deref())
        }),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingestd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn run(config: Option<PathBuf>, log_json: bool) -> Result<()> {
    init_logging(log_json);
    let cfg = Arc::new(Config::load(config.as_deref())?);
    // Every upload in flight holds a blocking-pool thread (its writer); leave room
    // for all of them plus the short blocking jobs (auth, commits).
    let blocking = cfg.ssh.max_sessions * 32 + 256;
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking)
        .enable_all()
        .build()?
        .block_on(run_node(cfg))
}

async fn run_node(cfg: Arc<Config>) -> Result<()> {
    let spool = Arc::new(
        Spool::open(
            &cfg.spool.dir,
            &cfg.node_id,
            cfg.spool.max_file_size.0,
            cfg.spool.min_free.0,
        )
        .with_context(|| format!("spool.dir: cannot use {}", cfg.spool.dir.display()))?,
    );
    let keys = hostkey::load_all(&cfg.ssh.host_key.to_vec())?;
    let russh_cfg = Arc::new(server::russh_config(&cfg, keys));
    let listeners = server::bind(&cfg).await?;
    let shared = server::Shared::new(cfg.clone(), spool.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let pipeline = tokio::spawn(pipeline::run(cfg.clone(), spool.clone(), stop_rx.clone()));
    let inbox = cfg
        .inbox
        .clone()
        .map(|i| tokio::spawn(inbox::run(i, spool.clone(), stop_rx.clone())));
    if !cfg.health.listen.is_empty() {
        let l = tokio::net::TcpListener::bind(&cfg.health.listen)
            .await
            .with_context(|| format!("health.listen: cannot listen on {}", cfg.health.listen))?;
        tokio::spawn(ingestd::health::serve(l, shared.clone(), stop_rx.clone()));
    }
    let ssh = tokio::spawn(server::serve(
        shared.clone(),
        russh_cfg,
        listeners,
        stop_rx.clone(),
    ));
    tracing::info!(node = %cfg.node_id, spool = %cfg.spool.dir.display(), "ingestd started");

    wait_for_signal().await;
    tracing::info!("stopping: no new connections; finishing transfers in flight");
    let _ = stop_tx.send(true);
    let _ = ssh.await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while shared.connections.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = pipeline.await;
    if let Some(i) = inbox {
        let _ = i.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
