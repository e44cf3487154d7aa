//! The floor under one order's latency: the three hops of a saga (`order.placed` to billing,
//! `payment.captured` to shipping, `shipment.dispatched` to orders) with nothing but the broker
//! in them. One message at a time: published persistent and confirmed to a quorum queue,
//! received by a consumer that acks it and publishes the next hop the same way, three times.
//! No service can do a hop faster than this, so the suite's one-order latency over it is the
//! price of everything else (HTTP, databases, handlers, the fourth publish to the client).

use crate::broker::{self, MESSAGE_BYTES, persistent};
use crate::cleanup::Cleanup;
use crate::stats::Percentiles;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use std::time::{Duration, Instant};

const HOPS: usize = 3;
/// Round trips before the measured ones: the first publishes to a fresh quorum queue are slower.
const WARMUP: usize = 10;

/// Percentiles of `samples` three-hop trips.
pub async fn measure(prefix: &str, samples: usize, cleanup: &Cleanup) -> Result<Percentiles> {
    // Publishing and consuming on separate connections, as the services do.
    let publishing = broker::connect("bench floor publisher").await?;
    let consuming = broker::connect("bench floor consumer").await?;
    let channel = broker::confirming_channel(&publishing).await?;
    let queues: Vec<String> = (1..=HOPS)
        .map(|hop| format!("{prefix}floor.{hop}"))
        .collect();
    let mut consumers = Vec::with_capacity(HOPS);
    for queue in &queues {
        broker::quorum_queue(&channel, queue, cleanup).await?;
        let consumer_channel = consuming.create_channel().await?;
        consumer_channel
            .basic_qos(64, BasicQosOptions::default())
            .await?;
        consumers.push(
            consumer_channel
                .basic_consume(
                    queue.as_str().into(),
                    "bench-floor".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
        );
    }
    let body = vec![b'x'; MESSAGE_BYTES];
    let publish = |queue: &str| {
        let channel = &channel;
        let body = &body;
        let queue = queue.to_owned();
        async move {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    persistent(),
                )
                .await?;
            broker::confirmed(confirm).await
        }
    };
    let mut trips: Vec<Duration> = Vec::with_capacity(samples);
    for round in 0..WARMUP + samples {
        let started = Instant::now();
        publish(&queues[0]).await?;
        for (hop, consumer) in consumers.iter_mut().enumerate() {
            let delivery = consumer.next().await.context("floor consumer ended")??;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            if let Some(next) = queues.get(hop + 1) {
                publish(next).await?;
            }
        }
        if round >= WARMUP {
            trips.push(started.elapsed());
        }
    }
    for queue in &queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = publishing.close(200, "done".into()).await;
    let _ = consuming.close(200, "done".into()).await;
    Percentiles::of(&trips).context("no floor samples")
}
