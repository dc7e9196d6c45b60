//! The targets of issues 4 and 19: each judged on the results of the run (met, not met,
//! not measured) and, when missed, the component that bounds it.

use crate::markdown::{mib, ms, n, secs};
use crate::perevent;
use crate::procstat::CpuUse;
use crate::results::{
    LATENCY_E2E, LATENCY_SINGLE, Phase, Results, SUSTAINED_BATCH, SUSTAINED_PRELOADED,
    SUSTAINED_SINGLE,
};
use serde::Serialize;
use std::fmt::Write as _;

/// One target and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The issues that set it.
    pub issues: Vec<u32>,
    /// The target, such as `ingestion p99 ≤ 10 ms at 5,000 single-event requests/s`.
    pub target: String,
    /// The figure of this run.
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
    /// What bounds a missed target; empty when met.
    pub bound_by: String,
}

/// The CPU arithmetic of a sustained phase: each process's CPU time per stored event, the
/// rate the machine's cores allow at that cost, and, for a `goal` (events/s, with the raw
/// JetStream ceiling of the run), the cores that rate would take (NATS's share alone).
/// `None` when nothing was stored.
fn cpu_budget(stored: Option<f64>, cpu: &CpuUse, goal: Option<(f64, f64)>) -> Option<String> {
    let stored = stored.filter(|s| *s > 0.0)?;
    let mut per: Vec<(&str, f64)> = cpu
        .cores
        .iter()
        .map(|(name, cores)| (name.as_str(), cores / stored * 1e6))
        .filter(|(_, us)| *us >= 0.05)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = per.iter().map(|(_, us)| us).sum();
    let cores = cpu.nproc as f64;
    let listed = per
        .iter()
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "CPU per stored event: {total:.1} µs ({listed}), so {cores:.0} cores store at most {}/s \
         at this cost",
        n(cores / total * 1e6)
    );
    if let Some((goal, js_ceiling)) = goal {
        let (top, top_us) = per.first().copied().unwrap_or(("-", 0.0));
        let need = goal * total / 1e6;
        let _ = write!(
            out,
            "; {} events/s would take {need:.1} cores, {top}'s share alone {:.1}",
            n(goal),
            goal * top_us / 1e6
        );
        if top == "nats" {
            let _ = write!(
                out,
                " (JetStream publish alone, no consumer, peaked at {} msgs/s in this run)",
                n(js_ceiling)
            );
        }
        let verdict = if goal * top_us / 1e6 >= cores {
            format!(": {top} alone needs more than the machine's {cores:.0} cores")
        } else if need > cores {
            format!(": more than the machine's {cores:.0} cores, {top} the largest share")
        } else {
            String::new()
        };
        out.push_str(&verdict);
    }
    Some(out)
}

/// Which component bounds a sustained end-to-end figure.
fn e2e_bound(r: &Results, p: &Phase) -> String {
    let mut why = e2e_diagnosis(r, p);
    if let Some(budget) = cpu_budget(p.stored_per_s, &p.cpu, None) {
        why.push_str("; ");
        why.push_str(&budget);
    }
    if let Some(per) = &p.per_event {
        why.push_str("; ");
        why.push_str(&perevent::messages_note(per));
    }
    why
}

/// Where the events waited in a sustained phase, and whether the CPU was the limit.
fn e2e_diagnosis(r: &Results, p: &Phase) -> String {
    let mut why = Vec::new();
    let worker_side = p.backlog_max > 2_000 && p.backlog_start > 1_000;
    if let Some(note) = p.stall_note() {
        why.push(format!(
            "worker pull loop: {note}; the same worker stored {}/s while draining a backlog \
             (every pull full before it expires)",
            r.worker_alone
                .as_ref()
                .map_or("-".into(), |d| n(d.events_per_s))
        ));
    } else if worker_side {
        why.push(format!(
            "worker → PostgreSQL: the backlog stayed at {}-{} events, so ingestion offered \
             more than was stored (worker alone drained {}/s; worker batch p99 {})",
            p.backlog_start,
            p.backlog_max,
            r.worker_alone
                .as_ref()
                .map_or("-".into(), |d| n(d.events_per_s)),
            secs(p.worker_batch_p99_s)
        ));
    } else {
        why.push(format!(
            "ingestion (HTTP → validate → publish): the backlog stayed near zero, so the \
             worker waited for events (ingestion alone: {}/s)",
            r.ingest_alone(p.batch).map_or("-".into(), n)
        ));
    }
    if p.cpu.saturated() {
        why.push(format!(
            "the machine's CPU was saturated ({:.2} of {} cores busy; by process: {})",
            p.cpu.machine_busy_cores,
            p.cpu.nproc,
            p.cpu.ranking()
        ));
    }
    why.join("; ")
}

/// Every target of issues 4 and 19 judged on `r`, in the order of the table: issue 4's,
/// then issue 19's (a target both set is listed once, with both).
pub fn evaluate(r: &Results) -> Vec<Target> {
    let mut t = vec![rate_target(
        r,
        SUSTAINED_BATCH,
        "e2e sustained, 100-event batches, fresh table",
        25_000.0,
        &[4],
    )];
    let mut preloaded = rate_target(
        r,
        SUSTAINED_PRELOADED,
        "e2e sustained, 100-event batches, 10M events in the table",
        15_000.0,
        &[4],
    );
    if let Some(pre) = r.preloaded
        && pre < 10_000_000
    {
        let _ = write!(
            preloaded.measured,
            " (table preloaded with {} only)",
            n(pre as f64)
        );
        preloaded.met = None;
    }
    t.push(preloaded);
    t.push(rate_target(
        r,
        SUSTAINED_SINGLE,
        "e2e sustained, single-event requests",
        10_000.0,
        &[4],
    ));
    t.extend(ingest_latency(r));
    t.extend(e2e_latency(r, 1.0, &[4]));
    t.extend(copy_ratio(r, 0.5, &[4]));
    // Issue 19.
    t.extend(copy_ratio(r, 0.35, &[19]));
    t.push(perevent::cpu_target(r));
    t.push(rate_target(
        r,
        SUSTAINED_SINGLE,
        "e2e sustained, single-event requests",
        20_000.0,
        &[19],
    ));
    t.extend(e2e_latency(r, 0.5, &[19]));
    t.extend(peak_rss(r));
    t
}

/// A sustained rate: at least `goal` events/s stored with a backlog that did not grow.
fn rate_target(r: &Results, name: &str, label: &str, goal: f64, issues: &[u32]) -> Target {
    let target = format!("{label} ≥ {} events/s", n(goal));
    let Some(p) = r.phase(name) else {
        return Target {
            issues: issues.to_vec(),
            target,
            measured: "not measured".into(),
            met: None,
            bound_by: "phase skipped (see Skipped)".into(),
        };
    };
    let stored = p.stored_per_s.unwrap_or(0.0);
    let stable = p.backlog_stable.unwrap_or(false);
    let met = stored >= goal && stable;
    Target {
        issues: issues.to_vec(),
        target,
        measured: format!(
            "{}/s (backlog {})",
            n(stored),
            if stable { "stable" } else { "GREW" }
        ),
        met: Some(met),
        bound_by: if met { String::new() } else { e2e_bound(r, p) },
    }
}

/// Ingestion's p99 at 5,000 single-event requests/s.
fn ingest_latency(r: &Results) -> Option<Target> {
    let p = r.phase(LATENCY_SINGLE)?;
    let met = p.client_p99_ms <= 10.0 && p.accepted_per_s >= 0.95 * 5_000.0;
    Some(Target {
        issues: vec![4, 19],
        target: "ingestion p99 ≤ 10 ms at 5,000 single-event requests/s".into(),
        measured: format!(
            "p99 {:.1} ms at {}/s (server-side p99 {} ms)",
            p.client_p99_ms,
            n(p.accepted_per_s),
            ms(p.server_p99_ms)
        ),
        met: Some(met),
        bound_by: if met {
            String::new()
        } else {
            ingest_latency_bound(p)
        },
    })
}

/// Where a missed ingestion p99 went: the server, or the loopback and client; and what
/// competed for the CPU.
fn ingest_latency_bound(p: &Phase) -> String {
    let server = p.server_p99_ms.unwrap_or(f64::NAN);
    let mut why = if server <= 10.0 {
        format!(
            "ingestion's own histogram puts p99 at {server:.1} ms (interpolated in its bucket), \
             the load generator sees {:.1} ms: the rest is loopback, client and scheduling time",
            p.client_p99_ms
        )
    } else {
        format!("ingestion (server-side p99 {server:.1} ms: validate + publish + PubAck wait)")
    };
    if p.cpu.saturated() {
        let _ = write!(
            why,
            "; the machine's CPU was saturated ({:.2} of {} cores: {})",
            p.cpu.machine_busy_cores,
            p.cpu.nproc,
            p.cpu.ranking()
        );
    }
    if p.worker_stalls > 0 {
        let _ = write!(
            why,
            "; the worker stalled {}× in this phase and caught up in bursts (backlog max {}), \
             which compete for the CPU with ingestion and NATS",
            p.worker_stalls, p.backlog_max
        );
    }
    why
}

/// Ingest-to-commit p99 at 10,000 events/s at most `bound` seconds.
fn e2e_latency(r: &Results, bound: f64, issues: &[u32]) -> Option<Target> {
    let p = r.phase(LATENCY_E2E)?;
    let p99 = p.e2e_p99_s.unwrap_or(f64::INFINITY);
    let met = p99 <= bound && p.accepted_per_s >= 0.95 * 10_000.0;
    let bound_text = if bound < 1.0 {
        format!("{:.0} ms", bound * 1e3)
    } else {
        format!("{bound:.0} s")
    };
    Some(Target {
        issues: issues.to_vec(),
        target: format!("ingest-to-commit p99 ≤ {bound_text} at 10,000 events/s"),
        measured: format!(
            "p99 {} (p50 {}) at {}/s",
            secs(p.e2e_p99_s),
            secs(p.e2e_p50_s),
            n(p.accepted_per_s)
        ),
        met: Some(met),
        bound_by: if met {
            String::new()
        } else if let Some(note) = p.stall_note() {
            format!("worker pull loop: {note}")
        } else {
            format!(
                "worker → PostgreSQL (worker batch p99 {}, mean batch {:.0} events, backlog \
                 max {}); CPU {:.2} of {} cores busy ({})",
                secs(p.worker_batch_p99_s),
                p.worker_mean_batch.unwrap_or(0.0),
                p.backlog_max,
                p.cpu.machine_busy_cores,
                p.cpu.nproc,
                p.cpu.ranking()
            )
        },
    })
}

/// The sustained 100-event-batch rate (fresh table) against `share` of the raw COPY
/// ceiling of the same run.
fn copy_ratio(r: &Results, share: f64, issues: &[u32]) -> Option<Target> {
    let p = r.phase(SUSTAINED_BATCH)?;
    let copy = r.copy_ceiling();
    let ratio = p.stored_per_s.unwrap_or(0.0) / copy.max(1.0);
    let met = ratio >= share;
    Some(Target {
        issues: issues.to_vec(),
        target: format!(
            "e2e ≥ {:.0}% of the raw COPY ceiling (same run, 100-event batches, fresh table)",
            share * 100.0
        ),
        measured: format!(
            "{:.0}% ({} of {} rows/s)",
            ratio * 100.0,
            n(p.stored_per_s.unwrap_or(0.0)),
            n(copy)
        ),
        met: Some(met),
        bound_by: if met {
            String::new()
        } else {
            copy_ratio_bound(r, p, share * copy)
        },
    })
}

/// The CPU arithmetic of a missed COPY ratio (`goal` events/s), and whether ingestion
/// alone fell short.
fn copy_ratio_bound(r: &Results, p: &Phase, goal: f64) -> String {
    let mut why = cpu_budget(p.stored_per_s, &p.cpu, Some((goal, r.js_ceiling())))
        .unwrap_or_else(|| e2e_diagnosis(r, p));
    if let Some(per) = &p.per_event {
        why.push_str("; ");
        why.push_str(&perevent::messages_note(per));
    }
    if let Some(intake) = r.ingest_alone(p.batch)
        && intake < goal
    {
        let _ = write!(
            why,
            "; ingestion alone (worker paused, {}-event batches) accepted {}/s, already below \
             {}/s",
            p.batch,
            n(intake),
            n(goal)
        );
    }
    why
}

/// Peak RSS of each service against its limit.
fn peak_rss(r: &Results) -> Vec<Target> {
    [("ingestion", 64u64), ("worker", 128), ("analytics", 64)]
        .into_iter()
        .filter_map(|(service, limit)| {
            let res = r.resources.iter().find(|res| res.name == service)?;
            let met = res.peak_rss_bytes <= limit * 1024 * 1024;
            Some(Target {
                issues: vec![4, 19],
                target: format!("peak RSS {service} ≤ {limit} MiB"),
                measured: mib(res.peak_rss_bytes),
                met: Some(met),
                bound_by: if met {
                    String::new()
                } else {
                    format!("{service} itself (VmHWM)")
                },
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{CpuUse, Target, cpu_budget, evaluate};
    use crate::infra::Durability;
    use crate::results::{
        Ceilings, LATENCY_E2E, Phase, Results, SUSTAINED_BATCH, SUSTAINED_SINGLE,
    };

    fn cpu(cores: &[(&str, f64)]) -> CpuUse {
        CpuUse {
            cores: cores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            machine_busy_cores: cores.iter().map(|(_, v)| v).sum(),
            nproc: 2,
        }
    }

    #[test]
    fn the_cpu_budget_names_the_process_that_cannot_fit() {
        let use_ = cpu(&[
            ("nats", 0.6),
            ("worker", 0.44),
            ("postgres", 0.4),
            ("ingestion", 0.3),
        ]);
        // 20,000 events/s: nats 30 µs, worker 22, postgres 20, ingestion 15 -> 87 µs.
        let text = cpu_budget(Some(20_000.0), &use_, Some((70_000.0, 90_000.0))).unwrap();
        assert!(text.starts_with("CPU per stored event: 87.0 µs (nats 30.0, worker 22.0, postgres 20.0, ingestion 15.0)"), "{text}");
        assert!(text.contains("store at most 22,989/s"), "{text}");
        assert!(
            text.contains("70,000 events/s would take 6.1 cores, nats's share alone 2.1"),
            "{text}"
        );
        assert!(text.contains("peaked at 90,000 msgs/s"), "{text}");
        assert!(
            text.ends_with("nats alone needs more than the machine's 2 cores"),
            "{text}"
        );

        let text = cpu_budget(Some(20_000.0), &use_, Some((30_000.0, 90_000.0))).unwrap();
        assert!(
            text.ends_with("more than the machine's 2 cores, nats the largest share"),
            "{text}"
        );
        let text = cpu_budget(Some(20_000.0), &use_, Some((20_000.0, 90_000.0))).unwrap();
        assert!(text.ends_with("nats's share alone 0.6 (JetStream publish alone, no consumer, peaked at 90,000 msgs/s in this run)"), "{text}");
        assert_eq!(cpu_budget(Some(0.0), &use_, None), None);
        assert_eq!(cpu_budget(None, &use_, None), None);
    }

    #[test]
    fn a_missed_copy_ratio_says_when_the_intake_alone_falls_short_of_it() {
        let mut r = Results::new(&Durability::Full, false);
        r.ceilings = Some(Ceilings::at(148_000.0, 110_000.0));
        let phase = |name: &str, accepted: f64, stored: Option<f64>| Phase {
            name: name.into(),
            batch: 100,
            accepted_per_s: accepted,
            stored_per_s: stored,
            cpu: cpu(&[("nats", 0.67), ("postgres", 0.5), ("worker", 0.34)]),
            ..Phase::default()
        };
        r.phases
            .push(phase("ingestion alone, 100-event batches", 69_000.0, None));
        r.phases
            .push(phase(SUSTAINED_BATCH, 28_000.0, Some(28_000.0)));
        let copy_target = |r: &Results| -> Target {
            evaluate(r)
                .into_iter()
                .find(|t| t.target.starts_with("e2e ≥ 50% of the raw COPY"))
                .unwrap()
        };

        let t = copy_target(&r);
        assert_eq!(t.met, Some(false));
        assert!(
            t.bound_by.starts_with("CPU per stored event"),
            "{}",
            t.bound_by
        );
        assert!(
            t.bound_by.ends_with(
                "; ingestion alone (worker paused, 100-event batches) accepted 69,000/s, \
                 already below 74,000/s"
            ),
            "{}",
            t.bound_by
        );

        r.phases[0].accepted_per_s = 80_000.0;
        assert!(!copy_target(&r).bound_by.contains("ingestion alone"));
    }

    #[test]
    fn issue_19s_targets_sit_beside_issue_4s_with_their_own_bounds() {
        let mut r = Results::new(&Durability::Full, false);
        r.ceilings = Some(Ceilings::at(148_000.0, 110_000.0));
        let stable = |name: &str, stored: f64| Phase {
            name: name.into(),
            batch: 100,
            accepted_per_s: stored,
            stored_per_s: Some(stored),
            backlog_stable: Some(true),
            ..Phase::default()
        };
        // 0.4 x COPY; 15,000 single events/s; ingest-to-commit p99 700 ms at 10,000/s.
        r.phases.push(stable(SUSTAINED_BATCH, 59_200.0));
        r.phases.push(stable(SUSTAINED_SINGLE, 15_000.0));
        r.phases.push(Phase {
            e2e_p99_s: Some(0.7),
            ..stable(LATENCY_E2E, 10_000.0)
        });
        let verdicts = evaluate(&r);
        let find = |issue: u32, prefix: &str| -> &Target {
            verdicts
                .iter()
                .find(|t| t.issues.contains(&issue) && t.target.starts_with(prefix))
                .unwrap()
        };
        assert_eq!(find(4, "e2e ≥ 50% of the raw COPY").met, Some(false));
        let copy = find(19, "e2e ≥ 35% of the raw COPY");
        assert_eq!(
            (copy.met, copy.measured.as_str()),
            (Some(true), "40% (59,200 of 148,000 rows/s)")
        );
        assert_eq!(
            find(4, "e2e sustained, single-event requests ≥ 10,000").met,
            Some(true)
        );
        assert_eq!(
            find(19, "e2e sustained, single-event requests ≥ 20,000").met,
            Some(false)
        );
        assert_eq!(find(4, "ingest-to-commit p99 ≤ 1 s").met, Some(true));
        assert_eq!(find(19, "ingest-to-commit p99 ≤ 500 ms").met, Some(false));
        // Nothing filled the cost of an event: not measured rather than a verdict.
        assert_eq!(find(19, "CPU per stored event ≤ 47 µs").met, None);
        r.cpu_per_event_bound_us = 35.0;
        crate::perevent::fill(&mut r);
        assert!(
            evaluate(&r)
                .iter()
                .any(|t| t.target.starts_with("CPU per stored event ≤ 35 µs"))
        );
    }
}
