//! The consumer loop: messages in order, a message's effect committed with its inbox row and its
//! events. Deliveries the broker has already pushed are handled together in one transaction and
//! acked with one `multiple` ack; if any of them is not a plain success, that transaction is
//! rolled back and each is handled on its own, as described below.
//!
//! For each delivery: decode the envelope (undecodable: dead-letter), record its id in the inbox
//! (already there: ack without effect), run the service's [`Handler`], write the events it returns
//! to the outbox, commit, and only then ack. A [`HandlerError::Permanent`] dead-letters at once; a
//! [`HandlerError::Transient`] goes to a delay queue and comes back, until the configured attempts
//! run out and it is dead-lettered with the last error. A [`HandlerError::Unavailable`] (the
//! database is unreachable) keeps the delivery and tries it again with backoff, spending none of
//! its retries. Nothing is ever requeued in a hot loop.

use crate::dead_letter::{
    self, X_DEAD_LETTERED_AT, X_ERROR, X_LAST_ERROR, X_ORIGINAL_EXCHANGE, X_ORIGINAL_ROUTING_KEY,
    X_RETRY_COUNT,
};
use crate::publisher::Outgoing;
use crate::topology::retry_queue_name;
use crate::{BrokerHealth, Error, Names, Outbox, OutboxWaker, Publisher, Result, inbox};
use choreo_events::topology::ServiceTopology;
use choreo_events::{DecodeError, Envelope};
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use sqlx::{AnyConnection, AnyPool};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a handler could not handle an event; each variant names what the consumer does with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be handled as it is (undecodable, invalid, unknown type, unsupported
    /// schema version, contradicts what the service knows): dead-letter it at once.
    #[error("{0}")]
    Permanent(String),
    /// Handling may succeed later (database busy or down, a dependency away): retry it through the
    /// delay queues, then dead-letter it once the attempts are used up.
    #[error("{0}")]
    Transient(String),
    /// What the whole service needs is unreachable (the database is down): no message can be
    /// handled now, so the consumer keeps this delivery, waits with backoff and tries it again,
    /// without spending its retries (which would dead-letter healthy messages during an outage).
    #[error("{0}")]
    Unavailable(String),
}

impl From<DecodeError> for HandlerError {
    fn from(error: DecodeError) -> Self {
        HandlerError::Permanent(error.to_string())
    }
}

impl From<sqlx::Error> for HandlerError {
    /// A database that cannot be reached is [`HandlerError::Unavailable`]; an error the database
    /// returned (a constraint, a lock timeout, a lost serialization race) is
    /// [`HandlerError::Transient`].
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                HandlerError::Unavailable(format!("database unreachable: {error}"))
            }
            other => HandlerError::Transient(format!("database: {other}")),
        }
    }
}

/// What a service does with the events it consumes.
pub trait Handler: Send + Sync + 'static {
    /// Applies `envelope` inside the open transaction `conn` and returns the events to emit, which
    /// the runtime writes to the outbox in the same transaction. Must do no other I/O that cannot
    /// be rolled back.
    fn handle(
        &self,
        envelope: &Envelope,
        conn: &mut AnyConnection,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandlerError>> + Send;
}

/// What became of one delivery.
#[derive(Debug)]
enum Outcome {
    /// Committed; this many events were written to the outbox.
    Handled(usize),
    /// Already in the inbox: acked without effect.
    Duplicate,
    DeadLetter(String),
    Retry(String),
    /// The database is unreachable: try the same delivery again later.
    Unavailable(String),
}

/// The loop that consumes a service's queue.
#[derive(Debug)]
pub struct ConsumerLoop<H> {
    pub handler: Arc<H>,
    pub pool: AnyPool,
    pub names: Names,
    pub service: ServiceTopology,
    pub waker: OutboxWaker,
    pub retry_delays: Vec<Duration>,
    pub health: Arc<BrokerHealth>,
    pub failpoints: crate::failpoint::Failpoints,
    /// The most deliveries already received that are handled together in one transaction.
    pub max_batch: usize,
}

impl<H: Handler> ConsumerLoop<H> {
    /// Consumes until `stop` is cancelled (then cancels the consumer, having finished the message
    /// in hand) or the channel fails (then returns the error). Deliveries prefetched but not
    /// handled are requeued by the broker when the channel closes.
    pub async fn run(
        &self,
        channel: Channel,
        publisher: Publisher,
        stop: CancellationToken,
    ) -> Result<()> {
        let tag = format!("{}-{}", self.service.name, uuid_like());
        let mut deliveries = channel
            .basic_consume(
                self.names.of(self.service.name).as_str().into(),
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
            // Whatever else the broker has already pushed (up to the prefetch) joins it.
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
            if let Err(error) = self.process_batch(batch, &publisher, &stop).await {
                break Err(error);
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

    /// Handles deliveries received together. More than one: all in one transaction and one
    /// `multiple` ack, which saves a commit and an ack per message; if any of them is not a plain
    /// success (undecodable, failing, database trouble), the transaction is rolled back and each
    /// is handled on its own, so every outcome is exactly what it would be alone.
    async fn process_batch(
        &self,
        batch: Vec<Delivery>,
        publisher: &Publisher,
        stop: &CancellationToken,
    ) -> Result<()> {
        if batch.len() > 1 {
            let envelopes: Option<Vec<Envelope>> = batch
                .iter()
                .map(|d| Envelope::decode(&d.data).ok())
                .collect();
            if let Some(envelopes) = envelopes
                && let Some(emitted) = self.apply_together(&envelopes).await
            {
                let _ = self.failpoints.hit("consumer.after_commit");
                if emitted > 0 {
                    self.waker.wake();
                }
                let last = batch.last().expect("a batch is never empty");
                // A `multiple` ack covers every unacked delivery up to this one: safe, since every
                // delivery before this batch was acked or dead-lettered (or the loop has ended).
                let multiple = BasicAckOptions { multiple: true };
                return if last.acker.ack(multiple).await? {
                    Ok(())
                } else {
                    Err(Error::ChannelGone)
                };
            }
        }
        for delivery in batch {
            self.process(delivery, publisher, stop).await?;
        }
        Ok(())
    }

    /// Inbox, handler and outbox for every envelope in one transaction; `None` (and nothing
    /// committed) unless every one of them succeeded or was a duplicate.
    async fn apply_together(&self, envelopes: &[Envelope]) -> Option<usize> {
        let mut tx = self.pool.begin().await.ok()?;
        let mut emitted = 0;
        for envelope in envelopes {
            let span = message_span(envelope);
            let handled = async {
                if !inbox::record(&mut tx, &envelope.id, &envelope.event_type).await? {
                    tracing::info!("duplicate delivery acked without effect");
                    return Ok(0);
                }
                self.failpoints
                    .hit("consumer.before_handle")
                    .map_err(HandlerError::Transient)?;
                let events = self.handler.handle(envelope, &mut tx).await?;
                for event in &events {
                    Outbox::enqueue(&mut tx, event).await?;
                }
                Ok::<_, HandlerError>(events.len())
            }
            .instrument(span)
            .await;
            emitted += handled.ok()?;
        }
        tx.commit().await.ok()?;
        Some(emitted)
    }

    async fn process(
        &self,
        delivery: Delivery,
        publisher: &Publisher,
        stop: &CancellationToken,
    ) -> Result<()> {
        let envelope = match Envelope::decode(&delivery.data) {
            Ok(envelope) => envelope,
            Err(error) => {
                let span = tracing::info_span!("message", routing_key = %delivery.routing_key);
                return self
                    .dead_letter(&delivery, publisher, &error.to_string())
                    .instrument(span)
                    .await;
            }
        };
        let span = message_span(&envelope);
        async {
            let mut outcome = self.apply(&envelope).await;
            let mut waits: u32 = 0;
            while let Outcome::Unavailable(reason) = &outcome {
                // Keep the delivery and wait in place: nothing can be handled until the database
                // is back, and handing the message back would count against its delivery limit.
                if waits.is_multiple_of(20) {
                    tracing::warn!(
                        reason,
                        "database unreachable; holding the message until it is back"
                    );
                }
                let pause = crate::broker::backoff(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    waits,
                );
                waits = waits.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    // Stopping: leave it unacked; the broker requeues it when the channel closes.
                    () = stop.cancelled() => return Ok(()),
                }
                outcome = self.apply(&envelope).await;
            }
            match outcome {
                Outcome::Unavailable(_) => Ok(()),
                Outcome::Handled(emitted) => {
                    let _ = self.failpoints.hit("consumer.after_commit");
                    if emitted > 0 {
                        self.waker.wake();
                    }
                    tracing::debug!(emitted, "handled");
                    ack(&delivery).await
                }
                Outcome::Duplicate => {
                    tracing::info!("duplicate delivery acked without effect");
                    ack(&delivery).await
                }
                Outcome::DeadLetter(reason) => {
                    self.dead_letter(&delivery, publisher, &reason).await
                }
                Outcome::Retry(reason) => self.retry(&delivery, publisher, &reason).await,
            }
        }
        .instrument(span)
        .await
    }

    /// Inbox, handler and outbox in one transaction.
    async fn apply(&self, envelope: &Envelope) -> Outcome {
        let attempt = async {
            // Without a connection nothing can be handled, whatever the error says.
            let mut tx = self.pool.begin().await.map_err(|error| {
                HandlerError::Unavailable(format!("no database connection: {error}"))
            })?;
            if !inbox::record(&mut tx, &envelope.id, &envelope.event_type).await? {
                return Ok(Outcome::Duplicate);
            }
            self.failpoints
                .hit("consumer.before_handle")
                .map_err(HandlerError::Transient)?;
            let emitted = self.handler.handle(envelope, &mut tx).await?;
            for event in &emitted {
                Outbox::enqueue(&mut tx, event).await?;
            }
            tx.commit().await?;
            Ok::<_, HandlerError>(Outcome::Handled(emitted.len()))
        };
        match attempt.await {
            Ok(outcome) => outcome,
            Err(HandlerError::Permanent(reason)) => Outcome::DeadLetter(reason),
            Err(HandlerError::Transient(reason)) => Outcome::Retry(reason),
            Err(HandlerError::Unavailable(reason)) => Outcome::Unavailable(reason),
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(reason, "dead-lettering message");
        let properties = dead_letter::with_headers(
            &delivery.properties,
            &[
                (X_ERROR, dead_letter::text(reason)),
                (
                    X_ORIGINAL_EXCHANGE,
                    dead_letter::text(original(delivery, X_ORIGINAL_EXCHANGE, &delivery.exchange)),
                ),
                (
                    X_ORIGINAL_ROUTING_KEY,
                    dead_letter::text(original(
                        delivery,
                        X_ORIGINAL_ROUTING_KEY,
                        &delivery.routing_key,
                    )),
                ),
                (
                    X_DEAD_LETTERED_AT,
                    dead_letter::text(crate::outbox::now_text()),
                ),
            ],
        );
        publisher
            .publish(Outgoing {
                exchange: self.names.of(&self.service.dead_letter_exchange()),
                routing_key: original(delivery, X_ORIGINAL_ROUTING_KEY, &delivery.routing_key),
                body: delivery.data.clone(),
                properties,
            })
            .await?;
        ack(delivery).await
    }

    async fn retry(&self, delivery: &Delivery, publisher: &Publisher, reason: &str) -> Result<()> {
        let attempts = dead_letter::header_count(&delivery.properties, X_RETRY_COUNT);
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
        let properties = dead_letter::with_headers(
            &delivery.properties,
            &[
                (
                    X_RETRY_COUNT,
                    AMQPValue::LongLongInt(i64::from(attempts + 1)),
                ),
                (X_LAST_ERROR, dead_letter::text(reason)),
                (
                    X_ORIGINAL_EXCHANGE,
                    dead_letter::text(original(delivery, X_ORIGINAL_EXCHANGE, &delivery.exchange)),
                ),
                (
                    X_ORIGINAL_ROUTING_KEY,
                    dead_letter::text(original(
                        delivery,
                        X_ORIGINAL_ROUTING_KEY,
                        &delivery.routing_key,
                    )),
                ),
            ],
        );
        publisher
            .publish(Outgoing {
                exchange: String::new(),
                routing_key: self.names.of(&retry_queue_name(self.service.name, *delay)),
                body: delivery.data.clone(),
                properties,
            })
            .await?;
        ack(delivery).await
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

/// Acks `delivery`. lapin answers `Ok(false)` when the channel is already gone and nothing was
/// sent: that is an error here, since the broker will redeliver the message.
async fn ack(delivery: &Delivery) -> Result<()> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        Err(Error::ChannelGone)
    }
}

/// Where the message was first published: a message back from a delay queue arrives through the
/// default exchange, so the first exchange and key are kept in headers.
fn original(delivery: &Delivery, header: &str, current: &lapin::types::ShortString) -> String {
    dead_letter::header_text(&delivery.properties, header)
        .unwrap_or_else(|| current.as_str().to_owned())
}

/// A short random tag suffix so two replicas' consumer tags differ.
fn uuid_like() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}
