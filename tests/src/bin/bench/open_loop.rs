//! The open loop: orders sent on a fixed schedule, `rate` per second for `secs`, whatever
//! happened to the earlier ones, as independent users would send them. The latency of an order
//! runs from its *intended* send time on the schedule to its terminal event at the probe: if
//! the client falls behind (a stall of the bench, a full connection pool), the orders it sends
//! late still count from when they should have left, so a stall shows up in the tail instead
//! of vanishing from it (no coordinated omission).

use crate::client::{Poster, Sent, settle};
use crate::probe::Probe;
use crate::stats::Percentiles;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Requests in flight at most. Past it the schedule waits, and the wait counts as latency.
const MAX_IN_FLIGHT: usize = 1024;
/// The schedule starts this far ahead, so that the first send is not already late.
const LEAD: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    /// What was asked for, e.g. "25% of peak" or "fixed".
    pub target: String,
    pub rate: f64,
    pub orders: usize,
    /// Completed orders per second, from the first intended send to the last terminal event.
    pub achieved: f64,
    /// Intended send to terminal event.
    pub latency: Option<Percentiles>,
    /// How far behind its schedule the client was at worst, in milliseconds.
    pub max_send_lag_ms: f64,
    /// Requests the service shed as overloaded (503 with `Retry-After`) and the client sent
    /// again after that wait: a sign the rate asked is past what the suite sustains.
    pub shed: usize,
}

pub async fn run(
    poster: &Arc<Poster>,
    probe: &Probe,
    phase: &str,
    target: &str,
    rate: f64,
    secs: f64,
    deadline: Duration,
) -> Result<(OpenLoop, Vec<String>)> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("{phase}: no rate to run at ({rate} orders/s)");
    }
    let orders = ((rate * secs).round() as usize).max(1);
    poster.take_shed();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now() + LEAD;
    let mut max_lag = Duration::ZERO;
    for n in 0..orders {
        let intended = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(intended.into()).await;
        let slot = slots.clone().acquire_owned().await.context("semaphore")?;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
        let poster = poster.clone();
        tasks.spawn(async move {
            let posted = poster.post().await;
            drop(slot);
            (intended, posted)
        });
    }
    let mut sent = Sent::default();
    while let Some(joined) = tasks.join_next().await {
        let (intended, posted) = joined?;
        sent.record(intended, posted);
    }
    let settled = settle(probe, &sent, phase, Instant::now() + deadline, deadline).await?;
    let seconds = settled
        .last_arrival
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(f64::EPSILON);
    Ok((
        OpenLoop {
            target: target.to_owned(),
            rate,
            orders,
            achieved: settled.latencies.len() as f64 / seconds,
            latency: Percentiles::of(&settled.latencies),
            max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
            shed: poster.take_shed(),
        },
        settled.errors,
    ))
}
