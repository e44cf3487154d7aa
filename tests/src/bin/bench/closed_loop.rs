//! The closed loop: `clients` concurrent clients, each posting its next order as soon as the
//! last one was answered, until `orders` are placed. Throughput runs from the first send to
//! the last terminal event seen at the probe, so it counts finished sagas, not accepted
//! requests. Latency here is mostly waiting in queues behind the other orders.

use crate::client::{Poster, Sent, settle};
use crate::probe::Probe;
use crate::stats::Percentiles;
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoop {
    pub orders: usize,
    pub clients: usize,
    pub seconds: f64,
    pub orders_per_sec: f64,
    /// The accepted request's send to the order's terminal event, under saturation.
    pub latency: Option<Percentiles>,
    /// Requests the service shed (503 with `Retry-After`: admission control, or its request
    /// limits) and the client sent again after that wait.
    pub shed: usize,
}

/// Runs the loop; `Ok` with the order-level problems alongside the numbers.
pub async fn run(
    poster: &Arc<Poster>,
    probe: &Probe,
    phase: &str,
    orders: usize,
    clients: usize,
    deadline: Duration,
) -> Result<(ClosedLoop, Vec<String>)> {
    poster.take_shed();
    let remaining = Arc::new(AtomicUsize::new(orders));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(orders) {
        let (poster, remaining, sent) = (poster.clone(), remaining.clone(), sent.clone());
        tasks.spawn(async move {
            // Take a ticket; the last ticket is 1, so stop once the counter is at 0.
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                // A closed-loop client sends when it is ready; its order's latency runs from
                // the request that was accepted (the waits of shed ones are the shed rate's).
                let started = Instant::now();
                let posted = poster.post_accepted().await;
                let intended = posted.as_ref().map_or(started, |(_, sent_at)| *sent_at);
                sent.lock().await.record(intended, posted.map(|(id, _)| id));
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let sent = std::mem::take(&mut *sent.lock().await);
    let settled = settle(probe, &sent, phase, Instant::now() + deadline, deadline).await?;
    let seconds = settled
        .last_arrival
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(f64::EPSILON);
    let completed = settled.latencies.len();
    Ok((
        ClosedLoop {
            orders,
            clients,
            seconds,
            orders_per_sec: completed as f64 / seconds,
            latency: Percentiles::of(&settled.latencies),
            shed: poster.take_shed(),
        },
        settled.errors,
    ))
}
