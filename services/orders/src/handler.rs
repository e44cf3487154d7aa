//! The broker handler of `orders`: loads the order, asks [`crate::lifecycle::decide`], writes the
//! result. Runs inside the consumer's transaction, so the status, the history line and the emitted
//! `order.completed` / `order.cancelled` commit together.

use crate::lifecycle::{self, Decision};
use crate::store::{self, HistoryEntry};
use choreo_events::Envelope;
use choreo_events::topology::ORDERS;
use choreo_messaging::{Handler, HandlerError};
use sqlx::AnyConnection;

/// Handles the billing and shipping events the orders queue is bound to.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersHandler;

impl Handler for OrdersHandler {
    async fn handle(
        &self,
        envelope: &Envelope,
        conn: &mut AnyConnection,
    ) -> Result<Vec<Envelope>, HandlerError> {
        let event = envelope.event()?;
        let order_id = event.order_id();
        let status = store::load_status(conn, order_id)
            .await?
            .ok_or_else(|| HandlerError::Permanent(format!("no order {order_id}")))?;
        let decision = lifecycle::decide(status, &event).map_err(|unexpected| {
            HandlerError::Permanent(format!("orders does not consume {}", unexpected.0))
        })?;
        let now = choreo_messaging::outbox::now_text();
        let history = |status: &str| HistoryEntry {
            at: now.clone(),
            event_type: envelope.event_type.clone(),
            event_id: envelope.id.clone(),
            status: status.to_owned(),
        };
        match decision {
            Decision::Move { to, emit } => {
                if !store::set_status(conn, order_id, status, to, &now).await? {
                    // A concurrent replica moved the order after we read it: decide again later.
                    return Err(HandlerError::Transient(format!(
                        "order {order_id} changed concurrently"
                    )));
                }
                store::insert_history(conn, order_id, &history(to.as_str())).await?;
                tracing::info!(from = %status, to = %to, "order moved");
                Ok(emit
                    .iter()
                    .map(|e| Envelope::caused_by(envelope, ORDERS.name, e))
                    .collect())
            }
            Decision::Ignore(why) => {
                tracing::info!(%status, why, "event ignored");
                Ok(Vec::new())
            }
        }
    }
}
