//! Where a delivery was first published, as far as the runtime can know it.
//!
//! The broker sets a delivery's exchange and routing key; a sender cannot choose them beyond
//! what its permissions let it publish. A message that comes back from one of the service's delay
//! queues, or that an operator redrove from its DLQ, arrives through the service's own redelivery
//! exchange, and the first exchange and key travel in the `x-original-*` headers that the runtime
//! wrote from an [`Origin`] when it made the copy. Those headers are believed there and nowhere
//! else: on any other delivery they are the sender's claim. A claim is never believed, never used
//! as a routing key (a header may hold anything: text longer than AMQP's 255-byte short strings,
//! a table, a number), and never lost: every copy the runtime makes of the message keeps it
//! under `x-claimed-original-*`, for the operator to see.
//!
//! Upgrading: earlier versions also believed these headers on the default exchange (delay queues
//! of still earlier versions dead-lettered through it). A message still in such a delay queue now
//! fails its provenance check when it comes back and is dead-lettered with the mismatch.

use crate::headers::{
    X_CLAIMED_ORIGINAL_EXCHANGE, X_CLAIMED_ORIGINAL_ROUTING_KEY, X_ORIGINAL_EXCHANGE,
    X_ORIGINAL_ROUTING_KEY, short_text, text,
};
use lapin::BasicProperties;
use lapin::types::AMQPValue;

/// The exchange and routing key a delivery was first published with, and what its sender
/// claimed instead, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The exchange, prefixed as on the broker.
    pub exchange: String,
    pub routing_key: String,
    /// The sender's own `x-original-*` headers, as they came: not believed.
    claimed: Vec<(&'static str, AMQPValue)>,
}

impl Origin {
    /// The origin of a delivery through `exchange` with `routing_key` and `properties`, for a
    /// service whose redelivery exchange (prefixed) is `redeliver`.
    pub fn of(
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        redeliver: &str,
    ) -> Origin {
        if exchange == redeliver
            && let (Some(exchange), Some(routing_key)) = (
                short_text(properties, X_ORIGINAL_EXCHANGE),
                short_text(properties, X_ORIGINAL_ROUTING_KEY),
            )
        {
            // Written by the runtime, from an Origin, when it made the copy.
            return Origin {
                exchange,
                routing_key,
                claimed: Vec::new(),
            };
        }
        let claimed = properties
            .headers()
            .as_ref()
            .map(|headers| {
                [
                    (X_ORIGINAL_EXCHANGE, X_CLAIMED_ORIGINAL_EXCHANGE),
                    (X_ORIGINAL_ROUTING_KEY, X_CLAIMED_ORIGINAL_ROUTING_KEY),
                ]
                .into_iter()
                .filter_map(|(name, kept_as)| {
                    headers
                        .inner()
                        .get(name)
                        .map(|value| (kept_as, value.clone()))
                })
                .collect()
            })
            .unwrap_or_default();
        Origin {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            claimed,
        }
    }

    /// The headers a copy of the message carries: the origin in `x-original-*` (replacing any the
    /// sender set), and the sender's claims, if any, in `x-claimed-original-*`.
    pub fn headers(&self) -> Vec<(&'static str, AMQPValue)> {
        let mut headers = vec![
            (X_ORIGINAL_EXCHANGE, text(self.exchange.as_str())),
            (X_ORIGINAL_ROUTING_KEY, text(self.routing_key.as_str())),
        ];
        headers.extend(self.claimed.iter().cloned());
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::header_text;
    use lapin::types::{FieldTable, LongString};

    fn with(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert((*name).into(), value.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    fn long(text: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(text))
    }

    #[test]
    fn the_headers_are_believed_only_through_the_services_own_redelivery_exchange() {
        let vouching = with(&[
            (X_ORIGINAL_EXCHANGE, long("p.orders.events")),
            (X_ORIGINAL_ROUTING_KEY, long("order.placed")),
        ]);
        let back = Origin::of(
            "p.billing.redeliver",
            "p.billing",
            &vouching,
            "p.billing.redeliver",
        );
        assert_eq!(
            (back.exchange.as_str(), back.routing_key.as_str()),
            ("p.orders.events", "order.placed")
        );
        assert!(back.claimed.is_empty());
        for (exchange, routing_key) in [
            ("p.shipping.events", "shipment.failed"),
            ("", "p.billing"),
            ("p.shipping.redeliver", "p.billing"),
        ] {
            let claimed = Origin::of(exchange, routing_key, &vouching, "p.billing.redeliver");
            assert_eq!(
                (claimed.exchange.as_str(), claimed.routing_key.as_str()),
                (exchange, routing_key),
                "through {exchange:?}"
            );
            let copy = crate::headers::with_headers(&vouching, &claimed.headers());
            assert_eq!(
                header_text(&copy, X_ORIGINAL_EXCHANGE).as_deref(),
                Some(exchange)
            );
            assert_eq!(
                header_text(&copy, X_ORIGINAL_ROUTING_KEY).as_deref(),
                Some(routing_key)
            );
            assert_eq!(
                header_text(&copy, X_CLAIMED_ORIGINAL_EXCHANGE).as_deref(),
                Some("p.orders.events")
            );
            assert_eq!(
                header_text(&copy, X_CLAIMED_ORIGINAL_ROUTING_KEY).as_deref(),
                Some("order.placed")
            );
        }
    }

    #[test]
    fn headers_no_short_string_can_hold_are_not_believed_even_through_the_redelivery_exchange() {
        for bad in [
            long(&"k".repeat(256)),
            AMQPValue::LongLongInt(7),
            AMQPValue::FieldTable(FieldTable::default()),
        ] {
            let properties = with(&[
                (X_ORIGINAL_EXCHANGE, long("p.orders.events")),
                (X_ORIGINAL_ROUTING_KEY, bad.clone()),
            ]);
            let origin = Origin::of(
                "p.billing.redeliver",
                "p.billing",
                &properties,
                "p.billing.redeliver",
            );
            assert_eq!(
                (origin.exchange.as_str(), origin.routing_key.as_str()),
                ("p.billing.redeliver", "p.billing"),
                "{bad:?}"
            );
        }
        let at_the_limit = "k".repeat(255);
        let properties = with(&[
            (X_ORIGINAL_EXCHANGE, long("p.orders.events")),
            (X_ORIGINAL_ROUTING_KEY, long(&at_the_limit)),
        ]);
        let origin = Origin::of(
            "p.billing.redeliver",
            "p.billing",
            &properties,
            "p.billing.redeliver",
        );
        assert_eq!(origin.routing_key, at_the_limit);
    }
}
