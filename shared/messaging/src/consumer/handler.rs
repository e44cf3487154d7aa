//! What a service implements to consume events, and how it says a message failed. Nothing here
//! knows the broker: a handler sees decoded events and a transaction.

use choreo_events::{DecodeError, Envelope, Event};
use choreo_store::Tx;

/// Why a handler could not handle an event; each variant names what the consumer does with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be handled as it is (undecodable, invalid, unknown type, unsupported
    /// schema version, contradicts what the service knows): dead-letter it at once.
    #[error("{0}")]
    Permanent(String),
    /// Handling may succeed later (a constraint race, a lock timeout, a dependency away): retry
    /// it through the delay queues, then dead-letter it once the attempts are used up.
    #[error("{0}")]
    Transient(String),
    /// What the whole service needs is unreachable (the database is down): no message can be
    /// handled now, so the consumer keeps the deliveries, waits with backoff and tries again,
    /// without spending their retries (which would dead-letter healthy messages during an outage).
    #[error("{0}")]
    Unavailable(String),
}

impl From<DecodeError> for HandlerError {
    fn from(error: DecodeError) -> Self {
        HandlerError::Permanent(error.to_string())
    }
}

impl From<choreo_store::Error> for HandlerError {
    /// An unreachable database is [`HandlerError::Unavailable`]; anything the database refused
    /// (a constraint, a lock timeout, a lost serialization race) is [`HandlerError::Transient`].
    fn from(error: choreo_store::Error) -> Self {
        match error {
            choreo_store::Error::Unavailable(_) => HandlerError::Unavailable(error.to_string()),
            other => HandlerError::Transient(other.to_string()),
        }
    }
}

/// What a service does with the events it consumes.
pub trait Handler: Send + Sync + 'static {
    /// Decides what `event` (decoded from `envelope`) does and writes it with `tx`, the
    /// transaction that also records the event in the inbox and writes the returned events to the
    /// outbox; the runtime wraps them as caused by the consumed event (correlation, causation,
    /// trace). Runs on the database's thread: it must not block on anything but `tx`.
    fn handle(
        &self,
        event: &Event,
        envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError>;

    /// Called once the transaction in which [`Handler::handle`] returned `emitted` for a message
    /// has committed: never for a duplicate, nor for a run that was rolled back (a batch that
    /// runs again without a failed message). For counting what happened exactly once per
    /// effect, such as the outcomes of sagas; it must be quick and cannot fail.
    fn committed(&self, _emitted: &[Event]) {}

    /// Registers the handler's own metrics on the service's recorder, before it runs.
    fn register_metrics(&mut self, _recorder: &dyn metrics::Recorder) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_the_broker_action_their_variant_names() {
        use choreo_store::Error;
        assert!(matches!(
            HandlerError::from(Error::Unavailable("down".into())),
            HandlerError::Unavailable(_)
        ));
        assert!(matches!(
            HandlerError::from(Error::UniqueViolation("dup".into())),
            HandlerError::Transient(_)
        ));
        assert!(matches!(
            HandlerError::from(Error::Failed("lock timeout".into())),
            HandlerError::Transient(_)
        ));
    }
}
