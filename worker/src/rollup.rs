//! Rollup maintenance: the rows a batch really inserted are aggregated here by time
//! bucket and dimensions, then added to the rollup tables in the same transaction.
//!
//! Keys are upserted in sorted order (a `BTreeMap`), so concurrent batches lock rollup
//! rows in the same order and cannot deadlock on each other.
//!
//! The per-user sets (`compact.rs`) are not written here: the batch marks the quarter-hour
//! slots it added events to as dirty and lists the facts of the events it stored, per
//! slot, in `user_sets_pending`; the compactor adds them to the slots' blocks.

use crate::store::{Row, WriteError};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use service_kit::schema::Grain;
use shared_events::{FunnelStage, Source};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use user_sets::{ActivityRef, encode_activities, slot_floor};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    events: i64,
    purchases: i64,
    revenue: Decimal,
}

impl Totals {
    /// Counts one row. Sums are checked: validation bounds every amount, so only a
    /// batch of impossibly many purchases could overflow, but that must refuse the
    /// batch's rows, not panic the worker.
    fn add(&mut self, row: &Row) -> Result<(), WriteError> {
        self.merge(&Totals {
            events: 1,
            purchases: i64::from(row.revenue.is_some()),
            revenue: row.revenue.unwrap_or_default(),
        })
    }

    fn merge(&mut self, other: &Totals) -> Result<(), WriteError> {
        self.events = self
            .events
            .checked_add(other.events)
            .ok_or(WriteError::Overflow)?;
        self.purchases = (self.purchases)
            .checked_add(other.purchases)
            .ok_or(WriteError::Overflow)?;
        self.revenue = (self.revenue)
            .checked_add(other.revenue)
            .ok_or(WriteError::Overflow)?;
        Ok(())
    }
}

type EventsKey<'a> = (i8, OffsetDateTime, &'static str, &'static str, &'a str);
type CampaignKey<'a> = (i8, OffsetDateTime, &'a str);
/// Source and stage are each a value or "" (any).
type SeriesKey = (i8, OffsetDateTime, &'static str, &'static str);

const EVENTS_SQL: &str = "\
INSERT INTO rollup_events AS r (grain, bucket, source, funnel_stage, event_type, events, purchases, revenue)
SELECT * FROM unnest($1::\"char\"[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::numeric[])
ON CONFLICT (grain, bucket, source, funnel_stage, event_type) DO UPDATE
SET events = r.events + excluded.events, purchases = r.purchases + excluded.purchases,
    revenue = r.revenue + excluded.revenue";

const SERIES_SQL: &str = "\
INSERT INTO rollup_series AS r (grain, bucket, source, funnel_stage, events, revenue)
SELECT * FROM unnest($1::\"char\"[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[], $6::numeric[])
ON CONFLICT (grain, bucket, source, funnel_stage) DO UPDATE
SET events = r.events + excluded.events, revenue = r.revenue + excluded.revenue";

/// Marks the slots dirty, bumping the generation of a mark already there: a compactor that
/// read the mark before this batch committed sees the change and leaves the slot dirty.
/// A new mark asks for no full rebuild: the batch lists its events ([`PENDING_SQL`]). The
/// row stays locked until this transaction commits; a compactor skips it meanwhile.
const DIRTY_SQL: &str = "\
INSERT INTO user_sets_dirty AS d (slot, full_gen) SELECT s, NULL FROM unnest($1::timestamptz[]) AS s
ON CONFLICT (slot) DO UPDATE SET gen = d.gen + 1";

/// Lists the events stored, one row per slot (`user_sets::encode_activities`).
const PENDING_SQL: &str = "\
INSERT INTO user_sets_pending (slot, facts) SELECT * FROM unnest($1::timestamptz[], $2::bytea[])";

const CAMPAIGNS_SQL: &str = "\
INSERT INTO rollup_campaigns AS r (grain, bucket, campaign_id, events, purchases, revenue)
SELECT * FROM unnest($1::\"char\"[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[], $6::numeric[])
ON CONFLICT (grain, bucket, campaign_id) DO UPDATE
SET events = r.events + excluded.events, purchases = r.purchases + excluded.purchases,
    revenue = r.revenue + excluded.revenue";

/// Adds the newly inserted rows (`inserted[i]`, with their users' `keys`) to every rollup.
pub async fn add(
    client: &impl GenericClient,
    rows: &[Row],
    keys: &[Option<i32>],
    inserted: &[bool],
) -> Result<(), WriteError> {
    // One lookup per row: the batch's rows by minute, source, stage and type (a batch
    // spans a minute or two, so a few dozen entries), and by hour and campaign. Every
    // rollup key is derived from those afterwards (the per-grain, per-filter keys looked
    // up for each row cost ~15% of the worker's CPU).
    let mut minutes: BTreeMap<(OffsetDateTime, Source, FunnelStage, &str), Totals> =
        BTreeMap::new();
    let mut campaign_hours: BTreeMap<(OffsetDateTime, &str), Totals> = BTreeMap::new();
    let mut listed: BTreeMap<OffsetDateTime, Vec<ActivityRef>> = BTreeMap::new();
    for (row, &key) in rows
        .iter()
        .zip(keys)
        .zip(inserted)
        .filter(|(_, new)| **new)
        .map(|(r, _)| r)
    {
        let minute = Grain::Minute.floor(row.event_time);
        minutes
            .entry((minute, row.source, row.funnel_stage, &row.event_type))
            .or_default()
            .add(row)?;
        if let Some(campaign) = row.campaign_id.as_deref() {
            campaign_hours
                .entry((Grain::Hour.floor(minute), campaign))
                .or_default()
                .add(row)?;
        }
        listed
            .entry(slot_floor(minute))
            .or_default()
            .push(ActivityRef {
                source: row.source,
                funnel_stage: row.funnel_stage,
                event_type: &row.event_type,
                user_id: &row.user_id,
                user_key: key,
                country: row.country.as_deref(),
                revenue: row.revenue,
                demographics: row.demographics.each_ref().map(Option::as_deref),
            });
    }

    let mut events: BTreeMap<EventsKey, Totals> = BTreeMap::new();
    let mut series: BTreeMap<SeriesKey, Totals> = BTreeMap::new();
    for (&(minute, source, stage, event_type), t) in &minutes {
        let (source, stage) = (source.as_str(), stage.as_str());
        for grain in [Grain::Minute, Grain::Hour, Grain::Day] {
            let (g, bucket) = (grain.code(), grain.floor(minute));
            events
                .entry((g, bucket, source, stage, event_type))
                .or_default()
                .merge(t)?;
            for (s, st) in [("", ""), (source, ""), ("", stage), (source, stage)] {
                series.entry((g, bucket, s, st)).or_default().merge(t)?;
            }
        }
    }
    let mut campaigns: BTreeMap<CampaignKey, Totals> = BTreeMap::new();
    for (&(hour, campaign), t) in &campaign_hours {
        for grain in [Grain::Hour, Grain::Day] {
            campaigns
                .entry((grain.code(), grain.floor(hour), campaign))
                .or_default()
                .merge(t)?;
        }
    }
    if events.is_empty() {
        return Ok(());
    }

    let totals = |m: &mut dyn Iterator<Item = Totals>| -> (Vec<i64>, Vec<i64>, Vec<Decimal>) {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for t in m {
            out.0.push(t.events);
            out.1.push(t.purchases);
            out.2.push(t.revenue);
        }
        out
    };

    let statement = client.prepare_cached(EVENTS_SQL).await?;
    let (n, p, r) = totals(&mut events.values().copied());
    let grains: Vec<i8> = events.keys().map(|k| k.0).collect();
    let buckets: Vec<OffsetDateTime> = events.keys().map(|k| k.1).collect();
    let sources: Vec<&str> = events.keys().map(|k| k.2).collect();
    let stages: Vec<&str> = events.keys().map(|k| k.3).collect();
    let types: Vec<&str> = events.keys().map(|k| k.4).collect();
    client
        .execute(
            &statement,
            &[&grains, &buckets, &sources, &stages, &types, &n, &p, &r],
        )
        .await?;

    if !campaigns.is_empty() {
        let statement = client.prepare_cached(CAMPAIGNS_SQL).await?;
        let (n, p, r) = totals(&mut campaigns.values().copied());
        let grains: Vec<i8> = campaigns.keys().map(|k| k.0).collect();
        let buckets: Vec<OffsetDateTime> = campaigns.keys().map(|k| k.1).collect();
        let ids: Vec<&str> = campaigns.keys().map(|k| k.2).collect();
        client
            .execute(&statement, &[&grains, &buckets, &ids, &n, &p, &r])
            .await?;
    }

    let statement = client.prepare_cached(SERIES_SQL).await?;
    let (n, _, r) = totals(&mut series.values().copied());
    let grains: Vec<i8> = series.keys().map(|k| k.0).collect();
    let buckets: Vec<OffsetDateTime> = series.keys().map(|k| k.1).collect();
    let sources: Vec<&str> = series.keys().map(|k| k.2).collect();
    let stages: Vec<&str> = series.keys().map(|k| k.3).collect();
    client
        .execute(&statement, &[&grains, &buckets, &sources, &stages, &n, &r])
        .await?;

    let statement = client.prepare_cached(PENDING_SQL).await?;
    let (slots, facts): (Vec<OffsetDateTime>, Vec<Vec<u8>>) = listed
        .into_iter()
        .map(|(slot, events)| (slot, encode_activities(events)))
        .unzip();
    client.execute(&statement, &[&slots, &facts]).await?;
    let statement = client.prepare_cached(DIRTY_SQL).await?;
    client.execute(&statement, &[&slots]).await?;
    Ok(())
}
