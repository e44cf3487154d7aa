//! Billing's decisions, pure: whether to capture an order's total, whether to refund a payment,
//! and the events that say so.

use choreo_events::Event;
use choreo_events::payloads::{
    OrderPlaced, PaymentCaptured, PaymentDeclined, PaymentRefunded, ShipmentFailed,
};
use serde::Deserialize;

/// The reason given on a refund caused by a failed shipment.
pub const REFUND_REASON: &str = "shipping_failed";

/// The configurable business rules of billing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingRules {
    /// The largest total captured; above it the payment is declined with `limit_exceeded`.
    pub max_charge_cents: i64,
}

/// The reason of a decline over the limit.
pub const LIMIT_EXCEEDED: &str = "limit_exceeded";

/// What to do with an order's total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    Capture,
    Decline(&'static str),
}

/// Captures the full total when it is at most the limit, declines it otherwise.
pub fn decide_charge(total_cents: i64, rules: &BillingRules) -> Charge {
    if total_cents <= rules.max_charge_cents {
        Charge::Capture
    } else {
        Charge::Decline(LIMIT_EXCEEDED)
    }
}

/// The state of an order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    Captured,
    Declined,
    Refunded,
}

impl PaymentState {
    /// Every state, for the API's schema.
    pub const ALL: [PaymentState; 3] = [
        PaymentState::Captured,
        PaymentState::Declined,
        PaymentState::Refunded,
    ];

    /// The state as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Captured => "captured",
            PaymentState::Declined => "declined",
            PaymentState::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "captured" => Some(PaymentState::Captured),
            "declined" => Some(PaymentState::Declined),
            "refunded" => Some(PaymentState::Refunded),
            _ => None,
        }
    }
}

/// The payment of an order, as refunds need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: String,
    pub state: PaymentState,
    pub amount_cents: i64,
    pub currency: String,
}

/// A charge decided: the payment to record and the event that announces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Charged {
    pub payment: Payment,
    pub decline_reason: Option<&'static str>,
    pub event: Event,
}

/// What `order.placed` does: the whole total captured as `payment_id`, or declined. A captured
/// payment forwards the shipping address, which shipping needs and binds nothing else to get.
pub fn charge(placed: &OrderPlaced, payment_id: String, rules: &BillingRules) -> Charged {
    let (amount_cents, currency) = (placed.total_cents, placed.currency.clone());
    let (state, decline_reason, event) = match decide_charge(amount_cents, rules) {
        Charge::Capture => (
            PaymentState::Captured,
            None,
            Event::PaymentCaptured(PaymentCaptured {
                order_id: placed.order_id.clone(),
                payment_id: payment_id.clone(),
                amount_cents,
                currency: currency.clone(),
                shipping_address: Some(placed.shipping_address.clone()),
            }),
        ),
        Charge::Decline(reason) => (
            PaymentState::Declined,
            Some(reason),
            Event::PaymentDeclined(PaymentDeclined {
                order_id: placed.order_id.clone(),
                amount_cents,
                currency: currency.clone(),
                reason: reason.to_owned(),
            }),
        ),
    };
    Charged {
        payment: Payment {
            id: payment_id,
            state,
            amount_cents,
            currency,
        },
        decline_reason,
        event,
    }
}

/// The event of refunding `payment` in full as `refund_id` after `failed`.
pub fn refunded(failed: &ShipmentFailed, payment: &Payment, refund_id: String) -> Event {
    Event::PaymentRefunded(PaymentRefunded {
        order_id: failed.order_id.clone(),
        payment_id: payment.id.clone(),
        refund_id,
        amount_cents: payment.amount_cents,
        currency: payment.currency.clone(),
        reason: REFUND_REASON.to_owned(),
    })
}

/// What `shipment.failed` does to an order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refund {
    /// Refund the captured payment in full.
    Refund,
    /// Already refunded: nothing more, ever.
    AlreadyRefunded,
    /// There is nothing to refund; the event contradicts what billing knows.
    Impossible(&'static str),
}

pub fn decide_refund(payment: Option<PaymentState>) -> Refund {
    match payment {
        Some(PaymentState::Captured) => Refund::Refund,
        Some(PaymentState::Refunded) => Refund::AlreadyRefunded,
        Some(PaymentState::Declined) => {
            Refund::Impossible("the payment of this order was declined, not captured")
        }
        None => Refund::Impossible("billing has no payment for this order"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_events::payloads::{Address, LineItem};

    fn placed(total_cents: i64) -> OrderPlaced {
        OrderPlaced {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            items: vec![LineItem {
                sku: "S".into(),
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
                country: "AT".into(),
            },
        }
    }

    #[test]
    fn a_capture_records_a_captured_payment_and_forwards_the_address() {
        let rules = BillingRules {
            max_charge_cents: 100,
        };
        let charged = charge(&placed(100), "p-1".into(), &rules);
        assert_eq!(charged.payment.state, PaymentState::Captured);
        assert_eq!(charged.decline_reason, None);
        let Event::PaymentCaptured(captured) = &charged.event else {
            panic!("{:?}", charged.event);
        };
        assert_eq!(captured.payment_id, "p-1");
        assert_eq!(captured.amount_cents, 100);
        assert_eq!(
            captured.shipping_address,
            Some(placed(100).shipping_address)
        );

        let declined = charge(&placed(101), "p-2".into(), &rules);
        assert_eq!(declined.payment.state, PaymentState::Declined);
        assert_eq!(declined.decline_reason, Some(LIMIT_EXCEEDED));
        assert!(
            matches!(declined.event, Event::PaymentDeclined(ref d) if d.reason == LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn payment_states_spell_as_stored() {
        for state in [
            PaymentState::Captured,
            PaymentState::Declined,
            PaymentState::Refunded,
        ] {
            assert_eq!(PaymentState::parse(state.as_str()), Some(state));
        }
        assert_eq!(PaymentState::parse("pending"), None);
    }

    #[test]
    fn a_total_at_the_limit_is_captured_and_above_it_declined() {
        let rules = BillingRules {
            max_charge_cents: 100_000,
        };
        assert_eq!(decide_charge(100_000, &rules), Charge::Capture);
        assert_eq!(decide_charge(0, &rules), Charge::Capture);
        assert_eq!(
            decide_charge(100_001, &rules),
            Charge::Decline("limit_exceeded")
        );
    }

    #[test]
    fn only_a_captured_payment_is_refunded_and_only_once() {
        assert_eq!(decide_refund(Some(PaymentState::Captured)), Refund::Refund);
        assert_eq!(
            decide_refund(Some(PaymentState::Refunded)),
            Refund::AlreadyRefunded
        );
        assert!(matches!(
            decide_refund(Some(PaymentState::Declined)),
            Refund::Impossible(_)
        ));
        assert!(matches!(decide_refund(None), Refund::Impossible(_)));
    }
}
