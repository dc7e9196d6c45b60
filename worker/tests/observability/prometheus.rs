//! A real Prometheus (Debian package `prometheus`) for the test: our
//! `prometheus/prometheus.yml` with its targets rewritten to the test's loopback ports and
//! 1 s scrape and rule intervals, on a free port with a temporary data directory.

use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::{ChildProcess, eventually};

/// The workspace root (`worker/..`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("worker/ has a parent")
        .to_path_buf()
}

#[derive(Debug, Clone)]
pub struct Binaries {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The binaries, installed by `scripts/test.sh` (`scripts/prometheus.sh`); the test fails
/// without them.
pub fn binaries() -> Binaries {
    match (
        find("PROMETHEUS_BIN", "prometheus"),
        find("PROMTOOL_BIN", "promtool"),
    ) {
        (Some(prometheus), Some(promtool)) => Binaries {
            prometheus,
            promtool,
        },
        // A missing tool is a failure, not a pass: a dashboard test that passes without
        // checking anything would hide broken panels.
        _ => panic!(
            "`prometheus`/`promtool` not found: run `. scripts/prometheus.sh && \
             install_prometheus` (Debian package `prometheus`; scripts/test.sh does), or set \
             PROMETHEUS_BIN/PROMTOOL_BIN"
        ),
    }
}

/// Runs `promtool <args>` and fails with its output unless it succeeds.
pub fn promtool(bins: &Binaries, args: &[&str]) {
    let out = std::process::Command::new(&bins.promtool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Our prometheus.yml for the test: every job's targets replaced by `127.0.0.1:<port>`
/// from `ports` (a job without a port fails: a new job needs a service in this test),
/// service discovery removed, intervals 1 s, rule file globs made absolute.
pub fn rewrite_config(original: &str, ports: &BTreeMap<&str, u16>) -> anyhow::Result<String> {
    let mut doc: Yaml = serde_yaml::from_str(original)?;
    let root = repo_root().join("prometheus");
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| anyhow::anyhow!("prometheus.yml is not a mapping"))?;
    let mut global = serde_yaml::Mapping::new();
    for (k, v) in [
        ("scrape_interval", "1s"),
        ("scrape_timeout", "1s"),
        ("evaluation_interval", "1s"),
    ] {
        global.insert(k.into(), v.into());
    }
    map.insert("global".into(), Yaml::Mapping(global));
    if let Some(Yaml::Sequence(files)) = map.get_mut("rule_files") {
        for f in files.iter_mut() {
            let rel = f.as_str().unwrap_or_default().to_owned();
            *f = root.join(rel).to_string_lossy().into_owned().into();
        }
    }
    let jobs = map
        .get_mut("scrape_configs")
        .and_then(Yaml::as_sequence_mut)
        .ok_or_else(|| anyhow::anyhow!("prometheus.yml has no scrape_configs"))?;
    let mut seen = Vec::new();
    for job in jobs.iter_mut() {
        let job = job
            .as_mapping_mut()
            .ok_or_else(|| anyhow::anyhow!("a scrape config is not a mapping"))?;
        let name = job
            .get("job_name")
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_owned();
        let port = ports.get(name.as_str()).ok_or_else(|| {
            anyhow::anyhow!("prometheus.yml job {name:?} has no service in this test")
        })?;
        let discovery: Vec<Yaml> = job
            .keys()
            .filter(|k| k.as_str().is_some_and(|k| k.ends_with("_sd_configs")))
            .cloned()
            .collect();
        for k in discovery {
            job.remove(&k);
        }
        let target: Yaml = serde_yaml::from_str(&format!("[{{targets: [\"127.0.0.1:{port}\"]}}]"))?;
        job.insert("static_configs".into(), target);
        seen.push(name);
    }
    for job in ports.keys() {
        anyhow::ensure!(
            seen.iter().any(|s| s == job),
            "prometheus.yml does not scrape {job}"
        );
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// What `/api/v1/query` said.
#[derive(Debug)]
pub enum Answer {
    /// Number of series (vector/matrix) or 1 (scalar/string).
    Data(usize),
    /// Prometheus refused the query (parse or evaluation error).
    Error(String),
}

#[derive(Debug)]
pub struct Prometheus {
    _process: ChildProcess,
    _dir: tempfile::TempDir,
    pub url: String,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    pub async fn start(bins: &Binaries, ports: &BTreeMap<&str, u16>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let original = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml"))?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, rewrite_config(&original, ports)?)?;
        let port = testkit::free_port()?;
        let log = dir.path().join("prometheus.log");
        let mut cmd = std::process::Command::new(&bins.prometheus);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let process = ChildProcess::spawn("prometheus", cmd)?;
        let prometheus = Prometheus {
            _process: process,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually("prometheus ready", Duration::from_secs(30), || async {
            let r = prometheus.http.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
        .map_err(|e| e.context(prometheus.log_tail()))?;
        Ok(prometheus)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "prometheus log:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), query)?;
        let r = self.http.get(url).send().await?;
        Ok(r.json().await?)
    }

    /// An instant query at "now".
    pub async fn query(&self, expr: &str) -> anyhow::Result<Answer> {
        let body = self.get("/api/v1/query", &[("query", expr)]).await?;
        if body["status"] != "success" {
            return Ok(Answer::Error(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            )));
        }
        let data = &body["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Answer::Data(data["result"].as_array().map_or(0, Vec::len))
            }
            _ => Answer::Data(1),
        })
    }

    /// Every rule (recording and alerting) of `/api/v1/rules`, with its group's file.
    pub async fn rules(&self) -> anyhow::Result<Vec<(String, Value)>> {
        let body = self.get("/api/v1/rules", &[]).await?;
        let mut out = Vec::new();
        for group in body["data"]["groups"].as_array().into_iter().flatten() {
            let file = group["file"].as_str().unwrap_or_default().to_owned();
            for rule in group["rules"].as_array().into_iter().flatten() {
                out.push((file.clone(), rule.clone()));
            }
        }
        Ok(out)
    }

    /// Active targets' `(job, health)`.
    pub async fn targets(&self) -> anyhow::Result<Vec<(String, String)>> {
        let body = self.get("/api/v1/targets", &[("state", "active")]).await?;
        Ok(body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                    t["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}
