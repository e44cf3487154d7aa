//! The broker's ceiling: messages per second through one hop as the suite makes it, persistent
//! and confirmed into a quorum queue, consumed with manual acks on another connection. The
//! suite publishes four events per order, so four times its orders per second over this is the
//! share of the broker's capacity the suite turns into work.

use crate::broker::{self, MESSAGE_BYTES, persistent};
use crate::cleanup::Cleanup;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Instant;

/// Publishes outstanding at once, as the outbox relay keeps a window of unconfirmed publishes.
const CONFIRM_WINDOW: usize = 256;
/// The services' default `CHOREO_PREFETCH`.
const PREFETCH: u16 = 64;

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub messages: usize,
    pub seconds: f64,
    pub messages_per_sec: f64,
}

pub async fn measure(queue: &str, messages: usize, cleanup: &Cleanup) -> Result<Ceiling> {
    let publishing = broker::connect("bench ceiling publisher").await?;
    let consuming = broker::connect("bench ceiling consumer").await?;
    let channel = broker::confirming_channel(&publishing).await?;
    broker::quorum_queue(&channel, queue, cleanup).await?;
    let consumer_channel = consuming.create_channel().await?;
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "bench-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = vec![b'x'; MESSAGE_BYTES];
    let started = Instant::now();
    let consume = async {
        for _ in 0..messages {
            let delivery = consumer.next().await.context("consumer ended")??;
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let publish = async {
        let mut window = VecDeque::with_capacity(CONFIRM_WINDOW);
        for _ in 0..messages {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    persistent(),
                )
                .await?;
            window.push_back(confirm);
            if window.len() >= CONFIRM_WINDOW
                && let Some(confirm) = window.pop_front()
            {
                broker::confirmed(confirm).await?;
            }
        }
        for confirm in window {
            broker::confirmed(confirm).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (published, consumed) = tokio::join!(publish, consume);
    published.context("publishing")?;
    consumed.context("consuming")?;
    let seconds = started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = publishing.close(200, "done".into()).await;
    let _ = consuming.close(200, "done".into()).await;
    Ok(Ceiling {
        messages,
        seconds,
        messages_per_sec: messages as f64 / seconds,
    })
}
