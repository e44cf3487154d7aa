//! JSON Schemas of the contract, generated from the types of this crate (`schemars`), so that a
//! field added to a payload is in the published schema the moment it is in the code.
//!
//! [`event`] describes one whole CloudEvent of a type: the [`Envelope`] with the attributes the
//! contract pins for that type (`type`, `source`, `specversion`, `schemaversion`,
//! `datacontenttype`) and `data` as its payload. Consumers are tolerant readers, so no schema
//! forbids unknown properties. The one rule a schema cannot state is `order.placed`'s
//! `total_cents` being the sum of its lines; [`crate::payloads::Validate`] checks it.
//!
//! The schemas go where the caller's [`SchemaGenerator`] puts definitions: `$defs` in the
//! standalone documents of `docs/api/schemas`, `components/schemas` in the AsyncAPI document.

use crate::envelope::DATA_CONTENT_TYPE;
use crate::payloads::{
    OrderCancelled, OrderCompleted, OrderPlaced, PaymentCaptured, PaymentDeclined, PaymentRefunded,
    ShipmentDispatched, ShipmentFailed,
};
use crate::{Envelope, EventType, SCHEMA_VERSION, SPEC_VERSION};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Value, json};

/// The schema of the `data` of `event_type`: a `$ref` into `generator`'s definitions.
pub fn payload(generator: &mut SchemaGenerator, event_type: EventType) -> Schema {
    match event_type {
        EventType::OrderPlaced => generator.subschema_for::<OrderPlaced>(),
        EventType::OrderCompleted => generator.subschema_for::<OrderCompleted>(),
        EventType::OrderCancelled => generator.subschema_for::<OrderCancelled>(),
        EventType::PaymentCaptured => generator.subschema_for::<PaymentCaptured>(),
        EventType::PaymentDeclined => generator.subschema_for::<PaymentDeclined>(),
        EventType::PaymentRefunded => generator.subschema_for::<PaymentRefunded>(),
        EventType::ShipmentDispatched => generator.subschema_for::<ShipmentDispatched>(),
        EventType::ShipmentFailed => generator.subschema_for::<ShipmentFailed>(),
    }
}

/// The schema of a whole event of `event_type`, inline, its payload types in `generator`'s
/// definitions.
pub fn event(generator: &mut SchemaGenerator, event_type: EventType) -> Schema {
    let data = payload(generator, event_type);
    let mut schema = Envelope::json_schema(generator);
    let publisher = event_type.publisher().name;
    let routing_key = event_type.routing_key();
    schema.insert("title".into(), json!(format!("{routing_key} event")));
    schema.insert(
        "description".into(),
        json!(format!(
            "A `{routing_key}` CloudEvent (1.0, structured JSON mode) as carried in the AMQP \
             body: published by `{publisher}` to `{}` with routing key `{routing_key}`.",
            event_type.exchange()
        )),
    );
    let pinned: [(&str, Value); 5] = [
        ("specversion", json!(SPEC_VERSION)),
        ("type", json!(routing_key)),
        ("source", json!(publisher)),
        ("schemaversion", json!(SCHEMA_VERSION)),
        ("datacontenttype", json!(DATA_CONTENT_TYPE)),
    ];
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, value) in pinned {
            if let Some(property) = properties.get_mut(name).and_then(Value::as_object_mut) {
                property.insert("const".into(), value);
            }
        }
        properties.insert("data".into(), data.to_value());
    }
    // `data` has a serde default, yet an event without one fails its payload: it is required.
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.push(json!("data"));
    }
    schema
}

/// The standalone JSON Schema (draft 2020-12) of one event type: what
/// `docs/api/schemas/<type>.json` holds.
pub fn event_document(event_type: EventType) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = event(&mut generator, event_type);
    if let Some(meta) = generator.settings().meta_schema.clone() {
        schema.insert("$schema".into(), json!(meta));
    }
    let definitions = generator.take_definitions(true);
    schema.insert("$defs".into(), Value::Object(definitions));
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_schema_pins_type_source_and_requires_its_payload() {
        let schema = event_document(EventType::PaymentRefunded);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["properties"]["type"]["const"], "payment.refunded");
        assert_eq!(schema["properties"]["source"]["const"], "billing");
        assert_eq!(
            schema["properties"]["data"]["$ref"],
            "#/$defs/PaymentRefunded"
        );
        let required = schema["required"].as_array().expect("required");
        for name in ["id", "type", "source", "time", "correlationid", "data"] {
            assert!(required.contains(&json!(name)), "{name} in {required:?}");
        }
        let payload = &schema["$defs"]["PaymentRefunded"];
        assert_eq!(payload["properties"]["currency"]["pattern"], "^[A-Z]{3}$");
        assert_eq!(payload["properties"]["amount_cents"]["minimum"], 0);
    }
}
