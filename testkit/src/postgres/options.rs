//! How a cluster is set up: the tests' defaults, or a tuned one for a benchmark.

use std::path::{Path, PathBuf};

/// Where PostgreSQL's binaries are, which settings it runs with and where its log goes.
/// [`Postgres::start`](super::Postgres::start) uses the [`Default`]: throw-away
/// durability for tests.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Directory of `initdb` and `postgres`. Default: `PG_BIN_DIR`, else the highest of
    /// PostgreSQL 17, 16 and 15 installed under `/usr/lib/postgresql` (the majors
    /// `scripts/prerequisites.sh` takes).
    pub bin_dir: PathBuf,
    /// Server settings as `name=value`, each passed as `-c` (after
    /// `listen_addresses=127.0.0.1`).
    pub settings: Vec<String>,
    /// Write the server's log to [`Postgres::log_path`](super::Postgres::log_path) instead
    /// of the tests' output (inherited with `TEST_LOG=1`, else discarded).
    pub log_to_file: bool,
}

impl Default for PostgresOptions {
    fn default() -> PostgresOptions {
        PostgresOptions {
            bin_dir: std::env::var_os("PG_BIN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(installed_bin_dir),
            // Throw-away data: durability comes from the OS cache, which outlives the
            // server process; nothing here survives a machine crash anyway.
            settings: ["fsync=off", "full_page_writes=off", "max_connections=200"]
                .map(String::from)
                .to_vec(),
            log_to_file: false,
        }
    }
}

/// The highest installed of the majors `scripts/prerequisites.sh` takes; 15's directory
/// when none is, so the error names a path.
fn installed_bin_dir() -> PathBuf {
    ["17", "16", "15"]
        .iter()
        .map(|major| Path::new("/usr/lib/postgresql").join(major).join("bin"))
        .find(|dir| dir.join("initdb").is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}
