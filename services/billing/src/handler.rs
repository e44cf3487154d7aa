//! The broker handler of billing: `order.placed` -> capture or decline; `shipment.failed` -> refund.

use crate::rules::{self, BillingRules, Charge, Refund};
use crate::store::{self, NewPayment};
use choreo_events::payloads::{
    OrderPlaced, PaymentCaptured, PaymentDeclined, PaymentRefunded, ShipmentFailed,
};
use choreo_events::topology::BILLING;
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use sqlx::AnyConnection;

/// The reason given on a refund caused by a failed shipment.
pub const REFUND_REASON: &str = "shipping_failed";

/// Handles the events the billing queue is bound to.
#[derive(Debug, Clone)]
pub struct BillingHandler {
    pub rules: BillingRules,
}

impl Handler for BillingHandler {
    async fn handle(
        &self,
        envelope: &Envelope,
        conn: &mut AnyConnection,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let emitted = match envelope.event()? {
            Event::OrderPlaced(placed) => self.charge(conn, &placed).await?,
            Event::ShipmentFailed(failed) => refund(conn, &failed).await?,
            other => {
                return Err(HandlerError::Permanent(format!(
                    "billing does not consume {}",
                    other.event_type()
                )));
            }
        };
        Ok(emitted
            .iter()
            .map(|event| Envelope::caused_by(envelope, BILLING.name, event))
            .collect())
    }
}

impl BillingHandler {
    async fn charge(
        &self,
        conn: &mut AnyConnection,
        placed: &OrderPlaced,
    ) -> Result<Vec<Event>, HandlerError> {
        if store::payment_of(conn, &placed.order_id).await?.is_some() {
            tracing::info!("the order already has a payment; nothing to do");
            return Ok(Vec::new());
        }
        let now = choreo_messaging::outbox::now_text();
        let payment_id = uuid::Uuid::now_v7().to_string();
        let (amount, currency) = (placed.total_cents, placed.currency.clone());
        let decision = rules::decide_charge(amount, &self.rules);
        let decline_reason = match decision {
            Charge::Capture => None,
            Charge::Decline(reason) => Some(reason),
        };
        let payment = NewPayment {
            id: &payment_id,
            order_id: &placed.order_id,
            captured: decline_reason.is_none(),
            amount_cents: amount,
            currency: &currency,
            decline_reason,
            now: &now,
        };
        store::insert_payment(conn, &payment).await?;
        let event = match decline_reason {
            None => {
                tracing::info!(amount_cents = amount, "payment captured");
                Event::PaymentCaptured(PaymentCaptured {
                    order_id: placed.order_id.clone(),
                    payment_id,
                    amount_cents: amount,
                    currency,
                    shipping_address: Some(placed.shipping_address.clone()),
                })
            }
            Some(reason) => {
                tracing::info!(amount_cents = amount, reason, "payment declined");
                Event::PaymentDeclined(PaymentDeclined {
                    order_id: placed.order_id.clone(),
                    amount_cents: amount,
                    currency,
                    reason: reason.to_owned(),
                })
            }
        };
        Ok(vec![event])
    }
}

async fn refund(
    conn: &mut AnyConnection,
    failed: &ShipmentFailed,
) -> Result<Vec<Event>, HandlerError> {
    let payment = store::payment_of(conn, &failed.order_id).await?;
    match rules::decide_refund(payment.as_ref().map(|p| p.state)) {
        Refund::Refund => {
            let Some(payment) = payment else {
                return Ok(Vec::new());
            };
            let refund_id = uuid::Uuid::now_v7().to_string();
            let now = choreo_messaging::outbox::now_text();
            store::insert_refund(
                conn,
                &refund_id,
                &payment,
                &failed.order_id,
                REFUND_REASON,
                &now,
            )
            .await?;
            tracing::info!(amount_cents = payment.amount_cents, "payment refunded");
            Ok(vec![Event::PaymentRefunded(PaymentRefunded {
                order_id: failed.order_id.clone(),
                payment_id: payment.id,
                refund_id,
                amount_cents: payment.amount_cents,
                currency: payment.currency,
                reason: REFUND_REASON.to_owned(),
            })])
        }
        Refund::AlreadyRefunded => {
            tracing::info!("the payment was already refunded; nothing to do");
            Ok(Vec::new())
        }
        Refund::Impossible(why) => Err(HandlerError::Permanent(format!(
            "cannot refund order {}: {why}",
            failed.order_id
        ))),
    }
}
