//! Binary `COPY` of rows: the insert path's first attempt, and the benchmarks' ceiling.

use super::Row;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The columns [`copy_rows`] fills, in order (then `user_key` when keys are given).
const COPY_COLUMNS: &str = "event_id, event_time, source, funnel_stage, event_type, user_id, \
    data, extra, ingested_at, country, campaign_id, revenue";

const COPY_TYPES: [Type; 13] = [
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::INT4,
];

/// JSON text sent as `jsonb` in binary COPY (version byte 1, then the text).
#[derive(Debug)]
struct Jsonb<'a>(&'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

/// Loads rows with binary `COPY` into `table` (`events` or a table like it), with no
/// dedup (see [`copy_keys`]) and no rollup maintenance: the insert path's first attempt,
/// the ceiling the benchmarks compare the worker's path with, and the loader of their
/// large data sets (with their keys; run `rebuild_rollups()` afterwards). `keys` are the rows' user keys ([`user_keys`]), or empty: the column is
/// then left out (NULL in `events`, which readers look up; a table like it may lack it).
/// Returns the rows copied.
pub async fn copy_rows(
    client: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: &[Row],
    keys: &[Option<i32>],
) -> Result<u64, tokio_postgres::Error> {
    let (columns, types) = if keys.is_empty() {
        (COPY_COLUMNS.to_owned(), &COPY_TYPES[..12])
    } else {
        (format!("{COPY_COLUMNS}, user_key"), &COPY_TYPES[..])
    };
    let sink = client
        .copy_in(&format!("COPY {table} ({columns}) FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = std::pin::pin!(writer);
    for (i, r) in rows.iter().enumerate() {
        let key = keys.get(i).copied().flatten();
        let values: [&(dyn ToSql + Sync); 13] = [
            &r.event_id,
            &r.event_time,
            &r.source.as_str(),
            &r.funnel_stage.as_str(),
            &r.event_type,
            &r.user_id,
            &Jsonb(&r.data),
            &r.extra.as_deref().map(Jsonb),
            &r.ingested_at,
            &r.country,
            &r.campaign_id,
            &r.revenue,
            &key,
        ];
        writer.as_mut().write(&values[..types.len()]).await?;
    }
    writer.as_mut().finish().await
}

/// Loads the rows' dedup keys (id and event time) with binary `COPY` into `table`
/// (`event_keys` or a table like it): fails on an id stored before or repeated in `rows`,
/// which sends the insert path's batch to `INSERT ... ON CONFLICT`. A loader of events
/// loads their keys with them, or the dedup would not know them.
pub async fn copy_keys(
    client: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: &[Row],
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .copy_in(&format!(
            "COPY {table} (event_id, event_time) FROM STDIN BINARY"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES[..2]);
    let mut writer = std::pin::pin!(writer);
    for r in rows {
        writer.as_mut().write(&[&r.event_id, &r.event_time]).await?;
    }
    writer.as_mut().finish().await
}
