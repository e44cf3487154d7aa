//! The delivery loop: takes what the broker has pushed as one batch, has it handled in one
//! transaction (holding it while the database is unreachable), publishes the retry and
//! dead-letter copies, then acks the batch with one `multiple` ack.

use super::transaction::{Core, Incoming};
use super::{Handler, HandlerError};
use crate::backoff::backoff;
use crate::failpoint::Failpoints;
use crate::health::BrokerHealth;
use crate::metrics::RuntimeMetrics;
use crate::origin::Origin;
use crate::outbox::OutboxWaker;
use crate::publisher::Publisher;
use crate::traces::{Traces, Unit};
use crate::{Error, Names, Outcome, Result};
use choreo_events::Envelope;
use choreo_events::topology::ServiceTopology;
use choreo_store::Database;
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One delivery of a batch, from its arrival to its ack.
struct Received {
    delivery: Delivery,
    /// Where it was first published, for the provenance check and its copies.
    origin: Origin,
    span: tracing::Span,
    /// Its `type` label ([`RuntimeMetrics::consumed_type`]).
    kind: usize,
    trace: Unit,
    /// Decided on arrival (undecodable, forged) or by the batch's transaction; `None` until then.
    outcome: Option<Outcome>,
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
    /// How long a batch waits for more deliveries once the first is in: a bystander (the
    /// observer) trades that much latency for fewer, larger transactions. Zero: none.
    pub(crate) linger: Duration,
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
            // Whatever else the broker has already pushed (up to the batch size) joins it, and
            // with a linger, what it pushes until then.
            let mut batch = vec![first];
            let mut failed = None;
            let linger_until =
                (!self.linger.is_zero()).then(|| tokio::time::Instant::now() + self.linger);
            while batch.len() < self.max_batch {
                let next = match (deliveries.next().now_or_never(), linger_until) {
                    (Some(next), _) => next,
                    (None, None) => break,
                    (None, Some(until)) => tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep_until(until) => break,
                        next = deliveries.next() => next,
                    },
                };
                match next {
                    Some(Ok(delivery)) => batch.push(delivery),
                    Some(Err(error)) => {
                        failed = Some(error);
                        break;
                    }
                    None => break,
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
        let mut incoming = Vec::with_capacity(batch.len());
        let mut received: Vec<Received> = batch
            .into_iter()
            .map(|delivery| self.receive(delivery, &mut incoming))
            .collect();
        if !incoming.is_empty() {
            let Some(applied) = self.apply_holding(incoming, stop).await else {
                return Ok(Flow::Stopped);
            };
            let mut applied = applied.into_iter();
            for one in received.iter_mut().filter(|one| one.outcome.is_none()) {
                one.outcome = applied.next();
            }
            let _ = self.failpoints.hit("consumer.after_commit");
            // Committed: what the handlers did happened, once, whatever becomes of the ack.
            for one in &received {
                if let Some(Outcome::Handled(emitted)) = &one.outcome {
                    self.handler.committed(emitted);
                }
            }
        }
        let mut emitted = 0;
        for one in &received {
            let settled = async {
                match &one.outcome {
                    Some(Outcome::Handled(events)) => {
                        emitted += events.len();
                        tracing::debug!(emitted = events.len(), "handled");
                        Ok(())
                    }
                    Some(Outcome::Duplicate) => {
                        tracing::info!("duplicate delivery acked without effect");
                        Ok(())
                    }
                    Some(Outcome::DeadLettered(reason)) => {
                        self.dead_letter(&one.delivery, &one.origin, publisher, reason)
                            .await
                    }
                    Some(Outcome::Retried(reason)) => {
                        self.retry(&one.delivery, &one.origin, publisher, reason)
                            .await
                    }
                    // Every delivery of a batch has an outcome by now, and never this one.
                    Some(Outcome::Unchanged) | None => Err(Error::ChannelGone),
                }
            };
            settled.instrument(one.span.clone()).await?;
            if let Some(outcome) = &one.outcome {
                self.metrics.consumed(one.kind, outcome);
            }
        }
        for one in &received {
            one.trace
                .end(one.outcome.as_ref().unwrap_or(&Outcome::Unchanged));
        }
        if emitted > 0 {
            self.waker.wake();
        }
        let last = &received.last().expect("a batch is never empty").delivery;
        // A `multiple` ack covers every unacked delivery up to this one: safe, since every
        // delivery before this batch was acked (or the loop has ended).
        let options = BasicAckOptions {
            multiple: received.len() > 1,
        };
        if last.acker.ack(options).await? {
            Ok(Flow::Continue)
        } else {
            Err(Error::ChannelGone)
        }
    }

    /// Takes a delivery in: decodes it and checks its provenance. What passes joins `incoming`,
    /// for the batch's transaction; what does not is to be dead-lettered without touching the
    /// database.
    fn receive(&self, delivery: Delivery, incoming: &mut Vec<Incoming>) -> Received {
        let origin = Origin::of(
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
            &delivery.properties,
            &self.redeliver,
        );
        let envelope = match Envelope::decode(&delivery.data) {
            Ok(envelope) => envelope,
            Err(error) => {
                return Received {
                    span: tracing::info_span!("message", routing_key = %delivery.routing_key),
                    kind: self.metrics.consumed_type(None),
                    trace: Unit::none(),
                    outcome: Some(Outcome::DeadLettered(error.to_string())),
                    delivery,
                    origin,
                };
            }
        };
        let span = message_span(&envelope);
        let kind = self.metrics.consumed_type(Some(&envelope.event_type));
        let trace = self.traces.process(&delivery, &origin, &envelope);
        trace.record_ids(&span, envelope.traceparent.as_deref());
        // A forgery is dead-lettered before it can have any effect.
        let outcome = match self.provenance(&origin, &envelope) {
            Ok(()) => {
                incoming.push(Incoming {
                    envelope,
                    span: span.clone(),
                    kind,
                    trace: trace.clone(),
                });
                None
            }
            Err(reason) => Some(Outcome::DeadLettered(reason)),
        };
        Received {
            delivery,
            origin,
            span,
            kind,
            trace,
            outcome,
        }
    }

    /// Whether `envelope` is what its delivery says (see [`choreo_events::provenance`]): checked
    /// against where it was first published, which for a message back from a delay queue or
    /// redriven from the DLQ is what the runtime's own copy recorded, and otherwise where the
    /// broker says it was delivered from ([`Origin`]), so a publisher cannot vouch for its own
    /// forgery with headers.
    fn provenance(&self, origin: &Origin, envelope: &Envelope) -> Result<(), String> {
        let exchange = origin
            .exchange
            .strip_prefix(self.names.prefix())
            .unwrap_or(&origin.exchange);
        choreo_events::provenance::check(envelope, exchange, &origin.routing_key)
    }

    /// Runs the batch's transaction; while the database is unreachable, keeps the deliveries and
    /// tries again with backoff. `None` if asked to stop meanwhile.
    pub(super) async fn apply_holding(
        &self,
        incoming: Vec<Incoming>,
        stop: &CancellationToken,
    ) -> Option<Vec<Outcome>> {
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
                    let outcomes = core.apply_all(tx, &work)?;
                    // Every handler ran and the outbox rows are written; nothing is committed.
                    failpoints
                        .hit("consumer.before_commit")
                        .map_err(choreo_store::Error::from)?;
                    Ok(outcomes)
                })
                .await;
            self.metrics.transaction_took(started.elapsed());
            let reason = match applied {
                Ok(outcomes) => return Some(outcomes),
                // Only a message alone fails like this (a batch re-runs without its failures), or
                // a commit that failed: nothing was kept, so each is retried or dead-lettered.
                Err(HandlerError::Permanent(reason)) => {
                    return Some(vec![Outcome::DeadLettered(reason); count]);
                }
                Err(HandlerError::Transient(reason)) => {
                    return Some(vec![Outcome::Retried(reason); count]);
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
}

/// The span of one handled message.
fn message_span(envelope: &Envelope) -> tracing::Span {
    tracing::info_span!(
        "message",
        event_id = %envelope.id,
        event_type = %envelope.event_type,
        order_id = envelope.order_id_hint().unwrap_or_default(),
        correlation_id = %envelope.correlationid,
        // Recorded once the message's trace unit exists (`Unit::record_ids`).
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    )
}

/// A short random tag suffix so two replicas' consumer tags differ.
fn uuid_like() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}
