//! `e2e-service orders|billing|shipping`: one of the three services in a process of its own, with
//! its settings from `CHOREO_*` as its own binary reads them, until SIGTERM.
//!
//! For the end-to-end tests that must end a service the way a crash does: a failpoint's `abort`
//! ends the whole process, and the services a test runs in-process share the test's. Built with
//! the test binary (`CARGO_BIN_EXE_e2e-service`), so `cargo test` needs no release build.

use choreo_host::service::shutdown_signal;

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    let (name, common) = match which.as_str() {
        "orders" => ("orders", orders::Settings::load()?.common),
        "billing" => ("billing", billing::Settings::load()?.common),
        "shipping" => ("shipping", shipping::Settings::load()?.common),
        other => anyhow::bail!("usage: e2e-service orders|billing|shipping (not {other:?})"),
    };
    choreo_host::telemetry::init(&common.log_format, std::io::stderr);
    choreo_host::runtime::build(&common)?.block_on(async move {
        match name {
            "orders" => {
                let service = orders::build(orders::Settings::load()?).await?;
                service.run_until_stopped(shutdown_signal()).await?;
            }
            "billing" => {
                let service = billing::build(billing::Settings::load()?).await?;
                service.run_until_stopped(shutdown_signal()).await?;
            }
            _ => {
                let service = shipping::build(shipping::Settings::load()?).await?;
                service.run_until_stopped(shutdown_signal()).await?;
            }
        }
        Ok(())
    })
}
