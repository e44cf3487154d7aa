//! The partitioned topology of the replicas experiment (`bench --partitioned`, docs/benchmarks.md,
//! "Replicas"): orders' incoming events are hashed by order over one queue per orders replica,
//! so that the `payment.captured` and the `shipment.dispatched` of one order meet the same
//! replica instead of two replicas waiting on each other's lock of the order's row.
//!
//! This is **not** the contract's topology (one quorum queue per service, bound with the exact
//! routing keys): it exists to measure what routing by order would buy. What it declares, before
//! any service starts:
//! - the suite's topology as every service declares it, less the bindings of the `orders` queue;
//! - `<prefix>orders.partitions`, an `x-consistent-hash` exchange (the plugin
//!   `rabbitmq_consistent_hash_exchange`, shipped with RabbitMQ, off by default) hashing the AMQP
//!   `correlation_id` property, which the services set to the order id;
//! - `<prefix>orders.p1` … `orders.pN`, quorum queues with the `orders` queue's own arguments
//!   (same dead-letter exchange, same delivery limit), each bound with weight 1;
//! - for each binding the `orders` queue had (the events orders consumes, and its redelivery
//!   exchange, through which retries and redriven dead letters come back), the same binding
//!   from that exchange to the hash exchange.
//!
//! Every service then runs with `CHOREO_DECLARE_TOPOLOGY=own` (so none binds the `orders` queue
//! again) and orders replica `k` with `CHOREO_CONSUME_QUEUE=orders.pk`.

use crate::cleanup::Cleanup;
use anyhow::{Context, Result, bail};
use choreo_e2e::amqp_url;
use choreo_events::topology::ORDERS;
use choreo_messaging::Names;
use choreo_messaging::topology::{self, BindingDeclaration, Declarations};
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

const PLUGIN: &str = "rabbitmq_consistent_hash_exchange";

/// The queue orders replica `replica` (from 1) consumes, unprefixed.
pub fn queue(replica: usize) -> String {
    format!("{}.p{replica}", ORDERS.name)
}

/// Enables the plugin on the local broker (a no-op when it is on already).
pub async fn enable_plugin() -> Result<()> {
    let output = tokio::process::Command::new("rabbitmq-plugins")
        .args(["-q", "enable", PLUGIN])
        .output()
        .await
        .context("run rabbitmq-plugins")?;
    if !output.status.success() {
        bail!(
            "rabbitmq-plugins enable {PLUGIN} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Declares the partitioned topology under `prefix` for `replicas` orders replicas.
pub async fn declare(prefix: &str, replicas: usize, cleanup: &Cleanup) -> Result<()> {
    let names = Names::new(prefix);
    let home = names.of(ORDERS.name);
    let hash = names.of(&format!("{}.partitions", ORDERS.name));
    let mut suite = topology::suite(&names);
    let home_queue = suite
        .queue(&home)
        .cloned()
        .context("the suite declares the orders queue")?;
    let (moved, kept): (Vec<BindingDeclaration>, Vec<BindingDeclaration>) =
        std::mem::take(&mut suite.bindings)
            .into_iter()
            .partition(|binding| binding.queue == home);
    suite.bindings = kept;

    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    topology::declare(&connection, &suite).await?;
    let channel = connection.create_channel().await?;
    cleanup.exchange(&hash);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "hash-property".into(),
        AMQPValue::LongString(LongString::from("correlation_id")),
    );
    channel
        .exchange_declare(
            hash.as_str().into(),
            ExchangeKind::Custom("x-consistent-hash".into()),
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            arguments,
        )
        .await
        .with_context(|| format!("declare {hash} (is the plugin {PLUGIN} on?)"))?;
    let mut partitions = Declarations::default();
    for replica in 1..=replicas {
        let name = names.of(&queue(replica));
        cleanup.queue(&name);
        let mut declaration = home_queue.clone();
        declaration.name = name.clone();
        partitions.queues.push(declaration);
        partitions.bindings.push(BindingDeclaration {
            queue: name,
            exchange: hash.clone(),
            routing_key: "1".into(),
        });
    }
    topology::declare(&connection, &partitions).await?;
    for binding in moved {
        channel
            .exchange_bind(
                hash.as_str().into(),
                binding.exchange.as_str().into(),
                binding.routing_key.as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("bind {hash} to {}", binding.exchange))?;
    }
    let _ = connection.close(200, "partitions declared".into()).await;
    Ok(())
}
