//! `e2e-service orders|billing|shipping`: one of the three services in a process of its own, with
//! its settings from `CHOREO_*` as its own binary reads them, until SIGTERM.
//!
//! For the end-to-end tests that must end a service the way a crash does: a failpoint's `abort`
//! ends the whole process, and the services a test runs in-process share the test's. Built with
//! the test binary (`CARGO_BIN_EXE_e2e-service`), so `cargo test` needs no release build.
//!
//! `e2e-service sweep` removes what killed test processes left on the broker and in PostgreSQL
//! ([`choreo_e2e::sweep_leftovers`]); `make mutants` runs it after each group.

use choreo_host::service::shutdown_signal;

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    if which == "sweep" {
        let removed = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(choreo_e2e::sweep_leftovers())?;
        println!("e2e-service sweep: removed {removed} left-over exchanges, queues and databases");
        return Ok(());
    }
    let (name, common) = match which.as_str() {
        "orders" => ("orders", orders::Settings::load()?.common),
        "billing" => ("billing", billing::Settings::load()?.common),
        "shipping" => ("shipping", shipping::Settings::load()?.common),
        other => anyhow::bail!("usage: e2e-service orders|billing|shipping|sweep (not {other:?})"),
    };
    choreo_host::telemetry::init_stderr(&common.telemetry.log_format);
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
