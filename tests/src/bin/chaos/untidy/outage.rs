//! The broker away for minutes while orders keep arriving over HTTP. Orders are taken into the
//! outbox throughout, which grows; orders' memory stays bounded (the relay never loads the whole
//! backlog), and its API answers promptly. Once the broker is back, the backlog drains in order,
//! in the relay's batches, and the row measures how fast.

use super::{Injected, World, rss_mib, scrape};
use anyhow::Result;
use std::time::{Duration, Instant};

/// The most orders' resident memory may grow while the broker is away.
pub const MAX_GROWTH_MIB: f64 = 64.0;
/// The slowest answer of orders' API allowed while the broker is away.
pub const MAX_ANSWER: Duration = Duration::from_secs(2);
/// How long the backlog may take to drain once the broker is back.
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);

/// Stops the broker's app for `length` under the load, watching orders; then starts it and
/// times the drain of every outbox.
pub async fn run(world: &World, length: Duration) -> Result<Injected> {
    let orders = world.first("orders");
    let rss_before = rss_mib(orders).unwrap_or_default();
    super::super::rabbitmqctl(&["stop_app"]).await?;
    eprintln!("   broker stopped for {length:?} while orders arrive");
    let until = Instant::now() + length;
    let (mut rss_peak, mut slowest, mut probes, mut taken) = (rss_before, Duration::ZERO, 0, 0);
    let mut backlog_peak = 0.0f64;
    while Instant::now() < until {
        probes += 1;
        let asked = Instant::now();
        let answer = world
            .http
            .post(orders.url("/orders"))
            .header(
                "Idempotency-Key",
                format!("{}outage-probe-{probes}", world.prefix),
            )
            .json(&choreo_e2e::order_request(1000, 1, "DE"))
            .send()
            .await;
        slowest = slowest.max(asked.elapsed());
        if answer.is_ok_and(|r| r.status().is_success()) {
            taken += 1;
        }
        rss_peak = rss_peak.max(rss_mib(orders).unwrap_or_default());
        if let Ok(metrics) = scrape(world, orders).await {
            backlog_peak = backlog_peak.max(metrics.value("choreo_outbox_backlog", &[]));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The drain is timed from the start of the broker's boot, which it includes.
    let restarting = Instant::now();
    super::super::rabbitmqctl(&["start_app"]).await?;
    let healed = Instant::now();
    // The drain: every service's outbox empty.
    let mut drained = None;
    while healed.elapsed() < DRAIN_DEADLINE {
        let mut backlog = 0.0;
        for proc in &world.procs {
            backlog += scrape(world, proc)
                .await
                .map_or(f64::MAX, |m| m.value("choreo_outbox_backlog", &[]));
        }
        if backlog == 0.0 {
            drained = Some(restarting.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut problems = Vec::new();
    if backlog_peak == 0.0 {
        problems.push("orders' outbox never grew while the broker was away".to_owned());
    }
    if rss_peak - rss_before > MAX_GROWTH_MIB {
        problems.push(format!(
            "orders' memory grew from {rss_before:.0} to {rss_peak:.0} MiB while the broker was away"
        ));
    }
    if slowest > MAX_ANSWER {
        problems.push(format!(
            "POST /orders took {} ms at worst while the broker was away",
            slowest.as_millis()
        ));
    }
    if taken == 0 {
        problems.push("no POST /orders was accepted while the broker was away".to_owned());
    }
    let drain = match drained {
        Some(took) => format!(
            "drained {:.1} s after the broker began to start, its boot included ({:.0} rows/s)",
            took.as_secs_f64(),
            backlog_peak / took.as_secs_f64().max(0.001)
        ),
        None => {
            problems.push(format!(
                "the outboxes were not empty {DRAIN_DEADLINE:?} after the broker came back"
            ));
            "not drained".to_owned()
        }
    };
    Ok(Injected {
        healed,
        problems,
        notes: vec![format!(
            "{} s away: orders' outbox grew to {backlog_peak:.0} rows, {drain}; orders' memory {rss_before:.0} MiB, at most {rss_peak:.0}; {taken} of {probes} probe orders taken, the slowest answer {} ms",
            length.as_secs(),
            slowest.as_millis()
        )],
        reconnects_before: 0.0,
    })
}
