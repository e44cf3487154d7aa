//! One order at a time: post an order, wait for its terminal event at the probe, post the
//! next. Nothing queues behind anything, so this is the latency of the saga itself (HTTP,
//! three services, four broker hops), to set against the broker's three-hop floor.

use crate::client::{Poster, Sent, settle};
use crate::probe::Probe;
use crate::stats::Percentiles;
use anyhow::Result;
use std::time::{Duration, Instant};

pub async fn run(
    poster: &Poster,
    probe: &Probe,
    phase: &str,
    orders: usize,
    deadline: Duration,
) -> Result<(Option<Percentiles>, Vec<String>)> {
    let mut sent = Sent::default();
    for _ in 0..orders {
        let intended = Instant::now();
        let posted = poster.post().await;
        if let Ok(id) = &posted
            && probe
                .wait_one(id, Instant::now() + deadline)
                .await?
                .is_none()
        {
            // Lost or stuck: waiting for the rest would only repeat the deadline.
            sent.record(intended, posted);
            break;
        }
        sent.record(intended, posted);
    }
    // Every order but a lost last one has arrived already: nothing more to wait for.
    let settled = settle(probe, &sent, phase, Instant::now(), deadline).await?;
    Ok((Percentiles::of(&settled.latencies), settled.errors))
}
