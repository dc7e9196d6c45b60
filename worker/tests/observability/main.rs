//! Observability end to end, against the real services, a private nats-server and
//! PostgreSQL, and a real Prometheus (Debian package `prometheus`):
//!
//! - every PromQL expression of every Grafana dashboard panel and every recording and
//!   alerting rule returns data once the services have seen traffic (accepted, rejected,
//!   failed, duplicate, dead-lettered events), every metric they name is exported by some
//!   service, and every docs/operations.md metric is exported with its labels;
//! - a request's `X-Correlation-ID` can be followed into the worker's logs and the DLQ.
//!
//! Ingestion and analytics run in this process (they share one metrics registry); the
//! worker runs as the real binary so its metrics and logs are its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod prometheus;
mod promql;

use prometheus::{Answer, Prometheus, repo_root};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::{Platform, WAIT, WorkerLog, events, eventually};

/// docs/operations.md "Metrics every dashboard relies on": name and label names.
const RUNTIME_METRICS: &[(&str, &[&str])] = &[
    (
        "http_requests_total",
        &["service", "route", "method", "status"],
    ),
    ("http_request_duration_seconds", &["service", "route"]),
    ("ingestion_events_accepted_total", &["source"]),
    ("ingestion_events_rejected_total", &["reason"]),
    ("ingestion_events_failed_total", &["reason"]),
    ("worker_events_received_total", &[]),
    ("worker_messages_received_total", &["encoding"]),
    ("worker_events_processed_total", &["source"]),
    ("worker_events_duplicate_total", &[]),
    ("worker_events_failed_total", &["reason"]),
    ("worker_events_dlq_total", &["reason"]),
    ("worker_batch_duration_seconds", &[]),
    ("worker_batch_size", &[]),
    ("worker_consumer_pending_messages", &[]),
    ("worker_consumer_ack_pending_messages", &[]),
    ("worker_event_latency_seconds", &[]),
    ("analytics_query_duration_seconds", &["report"]),
    ("analytics_replica_lag_seconds", &[]),
    ("db_pool_connections", &["service", "state"]),
];

/// Series Prometheus makes itself for every target.
const PROMETHEUS_SYNTHETIC: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
];

/// Grafana's built-in interval variables, as Grafana would expand them for the default
/// 1-hour range of our dashboards. Any other `$variable` fails the test.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
];

// --- Services ---------------------------------------------------------------------------

/// A platform that can run this crate's `worker` binary.
async fn platform() -> anyhow::Result<Platform> {
    Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .start()
        .await
}

/// The worker binary with its log (JSON, `rust_log` filter) written to `log`.
fn start_worker_process(
    p: &Platform,
    extra_env: &[(&str, &str)],
    rust_log: &str,
    log: &Path,
) -> anyhow::Result<(testkit::ChildProcess, u16)> {
    p.start_worker_process_logging(
        extra_env,
        WorkerLog::File {
            rust_log,
            path: log,
        },
    )
}

async fn metrics_text(http: &reqwest::Client, port: u16) -> String {
    match http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Each exposed series name with the label names seen on it.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            // name="value",name="value"} — values may hold anything but `"` is escaped.
            let mut rest = &line[end + 1..];
            while let Some(eq) = rest.find("=\"") {
                labels.insert(rest[..eq].trim_start_matches(',').trim().to_owned());
                let mut i = eq + 2;
                let b = rest.as_bytes();
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                rest = &rest[(i + 1).min(rest.len())..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
    }
    out
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn allow_list() -> BTreeSet<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/observability/no_data_allowlist.txt");
    std::fs::read_to_string(path)
        .expect("no_data_allowlist.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

// --- Dashboards -------------------------------------------------------------------------

/// `(where, expression)` of every target of every panel (rows included) of every
/// dashboard, with Grafana's interval variables expanded. Fails on a datasource other
/// than uid `prometheus`, an empty expression or an unknown variable.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = repo_root().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("grafana/dashboards")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "dashboards missing in {}", dir.display());
    let mut out = Vec::new();
    for file in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let title = doc["title"].as_str().unwrap_or_default().to_owned();
        assert!(doc["uid"].is_string(), "{title}: no uid");
        let mut panels: Vec<&Value> = Vec::new();
        for p in doc["panels"].as_array().into_iter().flatten() {
            panels.push(p);
            panels.extend(p["panels"].as_array().into_iter().flatten());
        }
        for panel in panels.into_iter().filter(|p| p["type"] != "row") {
            let at = format!("{title} / {}", panel["title"].as_str().unwrap_or("?"));
            assert_eq!(panel["datasource"]["uid"], "prometheus", "{at}: datasource");
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{at}: no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "prometheus",
                    "{at}: target datasource"
                );
                let mut expr = t["expr"].as_str().unwrap_or_default().to_owned();
                assert!(!expr.trim().is_empty(), "{at}: empty expression");
                for (var, value) in GRAFANA_VARIABLES {
                    expr = expr.replace(var, value);
                }
                assert!(!expr.contains('$'), "{at}: unsupported variable in {expr}");
                out.push((
                    format!("{at} [{}]", t["refId"].as_str().unwrap_or("?")),
                    expr,
                ));
            }
        }
    }
    out
}

// --- The tests --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_and_rule_returns_data_from_live_services() {
    let bins = prometheus::binaries();
    let started = Instant::now();
    // Offline checks first: the config (with its rule files) and the alert unit tests.
    prometheus::promtool(&bins, &["check", "config", "prometheus/prometheus.yml"]);
    let mut rule_files: Vec<String> = std::fs::read_dir(repo_root().join("prometheus/rules"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().to_string_lossy().into_owned()))
        .filter(|p| p.ends_with(".yml"))
        .collect();
    rule_files.sort();
    let mut args = vec!["check", "rules"];
    args.extend(rule_files.iter().map(String::as_str));
    prometheus::promtool(&bins, &args);
    prometheus::promtool(
        &bins,
        &["test", "rules", "prometheus/tests/alerts_test.yml"],
    );

    let p = platform().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A stream of one message, so one request can find it full
    // (ingestion_events_failed_total): the 50 events below travel as one message.
    let limit = "1";
    let ingestion = p
        .start_ingestion(&["--nats-stream-max-msgs", limit])
        .await
        .unwrap();
    let analytics = p.start_analytics(&[]).await.unwrap();
    let http = p.http.clone();
    let webhook = format!("http://127.0.0.1:{}/webhook/event", ingestion.port);

    // No worker has migrated the database yet: analytics is not ready (503, and
    // service_ready 0 until the worker has migrated).
    let readiness = format!("http://127.0.0.1:{}/health/readiness", analytics.port);
    let status = http.get(&readiness).send().await.unwrap().status();
    assert_eq!(status, 503, "analytics readiness before any migration");

    // Fill the stream before any worker consumes, then one more: 503 stream_full.
    let fill = Value::Array(events("obs-fill", 0..50));
    let (status, body) = p.post(ingestion.port, &fill).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, body) = p
        .post(ingestion.port, &Value::Array(events("obs-over", 0..1)))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");

    // Rejects: invalid event (422), malformed JSON (400), wrong content type (415).
    let (status, _) = p
        .post(ingestion.port, &json!({"eventId": "obs-invalid"}))
        .await
        .unwrap();
    assert_eq!(status, 422);
    for (content_type, code) in [("application/json", 400), ("text/plain", 415)] {
        let r = http
            .post(&webhook)
            .header("content-type", content_type)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code);
    }

    let worker_log = dir.path().join("worker.log");
    let (_worker, worker_port) =
        // The worker raises the limit as it applies its stream settings: room for the
        // messages below, published while others still wait for it.
        start_worker_process(&p, &[("NATS_STREAM_MAX_MSGS", "1000")], "warn", &worker_log)
            .unwrap();
    p.wait_ready(worker_port).await.unwrap();
    let ports = BTreeMap::from([
        ("ingestion", ingestion.port),
        ("worker", worker_port),
        ("analytics", analytics.port),
    ]);
    let prom = Prometheus::start(&bins, &ports).await.unwrap();
    p.wait_rows(50).await.unwrap();

    // Reports (analytics_query_duration_seconds{report}).
    for report in ["stats", "funnel"] {
        let url = format!("http://127.0.0.1:{}/analytics/{report}", analytics.port);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
    }

    // A transient database failure (worker_events_failed_total): a trigger refuses one
    // event with a serialization failure until it is dropped; the redelivery stores it.
    let db = p.db().await.unwrap();
    db.batch_execute(
        "CREATE FUNCTION obs_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.event_id LIKE 'obs-transient-%' THEN
             RAISE EXCEPTION 'injected by the observability test' USING ERRCODE = '40001';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER obs_refuse BEFORE INSERT ON events
           FOR EACH ROW EXECUTE FUNCTION obs_refuse();",
    )
    .await
    .unwrap();
    let (status, body) = p
        .post(ingestion.port, &Value::Array(events("obs-transient", 0..1)))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    eventually("a failed batch", WAIT, || async {
        metrics_text(&http, worker_port)
            .await
            .contains("worker_events_failed_total{reason=\"database_unavailable\"}")
            .then_some(())
    })
    .await
    .unwrap();
    db.batch_execute("DROP TRIGGER obs_refuse ON events; DROP FUNCTION obs_refuse();")
        .await
        .unwrap();

    // A duplicate past the broker's window (same eventId, new message id) and a poison
    // message (undecodable), both straight to the stream.
    let again = serde_json::to_vec(&events("obs-fill", 0..1)[0]).unwrap();
    p.publish_raw("facebook.again", again, "obs-again")
        .await
        .unwrap();
    p.publish_raw("facebook.poison", b"{not json".to_vec(), "obs-poison")
        .await
        .unwrap();
    p.wait_rows(51).await.unwrap();
    eventually("a dead letter", WAIT, || async {
        (!p.dead_letters().await.ok()?.is_empty()).then_some(())
    })
    .await
    .unwrap();
    // The consumer/stream gauges are refreshed every 5 s.
    eventually("worker gauges", WAIT, || async {
        let text = metrics_text(&http, worker_port).await;
        [
            "worker_consumer_pending_messages",
            "worker_stream_bytes",
            "worker_dlq_messages 1",
        ]
        .iter()
        .all(|m| text.contains(m))
        .then_some(())
    })
    .await
    .unwrap();
    eprintln!("traffic done after {:?}", started.elapsed());

    // Every target scraped.
    eventually("every target up", WAIT, || async {
        let targets = prom.targets().await.ok()?;
        (targets.len() == ports.len() && targets.iter().all(|(_, h)| h == "up")).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", prom.log_tail()));

    // What the services export.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for port in ports.values() {
        for (name, labels) in exposition(&metrics_text(&http, *port).await) {
            exported.entry(name).or_default().extend(labels);
        }
    }
    let allowed = allow_list();

    // docs/operations.md names, with their labels.
    let mut problems = Vec::new();
    for (name, labels) in RUNTIME_METRICS {
        let series = exported
            .get(*name)
            .or_else(|| exported.get(&format!("{name}_bucket")));
        match series {
            None if allowed.contains(*name) => {
                eprintln!("note: {name} not exported (allow-listed)")
            }
            None => problems.push(format!("docs/operations.md metric {name} is not exported")),
            Some(have) => {
                let have: BTreeSet<&str> = have
                    .iter()
                    .map(String::as_str)
                    .filter(|l| *l != "le")
                    .collect();
                let want: BTreeSet<&str> = labels.iter().copied().collect();
                if have != want {
                    problems.push(format!(
                        "{name}: labels {have:?}, docs/operations.md says {want:?}"
                    ));
                }
            }
        }
    }

    // Rules: loaded from every file, each evaluated by the rule manager without error.
    let rules = eventually("every rule evaluated", WAIT, || async {
        let rules = prom.rules().await.ok()?;
        let evaluated = rules.iter().all(|(_, r)| {
            r["health"] != "unknown" && r["lastEvaluation"] != "0001-01-01T00:00:00Z"
        });
        (evaluated && !rules.is_empty()).then_some(rules)
    })
    .await
    .unwrap();
    let loaded: BTreeSet<String> = rules.iter().map(|(f, _)| f.clone()).collect();
    for file in &rule_files {
        let canonical = std::fs::canonicalize(file).unwrap();
        if !loaded
            .iter()
            .any(|l| Path::new(l) == canonical || l == file)
        {
            problems.push(format!(
                "rule file {file} not loaded by Prometheus (loaded: {loaded:?})"
            ));
        }
    }
    let mut recorded: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut checks: Vec<(String, String)> = dashboard_queries();
    for (_, rule) in &rules {
        let name = rule["name"].as_str().unwrap_or_default().to_owned();
        let query = rule["query"].as_str().unwrap_or_default().to_owned();
        if rule["health"] != "ok" || rule["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
            problems.push(format!(
                "rule {name}: health {}, lastError {}",
                rule["health"], rule["lastError"]
            ));
        }
        match rule["type"].as_str() {
            Some("recording") => {
                recorded.insert(name.clone(), promql::metric_names(&query));
                checks.push((format!("recording rule {name} (expr)"), query));
                checks.push((format!("recording rule {name} (recorded series)"), name));
            }
            Some("alerting") => {
                // The condition is normally false, so its result proves nothing: the
                // whole expression must parse and evaluate, and each signal (the
                // expression without its numeric threshold) must have data.
                match prom.query(&query).await.unwrap() {
                    Answer::Error(e) => problems.push(format!("alert {name}: {e}")),
                    Answer::Data(_) => {}
                }
                match promql::alert_signals(&query) {
                    Some(signals) => {
                        for (i, s) in signals.into_iter().enumerate() {
                            checks.push((format!("alert {name} (signal {})", i + 1), s));
                        }
                    }
                    None => problems.push(format!(
                        "alert {name}: expression is not `<signal> <op> <number>` joined by \
                         and/or, so its signals cannot be checked: {query}"
                    )),
                }
            }
            other => problems.push(format!("rule {name}: unknown type {other:?}")),
        }
    }

    // Metric names: every raw name some query reads is exported by a service.
    let raw_names = |expr: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<String> = promql::metric_names(expr).into_iter().collect();
        while let Some(n) = todo.pop() {
            match recorded.get(&n) {
                Some(inner) => todo.extend(inner.iter().cloned()),
                None => {
                    out.insert(n);
                }
            }
        }
        out
    };
    let mut named = BTreeSet::new();
    for (at, expr) in &checks {
        for n in raw_names(expr) {
            if !PROMETHEUS_SYNTHETIC.contains(&n.as_str())
                && !exported.contains_key(&n)
                && !allowed.contains(base_name(&n))
            {
                problems.push(format!("{at}: metric {n} is not exported by any service"));
            }
            named.insert(n);
        }
    }

    // Every query returns data (allow-listed metrics excepted), retried while the rate
    // windows fill up.
    let tolerated = |expr: &str| {
        raw_names(expr)
            .iter()
            .any(|n| allowed.contains(base_name(n)))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<(String, String)> = checks.clone();
    let mut no_data_tolerated = BTreeSet::new();
    loop {
        let mut still = Vec::new();
        for (at, expr) in pending {
            match prom.query(&expr).await.unwrap() {
                Answer::Error(e) => problems.push(format!("{at}: {e}\n    {expr}")),
                Answer::Data(n) if n > 0 => {}
                Answer::Data(_) if tolerated(&expr) => {
                    no_data_tolerated.insert(at);
                }
                Answer::Data(_) => still.push((at, expr)),
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (at, expr) in &pending {
        problems.push(format!("{at}: no data\n    {expr}"));
    }
    for name in &allowed {
        if exported.keys().any(|e| base_name(e) == name) {
            eprintln!(
                "note: allow-listed {name} has data now; remove it from no_data_allowlist.txt"
            );
        }
        if !named.iter().any(|n| base_name(n) == name) {
            problems.push(format!(
                "allow-listed {name} is not used by any dashboard or rule"
            ));
        }
    }
    eprintln!(
        "{} queries checked ({} tolerated without data: {:?}) after {:?}",
        checks.len(),
        no_data_tolerated.len(),
        no_data_tolerated,
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );

    analytics.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn correlation_id_is_in_the_worker_log_and_the_dead_letter() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let (_worker, worker_port) = start_worker_process(&p, &[], "worker=debug", &log).unwrap();
    p.wait_ready(worker_port).await.unwrap();
    let unique = uuid::Uuid::new_v4().simple().to_string();

    // A request with our id: echoed, then named by the worker's commit log line.
    let correlation = format!("obs-corr-{unique}");
    let r = p
        .http
        .post(format!("http://127.0.0.1:{}/webhook/event", ingestion.port))
        .header("X-Correlation-ID", &correlation)
        .json(&Value::Array(events(&format!("corr-{unique}"), 0..3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-correlation-id"], correlation.as_str());
    p.wait_rows(3).await.unwrap();

    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect::<Vec<Value>>()
    };
    eventually("the commit log line", Duration::from_secs(10), || async {
        lines().into_iter().find(|l| {
            l["message"] == "Batch committed"
                && l["level"] == "DEBUG"
                && l["correlation_ids"]
                    .as_str()
                    .is_some_and(|ids| ids.contains(&correlation))
        })
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; worker log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });

    // A poison message carrying a correlation id (publish_raw sets `corr-<msg id>`):
    // in the DLQ entry's headers and in the "Event dead-lettered" line.
    let poison_id = format!("obs-poison-{unique}");
    let poison_correlation = format!("corr-{poison_id}");
    p.publish_raw(
        "facebook.poison",
        br#"{"eventId": 42}"#.to_vec(),
        &poison_id,
    )
    .await
    .unwrap();
    let headers = eventually("the dead letter", WAIT, || async {
        p.dead_letters().await.ok()?.into_iter().find_map(|(_, h)| {
            (h.get("X-Correlation-ID") == Some(&poison_correlation)).then_some(h)
        })
    })
    .await
    .unwrap();
    assert!(headers.contains_key("Dlq-Reason"), "{headers:?}");
    eventually(
        "the dead-letter log line",
        Duration::from_secs(10),
        || async {
            lines().into_iter().find(|l| {
                l["message"] == "Event dead-lettered"
                    && l["correlation_id"] == poison_correlation.as_str()
            })
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; worker log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    ingestion.stop().await.unwrap();
}
