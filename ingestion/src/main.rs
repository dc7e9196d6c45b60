use ingestion::{Config, build};
use service_kit::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = config::parse_or_exit("ingestion");
    let telemetry = telemetry::init_with_traces(
        config.log_format,
        &config.rust_log,
        &config.traces,
        "ingestion",
    )?;
    let drain = config.shutdown_timeout();
    let app = build(config).await?;
    tracing::info!(port = app.port(), "Ingestion listening");
    let stopped = app.run_until_stopped(shutdown::signal(), drain).await;
    telemetry.shutdown().await;
    stopped
}
