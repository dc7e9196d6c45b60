//! Disk: what the stored events take, by part, per million events (the sizing guide's
//! figures, docs/operations.md). Read at the end of a run from PostgreSQL's relation sizes,
//! and from the events stream while the worker is paused; works on the binaries before partitioning too (the
//! `events` table is then its own only leaf, and there are no dedup keys).

use serde::Serialize;
use std::fmt::Write as _;

/// Sizes at the end of a run, bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Disk {
    /// Rows in `events`.
    pub events: i64,
    /// `events`, every partition with its indexes and TOAST.
    pub raw_bytes: i64,
    /// `event_keys` (the dedup), with its indexes.
    pub keys_bytes: i64,
    /// `rollup_*`.
    pub rollup_bytes: i64,
    /// `user_sets`, `user_totals`, `user_keys` and the lists not compacted yet.
    pub set_bytes: i64,
    /// The events stream at the end of "ingestion alone" (worker paused): bytes,
    /// messages and events held (a work queue is empty once drained).
    pub stream: Option<StreamHeld>,
}

/// What the events stream held at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StreamHeld {
    pub bytes: u64,
    pub messages: u64,
    pub events: u64,
}

const SIZES_SQL: &str = "\
SELECT (SELECT count(*) FROM events),
       (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
        FROM pg_partition_tree('events') WHERE isleaf),
       coalesce(pg_total_relation_size(to_regclass('event_keys')), 0)::bigint,
       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
        WHERE c.relkind = 'r' AND c.relname LIKE 'rollup\\_%'
          AND c.relnamespace = 'public'::regnamespace),
       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
        WHERE c.relkind = 'r' AND c.relname IN ('user_sets', 'user_totals', 'user_keys',
                                                 'user_sets_pending', 'user_sets_dirty')
          AND c.relnamespace = 'public'::regnamespace)";

/// Measures the database's parts; the stream's figures are the caller's.
pub async fn measure(db: &tokio_postgres::Client) -> Result<Disk, tokio_postgres::Error> {
    let row = db.query_one(SIZES_SQL, &[]).await?;
    Ok(Disk {
        events: row.get(0),
        raw_bytes: row.get(1),
        keys_bytes: row.get(2),
        rollup_bytes: row.get(3),
        set_bytes: row.get(4),
        ..Disk::default()
    })
}

/// MiB per million stored events.
pub fn per_million(bytes: i64, events: i64) -> Option<f64> {
    (events > 0).then(|| bytes as f64 / (1 << 20) as f64 * 1e6 / events as f64)
}

impl Disk {
    /// The report's "Disk" section.
    pub fn render(&self, s: &mut String) {
        let _ = writeln!(s, "## Disk");
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "At the end of the run, {} events stored. Raw rows and keys grow with events; \
             rollups and sets with time buckets and distinct users, so theirs hold for this \
             run's data only.",
            self.events
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "| part | size | MiB per million events |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (part, bytes) in [
            (
                "raw events (`events`, all partitions, indexes)",
                self.raw_bytes,
            ),
            ("dedup keys (`event_keys`)", self.keys_bytes),
            ("rollups (`rollup_*`)", self.rollup_bytes),
            ("per-user sets (`user_*`)", self.set_bytes),
        ] {
            let per = per_million(bytes, self.events).map_or("-".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "| {part} | {:.1} MiB | {per} |",
                bytes as f64 / 1048576.0
            );
        }
        if let Some(held) = self.stream.filter(|h| h.events > 0) {
            let _ = writeln!(
                s,
                "| JetStream `EVENTS`, worker paused: {} events in {} messages | {:.1} MiB | \
                 {:.1} ({:.0} bytes per event) |",
                held.events,
                held.messages,
                held.bytes as f64 / 1048576.0,
                held.bytes as f64 / 1048576.0 * 1e6 / held.events as f64,
                held.bytes as f64 / held.events as f64
            );
        }
        let _ = writeln!(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_given_per_million_events() {
        assert_eq!(per_million(0, 0), None);
        assert_eq!(per_million(1 << 20, 1_000_000), Some(1.0));
        assert_eq!(per_million(512 << 20, 2_000_000), Some(256.0));
    }

    #[test]
    fn the_section_lists_every_part_and_the_stream_per_event() {
        let disk = Disk {
            events: 2_000_000,
            raw_bytes: 1 << 30,
            keys_bytes: 256 << 20,
            rollup_bytes: 1 << 20,
            set_bytes: 8 << 20,
            stream: Some(StreamHeld {
                bytes: 40_000_000,
                messages: 1_000,
                events: 100_000,
            }),
        };
        let mut s = String::new();
        disk.render(&mut s);
        assert!(
            s.contains("| dedup keys (`event_keys`) | 256.0 MiB | 128.0 |"),
            "{s}"
        );
        assert!(
            s.contains("| raw events (`events`, all partitions, indexes) | 1024.0 MiB | 512.0 |"),
            "{s}"
        );
        assert!(
            s.contains("100000 events in 1000 messages | 38.1 MiB | 381.5 (400 bytes per event) |"),
            "{s}"
        );
    }
}
