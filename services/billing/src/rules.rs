//! Billing's decisions, pure: whether to capture an order's total, whether to refund a payment.

use serde::Deserialize;

/// The configurable business rules of billing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BillingRules {
    /// The largest total captured; above it the payment is declined with `limit_exceeded`.
    #[serde(deserialize_with = "choreo_host::settings::from_text")]
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

/// The state of an order's payment, as far as refunds care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    Captured,
    Declined,
    Refunded,
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
