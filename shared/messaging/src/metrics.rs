//! What the runtime counts: messages consumed by type and outcome, handler and transaction
//! durations, events published and confirmed by type, broker reconnects.
//!
//! The handles are registered once, when the service is built, on the recorder of that service
//! instance (never the process-global one: the tests run several services in one process) and
//! kept in a table per event type. Counting on the hot path is then a short lookup of a
//! `&'static str` among a service's few types and an atomic add: no label string is built or
//! allocated per message. The host renders the recorder for `GET /metrics`.

use crate::Outcome;
use choreo_events::EventType;
use choreo_events::topology::ServiceTopology;
use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};

/// `choreo_messages_consumed_total{type, outcome}`.
pub const CONSUMED: &str = "choreo_messages_consumed_total";
/// `choreo_handler_duration_seconds{type}`.
pub const HANDLER_SECONDS: &str = "choreo_handler_duration_seconds";
/// `choreo_consumer_transaction_duration_seconds`.
pub const TRANSACTION_SECONDS: &str = "choreo_consumer_transaction_duration_seconds";
/// `choreo_messages_published_total{type}`.
pub const PUBLISHED: &str = "choreo_messages_published_total";
/// `choreo_messages_confirmed_total{type}`.
pub const CONFIRMED: &str = "choreo_messages_confirmed_total";
/// `choreo_broker_reconnects_total`.
pub const RECONNECTS: &str = "choreo_broker_reconnects_total";

/// The `type` label of a message whose type the service does not bind (or publish), or that
/// could not be decoded at all: one value, so a flood of garbage adds no series.
pub const OTHER_TYPE: &str = "other";

/// Where the metrics' handles are registered from (`Metadata` of every handle).
pub const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The consumed messages of one `type`: one counter per outcome, and the handler's durations.
#[derive(Debug)]
struct ConsumedType {
    event_type: &'static str,
    outcomes: [Counter; 4],
    handler: Histogram,
}

/// The published events of one `type`.
#[derive(Debug)]
struct PublishedType {
    event_type: &'static str,
    published: Counter,
    confirmed: Counter,
}

/// The runtime's handles of one service instance.
#[derive(Debug)]
pub struct RuntimeMetrics {
    /// The types the service binds, then [`OTHER_TYPE`] last.
    consumed: Vec<ConsumedType>,
    transaction: Histogram,
    /// The types the service publishes, then [`OTHER_TYPE`] last.
    published: Vec<PublishedType>,
    reconnects: Counter,
}

/// Names and describes the runtime's metrics on `recorder` (the text of `# HELP`).
fn describe(recorder: &dyn Recorder) {
    let text = |name: &'static str, unit, help: &'static str| {
        (KeyName::from_const_str(name), unit, help.into())
    };
    for (name, unit, help) in [
        text(
            CONSUMED,
            None,
            "Messages taken from the service's queue, by event type and what became of them \
             (handled, duplicate, retried, dead_lettered); counted once settled.",
        ),
        text(
            PUBLISHED,
            None,
            "Outbox events sent to the broker by the relay, by event type (a row sent again \
             after a broken session counts again).",
        ),
        text(
            CONFIRMED,
            None,
            "Outbox events the broker confirmed, by event type.",
        ),
        text(
            RECONNECTS,
            None,
            "Broker sessions that failed and were followed by a reconnection attempt.",
        ),
    ] {
        recorder.describe_counter(name, unit, help);
    }
    recorder.describe_histogram(
        KeyName::from_const_str(HANDLER_SECONDS),
        Some(Unit::Seconds),
        "Time the service's handler took for one event, inside its transaction, by event type."
            .into(),
    );
    recorder.describe_histogram(
        KeyName::from_const_str(TRANSACTION_SECONDS),
        Some(Unit::Seconds),
        "Time from handing a batch of consumed messages to the database until it committed \
         (or failed), waiting for the writer included."
            .into(),
    );
}

impl RuntimeMetrics {
    /// Registers the runtime's metrics of `service` on `recorder`.
    pub fn register(recorder: &dyn Recorder, service: &ServiceTopology) -> Self {
        describe(recorder);
        let key = |name: &'static str, labels: Vec<Label>| Key::from_parts(name, labels);
        let consumed_types = service
            .subscribes_to
            .iter()
            .map(|t| t.routing_key())
            .chain([OTHER_TYPE]);
        let consumed = consumed_types
            .map(|event_type| ConsumedType {
                event_type,
                outcomes: Outcome::CONSUMED.map(|outcome| {
                    recorder.register_counter(
                        &key(
                            CONSUMED,
                            vec![
                                Label::from_static_parts("type", event_type),
                                Label::from_static_parts("outcome", outcome),
                            ],
                        ),
                        &METADATA,
                    )
                }),
                handler: recorder.register_histogram(
                    &key(
                        HANDLER_SECONDS,
                        vec![Label::from_static_parts("type", event_type)],
                    ),
                    &METADATA,
                ),
            })
            .collect();
        let published_types = EventType::ALL
            .into_iter()
            .filter(|t| t.exchange() == service.exchange)
            .map(EventType::routing_key)
            .chain([OTHER_TYPE]);
        let published = published_types
            .map(|event_type| {
                let labels = || vec![Label::from_static_parts("type", event_type)];
                PublishedType {
                    event_type,
                    published: recorder.register_counter(&key(PUBLISHED, labels()), &METADATA),
                    confirmed: recorder.register_counter(&key(CONFIRMED, labels()), &METADATA),
                }
            })
            .collect();
        RuntimeMetrics {
            consumed,
            transaction: recorder.register_histogram(&key(TRANSACTION_SECONDS, vec![]), &METADATA),
            published,
            reconnects: recorder.register_counter(&key(RECONNECTS, vec![]), &METADATA),
        }
    }

    /// Handles that count nothing, for unit tests of the loops.
    pub fn detached(service: &ServiceTopology) -> Self {
        Self::register(&metrics::NoopRecorder, service)
    }

    /// The index of a consumed `event_type` (`None`: undecodable), for [`Self::consumed`].
    pub(crate) fn consumed_type(&self, event_type: Option<&str>) -> usize {
        let last = self.consumed.len() - 1;
        event_type
            .and_then(|t| self.consumed[..last].iter().position(|c| c.event_type == t))
            .unwrap_or(last)
    }

    /// Counts a consumed message of type `index` (from [`Self::consumed_type`]) under its
    /// outcome's label.
    pub(crate) fn consumed(&self, index: usize, outcome: &Outcome) {
        let label = outcome.label();
        if let Some(slot) = Outcome::CONSUMED.iter().position(|l| *l == label) {
            self.consumed[index].outcomes[slot].increment(1);
        }
    }

    /// Records how long the handler took for a message of type `index`.
    pub(crate) fn handler_took(&self, index: usize, took: std::time::Duration) {
        self.consumed[index].handler.record(took.as_secs_f64());
    }

    /// Records how long a consumer's unit of work took.
    pub(crate) fn transaction_took(&self, took: std::time::Duration) {
        self.transaction.record(took.as_secs_f64());
    }

    /// The index of a published `event_type`, for [`Self::published`] and [`Self::confirmed`].
    pub(crate) fn published_type(&self, event_type: &str) -> usize {
        let last = self.published.len() - 1;
        self.published[..last]
            .iter()
            .position(|p| p.event_type == event_type)
            .unwrap_or(last)
    }

    pub(crate) fn published(&self, index: usize) {
        self.published[index].published.increment(1);
    }

    pub(crate) fn confirmed(&self, index: usize) {
        self.published[index].confirmed.increment(1);
    }

    pub(crate) fn reconnecting(&self) {
        self.reconnects.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_events::topology::BILLING;

    #[test]
    fn types_a_service_does_not_bind_or_publish_are_counted_as_other() {
        let metrics = RuntimeMetrics::detached(&BILLING);

        assert_eq!(metrics.consumed_type(Some("order.placed")), 0);
        assert_eq!(metrics.consumed_type(Some("shipment.failed")), 1);
        let other = metrics.consumed_type(None);
        assert_eq!(metrics.consumed[other].event_type, OTHER_TYPE);
        assert_eq!(metrics.consumed_type(Some("payment.captured")), other);
        let captured = metrics.published_type("payment.captured");
        assert_eq!(metrics.published[captured].event_type, "payment.captured");
        assert_eq!(
            metrics.published[metrics.published_type("order.placed")].event_type,
            OTHER_TYPE
        );
    }
}
