//! The outcomes of sagas, counted for `GET /metrics`: `choreo_sagas_completed_total` and
//! `choreo_sagas_cancelled_total{reason}`.
//!
//! They are counted from the events the handler emitted, once the transaction that moved the
//! order has committed ([`choreo_messaging::Handler::committed`]), not while deciding: the
//! handler may run more than once for one message (a batch that runs again without a failed
//! message, a transaction that does not commit, a redelivery), and an order reaches its terminal
//! status in exactly one committed transaction.

use crate::lifecycle::CancellationReason;
use choreo_events::Event;
use choreo_messaging::metrics::METADATA;
use metrics::{Counter, Key, KeyName, Label, Recorder};

/// `choreo_sagas_completed_total`.
pub const COMPLETED: &str = "choreo_sagas_completed_total";
/// `choreo_sagas_cancelled_total{reason}`.
pub const CANCELLED: &str = "choreo_sagas_cancelled_total";

/// The counters of saga outcomes. The default counts nothing (until registered).
#[derive(Debug, Clone)]
pub struct SagaOutcomes {
    completed: Counter,
    /// By [`CancellationReason::ALL`]'s order.
    cancelled: [Counter; 2],
}

impl Default for SagaOutcomes {
    fn default() -> Self {
        SagaOutcomes {
            completed: Counter::noop(),
            cancelled: [Counter::noop(), Counter::noop()],
        }
    }
}

impl SagaOutcomes {
    /// Registers the counters on `recorder`.
    pub fn register(recorder: &dyn Recorder) -> Self {
        recorder.describe_counter(
            KeyName::from_const_str(COMPLETED),
            None,
            "Orders that reached `completed` (counted once the move committed).".into(),
        );
        recorder.describe_counter(
            KeyName::from_const_str(CANCELLED),
            None,
            "Orders that reached `cancelled`, by `cancellation_reason` (counted once the move \
             committed)."
                .into(),
        );
        SagaOutcomes {
            completed: recorder.register_counter(&Key::from_static_name(COMPLETED), &METADATA),
            cancelled: CancellationReason::ALL.map(|reason| {
                let reason = Label::from_static_parts("reason", reason.as_str());
                recorder.register_counter(&Key::from_parts(CANCELLED, vec![reason]), &METADATA)
            }),
        }
    }

    /// Counts the outcomes among `emitted`, the events of one committed transaction.
    pub fn count(&self, emitted: &[Event]) {
        for event in emitted {
            match event {
                Event::OrderCompleted(_) => self.completed.increment(1),
                Event::OrderCancelled(cancelled) => {
                    let reason = CancellationReason::parse(&cancelled.reason);
                    if let Some(index) = CancellationReason::ALL
                        .iter()
                        .position(|r| Some(*r) == reason)
                    {
                        self.cancelled[index].increment(1);
                    }
                }
                _ => {}
            }
        }
    }
}
