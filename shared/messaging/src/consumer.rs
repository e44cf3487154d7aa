//! The consumer loop: messages in order, a message's effect committed with its inbox row and its
//! events, and only then acked.
//!
//! Deliveries the broker has already pushed (up to `CHOREO_CONSUMER_BATCH`) are handled together:
//! one unit of work on the database thread, one transaction, the batch inside one savepoint,
//! then one `multiple` ack. For each message: check its provenance, record its id in the inbox
//! (already there: a duplicate, acked without effect), decode its event, run the service's
//! [`Handler`], write the events it returns to the outbox. A message that fails rolls the batch
//! back to the savepoint and the batch runs again without it, so only its own writes are lost
//! and every outcome is exactly what it would be alone:
//! - undecodable, or [`HandlerError::Permanent`]: dead-lettered at once;
//! - [`HandlerError::Transient`]: sent to a delay queue, back later, dead-lettered once the
//!   configured attempts are used up;
//! - [`HandlerError::Unavailable`] (the database is unreachable): nothing is kept, and the whole
//!   batch is held and tried again with backoff, spending none of its retries. A stop meanwhile
//!   leaves the whole batch unacked; the broker hands it back.
//!
//! Dead-letter and retry copies are confirmed by the broker before the batch is acked, so a crash
//! at any point means redelivery, never loss. Nothing is ever requeued in a hot loop.

use crate::backoff::backoff;
use crate::failpoint::Failpoints;
use crate::headers::{
    self, X_DEAD_LETTERED_AT, X_ERROR, X_LAST_ERROR, X_ORIGINAL_EXCHANGE, X_ORIGINAL_ROUTING_KEY,
    X_RETRY_COUNT,
};
use crate::health::BrokerHealth;
use crate::metrics::{Outcome, RuntimeMetrics};
use crate::outbox::{Outbox, OutboxWaker};
use crate::publisher::{Outgoing, Publisher};
use crate::topology::retry_queue_name;
use crate::traces::{Traces, Unit};
use crate::{Error, Names, Result, inbox};
use choreo_events::topology::ServiceTopology;
use choreo_events::{DecodeError, Envelope, Event};
use choreo_store::{Database, Tx};
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Committed; these events were written to the outbox.
    Handled {
        emitted: Vec<Event>,
    },
    /// Already in the inbox: acked without effect.
    Duplicate,
    DeadLetter(String),
    Retry(String),
}

/// One decoded delivery on its way to the database thread.
#[derive(Debug)]
struct Incoming {
    envelope: Envelope,
    span: tracing::Span,
    /// Its `type` label ([`RuntimeMetrics::consumed_type`]).
    kind: usize,
    trace: Unit,
}

/// Whether the loop goes on after a batch.
enum Flow {
    Continue,
    Stopped,
}

/// The loop that consumes a service's queue.
#[derive(Debug)]
pub(crate) struct ConsumerLoop<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) db: Database,
    pub(crate) names: Names,
    pub(crate) service: ServiceTopology,
    pub(crate) waker: OutboxWaker,
    pub(crate) retry_delays: Vec<Duration>,
    pub(crate) health: Arc<BrokerHealth>,
    pub(crate) failpoints: Failpoints,
    /// The most deliveries already received that are handled together in one transaction.
    pub(crate) max_batch: usize,
    pub(crate) metrics: Arc<RuntimeMetrics>,
    pub(crate) traces: Traces,
    /// The service's redelivery exchange, prefixed (named once, not per message).
    pub(crate) redeliver: String,
    /// The queue consumed, prefixed: the service's own, or one partition of it.
    pub(crate) queue: String,
}

impl<H: Handler> ConsumerLoop<H> {
    /// Consumes until `stop` is cancelled (then cancels the consumer, having finished or left
    /// unacked the batch in hand) or the channel fails (then returns the error). Deliveries
    /// prefetched but not handled are requeued by the broker when the channel closes.
    pub(crate) async fn run(
        &self,
        channel: Channel,
        publisher: Publisher,
        stop: CancellationToken,
    ) -> Result<()> {
        let tag = format!("{}-{}", self.service.name, uuid_like());
        let mut deliveries = channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.health.set_consuming(true);
        let result = loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(()),
                next = deliveries.next() => next,
            };
            let first = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => break Err(error.into()),
                None => break Err(Error::ChannelGone),
            };
            // Whatever else the broker has already pushed (up to the batch size) joins it.
            let mut batch = vec![first];
            let mut failed = None;
            while batch.len() < self.max_batch {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    Some(Some(Err(error))) => {
                        failed = Some(error);
                        break;
                    }
                    _ => break,
                }
            }
            match self.process_batch(batch, &publisher, &stop).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stopped) => break Ok(()),
                Err(error) => break Err(error),
            }
            if let Some(error) = failed {
                break Err(error.into());
            }
        };
        self.health.set_consuming(false);
        if result.is_ok() {
            channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            channel.close(200, "shutting down".into()).await?;
        }
        result
    }

    /// Handles deliveries received together: one transaction, then the dead-letter and retry
    /// copies (confirmed), then one ack that covers them all.
    async fn process_batch(
        &self,
        batch: Vec<Delivery>,
        publisher: &Publisher,
        stop: &CancellationToken,
    ) -> Result<Flow> {
        let mut spans = Vec::with_capacity(batch.len());
        let mut kinds = Vec::with_capacity(batch.len());
        let mut fates: Vec<Option<Fate>> = Vec::with_capacity(batch.len());
        let mut incoming = Vec::with_capacity(batch.len());
        let mut traces = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match Envelope::decode(&delivery.data) {
                Ok(envelope) => {
                    let span = message_span(&envelope);
                    spans.push(span.clone());
                    let kind = self.metrics.consumed_type(Some(&envelope.event_type));
                    kinds.push(kind);
                    let trace = self.traces.process(delivery, &envelope);
                    traces.push(trace.clone());
                    // A forgery is dead-lettered before it can have any effect.
                    match self.provenance(delivery, &envelope) {
                        Ok(()) => {
                            incoming.push(Incoming {
                                envelope,
                                span,
                                kind,
                                trace,
                            });
                            fates.push(None);
                        }
                        Err(reason) => fates.push(Some(Fate::DeadLetter(reason))),
                    }
                }
                // Undecodable: dead-lettered without touching the database.
                Err(error) => {
                    spans.push(tracing::info_span!("message", routing_key = %delivery.routing_key));
                    kinds.push(self.metrics.consumed_type(None));
                    traces.push(Unit::none());
                    fates.push(Some(Fate::DeadLetter(error.to_string())));
                }
            }
        }
        if !incoming.is_empty() {
            let Some(applied) = self.apply_holding(incoming, stop).await else {
                return Ok(Flow::Stopped);
            };
            let mut applied = applied.into_iter();
            for fate in fates.iter_mut().filter(|fate| fate.is_none()) {
                *fate = applied.next();
            }
            let _ = self.failpoints.hit("consumer.after_commit");
            // Committed: what the handlers did happened, once, whatever becomes of the ack.
            for fate in &fates {
                if let Some(Fate::Handled { emitted }) = fate {
                    self.handler.committed(emitted);
                }
            }
        }
        let mut emitted = 0;
        for (((delivery, fate), span), kind) in batch.iter().zip(&fates).zip(spans).zip(kinds) {
            let settled = async {
                match fate {
                    Some(Fate::Handled { emitted: events }) => {
                        emitted += events.len();
                        tracing::debug!(emitted = events.len(), "handled");
                        Ok(Outcome::Handled)
                    }
                    Some(Fate::Duplicate) => {
                        tracing::info!("duplicate delivery acked without effect");
                        Ok(Outcome::Duplicate)
                    }
                    Some(Fate::DeadLetter(reason)) => self
                        .dead_letter(delivery, publisher, reason)
                        .await
                        .map(|()| Outcome::DeadLettered),
                    Some(Fate::Retry(reason)) => self
                        .retry(delivery, publisher, reason)
                        .await
                        .map(|()| Outcome::Retried),
                    None => Err(Error::ChannelGone),
                }
            };
            let outcome = settled.instrument(span).await?;
            self.metrics.consumed(kind, outcome);
        }
        for (trace, fate) in traces.iter().zip(&fates) {
            trace.end(
                fate.as_ref()
                    .map_or(crate::traces::Outcome::Unchanged, Fate::outcome),
            );
        }
        if emitted > 0 {
            self.waker.wake();
        }
        let last = batch.last().expect("a batch is never empty");
        // A `multiple` ack covers every unacked delivery up to this one: safe, since every
        // delivery before this batch was acked (or the loop has ended).
        let options = BasicAckOptions {
            multiple: batch.len() > 1,
        };
        if last.acker.ack(options).await? {
            Ok(Flow::Continue)
        } else {
            Err(Error::ChannelGone)
        }
    }

    /// Whether `envelope` is what its delivery says (see [`choreo_events::provenance`]). A
    /// message back from a delay queue or redriven from the DLQ (both through the service's own
    /// redelivery exchange; through the default exchange from a delay queue of an earlier
    /// version) is checked against the first exchange and key, kept in its headers; those headers
    /// are believed from nowhere else, so a publisher cannot vouch for its own forgery with them.
    fn provenance(&self, delivery: &Delivery, envelope: &Envelope) -> Result<(), String> {
        let redelivered =
            delivery.exchange.as_str().is_empty() || delivery.exchange.as_str() == self.redeliver;
        let (exchange, routing_key) = if redelivered {
            (
                original(delivery, X_ORIGINAL_EXCHANGE, &delivery.exchange),
                original(delivery, X_ORIGINAL_ROUTING_KEY, &delivery.routing_key),
            )
        } else {
            (
                delivery.exchange.as_str().to_owned(),
                delivery.routing_key.as_str().to_owned(),
            )
        };
        let exchange = exchange
            .strip_prefix(self.names.prefix())
            .unwrap_or(&exchange);
        choreo_events::provenance::check(envelope, exchange, &routing_key)
    }

    /// Runs the batch's transaction; while the database is unreachable, keeps the deliveries and
    /// tries again with backoff. `None` if asked to stop meanwhile.
    async fn apply_holding(
        &self,
        incoming: Vec<Incoming>,
        stop: &CancellationToken,
    ) -> Option<Vec<Fate>> {
        let count = incoming.len();
        let incoming = Arc::new(incoming);
        let mut waits: u32 = 0;
        loop {
            let handler = self.handler.clone();
            let failpoints = self.failpoints.clone();
            let source = self.service.name;
            let work = incoming.clone();
            let metrics = self.metrics.clone();
            let started = Instant::now();
            let applied = self
                .db
                .write(move |tx| {
                    let core = Core {
                        handler: &*handler,
                        source,
                        failpoints: &failpoints,
                        metrics: &metrics,
                    };
                    let fates = core.apply_all(tx, &work)?;
                    // Every handler ran and the outbox rows are written; nothing is committed.
                    failpoints
                        .hit("consumer.before_commit")
                        .map_err(choreo_store::Error::from)?;
                    Ok(fates)
                })
                .await;
            self.metrics.transaction_took(started.elapsed());
            let reason = match applied {
                Ok(fates) => return Some(fates),
                // Only a message alone fails like this (a batch re-runs without its failures), or
                // a commit that failed: nothing was kept, so each is retried or dead-lettered.
                Err(HandlerError::Permanent(reason)) => {
                    return Some(vec![Fate::DeadLetter(reason); count]);
                }
                Err(HandlerError::Transient(reason)) => {
                    return Some(vec![Fate::Retry(reason); count]);
                }
                Err(HandlerError::Unavailable(reason)) => reason,
            };
            // Keep the deliveries and wait in place: nothing can be handled until the database
            // is back, and handing them back would count against their delivery limit.
            if waits.is_multiple_of(20) {
                tracing::warn!(
                    reason,
                    messages = count,
                    "database unreachable; holding the messages until it is back"
                );
            }
            let pause = backoff(Duration::from_millis(100), Duration::from_secs(5), waits);
            waits = waits.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                // Stopping: leave the batch unacked; the broker requeues it when the channel closes.
                () = stop.cancelled() => return None,
            }
        }
    }

    /// Publishes a dead-letter copy of `delivery` with `reason` and waits for its confirm.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(reason, "dead-lettering message");
        // Without its `expiration`: a per-message TTL would expire it out of the DLQ.
        let properties = headers::with_headers(
            &headers::for_keeping(&delivery.properties),
            &[
                (X_ERROR, headers::text(reason)),
                (
                    X_ORIGINAL_EXCHANGE,
                    headers::text(original(delivery, X_ORIGINAL_EXCHANGE, &delivery.exchange)),
                ),
                (
                    X_ORIGINAL_ROUTING_KEY,
                    headers::text(original(
                        delivery,
                        X_ORIGINAL_ROUTING_KEY,
                        &delivery.routing_key,
                    )),
                ),
                (X_DEAD_LETTERED_AT, headers::text(choreo_store::now_text())),
            ],
        );
        publisher
            .publish(Outgoing {
                exchange: self.names.of(&self.service.dead_letter_exchange()),
                routing_key: original(delivery, X_ORIGINAL_ROUTING_KEY, &delivery.routing_key),
                body: delivery.data.clone(),
                properties,
            })
            .await
    }

    /// Publishes `delivery` to the delay queue of its next attempt (confirmed), or dead-letters
    /// it once the attempts are used up.
    async fn retry(&self, delivery: &Delivery, publisher: &Publisher, reason: &str) -> Result<()> {
        let attempts = headers::header_count(&delivery.properties, X_RETRY_COUNT);
        let Some(delay) = self.retry_delays.get(attempts as usize) else {
            let reason = format!(
                "retries exhausted after {} attempts: {reason}",
                attempts + 1
            );
            return self.dead_letter(delivery, publisher, &reason).await;
        };
        tracing::warn!(
            reason,
            attempt = attempts + 1,
            ?delay,
            "transient failure; retrying later"
        );
        let properties = headers::with_headers(
            &delivery.properties,
            &[
                (
                    X_RETRY_COUNT,
                    AMQPValue::LongLongInt(i64::from(attempts + 1)),
                ),
                (X_LAST_ERROR, headers::text(reason)),
                (
                    X_ORIGINAL_EXCHANGE,
                    headers::text(original(delivery, X_ORIGINAL_EXCHANGE, &delivery.exchange)),
                ),
                (
                    X_ORIGINAL_ROUTING_KEY,
                    headers::text(original(
                        delivery,
                        X_ORIGINAL_ROUTING_KEY,
                        &delivery.routing_key,
                    )),
                ),
            ],
        );
        publisher
            .publish(Outgoing {
                exchange: self.redeliver.clone(),
                routing_key: self.names.of(&retry_queue_name(self.service.name, *delay)),
                body: delivery.data.clone(),
                properties,
            })
            .await
    }
}

/// What every message of a unit of work is handled with, on the database thread.
struct Core<'a, H> {
    handler: &'a H,
    /// The service name: the source of the events it emits.
    source: &'a str,
    failpoints: &'a Failpoints,
    metrics: &'a RuntimeMetrics,
}

impl<H: Handler> Core<'_, H> {
    /// The transaction core, on the database thread: every incoming event in the open transaction.
    /// `Err` when the whole transaction must be dropped: the database is unavailable, or a message
    /// alone failed (then its error says its fate).
    ///
    /// A batch runs inside one savepoint, in order of order id (stable, so one order's events keep
    /// their order): two replicas' batches then take row locks in the same order and cannot
    /// deadlock. When a message fails, the batch rolls back to the savepoint, that message's fate
    /// is kept, and the batch runs again without it; each message's handler runs once per failure
    /// found, and a failed one never again in this unit of work, so its outcome is exactly what it
    /// would be alone. The batch's inbox rows and its outbox rows are each written with one
    /// statement per run of a power of two of them ([`inbox::record_all`], [`Outbox::enqueue_all`]),
    /// not one per message: on PostgreSQL each statement is a round trip. Should one of those shared
    /// statements fail, the batch rolls back and runs message by message, each with its own inbox
    /// and outbox statements, so that a failure is again one message's. Failures are rare, so the
    /// common path costs two savepoint statements per batch, not two per message.
    fn apply_all(&self, tx: &mut dyn Tx, incoming: &[Incoming]) -> Result<Vec<Fate>, HandlerError> {
        if let [alone] = incoming {
            let _entered = alone.span.enter();
            return self.apply_one(tx, alone).map(|fate| vec![fate]);
        }
        let mut order: Vec<usize> = (0..incoming.len()).collect();
        order.sort_by_key(|&i| incoming[i].envelope.order_id_hint().unwrap_or_default());
        // Each message's fate: the failures found so far, then every one.
        let mut fates: Vec<Option<Fate>> = vec![None; incoming.len()];
        let mut together = true;
        loop {
            tx.execute("SAVEPOINT batch", &[])?;
            let pending: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| fates[i].is_none())
                .collect();
            let attempt = if together {
                self.apply_together(tx, incoming, &pending)
            } else {
                self.apply_each(tx, incoming, &pending)
            };
            let failure = match attempt {
                Ok(handled) => {
                    tx.execute("RELEASE batch", &[])?;
                    for (&index, fate) in pending.iter().zip(handled) {
                        fates[index] = Some(fate);
                    }
                    return Ok(fates.into_iter().flatten().collect());
                }
                Err(Failure::Unavailable(reason)) => return Err(HandlerError::Unavailable(reason)),
                Err(Failure::Message(index, fate)) => Some((index, fate)),
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
            if let Some((index, fate)) = failure {
                fates[index] = Some(fate);
            }
        }
    }

    /// The `pending` messages of a batch, in that order, with one inbox statement before the
    /// handlers and one outbox statement after them (per run of a power of two). Returns their
    /// fates in the order of `pending`.
    fn apply_together(
        &self,
        tx: &mut dyn Tx,
        incoming: &[Incoming],
        pending: &[usize],
    ) -> Result<Vec<Fate>, Failure> {
        let events: Vec<(&str, &str)> = pending
            .iter()
            .map(|&i| {
                let envelope = &incoming[i].envelope;
                (envelope.id.as_str(), envelope.event_type.as_str())
            })
            .collect();
        let fresh = inbox::record_all(tx, &events).map_err(Failure::of_shared)?;
        let mut fates = Vec::with_capacity(pending.len());
        let mut outgoing = Vec::new();
        for (&index, new) in pending.iter().zip(fresh) {
            let item = &incoming[index];
            let _entered = item.span.enter();
            item.trace.attempt();
            if !new {
                fates.push(Fate::Duplicate);
                continue;
            }
            let (emitted, envelopes) = self
                .handle_new(tx, item)
                .map_err(|error| Failure::of_message(index, error))?;
            outgoing.extend(envelopes);
            fates.push(Fate::Handled { emitted });
        }
        Outbox::enqueue_all(tx, &outgoing).map_err(Failure::of_shared)?;
        Ok(fates)
    }

    /// The `pending` messages of a batch one by one, each with its own inbox and outbox statements.
    fn apply_each(
        &self,
        tx: &mut dyn Tx,
        incoming: &[Incoming],
        pending: &[usize],
    ) -> Result<Vec<Fate>, Failure> {
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
    fn apply_one(&self, tx: &mut dyn Tx, incoming: &Incoming) -> Result<Fate, HandlerError> {
        let envelope = &incoming.envelope;
        incoming.trace.attempt();
        if !inbox::record(tx, &envelope.id, &envelope.event_type)? {
            return Ok(Fate::Duplicate);
        }
        let (emitted, envelopes) = self.handle_new(tx, incoming)?;
        Outbox::enqueue_all(tx, &envelopes)?;
        Ok(Fate::Handled { emitted })
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
    /// The message at this index failed with this fate; the batch runs again without it.
    Message(usize, Fate),
    /// A statement written for the whole batch failed.
    Shared(String),
}

impl Failure {
    fn of_message(index: usize, error: HandlerError) -> Failure {
        match error {
            HandlerError::Unavailable(reason) => Failure::Unavailable(reason),
            HandlerError::Permanent(reason) => Failure::Message(index, Fate::DeadLetter(reason)),
            HandlerError::Transient(reason) => Failure::Message(index, Fate::Retry(reason)),
        }
    }

    fn of_shared(error: choreo_store::Error) -> Failure {
        match HandlerError::from(error) {
            HandlerError::Unavailable(reason) => Failure::Unavailable(reason),
            other => Failure::Shared(other.to_string()),
        }
    }
}

impl Fate {
    /// What the message's trace says of it.
    fn outcome(&self) -> crate::traces::Outcome<'_> {
        use crate::traces::Outcome;
        match self {
            Fate::Handled { .. } => Outcome::Committed,
            Fate::Duplicate => Outcome::Duplicate,
            Fate::DeadLetter(reason) => Outcome::DeadLettered(reason),
            Fate::Retry(reason) => Outcome::Retried(reason),
        }
    }
}

/// The span of one handled message.
fn message_span(envelope: &Envelope) -> tracing::Span {
    tracing::info_span!(
        "message",
        event_id = %envelope.id,
        event_type = %envelope.event_type,
        order_id = envelope.order_id_hint().unwrap_or_default(),
        correlation_id = %envelope.correlationid,
    )
}

/// Where the message was first published: a redelivered message arrives through another
/// exchange, so the first exchange and key are kept in headers.
fn original(delivery: &Delivery, header: &str, current: &lapin::types::ShortString) -> String {
    headers::header_text(&delivery.properties, header)
        .unwrap_or_else(|| current.as_str().to_owned())
}

/// A short random tag suffix so two replicas' consumer tags differ.
fn uuid_like() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::memory_database;
    use choreo_events::payloads::{OrderCompleted, ShipmentFailed};

    /// Writes a row per event and emits `order.completed`; refuses `shipment.failed` for order
    /// `bad` permanently, and any other with a transient error for order `busy`.
    #[derive(Debug)]
    struct Recorder;

    impl Handler for Recorder {
        fn handle(
            &self,
            event: &Event,
            _envelope: &Envelope,
            tx: &mut dyn Tx,
        ) -> Result<Vec<Event>, HandlerError> {
            tx.execute(
                "INSERT INTO seen (order_id) VALUES ($1)",
                &[event.order_id().into()],
            )?;
            match event.order_id() {
                "bad" => Err(HandlerError::Permanent("bad order".into())),
                "busy" => Err(HandlerError::Transient("busy".into())),
                order_id => Ok(vec![Event::OrderCompleted(OrderCompleted {
                    order_id: order_id.to_owned(),
                })]),
            }
        }
    }

    fn incoming(order_id: &str) -> Incoming {
        let envelope = Envelope::root(
            "shipping",
            &Event::ShipmentFailed(ShipmentFailed {
                order_id: order_id.to_owned(),
                reason: "unserviceable_country".into(),
            }),
        );
        Incoming {
            envelope,
            span: tracing::Span::none(),
            kind: 0,
            trace: Unit::none(),
        }
    }

    /// What `Recorder` does with an event of `order_id`.
    fn completed(order_id: &str) -> Fate {
        Fate::Handled {
            emitted: vec![Event::OrderCompleted(OrderCompleted {
                order_id: order_id.to_owned(),
            })],
        }
    }

    async fn apply(
        db: &Database,
        failpoints: &Failpoints,
        batch: Vec<Incoming>,
    ) -> Result<Vec<Fate>, HandlerError> {
        let failpoints = failpoints.clone();
        let metrics = RuntimeMetrics::detached(&choreo_events::topology::ORDERS);
        db.write(move |tx| {
            let core = Core {
                handler: &Recorder,
                source: "orders",
                failpoints: &failpoints,
                metrics: &metrics,
            };
            core.apply_all(tx, &batch)
        })
        .await
    }

    /// The first column of every row `sql` selects, as text.
    async fn texts(db: &Database, sql: &'static str) -> Vec<String> {
        db.read(move |tx| {
            tx.query(sql, &[])?
                .into_iter()
                .map(|mut row| row.take::<String>(0))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .expect(sql)
    }

    async fn count(db: &Database, sql: &'static str) -> i64 {
        db.read(move |tx| tx.query_opt(sql, &[])?.unwrap_or_default().take::<i64>(0))
            .await
            .expect("count")
    }

    async fn database() -> Database {
        let db = memory_database().await;
        db.write(|tx| tx.execute("CREATE TABLE seen (order_id TEXT NOT NULL)", &[]))
            .await
            .expect("table");
        db
    }

    #[tokio::test]
    async fn in_a_batch_a_failing_message_loses_only_its_own_writes() {
        let db = database().await;

        let fates = apply(
            &db,
            &Failpoints::default(),
            vec![
                incoming("a"),
                incoming("bad"),
                incoming("busy"),
                incoming("b"),
            ],
        )
        .await
        .expect("committed");

        assert_eq!(
            fates,
            [
                completed("a"),
                Fate::DeadLetter("bad order".into()),
                Fate::Retry("busy".into()),
                completed("b"),
            ]
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 2);
    }

    #[tokio::test]
    async fn a_batch_runs_in_order_of_order_id_keeping_each_orders_own_order() {
        let db = database().await;
        let (z1, a, z2) = (incoming("z"), incoming("a"), incoming("z"));
        let (z1_id, z2_id) = (z1.envelope.id.clone(), z2.envelope.id.clone());

        let fates = apply(&db, &Failpoints::default(), vec![z1, a, z2])
            .await
            .expect("committed");

        // Fates come back in delivery order; the work ran as a, z (first), z (second).
        assert_eq!(fates, [completed("z"), completed("a"), completed("z")]);
        let seen = texts(&db, "SELECT order_id FROM seen ORDER BY rowid").await;
        assert_eq!(seen, ["a", "z", "z"]);
        let inbox = texts(&db, "SELECT event_id FROM inbox ORDER BY rowid").await;
        assert_eq!(inbox[1..], [z1_id, z2_id]);
        // The batch's outbox rows, written together, take their seq in the order the work ran.
        let outbox = texts(&db, "SELECT correlation_id FROM outbox ORDER BY seq").await;
        assert_eq!(outbox, ["a", "z", "z"]);
    }

    #[tokio::test]
    async fn a_batch_whose_shared_outbox_statement_fails_runs_message_by_message() {
        let db = database().await;
        // The outbox refuses one order's row: the batch's one outbox statement fails whole.
        db.write(|tx| {
            tx.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON outbox
                 WHEN NEW.correlation_id = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poison row'); END",
                &[],
            )
        })
        .await
        .expect("trigger");

        let fates = apply(
            &db,
            &Failpoints::default(),
            vec![incoming("a"), incoming("poison"), incoming("b")],
        )
        .await
        .expect("committed");

        // Run one by one, only the refused message fails (retried, with the database's reason);
        // the others are handled and keep their writes.
        assert_eq!(fates[0], completed("a"));
        assert!(
            matches!(&fates[1], Fate::Retry(reason) if reason.contains("poison row")),
            "{:?}",
            fates[1]
        );
        assert_eq!(fates[2], completed("b"));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 2);
    }

    #[tokio::test]
    async fn a_message_alone_that_fails_keeps_nothing_and_says_why() {
        let db = database().await;

        let failed = apply(&db, &Failpoints::default(), vec![incoming("bad")]).await;

        assert_eq!(failed, Err(HandlerError::Permanent("bad order".into())));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 0);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 0);
    }

    #[tokio::test]
    async fn a_redelivered_event_is_a_duplicate_with_no_effect() {
        let db = database().await;
        let first = incoming("a");
        let again = Incoming {
            envelope: first.envelope.clone(),
            span: tracing::Span::none(),
            kind: 0,
            trace: Unit::none(),
        };
        apply(&db, &Failpoints::default(), vec![first])
            .await
            .expect("first");

        let fates = apply(&db, &Failpoints::default(), vec![again, incoming("b")])
            .await
            .expect("second");

        assert_eq!(fates, [Fate::Duplicate, completed("b")]);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
    }

    #[tokio::test]
    async fn a_transient_failpoint_fails_the_first_n_tries_of_messages_even_in_batches() {
        let db = database().await;
        let failpoints = Failpoints::parse("consumer.before_handle=transient:2").expect("spec");

        let fates = apply(
            &db,
            &failpoints,
            vec![incoming("a"), incoming("b"), incoming("c")],
        )
        .await
        .expect("committed");

        // Exactly the first two tries failed; the third message went through.
        assert!(matches!(fates[0], Fate::Retry(_)), "{fates:?}");
        assert!(matches!(fates[1], Fate::Retry(_)), "{fates:?}");
        assert_eq!(fates[2], completed("c"));
    }

    /// Unavailable (the database "down") for its first `outage` calls, then handles; asks
    /// `stop` to stop at its first call.
    #[derive(Debug)]
    struct Outage {
        outage: u32,
        calls: std::sync::atomic::AtomicU32,
        stop: CancellationToken,
    }

    impl Handler for Outage {
        fn handle(
            &self,
            event: &Event,
            envelope: &Envelope,
            tx: &mut dyn Tx,
        ) -> Result<Vec<Event>, HandlerError> {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if call == 0 {
                self.stop.cancel();
            }
            if call < self.outage {
                return Err(HandlerError::Unavailable("database down".into()));
            }
            Recorder.handle(event, envelope, tx)
        }
    }

    fn consumer(db: Database, outage: u32, stop: CancellationToken) -> ConsumerLoop<Outage> {
        ConsumerLoop {
            handler: Arc::new(Outage {
                outage,
                calls: Default::default(),
                stop,
            }),
            db,
            names: Names::new(""),
            service: choreo_events::topology::ORDERS,
            waker: OutboxWaker::default(),
            retry_delays: vec![Duration::from_secs(1)],
            health: Arc::new(BrokerHealth::default()),
            failpoints: Failpoints::default(),
            max_batch: 32,
            metrics: Arc::new(RuntimeMetrics::detached(&choreo_events::topology::ORDERS)),
            traces: Traces::off(),
            redeliver: choreo_events::topology::ORDERS.redeliver_exchange(),
            queue: choreo_events::topology::ORDERS.name.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_batch_is_held_while_the_database_is_down_and_handled_whole_when_it_is_back() {
        let db = database().await;
        let consumer = consumer(db.clone(), 3, CancellationToken::new());

        let fates = consumer
            .apply_holding(
                vec![incoming("a"), incoming("b")],
                &CancellationToken::new(),
            )
            .await;

        // Three failed tries spent no retry: both are handled, neither retried nor dead-lettered.
        assert_eq!(fates, Some(vec![completed("a"), completed("b")]));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
    }

    #[tokio::test]
    async fn a_stop_during_an_outage_leaves_the_whole_batch_unhandled() {
        let db = database().await;
        let stop = CancellationToken::new();
        // The stop arrives while the first try is failing.
        let consumer = consumer(db.clone(), u32::MAX, stop.clone());

        let fates = consumer
            .apply_holding(vec![incoming("a"), incoming("b"), incoming("c")], &stop)
            .await;

        // Nothing to ack: the broker gets every delivery of the batch back.
        assert_eq!(fates, None);
        assert_eq!(
            consumer
                .handler
                .calls
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 0);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 0);
    }

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
