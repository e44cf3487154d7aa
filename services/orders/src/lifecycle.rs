//! The order's lifecycle as a type, and the pure decision of what an event does to an order.
//!
//! ```text
//! pending --payment.captured--> paid --shipment.dispatched--> completed
//! pending --payment.declined--> cancelled (payment_declined)
//! paid --(shipment.failed: billing refunds)--> paid --payment.refunded--> cancelled (shipping_failed)
//! ```
//! Events may arrive out of order and more than once; the decision converges anyway: a terminal
//! order ignores everything, and an event that skips a step (dispatched before captured) still
//! moves the order to where the saga ends.

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
}

/// An event the orders service does not consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected(pub &'static str);

/// Decides what `event` does to an order in `status`.
pub fn decide(status: OrderStatus, event: &Event) -> Result<Decision, Unexpected> {
    let order_id = event.order_id().to_owned();
    let complete = || Decision::Move {
        to: OrderStatus::Completed,
        emit: Some(Event::OrderCompleted(OrderCompleted {
            order_id: order_id.clone(),
        })),
    };
    let cancel = |reason: CancellationReason| Decision::Move {
        to: OrderStatus::Cancelled(reason),
        emit: Some(Event::OrderCancelled(OrderCancelled {
            order_id: order_id.clone(),
            reason: reason.as_str().to_owned(),
        })),
    };
    if status.is_terminal() {
        return match event {
            Event::OrderPlaced(_) | Event::OrderCompleted(_) | Event::OrderCancelled(_) => {
                Err(unexpected(event))
            }
            _ => Ok(Decision::Ignore("the order is already terminal")),
        };
    }
    Ok(match event {
        Event::PaymentCaptured(_) => match status {
            OrderStatus::Pending => Decision::Move {
                to: OrderStatus::Paid,
                emit: None,
            },
            _ => Decision::Ignore("the payment was already captured"),
        },
        Event::PaymentDeclined(_) => cancel(CancellationReason::PaymentDeclined),
        Event::PaymentRefunded(_) => cancel(CancellationReason::ShippingFailed),
        Event::ShipmentDispatched(_) => complete(),
        // Not a move: the order stays paid until billing's refund cancels it.
        Event::ShipmentFailed(_) => Decision::Ignore("the order waits for the refund"),
        Event::OrderPlaced(_) | Event::OrderCompleted(_) | Event::OrderCancelled(_) => {
            return Err(unexpected(event));
        }
    })
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

    /// Applies events in order, as the handler does, and returns the final status and emissions.
    fn run(events: &[Event]) -> (OrderStatus, Vec<Event>) {
        let mut status = OrderStatus::Pending;
        let mut emitted = Vec::new();
        for event in events {
            if let Decision::Move { to, emit } = decide(status, event).expect("consumed by orders")
            {
                status = to;
                emitted.extend(emit);
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

    #[test]
    fn a_terminal_order_ignores_everything_it_consumes() {
        for terminal in [
            OrderStatus::Completed,
            OrderStatus::Cancelled(CancellationReason::PaymentDeclined),
        ] {
            for event in [captured(), declined(), refunded(), dispatched(), failed()] {
                assert!(matches!(decide(terminal, &event), Ok(Decision::Ignore(_))));
            }
        }
    }

    #[test]
    fn events_orders_does_not_consume_are_unexpected() {
        let event = Event::OrderCompleted(OrderCompleted {
            order_id: "o".into(),
        });
        assert_eq!(
            decide(OrderStatus::Pending, &event),
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
                decide(status, &event),
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
