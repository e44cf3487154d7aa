//! One order's saga delivered with duplicates and in any order converges to where the clean
//! delivery ends, and orders emits `order.completed` / `order.cancelled` at most once.
//!
//! What orders can receive for one order, per saga path: `payment.captured` then
//! `shipment.dispatched` (completed); `payment.declined` (cancelled, payment_declined);
//! `payment.captured`, `shipment.failed`, `payment.refunded` (cancelled, shipping_failed). Never
//! events of two paths: billing takes at most one payment per order, shipping makes at most one
//! shipment. Within a path any order is possible: billing's and shipping's events reach the
//! orders queue from two publishers, whose relative order nothing fixes (shipping's
//! `shipment.dispatched` overtakes billing's `payment.captured` whenever orders' copy of it waits
//! in a delay queue after a transient failure, and so can any event behind a retried one); and
//! any delivery can come again (a redelivery after a lost ack, a second publish after a lost
//! confirm). The handler applies an event that comes "too early" (it neither drops it nor waits
//! for its cause), so the lifecycle has to converge by itself: these properties say it does,
//! for the pure `decide` and for the handler writing the real tables.

use crate::service::service;
use choreo_events::payloads::*;
use choreo_events::topology::{BILLING, SHIPPING};
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use orders::handler::OrdersHandler;
use orders::lifecycle::{Decision, Known, OrderStatus, decide};
use orders::store::{self, NewOrder};
use proptest::prelude::*;

/// The ways a saga can end, each with the events orders receives on the way, in clean order.
#[derive(Debug, Clone, Copy)]
enum SagaPath {
    Completed,
    PaymentDeclined,
    ShippingFailed,
}

impl SagaPath {
    fn events(self, order_id: &str) -> Vec<Event> {
        let captured = Event::PaymentCaptured(PaymentCaptured {
            order_id: order_id.into(),
            payment_id: "p-1".into(),
            amount_cents: 500,
            currency: "EUR".into(),
            shipping_address: None,
        });
        match self {
            SagaPath::Completed => vec![
                captured,
                Event::ShipmentDispatched(ShipmentDispatched {
                    order_id: order_id.into(),
                    shipment_id: "s-1".into(),
                    carrier: "choreo-post".into(),
                    tracking_number: "CP1".into(),
                }),
            ],
            SagaPath::PaymentDeclined => vec![Event::PaymentDeclined(PaymentDeclined {
                order_id: order_id.into(),
                amount_cents: 500,
                currency: "EUR".into(),
                reason: "limit_exceeded".into(),
            })],
            SagaPath::ShippingFailed => vec![
                captured,
                Event::ShipmentFailed(ShipmentFailed {
                    order_id: order_id.into(),
                    reason: "unserviceable_country".into(),
                }),
                Event::PaymentRefunded(PaymentRefunded {
                    order_id: order_id.into(),
                    payment_id: "p-1".into(),
                    refund_id: "r-1".into(),
                    amount_cents: 500,
                    currency: "EUR".into(),
                    reason: "shipping_failed".into(),
                }),
            ],
        }
    }
}

/// A saga path and its deliveries: each of its events one to three times, in any order, as
/// indexes into [`SagaPath::events`] (every copy of one event is the same message).
fn deliveries() -> impl Strategy<Value = (SagaPath, Vec<usize>)> {
    prop_oneof![
        Just(SagaPath::Completed),
        Just(SagaPath::PaymentDeclined),
        Just(SagaPath::ShippingFailed),
    ]
    .prop_flat_map(|path| {
        let events = path.events("o").len();
        proptest::collection::vec(1..=3usize, events).prop_flat_map(move |copies| {
            let sequence: Vec<usize> = copies
                .iter()
                .enumerate()
                .flat_map(|(event, &n)| std::iter::repeat_n(event, n))
                .collect();
            (Just(path), Just(sequence).prop_shuffle())
        })
    })
}

/// Folds `decide` over `events` from `pending`, as the handler does: the end status and what
/// was emitted.
fn decide_all<'a>(events: impl IntoIterator<Item = &'a Event>) -> (OrderStatus, Vec<Event>) {
    let mut status = OrderStatus::Pending;
    let mut emitted = Vec::new();
    for event in events {
        let known = Known {
            status,
            total_cents: 500,
            currency: "EUR",
        };
        match decide(known, event).expect("orders consumes every event of its saga") {
            Decision::Move { to, emit } => {
                status = to;
                emitted.extend(emit);
            }
            Decision::Ignore(_) => {}
            Decision::Contradicts(why) => panic!("an honest delivery was refused: {why}"),
        }
    }
    (status, emitted)
}

/// A new `pending` order in the service's database, as `POST /orders` leaves it.
fn place_order() -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let service = service();
    let order_id = id.clone();
    service
        .runtime
        .block_on(service.database.write(move |tx| {
            store::insert_order(
                tx,
                &NewOrder {
                    id: &order_id,
                    customer_id: "c-1",
                    total_cents: 500,
                    currency: "EUR",
                    items: &[LineItem {
                        sku: "SKU".into(),
                        quantity: 1,
                        unit_price_cents: 500,
                    }],
                    shipping_address: &Address {
                        name: "Ada".into(),
                        line1: "1 Main St".into(),
                        line2: None,
                        city: "Vienna".into(),
                        postal_code: "1010".into(),
                        country: "AT".into(),
                    },
                    now: &choreo_store::now_text(),
                },
            )
        }))
        .expect("the order is stored");
    id
}

/// Hands each delivery to the real handler in a unit of work of its own (committed, or rolled
/// back on an error, as the consumer does), bypassing the inbox: the lifecycle must converge
/// even for a duplicate the inbox would have absorbed. The end status and what was emitted.
fn handle_all(order_id: &str, deliveries: &[(Event, Envelope)]) -> (OrderStatus, Vec<Event>) {
    let service = service();
    let handler = OrdersHandler::default();
    let mut emitted = Vec::new();
    for (event, envelope) in deliveries {
        let (handler, event, envelope) = (handler.clone(), event.clone(), envelope.clone());
        let events = service
            .runtime
            .block_on(
                service
                    .database
                    .write(move |tx| handler.handle(&event, &envelope, tx)),
            )
            .unwrap_or_else(|e: HandlerError| panic!("the handler refused a delivery: {e}"));
        emitted.extend(events);
    }
    let id = order_id.to_owned();
    let status = service
        .runtime
        .block_on(
            service
                .database
                .read(move |tx| store::load_facts(tx, &id).map(|facts| facts.map(|f| f.status))),
        )
        .expect("a status")
        .expect("the order");
    (status, emitted)
}

/// Each event of `path` for `order_id` in an envelope of its own, from its real publisher.
fn enveloped(path: SagaPath, order_id: &str) -> Vec<(Event, Envelope)> {
    path.events(order_id)
        .into_iter()
        .map(|event| {
            let source = match event {
                Event::ShipmentDispatched(_) | Event::ShipmentFailed(_) => SHIPPING.name,
                _ => BILLING.name,
            };
            let envelope = Envelope::root(source, &event);
            (event, envelope)
        })
        .collect()
}

proptest! {
    #[test]
    fn decide_converges_to_the_clean_end_whatever_the_duplicates_and_order(
        (path, sequence) in deliveries(),
    ) {
        let events = path.events("o");

        let clean = decide_all(&events);
        let delivered = decide_all(sequence.iter().map(|&i| &events[i]));

        prop_assert_eq!(&delivered, &clean);
        prop_assert!(clean.0.is_terminal());
        prop_assert_eq!(clean.1.len(), 1);
    }

    #[test]
    fn the_handler_converges_to_the_clean_end_and_emits_once_whatever_is_redelivered(
        (path, sequence) in deliveries(),
    ) {
        let (clean_order, messy_order) = (place_order(), place_order());
        let clean_deliveries = enveloped(path, &clean_order);
        let messy_messages = enveloped(path, &messy_order);
        let messy_deliveries: Vec<_> =
            sequence.iter().map(|&i| messy_messages[i].clone()).collect();

        let (clean_status, clean_emitted) = handle_all(&clean_order, &clean_deliveries);
        let (status, emitted) = handle_all(&messy_order, &messy_deliveries);

        prop_assert_eq!(status, clean_status);
        prop_assert!(status.is_terminal());
        prop_assert_eq!(emitted.len(), 1, "{:?}", emitted);
        prop_assert_eq!(emitted[0].event_type(), clean_emitted[0].event_type());
        prop_assert_eq!(emitted[0].order_id(), messy_order.as_str());
        prop_assert_eq!(emitted, decide_all(messy_messages.iter().map(|(e, _)| e)).1);
    }
}
