//! Property: whatever the broker redelivers, billing takes at most one payment per order and
//! refunds it at most once, and ends where the clean delivery ends.
//!
//! What billing can receive for one order: `order.placed`, and on the shipping-failed path
//! `shipment.failed`. The first `order.placed` billing handles always comes first (its capture
//! caused the `payment.captured` that shipping failed), but a copy of it can come again at any
//! time after (a redelivery after a lost ack, a second publish after a lost confirm), and so can
//! `shipment.failed`. Payment and refund ids are new on every handling, so the guarantee is not
//! in the pure rules but in the handler and its unique constraints: these properties run the real
//! handler on a SQLite database, one unit of work per delivery, bypassing the inbox (which
//! would have absorbed the duplicates).
//!
//! Bounded for CI by proptest's case count (256 unless `PROPTEST_CASES` says more).

use billing::handler::BillingHandler;
use billing::rules::{BillingRules, PaymentState};
use billing::store;
use choreo_events::payloads::{Address, LineItem, OrderPlaced, ShipmentFailed};
use choreo_events::topology::{ORDERS, SHIPPING};
use choreo_events::{Envelope, Event, EventType};
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Database;
use proptest::prelude::*;
use std::sync::OnceLock;

const MAX_CHARGE_CENTS: i64 = 100_000;

/// One runtime and one in-memory database for every case; each case uses fresh order ids.
struct Billing {
    runtime: tokio::runtime::Runtime,
    database: Database,
    handler: BillingHandler,
}

fn billing() -> &'static Billing {
    static BILLING: OnceLock<Billing> = OnceLock::new();
    BILLING.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let database = runtime.block_on(choreo_messaging::testing::service_memory_database(
            &billing::MIGRATIONS,
        ));
        let handler = BillingHandler {
            rules: BillingRules {
                max_charge_cents: MAX_CHARGE_CENTS,
            },
        };
        Billing {
            runtime,
            database,
            handler,
        }
    })
}

/// How an order's payment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SagaPath {
    /// Captured, and shipped.
    Captured,
    /// Over the limit.
    Declined,
    /// Captured, shipping failed, refunded.
    Refunded,
}

/// The messages billing can get for one order on `path`: its `order.placed`, and the
/// `shipment.failed` if shipping fails it.
fn messages(path: SagaPath, order_id: &str) -> Vec<(Event, Envelope)> {
    let total_cents = match path {
        SagaPath::Declined => MAX_CHARGE_CENTS + 1,
        SagaPath::Captured | SagaPath::Refunded => MAX_CHARGE_CENTS,
    };
    let placed = Event::OrderPlaced(OrderPlaced {
        order_id: order_id.into(),
        customer_id: "c-1".into(),
        items: vec![LineItem {
            sku: "SKU".into(),
            quantity: 1,
            unit_price_cents: total_cents,
        }],
        total_cents,
        currency: "EUR".into(),
        shipping_address: Address {
            name: "Ada".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Vienna".into(),
            postal_code: "1010".into(),
            country: "AQ".into(),
        },
    });
    let mut messages = vec![(placed.clone(), Envelope::root(ORDERS.name, &placed))];
    if path == SagaPath::Refunded {
        let failed = Event::ShipmentFailed(ShipmentFailed {
            order_id: order_id.into(),
            reason: "unserviceable_country".into(),
        });
        let envelope = Envelope::caused_by(&messages[0].1, SHIPPING.name, &failed);
        messages.push((failed, envelope));
    }
    messages
}

/// A saga path and its deliveries as indexes into [`messages`]: `order.placed` first, then
/// every other message once and any message up to twice more, in any order.
fn deliveries() -> impl Strategy<Value = (SagaPath, Vec<usize>)> {
    prop_oneof![
        Just(SagaPath::Captured),
        Just(SagaPath::Declined),
        Just(SagaPath::Refunded),
    ]
    .prop_flat_map(|path| {
        let count = messages(path, "o").len();
        proptest::collection::vec(0..=2usize, count).prop_flat_map(move |copies| {
            let later: Vec<usize> = copies
                .iter()
                .enumerate()
                .flat_map(|(message, &n)| {
                    // The first `order.placed` is delivered before these.
                    let n = if message == 0 { n } else { n + 1 };
                    std::iter::repeat_n(message, n)
                })
                .collect();
            (Just(path), Just(later).prop_shuffle())
                .prop_map(|(path, later)| (path, [vec![0], later].concat()))
        })
    })
}

/// Hands each delivery to the handler in its own unit of work; what it emitted, in order.
fn handle_all(deliveries: &[(Event, Envelope)]) -> Vec<Event> {
    let billing = billing();
    let mut emitted = Vec::new();
    for (event, envelope) in deliveries {
        let (handler, event, envelope) = (billing.handler.clone(), event.clone(), envelope.clone());
        let events = billing
            .runtime
            .block_on(
                billing
                    .database
                    .write(move |tx| handler.handle(&event, &envelope, tx)),
            )
            .unwrap_or_else(|e: HandlerError| panic!("the handler refused a delivery: {e}"));
        emitted.extend(events);
    }
    emitted
}

/// The payments of an order as `GET /payments` shows them: (status, refund id).
fn payments(order_id: &str) -> Vec<(String, Option<String>)> {
    let billing = billing();
    let id = order_id.to_owned();
    billing
        .runtime
        .block_on(
            billing
                .database
                .read(move |tx| store::list_payments(tx, Some(&id), 10)),
        )
        .expect("payments")
        .into_iter()
        .map(|p| (p.status, p.refund_id))
        .collect()
}

fn types(events: &[Event]) -> Vec<EventType> {
    events.iter().map(Event::event_type).collect()
}

proptest! {
    #[test]
    fn billing_pays_and_refunds_at_most_once_and_ends_as_the_clean_delivery_does(
        (path, sequence) in deliveries(),
    ) {
        let (clean_order, messy_order) =
            (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        let clean_deliveries = messages(path, &clean_order);
        let messy_messages = messages(path, &messy_order);
        let messy_deliveries: Vec<_> =
            sequence.iter().map(|&i| messy_messages[i].clone()).collect();

        let clean_emitted = handle_all(&clean_deliveries);
        let emitted = handle_all(&messy_deliveries);

        let (expected, state) = match path {
            SagaPath::Captured => (vec![EventType::PaymentCaptured], PaymentState::Captured),
            SagaPath::Declined => (vec![EventType::PaymentDeclined], PaymentState::Declined),
            SagaPath::Refunded => (
                vec![EventType::PaymentCaptured, EventType::PaymentRefunded],
                PaymentState::Refunded,
            ),
        };
        prop_assert_eq!(types(&clean_emitted), expected.clone());
        prop_assert_eq!(types(&emitted), expected);
        if let [Event::PaymentCaptured(captured), Event::PaymentRefunded(refunded)] = &emitted[..] {
            prop_assert_eq!(&refunded.payment_id, &captured.payment_id);
            prop_assert_eq!(refunded.amount_cents, captured.amount_cents);
        }
        let (clean_payments, payments) = (payments(&clean_order), payments(&messy_order));
        prop_assert_eq!(payments.len(), 1);
        prop_assert_eq!(&payments[0].0, &clean_payments[0].0);
        prop_assert_eq!(payments[0].0.as_str(), state.as_str());
        prop_assert_eq!(payments[0].1.is_some(), path == SagaPath::Refunded);
    }
}
