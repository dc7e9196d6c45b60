//! `e2e-compare`: bench runs side by side, one column per run.
//!
//! Reads the `<date>.json` files `e2e` writes and prints one Markdown report with each
//! phase's throughput, latencies and CPU per event, the ceilings, the worker alone, the
//! burst, the disk and the memory of every run beside the others (and the last run over
//! the first). `bench/run.sh --replicas` uses it to set a three-node R3 JetStream run
//! beside a one-node R1 run of the same build on the same machine; it compares any runs,
//! before and after a change too. It reads the JSON loosely: a figure a run lacks (an
//! older bench, a skipped phase) prints as `-`.

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "e2e-compare",
    about = "Bench runs side by side: e2e-compare R1=bench/results/a.json R3=bench/results/b.json"
)]
struct Cli {
    /// Runs as LABEL=PATH (the results JSON `e2e` wrote), in the order of the columns.
    #[arg(required = true, num_args = 2.., value_parser = run_arg)]
    runs: Vec<(String, PathBuf)>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn run_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => {
            Ok((label.to_owned(), PathBuf::from(path)))
        }
        _ => Err("LABEL=PATH, e.g. R1=bench/results/2026-12-05-r1.json".into()),
    }
}

/// One run: its label and its results.
struct Run {
    label: String,
    path: PathBuf,
    results: Value,
}

impl Run {
    fn phase(&self, name: &str) -> Option<&Value> {
        self.results["phases"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
    }
}

/// How a row reads its figure from a run (`None`: the run lacks it).
type Figure<'a> = Box<dyn Fn(&Run) -> Option<f64> + 'a>;

/// One row of a table: how to read its figure from a run, and how to print it.
struct Row<'a> {
    measure: &'a str,
    value: Figure<'a>,
    digits: usize,
}

fn row<'a>(measure: &'a str, digits: usize, value: impl Fn(&Run) -> Option<f64> + 'a) -> Row<'a> {
    Row {
        measure,
        value: Box::new(value),
        digits,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = cli
        .runs
        .into_iter()
        .map(|(label, path)| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let results = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a bench results JSON", path.display()))?;
            Ok(Run {
                label,
                path,
                results,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if runs
        .iter()
        .any(|r| r.results["phases"].as_array().is_none())
    {
        bail!("a file has no \"phases\": give the JSON files e2e writes");
    }
    let report = render(&runs);
    print!("{report}");
    if let Some(out) = cli.out {
        std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("Written to {}", out.display());
    }
    Ok(())
}

/// The whole report.
fn render(runs: &[Run]) -> String {
    let mut out = String::from("# Event platform: bench runs side by side\n\n");
    out += "| run | date | NATS | machine | results |\n|---|---|---|---|---|\n";
    for run in runs {
        let r = &run.results;
        let nodes = r["nats_nodes"].as_u64().unwrap_or(1);
        let nats = if nodes > 1 {
            format!("{nodes} nodes, streams at R{nodes}")
        } else {
            "1 node, R1".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {nats} | {} cores, {} | `{}` |",
            run.label,
            r["date"].as_str().unwrap_or("-").get(..19).unwrap_or("-"),
            r["machine"]["nproc"].as_u64().unwrap_or(0),
            r["machine"]["cpu_model"].as_str().unwrap_or("-"),
            run.path.display()
        );
    }
    if runs
        .iter()
        .any(|r| r.results["quick"].as_bool() == Some(true))
    {
        out += "\nA `--quick` run is among these: its figures mean nothing.\n";
    }

    out += "\n## Ceilings and phases\n\n";
    out += "CPU: every process on the machine, µs per stored event (per accepted event where \
            nothing is stored). Latencies in ms.\n\n";
    table(&mut out, runs, &ceiling_rows());
    for name in phase_names(runs) {
        let _ = write!(out, "\n### {name}\n\n");
        table(&mut out, runs, &phase_rows(&name));
    }
    out += "\n## Worker alone, burst, disk and memory\n\n";
    table(&mut out, runs, &other_rows());
    out
}

/// Every phase name, in the order of the first run that has it.
fn phase_names(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for phase in run.results["phases"].as_array().into_iter().flatten() {
            if let Some(name) = phase["name"].as_str()
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_owned());
            }
        }
    }
    names
}

fn ceiling_rows() -> Vec<Row<'static>> {
    vec![
        row("raw COPY, rows/s", 0, |r| {
            r.results["ceilings"]["copy_rows_per_s"].as_f64()
        }),
        row("raw JetStream publish, messages/s", 0, |r| {
            r.results["ceilings"]["jetstream_msgs_per_s"].as_f64()
        }),
        row("raw JetStream, nats CPU µs per message", 1, |r| {
            r.results["ceilings"]["jetstream_per_message"]["cpu_us"]["nats"].as_f64()
        }),
    ]
}

fn phase_rows(name: &str) -> Vec<Row<'_>> {
    let get = move |r: &Run, key: &str| r.phase(name).and_then(|p| p[key].as_f64());
    let cpu = move |r: &Run, process: &str| {
        r.phase(name)
            .and_then(|p| p["per_event"]["cpu_us"][process].as_f64())
    };
    vec![
        row("stored events/s", 0, move |r| get(r, "stored_per_s")),
        row("accepted events/s", 0, move |r| get(r, "accepted_per_s")),
        row("ingest→commit p50", 0, move |r| {
            get(r, "e2e_p50_s").map(|s| s * 1000.0)
        }),
        row("ingest→commit p99", 0, move |r| {
            get(r, "e2e_p99_s").map(|s| s * 1000.0)
        }),
        row("HTTP p99 (client)", 1, move |r| get(r, "client_p99_ms")),
        row("HTTP p99 (server)", 1, move |r| get(r, "server_p99_ms")),
        row("CPU µs per event, total", 1, move |r| {
            r.phase(name)
                .and_then(|p| p["per_event"]["cpu_us_total"].as_f64())
        }),
        row("… nats", 1, move |r| cpu(r, "nats")),
        row("… postgres", 1, move |r| cpu(r, "postgres")),
        row("… worker", 1, move |r| cpu(r, "worker")),
        row("… ingestion", 1, move |r| cpu(r, "ingestion")),
        row("… load generator", 1, move |r| cpu(r, "load generator")),
    ]
}

fn other_rows() -> Vec<Row<'static>> {
    let per_million = |r: &Run, key: &str| {
        let disk = &r.results["disk"];
        let events = disk["events"].as_f64().filter(|e| *e > 0.0)?;
        Some(disk[key].as_f64()? / 1_048_576.0 / (events / 1e6))
    };
    let rss = |r: &Run, name: &str| {
        r.results["resources"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))?["peak_rss_bytes"]
            .as_f64()
            .map(|b| b / 1_048_576.0)
    };
    vec![
        row("worker alone, stored events/s", 0, |r| {
            r.results["worker_alone"]["events_per_s"].as_f64()
        }),
        row("burst, stored events/s", 0, |r| {
            r.results["burst"]["stored_per_s"].as_f64()
        }),
        row("burst, all stored after (s)", 2, |r| {
            r.results["burst"]["stored_after_s"].as_f64()
        }),
        row("raw events, MiB per million", 1, move |r| {
            per_million(r, "raw_bytes")
        }),
        row("dedup keys, MiB per million", 1, move |r| {
            per_million(r, "keys_bytes")
        }),
        row("JetStream, bytes per event on one node", 0, |r| {
            let stream = &r.results["disk"]["stream"];
            let events = stream["events"].as_f64().filter(|e| *e > 0.0)?;
            Some(stream["bytes"].as_f64()? / events)
        }),
        row("JetStream, bytes per event, all replicas", 0, |r| {
            let stream = &r.results["disk"]["stream"];
            let events = stream["events"].as_f64().filter(|e| *e > 0.0)?;
            let nodes = r.results["nats_nodes"].as_f64().unwrap_or(1.0);
            Some(stream["bytes"].as_f64()? / events * nodes)
        }),
        row("peak RSS nats, MiB (all nodes)", 1, move |r| rss(r, "nats")),
        row("peak RSS ingestion, MiB", 1, move |r| rss(r, "ingestion")),
        row("peak RSS worker, MiB", 1, move |r| rss(r, "worker")),
        row("peak RSS analytics, MiB", 1, move |r| rss(r, "analytics")),
    ]
}

/// A table of `rows` with a column per run and, the last over the first; a row no run has
/// a figure for is left out.
fn table(out: &mut String, runs: &[Run], rows: &[Row<'_>]) {
    let (first, last) = match (runs.first(), runs.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return,
    };
    let ratio = format!("{} / {}", last.label, first.label);
    let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let _ = writeln!(out, "| measure | {} | {ratio} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}---:|", "---:|".repeat(runs.len()));
    for row in rows {
        let values: Vec<Option<f64>> = runs.iter().map(|r| (row.value)(r)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let cells: Vec<String> = values.iter().map(|v| number(*v, row.digits)).collect();
        let ratio = match (
            values.first().copied().flatten(),
            values.last().copied().flatten(),
        ) {
            (Some(a), Some(b)) if a != 0.0 => format!("{:.2}", b / a),
            _ => "-".to_owned(),
        };
        let _ = writeln!(out, "| {} | {} | {ratio} |", row.measure, cells.join(" | "));
    }
}

/// A figure with thousands separators, `-` when absent.
fn number(value: Option<f64>, digits: usize) -> String {
    let Some(v) = value else {
        return "-".to_owned();
    };
    let text = format!("{v:.digits$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, nodes: u64, stored: f64, p99: f64, nats_us: f64) -> Run {
        Run {
            label: label.into(),
            path: PathBuf::from(format!("{label}.json")),
            results: json!({
                "date": "2026-12-05T13:41:13.007Z",
                "quick": false,
                "nats_nodes": nodes,
                "machine": {"nproc": 2, "cpu_model": "Test CPU"},
                "ceilings": {"copy_rows_per_s": 148_289.1, "jetstream_msgs_per_s": 147_785.0},
                "phases": [{
                    "name": "e2e sustained, 100-event batches, fresh table",
                    "stored_per_s": stored,
                    "accepted_per_s": stored,
                    "e2e_p50_s": 0.041,
                    "e2e_p99_s": p99,
                    "client_p99_ms": 5.1,
                    "per_event": {"cpu_us_total": 37.8, "cpu_us": {"nats": nats_us}}
                }],
                "disk": {"events": 2_000_000, "raw_bytes": 2_u64 * 431 * 1_048_576,
                         "stream": {"bytes": 442_000, "messages": 10, "events": 1000}},
                "resources": [{"name": "worker", "peak_rss_bytes": 133_378_048}]
            }),
        }
    }

    #[test]
    fn each_figure_sits_in_its_runs_column_with_the_last_over_the_first() {
        let report = render(&[
            run("R1", 1, 50_053.2, 0.099, 3.6),
            run("R3", 3, 36_737.0, 0.099, 15.8),
        ]);
        assert!(report.contains("| R3 | 2026-12-05T13:41:13 | 3 nodes, streams at R3 |"));
        assert!(
            report.contains("| measure | R1 | R3 | R3 / R1 |"),
            "{report}"
        );
        assert!(
            report.contains("| stored events/s | 50,053 | 36,737 | 0.73 |"),
            "{report}"
        );
        assert!(
            report.contains("| ingest→commit p99 | 99 | 99 | 1.00 |"),
            "{report}"
        );
        assert!(
            report.contains("| … nats | 3.6 | 15.8 | 4.39 |"),
            "{report}"
        );
        assert!(report.contains("| raw events, MiB per million | 431.0 | 431.0 | 1.00 |"));
        assert!(
            report.contains("| JetStream, bytes per event, all replicas | 442 | 1,326 | 3.00 |"),
            "{report}"
        );
        assert!(report.contains("| peak RSS worker, MiB | 127.2 | 127.2 | 1.00 |"));
    }

    #[test]
    fn a_figure_one_run_lacks_prints_as_a_dash_and_a_row_none_has_is_left_out() {
        let mut old = run("before", 1, 31_764.0, 0.2, 3.6);
        old.results["phases"][0]["e2e_p99_s"] = Value::Null;
        let report = render(&[old, run("after", 1, 50_053.0, 0.099, 3.6)]);
        assert!(
            report.contains("| ingest→commit p99 | - | 99 | - |"),
            "{report}"
        );
        assert!(!report.contains("burst, stored events/s"), "{report}");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(number(Some(1_234_567.891), 1), "1,234,567.9");
        assert_eq!(number(Some(-1234.0), 0), "-1,234");
        assert_eq!(number(Some(999.0), 0), "999");
        assert_eq!(number(None, 2), "-");
    }

    #[test]
    fn a_run_is_label_equals_path() {
        assert_eq!(
            run_arg("R3=a/b.json"),
            Ok(("R3".to_owned(), PathBuf::from("a/b.json")))
        );
        assert!(run_arg("a/b.json").is_err());
        assert!(run_arg("=a.json").is_err());
    }
}
