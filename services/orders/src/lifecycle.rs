//! The order's lifecycle as a type, and the pure decision of what an event does to an order.
//!
//! ```text
//! pending --payment.captured--> paid --shipment.dispatched--> completed
//! pending --payment.declined--> cancelled (payment_declined)
//! paid --(shipment.failed: billing refunds)--> paid --payment.refunded--> cancelled (shipping_failed)
//! ```
//! Events may arrive out of order and more than once; the decision converges anyway: a repeated
//! or late event is ignored, and an event that skips a step (dispatched before captured) still
//! moves the order to where the saga ends. An event that cannot be true of the order (a decline
//! after a capture, an amount that is not the order's) is refused with the contradiction.

use choreo_events::Event;
use choreo_events::payloads::{OrderCancelled, OrderCompleted};
use std::fmt;

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationReason {
    PaymentDeclined,
    ShippingFailed,
}

impl CancellationReason {
    /// Every reason, for the API's schema.
    pub const ALL: [CancellationReason; 2] = [
        CancellationReason::PaymentDeclined,
        CancellationReason::ShippingFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CancellationReason::PaymentDeclined => "payment_declined",
            CancellationReason::ShippingFailed => "shipping_failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "payment_declined" => Some(CancellationReason::PaymentDeclined),
            "shipping_failed" => Some(CancellationReason::ShippingFailed),
            _ => None,
        }
    }
}

/// Where an order is. `Completed` and `Cancelled` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Paid,
    Completed,
    Cancelled(CancellationReason),
}

impl OrderStatus {
    /// Every status name the API and the database use.
    pub const NAMES: [&'static str; 4] = ["pending", "paid", "completed", "cancelled"];

    /// The status as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled(_) => "cancelled",
        }
    }

    pub fn cancellation_reason(self) -> Option<CancellationReason> {
        match self {
            OrderStatus::Cancelled(reason) => Some(reason),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled(_))
    }

    /// Reads the two columns back; `None` for a combination the service never writes.
    pub fn from_columns(status: &str, reason: Option<&str>) -> Option<Self> {
        match (status, reason) {
            ("pending", None) => Some(OrderStatus::Pending),
            ("paid", None) => Some(OrderStatus::Paid),
            ("completed", None) => Some(OrderStatus::Completed),
            ("cancelled", Some(reason)) => {
                CancellationReason::parse(reason).map(OrderStatus::Cancelled)
            }
            _ => None,
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cancellation_reason() {
            Some(reason) => write!(f, "cancelled ({})", reason.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

/// What an event does to an order.
#[expect(
    clippy::large_enum_variant,
    reason = "a decision lives for one message; boxing buys nothing"
)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The order moves to `to`; `emit` is published if the move reaches a terminal status.
    Move {
        to: OrderStatus,
        emit: Option<Event>,
    },
    /// Nothing to do (a late or repeated event for an order already past it).
    Ignore(&'static str),
    /// The event cannot be true of this order: it is dead-lettered with this reason and changes
    /// nothing (docs/contract-notes.md, "Events that contradict an order").
    Contradicts(String),
}

/// An event the orders service does not consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected(pub &'static str);

/// What orders knows of an order when an event about it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known<'a> {
    pub status: OrderStatus,
    pub total_cents: i64,
    pub currency: &'a str,
}

/// Decides what `event` does to the order `known`.
///
/// Billing decides one payment per order, once: captured or declined, and a captured one may be
/// refunded after a failed shipment. Shipping decides one shipment per order, once. So an event
/// that disagrees with the order's amount, or with a decision the order already reflects, was
/// not made by billing or shipping for this order: it is refused, whatever its status.
pub fn decide(known: Known<'_>, event: &Event) -> Result<Decision, Unexpected> {
    use CancellationReason::{PaymentDeclined, ShippingFailed};
    use OrderStatus::{Cancelled, Completed, Paid, Pending};
    let status = known.status;
    let order_id = event.order_id().to_owned();
    let complete = || Decision::Move {
        to: Completed,
        emit: Some(Event::OrderCompleted(OrderCompleted {
            order_id: order_id.clone(),
        })),
    };
    let cancel = |reason: CancellationReason| Decision::Move {
        to: Cancelled(reason),
        emit: Some(Event::OrderCancelled(OrderCancelled {
            order_id: order_id.clone(),
            reason: reason.as_str().to_owned(),
        })),
    };
    let contradicts = |what: &str| {
        Decision::Contradicts(format!(
            "{} contradicts order {order_id}, which is {status}: {what}",
            event.event_type().routing_key()
        ))
    };
    if let Some((amount_cents, currency)) = payment_amount(event)
        && (amount_cents != known.total_cents || currency != known.currency)
    {
        return Ok(contradicts(&format!(
            "the payment is {amount_cents} {currency}, the order {} {}",
            known.total_cents, known.currency
        )));
    }
    Ok(match (event, status) {
        (Event::OrderPlaced(_) | Event::OrderCompleted(_) | Event::OrderCancelled(_), _) => {
            return Err(unexpected(event));
        }

        (Event::PaymentCaptured(_), Pending) => Decision::Move {
            to: Paid,
            emit: None,
        },
        (Event::PaymentCaptured(_), Paid | Completed) => {
            Decision::Ignore("the payment was already captured")
        }
        // The order was cancelled by the refund of this very payment (one per order).
        (Event::PaymentCaptured(_), Cancelled(ShippingFailed)) => {
            Decision::Ignore("the payment was captured, then refunded")
        }
        (Event::PaymentCaptured(_), Cancelled(PaymentDeclined)) => {
            contradicts("billing declined its payment, and decides a payment once")
        }

        (Event::PaymentDeclined(_), Pending) => cancel(PaymentDeclined),
        (Event::PaymentDeclined(_), Cancelled(PaymentDeclined)) => {
            Decision::Ignore("the payment was already declined")
        }
        (Event::PaymentDeclined(_), Paid | Completed | Cancelled(ShippingFailed)) => {
            contradicts("its payment was captured, and billing decides a payment once")
        }

        (Event::PaymentRefunded(_), Pending | Paid) => cancel(ShippingFailed),
        (Event::PaymentRefunded(_), Cancelled(ShippingFailed)) => {
            Decision::Ignore("the payment was already refunded")
        }
        (Event::PaymentRefunded(_), Completed) => {
            contradicts("its shipment was dispatched, and billing refunds only a failed one")
        }
        (Event::PaymentRefunded(_), Cancelled(PaymentDeclined)) => {
            contradicts("its payment was declined: there is nothing to refund")
        }

        // Dispatched before captured: shipping ships only a captured payment, so the capture
        // happened and the order ends where the saga ends.
        (Event::ShipmentDispatched(_), Pending | Paid) => complete(),
        (Event::ShipmentDispatched(_), Completed) => {
            Decision::Ignore("the shipment was already dispatched")
        }
        (Event::ShipmentDispatched(_), Cancelled(PaymentDeclined)) => {
            contradicts("its payment was declined, and shipping ships only a captured one")
        }
        (Event::ShipmentDispatched(_), Cancelled(ShippingFailed)) => {
            contradicts("its shipment failed, and shipping decides a shipment once")
        }

        // Not a move: the order stays as it is until billing's refund cancels it.
        (Event::ShipmentFailed(_), Pending | Paid) => {
            Decision::Ignore("the order waits for the refund")
        }
        (Event::ShipmentFailed(_), Cancelled(ShippingFailed)) => {
            Decision::Ignore("the shipment failure was already refunded")
        }
        (Event::ShipmentFailed(_), Completed) => {
            contradicts("its shipment was dispatched, and shipping decides a shipment once")
        }
        (Event::ShipmentFailed(_), Cancelled(PaymentDeclined)) => {
            contradicts("its payment was declined, and shipping ships only a captured one")
        }
    })
}

/// The amount and currency a billing event is about.
fn payment_amount(event: &Event) -> Option<(i64, &str)> {
    match event {
        Event::PaymentCaptured(e) => Some((e.amount_cents, &e.currency)),
        Event::PaymentDeclined(e) => Some((e.amount_cents, &e.currency)),
        Event::PaymentRefunded(e) => Some((e.amount_cents, &e.currency)),
        _ => None,
    }
}

fn unexpected(event: &Event) -> Unexpected {
    Unexpected(event.event_type().routing_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_events::payloads::*;

    fn captured() -> Event {
        Event::PaymentCaptured(PaymentCaptured {
            order_id: "o".into(),
            payment_id: "p".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            shipping_address: None,
        })
    }
    fn declined() -> Event {
        Event::PaymentDeclined(PaymentDeclined {
            order_id: "o".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            reason: "limit_exceeded".into(),
        })
    }
    fn refunded() -> Event {
        Event::PaymentRefunded(PaymentRefunded {
            order_id: "o".into(),
            payment_id: "p".into(),
            refund_id: "r".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            reason: "shipping_failed".into(),
        })
    }
    fn dispatched() -> Event {
        Event::ShipmentDispatched(ShipmentDispatched {
            order_id: "o".into(),
            shipment_id: "s".into(),
            carrier: "c".into(),
            tracking_number: "t".into(),
        })
    }
    fn failed() -> Event {
        Event::ShipmentFailed(ShipmentFailed {
            order_id: "o".into(),
            reason: "unserviceable_country".into(),
        })
    }

    /// An order of 100 EUR, the fixtures' amount, in `status`.
    fn known(status: OrderStatus) -> Known<'static> {
        Known {
            status,
            total_cents: 100,
            currency: "EUR",
        }
    }

    /// Applies events in order, as the handler does, and returns the final status and emissions.
    fn run(events: &[Event]) -> (OrderStatus, Vec<Event>) {
        let mut status = OrderStatus::Pending;
        let mut emitted = Vec::new();
        for event in events {
            match decide(known(status), event).expect("consumed by orders") {
                Decision::Move { to, emit } => {
                    status = to;
                    emitted.extend(emit);
                }
                Decision::Ignore(_) => {}
                Decision::Contradicts(why) => panic!("{why}"),
            }
        }
        (status, emitted)
    }

    #[test]
    fn the_happy_path_ends_completed_and_emits_order_completed_once() {
        let (status, emitted) = run(&[captured(), dispatched()]);
        assert_eq!(status, OrderStatus::Completed);
        assert_eq!(
            emitted,
            vec![Event::OrderCompleted(OrderCompleted {
                order_id: "o".into()
            })]
        );
    }

    #[test]
    fn a_declined_payment_cancels_the_order() {
        let (status, emitted) = run(&[declined()]);
        assert_eq!(
            status,
            OrderStatus::Cancelled(CancellationReason::PaymentDeclined)
        );
        assert_eq!(emitted.len(), 1);
    }

    #[test]
    fn a_failed_shipment_cancels_only_after_the_refund() {
        let (status, _) = run(&[captured(), failed()]);
        assert_eq!(status, OrderStatus::Paid);
        let (status, emitted) = run(&[captured(), failed(), refunded()]);
        assert_eq!(
            status,
            OrderStatus::Cancelled(CancellationReason::ShippingFailed)
        );
        assert_eq!(emitted.len(), 1);
    }

    #[test]
    fn out_of_order_and_repeated_events_converge_to_the_same_end() {
        assert_eq!(run(&[dispatched(), captured()]).0, OrderStatus::Completed);
        assert_eq!(
            run(&[captured(), dispatched(), dispatched(), captured()]),
            run(&[captured(), dispatched()])
        );
        assert_eq!(
            run(&[refunded(), failed(), captured()]).0,
            OrderStatus::Cancelled(CancellationReason::ShippingFailed)
        );
        assert_eq!(
            run(&[captured(), refunded(), failed(), refunded()]).1.len(),
            1
        );
    }

    const DECLINED: OrderStatus = OrderStatus::Cancelled(CancellationReason::PaymentDeclined);
    const REFUNDED: OrderStatus = OrderStatus::Cancelled(CancellationReason::ShippingFailed);

    fn contradicts(status: OrderStatus, event: &Event) -> bool {
        matches!(decide(known(status), event), Ok(Decision::Contradicts(_)))
    }

    #[test]
    fn a_repeated_event_is_ignored_in_the_status_it_led_to() {
        for (status, event) in [
            (OrderStatus::Paid, captured()),
            (OrderStatus::Completed, captured()),
            (OrderStatus::Completed, dispatched()),
            (DECLINED, declined()),
            (REFUNDED, refunded()),
            (REFUNDED, failed()),
            (REFUNDED, captured()),
        ] {
            assert!(
                matches!(decide(known(status), &event), Ok(Decision::Ignore(_))),
                "{event:?} in {status}"
            );
        }
    }

    /// Billing decides one payment per order once, shipping one shipment once: whatever says
    /// otherwise of an order is refused, never applied and never ignored.
    #[test]
    fn an_event_that_contradicts_the_order_is_refused() {
        for (status, event) in [
            (OrderStatus::Paid, declined()),
            (OrderStatus::Completed, declined()),
            (REFUNDED, declined()),
            (DECLINED, captured()),
            (DECLINED, refunded()),
            (DECLINED, dispatched()),
            (DECLINED, failed()),
            (OrderStatus::Completed, refunded()),
            (OrderStatus::Completed, failed()),
            (REFUNDED, dispatched()),
        ] {
            assert!(contradicts(status, &event), "{event:?} in {status}");
        }
    }

    #[test]
    fn a_payment_of_another_amount_or_currency_is_refused_in_any_status() {
        let mut other_amount = declined();
        if let Event::PaymentDeclined(e) = &mut other_amount {
            e.amount_cents = 99;
        }
        let mut other_currency = captured();
        if let Event::PaymentCaptured(e) = &mut other_currency {
            e.currency = "USD".into();
        }
        let mut refund_of_more = refunded();
        if let Event::PaymentRefunded(e) = &mut refund_of_more {
            e.amount_cents = 1_000_000;
        }
        for status in [OrderStatus::Pending, OrderStatus::Paid, REFUNDED] {
            for event in [&other_amount, &other_currency, &refund_of_more] {
                let Ok(Decision::Contradicts(why)) = decide(known(status), event) else {
                    panic!("{event:?} in {status} is not refused");
                };
                assert!(why.contains("the order 100 EUR"), "{why}");
            }
        }
    }

    #[test]
    fn events_orders_does_not_consume_are_unexpected() {
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: "o".into(),
        });
        assert_eq!(
            decide(known(OrderStatus::Pending), &event),
            Err(Unexpected("order.completed"))
        );
    }

    #[test]
    fn events_orders_does_not_consume_are_unexpected_for_a_terminal_order_too() {
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: "o".into(),
        });
        for status in [
            OrderStatus::Completed,
            OrderStatus::Cancelled(CancellationReason::PaymentDeclined),
        ] {
            assert_eq!(
                decide(known(status), &event),
                Err(Unexpected("order.completed")),
                "{status}"
            );
        }
    }

    #[test]
    fn a_status_reads_as_its_column_and_a_cancellation_with_its_reason() {
        assert_eq!(OrderStatus::Paid.to_string(), "paid");
        assert_eq!(
            OrderStatus::Cancelled(CancellationReason::ShippingFailed).to_string(),
            "cancelled (shipping_failed)"
        );
    }

    #[test]
    fn status_columns_round_trip() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Paid,
            OrderStatus::Completed,
            OrderStatus::Cancelled(CancellationReason::ShippingFailed),
        ] {
            let reason = status.cancellation_reason().map(CancellationReason::as_str);
            assert_eq!(
                OrderStatus::from_columns(status.as_str(), reason),
                Some(status)
            );
        }
        assert_eq!(OrderStatus::from_columns("cancelled", None), None);
    }
}
