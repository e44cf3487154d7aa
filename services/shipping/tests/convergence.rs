//! Property: whatever the broker redelivers, shipping makes at most one shipment per order and
//! announces it once, as the clean delivery does.
//!
//! Shipping receives one message per order, `payment.captured`; it can come again at any time
//! (a redelivery after a lost ack, a second publish of billing's after a lost confirm). The
//! shipment id and tracking number are new on every handling, so the guarantee is not in the
//! pure rules but in the handler and the table's unique constraint: the property runs the real
//! handler on a SQLite database, one unit of work per delivery, bypassing the inbox (which
//! would have absorbed the duplicates).
//!
//! Bounded for CI by proptest's case count (256 unless `PROPTEST_CASES` says more).

use choreo_events::payloads::{Address, PaymentCaptured};
use choreo_events::topology::BILLING;
use choreo_events::{Envelope, Event, EventType};
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Database;
use proptest::prelude::*;
use shipping::handler::ShippingHandler;
use shipping::rules::{DEFAULT_CARRIER, ShippingRules};
use shipping::store;
use std::sync::OnceLock;

/// One runtime and one in-memory database for every case; each case uses fresh order ids.
struct Shipping {
    runtime: tokio::runtime::Runtime,
    database: Database,
    handler: ShippingHandler,
}

fn shipping() -> &'static Shipping {
    static SHIPPING: OnceLock<Shipping> = OnceLock::new();
    SHIPPING.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let database = runtime.block_on(choreo_messaging::testing::service_memory_database(
            &shipping::MIGRATIONS,
        ));
        let handler = ShippingHandler {
            rules: ShippingRules {
                countries: vec!["AT".into(), "DE".into()],
                carrier: DEFAULT_CARRIER.into(),
            },
        };
        Shipping {
            runtime,
            database,
            handler,
        }
    })
}

/// The `payment.captured` of an order shipped to `country`.
fn captured(order_id: &str, country: &str) -> (Event, Envelope) {
    let event = Event::PaymentCaptured(PaymentCaptured {
        order_id: order_id.into(),
        payment_id: format!("p-{order_id}"),
        amount_cents: 500,
        currency: "EUR".into(),
        shipping_address: Some(Address {
            name: "Ada".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Vienna".into(),
            postal_code: "1010".into(),
            country: country.into(),
        }),
    });
    let envelope = Envelope::root(BILLING.name, &event);
    (event, envelope)
}

/// The shipments of an order as `GET /shipments` shows them: (status, reason).
type Shipments = Vec<(String, Option<String>)>;

/// Hands the message to the handler `copies` times, each in its own unit of work; what it
/// emitted, and the order's shipments.
fn deliver(message: &(Event, Envelope), copies: usize) -> (Vec<Event>, Shipments) {
    let shipping = shipping();
    let mut emitted = Vec::new();
    for _ in 0..copies {
        let (handler, (event, envelope)) = (shipping.handler.clone(), message.clone());
        let events = shipping
            .runtime
            .block_on(
                shipping
                    .database
                    .write(move |tx| handler.handle(&event, &envelope, tx)),
            )
            .unwrap_or_else(|e: HandlerError| panic!("the handler refused a delivery: {e}"));
        emitted.extend(events);
    }
    let order_id = message.0.order_id().to_owned();
    let shipments = shipping
        .runtime
        .block_on(
            shipping
                .database
                .read(move |tx| store::list_shipments(tx, Some(&order_id), 10)),
        )
        .expect("shipments")
        .into_iter()
        .map(|s| (s.status, s.reason))
        .collect();
    (emitted, shipments)
}

proptest! {
    #[test]
    fn shipping_ships_once_whatever_is_redelivered_and_as_the_clean_delivery_does(
        country in prop_oneof![Just("AT".to_owned()), Just("DE".to_owned()), "[A-Z]{2}"],
        copies in 2..=5usize,
    ) {
        let clean = captured(&uuid::Uuid::now_v7().to_string(), &country);
        let messy = captured(&uuid::Uuid::now_v7().to_string(), &country);

        let (clean_emitted, clean_shipments) = deliver(&clean, 1);
        let (emitted, shipments) = deliver(&messy, copies);

        let expected = if ["AT", "DE"].contains(&country.as_str()) {
            EventType::ShipmentDispatched
        } else {
            EventType::ShipmentFailed
        };
        let types = |events: &[Event]| events.iter().map(Event::event_type).collect::<Vec<_>>();
        prop_assert_eq!(types(&clean_emitted), vec![expected]);
        prop_assert_eq!(types(&emitted), vec![expected]);
        prop_assert_eq!(shipments.len(), 1);
        prop_assert_eq!(shipments, clean_shipments);
    }
}
