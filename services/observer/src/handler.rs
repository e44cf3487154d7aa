//! The broker handler of the observer: stores every event it is given and judges its order's
//! saga again, in the consumer's transaction (so a redelivery is dropped by the inbox and a
//! crash before the commit means redelivery). It never refuses an event for what it says about
//! the saga (an illegal sequence is something to flag, not to reject) and returns no events: the
//! observer publishes nothing.

use crate::saga::Deadlines;
use crate::store;
use choreo_events::{Envelope, Event};
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Tx;

/// Records what the observer's queue receives.
#[derive(Debug, Clone, Default)]
pub struct ObserverHandler {
    pub deadlines: Deadlines,
}

impl Handler for ObserverHandler {
    fn handle(
        &self,
        event: &Event,
        envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        let order_id = event.order_id();
        if store::insert_event(tx, envelope, order_id)? {
            store::judge(tx, order_id, choreo_store::now(), &self.deadlines)?;
        }
        Ok(Vec::new())
    }
}
