//! The batch's transaction, on the database thread: provenance already checked, each message is
//! recorded in the inbox, decoded, handled and its events written to the outbox, all in one
//! transaction, so that a failing message loses only its own writes.

use super::{Handler, HandlerError};
use crate::failpoint::Failpoints;
use crate::metrics::RuntimeMetrics;
use crate::outbox::Outbox;
use crate::traces::Unit;
use crate::{Outcome, inbox};
use choreo_events::{Envelope, Event};
use choreo_store::Tx;
use std::time::Instant;

/// One decoded delivery on its way to the database thread.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) envelope: Envelope,
    pub(super) span: tracing::Span,
    /// Its `type` label ([`RuntimeMetrics::consumed_type`]).
    pub(super) kind: usize,
    pub(super) trace: Unit,
}

/// What every message of a unit of work is handled with, on the database thread.
pub(super) struct Core<'a, H> {
    pub(super) handler: &'a H,
    /// The service name: the source of the events it emits.
    pub(super) source: &'a str,
    pub(super) failpoints: &'a Failpoints,
    pub(super) metrics: &'a RuntimeMetrics,
}

impl<H: Handler> Core<'_, H> {
    /// The transaction core, on the database thread: every incoming event in the open transaction.
    /// `Err` when the whole transaction must be dropped: the database is unavailable, or a message
    /// alone failed (then its error says its outcome).
    ///
    /// A batch runs inside one savepoint, in order of order id (stable, so one order's events keep
    /// their order): two replicas' batches then take row locks in the same order and cannot
    /// deadlock. When a message fails, the batch rolls back to the savepoint, that message's outcome
    /// is kept, and the batch runs again without it; each message's handler runs once per failure
    /// found, and a failed one never again in this unit of work, so its outcome is exactly what it
    /// would be alone. The batch's inbox rows and its outbox rows are each written with one
    /// statement per run of a power of two of them ([`inbox::record_all`], [`Outbox::enqueue_all`]),
    /// not one per message: on PostgreSQL each statement is a round trip. Should one of those shared
    /// statements fail, the batch rolls back and runs message by message, each with its own inbox
    /// and outbox statements, so that a failure is again one message's. Failures are rare, so the
    /// common path costs two savepoint statements per batch, not two per message.
    pub(super) fn apply_all(
        &self,
        tx: &mut dyn Tx,
        incoming: &[Incoming],
    ) -> Result<Vec<Outcome>, HandlerError> {
        if let [alone] = incoming {
            let _entered = alone.span.enter();
            return self.apply_one(tx, alone).map(|outcome| vec![outcome]);
        }
        let mut order: Vec<usize> = (0..incoming.len()).collect();
        order.sort_by_key(|&i| incoming[i].envelope.order_id_hint().unwrap_or_default());
        // Each message's outcome: the failures found so far, then every one.
        let mut outcomes: Vec<Option<Outcome>> = vec![None; incoming.len()];
        let mut together = true;
        loop {
            tx.execute("SAVEPOINT batch", &[])?;
            let pending: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| outcomes[i].is_none())
                .collect();
            let attempt = if together {
                self.apply_together(tx, incoming, &pending)
            } else {
                self.apply_each(tx, incoming, &pending)
            };
            let failure = match attempt {
                Ok(handled) => {
                    tx.execute("RELEASE batch", &[])?;
                    for (&index, outcome) in pending.iter().zip(handled) {
                        outcomes[index] = Some(outcome);
                    }
                    return Ok(outcomes.into_iter().flatten().collect());
                }
                Err(Failure::Unavailable(reason)) => return Err(HandlerError::Unavailable(reason)),
                Err(Failure::Message(index, outcome)) => Some((index, outcome)),
                Err(Failure::Shared(reason)) => {
                    tracing::warn!(
                        reason,
                        "a batch's shared inbox or outbox statement failed; running it message by message"
                    );
                    together = false;
                    None
                }
            };
            tx.execute("ROLLBACK TO batch", &[])?;
            tx.execute("RELEASE batch", &[])?;
            if let Some((index, outcome)) = failure {
                outcomes[index] = Some(outcome);
            }
        }
    }

    /// The `pending` messages of a batch, in that order, with one inbox statement before the
    /// handlers and one outbox statement after them (per run of a power of two). Returns their
    /// outcomes in the order of `pending`.
    fn apply_together(
        &self,
        tx: &mut dyn Tx,
        incoming: &[Incoming],
        pending: &[usize],
    ) -> Result<Vec<Outcome>, Failure> {
        let events: Vec<(&str, &str)> = pending
            .iter()
            .map(|&i| {
                let envelope = &incoming[i].envelope;
                (envelope.id.as_str(), envelope.event_type.as_str())
            })
            .collect();
        let fresh = inbox::record_all(tx, &events).map_err(Failure::of_shared)?;
        let mut outcomes = Vec::with_capacity(pending.len());
        let mut outgoing = Vec::new();
        for (&index, new) in pending.iter().zip(fresh) {
            let item = &incoming[index];
            let _entered = item.span.enter();
            item.trace.attempt();
            if !new {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            let (emitted, envelopes) = self
                .handle_new(tx, item)
                .map_err(|error| Failure::of_message(index, error))?;
            outgoing.extend(envelopes);
            outcomes.push(Outcome::Handled(emitted));
        }
        Outbox::enqueue_all(tx, &outgoing).map_err(Failure::of_shared)?;
        Ok(outcomes)
    }

    /// The `pending` messages of a batch one by one, each with its own inbox and outbox statements.
    fn apply_each(
        &self,
        tx: &mut dyn Tx,
        incoming: &[Incoming],
        pending: &[usize],
    ) -> Result<Vec<Outcome>, Failure> {
        pending
            .iter()
            .map(|&index| {
                let item = &incoming[index];
                let _entered = item.span.enter();
                self.apply_one(tx, item)
                    .map_err(|error| Failure::of_message(index, error))
            })
            .collect()
    }

    /// Inbox, handler and outbox for one event.
    fn apply_one(&self, tx: &mut dyn Tx, incoming: &Incoming) -> Result<Outcome, HandlerError> {
        let envelope = &incoming.envelope;
        incoming.trace.attempt();
        if !inbox::record(tx, &envelope.id, &envelope.event_type)? {
            return Ok(Outcome::Duplicate);
        }
        let (emitted, envelopes) = self.handle_new(tx, incoming)?;
        Outbox::enqueue_all(tx, &envelopes)?;
        Ok(Outcome::Handled(emitted))
    }

    /// The handler for an event the inbox found new; returns the events it emitted and their
    /// envelopes for the outbox, caused by the event.
    fn handle_new(
        &self,
        tx: &mut dyn Tx,
        incoming: &Incoming,
    ) -> Result<(Vec<Event>, Vec<Envelope>), HandlerError> {
        let envelope = &incoming.envelope;
        self.failpoints
            .hit("consumer.before_handle")
            .map_err(choreo_store::Error::from)?;
        let event = envelope.event()?;
        let started = Instant::now();
        let handled = self.handler.handle(&event, envelope, tx);
        self.metrics.handler_took(incoming.kind, started.elapsed());
        let emitted = handled?;
        let envelopes = emitted
            .iter()
            .map(|event| {
                incoming
                    .trace
                    .stamp(Envelope::caused_by(envelope, self.source, event))
            })
            .collect();
        Ok((emitted, envelopes))
    }
}

/// Why one attempt at a batch stopped.
enum Failure {
    /// The database is unreachable: the whole unit of work waits.
    Unavailable(String),
    /// The message at this index failed with this outcome; the batch runs again without it.
    Message(usize, Outcome),
    /// A statement written for the whole batch failed.
    Shared(String),
}

impl Failure {
    fn of_message(index: usize, error: HandlerError) -> Failure {
        match error {
            HandlerError::Unavailable(reason) => Failure::Unavailable(reason),
            HandlerError::Permanent(reason) => {
                Failure::Message(index, Outcome::DeadLettered(reason))
            }
            HandlerError::Transient(reason) => Failure::Message(index, Outcome::Retried(reason)),
        }
    }

    fn of_shared(error: choreo_store::Error) -> Failure {
        match HandlerError::from(error) {
            HandlerError::Unavailable(reason) => Failure::Unavailable(reason),
            other => Failure::Shared(other.to_string()),
        }
    }
}
