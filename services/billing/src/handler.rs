//! The broker handler of billing: `order.placed` -> capture or decline; `shipment.failed` ->
//! refund. The decisions and their events come from [`crate::rules`]; this is the SQL around them.

use crate::rules::{self, BillingRules, REFUND_REASON, Refund};
use crate::store;
use choreo_events::payloads::{OrderPlaced, ShipmentFailed};
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Tx;

/// Handles the events the billing queue is bound to.
#[derive(Debug, Clone)]
pub struct BillingHandler {
    pub rules: BillingRules,
}

impl Handler for BillingHandler {
    fn handle(
        &self,
        event: &Event,
        _envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        match event {
            Event::OrderPlaced(placed) => self.charge(tx, placed),
            Event::ShipmentFailed(failed) => refund(tx, failed),
            other => Err(HandlerError::Permanent(format!(
                "billing does not consume {}",
                other.event_type()
            ))),
        }
    }
}

impl BillingHandler {
    fn charge(&self, tx: &mut dyn Tx, placed: &OrderPlaced) -> Result<Vec<Event>, HandlerError> {
        let payment_id = uuid::Uuid::now_v7().to_string();
        let charged = rules::charge(placed, payment_id, &self.rules);
        let now = choreo_store::now_text();
        if !store::insert_payment(
            tx,
            &placed.order_id,
            &charged.payment,
            charged.decline_reason,
            &now,
        )? {
            tracing::info!("the order already has a payment; nothing to do");
            return Ok(Vec::new());
        }
        tracing::info!(
            amount_cents = charged.payment.amount_cents,
            state = charged.payment.state.as_str(),
            reason = charged.decline_reason,
            "payment recorded"
        );
        Ok(vec![charged.event])
    }
}

fn refund(tx: &mut dyn Tx, failed: &ShipmentFailed) -> Result<Vec<Event>, HandlerError> {
    let payment = store::payment_of(tx, &failed.order_id)?;
    match (
        rules::decide_refund(payment.as_ref().map(|p| p.state)),
        payment,
    ) {
        (Refund::Refund, Some(payment)) => {
            let refund_id = uuid::Uuid::now_v7().to_string();
            let now = choreo_store::now_text();
            store::insert_refund(
                tx,
                &refund_id,
                &payment,
                &failed.order_id,
                REFUND_REASON,
                &now,
            )?;
            tracing::info!(amount_cents = payment.amount_cents, "payment refunded");
            Ok(vec![rules::refunded(failed, &payment, refund_id)])
        }
        (Refund::AlreadyRefunded, _) => {
            tracing::info!("the payment was already refunded; nothing to do");
            Ok(Vec::new())
        }
        (Refund::Impossible(why), _) => Err(HandlerError::Permanent(format!(
            "cannot refund order {}: {why}",
            failed.order_id
        ))),
        // decide_refund says Refund only for a payment it was given.
        (Refund::Refund, None) => Err(HandlerError::Permanent(format!(
            "cannot refund order {}: billing has no payment for it",
            failed.order_id
        ))),
    }
}
