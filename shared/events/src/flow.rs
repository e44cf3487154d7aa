//! The saga as a declared flow: for each event type, which service reacts to it, which event
//! types that reaction may publish, and within what time one of them is due.
//!
//! The services never read this table: each decides for itself (that is choreography). It is the
//! suite's *description* of itself, for whoever watches the saga from outside (the observer flags
//! a step overdue against it, an event it does not allow, a compensation that never came) and for
//! the map the observer draws. A test holds it against [`crate::topology::SERVICES`]: every
//! binding of a service's queue is a declared step of that service, and every step is a binding,
//! so a new subscription without a declared step (or the reverse) fails the build.

use crate::EventType;
use crate::topology::SERVICES;
use std::time::Duration;

/// What a reaction does for the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Moves the order forward (or records a state change): a missed deadline means stuck.
    Forward,
    /// Undoes an effect after a later step failed (a refund after a failed shipment): a missed
    /// deadline is a missing compensation.
    Compensation,
}

/// One reaction of the flow: `by` consumes `on` and publishes one of `emits` within `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The event reacted to.
    pub on: EventType,
    /// The service that reacts (its queue binds `on`).
    pub by: &'static str,
    /// The event types it may publish in reaction, exactly one of them; empty when the reaction
    /// only changes that service's own state.
    pub emits: &'static [EventType],
    /// How long one of `emits` may take, by default (the observer's setting may override it).
    pub within: Duration,
    pub kind: StepKind,
}

impl Step {
    /// Whether the saga waits for this reaction to publish something.
    pub fn expects_an_event(&self) -> bool {
        !self.emits.is_empty()
    }
}

/// How long a reaction may take by default: a few seconds, against milliseconds when healthy.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(5);

/// The event that starts a saga: published by orders when a client places an order.
pub const START: EventType = EventType::OrderPlaced;

/// The event types that end a saga: no service reacts to them.
pub const TERMINAL: &[EventType] = &[EventType::OrderCompleted, EventType::OrderCancelled];

const fn step(on: EventType, by: &'static str, emits: &'static [EventType]) -> Step {
    Step {
        on,
        by,
        emits,
        within: DEFAULT_WITHIN,
        kind: StepKind::Forward,
    }
}

/// The saga, step by step.
pub const FLOW: &[Step] = &[
    step(
        EventType::OrderPlaced,
        "billing",
        &[EventType::PaymentCaptured, EventType::PaymentDeclined],
    ),
    step(
        EventType::PaymentCaptured,
        "shipping",
        &[EventType::ShipmentDispatched, EventType::ShipmentFailed],
    ),
    // The order becomes `paid`; nothing is published.
    step(EventType::PaymentCaptured, "orders", &[]),
    step(
        EventType::PaymentDeclined,
        "orders",
        &[EventType::OrderCancelled],
    ),
    step(
        EventType::ShipmentDispatched,
        "orders",
        &[EventType::OrderCompleted],
    ),
    Step {
        kind: StepKind::Compensation,
        ..step(
            EventType::ShipmentFailed,
            "billing",
            &[EventType::PaymentRefunded],
        )
    },
    // The order stays `paid` until the refund cancels it.
    step(EventType::ShipmentFailed, "orders", &[]),
    step(
        EventType::PaymentRefunded,
        "orders",
        &[EventType::OrderCancelled],
    ),
];

/// The steps that react to `event_type`.
pub fn steps_on(event_type: EventType) -> impl Iterator<Item = &'static Step> {
    FLOW.iter().filter(move |step| step.on == event_type)
}

/// The event types after which `event_type` may come (the ones whose reaction emits it); empty
/// for the start.
pub fn causes_of(event_type: EventType) -> impl Iterator<Item = EventType> {
    FLOW.iter()
        .filter(move |step| step.emits.contains(&event_type))
        .map(|step| step.on)
}

/// Whether `event_type` ends a saga.
pub fn is_terminal(event_type: EventType) -> bool {
    TERMINAL.contains(&event_type)
}

/// How far `event_type` is from the start along the longest declared path: the column of the
/// observer's map. The flow has no cycle (a test says so), so this ends.
pub fn depth(event_type: EventType) -> usize {
    causes_of(event_type)
        .map(|cause| depth(cause) + 1)
        .max()
        .unwrap_or(0)
}

/// The services that consume `event_type`, in the order of [`SERVICES`].
pub fn consumers_of(event_type: EventType) -> impl Iterator<Item = &'static str> {
    SERVICES
        .iter()
        .filter(move |service| service.subscribes_to.contains(&event_type))
        .map(|service| service.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_of_every_service_is_a_declared_step_and_every_step_a_binding() {
        for service in SERVICES {
            for event_type in service.subscribes_to {
                assert!(
                    FLOW.iter()
                        .any(|step| step.on == *event_type && step.by == service.name),
                    "{} binds {event_type} but the flow declares no step of {} on it",
                    service.name,
                    service.name
                );
            }
        }
        for step in FLOW {
            let service = SERVICES
                .iter()
                .find(|service| service.name == step.by)
                .unwrap_or_else(|| panic!("{step:?}: no such service"));
            assert!(
                service.subscribes_to.contains(&step.on),
                "the flow says {} reacts to {}, but its queue does not bind it",
                step.by,
                step.on
            );
        }
    }

    #[test]
    fn a_step_emits_only_what_its_service_publishes() {
        for step in FLOW {
            for emitted in step.emits {
                assert_eq!(emitted.publisher().name, step.by, "{step:?}");
            }
        }
    }

    #[test]
    fn every_event_type_but_the_start_follows_a_step_and_only_terminal_ones_end_the_saga() {
        for event_type in EventType::ALL {
            let caused = causes_of(event_type).count() > 0;
            assert_eq!(caused, event_type != START, "{event_type}");
            let reacted_to = steps_on(event_type).any(Step::expects_an_event);
            assert_eq!(reacted_to, !is_terminal(event_type), "{event_type}");
        }
    }

    #[test]
    fn the_flow_has_no_cycle_and_its_columns_follow_the_saga() {
        // On a cycle `depth` would recurse until the stack overflows, failing this test.
        for event_type in EventType::ALL {
            assert!(depth(event_type) < EventType::ALL.len(), "{event_type}");
        }
        assert_eq!(depth(EventType::OrderPlaced), 0);
        assert_eq!(depth(EventType::PaymentCaptured), 1);
        assert_eq!(depth(EventType::ShipmentFailed), 2);
        assert_eq!(depth(EventType::PaymentRefunded), 3);
        assert_eq!(depth(EventType::OrderCancelled), 4);
    }

    #[test]
    fn the_refund_is_the_one_compensation() {
        let compensations: Vec<_> = FLOW
            .iter()
            .filter(|step| step.kind == StepKind::Compensation)
            .map(|step| (step.on, step.by))
            .collect();
        assert_eq!(compensations, [(EventType::ShipmentFailed, "billing")]);
    }
}
