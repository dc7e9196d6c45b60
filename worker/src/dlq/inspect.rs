//! `dlq list` and `dlq show`: reading the DLQ, as a table or JSON.

use super::queue::{DlqError, Queue};
use std::io::Write;

pub async fn list(
    queue: &Queue,
    reason: Option<&str>,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), DlqError> {
    let mut from = 0;
    let mut rows = Vec::new();
    while rows.len() < limit {
        match queue.next_with_reason(&mut from, reason).await? {
            Some(dead) => rows.push(dead.summary()),
            None => break,
        }
    }
    let more = rows.len() == limit && queue.next_with_reason(&mut from, reason).await?.is_some();
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

pub async fn show(
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
