//! The `ingestd` command line: `run` a node, `check-config`, and the operator
//! commands `status`, `quarantine list|show`, `retry`. Parsing and dispatch only:
//! `app` runs a node, `ops::admin` does the operator commands.

use crate::config::Config;
use crate::ops::admin;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Validate a configuration file and what it names (commands, keys, directories,
    /// addresses) as the user running it; exit non-zero naming each key and problem.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check permissions as this user (the daemon's, e.g. `ingestd`); needs root.
        /// Default: the user running the command.
        #[arg(long)]
        user: Option<String>,
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

/// The whole binary: parse the command line, run the command, map errors to exit 1.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { config, log_json } => crate::app::run(config, log_json),
        Cmd::CheckConfig { config, user } => Config::load(config.as_deref()).and_then(|c| {
            if let Some(u) = &user {
                crate::ops::check::become_user(u)?;
            }
            let r =
                crate::ops::check::check(&c, crate::ops::check::node_id_given(config.as_deref()));
            for w in &r.warnings {
                eprintln!("ingestd: warning: {w}");
            }
            for e in &r.errors {
                eprintln!("ingestd: {e}");
            }
            if !r.errors.is_empty() {
                anyhow::bail!(
                    "configuration has {} problem(s) that would fail at run time",
                    r.errors.len()
                );
            }
            println!("configuration OK (node_id = {:?})", c.node_id);
            Ok(())
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
