//! The client's view of the end of an order: a queue `<prefix>bench.probe` bound to
//! `<prefix>orders.events` with `order.completed` and `order.cancelled`, consumed on a thread
//! of its own that stamps each terminal event with the instant it arrived, keyed by its
//! correlation id (the order id).
//!
//! Why a thread of its own: the load generator's tasks share the bench's runtime, and an
//! arrival waiting behind them would be stamped late. Here the stamp is taken the moment the
//! delivery is handed to the probe, whatever the clients are doing.

use crate::cleanup::Cleanup;
use anyhow::{Context, Result, anyhow};
use choreo_events::topology::ORDERS;
use choreo_messaging::Names;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The two terminal events of a saga.
const TERMINAL: [&str; 2] = ["order.completed", "order.cancelled"];

/// When an order's terminal event reached the probe, and which one it was.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    pub completed: bool,
}

type Arrivals = Arc<Mutex<HashMap<String, Arrival>>>;

#[derive(Debug)]
pub struct Probe {
    arrivals: Arrivals,
    /// How many distinct orders have arrived; changes wake waiters. Closed when the probe ends.
    count: watch::Receiver<usize>,
    /// Why the probe's consumer ended early, if it did.
    failure: Arc<Mutex<Option<String>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    /// Declares and binds the probe queue (the orders exchange must exist: start it once the
    /// services are ready) and starts consuming.
    pub async fn start(prefix: &str, cleanup: &Cleanup) -> Result<Probe> {
        let queue = format!("{prefix}bench.probe");
        let exchange = Names::new(prefix).of(ORDERS.exchange);
        cleanup.queue(&queue);
        let arrivals: Arrivals = Arc::default();
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (stop, stop_rx) = oneshot::channel();
        let thread = {
            let arrivals = arrivals.clone();
            let failure = failure.clone();
            std::thread::Builder::new()
                .name("bench-probe".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error.into()));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let (connection, consumer) = match subscribe(&queue, &exchange).await {
                            Ok(subscribed) => subscribed,
                            Err(error) => {
                                let _ = ready_tx.send(Err(error));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(()));
                        let ended = record(consumer, &arrivals, &count_tx, stop_rx).await;
                        if let Err(reason) = ended {
                            *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
                        }
                        let _ = connection.close(200, "probe done".into()).await;
                    });
                })?
        };
        ready_rx
            .await
            .map_err(|_| anyhow!("the probe thread ended before it subscribed"))?
            .context("start the probe")?;
        Ok(Probe {
            arrivals,
            count,
            failure,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The arrival counter, for the progress line.
    pub fn counter(&self) -> watch::Receiver<usize> {
        self.count.clone()
    }

    pub fn get(&self, id: &str) -> Option<Arrival> {
        self.lock().get(id).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arrival>> {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The arrival of every id in `ids` (in that order), waiting until all have arrived or
    /// `deadline` passed; `None` for those that had not. Arrival instants are stamped by the
    /// probe, so how often this looks does not change any latency.
    pub async fn wait_all(
        &self,
        ids: &[String],
        deadline: Instant,
    ) -> Result<Vec<Option<Arrival>>> {
        let mut pending: Vec<&String> = ids.iter().collect();
        loop {
            {
                let arrivals = self.lock();
                pending.retain(|id| !arrivals.contains_key(id.as_str()));
            }
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            self.check()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let arrivals = self.lock();
        Ok(ids.iter().map(|id| arrivals.get(id).copied()).collect())
    }

    /// The arrival of one order, woken as soon as it comes (the one-at-a-time measurement
    /// sends the next order only then).
    pub async fn wait_one(&self, id: &str, deadline: Instant) -> Result<Option<Arrival>> {
        let mut count = self.count.clone();
        loop {
            count.borrow_and_update();
            if let Some(arrival) = self.get(id) {
                return Ok(Some(arrival));
            }
            self.check()?;
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, count.changed()).await {
                Err(_) => return Ok(self.get(id)),
                // The probe ended: `check` reports why on the next turn.
                Ok(Err(_)) => {
                    self.check()?;
                    return Ok(self.get(id));
                }
                Ok(Ok(())) => {}
            }
        }
    }

    /// An error if the probe's consumer has ended (then arrivals are no longer seen).
    pub fn check(&self) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(reason) => Err(anyhow!("the probe stopped consuming: {reason}")),
            None => Ok(()),
        }
    }

    /// Stops consuming; the exclusive queue goes with the probe's connection.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

async fn subscribe(queue: &str, exchange: &str) -> Result<(Connection, Consumer)> {
    let connection = crate::broker::connect("bench probe").await?;
    let channel = connection.create_channel().await?;
    // Exclusive and auto-delete: the queue lives exactly as long as the probe's connection.
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .with_context(|| format!("declare {queue}"))?;
    for key in TERMINAL {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("bind {queue} to {exchange} with {key}"))?;
    }
    // No acks: the probe only observes, and acking would add work on the broker's side that
    // no user of the suite asks for.
    let consumer = channel
        .basic_consume(
            queue.into(),
            "bench-probe".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}

/// Stamps every delivery until told to stop; `Err` with the reason if the consumer ended first.
async fn record(
    mut consumer: Consumer,
    arrivals: &Arrivals,
    count: &watch::Sender<usize>,
    mut stop: oneshot::Receiver<()>,
) -> std::result::Result<(), String> {
    loop {
        let delivery = tokio::select! {
            _ = &mut stop => return Ok(()),
            delivery = consumer.next() => delivery,
        };
        let at = Instant::now();
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("the consumer was cancelled".to_owned()),
        };
        let Some(id) = order_id(&delivery) else {
            continue;
        };
        let completed = delivery.routing_key.as_str() == TERMINAL[0];
        let distinct = {
            let mut arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
            // A redelivered or republished terminal event keeps the first arrival.
            arrivals.entry(id).or_insert(Arrival { at, completed });
            arrivals.len()
        };
        count.send_replace(distinct);
    }
}

/// The order id of a terminal event: its AMQP correlation id, or else the envelope's
/// `correlationid`.
fn order_id(delivery: &lapin::message::Delivery) -> Option<String> {
    if let Some(id) = delivery.properties.correlation_id() {
        return Some(id.to_string());
    }
    let envelope: serde_json::Value = serde_json::from_slice(&delivery.data).ok()?;
    envelope["correlationid"].as_str().map(str::to_owned)
}
