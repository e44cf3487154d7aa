//! The `billing` binary: settings, telemetry, then the service until SIGINT or SIGTERM.

use choreo_host::service::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = billing::Settings::load()?;
    choreo_host::telemetry::init(&settings.common.log_format, std::io::stdout);
    tracing::info!(?settings, "starting billing");
    let service = billing::build(settings).await?;
    service.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}
