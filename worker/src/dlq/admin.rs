//! `worker dlq list|show|replay|purge`: the operator's tools over the dead-letter stream
//! (runbook in `docs/operations.md`, "Dead letters").

pub use super::queue::DlqError;
use super::queue::Queue;
use super::{act, inspect};
use crate::config::Config;
use service_kit::config::{duration, positive};
use std::io::Write;
use std::time::Duration;

/// The `dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: sequence, when, reason, detail, event id, subject.
    List {
        /// Only dead letters with this reason (`undecodable`, `invalid_event`, `expired`,
        /// `refused_by_database`, `max_deliver_exceeded`).
        #[arg(long)]
        reason: Option<String>,
        /// Most dead letters listed.
        #[arg(long, default_value = "100", value_parser = positive)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one dead letter: every header and the payload.
    Show {
        /// Its sequence in the DLQ (from `dlq list`).
        sequence: u64,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Republish dead letters to their original subject with their event id as
    /// `Nats-Msg-Id`; each leaves the DLQ only once the events stream has acknowledged it.
    Replay {
        #[command(flatten)]
        select: Selection,
        /// Print what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        select: Selection,
        /// Every dead letter stored longer ago than this (`7d`, `12h`, `90m`, `45s`).
        #[arg(long, value_parser = duration, group = "selection")]
        older_than: Option<Duration>,
        /// Print what would be purged; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters a command acts on: exactly one of these.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "selection", required = true, multiple = false)]
pub struct Selection {
    /// DLQ sequences (from `dlq list`).
    pub(super) sequences: Vec<u64>,
    /// Every dead letter with this reason.
    #[arg(long)]
    pub(super) reason: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    pub(super) all: bool,
}

/// Runs `command`, printing to stdout; on failure prints one line to stderr. Returns the
/// process exit code.
pub async fn main(config: &Config, command: &DlqCommand) -> i32 {
    let mut out = std::io::stdout();
    let result = match Queue::open(&config.stream, &config.nats_dlq_stream).await {
        Ok(queue) => run(&queue, command, &mut out).await,
        Err(e) => Err(e),
    };
    let _ = out.flush();
    match result {
        Ok(()) => 0,
        // `worker dlq list | head`: the reader has all it wanted.
        Err(DlqError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!(
                "worker dlq: {}",
                service_kit::error::error_text(&e).replace(['\n', '\r'], " ")
            );
            1
        }
    }
}

async fn run(queue: &Queue, command: &DlqCommand, out: &mut dyn Write) -> Result<(), DlqError> {
    match command {
        DlqCommand::List {
            reason,
            limit,
            json,
        } => inspect::list(queue, reason.as_deref(), *limit, *json, out).await,
        DlqCommand::Show { sequence, json } => inspect::show(queue, *sequence, *json, out).await,
        DlqCommand::Replay { select, dry_run } => act::replay(queue, select, *dry_run, out).await,
        DlqCommand::Purge {
            select,
            older_than,
            dry_run,
        } => match older_than {
            Some(age) => act::purge_older_than(queue, *age, *dry_run, out).await,
            None => act::purge(queue, select, *dry_run, out).await,
        },
    }
}
