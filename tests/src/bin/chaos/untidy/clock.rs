//! A clock that jumps: billing runs under libfaketime (Debian's `faketime`), whose offset the row
//! changes while orders flow: an hour forward, then an hour back, then none. Billing keeps its
//! rows for one hour in this row (`CHOREO_RETENTION_HOURS=1`, swept every second), so a
//! retention that believed the wall clock would prune its whole inbox an hour early when the
//! clock jumps forward, and stamp rows an hour old when it jumps back. The observer runs too,
//! with its own clock: billing's events an hour off must not make a step overdue.
//!
//! Expected: every order ends once, as always; billing prunes nothing (its retention counts no
//! deleted row); no saga is stuck or failed at the end.

use super::{Injected, World, scrape};
use anyhow::{Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};

/// libfaketime's multi-threaded build, from Debian's `faketime`.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn offset_file(world: &World) -> std::path::PathBuf {
    world.dir.path().join("clock-offset")
}

/// Runs `service` under libfaketime, with a short retention, and adds the observer.
pub fn setup(world: &mut World, service: &'static str) -> Result<()> {
    if !Path::new(LIBFAKETIME).exists() {
        bail!("the clock row needs {LIBFAKETIME}: apt-get install faketime");
    }
    let file = offset_file(world);
    std::fs::write(&file, "+0\n")?;
    for proc in world.procs.iter_mut().filter(|p| p.service == service) {
        proc.env.extend(
            [
                ("LD_PRELOAD", LIBFAKETIME.to_owned()),
                ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
                ("FAKETIME_NO_CACHE", "1".to_owned()),
                // A clock that jumps is the wall clock; the monotonic one never does.
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
                ("CHOREO_RETENTION_HOURS", "1".to_owned()),
                ("CHOREO_RETENTION_SWEEP_SECS", "1".to_owned()),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
    }
    world.add_observer(1024)
}

/// An hour forward for half of `length`, an hour back for the other half, then none.
pub async fn jump(world: &World, service: &str, length: Duration) -> Result<Injected> {
    let file = offset_file(world);
    let half = length / 2;
    eprintln!(
        "   {service}'s wall clock an hour ahead for {half:?}, then an hour behind for {half:?}"
    );
    std::fs::write(&file, "+1h\n")?;
    tokio::time::sleep(half).await;
    std::fs::write(&file, "-1h\n")?;
    tokio::time::sleep(half).await;
    std::fs::write(&file, "+0\n")?;
    Ok(Injected {
        healed: Instant::now(),
        problems: Vec::new(),
        notes: Vec::new(),
        reconnects_before: 0.0,
    })
}

/// Billing pruned nothing, and the observer judged no saga stuck or failed in the end.
pub async fn expect(
    world: &World,
    service: &str,
    injected: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let metrics = scrape(world, world.first(service)).await?;
    let pruned = metrics.value(choreo_messaging::retention::PRUNED, &[]);
    let sweeps = metrics.value(choreo_messaging::retention::SWEEPS, &[]);
    if pruned > 0.0 {
        problems.push(format!(
            "{service} pruned {pruned} rows younger than its retention of an hour while its clock jumped"
        ));
    }
    if sweeps == 0.0 {
        problems.push(format!("{service} ran no retention sweep during the row"));
    }
    let observer = scrape(world, world.first("observer")).await?;
    let stuck = observer.value("choreo_observer_sagas", &[("state", "stuck")]);
    let failed = observer.value("choreo_observer_sagas", &[("state", "failed")]);
    if stuck + failed > 0.0 {
        problems.push(format!(
            "the observer ended with {stuck} sagas stuck and {failed} failed"
        ));
    }
    injected.push(format!(
        "{service}: {sweeps} retention sweeps, {pruned} rows pruned; the observer: {stuck} sagas stuck, {failed} failed"
    ));
    Ok(problems)
}
