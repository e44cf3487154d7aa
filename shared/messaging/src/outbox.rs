//! The transactional outbox: events are written to the `outbox` table in the same transaction as
//! the state change that caused them, and the relay publishes them afterwards with confirms.
//!
//! The relay is woken at once by [`OutboxWaker::wake`] after a commit, so the hot path has no
//! polling delay, and it also sweeps on a timer as a safety net (a wake lost to a crash, rows left
//! by a previous process). A row is marked sent only after the broker confirmed it; a crash between
//! the confirm and the mark publishes the row again on restart, which the consumers' inboxes absorb.

use crate::publisher::{Outgoing, PendingConfirm, event_properties};
use crate::{Backend, Publisher, Result};
use choreo_events::Envelope;
use sqlx::{AnyConnection, AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The current time as stored in the runtime's tables (RFC 3339, UTC, milliseconds).
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Wakes the relay after a commit that wrote outbox rows. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    /// Tells the relay there is something to publish. A wake with no relay waiting is kept, so a
    /// wake is never lost between two batches.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Writes events into the outbox.
#[derive(Debug, Clone, Copy)]
pub struct Outbox;

impl Outbox {
    /// Adds `envelope` to the outbox. Must run inside the transaction of the state change.
    pub async fn enqueue(conn: &mut AnyConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, correlation_id, time_ms, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&envelope.id)
        .bind(&envelope.event_type)
        .bind(&envelope.correlationid)
        .bind(envelope.time.timestamp_millis())
        .bind(envelope.to_json())
        .bind(now_text())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// How many rows have not been confirmed by the broker yet.
    pub async fn unsent(pool: &AnyPool) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?
            .try_get::<i64, _>("n")
    }
}

/// One outbox row on its way to the broker.
struct UnsentEvent {
    seq: i64,
    event_id: String,
    event_type: String,
    correlation_id: String,
    time_ms: i64,
    body: String,
}

/// Publishes the outbox to the service's exchange.
#[derive(Debug, Clone)]
pub struct Relay {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The prefixed exchange of the service.
    pub exchange: String,
    /// The service name, the `app_id` of every message.
    pub source: String,
    pub waker: OutboxWaker,
    pub batch_size: i64,
    pub sweep_interval: Duration,
    pub failpoints: crate::failpoint::Failpoints,
}

impl Relay {
    /// Publishes until `stop` is cancelled, then drains what is committed (bounded by `drain`).
    /// Returns an error when the broker fails; the supervisor reconnects and starts a new relay.
    pub async fn run(
        self,
        publisher: Publisher,
        stop: CancellationToken,
        drain: Duration,
    ) -> Result<()> {
        loop {
            let published = match self.publish_batch(&publisher).await {
                Ok(published) => published,
                // The database is the relay's problem, not the broker's: keep the session (and
                // the consumer's deliveries) and try again after a sweep interval.
                Err(crate::Error::Database(error)) => {
                    tracing::warn!(%error, "outbox relay cannot read its table; retrying");
                    0
                }
                Err(other) => return Err(other),
            };
            if published > 0 {
                continue;
            }
            tokio::select! {
                () = self.waker.woken() => {}
                () = tokio::time::sleep(self.sweep_interval) => {}
                () = stop.cancelled() => break,
            }
        }
        let drained = tokio::time::timeout(drain, async {
            while self.publish_batch(&publisher).await? > 0 {}
            Ok::<_, crate::Error>(())
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    ?drain,
                    "outbox not drained before the shutdown timeout; the rest is published on the next start"
                );
                Ok(())
            }
        }
    }

    /// Publishes one batch of unsent rows in order and marks the confirmed ones sent.
    /// Returns how many rows were published.
    pub async fn publish_batch(&self, publisher: &Publisher) -> Result<usize> {
        match self.backend {
            Backend::Sqlite => {
                // One writer at a time: read, publish without holding a transaction (which would
                // block every other writer for a broker round trip), then mark.
                let rows = self.fetch(&mut *self.pool.acquire().await?, "").await?;
                let (confirmed, failure) = self.publish(publisher, rows).await;
                mark_range_sent(&mut *self.pool.acquire().await?, &confirmed).await?;
                failure.map_or(Ok(confirmed.len()), Err)
            }
            Backend::Postgres => {
                // Replicas share the table: each claims its rows with a row lock held until they
                // are marked, and skips rows another replica holds.
                let mut tx = self.pool.begin().await?;
                let rows = self.fetch(&mut tx, " FOR UPDATE SKIP LOCKED").await?;
                let (confirmed, failure) = self.publish(publisher, rows).await;
                mark_sent(&mut tx, &confirmed).await?;
                tx.commit().await?;
                failure.map_or(Ok(confirmed.len()), Err)
            }
        }
    }

    async fn fetch(&self, conn: &mut AnyConnection, lock: &str) -> Result<Vec<UnsentEvent>> {
        let sql = format!(
            "SELECT seq, event_id, event_type, correlation_id, time_ms, body FROM outbox
             WHERE sent_at IS NULL ORDER BY seq LIMIT $1{lock}"
        );
        let rows = sqlx::query(&sql)
            .bind(self.batch_size)
            .fetch_all(conn)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UnsentEvent {
                    seq: row.try_get("seq")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    correlation_id: row.try_get("correlation_id")?,
                    time_ms: row.try_get("time_ms")?,
                    body: row.try_get("body")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Sends every row, then waits for the confirms in order. Returns the seqs confirmed before
    /// the first failure, and that failure: the caller marks the former and reports the latter.
    async fn publish(
        &self,
        publisher: &Publisher,
        rows: Vec<UnsentEvent>,
    ) -> (Vec<i64>, Option<crate::Error>) {
        let mut pending: Vec<(i64, PendingConfirm)> = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let message = Outgoing {
                exchange: self.exchange.clone(),
                routing_key: row.event_type.clone(),
                body: row.body.into_bytes(),
                properties: event_properties(
                    &row.event_id,
                    &row.event_type,
                    &self.source,
                    &row.correlation_id,
                    row.time_ms,
                    None,
                ),
            };
            match publisher.send(message).await {
                Ok(confirm) => pending.push((row.seq, confirm)),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        for (seq, confirm) in pending {
            if failure.is_some() {
                // Confirms after a failure are not awaited: those rows stay unsent and are
                // published again, which the consumers' inboxes absorb.
                break;
            }
            match confirm.confirmed().await {
                Ok(()) => {
                    let _ = self.failpoints.hit("relay.after_confirm");
                    confirmed.push(seq);
                }
                Err(error) => failure = Some(error),
            }
        }
        (confirmed, failure)
    }
}

/// SQLite only: marks the confirmed rows with one statement. `confirmed` is a prefix of the
/// unsent rows in `seq` order, and with one writer `seq` order is commit order, so every unsent
/// row between its first and last seq is one of them.
async fn mark_range_sent(conn: &mut AnyConnection, confirmed: &[i64]) -> Result<(), sqlx::Error> {
    let (Some(first), Some(last)) = (confirmed.first(), confirmed.last()) else {
        return Ok(());
    };
    sqlx::query("UPDATE outbox SET sent_at = $1 WHERE seq BETWEEN $2 AND $3 AND sent_at IS NULL")
        .bind(now_text())
        .bind(*first)
        .bind(*last)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks rows sent one by one: on PostgreSQL, sequence values can commit out of order, so a
/// range could cover a row committed after the batch was read.
async fn mark_sent(conn: &mut AnyConnection, seqs: &[i64]) -> Result<(), sqlx::Error> {
    let now = now_text();
    for seq in seqs {
        sqlx::query("UPDATE outbox SET sent_at = $1 WHERE seq = $2")
            .bind(&now)
            .bind(*seq)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
