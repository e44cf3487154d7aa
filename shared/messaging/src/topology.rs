//! Declares the broker topology: the whole suite's, from [`choreo_events::topology::SERVICES`],
//! plus the calling service's retry queues.
//!
//! Every service declares every exchange, queue and binding of the suite, with identical
//! arguments, before it publishes anything. So start-up order does not matter: an event published
//! before its consumer ever ran already has a queue to land in. Declarations are idempotent; a
//! mismatch of arguments (someone changed a constant below without migrating the broker) fails the
//! declaration loudly with PRECONDITION_FAILED instead of running on a half-configured broker.

use crate::{Names, Result};
use choreo_events::topology::{SERVICES, ServiceTopology};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use std::time::Duration;

/// How many times a quorum queue delivers one message before dead-lettering it. Our own retries
/// ack and republish, so this only counts deliveries whose handler never finished: a message that
/// crashes the process every time it is handled stops after this many tries instead of looping.
/// RabbitMQ 3.10 sets no default, so without it a poison message would loop forever.
pub const DELIVERY_LIMIT: i64 = 20;

/// The alternate exchange of `exchange`: keeps what no binding routed (`<exchange>.unrouted`).
pub fn unrouted_name(exchange: &str) -> String {
    format!("{exchange}.unrouted")
}

/// The delay queue of `service` for one retry delay (`<service>.retry.<ms>ms`). The delay is in the
/// name so changing the configured delays declares new queues instead of clashing with old ones.
pub fn retry_queue_name(service: &str, delay: Duration) -> String {
    format!("{service}.retry.{}ms", delay.as_millis())
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(*key), value.clone());
    }
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Quorum-queue arguments that dead-letter at least once (3.10+: needs `reject-publish`).
fn quorum_args(dead_letter_exchange: &str, extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut entries = vec![
        ("x-queue-type", text("quorum")),
        ("x-dead-letter-exchange", text(dead_letter_exchange)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ];
    entries.extend(extra.iter().cloned());
    table(&entries)
}

/// Declares every exchange, queue and binding of the suite, on channels of its own.
pub async fn declare_suite(connection: &Connection, names: &Names) -> Result<()> {
    let channel = connection.create_channel().await?;
    for service in SERVICES {
        declare_exchange(&channel, names, service.exchange).await?;
    }
    for service in SERVICES {
        declare_service_queues(&channel, names, service).await?;
    }
    channel.close(200, "suite declared".into()).await?;
    for service in SERVICES {
        declare_parking_lot(connection, names, service.exchange).await?;
    }
    Ok(())
}

/// The topic exchange, with an alternate exchange (a fanout) for what no binding routes.
async fn declare_exchange(channel: &Channel, names: &Names, exchange: &str) -> Result<()> {
    let exchange = names.of(exchange);
    let unrouted = unrouted_name(&exchange);
    declare_fanout(channel, &unrouted).await?;
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            table(&[("alternate-exchange", text(&unrouted))]),
        )
        .await?;
    Ok(())
}

/// The queue behind an exchange's alternate exchange. A classic lazy queue: events nobody
/// subscribes to (order.completed, order.cancelled) pile up here until an operator binds a
/// consumer or purges them; lazy keeps them on disk, not in RAM.
///
/// A classic queue lives on one node of a cluster. While that node is down, RabbitMQ refuses its
/// declaration (404, "home node ... is down"): the service goes on without it rather than
/// refusing to connect to the nodes that are up, and what nobody subscribes to is dropped until
/// that node is back (docs/cluster.md).
async fn declare_parking_lot(connection: &Connection, names: &Names, exchange: &str) -> Result<()> {
    let unrouted = unrouted_name(&names.of(exchange));
    // Its own channel: a refused declaration closes the channel it happened on.
    let channel = connection.create_channel().await?;
    let lazy = table(&[("x-queue-mode", text("lazy"))]);
    match bind_queue_to_fanout(&channel, &unrouted, &unrouted, lazy).await {
        Ok(()) => {
            channel.close(200, "parking lot declared".into()).await?;
            Ok(())
        }
        Err(crate::Error::Amqp(error)) if is_not_found(&error) => {
            tracing::warn!(
                queue = %unrouted,
                %error,
                "the parking-lot queue's node is down; events nobody subscribes to are dropped until it is back"
            );
            Ok(())
        }
        Err(error) => Err(error),
    }
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

async fn declare_fanout(channel: &Channel, exchange: &str) -> Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// A durable fanout exchange `exchange` whose every message goes to the durable queue `queue`.
async fn declare_fanout_into_queue(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    queue_args: FieldTable,
) -> Result<()> {
    declare_fanout(channel, exchange).await?;
    bind_queue_to_fanout(channel, exchange, queue, queue_args).await
}

async fn bind_queue_to_fanout(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    queue_args: FieldTable,
) -> Result<()> {
    let no_args = FieldTable::default;
    channel
        .queue_declare(queue.into(), durable_queue(), queue_args)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            no_args(),
        )
        .await?;
    Ok(())
}

async fn declare_service_queues(
    channel: &Channel,
    names: &Names,
    service: &ServiceTopology,
) -> Result<()> {
    let dlx = names.of(&service.dead_letter_exchange());
    let dlq = names.of(&service.dead_letter_queue());
    let quorum = table(&[("x-queue-type", text("quorum"))]);
    declare_fanout_into_queue(channel, &dlx, &dlq, quorum).await?;

    let queue = names.of(service.name);
    channel
        .queue_declare(
            queue.as_str().into(),
            durable_queue(),
            quorum_args(
                &dlx,
                &[("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT))],
            ),
        )
        .await?;
    for event_type in service.subscribes_to {
        channel
            .queue_bind(
                queue.as_str().into(),
                names.of(event_type.exchange()).as_str().into(),
                event_type.routing_key().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares `service`'s delay queues: a message waits there for the queue's TTL, then is
/// dead-lettered through the default exchange straight back to the service's own queue, and to
/// no other.
pub async fn declare_retry_queues(
    channel: &Channel,
    names: &Names,
    service: &ServiceTopology,
    delays: &[Duration],
) -> Result<()> {
    let home = names.of(service.name);
    for delay in delays {
        let queue = names.of(&retry_queue_name(service.name, *delay));
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        channel
            .queue_declare(
                queue.as_str().into(),
                durable_queue(),
                quorum_args(
                    "",
                    &[
                        ("x-dead-letter-routing-key", text(&home)),
                        ("x-message-ttl", AMQPValue::LongLongInt(ttl)),
                    ],
                ),
            )
            .await?;
    }
    Ok(())
}
