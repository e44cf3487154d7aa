//! The broker supervisor: keeps a service connected, whatever the broker does.
//!
//! A *session* is two connections (publishing and consuming on separate connections, so a broker
//! that blocks publishers under a memory alarm does not also stall acks), the suite topology
//! declared, the outbox relay and the consumer loop. Any failure of any part (a connection error,
//! a missed heartbeat, a closed channel, a nacked publish) ends the session; the supervisor then
//! reconnects with capped exponential backoff and full jitter, declares the topology again and
//! resumes. The process never exits because the broker went away, and `/readyz` reports 503 while
//! it is disconnected. Unacked deliveries of a dead session are redelivered by the broker.

use crate::backoff::backoff;
use crate::consumer::ConsumerLoop;
use crate::health::BrokerHealth;
use crate::metrics::RuntimeMetrics;
use crate::outbox::Relay;
use crate::{Error, Handler, Names, Nodes, OutboxWaker, Publisher, Result, topology};
use choreo_events::topology::ServiceTopology;
use choreo_store::Database;
use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::BasicQosOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How a service talks to RabbitMQ.
#[derive(Clone)]
pub struct BrokerSettings {
    /// The broker's nodes: one `amqp://user:password@host:port/vhost`, or a cluster's several.
    pub nodes: Nodes,
    /// How long a node may take to accept a connection before the next one is tried.
    pub connect_timeout: Duration,
    /// Prepended to every exchange and queue name.
    pub prefix: String,
    /// Unacked deliveries the broker may push ahead of the consumer.
    pub prefetch: u16,
    /// AMQP heartbeat; a broker silent for about twice this long is taken as dead.
    pub heartbeat: Duration,
    /// Delay of each retry of a transient failure; their count is the number of retries.
    pub retry_delays: Vec<Duration>,
    /// First and largest wait between two reconnection attempts.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long a graceful stop may spend publishing the outbox.
    pub shutdown_timeout: Duration,
    /// Outbox rows published per batch, and the period of the safety-net sweep.
    pub outbox_batch: i64,
    pub outbox_sweep: Duration,
    /// Fault-test crash and error points (empty in production).
    pub failpoints: crate::failpoint::Failpoints,
    /// The most received deliveries handled in one transaction (1: one at a time).
    pub consumer_batch: usize,
    /// How long a batch waits for more deliveries (zero: it takes what has arrived).
    pub consumer_linger: Duration,
    /// What the service declares at every connect: the whole suite, or only its own queues.
    pub declare: topology::DeclareScope,
    /// The queue consumed, unprefixed, when not the service's own (a partitioned topology).
    pub consume_queue: Option<String>,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("nodes", &self.nodes)
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("heartbeat", &self.heartbeat)
            .field("retry_delays", &self.retry_delays)
            .field("declare", &self.declare)
            .field("consume_queue", &self.consume_queue)
            .finish_non_exhaustive()
    }
}

/// A service's link to the broker.
#[derive(Debug)]
pub struct Broker<H> {
    pub settings: BrokerSettings,
    pub service: ServiceTopology,
    pub db: Database,
    pub handler: Arc<H>,
    pub waker: OutboxWaker,
    pub health: Arc<BrokerHealth>,
    pub metrics: Arc<RuntimeMetrics>,
    /// The service's tracer (off unless `CHOREO_OTLP_ENDPOINT` is set).
    pub traces: crate::Traces,
}

impl<H: Handler> Broker<H> {
    /// Runs sessions until `stop` is cancelled, reconnecting after every failure. With several
    /// nodes, a session that fails is followed by one that starts with the next node: a node
    /// that went away is not waited for while the others hold the queues.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        let mut node: usize = 0;
        // A refused login is said once, loudly; its repeats only at debug, until a failure of
        // another kind (a session that ran and ended, a broker away) says it may be news again.
        let mut login_refused_said = false;
        loop {
            match self.session(&stop, &mut failures, &mut node).await {
                Ok(()) => return,
                Err(error) => {
                    node = node.wrapping_add(1);
                    self.health.set_connected(false);
                    self.health.set_consuming(false);
                    let delay = backoff(
                        self.settings.reconnect_min,
                        self.settings.reconnect_max,
                        failures,
                    );
                    failures = failures.saturating_add(1);
                    self.metrics.reconnecting();
                    match &error {
                        Error::LoginRefused { .. } if login_refused_said => {
                            tracing::debug!(%error, ?delay, attempt = failures, "broker login refused again; retrying");
                        }
                        Error::LoginRefused { user, .. } => {
                            login_refused_said = true;
                            tracing::error!(%error, %user, "broker login refused; reconnecting quietly, with backoff, until it is accepted");
                        }
                        _ => {
                            login_refused_said = false;
                            tracing::warn!(%error, ?delay, attempt = failures, "broker session failed; reconnecting");
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    fn connection_name(&self, role: &str) -> String {
        format!("{}{}-{role}", self.settings.prefix, self.service.name)
    }

    /// One connected session; `Ok` only after a graceful stop. `node` is the node to try first;
    /// it is left at the node the session used.
    async fn session(
        &self,
        stop: &CancellationToken,
        failures: &mut u32,
        node: &mut usize,
    ) -> Result<()> {
        if stop.is_cancelled() {
            return Ok(());
        }
        let names = Names::new(self.settings.prefix.clone());
        let (heartbeat, timeout) = (self.settings.heartbeat, self.settings.connect_timeout);
        let nodes = &self.settings.nodes;
        let (publishing, connected) = nodes
            .connect_first(
                *node,
                heartbeat,
                timeout,
                &self.connection_name("publisher"),
            )
            .await?;
        *node = connected;
        let consuming = match nodes
            .connect_to(
                connected,
                heartbeat,
                timeout,
                &self.connection_name("consumer"),
            )
            .await
        {
            Ok(connection) => connection,
            Err(error) => {
                close(&publishing).await;
                return Err(error);
            }
        };
        let result = self
            .connected_session(stop, failures, &names, &publishing, &consuming, connected)
            .await;
        self.health.set_connected(false);
        close(&consuming).await;
        close(&publishing).await;
        result
    }

    async fn connected_session(
        &self,
        stop: &CancellationToken,
        failures: &mut u32,
        names: &Names,
        publishing: &Connection,
        consuming: &Connection,
        node: usize,
    ) -> Result<()> {
        match self.settings.declare {
            topology::DeclareScope::Suite => topology::declare_suite(publishing, names).await?,
            topology::DeclareScope::Own => {
                topology::declare(publishing, &topology::own(names, &self.service)).await?
            }
        }
        // A bystander (the observer) is no part of the suite's table: its queue is its own to
        // declare, after the exchanges it binds to.
        if topology::is_bystander(&self.service) {
            topology::declare(publishing, &topology::bystander(names, &self.service)).await?;
        }
        topology::declare_retry_queues(
            publishing,
            names,
            &self.service,
            &self.settings.retry_delays,
        )
        .await?;

        let publisher = Publisher::open(publishing).await?;
        let channel = consuming.create_channel().await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;

        *failures = 0;
        self.health.set_connected(true);
        tracing::info!(node = %self.settings.nodes.redacted(node), prefix = %names.prefix(), "connected to the broker");

        let relay_stop = CancellationToken::new();
        let consumer_stop = CancellationToken::new();
        let relay = Relay {
            db: self.db.clone(),
            exchange: names.of(self.service.exchange),
            source: self.service.name.to_owned(),
            waker: self.waker.clone(),
            batch_size: self.settings.outbox_batch,
            sweep_interval: self.settings.outbox_sweep,
            failpoints: self.settings.failpoints.clone(),
            metrics: self.metrics.clone(),
        };
        let consumer = Arc::new(ConsumerLoop {
            handler: self.handler.clone(),
            db: self.db.clone(),
            names: names.clone(),
            service: self.service,
            waker: self.waker.clone(),
            retry_delays: self.settings.retry_delays.clone(),
            health: self.health.clone(),
            failpoints: self.settings.failpoints.clone(),
            max_batch: self.settings.consumer_batch.max(1),
            linger: self.settings.consumer_linger,
            metrics: self.metrics.clone(),
            traces: self.traces.clone(),
            redeliver: names.of(&self.service.redeliver_exchange()),
            queue: names.of(self
                .settings
                .consume_queue
                .as_deref()
                .unwrap_or(self.service.name)),
        });
        let mut relay_task: JoinHandle<Result<()>> = tokio::spawn(relay.run(
            publisher.clone(),
            relay_stop.clone(),
            self.settings.shutdown_timeout,
        ));
        let mut consumer_task: JoinHandle<Result<()>> = {
            let (consumer, stop) = (consumer.clone(), consumer_stop.clone());
            tokio::spawn(async move { consumer.run(channel, publisher, stop).await })
        };
        let mut publishing_events = publishing.events_listener();
        let mut consuming_events = consuming.events_listener();

        let outcome = loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // Graceful: stop taking deliveries and finish the one in hand, then let the
                    // relay publish what is committed, within the shutdown timeout.
                    consumer_stop.cancel();
                    let consumed = joined(&mut consumer_task).await;
                    relay_stop.cancel();
                    let relayed = joined(&mut relay_task).await;
                    break consumed.and(relayed);
                }
                ended = &mut relay_task => break Err(ended_early("outbox relay", ended)),
                ended = &mut consumer_task => break Err(ended_early("consumer", ended)),
                Some(event) = publishing_events.next() => if let Some(error) = fatal(event) { break Err(error) },
                Some(event) = consuming_events.next() => if let Some(error) = fatal(event) { break Err(error) },
            }
        };
        relay_task.abort();
        consumer_task.abort();
        outcome
    }
}

async fn joined(task: &mut JoinHandle<Result<()>>) -> Result<()> {
    match task.await {
        Ok(result) => result,
        Err(_) => Err(Error::ChannelGone),
    }
}

fn ended_early(what: &str, ended: Result<Result<()>, tokio::task::JoinError>) -> Error {
    match ended {
        Ok(Err(error)) => error,
        Ok(Ok(())) | Err(_) => {
            tracing::warn!("{what} stopped unexpectedly");
            Error::ChannelGone
        }
    }
}

fn fatal(event: lapin::Event) -> Option<Error> {
    match event {
        lapin::Event::Error(error) => Some(error.into()),
        lapin::Event::ConnectionBlocked(reason) => {
            tracing::warn!(
                reason,
                "the broker blocked publishing (resource alarm); the outbox holds events until it is lifted"
            );
            None
        }
        lapin::Event::ConnectionUnblocked => {
            tracing::info!("the broker unblocked publishing");
            None
        }
        _ => None,
    }
}

async fn close(connection: &Connection) {
    if connection.status().connected() {
        let closing = connection.close(200, "bye".into());
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}
