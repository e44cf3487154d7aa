//! The pure judgement of one saga: from the events seen for an order (and the time now), its
//! state, what it waits for and by when, and what is wrong with it, against the declared
//! [`choreo_events::flow`]. No I/O: the handler and the sweep call [`analyze`] and store what it
//! says, so a saga's state is always a function of its events and the clock.

use choreo_events::EventType;
use choreo_events::flow::{self, Step, StepKind};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// One event the observer saw, as far as judging the saga needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub event_id: String,
    pub event_type: EventType,
    pub source: String,
    pub causation_id: Option<String>,
    /// The event's own `time` (its publisher's clock).
    pub occurred_at: DateTime<Utc>,
    /// When the next step's deadline starts: the later of `occurred_at` and when the observer
    /// stored the event, so that a publisher whose clock is behind the observer's cannot make the
    /// next step overdue the moment it is seen.
    pub clocked_at: DateTime<Utc>,
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Not ended, and nothing it waits for is overdue.
    Running,
    /// Not ended, and a step it waits for is overdue against the flow.
    Stuck,
    /// It broke the flow (see its anomalies): an illegal sequence, a missing compensation, a
    /// duplicate effect. Something to look into.
    Failed,
    /// Ended with `order.cancelled`, by the flow: a business outcome (a declined payment; a
    /// failed shipment, refunded), not a fault.
    Cancelled,
    /// Ended with `order.completed`, by the flow.
    Completed,
}

impl SagaState {
    pub const ALL: [SagaState; 5] = [
        SagaState::Running,
        SagaState::Stuck,
        SagaState::Failed,
        SagaState::Cancelled,
        SagaState::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Stuck => "stuck",
            SagaState::Failed => "failed",
            SagaState::Cancelled => "cancelled",
            SagaState::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// What can be wrong with a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// An event the flow does not allow where it came: without the event it must follow, caused
    /// by one it cannot follow, two outcomes of one step, or an end with a step still open.
    IllegalSequence,
    /// A compensation overdue or never made: a failed shipment without a refund.
    MissingCompensation,
    /// One effect twice: two events of one type for one order (not a redelivery of one event,
    /// which the inbox drops).
    DuplicateEffect,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 3] = [
        AnomalyKind::IllegalSequence,
        AnomalyKind::MissingCompensation,
        AnomalyKind::DuplicateEffect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::IllegalSequence => "illegal_sequence",
            AnomalyKind::MissingCompensation => "missing_compensation",
            AnomalyKind::DuplicateEffect => "duplicate_effect",
        }
    }
}

/// One thing wrong with a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// In words, naming the events.
    pub detail: String,
}

/// A step the saga waits for: `by` must publish one of `one_of` by `due`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Expectation {
    /// The event reacted to.
    pub after: String,
    /// Its id.
    pub after_event_id: String,
    /// The service that must react.
    pub by: String,
    /// The event types it may publish.
    pub one_of: Vec<String>,
    /// RFC 3339, UTC: the event's time plus the step's deadline.
    pub due: String,
    /// Whether `due` has passed.
    pub overdue: bool,
    /// `compensation` for the refund after a failed shipment, `forward` otherwise.
    pub compensation: bool,
}

/// How long each step may take: the flow's own deadlines, or one for every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadlines {
    /// `CHOREO_OBSERVER_STEP_DEADLINE_MS`: when set, every step's deadline.
    pub every_step: Option<Duration>,
}

impl Deadlines {
    pub fn within(&self, step: &Step) -> Duration {
        self.every_step.unwrap_or(step.within)
    }
}

/// The judgement of one saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: SagaState,
    /// The furthest event type reached, by the flow's order.
    pub current_step: EventType,
    pub started_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    /// What the saga waits for (overdue or not).
    pub expected: Vec<Expectation>,
    pub anomalies: Vec<Anomaly>,
    /// The earliest deadline still ahead: when to judge again if nothing arrives.
    pub next_deadline: Option<DateTime<Utc>>,
}

/// RFC 3339 with milliseconds in UTC: the stored format, whose text order is time order.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Judges the saga made of `events` (in the order they were seen; at least one) at `now`.
pub fn analyze(events: &[Observed], now: DateTime<Utc>, deadlines: &Deadlines) -> Report {
    let mut anomalies = Vec::new();
    let mut by_type: BTreeMap<&'static str, Vec<&Observed>> = BTreeMap::new();
    for event in events {
        by_type
            .entry(event.event_type.routing_key())
            .or_default()
            .push(event);
    }
    let seen = |event_type: EventType| by_type.contains_key(event_type.routing_key());
    let first = |event_type: EventType| {
        by_type
            .get(event_type.routing_key())
            .and_then(|events| events.first())
    };

    for (event_type, of_type) in &by_type {
        if of_type.len() > 1 {
            let ids: Vec<&str> = of_type.iter().map(|e| e.event_id.as_str()).collect();
            anomalies.push(Anomaly {
                kind: AnomalyKind::DuplicateEffect,
                detail: format!("{} × {event_type}: {}", of_type.len(), ids.join(", ")),
            });
        }
    }

    for event in events {
        if event.event_type == flow::START {
            continue;
        }
        let causes: Vec<EventType> = flow::causes_of(event.event_type).collect();
        let cause = event
            .causation_id
            .as_deref()
            .and_then(|id| events.iter().find(|e| e.event_id == id));
        match cause {
            Some(cause) if !causes.contains(&cause.event_type) => anomalies.push(Anomaly {
                kind: AnomalyKind::IllegalSequence,
                detail: format!(
                    "{} was caused by {}, which it cannot follow",
                    event.event_type, cause.event_type
                ),
            }),
            Some(_) => {}
            None if !causes.iter().any(|cause| seen(*cause)) => anomalies.push(Anomaly {
                kind: AnomalyKind::IllegalSequence,
                detail: format!(
                    "{} without {} before it",
                    event.event_type,
                    names(&causes).join(" or ")
                ),
            }),
            None => {}
        }
    }

    // The alternatives of one step, and the ends of the saga: at most one of each may happen.
    let mut outcomes: Vec<&[EventType]> = vec![flow::TERMINAL];
    for step in flow::FLOW.iter().filter(|step| step.emits.len() > 1) {
        if !outcomes.contains(&step.emits) {
            outcomes.push(step.emits);
        }
    }
    for alternatives in outcomes {
        let present: Vec<EventType> = alternatives.iter().copied().filter(|t| seen(*t)).collect();
        if present.len() > 1 {
            anomalies.push(Anomaly {
                kind: AnomalyKind::IllegalSequence,
                detail: format!(
                    "both {}: the flow allows one of them",
                    names(&present).join(" and ")
                ),
            });
        }
    }

    let terminal = flow::TERMINAL.iter().copied().find(|t| seen(*t));
    let mut expected = Vec::new();
    for event_type in EventType::ALL {
        let Some(event) = first(event_type) else {
            continue;
        };
        for step in flow::steps_on(event_type).filter(|step| step.expects_an_event()) {
            if step.emits.iter().any(|emitted| seen(*emitted)) {
                continue;
            }
            let within =
                chrono::Duration::from_std(deadlines.within(step)).unwrap_or(chrono::Duration::MAX);
            let due = event.clocked_at.checked_add_signed(within).unwrap_or(now);
            expected.push((step, event, due));
        }
    }

    let mut stuck = false;
    for (step, event, due) in &expected {
        let overdue = *due <= now;
        match (step.kind, terminal) {
            (StepKind::Compensation, Some(end)) => anomalies.push(Anomaly {
                kind: AnomalyKind::MissingCompensation,
                detail: format!(
                    "{end} after {} without {} from {}",
                    step.on,
                    names(step.emits).join(" or "),
                    step.by
                ),
            }),
            (StepKind::Compensation, None) if overdue => anomalies.push(Anomaly {
                kind: AnomalyKind::MissingCompensation,
                detail: format!(
                    "{} from {} overdue since {} (after {} {})",
                    names(step.emits).join(" or "),
                    step.by,
                    timestamp(*due),
                    step.on,
                    event.event_id
                ),
            }),
            (StepKind::Forward, Some(end)) => anomalies.push(Anomaly {
                kind: AnomalyKind::IllegalSequence,
                detail: format!(
                    "{end} while {} still owed {} after {}",
                    step.by,
                    names(step.emits).join(" or "),
                    step.on
                ),
            }),
            (StepKind::Forward, None) if overdue => stuck = true,
            _ => {}
        }
    }

    let state = if !anomalies.is_empty() {
        SagaState::Failed
    } else {
        match terminal {
            Some(EventType::OrderCompleted) => SagaState::Completed,
            Some(_) => SagaState::Cancelled,
            None if stuck => SagaState::Stuck,
            None => SagaState::Running,
        }
    };
    let next_deadline = expected
        .iter()
        .map(|(_, _, due)| *due)
        .filter(|due| *due > now)
        .min()
        .filter(|_| terminal.is_none());
    let current_step = events
        .iter()
        .map(|e| e.event_type)
        .max_by_key(|t| flow::depth(*t))
        .unwrap_or(flow::START);
    let started_at = first(flow::START)
        .map(|e| e.occurred_at)
        .or_else(|| events.iter().map(|e| e.occurred_at).min())
        .unwrap_or(now);
    let last_event_at = events
        .iter()
        .map(|e| e.occurred_at)
        .max()
        .unwrap_or(started_at);
    Report {
        state,
        current_step,
        started_at,
        last_event_at,
        expected: expected
            .into_iter()
            .map(|(step, event, due)| Expectation {
                after: step.on.routing_key().to_owned(),
                after_event_id: event.event_id.clone(),
                by: step.by.to_owned(),
                one_of: names(step.emits),
                due: timestamp(due),
                overdue: due <= now,
                compensation: step.kind == StepKind::Compensation,
            })
            .collect(),
        anomalies,
        next_deadline,
    }
}

fn names(types: &[EventType]) -> Vec<String> {
    types.iter().map(|t| t.routing_key().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    const SECOND: i64 = 1_000;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("a time")
    }

    /// Events `(id, type, caused by id, at ms)`, each from its type's publisher.
    fn saga(steps: &[(&str, EventType, Option<&str>, i64)]) -> Vec<Observed> {
        steps
            .iter()
            .map(|(id, event_type, cause, ms)| Observed {
                event_id: (*id).to_owned(),
                event_type: *event_type,
                source: event_type.publisher().name.to_owned(),
                causation_id: cause.map(str::to_owned),
                occurred_at: at(*ms),
                clocked_at: at(*ms),
            })
            .collect()
    }

    fn judge(events: &[Observed], now_ms: i64) -> Report {
        analyze(events, at(now_ms), &Deadlines::default())
    }

    fn kinds(report: &Report) -> Vec<AnomalyKind> {
        report.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_happy_saga_runs_then_completes_without_anomalies() {
        let placed = saga(&[("p", OrderPlaced, None, 0)]);
        let running = judge(&placed, 10);
        assert_eq!(running.state, SagaState::Running);
        assert_eq!(running.expected.len(), 1);
        assert_eq!(running.expected[0].by, "billing");
        assert_eq!(
            running.expected[0].one_of,
            ["payment.captured", "payment.declined"]
        );
        assert_eq!(running.next_deadline, Some(at(5 * SECOND)));

        let done = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
            ("d", ShipmentDispatched, Some("c"), 9),
            ("o", OrderCompleted, Some("d"), 12),
        ]);
        let report = judge(&done, 60 * SECOND);
        assert_eq!(report.state, SagaState::Completed);
        assert_eq!(report.current_step, OrderCompleted);
        assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
        assert!(report.expected.is_empty());
        assert_eq!(report.next_deadline, None);
    }

    #[test]
    fn a_publisher_whose_clock_is_an_hour_behind_makes_no_step_overdue_when_it_is_seen() {
        // Billing's clock says an hour ago; the observer stored its event now.
        let mut events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
        ]);
        events[1].occurred_at = at(5 - 3_600 * SECOND);

        let seen = judge(&events, 10);
        let later = judge(&events, 6 * SECOND);

        assert_eq!(seen.state, SagaState::Running, "{:?}", seen.expected);
        assert_eq!(
            later.state,
            SagaState::Stuck,
            "still judged, from when it was seen"
        );
    }

    #[test]
    fn a_saga_whose_next_step_is_overdue_is_stuck_and_clears_when_the_step_arrives() {
        let mut events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
        ]);
        assert_eq!(judge(&events, 4 * SECOND).state, SagaState::Running);

        let stuck = judge(&events, 6 * SECOND);
        assert_eq!(stuck.state, SagaState::Stuck);
        let waiting: Vec<_> = stuck.expected.iter().filter(|e| e.overdue).collect();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].by, "shipping");
        assert_eq!(waiting[0].after, "payment.captured");

        events.extend(saga(&[("d", ShipmentDispatched, Some("c"), 7 * SECOND)]));
        assert_eq!(judge(&events, 7 * SECOND).state, SagaState::Running);
    }

    #[test]
    fn the_step_deadline_setting_overrides_the_flows() {
        let events = saga(&[("p", OrderPlaced, None, 0)]);
        let quick = Deadlines {
            every_step: Some(Duration::from_millis(100)),
        };
        assert_eq!(analyze(&events, at(200), &quick).state, SagaState::Stuck);
        assert_eq!(judge(&events, 200).state, SagaState::Running);
    }

    #[test]
    fn an_event_without_the_one_it_must_follow_is_an_illegal_sequence() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("r", PaymentRefunded, Some("p"), 5),
        ]);
        let report = judge(&events, 10);
        assert_eq!(report.state, SagaState::Failed);
        assert_eq!(kinds(&report), [AnomalyKind::IllegalSequence]);
        assert!(
            report.anomalies[0]
                .detail
                .contains("payment.refunded was caused by order.placed")
        );

        let orphan = saga(&[("d", ShipmentDispatched, None, 0)]);
        let report = judge(&orphan, 10);
        assert!(
            report.anomalies[0]
                .detail
                .contains("without payment.captured before it")
        );
    }

    #[test]
    fn two_outcomes_of_one_step_are_an_illegal_sequence() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
            ("x", PaymentDeclined, Some("p"), 6),
        ]);
        let report = judge(&events, 10);
        assert_eq!(report.state, SagaState::Failed);
        assert!(
            report.anomalies.iter().any(|a| a
                .detail
                .contains("both payment.captured and payment.declined")),
            "{:?}",
            report.anomalies
        );
    }

    #[test]
    fn a_failed_shipment_without_a_refund_is_a_missing_compensation_once_overdue() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
            ("f", ShipmentFailed, Some("c"), 10),
        ]);
        let waiting = judge(&events, SECOND);
        assert_eq!(waiting.state, SagaState::Running);
        assert!(waiting.expected[0].compensation);

        let report = judge(&events, 6 * SECOND);
        assert_eq!(report.state, SagaState::Failed);
        assert_eq!(kinds(&report), [AnomalyKind::MissingCompensation]);
        assert!(
            report.anomalies[0]
                .detail
                .contains("payment.refunded from billing")
        );

        let mut refunded = events.clone();
        refunded.extend(saga(&[
            ("r", PaymentRefunded, Some("f"), 7 * SECOND),
            ("x", OrderCancelled, Some("r"), 7 * SECOND + 3),
        ]));
        let report = judge(&refunded, 8 * SECOND);
        assert_eq!(
            report.state,
            SagaState::Cancelled,
            "a late compensation still ends it by the flow"
        );
        assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
    }

    #[test]
    fn a_saga_that_ends_without_its_compensation_is_flagged_at_once() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
            ("f", ShipmentFailed, Some("c"), 10),
            ("x", OrderCancelled, Some("f"), 20),
        ]);
        let report = judge(&events, 30);
        assert!(kinds(&report).contains(&AnomalyKind::MissingCompensation));
    }

    #[test]
    fn a_second_event_of_one_type_is_a_duplicate_effect() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c1", PaymentCaptured, Some("p"), 5),
            ("c2", PaymentCaptured, Some("p"), 6),
        ]);
        let report = judge(&events, 10);
        assert_eq!(report.state, SagaState::Failed);
        assert_eq!(kinds(&report), [AnomalyKind::DuplicateEffect]);
        assert!(
            report.anomalies[0]
                .detail
                .contains("2 × payment.captured: c1, c2")
        );
    }

    #[test]
    fn a_declined_payment_ends_the_saga_cancelled_by_the_flow_not_failed() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("d", PaymentDeclined, Some("p"), 5),
            ("x", OrderCancelled, Some("d"), 9),
        ]);
        let report = judge(&events, 60 * SECOND);
        assert_eq!(report.state, SagaState::Cancelled);
        assert!(report.anomalies.is_empty());
        assert_eq!(report.current_step, OrderCancelled);
    }

    #[test]
    fn a_failed_shipment_refunded_ends_the_saga_cancelled_by_the_flow() {
        let events = saga(&[
            ("p", OrderPlaced, None, 0),
            ("c", PaymentCaptured, Some("p"), 5),
            ("f", ShipmentFailed, Some("c"), 10),
            ("r", PaymentRefunded, Some("f"), 15),
            ("x", OrderCancelled, Some("r"), 20),
        ]);
        let report = judge(&events, 60 * SECOND);
        assert_eq!(report.state, SagaState::Cancelled);
        assert!(report.anomalies.is_empty());
    }
}
