//! The broker handler of shipping: `payment.captured` -> `shipment.dispatched` or `shipment.failed`.

use crate::rules::{self, Shipment, ShippingRules};
use crate::store::{self, NewShipment};
use choreo_events::payloads::{PaymentCaptured, ShipmentDispatched, ShipmentFailed};
use choreo_events::topology::SHIPPING;
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use sqlx::AnyConnection;

/// Handles the events the shipping queue is bound to.
#[derive(Debug, Clone)]
pub struct ShippingHandler {
    pub rules: ShippingRules,
}

impl Handler for ShippingHandler {
    async fn handle(
        &self,
        envelope: &Envelope,
        conn: &mut AnyConnection,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let emitted = match envelope.event()? {
            Event::PaymentCaptured(captured) => self.ship(conn, &captured).await?,
            other => {
                return Err(HandlerError::Permanent(format!(
                    "shipping does not consume {}",
                    other.event_type()
                )));
            }
        };
        Ok(emitted
            .iter()
            .map(|event| Envelope::caused_by(envelope, SHIPPING.name, event))
            .collect())
    }
}

impl ShippingHandler {
    async fn ship(
        &self,
        conn: &mut AnyConnection,
        captured: &PaymentCaptured,
    ) -> Result<Vec<Event>, HandlerError> {
        let Some(address) = &captured.shipping_address else {
            return Err(HandlerError::Permanent(
                "payment.captured carries no shipping_address; shipping cannot know where to ship"
                    .into(),
            ));
        };
        if store::has_shipment(conn, &captured.order_id).await? {
            tracing::info!("the order already has a shipment; nothing to do");
            return Ok(Vec::new());
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = choreo_messaging::outbox::now_text();
        let mut shipment = NewShipment {
            id: &id,
            order_id: &captured.order_id,
            payment_id: &captured.payment_id,
            dispatched: false,
            carrier: None,
            tracking_number: None,
            reason: None,
            now: &now,
        };
        let event = match rules::decide(&address.country, &self.rules) {
            Shipment::Dispatch { carrier } => {
                let tracking_number = rules::tracking_number();
                shipment.dispatched = true;
                shipment.carrier = Some(&carrier);
                shipment.tracking_number = Some(&tracking_number);
                store::insert_shipment(conn, &shipment).await?;
                tracing::info!(%carrier, %tracking_number, "shipment dispatched");
                Event::ShipmentDispatched(ShipmentDispatched {
                    order_id: captured.order_id.clone(),
                    shipment_id: id.clone(),
                    carrier,
                    tracking_number,
                })
            }
            Shipment::Fail(reason) => {
                shipment.reason = Some(reason);
                store::insert_shipment(conn, &shipment).await?;
                tracing::info!(reason, country = %address.country, "shipment failed");
                Event::ShipmentFailed(ShipmentFailed {
                    order_id: captured.order_id.clone(),
                    reason: reason.to_owned(),
                })
            }
        };
        Ok(vec![event])
    }
}
