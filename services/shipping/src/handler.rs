//! The broker handler of shipping: `payment.captured` -> `shipment.dispatched` or
//! `shipment.failed`. The decision and its event come from [`crate::rules`]; this is the SQL
//! around them.

use crate::rules::{self, ShippingRules};
use crate::store;
use choreo_events::payloads::PaymentCaptured;
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Tx;

/// Handles the events the shipping queue is bound to.
#[derive(Debug, Clone)]
pub struct ShippingHandler {
    pub rules: ShippingRules,
}

impl Handler for ShippingHandler {
    fn handle(
        &self,
        event: &Event,
        _envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        match event {
            Event::PaymentCaptured(captured) => self.ship(tx, captured),
            other => Err(HandlerError::Permanent(format!(
                "shipping does not consume {}",
                other.event_type()
            ))),
        }
    }
}

impl ShippingHandler {
    fn ship(
        &self,
        tx: &mut dyn Tx,
        captured: &PaymentCaptured,
    ) -> Result<Vec<Event>, HandlerError> {
        let Some(address) = &captured.shipping_address else {
            return Err(HandlerError::Permanent(
                "payment.captured carries no shipping_address; shipping cannot know where to ship"
                    .into(),
            ));
        };
        let id = uuid::Uuid::now_v7().to_string();
        let shipped = rules::ship(
            captured,
            &address.country,
            &id,
            rules::tracking_number(),
            &self.rules,
        );
        let now = choreo_store::now_text();
        if !store::insert_shipment(
            tx,
            &id,
            &captured.order_id,
            &captured.payment_id,
            &shipped,
            &now,
        )? {
            tracing::info!("the order already has a shipment; nothing to do");
            return Ok(Vec::new());
        }
        tracing::info!(
            state = shipped.state.as_str(),
            carrier = shipped.carrier,
            reason = shipped.reason,
            country = %address.country,
            "shipment recorded"
        );
        Ok(vec![shipped.event])
    }
}
