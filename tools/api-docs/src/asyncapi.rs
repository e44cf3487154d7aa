//! The AsyncAPI 3.0 document of the whole choreography.
//!
//! Nothing here is a hand-written list: the channels, who sends and who receives come from the
//! topology table (`choreo_events::topology::SERVICES`, `EventType::publisher`); the exchanges,
//! queues, their arguments and bindings from the declarations the runtime really makes
//! (`choreo_messaging::topology::{suite, retry_queues}`, with the default settings); the message
//! payloads from the event types (`choreo_events::schema`). A new event type, subscription or
//! queue argument changes this document, and CI notices when `docs/api/` was not regenerated.
//!
//! Layout: one channel per event type (`is: routingKey` on its topic exchange; operations that
//! *send* use it), one channel per declared queue (`is: queue`: each service's queue, dead-letter
//! queue, delay queues and the exchanges' parking lots; the operation that *receives* uses the
//! service's queue). Queue arguments and bindings are in the `x-arguments` and `x-bindings`
//! extensions of each queue channel's AMQP binding, which has no field for them.

use crate::examples;
use choreo_events::envelope::AMQP_CONTENT_TYPE;
use choreo_events::topology::{SERVICES, ServiceTopology};
use choreo_events::{EventType, schema};
use choreo_messaging::Names;
use choreo_messaging::topology::{
    Argument, Declarations, ExchangeType, QueueDeclaration, retry_queue_name, retry_queues, suite,
    unrouted_name,
};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The AsyncAPI version written.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// The version of the AMQP bindings used.
const AMQP_BINDING_VERSION: &str = "0.3.0";

/// The id of `event_type`'s message and channel (`order.placed` -> `order-placed`).
fn id(event_type: EventType) -> String {
    event_type.routing_key().replace('.', "-")
}

/// The id of the channel of the queue named `queue`.
fn queue_channel_id(queue: &str) -> String {
    format!("queue-{}", queue.replace('.', "-"))
}

fn exchange_type(kind: ExchangeType) -> &'static str {
    match kind {
        ExchangeType::Topic => "topic",
        ExchangeType::Fanout => "fanout",
        ExchangeType::Direct => "direct",
    }
}

fn arguments(arguments: &[(&'static str, Argument)]) -> Value {
    let map: Map<String, Value> = arguments
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Argument::Text(text) => json!(text),
                Argument::Integer(number) => json!(number),
            };
            ((*key).to_owned(), value)
        })
        .collect();
    Value::Object(map)
}

/// What the suite declares with the default settings: its topology and every service's delay
/// queues (`CHOREO_RETRY_DELAYS_MS`).
fn declared(delays: &[Duration]) -> Declarations {
    let names = Names::default();
    let mut declarations = suite(&names);
    for service in SERVICES {
        let retries = retry_queues(&names, service, delays);
        declarations.queues.extend(retries.queues);
        declarations.bindings.extend(retries.bindings);
        declarations.exchanges.extend(retries.exchanges);
    }
    declarations
}

/// The default retry delays of the services.
fn default_retry_delays() -> Vec<Duration> {
    choreo_host::settings::defaults(&orders::SETTINGS)
        .and_then(|defaults| defaults.common())
        .and_then(|common| common.messaging())
        .map(|broker| broker.retry_delays)
        .expect("the default settings load")
}

/// What a queue is for, and so which messages it holds.
struct QueueRole {
    description: String,
    messages: Vec<EventType>,
}

fn role(queue: &QueueDeclaration, declarations: &Declarations, delays: &[Duration]) -> QueueRole {
    let bound = |service: &ServiceTopology| -> Vec<EventType> {
        declarations
            .bindings_of(service.name)
            .filter_map(|binding| EventType::from_routing_key(&binding.routing_key))
            .collect()
    };
    for service in SERVICES {
        if queue.name == service.name {
            return QueueRole {
                description: format!(
                    "The queue of `{0}`: every event `{0}` handles, bound by its exact routing \
                     keys. A delivery is acked after its effect, its inbox row and the events it \
                     causes committed in one transaction; a permanent failure is dead-lettered \
                     to `{1}` with the reason in the `x-error` header, a transient one waits in a \
                     delay queue.",
                    service.name,
                    service.dead_letter_queue(),
                ),
                messages: bound(service),
            };
        }
        if queue.name == service.dead_letter_queue() {
            return QueueRole {
                description: format!(
                    "The dead letters of `{}` (through the fanout exchange `{}`): what it could \
                     not handle (undecodable, invalid, unknown type, unsupported schema version, \
                     a provenance mismatch, retries or deliveries exhausted), each with the \
                     reason in the `x-error` header. Nothing is dropped silently.",
                    service.name,
                    service.dead_letter_exchange(),
                ),
                messages: bound(service),
            };
        }
        if let Some(delay) = delays
            .iter()
            .find(|delay| queue.name == retry_queue_name(service.name, **delay))
        {
            return QueueRole {
                description: format!(
                    "A delay queue of `{}`: a delivery whose handling failed transiently waits \
                     here {} ms, then goes back to `{}` through the default exchange.",
                    service.name,
                    delay.as_millis(),
                    service.name,
                ),
                messages: bound(service),
            };
        }
        if queue.name == unrouted_name(service.exchange) {
            let unbound = EventType::ALL
                .into_iter()
                .filter(|t| t.exchange() == service.exchange)
                .filter(|t| {
                    !declarations
                        .bindings
                        .iter()
                        .any(|b| b.exchange == service.exchange && b.routing_key == t.routing_key())
                })
                .collect();
            return QueueRole {
                description: format!(
                    "The parking lot of `{0}`, behind its alternate exchange `{1}`: every event \
                     published to `{0}` that no binding routed, kept instead of lost. It grows \
                     until an operator consumes or purges it.",
                    service.exchange,
                    unrouted_name(service.exchange),
                ),
                messages: unbound,
            };
        }
    }
    QueueRole {
        description: String::new(),
        messages: Vec::new(),
    }
}

fn message_refs(channel: &str, messages: &[EventType]) -> Vec<Value> {
    messages
        .iter()
        .map(|t| json!({"$ref": format!("#/channels/{channel}/messages/{}", id(*t))}))
        .collect()
}

fn channel_messages(messages: &[EventType]) -> Value {
    let map: Map<String, Value> = messages
        .iter()
        .map(|t| {
            (
                id(*t),
                json!({"$ref": format!("#/components/messages/{}", id(*t))}),
            )
        })
        .collect();
    Value::Object(map)
}

/// The AsyncAPI document.
pub fn document() -> Value {
    let delays = default_retry_delays();
    let declarations = declared(&delays);
    let mut generator = SchemaSettings::draft07()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();

    let mut schemas = Map::new();
    let mut messages = Map::new();
    for event_type in EventType::ALL {
        let event_schema = format!("{}-event", id(event_type));
        schemas.insert(
            event_schema.clone(),
            schema::event(&mut generator, event_type).to_value(),
        );
        let publisher = event_type.publisher();
        let routing_key = event_type.routing_key();
        let subscribers: Vec<&str> = SERVICES
            .iter()
            .filter(|s| s.subscribes_to.contains(&event_type))
            .map(|s| s.name)
            .collect();
        let consumed_by = if subscribers.is_empty() {
            format!(
                "No service of the suite consumes it: it waits in `{}`.",
                unrouted_name(event_type.exchange())
            )
        } else {
            format!("Consumed by {}.", subscribers.join(", "))
        };
        messages.insert(
            id(event_type),
            json!({
                "name": routing_key,
                "title": routing_key,
                "summary": format!("Published by {} to `{}`. {consumed_by}", publisher.name, event_type.exchange()),
                "description": "A CloudEvents 1.0 event in structured JSON mode, in the AMQP body. \
                    AMQP properties: `message_id` = `id`, `type` = `type`, `app_id` = `source`, \
                    `correlation_id` = `correlationid`, `content_type` = \
                    `application/cloudevents+json`, `timestamp`, `delivery_mode` 2 (persistent). \
                    Consumers ignore unknown fields and dead-letter an event whose `type`, routing \
                    key, exchange and `source` disagree, or whose `schemaversion` they do not support.",
                "contentType": AMQP_CONTENT_TYPE,
                "payload": {"$ref": format!("#/components/schemas/{event_schema}")},
                "correlationId": {
                    "description": "The order id: every event of one saga carries it.",
                    "location": "$message.payload#/correlationid",
                },
                "bindings": {"amqp": {
                    "messageType": routing_key,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
                "examples": [{
                    "name": id(event_type),
                    "payload": examples::example(event_type),
                }],
            }),
        );
    }
    schemas.extend(generator.take_definitions(true));
    schemas.sort_keys();

    let mut channels = Map::new();
    let mut operations = Map::new();
    // One channel per event type, on its topic exchange: where its publisher sends it.
    for exchange in declarations
        .exchanges
        .iter()
        .filter(|e| e.kind == ExchangeType::Topic)
    {
        for event_type in EventType::ALL
            .into_iter()
            .filter(|t| t.exchange() == exchange.name)
        {
            let channel = id(event_type);
            channels.insert(
                channel.clone(),
                json!({
                    "address": event_type.routing_key(),
                    "title": format!("{} on {}", event_type.routing_key(), exchange.name),
                    "description": format!(
                        "Routing key `{}` on the topic exchange `{}`. Unrouted messages go to its \
                         alternate exchange.",
                        event_type.routing_key(), exchange.name
                    ),
                    "messages": channel_messages(&[event_type]),
                    "bindings": {"amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": exchange.name,
                            "type": exchange_type(exchange.kind),
                            "durable": exchange.durable,
                            "autoDelete": false,
                            "vhost": "/",
                        },
                        "x-arguments": arguments(&exchange.arguments),
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }},
                }),
            );
            let publisher = event_type.publisher().name;
            operations.insert(
                format!("{publisher}-sends-{channel}"),
                json!({
                    "action": "send",
                    "title": format!("{publisher} publishes {}", event_type.routing_key()),
                    "description": "From the transactional outbox, after the state change that \
                        causes it committed; confirmed by the broker (a nack or a return is a \
                        failure and the event stays in the outbox).",
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "messages": message_refs(&channel, &[event_type]),
                    "tags": [{"name": publisher}],
                    "bindings": {"amqp": {
                        "deliveryMode": 2,
                        "mandatory": true,
                        "timestamp": true,
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }},
                }),
            );
        }
    }
    // One channel per declared queue.
    for queue in &declarations.queues {
        let role = role(queue, &declarations, &delays);
        let channel = queue_channel_id(&queue.name);
        let bindings: Vec<Value> = declarations
            .bindings_of(&queue.name)
            .map(|binding| {
                let kind = declarations
                    .exchange(&binding.exchange)
                    .map_or("topic", |e| exchange_type(e.kind));
                json!({
                    "exchange": binding.exchange,
                    "exchangeType": kind,
                    "routingKey": binding.routing_key,
                })
            })
            .collect();
        channels.insert(
            channel.clone(),
            json!({
                "address": queue.name,
                "title": format!("queue {}", queue.name),
                "description": role.description,
                "messages": channel_messages(&role.messages),
                "bindings": {"amqp": {
                    "is": "queue",
                    "queue": {
                        "name": queue.name,
                        "durable": queue.durable,
                        "exclusive": false,
                        "autoDelete": false,
                        "vhost": "/",
                    },
                    "x-arguments": arguments(&queue.arguments),
                    "x-bindings": bindings,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
            }),
        );
        if let Some(service) = SERVICES.iter().find(|s| s.name == queue.name) {
            operations.insert(
                format!("{}-receives", service.name),
                json!({
                    "action": "receive",
                    "title": format!("{} consumes its queue", service.name),
                    "description": "Each delivery is handled once (the inbox drops redeliveries), \
                        acked after its transaction committed.",
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "messages": message_refs(&channel, &role.messages),
                    "tags": [{"name": service.name}],
                    "bindings": {"amqp": {
                        "ack": true,
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }},
                }),
            );
        }
    }

    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Choreo order saga",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Three services take an order from placement to shipment by \
                choreography over RabbitMQ: each reacts to the others' events and publishes its \
                own on its own topic exchange; nobody coordinates. orders publishes \
                `order.placed`; billing captures or declines (`payment.captured`, \
                `payment.declined`) and refunds after `shipment.failed` (`payment.refunded`); \
                shipping dispatches or fails (`shipment.dispatched`, `shipment.failed`); orders \
                ends each order `completed` or `cancelled` (`order.completed`, \
                `order.cancelled`). Names carry the optional prefix `CHOREO_PREFIX`; the delay \
                queues are those of the default `CHOREO_RETRY_DELAYS_MS`.",
            "license": {"name": "MIT"},
            "tags": SERVICES.iter().map(|s| json!({"name": s.name})).collect::<Vec<_>>(),
        },
        "defaultContentType": AMQP_CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/",
                "description": "The default broker (`CHOREO_AMQP_URL`), vhost `/`.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    })
}
