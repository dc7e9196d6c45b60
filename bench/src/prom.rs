//! Just enough of the Prometheus text format: counters summed over label sets, and
//! histograms (cumulative buckets) with `histogram_quantile`-style interpolation.

/// One sample line: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            let (name, labels) = match series.find('{') {
                Some(i) => (
                    &series[..i],
                    series[i..].trim_matches(|c| c == '{' || c == '}'),
                ),
                None => (series, ""),
            };
            Some((name.trim(), labels, value))
        })
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    // Values of our labels never contain `",`, so a plain split is enough.
    labels.split("\",").find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

fn matches(labels: &str, filter: &[(&str, &str)]) -> bool {
    filter.iter().all(|(k, v)| label(labels, k) == Some(v))
}

/// Sum of every series of `name` whose labels include `filter`.
pub fn sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    samples(text)
        .filter(|(n, l, _)| *n == name && matches(l, filter))
        .map(|(_, _, v)| v)
        .sum()
}

/// Like [`sum`], but `None` when the text has no series of `name` matching `filter` (a
/// binary older than the metric), where [`sum`] would say 0.
pub fn find(text: &str, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .filter(|(n, l, _)| *n == name && matches(l, filter))
        .map(|(_, _, v)| v)
        .reduce(|a, b| a + b)
}

/// A histogram: cumulative counts per upper bound (`+Inf` last), plus the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
}

impl Histogram {
    /// The histogram `name` (label sets matching `filter` are added together).
    pub fn parse(text: &str, name: &str, filter: &[(&str, &str)]) -> Histogram {
        let bucket_name = format!("{name}_bucket");
        let sum_name = format!("{name}_sum");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let mut sum = 0.0;
        for (n, labels, v) in samples(text) {
            if n == bucket_name && matches(labels, filter) {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => match x.parse::<f64>() {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some(entry) => entry.1 += v,
                    None => buckets.push((le, v)),
                }
            } else if n == sum_name && matches(labels, filter) {
                sum += v;
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets, sum }
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map(|b| b.1).unwrap_or(0.0)
    }

    /// What was observed between `earlier` and `self` (same bucket layout).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map(|b| b.1)
                    .unwrap_or(0.0);
                (*le, (c - before).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum - earlier.sum,
        }
    }

    /// The q-quantile, interpolated linearly inside its bucket like PromQL's
    /// `histogram_quantile`; in the `+Inf` bucket, the highest finite bound. `None`
    /// without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let in_bucket = cumulative - below;
                let fraction = if in_bucket > 0.0 {
                    (rank - below) / in_bucket
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * fraction);
            }
            lower = le;
            below = cumulative;
        }
        Some(lower)
    }

    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0.0).then(|| self.sum / n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE worker_events_processed_total counter
worker_events_processed_total{source=\"facebook\"} 30
worker_events_processed_total{source=\"tiktok\"} 12
# TYPE lat histogram
lat_bucket{le=\"0.1\"} 10
lat_bucket{le=\"0.5\"} 90
lat_bucket{le=\"1\"} 100
lat_bucket{le=\"+Inf\"} 100
lat_sum 25
lat_count 100
http_request_duration_seconds_bucket{service=\"ingestion\",route=\"/webhook/event\",le=\"0.01\"} 4
http_request_duration_seconds_bucket{service=\"ingestion\",route=\"/health/readiness\",le=\"0.01\"} 7
";

    #[test]
    fn counters_add_up_over_labels() {
        assert_eq!(sum(TEXT, "worker_events_processed_total", &[]), 42.0);
        assert_eq!(
            sum(
                TEXT,
                "worker_events_processed_total",
                &[("source", "tiktok")]
            ),
            12.0
        );
    }

    #[test]
    fn a_missing_metric_is_none_not_zero() {
        assert_eq!(find(TEXT, "worker_events_processed_total", &[]), Some(42.0));
        assert_eq!(find(TEXT, "ingestion_messages_published_total", &[]), None);
        assert_eq!(sum(TEXT, "ingestion_messages_published_total", &[]), 0.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = Histogram::parse(TEXT, "lat", &[]);
        assert_eq!(h.count(), 100.0);
        assert!((h.quantile(0.5).unwrap() - 0.3).abs() < 1e-9);
        assert!((h.quantile(0.99).unwrap() - 0.95).abs() < 1e-9);
        let empty = h.since(&h);
        assert_eq!(empty.quantile(0.5), None);
        let routed = Histogram::parse(
            TEXT,
            "http_request_duration_seconds",
            &[("route", "/webhook/event")],
        );
        assert_eq!(routed.count(), 4.0);
    }
}
