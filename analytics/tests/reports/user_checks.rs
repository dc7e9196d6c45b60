//! The user reports over each range, checked against the events sent.

use crate::data::{Fact, money};
use crate::{RANGES, Setup, enc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

const AGE_LABELS: [&str; 7] = ["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
const FOLLOWER_LABELS: [&str; 5] = ["<1k", "1k-10k", "10k-100k", "100k-1M", "1M+"];

fn ranked(m: BTreeMap<String, HashSet<String>>, key: &str, limit: usize) -> Vec<Value> {
    let mut rows: Vec<(String, usize)> = m.into_iter().map(|(k, u)| (k, u.len())).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    rows.into_iter()
        .map(|(k, n)| json!({key: k, "users": n}))
        .collect()
}

pub(crate) async fn check_user_reports(s: &Setup, state: &str) {
    check_user_reports_over(s, state, RANGES).await;
}

/// Funnel, geo and users/top over each range, against the events sent.
pub(crate) async fn check_user_reports_over(s: &Setup, state: &str, ranges: &[(&str, &str)]) {
    for &(from, to) in ranges {
        let facts = s.within(from, to);
        let range = format!("from={}&to={}", enc(from), enc(to));

        // funnel, for both sources and for each
        for only in [None, Some("facebook"), Some("tiktok")] {
            let mut sources = Vec::new();
            for source in ["facebook", "tiktok"]
                .into_iter()
                .filter(|x| only.is_none_or(|o| o == *x))
            {
                let mine: Vec<&&Fact> = facts.iter().filter(|f| f.source == source).collect();
                let types: &[(&str, &[&str])] = if source == "facebook" {
                    &[
                        ("top", &["ad.view", "page.like", "comment", "video.view"]),
                        (
                            "bottom",
                            &["ad.click", "form.submission", "checkout.complete"],
                        ),
                    ]
                } else {
                    &[
                        ("top", &["video.view", "like", "share", "comment"]),
                        ("bottom", &["profile.visit", "purchase", "follow"]),
                    ]
                };
                let mut steps = Vec::new();
                for (stage, names) in types {
                    let mut rows: Vec<(&str, usize, usize)> = names
                        .iter()
                        .map(|t| {
                            let of: Vec<_> = mine
                                .iter()
                                .filter(|f| f.stage == *stage && f.event_type == *t)
                                .collect();
                            let users: HashSet<&str> = of.iter().map(|f| f.user.as_str()).collect();
                            (*t, of.len(), users.len())
                        })
                        .collect();
                    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                    steps.extend(rows.iter().map(|(t, n, u)| json!({"funnelStage": stage, "eventType": t, "events": n, "users": u})));
                }
                let top: HashSet<&str> = mine
                    .iter()
                    .filter(|f| f.stage == "top")
                    .map(|f| f.user.as_str())
                    .collect();
                let bottom: HashSet<&str> = mine
                    .iter()
                    .filter(|f| f.stage == "bottom")
                    .map(|f| f.user.as_str())
                    .collect();
                let converted = top.intersection(&bottom).count();
                let (te, be) = (
                    mine.iter().filter(|f| f.stage == "top").count(),
                    mine.iter().filter(|f| f.stage == "bottom").count(),
                );
                let r = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                sources.push((te, source, json!({"source": source, "topEvents": te, "bottomEvents": be, "eventConversion": r(be, te),
                    "topUsers": top.len(), "convertedUsers": converted, "userConversion": r(converted, top.len()), "steps": steps})));
            }
            sources.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let expected = json!({"sources": sources.into_iter().map(|x| x.2).collect::<Vec<_>>()});
            let q = only.map(|o| format!("&source={o}")).unwrap_or_default();
            let got = s.ok(&format!("/analytics/funnel?{range}{q}")).await;
            assert_eq!(got, expected, "{state}: funnel {from} {to} {q}");
        }

        // geo, with a filter and a limit
        for (q, keep, limit) in [
            ("", (|_| true) as fn(&Fact) -> bool, 10),
            ("&source=tiktok&limit=1", |f| f.source == "tiktok", 1),
            ("&funnelStage=bottom", |f| f.stage == "bottom", 10),
            ("&eventType=comment", |f| f.event_type == "comment", 10),
            (
                "&source=facebook&funnelStage=top&eventType=video.view",
                |f| f.source == "facebook" && f.stage == "top" && f.event_type == "video.view",
                10,
            ),
            ("&funnelStage=bottom&eventType=like", |_| false, 10),
        ] {
            let mut by_country: BTreeMap<String, (i64, HashSet<(String, String)>, Decimal)> =
                BTreeMap::new();
            let mut unknown = 0;
            for f in facts.iter().filter(|f| keep(f)) {
                match &f.country {
                    Some(c) => {
                        let e = by_country.entry(c.clone()).or_default();
                        e.0 += 1;
                        e.1.insert((f.source.clone(), f.user.clone()));
                        e.2 += f.revenue.unwrap_or_default();
                    }
                    None => unknown += 1,
                }
            }
            let mut rows: Vec<_> = by_country.into_iter().collect();
            rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            rows.truncate(limit);
            let expected = json!({"countries": rows.iter().map(|(c, (n, u, v))| json!({"country": c, "events": n, "users": u.len(), "revenue": money(*v)})).collect::<Vec<_>>(),
                                  "unknownCountryEvents": unknown});
            let got = s.ok(&format!("/analytics/geo?{range}{q}")).await;
            assert_eq!(got, expected, "{state}: geo {from} {to} {q}");
        }

        // users/top by events and by revenue
        for (q, by, only) in [
            ("&by=events&limit=5", "events", None),
            (
                "&by=revenue&limit=3&source=facebook",
                "revenue",
                Some("facebook"),
            ),
        ] {
            let mut per_user: BTreeMap<(String, String), (i64, Decimal)> = BTreeMap::new();
            for f in facts.iter().filter(|f| only.is_none_or(|o| o == f.source)) {
                let e = per_user
                    .entry((f.source.clone(), f.user.clone()))
                    .or_default();
                e.0 += 1;
                e.1 += f.revenue.unwrap_or_default();
            }
            let mut rows: Vec<_> = per_user.into_iter().collect();
            if by == "events" {
                rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
                rows.truncate(5);
            } else {
                rows.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
                rows.truncate(3);
            }
            let expected = json!({"users": rows.iter().map(|((src, u), (n, v))| json!({"source": src, "userId": u, "events": n, "revenue": money(*v)})).collect::<Vec<_>>()});
            let got = s.ok(&format!("/analytics/users/top?{range}{q}")).await;
            assert_eq!(got, expected, "{state}: users/top {from} {to} {q}");
        }

        // demographics, both sources
        let fb: Vec<&&Fact> = facts.iter().filter(|f| f.source == "facebook").collect();
        let age_label = |a: u64| match a {
            0..=17 => "<18",
            18..=24 => "18-24",
            25..=34 => "25-34",
            35..=44 => "35-44",
            45..=54 => "45-54",
            55..=64 => "55-64",
            _ => "65+",
        };
        let mut ages: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        let mut genders: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut countries: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut cities: BTreeMap<(String, String), HashSet<&str>> = BTreeMap::new();
        for f in &fb {
            ages.entry(age_label(f.age.unwrap()))
                .or_default()
                .insert(&f.user);
            genders
                .entry(f.gender.clone().unwrap())
                .or_default()
                .insert(f.user.clone());
            countries
                .entry(f.country.clone().unwrap())
                .or_default()
                .insert(f.user.clone());
            cities
                .entry((f.city.clone().unwrap(), f.country.clone().unwrap()))
                .or_default()
                .insert(&f.user);
        }
        let mut city_rows: Vec<_> = cities.into_iter().map(|(k, u)| (k, u.len())).collect();
        city_rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        city_rows.truncate(20);
        let expected = json!({"source": "facebook",
            "ageBuckets": AGE_LABELS.iter().map(|b| json!({"bucket": b, "users": ages.get(b).map_or(0, |u| u.len())})).collect::<Vec<_>>(),
            "genders": ranked(genders, "gender", usize::MAX),
            "countries": ranked(countries, "country", 20),
            "cities": city_rows.iter().map(|((c, k), n)| json!({"city": c, "country": k, "users": n})).collect::<Vec<_>>()});
        let got = s
            .ok(&format!("/analytics/demographics?source=facebook&{range}"))
            .await;
        assert_eq!(got, expected, "{state}: demographics facebook {from} {to}");

        let tt: Vec<&&Fact> = facts.iter().filter(|f| f.source == "tiktok").collect();
        let follower_label = |n: u64| match n {
            0..=999 => "<1k",
            1000..=9999 => "1k-10k",
            10_000..=99_999 => "10k-100k",
            100_000..=999_999 => "100k-1M",
            _ => "1M+",
        };
        let mut followers: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        let mut devices: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut countries: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        for f in &tt {
            followers
                .entry(follower_label(f.followers.unwrap()))
                .or_default()
                .insert(&f.user);
            if let Some(d) = &f.device {
                devices.entry(d.clone()).or_default().insert(f.user.clone());
            }
            if let Some(c) = &f.country {
                countries
                    .entry(c.clone())
                    .or_default()
                    .insert(f.user.clone());
            }
        }
        let expected = json!({"source": "tiktok",
            "followerBuckets": FOLLOWER_LABELS.iter().map(|b| json!({"bucket": b, "users": followers.get(b).map_or(0, |u| u.len())})).collect::<Vec<_>>(),
            "devices": ranked(devices, "device", usize::MAX),
            "countries": ranked(countries, "country", 20)});
        let got = s
            .ok(&format!("/analytics/demographics?source=tiktok&{range}"))
            .await;
        assert_eq!(got, expected, "{state}: demographics tiktok {from} {to}");
    }
    let (status, body) = s.get("/analytics/demographics").await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (400, Some("source")),
        "{body}"
    );
}
