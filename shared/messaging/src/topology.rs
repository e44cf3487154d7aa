//! The broker topology: the whole suite's, from [`choreo_events::topology::SERVICES`], plus the
//! calling service's retry queues; first as data ([`Declarations`]), then declared.
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

/// How an exchange routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// By routing-key pattern: the suite's event exchanges.
    Topic,
    /// To every bound queue: parking lots and dead-letter exchanges.
    Fanout,
}

/// The value of an `x-` argument, as it is sent to the broker. Its AMQP type is part of the
/// declaration: RabbitMQ refuses to redeclare a queue whose argument changed type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    /// An AMQP long string.
    Text(String),
    /// An AMQP signed 64-bit integer.
    Integer(i64),
}

/// One exchange the suite declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeDeclaration {
    pub name: String,
    pub kind: ExchangeType,
    pub durable: bool,
    pub arguments: Vec<(&'static str, Argument)>,
}

/// One queue the suite declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDeclaration {
    pub name: String,
    pub durable: bool,
    pub arguments: Vec<(&'static str, Argument)>,
}

/// One binding of a queue to an exchange (`routing_key` is empty for a fanout exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingDeclaration {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

/// What is declared on the broker, as data: [`suite`] and [`retry_queues`] say what, [`declare`]
/// does it, and the API documents (`docs/api/asyncapi.json`) are written from the same values,
/// so the documented bindings and arguments are the declared ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declarations {
    pub exchanges: Vec<ExchangeDeclaration>,
    pub queues: Vec<QueueDeclaration>,
    pub bindings: Vec<BindingDeclaration>,
}

impl Declarations {
    /// A durable fanout exchange `exchange` whose every message goes to the durable queue `queue`.
    fn fanout_into_queue(
        &mut self,
        exchange: &str,
        queue: &str,
        queue_arguments: Vec<(&'static str, Argument)>,
    ) {
        self.exchanges.push(ExchangeDeclaration {
            name: exchange.to_owned(),
            kind: ExchangeType::Fanout,
            durable: true,
            arguments: Vec::new(),
        });
        self.queues.push(QueueDeclaration {
            name: queue.to_owned(),
            durable: true,
            arguments: queue_arguments,
        });
        self.bind(queue, exchange, "");
    }

    fn bind(&mut self, queue: &str, exchange: &str, routing_key: &str) {
        self.bindings.push(BindingDeclaration {
            queue: queue.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        });
    }

    /// The queue named `name`, if declared here.
    pub fn queue(&self, name: &str) -> Option<&QueueDeclaration> {
        self.queues.iter().find(|queue| queue.name == name)
    }

    /// The exchange named `name`, if declared here.
    pub fn exchange(&self, name: &str) -> Option<&ExchangeDeclaration> {
        self.exchanges.iter().find(|exchange| exchange.name == name)
    }

    /// The bindings of the queue named `queue`.
    pub fn bindings_of<'a>(
        &'a self,
        queue: &'a str,
    ) -> impl Iterator<Item = &'a BindingDeclaration> + 'a {
        self.bindings
            .iter()
            .filter(move |binding| binding.queue == queue)
    }
}

fn text(value: &str) -> Argument {
    Argument::Text(value.to_owned())
}

/// Quorum-queue arguments that dead-letter at least once (3.10+: needs `reject-publish`).
fn quorum_args(
    dead_letter_exchange: &str,
    extra: Vec<(&'static str, Argument)>,
) -> Vec<(&'static str, Argument)> {
    let mut entries = vec![
        ("x-queue-type", text("quorum")),
        ("x-dead-letter-exchange", text(dead_letter_exchange)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ];
    entries.extend(extra);
    entries
}

/// Every exchange, queue and binding of the suite.
pub fn suite(names: &Names) -> Declarations {
    let mut declarations = Declarations::default();
    for service in SERVICES {
        let exchange = names.of(service.exchange);
        let unrouted = unrouted_name(&exchange);
        // A classic lazy queue: events nobody subscribes to (order.completed, order.cancelled)
        // pile up here until an operator binds a consumer or purges them; lazy keeps them on
        // disk, not in RAM.
        declarations.fanout_into_queue(&unrouted, &unrouted, vec![("x-queue-mode", text("lazy"))]);
        declarations.exchanges.push(ExchangeDeclaration {
            name: exchange,
            kind: ExchangeType::Topic,
            durable: true,
            arguments: vec![("alternate-exchange", text(&unrouted))],
        });
    }
    for service in SERVICES {
        let dlx = names.of(&service.dead_letter_exchange());
        let dlq = names.of(&service.dead_letter_queue());
        declarations.fanout_into_queue(&dlx, &dlq, vec![("x-queue-type", text("quorum"))]);

        let queue = names.of(service.name);
        declarations.queues.push(QueueDeclaration {
            name: queue.clone(),
            durable: true,
            arguments: quorum_args(
                &dlx,
                vec![("x-delivery-limit", Argument::Integer(DELIVERY_LIMIT))],
            ),
        });
        for event_type in service.subscribes_to {
            declarations.bind(
                &queue,
                &names.of(event_type.exchange()),
                event_type.routing_key(),
            );
        }
    }
    declarations
}

/// The most messages a bystander's queue keeps; beyond it the oldest are dropped.
pub const BYSTANDER_MAX_LENGTH: i64 = 100_000;

/// Whether `service` is a bystander: outside [`SERVICES`], it watches the suite's events without
/// taking part (the observer).
pub fn is_bystander(service: &ServiceTopology) -> bool {
    !SERVICES.iter().any(|member| member.name == service.name)
}

/// The queue of a bystander (a service outside [`SERVICES`]: the observer), bound to each of its
/// event types on its publisher's exchange, and its dead-letter exchange and queue. Only the
/// bystander declares them, so they exist only once it has run.
///
/// It must never push back on the saga: a full quorum queue with the suite's `reject-publish`
/// would nack the *services'* publishes. So it drops its oldest messages beyond
/// [`BYSTANDER_MAX_LENGTH`] (`drop-head`) and has no dead-letter exchange of its own (what it
/// drops, and a message over the delivery limit, is gone for the bystander alone); what its
/// consumer dead-letters (undecodable, forged) still goes to `<name>.dlq`, bounded the same way.
pub fn bystander(names: &Names, service: &ServiceTopology) -> Declarations {
    let mut declarations = Declarations::default();
    let bounded = || {
        vec![
            ("x-queue-type", text("quorum")),
            ("x-max-length", Argument::Integer(BYSTANDER_MAX_LENGTH)),
            ("x-overflow", text("drop-head")),
        ]
    };
    declarations.fanout_into_queue(
        &names.of(&service.dead_letter_exchange()),
        &names.of(&service.dead_letter_queue()),
        bounded(),
    );
    let queue = names.of(service.name);
    let mut arguments = bounded();
    arguments.push(("x-delivery-limit", Argument::Integer(DELIVERY_LIMIT)));
    declarations.queues.push(QueueDeclaration {
        name: queue.clone(),
        durable: true,
        arguments,
    });
    for event_type in service.subscribes_to {
        declarations.bind(
            &queue,
            &names.of(event_type.exchange()),
            event_type.routing_key(),
        );
    }
    declarations
}

/// `service`'s delay queues: a message waits there for the queue's TTL, then is dead-lettered
/// through the default exchange straight back to the service's own queue, and to no other.
pub fn retry_queues(names: &Names, service: &ServiceTopology, delays: &[Duration]) -> Declarations {
    let home = names.of(service.name);
    let queues = delays
        .iter()
        .map(|delay| QueueDeclaration {
            name: names.of(&retry_queue_name(service.name, *delay)),
            durable: true,
            arguments: quorum_args(
                "",
                vec![
                    ("x-dead-letter-routing-key", text(&home)),
                    (
                        "x-message-ttl",
                        Argument::Integer(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                    ),
                ],
            ),
        })
        .collect();
    Declarations {
        queues,
        ..Declarations::default()
    }
}

fn field_table(arguments: &[(&'static str, Argument)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            Argument::Text(text) => AMQPValue::LongString(LongString::from(text.clone())),
            Argument::Integer(number) => AMQPValue::LongLongInt(*number),
        };
        table.insert(ShortString::from(*key), value);
    }
    table
}

impl QueueDeclaration {
    /// A quorum queue has members on several nodes of a cluster; any other (classic) queue
    /// lives on one node and is unavailable while that node is down.
    pub fn replicated(&self) -> bool {
        self.arguments.contains(&("x-queue-type", text("quorum")))
    }
}

/// Declares `declarations`: exchanges, then each queue with its bindings, so everything a binding
/// names exists when it is made.
///
/// A classic queue (the parking lots) lives on one node of a cluster. While that node is down,
/// RabbitMQ refuses its declaration (404, "home node ... is down"): it is declared on a channel
/// of its own, and that refusal is logged and passed over, so a service still connects to the
/// nodes that are up; what reaches it is dropped until the node is back (docs/cluster.md).
pub async fn declare(connection: &Connection, declarations: &Declarations) -> Result<()> {
    let channel = connection.create_channel().await?;
    for exchange in &declarations.exchanges {
        let kind = match exchange.kind {
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Fanout => ExchangeKind::Fanout,
        };
        let options = ExchangeDeclareOptions {
            durable: exchange.durable,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                exchange.name.as_str().into(),
                kind,
                options,
                field_table(&exchange.arguments),
            )
            .await?;
    }
    for queue in declarations.queues.iter().filter(|q| q.replicated()) {
        declare_queue(&channel, declarations, queue).await?;
    }
    channel.close(200, "declared".into()).await?;
    for queue in declarations.queues.iter().filter(|q| !q.replicated()) {
        // Its own channel: a refused declaration closes the channel it happened on.
        let channel = connection.create_channel().await?;
        match declare_queue(&channel, declarations, queue).await {
            Ok(()) => channel.close(200, "declared".into()).await?,
            Err(crate::Error::Amqp(error)) if is_not_found(&error) => tracing::warn!(
                queue = %queue.name,
                %error,
                "a classic queue's node is down; what it would receive is dropped until the node is back"
            ),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// `queue` and its bindings.
async fn declare_queue(
    channel: &Channel,
    declarations: &Declarations,
    queue: &QueueDeclaration,
) -> Result<()> {
    let options = QueueDeclareOptions {
        durable: queue.durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            queue.name.as_str().into(),
            options,
            field_table(&queue.arguments),
        )
        .await?;
    for binding in declarations.bindings_of(&queue.name) {
        channel
            .queue_bind(
                binding.queue.as_str().into(),
                binding.exchange.as_str().into(),
                binding.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Declares every exchange, queue and binding of the suite.
pub async fn declare_suite(connection: &Connection, names: &Names) -> Result<()> {
    declare(connection, &suite(names)).await
}

/// Declares `service`'s delay queues (see [`retry_queues`]).
pub async fn declare_retry_queues(
    connection: &Connection,
    names: &Names,
    service: &ServiceTopology,
    delays: &[Duration],
) -> Result<()> {
    declare(connection, &retry_queues(names, service, delays)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_binds_each_service_queue_with_the_exact_keys_of_the_table() {
        let declarations = suite(&Names::new("p."));
        let keys: Vec<_> = declarations
            .bindings_of("p.billing")
            .map(|b| (b.exchange.as_str(), b.routing_key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("p.orders.events", "order.placed"),
                ("p.shipping.events", "shipment.failed")
            ]
        );
        let queue = declarations.queue("p.billing").expect("billing's queue");
        assert!(queue.replicated());
        assert!(
            !declarations
                .queue("p.orders.events.unrouted")
                .expect("the parking lot")
                .replicated()
        );
        assert!(
            queue
                .arguments
                .contains(&("x-dead-letter-exchange", text("p.billing.dlx")))
        );
        let exchange = declarations
            .exchange("p.orders.events")
            .expect("orders' exchange");
        assert_eq!(exchange.kind, ExchangeType::Topic);
        assert_eq!(
            exchange.arguments,
            [("alternate-exchange", text("p.orders.events.unrouted"))]
        );
    }

    #[test]
    fn every_binding_names_a_declared_queue_and_exchange() {
        let declarations = suite(&Names::default());
        for binding in &declarations.bindings {
            assert!(declarations.queue(&binding.queue).is_some(), "{binding:?}");
            assert!(
                declarations.exchange(&binding.exchange).is_some(),
                "{binding:?}"
            );
        }
    }

    #[test]
    fn the_observer_is_a_bystander_whose_queue_the_suite_never_declares() {
        use choreo_events::topology::OBSERVER;
        let names = Names::new("p.");
        assert!(is_bystander(&OBSERVER));
        assert!(SERVICES.iter().all(|service| !is_bystander(service)));
        assert!(suite(&names).queue("p.observer").is_none());

        let declarations = bystander(&names, &OBSERVER);
        let queue = declarations.queue("p.observer").expect("its queue");
        assert!(queue.arguments.contains(&("x-overflow", text("drop-head"))));
        assert!(
            !queue
                .arguments
                .iter()
                .any(|(key, _)| *key == "x-dead-letter-exchange")
        );
        let bound: Vec<_> = declarations
            .bindings_of("p.observer")
            .map(|b| (b.exchange.as_str(), b.routing_key.as_str()))
            .collect();
        assert_eq!(bound.len(), choreo_events::EventType::ALL.len());
        assert!(bound.contains(&("p.shipping.events", "shipment.failed")));
        assert!(bound.contains(&("p.orders.events", "order.completed")));
        assert!(declarations.queue("p.observer.dlq").is_some());
    }

    #[test]
    fn a_retry_queue_sends_back_to_its_service_after_its_delay() {
        let declarations = retry_queues(
            &Names::default(),
            &choreo_events::topology::SHIPPING,
            &[Duration::from_millis(1500)],
        );
        let queue = declarations
            .queue("shipping.retry.1500ms")
            .expect("the delay queue");
        assert!(
            queue
                .arguments
                .contains(&("x-message-ttl", Argument::Integer(1500)))
        );
        assert!(
            queue
                .arguments
                .contains(&("x-dead-letter-routing-key", text("shipping")))
        );
    }
}
