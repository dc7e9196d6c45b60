//! The count reports (stats, timeseries, revenue, campaigns) for every range and filter.

use crate::data::{Fact, money, ts};
use crate::{RANGES, enc, setup, sorted_counts};
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

#[tokio::test]
async fn every_count_report_matches_the_raw_events_for_every_range_and_filter() {
    let s = setup(None, None).await;
    let filters: &[(&str, fn(&Fact) -> bool)] = &[
        ("", |_| true),
        ("&source=tiktok", |f| f.source == "tiktok"),
        ("&funnelStage=bottom", |f| f.stage == "bottom"),
        ("&source=facebook&funnelStage=bottom", |f| {
            f.source == "facebook" && f.stage == "bottom"
        }),
        ("&eventType=comment", |f| f.event_type == "comment"),
        (
            "&source=facebook&funnelStage=top&eventType=video.view",
            |f| f.source == "facebook" && f.stage == "top" && f.event_type == "video.view",
        ),
    ];
    // The data set is not trivial: every event is in the first range, and the
    // two-millisecond range on a day boundary holds events.
    assert_eq!(s.within(RANGES[0].0, RANGES[0].1).len(), 1200);
    assert!(!s.within(RANGES[2].0, RANGES[2].1).is_empty());
    for (from, to) in RANGES {
        let facts = s.within(from, to);
        for (q, keep) in filters {
            let kept: Vec<&Fact> = facts.iter().copied().filter(|f| keep(f)).collect();

            // stats
            let mut by_source = BTreeMap::new();
            let mut by_stage = BTreeMap::new();
            let mut by_type = BTreeMap::new();
            for f in &kept {
                *by_source.entry(f.source.clone()).or_insert(0) += 1;
                *by_stage.entry(f.stage.clone()).or_insert(0) += 1;
                *by_type
                    .entry((f.source.clone(), f.stage.clone(), f.event_type.clone()))
                    .or_insert(0) += 1;
            }
            let expected = json!({
                "from": OffsetDateTime::parse(from, &Rfc3339).unwrap().to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap(),
                "to": OffsetDateTime::parse(to, &Rfc3339).unwrap().to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap(),
                "total": kept.len(),
                "bySource": sorted_counts(by_source).iter().map(|(k, n)| json!({"source": k, "count": n})).collect::<Vec<_>>(),
                "byFunnelStage": sorted_counts(by_stage).iter().map(|(k, n)| json!({"funnelStage": k, "count": n})).collect::<Vec<_>>(),
                "byEventType": sorted_counts(by_type).iter().map(|((a, b, c), n)| json!({"source": a, "funnelStage": b, "eventType": c, "count": n})).collect::<Vec<_>>(),
            });
            let got = s
                .ok(&format!(
                    "/analytics/stats?from={}&to={}{q}",
                    enc(from),
                    enc(to)
                ))
                .await;
            assert_eq!(got, expected, "stats {from} {to} {q}");

            // timeseries, every interval that fits
            for (interval, secs) in [("minute", 60i64), ("hour", 3600), ("day", 86_400)] {
                let (f0, t0) = (ts(from), ts(to));
                let first = f0.unix_timestamp().div_euclid(secs) * secs;
                let last_instant = t0 - time::Duration::NANOSECOND;
                let last = last_instant.unix_timestamp().div_euclid(secs) * secs;
                if (last - first) / secs + 1 > 10_000 {
                    continue;
                }
                let mut points = BTreeMap::new();
                let mut b = first;
                while b <= last {
                    points.insert(b, (0i64, Decimal::ZERO));
                    b += secs;
                }
                for f in &kept {
                    let p = points
                        .get_mut(&(f.at.unix_timestamp().div_euclid(secs) * secs))
                        .unwrap();
                    p.0 += 1;
                    p.1 += f.revenue.unwrap_or_default();
                }
                let expected = json!({"interval": interval, "tz": "UTC", "points": points.iter().map(|(b, (n, v))| json!({
                    "bucket": OffsetDateTime::from_unix_timestamp(*b).unwrap().format(&Rfc3339).unwrap(),
                    "count": n, "revenue": money(*v)})).collect::<Vec<_>>()});
                let got = s
                    .ok(&format!(
                        "/analytics/timeseries?interval={interval}&from={}&to={}{q}",
                        enc(from),
                        enc(to)
                    ))
                    .await;
                assert_eq!(got, expected, "timeseries {interval} {from} {to} {q}");
            }
        }

        // revenue, with and without source and campaign
        for (q, keep) in [
            ("", (|_| true) as fn(&Fact) -> bool),
            ("&source=tiktok", |f| f.source == "tiktok"),
            ("&campaignId=cmp-2", |f| {
                f.campaign.as_deref() == Some("cmp-2")
            }),
            ("&campaignId=cmp-2&source=tiktok", |_| false),
            ("&campaignId=nope", |_| false),
        ] {
            let mut by_source: BTreeMap<String, (Decimal, i64)> = BTreeMap::new();
            for f in facts.iter().filter(|f| keep(f)) {
                if let Some(v) = f.revenue {
                    let e = by_source.entry(f.source.clone()).or_default();
                    e.0 += v;
                    e.1 += 1;
                }
            }
            let mut rows: Vec<(String, (Decimal, i64))> = by_source.into_iter().collect();
            rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            let expected = json!({
                "total": money(rows.iter().map(|r| r.1.0).sum()),
                "purchases": rows.iter().map(|r| r.1.1).sum::<i64>(),
                "bySource": rows.iter().map(|(s, (v, n))| json!({"source": s, "revenue": money(*v), "purchases": n})).collect::<Vec<_>>(),
            });
            let got = s
                .ok(&format!(
                    "/analytics/revenue?from={}&to={}{q}",
                    enc(from),
                    enc(to)
                ))
                .await;
            assert_eq!(got, expected, "revenue {from} {to} {q}");
        }

        // campaigns/top by revenue and by events
        let mut campaigns: BTreeMap<String, (i64, i64, Decimal)> = BTreeMap::new();
        for f in &facts {
            if let Some(c) = &f.campaign {
                let e = campaigns.entry(c.clone()).or_default();
                e.0 += 1;
                e.1 += i64::from(f.revenue.is_some());
                e.2 += f.revenue.unwrap_or_default();
            }
        }
        for by in ["revenue", "events"] {
            let mut rows: Vec<(String, (i64, i64, Decimal))> =
                campaigns.clone().into_iter().collect();
            if by == "events" {
                rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            } else {
                rows.sort_by(|a, b| b.1.2.cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
            }
            rows.truncate(2);
            let expected = json!({"campaigns": rows.iter().map(|(c, (n, p, v))| json!({
                "campaignId": c, "events": n, "purchases": p, "revenue": money(*v)})).collect::<Vec<_>>()});
            let got = s
                .ok(&format!(
                    "/analytics/campaigns/top?by={by}&limit=2&from={}&to={}",
                    enc(from),
                    enc(to)
                ))
                .await;
            assert_eq!(got, expected, "campaigns {by} {from} {to}");
        }
    }
}
