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

/// The delay queue of `service` for one retry delay (`<service>.delay.<ms>ms`). The delay is in the
/// name so changing the configured delays declares new queues instead of clashing with old ones.
pub fn retry_queue_name(service: &str, delay: Duration) -> String {
    format!("{service}.delay.{}ms", delay.as_millis())
}

/// How an exchange routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// By routing-key pattern: the suite's event exchanges.
    Topic,
    /// To every bound queue: parking lots and dead-letter exchanges.
    Fanout,
    /// By exact routing key: a service's redelivery exchange, to its own queues by name.
    Direct,
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
    /// An existing queue of this name with other arguments is kept, with a warning, instead of
    /// failing the session: the parking lots were classic queues before they were quorum queues,
    /// and RabbitMQ refuses to change a queue's type.
    pub kept_if_different: bool,
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
        kept_if_different: bool,
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
            kept_if_different,
        });
        self.bind(queue, exchange, "");
    }

    /// `service`'s redelivery exchange, with the service's queue bound to it by its name: redriven
    /// dead letters come back that way (and retries go to its delay queues, see [`retry_queues`]).
    fn redelivery(&mut self, names: &Names, service: &ServiceTopology) {
        let redeliver = names.of(&service.redeliver_exchange());
        let queue = names.of(service.name);
        self.exchanges.push(ExchangeDeclaration {
            name: redeliver.clone(),
            kind: ExchangeType::Direct,
            durable: true,
            arguments: Vec::new(),
        });
        self.bind(&queue, &redeliver, &queue);
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
        // Events nobody subscribes to (order.completed, order.cancelled) pile up here until an
        // operator binds a consumer or purges them. A quorum queue, like every other: a publish
        // that reaches no available queue comes back to the relay, which then holds its whole
        // outbox, so a parking lot on one node would stall a service while that node is down.
        declarations.fanout_into_queue(
            &unrouted,
            &unrouted,
            vec![("x-queue-type", text("quorum"))],
            true,
        );
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
        declarations.fanout_into_queue(&dlx, &dlq, vec![("x-queue-type", text("quorum"))], false);

        let queue = names.of(service.name);
        declarations.queues.push(QueueDeclaration {
            name: queue.clone(),
            durable: true,
            arguments: quorum_args(
                &dlx,
                vec![("x-delivery-limit", Argument::Integer(DELIVERY_LIMIT))],
            ),
            kept_if_different: false,
        });
        declarations.redelivery(names, service);
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

/// What a service declares each time it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeclareScope {
    /// The whole suite ([`suite`]): start-up order never matters, but the service's user needs
    /// `configure` rights on every exchange and queue.
    #[default]
    Suite,
    /// Only the service's own queues ([`own`]): the rest was loaded by a deploy step
    /// (`deploy/rabbitmq/definitions.json`), and a user per service may configure nothing else.
    Own,
}

/// `service`'s own queue and dead-letter queue, with the same arguments as in [`suite`], and no
/// exchange or binding: redeclaring them checks that the loaded topology agrees with the code.
pub fn own(names: &Names, service: &ServiceTopology) -> Declarations {
    let suite = suite(names);
    let mine = [
        names.of(service.name),
        names.of(&service.dead_letter_queue()),
    ];
    Declarations {
        queues: suite
            .queues
            .into_iter()
            .filter(|queue| mine.contains(&queue.name))
            .collect(),
        ..Declarations::default()
    }
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
/// [`BYSTANDER_MAX_LENGTH`] (`drop-head`). Its queue dead-letters through `<name>.dlx` into
/// `<name>.dlq`, bounded the same way, with the broker's default `at-most-once` strategy (the
/// `at-least-once` one requires `reject-publish`): what its consumer dead-letters (undecodable,
/// forged), what the broker takes off at the delivery limit, and what overflow drops (reason
/// `maxlen` in `x-death`) all land there for an operator to see, instead of vanishing, and the
/// DLQ drops its own oldest beyond the bound. Its queue of an earlier version, without the
/// dead-letter exchange, is kept as it is, with a warning: delete it (the bystander loses
/// only what it had not yet seen) to give it one.
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
        false,
    );
    let queue = names.of(service.name);
    let mut arguments = bounded();
    arguments.push(("x-delivery-limit", Argument::Integer(DELIVERY_LIMIT)));
    arguments.push((
        "x-dead-letter-exchange",
        text(&names.of(&service.dead_letter_exchange())),
    ));
    declarations.queues.push(QueueDeclaration {
        name: queue.clone(),
        durable: true,
        arguments,
        kept_if_different: true,
    });
    for event_type in service.subscribes_to {
        declarations.bind(
            &queue,
            &names.of(event_type.exchange()),
            event_type.routing_key(),
        );
    }
    declarations.redelivery(names, service);
    declarations
}

/// `service`'s delay queues: a message waits there for the queue's TTL, then is dead-lettered
/// through the service's redelivery exchange straight back to the service's own queue, and to no
/// other. (Until 2026-11 they were `<service>.retry.<ms>ms`, dead-lettering through the default
/// exchange, which a service's user would need write on to declare them; such a queue left on a
/// broker still drains into the service's queue by itself, and can be deleted once empty.)
pub fn retry_queues(names: &Names, service: &ServiceTopology, delays: &[Duration]) -> Declarations {
    let home = names.of(service.name);
    let redeliver = names.of(&service.redeliver_exchange());
    let queues = delays
        .iter()
        .map(|delay| QueueDeclaration {
            name: names.of(&retry_queue_name(service.name, *delay)),
            durable: true,
            arguments: quorum_args(
                &redeliver,
                vec![
                    ("x-dead-letter-routing-key", text(&home)),
                    (
                        "x-message-ttl",
                        Argument::Integer(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                    ),
                ],
            ),
            kept_if_different: false,
        })
        .collect::<Vec<_>>();
    // Each is bound to the service's redelivery exchange by its own name: the consumer sends a
    // retry there (the exchange is declared with the suite, or loaded by the deploy step).
    let bindings = queues
        .iter()
        .map(|queue| BindingDeclaration {
            queue: queue.name.clone(),
            exchange: redeliver.clone(),
            routing_key: queue.name.clone(),
        })
        .collect();
    Declarations {
        queues,
        bindings,
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

/// Declares `declarations`: exchanges, then each queue with its bindings, so everything a binding
/// names exists when it is made.
///
/// A queue that may exist with other arguments ([`QueueDeclaration::kept_if_different`]) is
/// declared on a channel of its own (a refused declaration closes its channel). If RabbitMQ
/// refuses it because the existing queue differs (406), or because the existing one is a classic
/// queue whose node is down (404), the existing queue is kept and bound, with a warning naming
/// what to do; the session goes on.
pub async fn declare(connection: &Connection, declarations: &Declarations) -> Result<()> {
    let channel = connection.create_channel().await?;
    for exchange in &declarations.exchanges {
        let kind = match exchange.kind {
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Direct => ExchangeKind::Direct,
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
    for queue in declarations.queues.iter().filter(|q| !q.kept_if_different) {
        declare_queue(&channel, queue).await?;
        bind_queue(&channel, declarations, queue).await?;
    }
    channel.close(200, "declared".into()).await?;
    for queue in declarations.queues.iter().filter(|q| q.kept_if_different) {
        let channel = connection.create_channel().await?;
        match declare_queue(&channel, queue).await {
            Ok(()) => bind_queue(&channel, declarations, queue).await?,
            Err(crate::Error::Amqp(error)) if refused_as_different(&error) => {
                tracing::warn!(
                    queue = %queue.name,
                    %error,
                    "kept an existing queue whose arguments differ from this version's (a classic parking lot, not replicated, or the observer's queue without a dead-letter exchange, from an earlier version?): delete it when it is empty and it is declared again with them"
                );
                let channel = connection.create_channel().await?;
                bind_queue(&channel, declarations, queue).await?;
                channel.close(200, "bound".into()).await?;
                continue;
            }
            Err(error) => return Err(error),
        }
        channel.close(200, "declared".into()).await?;
    }
    Ok(())
}

/// 406 PRECONDITION_FAILED (inequivalent arguments) or 404 NOT_FOUND (a classic queue whose
/// home node is down).
fn refused_as_different(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if [404, 406].contains(&amqp.get_id()))
}

async fn declare_queue(channel: &Channel, queue: &QueueDeclaration) -> Result<()> {
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
    Ok(())
}

/// The bindings of `queue`.
async fn bind_queue(
    channel: &Channel,
    declarations: &Declarations,
    queue: &QueueDeclaration,
) -> Result<()> {
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
                ("p.billing.redeliver", "p.billing"),
                ("p.orders.events", "order.placed"),
                ("p.shipping.events", "shipment.failed")
            ]
        );
        let queue = declarations.queue("p.billing").expect("billing's queue");
        assert!(queue.arguments.contains(&("x-queue-type", text("quorum"))));
        let parking_lot = declarations
            .queue("p.orders.events.unrouted")
            .expect("the parking lot");
        assert!(
            parking_lot
                .arguments
                .contains(&("x-queue-type", text("quorum")))
        );
        assert!(parking_lot.kept_if_different && !queue.kept_if_different);
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
        // Nothing it cannot handle vanishes: it has a dead-letter exchange, with the default
        // strategy (at-least-once would need reject-publish, which would push back on the saga).
        assert!(
            queue
                .arguments
                .contains(&("x-dead-letter-exchange", text("p.observer.dlx")))
        );
        assert!(
            !queue
                .arguments
                .iter()
                .any(|(key, _)| *key == "x-dead-letter-strategy")
        );
        assert!(
            queue.kept_if_different,
            "an earlier version's queue is kept"
        );
        let bound: Vec<_> = declarations
            .bindings_of("p.observer")
            .map(|b| (b.exchange.as_str(), b.routing_key.as_str()))
            .collect();
        // Every event type, and its own redelivery exchange (its retries come back that way).
        assert_eq!(bound.len(), choreo_events::EventType::ALL.len() + 1);
        assert!(bound.contains(&("p.observer.redeliver", "p.observer")));
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
            .queue("shipping.delay.1500ms")
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
        assert!(
            queue
                .arguments
                .contains(&("x-dead-letter-exchange", text("shipping.redeliver")))
        );
        let bound: Vec<_> = declarations
            .bindings_of("shipping.delay.1500ms")
            .map(|b| (b.exchange.as_str(), b.routing_key.as_str()))
            .collect();
        assert_eq!(bound, [("shipping.redeliver", "shipping.delay.1500ms")]);
    }

    /// `deploy/rabbitmq/definitions.json` loads the topology and one user per service into a
    /// broker; services running with `CHOREO_DECLARE_TOPOLOGY=own` rely on it. It must declare
    /// exactly what `suite` does and give each user exactly the rights described in docs/security.md.
    #[test]
    fn the_broker_definitions_file_matches_the_topology_and_grants_each_service_its_own() {
        use serde_json::{Value, json};
        let file: Value =
            serde_json::from_str(include_str!("../../../deploy/rabbitmq/definitions.json"))
                .expect("definitions.json is JSON");
        let vhost = "choreo";
        let sorted = |mut items: Vec<Value>| {
            items.sort_by_key(Value::to_string);
            items
        };
        let arguments = |arguments: &[(&str, Argument)]| {
            Value::Object(
                arguments
                    .iter()
                    .map(|(key, value)| {
                        let value = match value {
                            Argument::Text(text) => json!(text),
                            Argument::Integer(number) => json!(number),
                        };
                        ((*key).to_owned(), value)
                    })
                    .collect(),
            )
        };
        let suite = suite(&Names::default());
        let expected_exchanges = suite
            .exchanges
            .iter()
            .map(|e| {
                json!({"name": e.name, "vhost": vhost, "durable": e.durable, "auto_delete": false,
                       "internal": false, "arguments": arguments(&e.arguments),
                       "type": match e.kind { ExchangeType::Topic => "topic", ExchangeType::Fanout => "fanout", ExchangeType::Direct => "direct" }})
            })
            .collect();
        let expected_queues = suite
            .queues
            .iter()
            .map(|q| {
                json!({"name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": false,
                       "arguments": arguments(&q.arguments)})
            })
            .collect();
        let expected_bindings = suite
            .bindings
            .iter()
            .map(|b| {
                json!({"source": b.exchange, "vhost": vhost, "destination": b.queue,
                       "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}})
            })
            .collect();
        let list = |key: &str| file[key].as_array().cloned().unwrap_or_default();
        assert_eq!(sorted(list("exchanges")), sorted(expected_exchanges));
        assert_eq!(sorted(list("queues")), sorted(expected_queues));
        assert_eq!(sorted(list("bindings")), sorted(expected_bindings));

        let escape = |name: &str| name.replace('.', "\\.");
        for service in SERVICES {
            let own = format!("^{}(\\.dlq|\\.delay\\.[0-9]+ms)?$", service.name);
            // Read on its redelivery exchange binds its delay queues to it; write on those
            // queues too (a binding's destination). No `amq.default`: the default exchange
            // would reach every queue.
            let read = format!(
                "^{}(\\.dlq|\\.delay\\.[0-9]+ms|\\.redeliver)?$",
                service.name
            );
            let write = format!(
                "^({}|{name}\\.dlx|{name}\\.redeliver|{name}\\.delay\\.[0-9]+ms)$",
                escape(service.exchange),
                name = service.name
            );
            let granted = list("permissions")
                .into_iter()
                .find(|p| p["user"] == service.name)
                .expect("the service's permissions");
            assert_eq!(
                granted,
                json!({"user": service.name, "vhost": vhost, "configure": own, "write": write, "read": read})
            );
            let keys: Vec<String> = choreo_events::EventType::ALL
                .iter()
                .filter(|t| t.exchange() == service.exchange)
                .map(|t| escape(t.routing_key()))
                .collect();
            let topic = list("topic_permissions")
                .into_iter()
                .find(|p| p["user"] == service.name)
                .expect("the service's topic permissions");
            assert_eq!(
                topic,
                json!({"user": service.name, "vhost": vhost, "exchange": service.exchange,
                       "write": format!("^({})$", keys.join("|")), "read": ".*"})
            );
            let user = list("users")
                .into_iter()
                .find(|u| u["name"] == service.name)
                .expect("the service's user");
            assert_eq!(user["tags"], json!([]), "no tags: no management access");
        }
        // The observer (a bystander) declares its own queues and exchanges, binds its queue
        // from the three event exchanges, and publishes nowhere but its own.
        let observer = list("permissions")
            .into_iter()
            .find(|p| p["user"] == "observer")
            .expect("the observer's permissions");
        let mine = "observer(\\.dlq|\\.dlx|\\.redeliver|\\.delay\\.[0-9]+ms)?";
        assert_eq!(
            observer,
            json!({"user": "observer", "vhost": vhost, "configure": format!("^{mine}$"),
                   "write": format!("^{mine}$"),
                   "read": format!("^({mine}|orders\\.events|billing\\.events|shipping\\.events)$")})
        );
        let mut users: Vec<String> = list("users")
            .iter()
            .map(|u| u["name"].as_str().expect("a name").to_owned())
            .collect();
        users.sort();
        // No administrator, no guest: the broker's administrator is the deployment's own
        // (the operator's default user, rabbitmqctl), never loaded with the services' users.
        assert_eq!(users, ["billing", "observer", "orders", "shipping"]);
        for user in list("users") {
            assert!(
                user.get("password").is_none() && user.get("password_hash").is_none(),
                "no password in the repository: scripts/broker-users.py generates them ({user})"
            );
        }
        assert_eq!(list("permissions").len(), users.len(), "one grant per user");
    }
}
