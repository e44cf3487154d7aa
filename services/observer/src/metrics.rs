//! The observer's own series on the service's recorder (`GET /metrics` renders them with the
//! runtime's): events observed by type, sagas by state, sagas with an anomaly by kind.
//!
//! They come from the observer's database (`observer_counts`, which each transaction keeps up to
//! date), read again by every sweep (`CHOREO_OBSERVER_SWEEP_MS`): a scrape sees values at most
//! one sweep old.

use crate::saga::{AnomalyKind, SagaState};
use crate::store::Counts;
use choreo_events::EventType;
use choreo_messaging::metrics::METADATA;
use metrics::{Counter, Gauge, Key, KeyName, Label, Recorder};

pub const EVENTS: &str = "choreo_observer_events_total";
pub const SAGAS: &str = "choreo_observer_sagas";
pub const ANOMALIES: &str = "choreo_observer_sagas_with_anomaly";

/// Handles of every series, each type, state and kind present from the start (at zero).
#[derive(Debug, Clone)]
pub struct ObserverMetrics {
    events: Vec<(&'static str, Counter)>,
    sagas: Vec<(&'static str, Gauge)>,
    anomalies: Vec<(&'static str, Gauge)>,
}

fn key(name: &'static str, label: &'static str, value: &'static str) -> Key {
    Key::from_parts(name, vec![Label::from_static_parts(label, value)])
}

impl ObserverMetrics {
    pub fn register(recorder: &dyn Recorder) -> Self {
        recorder.describe_counter(
            KeyName::from_const_str(EVENTS),
            None,
            "Events observed, by type.".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(SAGAS),
            None,
            "Sagas by state.".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(ANOMALIES),
            None,
            "Sagas with an anomaly of a kind.".into(),
        );
        ObserverMetrics {
            events: EventType::ALL
                .iter()
                .map(|t| {
                    let name = t.routing_key();
                    (
                        name,
                        recorder.register_counter(&key(EVENTS, "type", name), &METADATA),
                    )
                })
                .collect(),
            sagas: SagaState::ALL
                .iter()
                .map(|s| {
                    let name = s.as_str();
                    (
                        name,
                        recorder.register_gauge(&key(SAGAS, "state", name), &METADATA),
                    )
                })
                .collect(),
            anomalies: AnomalyKind::ALL
                .iter()
                .map(|k| {
                    let name = k.as_str();
                    (
                        name,
                        recorder.register_gauge(&key(ANOMALIES, "kind", name), &METADATA),
                    )
                })
                .collect(),
        }
    }

    /// Sets every series from `counts`; what `counts` lacks is zero.
    pub fn set(&self, counts: &Counts) {
        for (event_type, counter) in &self.events {
            let seen = Counts::of(&counts.events, event_type);
            counter.absolute(u64::try_from(seen).unwrap_or(0));
        }
        for (state, gauge) in &self.sagas {
            gauge.set(Counts::of(&counts.states, state) as f64);
        }
        for (kind, gauge) in &self.anomalies {
            gauge.set(Counts::of(&counts.anomalies, kind) as f64);
        }
    }
}
