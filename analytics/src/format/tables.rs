//! Each report's table, as `docs/api.md` ("CSV export") lists them: the columns are named
//! after the JSON fields they hold, a row per leaf of the answer repeats its parents'
//! fields, and where an answer has several lists, or figures beside its list, a first
//! column `section` names the JSON field the row comes from. Cells a row has no field for
//! are empty.

use super::{Cell, Rows, Table};
use crate::routes::{campaigns, demographics, funnel, geo, revenue, stats, timeseries, users};
use Cell::{Empty, Int, Plain, Ratio, Text};

impl Table for stats::Stats {
    const NAME: &'static str = "stats";
    const HEADER: &'static [&'static str] = &[
        "section",
        "from",
        "to",
        "source",
        "funnelStage",
        "eventType",
        "count",
    ];

    fn rows(&self, rows: &mut Rows<'_>) {
        let (from, to) = (Plain(&self.from), Plain(&self.to));
        rows.push(&[
            Plain("total"),
            from,
            to,
            Empty,
            Empty,
            Empty,
            Int(self.total),
        ]);
        for s in &self.by_source {
            rows.push(&[
                Plain("bySource"),
                from,
                to,
                Plain(&s.source),
                Empty,
                Empty,
                Int(s.count),
            ]);
        }
        for s in &self.by_funnel_stage {
            rows.push(&[
                Plain("byFunnelStage"),
                from,
                to,
                Empty,
                Plain(&s.funnel_stage),
                Empty,
                Int(s.count),
            ]);
        }
        for t in &self.by_event_type {
            rows.push(&[
                Plain("byEventType"),
                from,
                to,
                Plain(&t.source),
                Plain(&t.funnel_stage),
                Plain(&t.event_type),
                Int(t.count),
            ]);
        }
    }
}

impl Table for timeseries::Timeseries {
    const NAME: &'static str = "timeseries";
    const HEADER: &'static [&'static str] = &["bucket", "count", "revenue"];

    fn rows(&self, rows: &mut Rows<'_>) {
        for p in &self.points {
            rows.push(&[Plain(&p.bucket), Int(p.count), Plain(&p.revenue)]);
        }
    }
}

impl Table for funnel::Funnel {
    const NAME: &'static str = "funnel";
    const HEADER: &'static [&'static str] = &[
        "source",
        "topEvents",
        "bottomEvents",
        "eventConversion",
        "topUsers",
        "convertedUsers",
        "userConversion",
        "funnelStage",
        "eventType",
        "events",
        "users",
    ];

    fn rows(&self, rows: &mut Rows<'_>) {
        for s in &self.sources {
            let mut row = [Empty; 11];
            row[..7].copy_from_slice(&[
                Plain(s.source),
                Int(s.top_events),
                Int(s.bottom_events),
                Ratio(s.event_conversion),
                Int(s.top_users),
                Int(s.converted_users),
                Ratio(s.user_conversion),
            ]);
            // Every source lists every event type of its own; were one without any, its
            // totals would still get a row.
            if s.steps.is_empty() {
                rows.push(&row);
            }
            for step in &s.steps {
                row[7..].copy_from_slice(&[
                    Plain(step.funnel_stage),
                    Plain(step.event_type),
                    Int(step.events),
                    Int(step.users),
                ]);
                rows.push(&row);
            }
        }
    }
}

impl Table for geo::Geo {
    const NAME: &'static str = "geo";
    const HEADER: &'static [&'static str] = &["section", "country", "events", "users", "revenue"];

    fn rows(&self, rows: &mut Rows<'_>) {
        for c in &self.countries {
            rows.push(&[
                Plain("countries"),
                Text(&c.country),
                Int(c.events),
                Int(c.users),
                Plain(&c.revenue),
            ]);
        }
        rows.push(&[
            Plain("unknownCountryEvents"),
            Empty,
            Int(self.unknown_country_events),
            Empty,
            Empty,
        ]);
    }
}

impl Table for revenue::Revenue {
    const NAME: &'static str = "revenue";
    const HEADER: &'static [&'static str] = &["section", "source", "revenue", "purchases"];

    fn rows(&self, rows: &mut Rows<'_>) {
        rows.push(&[
            Plain("total"),
            Empty,
            Plain(&self.total),
            Int(self.purchases),
        ]);
        for s in &self.by_source {
            rows.push(&[
                Plain("bySource"),
                Plain(&s.source),
                Plain(&s.revenue),
                Int(s.purchases),
            ]);
        }
    }
}

impl Table for campaigns::TopCampaigns {
    const NAME: &'static str = "campaigns-top";
    const HEADER: &'static [&'static str] = &["campaignId", "events", "purchases", "revenue"];

    fn rows(&self, rows: &mut Rows<'_>) {
        for c in &self.campaigns {
            rows.push(&[
                Text(&c.campaign_id),
                Int(c.events),
                Int(c.purchases),
                Plain(&c.revenue),
            ]);
        }
    }
}

impl Table for users::TopUsers {
    const NAME: &'static str = "users-top";
    const HEADER: &'static [&'static str] = &["source", "userId", "events", "revenue"];

    fn rows(&self, rows: &mut Rows<'_>) {
        for u in &self.users {
            rows.push(&[
                Plain(&u.source),
                Text(&u.user_id),
                Int(u.events),
                Plain(&u.revenue),
            ]);
        }
    }
}

impl Table for demographics::Demographics {
    const NAME: &'static str = "demographics";
    /// One header for both sources: a column a source has no such field for stays empty
    /// (`gender`, `city` for TikTok; `device` for Facebook).
    const HEADER: &'static [&'static str] = &[
        "section", "source", "bucket", "gender", "device", "country", "city", "users",
    ];

    fn rows(&self, rows: &mut Rows<'_>) {
        use demographics::Demographics::{Facebook, Tiktok};
        match self {
            Facebook(d) => {
                for b in &d.age_buckets {
                    attribute(
                        rows,
                        "ageBuckets",
                        d.source,
                        [Plain(b.bucket), Empty, Empty, Empty, Empty],
                        b.users,
                    );
                }
                for g in &d.genders {
                    attribute(
                        rows,
                        "genders",
                        d.source,
                        [Empty, Text(&g.gender), Empty, Empty, Empty],
                        g.users,
                    );
                }
                for c in &d.countries {
                    attribute(
                        rows,
                        "countries",
                        d.source,
                        [Empty, Empty, Empty, Text(&c.country), Empty],
                        c.users,
                    );
                }
                for c in &d.cities {
                    attribute(
                        rows,
                        "cities",
                        d.source,
                        [Empty, Empty, Empty, Text(&c.country), Text(&c.city)],
                        c.users,
                    );
                }
            }
            Tiktok(d) => {
                for b in &d.follower_buckets {
                    attribute(
                        rows,
                        "followerBuckets",
                        d.source,
                        [Plain(b.bucket), Empty, Empty, Empty, Empty],
                        b.users,
                    );
                }
                for v in &d.devices {
                    attribute(
                        rows,
                        "devices",
                        d.source,
                        [Empty, Empty, Text(&v.device), Empty, Empty],
                        v.users,
                    );
                }
                for c in &d.countries {
                    attribute(
                        rows,
                        "countries",
                        d.source,
                        [Empty, Empty, Empty, Text(&c.country), Empty],
                        c.users,
                    );
                }
            }
        }
    }
}

/// A demographics row: `section`, `source`, the values of `bucket`, `gender`, `device`,
/// `country` and `city` (those the row has), and `users`.
fn attribute(rows: &mut Rows<'_>, section: &str, source: &str, values: [Cell<'_>; 5], users: i64) {
    let [bucket, gender, device, country, city] = values;
    rows.push(&[
        Plain(section),
        Plain(source),
        bucket,
        gender,
        device,
        country,
        city,
        Int(users),
    ]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::table::render;
    use demographics::{
        Bucket, CityUsers, CountryUsers, Demographics, DeviceUsers, FacebookDemographics,
        GenderUsers, TiktokDemographics,
    };

    /// The records of `csv`, read by the `csv` crate; each must be as wide as `header`.
    fn records(csv: &str, header: &[&str]) -> Vec<Vec<String>> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(csv.as_bytes());
        let records: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(records[0], header);
        for r in &records {
            assert_eq!(r.len(), header.len(), "{r:?} in\n{csv}");
        }
        records
    }

    fn table<T: Table>(t: &T) -> Vec<Vec<String>> {
        assert!(
            T::NAME.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{}",
            T::NAME
        );
        records(&render(t), T::HEADER)
    }

    fn count(n: i64) -> String {
        n.to_string()
    }

    #[test]
    fn stats_give_the_total_then_each_breakdown() {
        let s = stats::Stats {
            from: "2026-03-01T00:00:00Z".into(),
            to: "2026-03-02T00:00:00Z".into(),
            total: 3,
            by_source: vec![stats::SourceCount {
                source: "tiktok".into(),
                count: 3,
            }],
            by_funnel_stage: vec![stats::StageCount {
                funnel_stage: "top".into(),
                count: 3,
            }],
            by_event_type: vec![stats::TypeCount {
                source: "tiktok".into(),
                funnel_stage: "top".into(),
                event_type: "like".into(),
                count: 3,
            }],
        };
        assert_eq!(
            render(&s),
            "section,from,to,source,funnelStage,eventType,count\r\n\
             total,2026-03-01T00:00:00Z,2026-03-02T00:00:00Z,,,,3\r\n\
             bySource,2026-03-01T00:00:00Z,2026-03-02T00:00:00Z,tiktok,,,3\r\n\
             byFunnelStage,2026-03-01T00:00:00Z,2026-03-02T00:00:00Z,,top,,3\r\n\
             byEventType,2026-03-01T00:00:00Z,2026-03-02T00:00:00Z,tiktok,top,like,3\r\n"
        );
    }

    #[test]
    fn funnel_repeats_each_sources_totals_on_its_steps() {
        let step = |event_type, events| funnel::Step {
            funnel_stage: "top",
            event_type,
            events,
            users: 1,
        };
        let f = funnel::Funnel {
            sources: vec![funnel::SourceFunnel {
                source: "tiktok",
                top_events: 4,
                bottom_events: 1,
                event_conversion: 0.25,
                top_users: 2,
                converted_users: 0,
                user_conversion: 0.0,
                steps: vec![step("like", 3), step("share", 1)],
            }],
        };
        let rows = table(&f);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[2],
            [
                "tiktok", "4", "1", "0.25", "2", "0", "0.0", "top", "share", "1", "1"
            ]
        );
    }

    #[test]
    fn geo_ends_with_the_events_without_a_country_even_when_no_country_has_any() {
        let g = geo::Geo {
            countries: vec![],
            unknown_country_events: 7,
        };
        assert_eq!(table(&g)[1..], [["unknownCountryEvents", "", "7", "", ""]]);
        let g = geo::Geo {
            countries: vec![geo::Country {
                country: "=cmd".into(),
                events: 2,
                users: 1,
                revenue: "1.50".into(),
            }],
            unknown_country_events: 0,
        };
        assert_eq!(
            table(&g)[1..],
            [
                ["countries", "'=cmd", "2", "1", "1.50"],
                ["unknownCountryEvents", "", "0", "", ""]
            ]
        );
    }

    #[test]
    fn revenue_gives_the_total_even_without_purchases() {
        let r = revenue::Revenue {
            total: "0.00".into(),
            purchases: 0,
            by_source: vec![],
        };
        assert_eq!(table(&r)[1..], [["total", "", "0.00", "0"]]);
    }

    #[test]
    fn lists_have_a_row_per_entry_and_guard_ids() {
        let t = timeseries::Timeseries {
            interval: "hour",
            tz: "UTC".into(),
            points: vec![timeseries::Point {
                bucket: "2026-03-01T12:00:00Z".into(),
                count: 0,
                revenue: "0.00".into(),
            }],
        };
        assert_eq!(table(&t)[1..], [["2026-03-01T12:00:00Z", "0", "0.00"]]);
        let c = campaigns::TopCampaigns {
            campaigns: vec![campaigns::Campaign {
                campaign_id: "+cmp,1".into(),
                events: 2,
                purchases: 1,
                revenue: "9.99".into(),
            }],
        };
        assert_eq!(table(&c)[1..], [["'+cmp,1", "2", "1", "9.99"]]);
        let u = users::TopUsers {
            users: vec![users::User {
                source: "facebook".into(),
                user_id: "@me".into(),
                events: 5,
                revenue: "0.00".into(),
            }],
        };
        assert_eq!(table(&u)[1..], [["facebook", "'@me", "5", "0.00"]]);
        assert_eq!(table(&users::TopUsers { users: vec![] }).len(), 1);
    }

    #[test]
    fn demographics_have_one_header_for_both_sources() {
        let users = |n| count(n);
        let fb = Demographics::Facebook(FacebookDemographics {
            source: "facebook",
            age_buckets: vec![Bucket {
                bucket: "<18",
                users: 1,
            }],
            genders: vec![GenderUsers {
                gender: "female".into(),
                users: 2,
            }],
            countries: vec![CountryUsers {
                country: "Germany".into(),
                users: 3,
            }],
            cities: vec![CityUsers {
                city: "-x".into(),
                country: "Germany".into(),
                users: 4,
            }],
        });
        assert_eq!(
            table(&fb)[1..],
            [
                ["ageBuckets", "facebook", "<18", "", "", "", "", &users(1)],
                ["genders", "facebook", "", "female", "", "", "", &users(2)],
                [
                    "countries",
                    "facebook",
                    "",
                    "",
                    "",
                    "Germany",
                    "",
                    &users(3)
                ],
                [
                    "cities",
                    "facebook",
                    "",
                    "",
                    "",
                    "Germany",
                    "'-x",
                    &users(4)
                ],
            ]
        );
        let tt = Demographics::Tiktok(TiktokDemographics {
            source: "tiktok",
            follower_buckets: vec![Bucket {
                bucket: "1M+",
                users: 1,
            }],
            devices: vec![DeviceUsers {
                device: "iOS".into(),
                users: 2,
            }],
            countries: vec![],
        });
        assert_eq!(
            table(&tt)[1..],
            [
                [
                    "followerBuckets",
                    "tiktok",
                    "1M+",
                    "",
                    "",
                    "",
                    "",
                    &users(1)
                ],
                ["devices", "tiktok", "", "", "iOS", "", "", &users(2)],
            ]
        );
    }
}
