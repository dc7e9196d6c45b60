use ingestion::{Command, Config, build};
use service_kit::{config, health, shutdown, telemetry};
use std::ffi::{c_int, c_long};

/// mimalloc instead of glibc's malloc: perf put glibc's malloc and free at a quarter of
/// ingestion's CPU, and short bench runs showed ~10-35 % less CPU per event with
/// mimalloc (README, Benchmarks). Its freed pages go back to the OS after
/// [`PURGE_DELAY_MS`], set in `main`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`; not among `libmimalloc-sys`'s
/// constants).
const MI_OPTION_PURGE_DELAY: c_int = 15;
/// How long mimalloc keeps freed pages before returning them. Its default, 1 s, held
/// ~63 MiB of peak RSS under 100-event batches (budget 64 MiB); 10 ms (mimalloc 2's
/// default) held ~48 MiB and kept the CPU saving; 0 gave back a third of it.
const PURGE_DELAY_MS: c_long = 10;

// The one declaration needed; `libmimalloc-sys`'s `extended` feature would bring the same
// binding (and a dependency) but still not the constant.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

fn main() -> anyhow::Result<()> {
    // SAFETY: sets a plain integer option of the allocator linked above, before the
    // runtime starts any other thread, so nothing reads it concurrently.
    #[allow(unsafe_code)]
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS)
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let (config, deprecations) = config::parse_or_exit::<Config>("ingestion");
    let service = &config.service;
    // The container's health check: one line, no logging set up.
    if let Some(Command::Healthcheck(args)) = &config.command {
        std::process::exit(
            health::healthcheck("ingestion", service.host, service.port, args).await,
        );
    }
    let telemetry = telemetry::init_with_traces(
        service.log_format,
        &service.rust_log,
        &config.traces,
        "ingestion",
    )?;
    deprecations.log();
    let drain = service.shutdown_timeout;
    let app = build(config).await?;
    tracing::info!(port = app.port(), "Ingestion listening");
    let stopped = app.run_until_stopped(shutdown::signal(), drain).await;
    telemetry.shutdown().await;
    stopped
}
