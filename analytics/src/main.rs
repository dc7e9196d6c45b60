use analytics::{Command, Config, build};
use service_kit::{config, health, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, deprecations) = config::parse_or_exit::<Config>("analytics");
    let service = &config.service;
    // The container's health check: one line, no logging set up.
    if let Some(Command::Healthcheck(args)) = &config.command {
        std::process::exit(
            health::healthcheck("analytics", service.host, service.port, args).await,
        );
    }
    telemetry::init(service.log_format, &service.rust_log);
    deprecations.log();
    let drain = service.shutdown_timeout;
    let app = build(config).await?;
    tracing::info!(port = app.port(), "Analytics listening");
    app.run_until_stopped(shutdown::signal(), drain).await
}
