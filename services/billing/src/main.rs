//! The `billing` binary: serves until SIGINT or SIGTERM, or runs a `dlq` or `settings` command (`billing --help`;
//! docs/operations.md).

use choreo_host::cli::Command;
use choreo_host::service::shutdown_signal;

fn main() -> anyhow::Result<()> {
    let topology = choreo_events::topology::BILLING;
    // clap prints `--help`, `--version` and usage errors, and exits, before any setting is read.
    let command = Command::from_env(topology.name);
    let loaded = choreo_host::settings::load(&billing::SETTINGS)?;
    if command == Command::Settings {
        print!("{}", loaded.listing());
        return Ok(());
    }
    let settings = billing::Settings::read(&loaded)?;
    choreo_host::telemetry::init_stderr(&settings.common.telemetry.log_format);
    choreo_host::runtime::build(&settings.common)?.block_on(async move {
        if let Command::Dlq(dlq) = command {
            return Ok(dlq.run(&settings.common, topology).await?);
        }
        tracing::info!(?settings, "starting billing");
        let service = billing::build(settings).await?;
        service.run_until_stopped(shutdown_signal()).await?;
        Ok(())
    })
}
