//! The broker handler of `orders`: loads the order, asks [`crate::lifecycle::decide`], writes the
//! result. Runs inside the consumer's transaction, so the status, the history line and the emitted
//! `order.completed` / `order.cancelled` commit together; once they have, it counts the saga's
//! outcome ([`crate::outcomes`]).

use crate::lifecycle::{self, Decision};
use crate::outcomes::SagaOutcomes;
use crate::store::{self, HistoryEntry};
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Tx;

/// Handles the billing and shipping events the orders queue is bound to.
#[derive(Debug, Clone, Default)]
pub struct OrdersHandler {
    outcomes: SagaOutcomes,
}

impl Handler for OrdersHandler {
    fn handle(
        &self,
        event: &Event,
        envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        let order_id = event.order_id();
        let facts = store::load_facts(tx, order_id)?
            .ok_or_else(|| HandlerError::Permanent(format!("no order {order_id}")))?;
        let status = facts.status;
        let known = lifecycle::Known {
            status,
            total_cents: facts.total_cents,
            currency: &facts.currency,
        };
        let decision = lifecycle::decide(known, event).map_err(|unexpected| {
            HandlerError::Permanent(format!("orders does not consume {}", unexpected.0))
        })?;
        match decision {
            Decision::Move { to, emit } => {
                let now = choreo_store::now_text();
                if !store::set_status(tx, order_id, status, to, &now)? {
                    // Only without the row lock (which PostgreSQL takes in load_facts) could
                    // another replica have moved the order since we read it: decide again later.
                    return Err(HandlerError::Transient(format!(
                        "order {order_id} changed concurrently"
                    )));
                }
                let entry = HistoryEntry {
                    at: now,
                    event_type: envelope.event_type.clone(),
                    event_id: envelope.id.clone(),
                    status: to.as_str().to_owned(),
                };
                store::insert_history(tx, order_id, &entry)?;
                tracing::info!(from = %status, to = %to, "order moved");
                Ok(emit.into_iter().collect())
            }
            Decision::Ignore(why) => {
                tracing::info!(%status, why, "event ignored");
                Ok(Vec::new())
            }
            // Dead-lettered with the reason, before anything is written.
            Decision::Contradicts(why) => Err(HandlerError::Permanent(why)),
        }
    }

    fn committed(&self, emitted: &[Event]) {
        self.outcomes.count(emitted);
    }

    fn register_metrics(&mut self, recorder: &dyn metrics::Recorder) {
        self.outcomes = SagaOutcomes::register(recorder);
    }
}
