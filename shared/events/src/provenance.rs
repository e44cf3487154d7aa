//! Provenance: an event is trusted only as far as the message that carried it agrees with it.
//! Its `type` must be the routing key it was published with, it must have come through the
//! exchange of the service that publishes that type, and its `source` must be that service.
//! A consumer dead-letters anything else with the mismatch as its reason, before it has any
//! effect. Pure: the caller says which exchange and routing key the message came with.

use crate::topology::{SERVICES, ServiceTopology};
use crate::{Envelope, EventType};

/// The service that publishes `event_type` (the owner of its exchange).
pub fn publisher_of(event_type: EventType) -> Option<&'static ServiceTopology> {
    SERVICES
        .iter()
        .find(|service| service.exchange == event_type.exchange())
}

/// Checks `envelope` against the (unprefixed) `exchange` and `routing_key` it arrived with.
/// An envelope of an unknown type passes: decoding it says so, with its own reason.
pub fn check(envelope: &Envelope, exchange: &str, routing_key: &str) -> Result<(), String> {
    let Some(event_type) = EventType::from_routing_key(&envelope.event_type) else {
        return Ok(());
    };
    if envelope.event_type != routing_key {
        return Err(format!(
            "provenance: type {} differs from the routing key {routing_key:?}",
            envelope.event_type
        ));
    }
    if exchange != event_type.exchange() {
        return Err(format!(
            "provenance: {} came through exchange {exchange:?}, not {}, the exchange of its publisher",
            envelope.event_type,
            event_type.exchange()
        ));
    }
    match publisher_of(event_type) {
        Some(publisher) if publisher.name == envelope.source => Ok(()),
        Some(publisher) => Err(format!(
            "provenance: {} claims source {:?}, but only {} publishes it",
            envelope.event_type, envelope.source, publisher.name
        )),
        None => Err(format!(
            "provenance: no service publishes {}",
            envelope.event_type
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::payloads::ShipmentFailed;

    fn failed(source: &str) -> Envelope {
        Envelope::root(
            source,
            &Event::ShipmentFailed(ShipmentFailed {
                order_id: "o-1".into(),
                reason: "unserviceable_country".into(),
            }),
        )
    }

    #[test]
    fn an_event_from_its_publisher_through_its_exchange_under_its_own_key_passes() {
        assert_eq!(
            check(&failed("shipping"), "shipping.events", "shipment.failed"),
            Ok(())
        );
    }

    #[test]
    fn every_kind_of_forgery_is_named() {
        let type_vs_key = check(&failed("shipping"), "shipping.events", "order.placed");
        assert!(
            type_vs_key
                .unwrap_err()
                .contains("differs from the routing key")
        );

        let wrong_exchange = check(&failed("shipping"), "orders.events", "shipment.failed");
        assert!(
            wrong_exchange
                .unwrap_err()
                .contains("came through exchange")
        );

        let wrong_source = check(&failed("orders"), "shipping.events", "shipment.failed");
        assert!(
            wrong_source
                .unwrap_err()
                .contains("only shipping publishes it")
        );
    }

    #[test]
    fn every_event_type_has_exactly_one_publisher() {
        for event_type in EventType::ALL {
            assert!(publisher_of(event_type).is_some(), "{event_type:?}");
        }
    }
}
