//! Who publishes where and who listens to what: the broker topology of the suite as constants.
//!
//! Every service declares the *whole* topology at start-up (not only its own queue), so an event
//! published before its consumer has ever run is already routed to that consumer's queue. Keeping
//! the table here, in one place, is what makes that safe: all declarers agree on every name and
//! argument.

use crate::EventType;

/// The exchange `orders` publishes to.
pub const ORDERS_EXCHANGE: &str = "orders.events";
/// The exchange `billing` publishes to.
pub const BILLING_EXCHANGE: &str = "billing.events";
/// The exchange `shipping` publishes to.
pub const SHIPPING_EXCHANGE: &str = "shipping.events";

/// One service's place in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceTopology {
    /// The service name; also the name of its queue and the `source` of its events.
    pub name: &'static str,
    /// The topic exchange it publishes to (and only it).
    pub exchange: &'static str,
    /// The event types its queue is bound to, each by its exact routing key.
    pub subscribes_to: &'static [EventType],
}

impl ServiceTopology {
    /// The dead-letter exchange of this service: `<service>.dlx`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.name)
    }

    /// The dead-letter queue of this service: `<service>.dlq`.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// The direct exchange through which this service sends a message to one of its own queues
    /// (a retry to a delay queue, a redriven dead letter to its work queue): `<service>.redeliver`.
    /// Only this service may write to it, so no service needs the default exchange, which reaches
    /// every queue.
    pub fn redeliver_exchange(&self) -> String {
        format!("{}.redeliver", self.name)
    }
}

/// The `orders` service.
pub const ORDERS: ServiceTopology = ServiceTopology {
    name: "orders",
    exchange: ORDERS_EXCHANGE,
    subscribes_to: &[
        EventType::PaymentCaptured,
        EventType::PaymentDeclined,
        EventType::PaymentRefunded,
        EventType::ShipmentDispatched,
        EventType::ShipmentFailed,
    ],
};

/// The `billing` service.
pub const BILLING: ServiceTopology = ServiceTopology {
    name: "billing",
    exchange: BILLING_EXCHANGE,
    subscribes_to: &[EventType::OrderPlaced, EventType::ShipmentFailed],
};

/// The `shipping` service.
pub const SHIPPING: ServiceTopology = ServiceTopology {
    name: "shipping",
    exchange: SHIPPING_EXCHANGE,
    subscribes_to: &[EventType::PaymentCaptured],
};

/// Every service of the suite, in the order of the saga.
pub const SERVICES: &[ServiceTopology] = &[ORDERS, BILLING, SHIPPING];

/// The observer: watches every event of the saga and takes part in nothing. It is deliberately
/// *not* in [`SERVICES`]: the services declare the suite's queues from that table, so an
/// observer that never runs must not leave a queue behind that fills forever; the observer
/// declares its own queue itself (see `choreo_messaging::topology::bystander`). It publishes
/// nothing, so it has no exchange (`exchange` is empty) and the provenance check, which only
/// knows [`SERVICES`], accepts no event from it.
pub const OBSERVER: ServiceTopology = ServiceTopology {
    name: "observer",
    exchange: "",
    subscribes_to: &EventType::ALL,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscription_is_published_by_exactly_one_service() {
        for service in SERVICES {
            for event_type in service.subscribes_to {
                let publishers: Vec<_> = SERVICES
                    .iter()
                    .filter(|s| s.exchange == event_type.exchange())
                    .collect();
                assert_eq!(publishers.len(), 1, "{event_type:?}");
                assert_ne!(
                    publishers[0].name, service.name,
                    "a service never consumes its own events"
                );
            }
        }
    }

    #[test]
    fn the_observer_binds_every_event_type_and_is_no_part_of_the_suite() {
        assert_eq!(OBSERVER.subscribes_to, EventType::ALL);
        assert!(OBSERVER.exchange.is_empty());
        assert!(SERVICES.iter().all(|service| service.name != OBSERVER.name));
    }

    #[test]
    fn dead_letter_names_follow_the_contract() {
        assert_eq!(BILLING.dead_letter_exchange(), "billing.dlx");
        assert_eq!(BILLING.dead_letter_queue(), "billing.dlq");
    }
}
