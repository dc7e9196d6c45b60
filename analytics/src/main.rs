use analytics::{Config, build};
use service_kit::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = config::parse_or_exit("analytics");
    telemetry::init(config.log_format, &config.rust_log);
    let drain = config.shutdown_timeout();
    let app = build(config).await?;
    tracing::info!(port = app.port(), "Analytics listening");
    app.run_until_stopped(shutdown::signal(), drain).await
}
