//! `dlq replay` and `dlq purge`: the commands that change the DLQ.

use super::admin::Selection;
use super::entry::{DeadLetter, rfc3339};
use super::queue::{DlqError, Queue};
use std::io::Write;
use std::time::Duration;

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
        self.queue
            .next_with_reason(&mut self.next, self.reason)
            .await
    }
}

pub async fn replay(
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

pub async fn purge(
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
pub async fn purge_older_than(
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
