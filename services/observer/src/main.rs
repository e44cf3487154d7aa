//! The `observer` binary: serves until SIGINT or SIGTERM, or runs a `settings` command, or a `dlq`
//! command on its own dead-letter queue (`observer --help`; docs/operations.md).

use choreo_host::cli::Command;
use choreo_host::service::shutdown_signal;

fn main() -> anyhow::Result<()> {
    let topology = choreo_events::topology::OBSERVER;
    // clap prints `--help`, `--version` and usage errors, and exits, before any setting is read.
    let command = Command::from_env(topology.name);
    let loaded = choreo_host::settings::load(&observer::SETTINGS)?;
    if command == Command::Settings {
        print!("{}", loaded.listing());
        return Ok(());
    }
    let settings = observer::Settings::read(&loaded)?;
    choreo_host::telemetry::init_stderr(&settings.common.telemetry.log_format);
    choreo_host::runtime::build(&settings.common)?.block_on(async move {
        if let Command::Dlq(dlq) = command {
            return Ok(dlq.run(&settings.common, topology).await?);
        }
        tracing::info!(?settings, "starting observer");
        let observer = observer::build(settings).await?;
        observer.run_until_stopped(shutdown_signal()).await?;
        Ok(())
    })
}
