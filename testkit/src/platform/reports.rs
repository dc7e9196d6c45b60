//! Every analytics report, asked of one analytics service: what a test compares when the
//! same data is read another way (a restored backup, a standby).

use super::{Platform, Service};
use serde_json::Value;

/// Every report, with the parameters that choose other code paths: filters, intervals, a
/// time zone, both sources, the per-user sets (`users`, `demographics`).
pub const EVERY_REPORT: &[&str] = &[
    "stats",
    "stats?source=tiktok&funnelStage=bottom",
    "timeseries?interval=minute",
    "timeseries?interval=hour&tz=Asia/Kolkata",
    "funnel",
    "geo?limit=50",
    "revenue",
    "revenue?campaignId=cmp-1",
    "campaigns/top?by=events&limit=50",
    "users/top?by=revenue&limit=50",
    "demographics?source=facebook",
    "demographics?source=tiktok",
];

impl Platform {
    /// One report's answer (`query` as in [`EVERY_REPORT`], `range` as
    /// `from=...&to=...`): its JSON body, or an error naming the URL unless it is a 200.
    pub async fn report(
        &self,
        analytics: &Service,
        query: &str,
        range: &str,
    ) -> anyhow::Result<Value> {
        let separator = if query.contains('?') { '&' } else { '?' };
        let url = analytics.url(&format!("/analytics/{query}{separator}{range}"));
        let response = self.http.get(&url).send().await?;
        anyhow::ensure!(
            response.status() == 200,
            "{url}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        Ok(response.json().await?)
    }

    /// Every report of [`EVERY_REPORT`] over `range`, in that order.
    pub async fn every_report(
        &self,
        analytics: &Service,
        range: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let mut answers = Vec::with_capacity(EVERY_REPORT.len());
        for query in EVERY_REPORT {
            answers.push(self.report(analytics, query, range).await?);
        }
        Ok(answers)
    }
}
