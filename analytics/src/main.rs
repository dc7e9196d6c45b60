use analytics::{Command, Config, build};
use service_kit::{config, health, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = config::parse_or_exit("analytics");
    // The container's health check: one line, no logging set up.
    if let Some(Command::Healthcheck(args)) = &config.command {
        std::process::exit(health::healthcheck("analytics", config.host, config.port, args).await);
    }
    telemetry::init(config.log_format, &config.rust_log);
    let drain = config.shutdown_timeout();
    let app = build(config).await?;
    tracing::info!(port = app.port(), "Analytics listening");
    app.run_until_stopped(shutdown::signal(), drain).await
}
