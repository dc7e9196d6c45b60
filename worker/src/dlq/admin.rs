//! `worker dlq list|show|replay|purge`: the operator's tools over the dead-letter stream
//! (runbook in `docs/operations.md`, "Dead letters").

use super::entry::{DeadLetter, rfc3339};
pub use super::queue::DlqError;
use super::queue::Queue;
use crate::config::{Config, duration};
use service_kit::config::positive;
use std::io::Write;
use std::time::Duration;

/// The `dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: sequence, when, reason, detail, event id, subject.
    List {
        /// Only dead letters with this reason (`undecodable`, `invalid_event`,
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
    sequences: Vec<u64>,
    /// Every dead letter with this reason.
    #[arg(long)]
    reason: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

/// Runs `command`, printing to stdout; on failure prints one line to stderr. Returns the
/// process exit code.
pub async fn main(config: &Config, command: &DlqCommand) -> i32 {
    let mut out = std::io::stdout();
    let result = match Queue::open(&config.stream.nats_url, &config.nats_dlq_stream).await {
        Ok(queue) => run(&queue, command, &mut out).await,
        Err(e) => Err(e),
    };
    let _ = out.flush();
    match result {
        Ok(()) => 0,
        // `worker dlq list | head`: the reader has all it wanted.
        Err(DlqError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("worker dlq: {}", one_line(&e));
            1
        }
    }
}

/// The error and its sources on one line, without repeating a source that an error's own
/// message already quotes.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let message = e.to_string();
        if !line.contains(&message) {
            line = format!("{line}: {message}");
        }
        source = e.source();
    }
    line.replace(['\n', '\r'], " ")
}

pub async fn run(queue: &Queue, command: &DlqCommand, out: &mut dyn Write) -> Result<(), DlqError> {
    match command {
        DlqCommand::List {
            reason,
            limit,
            json,
        } => list(queue, reason.as_deref(), *limit, *json, out).await,
        DlqCommand::Show { sequence, json } => show(queue, *sequence, *json, out).await,
        DlqCommand::Replay { select, dry_run } => replay(queue, select, *dry_run, out).await,
        DlqCommand::Purge {
            select,
            older_than,
            dry_run,
        } => match older_than {
            Some(age) => purge_older_than(queue, *age, *dry_run, out).await,
            None => purge(queue, select, *dry_run, out).await,
        },
    }
}

/// The dead letters a selection names, one at a time.
struct Cursor<'a> {
    queue: &'a Queue,
    named: Option<std::vec::IntoIter<DeadLetter>>,
    reason: Option<&'a str>,
    next: u64,
}

impl<'a> Cursor<'a> {
    /// Named sequences are all read first: a wrong one fails the command before any change.
    async fn new(queue: &'a Queue, select: &'a Selection) -> Result<Cursor<'a>, DlqError> {
        let named = if select.sequences.is_empty() {
            None
        } else {
            let mut sequences = select.sequences.clone();
            sequences.sort_unstable();
            sequences.dedup();
            let mut letters = Vec::with_capacity(sequences.len());
            for sequence in sequences {
                letters.push(queue.get(sequence).await?);
            }
            Some(letters.into_iter())
        };
        Ok(Cursor {
            queue,
            named,
            reason: select.reason.as_deref(),
            next: 0,
        })
    }

    async fn next(&mut self) -> Result<Option<DeadLetter>, DlqError> {
        if let Some(named) = &mut self.named {
            return Ok(named.next());
        }
        next_matching(self.queue, &mut self.next, self.reason).await
    }
}

/// The next dead letter at or after `*from` with `reason` (any if `None`).
async fn next_matching(
    queue: &Queue,
    from: &mut u64,
    reason: Option<&str>,
) -> Result<Option<DeadLetter>, DlqError> {
    while let Some(dead) = queue.next(*from).await? {
        *from = dead.sequence + 1;
        if reason.is_none_or(|r| dead.reason() == Some(r)) {
            return Ok(Some(dead));
        }
    }
    Ok(None)
}

async fn list(
    queue: &Queue,
    reason: Option<&str>,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    let mut from = 0;
    let mut rows = Vec::new();
    while rows.len() < limit {
        match next_matching(queue, &mut from, reason).await? {
            Some(dead) => rows.push(dead.summary()),
            None => break,
        }
    }
    let more = rows.len() == limit && next_matching(queue, &mut from, reason).await?.is_some();
    if json {
        for row in &rows {
            let line = serde_json::to_string(row).map_err(std::io::Error::from);
            writeln!(out, "{}", line.map_err(DlqError::Output)?).map_err(DlqError::Output)?;
        }
    } else if rows.is_empty() {
        let with = reason
            .map(|r| format!(" with reason {r}"))
            .unwrap_or_default();
        writeln!(out, "No dead letters{with} in {}.", queue.name()).map_err(DlqError::Output)?;
    } else {
        let table: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.sequence.to_string(),
                    r.dead_lettered_at.clone(),
                    r.reason.clone().unwrap_or_else(|| "-".into()),
                    r.event_id.clone().unwrap_or_else(|| "-".into()),
                    r.subject.clone(),
                    shorten(r.detail.as_deref().unwrap_or("-"), 80),
                ]
            })
            .collect();
        let head = [
            "SEQ",
            "DEAD-LETTERED",
            "REASON",
            "EVENT ID",
            "SUBJECT",
            "DETAIL",
        ];
        print_table(out, head, &table).map_err(DlqError::Output)?;
    }
    if more {
        eprintln!(
            "More dead letters follow the first {limit} (raise --limit, or narrow with --reason)."
        );
    }
    Ok(())
}

fn print_table(out: &mut dyn Write, head: [&str; 6], rows: &[[String; 6]]) -> std::io::Result<()> {
    let mut widths = head.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(head))?;
    for row in rows {
        writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
    }
    Ok(())
}

/// At most `max` characters, an ellipsis marking the cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

async fn show(
    queue: &Queue,
    sequence: u64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    let dead = queue.get(sequence).await?;
    let full = dead.full();
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        if json {
            writeln!(out, "{}", serde_json::to_string(&full)?)?;
            return Ok(());
        }
        let s = &full.summary;
        writeln!(out, "Dead letter {} of {}", s.sequence, queue.name())?;
        writeln!(out, "Dead-lettered: {}", s.dead_lettered_at)?;
        writeln!(out, "Reason:        {}", s.reason.as_deref().unwrap_or("-"))?;
        writeln!(out, "Detail:        {}", s.detail.as_deref().unwrap_or("-"))?;
        writeln!(
            out,
            "Event id:      {}",
            s.event_id.as_deref().unwrap_or("-")
        )?;
        writeln!(out, "Subject:       {}", s.subject)?;
        writeln!(out, "Headers:")?;
        for (name, values) in &full.headers {
            for value in values {
                writeln!(out, "  {name}: {value}")?;
            }
        }
        writeln!(out, "Payload ({} bytes):", dead.payload.len())?;
        writeln!(out, "{}", full.payload)
    };
    write(out).map_err(DlqError::Output)
}

async fn replay(
    queue: &Queue,
    select: &Selection,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    let mut cursor = Cursor::new(queue, select).await?;
    let mut replayed = 0u64;
    let (mut without_id, mut remembered) = (Vec::new(), Vec::new());
    while let Some(dead) = cursor.next().await? {
        let subject = dead.original_subject();
        let Some(event_id) = dead.event_id() else {
            writeln!(
                out,
                "not replayed {}: no event id ({})",
                dead.sequence,
                dead.reason().unwrap_or("no reason")
            )
            .map_err(DlqError::Output)?;
            without_id.push(dead.sequence);
            continue;
        };
        if dry_run {
            writeln!(
                out,
                "would replay {} {event_id} to {subject}",
                dead.sequence
            )
            .map_err(DlqError::Output)?;
        } else {
            let headers = dead.replay_headers(&event_id);
            let ack = queue
                .republish(dead.sequence, &subject, headers, dead.payload.clone())
                .await?;
            // A duplicate PubAck stored nothing: the id may be remembered from the original
            // publish of an event that was then dead-lettered, so the entry must stay.
            if ack.duplicate {
                writeln!(
                    out,
                    "kept {} {event_id}: the events stream still remembers this event id",
                    dead.sequence
                )
                .map_err(DlqError::Output)?;
                remembered.push(dead.sequence);
                continue;
            }
            queue.delete(dead.sequence).await?;
            writeln!(out, "replayed {} {event_id} to {subject}", dead.sequence)
                .map_err(DlqError::Output)?;
        }
        replayed += 1;
    }
    let verb = if dry_run { "Would replay" } else { "Replayed" };
    writeln!(out, "{verb} {replayed} dead letter(s).").map_err(DlqError::Output)?;
    if without_id.is_empty() && remembered.is_empty() {
        Ok(())
    } else {
        Err(DlqError::NotReplayed {
            without_id,
            remembered,
        })
    }
}

async fn purge(
    queue: &Queue,
    select: &Selection,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    let verb = if dry_run { "Would purge" } else { "Purged" };
    if select.all {
        let purged = if dry_run {
            queue.count()
        } else {
            queue.purge_below(queue.end()).await?
        };
        return writeln!(out, "{verb} {purged} dead letter(s).").map_err(DlqError::Output);
    }
    let mut cursor = Cursor::new(queue, select).await?;
    let mut purged = 0u64;
    while let Some(dead) = cursor.next().await? {
        if !dry_run {
            queue.delete(dead.sequence).await?;
        }
        let id = dead.event_id().unwrap_or_else(|| "-".into());
        let reason = dead.reason().unwrap_or("-");
        writeln!(
            out,
            "{} {} {id} ({reason})",
            verb.to_lowercase(),
            dead.sequence
        )
        .map_err(DlqError::Output)?;
        purged += 1;
    }
    writeln!(out, "{verb} {purged} dead letter(s).").map_err(DlqError::Output)
}

/// Dead letters are stored in time order, so everything older than `age` lies below the
/// first one that is not: one purge up to it.
async fn purge_older_than(
    queue: &Queue,
    age: Duration,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    let cutoff = time::OffsetDateTime::now_utc() - age;
    let mut from = 0;
    let mut older = 0u64;
    let mut boundary = queue.end();
    while let Some(dead) = queue.next(from).await? {
        if dead.stored_at >= cutoff {
            boundary = dead.sequence;
            break;
        }
        older += 1;
        from = dead.sequence + 1;
    }
    let purged = if dry_run || older == 0 {
        older
    } else {
        queue.purge_below(boundary).await?
    };
    let verb = if dry_run { "Would purge" } else { "Purged" };
    writeln!(
        out,
        "{verb} {purged} dead letter(s) dead-lettered before {}.",
        rfc3339(cutoff)
    )
    .map_err(DlqError::Output)
}
