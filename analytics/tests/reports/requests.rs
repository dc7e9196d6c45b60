//! Requests the reports refuse: bad parameters, and a missing or wrong API key.

use crate::setup;

#[tokio::test]
async fn every_documented_bad_parameter_is_a_400_naming_the_field() {
    let s = setup(None, None).await;
    let cases = [
        ("/analytics/stats?from=yesterday", "from"),
        ("/analytics/stats?to=2026-13-01T00:00:00Z", "to"),
        (
            "/analytics/stats?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "from",
        ),
        (
            "/analytics/stats?from=2026-03-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "from",
        ),
        ("/analytics/stats?source=snapchat", "source"),
        ("/analytics/stats?funnelStage=middle", "funnelStage"),
        ("/analytics/stats?eventType=ad.View", "eventType"),
        ("/analytics/stats?colour=red", "colour"),
        ("/analytics/stats?source=tiktok&source=facebook", "source"),
        ("/analytics/timeseries?interval=week", "interval"),
        (
            "/analytics/timeseries?interval=minute&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "interval",
        ),
        ("/analytics/revenue?campaignId=", "campaignId"),
        ("/analytics/revenue?limit=5", "limit"),
        ("/analytics/campaigns/top?limit=0", "limit"),
        ("/analytics/campaigns/top?limit=1001", "limit"),
        ("/analytics/campaigns/top?limit=ten", "limit"),
        ("/analytics/campaigns/top?by=clicks", "by"),
    ];
    for (path, field) in cases {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}");
        let fields: Vec<&str> = body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{path}: {body}");
        assert!(
            !body["error"]["details"][0]["reason"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }
    // Several problems at once are all listed.
    let (status, body) = s
        .get("/analytics/stats?source=x&funnelStage=y&extra=1")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        3,
        "{body}"
    );
}

#[tokio::test]
async fn with_api_keys_reports_need_one_of_them_and_health_stays_open() {
    const OLD: &str = "old-analytics-key-0123456789abcdef";
    const NEW: &str = "new-analytics-key-0123456789abcdef";
    let s = setup(Some(&format!("{OLD},{NEW}")), None).await;
    let (status, body) = s.get("/analytics/stats").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    for (key, want) in [
        ("wrong", 401),
        ("", 401),
        (&OLD[1..], 401),
        (OLD, 200),
        (NEW, 200),
    ] {
        let r = s
            .platform
            .http
            .get(s.services.analytics.url("/analytics/stats"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{key:?}");
    }
    let (status, _) = s.get("/health/readiness").await;
    assert_eq!(status, 200);
}
