//! CPU time and memory of processes from `/proc` (Linux only).

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is the state
/// (field 3), so field n is at index n - 3.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse::<i64>().map(|v| v.max(0) as u64).unwrap_or(0))
            .collect(),
    )
}

/// User + system CPU seconds of a process; with `children`, also of its waited-for
/// children (`cutime`, `cstime`).
pub fn cpu_seconds(pid: u32, children: bool) -> f64 {
    // After the state: ppid(4) .. utime(14) stime(15) cutime(16) cstime(17).
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    let get = |field: usize| f.get(field - 4).copied().unwrap_or(0);
    let mut ticks = get(14) + get(15);
    if children {
        ticks += get(16) + get(17);
    }
    ticks as f64 / clk_tck()
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.first().map(|&p| p as u32)
}

/// The live direct children of `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ppid(pid) == Some(parent))
        .collect()
}

/// CPU seconds of a process tree one level deep (PostgreSQL: the postmaster, its live
/// backends and the backends that already exited).
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    cpu_seconds(pid, true)
        + children(pid)
            .into_iter()
            .map(|c| cpu_seconds(c, false))
            .sum::<f64>()
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Sum of `VmRSS` over a process and its live children (PostgreSQL: shared buffers are
/// counted once per backend that touched them, so this overstates; indicative only).
pub fn tree_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS").unwrap_or(0)
        + children(pid)
            .into_iter()
            .filter_map(|c| status_bytes(c, "VmRSS"))
            .sum::<u64>()
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Number of CPUs online.
pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// How a process is measured.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// One process.
    Single,
    /// A process and its children (PostgreSQL).
    Tree,
}

/// The processes a phase's CPU use is attributed to.
#[derive(Debug, Clone)]
pub struct Watched {
    pub items: Vec<(String, u32, Kind)>,
}

/// CPU seconds of every watched process and of the machine at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    per: BTreeMap<String, f64>,
    busy: u64,
    total: u64,
}

impl Watched {
    pub fn snapshot(&self) -> CpuSnapshot {
        let per = self
            .items
            .iter()
            .map(|(name, pid, kind)| {
                let s = match kind {
                    Kind::Single => cpu_seconds(*pid, false),
                    Kind::Tree => tree_cpu_seconds(*pid),
                };
                (name.clone(), s)
            })
            // Processes of one name (a NATS cluster's nodes) are summed.
            .fold(BTreeMap::new(), |mut per, (name, s)| {
                *per.entry(name).or_insert(0.0) += s;
                per
            });
        let (busy, total) = machine_jiffies();
        CpuSnapshot {
            at: Instant::now(),
            per,
            busy,
            total,
        }
    }
}

/// CPU use between two snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CpuUse {
    /// Cores used on average by each watched process (CPU seconds / wall seconds).
    pub cores: BTreeMap<String, f64>,
    /// Cores busy on the whole machine (every process, ours or not).
    pub machine_busy_cores: f64,
    pub nproc: usize,
}

impl CpuUse {
    pub fn between(a: &CpuSnapshot, b: &CpuSnapshot) -> CpuUse {
        let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let cores = b
            .per
            .iter()
            .map(|(k, v)| (k.clone(), (v - a.per.get(k).copied().unwrap_or(0.0)) / wall))
            .collect();
        let n = nproc();
        let total = b.total.saturating_sub(a.total).max(1) as f64;
        let busy = b.busy.saturating_sub(a.busy) as f64;
        CpuUse {
            cores,
            machine_busy_cores: busy / total * n as f64,
            nproc: n,
        }
    }

    /// Whether the machine had (almost) no idle CPU left.
    pub fn saturated(&self) -> bool {
        self.machine_busy_cores >= 0.9 * self.nproc as f64
    }

    /// `postgres 0.85, ingestion 0.52, ...`, biggest first.
    pub fn ranking(&self) -> String {
        let mut v: Vec<(&String, &f64)> = self.cores.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        v.iter()
            .map(|(k, c)| format!("{k} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
