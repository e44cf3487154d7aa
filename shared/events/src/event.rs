//! [`EventType`] (the routing key) and [`Event`] (a routing key together with its typed payload).

use crate::payloads::{
    OrderCancelled, OrderCompleted, OrderPlaced, PaymentCaptured, PaymentDeclined, PaymentRefunded,
    ShipmentDispatched, ShipmentFailed, Validate,
};
use crate::topology::{
    BILLING_EXCHANGE, ORDERS, ORDERS_EXCHANGE, SERVICES, SHIPPING_EXCHANGE, ServiceTopology,
};
use std::fmt;

/// Every event type of the suite. Its string form is both the CloudEvents `type` and the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    OrderPlaced,
    OrderCompleted,
    OrderCancelled,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentDispatched,
    ShipmentFailed,
}

impl EventType {
    /// All event types, for tables and tests.
    pub const ALL: [EventType; 8] = [
        EventType::OrderPlaced,
        EventType::OrderCompleted,
        EventType::OrderCancelled,
        EventType::PaymentCaptured,
        EventType::PaymentDeclined,
        EventType::PaymentRefunded,
        EventType::ShipmentDispatched,
        EventType::ShipmentFailed,
    ];

    /// The routing key, equal to the CloudEvents `type`.
    pub const fn routing_key(self) -> &'static str {
        match self {
            EventType::OrderPlaced => "order.placed",
            EventType::OrderCompleted => "order.completed",
            EventType::OrderCancelled => "order.cancelled",
            EventType::PaymentCaptured => "payment.captured",
            EventType::PaymentDeclined => "payment.declined",
            EventType::PaymentRefunded => "payment.refunded",
            EventType::ShipmentDispatched => "shipment.dispatched",
            EventType::ShipmentFailed => "shipment.failed",
        }
    }

    /// The exchange this type is published to (the exchange of the service that owns it).
    pub const fn exchange(self) -> &'static str {
        match self {
            EventType::OrderPlaced | EventType::OrderCompleted | EventType::OrderCancelled => {
                ORDERS_EXCHANGE
            }
            EventType::PaymentCaptured
            | EventType::PaymentDeclined
            | EventType::PaymentRefunded => BILLING_EXCHANGE,
            EventType::ShipmentDispatched | EventType::ShipmentFailed => SHIPPING_EXCHANGE,
        }
    }

    /// The service that publishes this type: the one whose exchange it goes to. Its name is the
    /// events' `source`.
    pub fn publisher(self) -> ServiceTopology {
        SERVICES
            .iter()
            .copied()
            .find(|service| service.exchange == self.exchange())
            .unwrap_or(ORDERS)
    }

    /// Parses a routing key; `None` for a type this suite does not know.
    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.routing_key() == key)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.routing_key())
    }
}

/// An event: its type and its typed, validated payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    OrderPlaced(OrderPlaced),
    OrderCompleted(OrderCompleted),
    OrderCancelled(OrderCancelled),
    PaymentCaptured(PaymentCaptured),
    PaymentDeclined(PaymentDeclined),
    PaymentRefunded(PaymentRefunded),
    ShipmentDispatched(ShipmentDispatched),
    ShipmentFailed(ShipmentFailed),
}

impl Event {
    /// The type, and so the routing key, of this event.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::OrderPlaced(_) => EventType::OrderPlaced,
            Event::OrderCompleted(_) => EventType::OrderCompleted,
            Event::OrderCancelled(_) => EventType::OrderCancelled,
            Event::PaymentCaptured(_) => EventType::PaymentCaptured,
            Event::PaymentDeclined(_) => EventType::PaymentDeclined,
            Event::PaymentRefunded(_) => EventType::PaymentRefunded,
            Event::ShipmentDispatched(_) => EventType::ShipmentDispatched,
            Event::ShipmentFailed(_) => EventType::ShipmentFailed,
        }
    }

    /// The order this event is about; every event of the saga carries one.
    pub fn order_id(&self) -> &str {
        match self {
            Event::OrderPlaced(e) => &e.order_id,
            Event::OrderCompleted(e) => &e.order_id,
            Event::OrderCancelled(e) => &e.order_id,
            Event::PaymentCaptured(e) => &e.order_id,
            Event::PaymentDeclined(e) => &e.order_id,
            Event::PaymentRefunded(e) => &e.order_id,
            Event::ShipmentDispatched(e) => &e.order_id,
            Event::ShipmentFailed(e) => &e.order_id,
        }
    }

    /// The payload as the JSON value that goes into the envelope's `data`.
    pub fn to_data(&self) -> serde_json::Value {
        let value = match self {
            Event::OrderPlaced(e) => serde_json::to_value(e),
            Event::OrderCompleted(e) => serde_json::to_value(e),
            Event::OrderCancelled(e) => serde_json::to_value(e),
            Event::PaymentCaptured(e) => serde_json::to_value(e),
            Event::PaymentDeclined(e) => serde_json::to_value(e),
            Event::PaymentRefunded(e) => serde_json::to_value(e),
            Event::ShipmentDispatched(e) => serde_json::to_value(e),
            Event::ShipmentFailed(e) => serde_json::to_value(e),
        };
        // The payloads are plain structs of strings, integers and vectors: serializing them to a
        // `Value` has no failure mode (no maps with non-string keys, no custom serializers).
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Parses and validates `data` as the payload of `event_type`.
    pub fn from_data(
        event_type: EventType,
        data: &serde_json::Value,
    ) -> Result<Self, crate::DecodeError> {
        fn parse<T: serde::de::DeserializeOwned + Validate>(
            data: &serde_json::Value,
        ) -> Result<T, crate::DecodeError> {
            let payload: T = serde_path_to_error::deserialize(data)
                .map_err(|e| crate::DecodeError::InvalidData(crate::envelope::located(e)))?;
            payload
                .validate()
                .map_err(|problems| crate::DecodeError::InvalidData(problems.join("; ")))?;
            Ok(payload)
        }
        Ok(match event_type {
            EventType::OrderPlaced => Event::OrderPlaced(parse(data)?),
            EventType::OrderCompleted => Event::OrderCompleted(parse(data)?),
            EventType::OrderCancelled => Event::OrderCancelled(parse(data)?),
            EventType::PaymentCaptured => Event::PaymentCaptured(parse(data)?),
            EventType::PaymentDeclined => Event::PaymentDeclined(parse(data)?),
            EventType::PaymentRefunded => Event::PaymentRefunded(parse(data)?),
            EventType::ShipmentDispatched => Event::ShipmentDispatched(parse(data)?),
            EventType::ShipmentFailed => Event::ShipmentFailed(parse(data)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_round_trip_for_every_type() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_routing_key(t.routing_key()), Some(t));
        }
        assert_eq!(EventType::from_routing_key("order.exploded"), None);
    }

    #[test]
    fn every_type_is_published_by_the_service_that_owns_its_exchange() {
        for t in EventType::ALL {
            assert_eq!(t.publisher().exchange, t.exchange(), "{t}");
        }
        assert_eq!(EventType::ShipmentFailed.publisher().name, "shipping");
    }
}
