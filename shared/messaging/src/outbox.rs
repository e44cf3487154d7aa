//! The transactional outbox: events are written to the `outbox` table in the same transaction as
//! the state change that caused them, and the relay publishes them afterwards with confirms.
//!
//! The relay is woken at once by [`OutboxWaker::wake`] after a commit, so the hot path has no
//! polling delay, and it also sweeps on a timer as a safety net (a wake lost to a crash, rows left
//! by a previous process). A row is marked sent only after the broker confirmed it; a crash between
//! the confirm and the mark publishes the row again on restart, which the consumers' inboxes absorb.

use crate::publisher::{Outgoing, PendingConfirm, event_properties};
use crate::{Publisher, Result};
use choreo_events::Envelope;
use choreo_store::{Backend, Database, Param, Tx, placeholders};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    pub fn enqueue(tx: &mut dyn Tx, envelope: &Envelope) -> choreo_store::Result<()> {
        tx.execute(
            "INSERT INTO outbox (event_id, event_type, correlation_id, time_ms, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                (&envelope.id).into(),
                (&envelope.event_type).into(),
                (&envelope.correlationid).into(),
                envelope.time.timestamp_millis().into(),
                envelope.to_json().as_str().into(),
                choreo_store::now_text().as_str().into(),
            ],
        )?;
        Ok(())
    }

    /// How many rows have not been confirmed by the broker yet.
    pub async fn unsent(db: &Database) -> choreo_store::Result<i64> {
        db.read(|tx| {
            tx.query_opt("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL", &[])?
                .unwrap_or_default()
                .take::<i64>(0)
        })
        .await
    }
}

/// One outbox row on its way to the broker.
#[derive(Debug)]
struct UnsentEvent {
    seq: i64,
    event_id: String,
    event_type: String,
    correlation_id: String,
    time_ms: i64,
    body: String,
}

const FETCH: &str = "SELECT seq, event_id, event_type, correlation_id, time_ms, body FROM outbox
                     WHERE sent_at IS NULL ORDER BY seq LIMIT $1";
const FETCH_SKIP_LOCKED: &str = "SELECT seq, event_id, event_type, correlation_id, time_ms, body
                                 FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1
                                 FOR UPDATE SKIP LOCKED";

/// The first `limit` unsent rows in `seq` order.
fn fetch(tx: &mut dyn Tx, sql: &str, limit: i64) -> choreo_store::Result<Vec<UnsentEvent>> {
    tx.query(sql, &[limit.into()])?
        .into_iter()
        .map(|mut row| {
            Ok(UnsentEvent {
                seq: row.take(0)?,
                event_id: row.take(1)?,
                event_type: row.take(2)?,
                correlation_id: row.take(3)?,
                time_ms: row.take(4)?,
                body: row.take(5)?,
            })
        })
        .collect()
}

/// SQLite only: marks the confirmed rows with one statement. `confirmed` is a prefix of the
/// unsent rows in `seq` order, and with one writer `seq` order is commit order, so every unsent
/// row between its first and last seq is one of them.
fn mark_range_sent(tx: &mut dyn Tx, confirmed: &[i64]) -> choreo_store::Result<()> {
    let (Some(first), Some(last)) = (confirmed.first(), confirmed.last()) else {
        return Ok(());
    };
    tx.execute(
        "UPDATE outbox SET sent_at = $1 WHERE seq BETWEEN $2 AND $3 AND sent_at IS NULL",
        &[
            choreo_store::now_text().as_str().into(),
            (*first).into(),
            (*last).into(),
        ],
    )?;
    Ok(())
}

/// Marks exactly the confirmed rows, in one statement: on PostgreSQL, sequence values can commit
/// out of order, so a range could cover a row committed after the batch was read.
fn mark_listed_sent(tx: &mut dyn Tx, confirmed: &[i64]) -> choreo_store::Result<()> {
    if confirmed.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE outbox SET sent_at = $1 WHERE seq IN ({})",
        placeholders(2, confirmed.len())
    );
    let now = choreo_store::now_text();
    let mut params: Vec<Param<'_>> = Vec::with_capacity(confirmed.len() + 1);
    params.push(now.as_str().into());
    params.extend(confirmed.iter().map(|seq| Param::from(*seq)));
    tx.execute(&sql, &params)?;
    Ok(())
}

/// Publishes the outbox to the service's exchange.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub(crate) db: Database,
    /// The prefixed exchange of the service.
    pub(crate) exchange: String,
    /// The service name, the `app_id` of every message.
    pub(crate) source: String,
    pub(crate) waker: OutboxWaker,
    pub(crate) batch_size: i64,
    pub(crate) sweep_interval: Duration,
    pub(crate) failpoints: crate::failpoint::Failpoints,
}

impl Relay {
    /// Publishes until `stop` is cancelled, then drains what is committed (bounded by `drain`).
    /// Returns an error when the broker fails; the supervisor reconnects and starts a new relay.
    pub(crate) async fn run(
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
    async fn publish_batch(&self, publisher: &Publisher) -> Result<usize> {
        let limit = self.batch_size;
        match self.db.backend() {
            Backend::Sqlite => {
                // One writer at a time: read beside it, publish without holding a transaction
                // (which would block every other writer for a broker round trip), then mark.
                let rows = self.db.read(move |tx| fetch(tx, FETCH, limit)).await?;
                let (confirmed, failure) = self.publish(publisher, rows).await;
                let count = confirmed.len();
                if count > 0 {
                    self.db
                        .write(move |tx| mark_range_sent(tx, &confirmed))
                        .await?;
                }
                failure.map_or(Ok(count), Err)
            }
            Backend::Postgres => {
                // Replicas share the table: each claims its rows with a row lock held until they
                // are marked, and skips rows another replica holds.
                let mut held = self.db.hold().await?;
                let rows = held
                    .run(move |tx| fetch(tx, FETCH_SKIP_LOCKED, limit))
                    .await?;
                let (confirmed, failure) = self.publish(publisher, rows).await;
                let count = confirmed.len();
                if count > 0 {
                    held.run(move |tx| mark_listed_sent(tx, &confirmed)).await?;
                }
                held.commit().await?;
                failure.map_or(Ok(count), Err)
            }
        }
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
            let properties = event_properties(
                &row.event_id,
                &row.event_type,
                &self.source,
                &row.correlation_id,
                row.time_ms,
                None,
            );
            let message = Outgoing {
                exchange: self.exchange.clone(),
                routing_key: row.event_type,
                body: row.body.into_bytes(),
                properties,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::memory_database;
    use choreo_events::Event;
    use choreo_events::payloads::OrderCompleted;

    fn completed(order: &str) -> Envelope {
        Envelope::root(
            "orders",
            &Event::OrderCompleted(OrderCompleted {
                order_id: order.to_owned(),
            }),
        )
    }

    #[tokio::test]
    async fn the_relay_reads_unsent_rows_in_order_and_marks_a_confirmed_prefix_in_one_statement() {
        let db = memory_database().await;
        let events: Vec<Envelope> = (0..5).map(|i| completed(&format!("o-{i}"))).collect();
        let written = events.clone();
        db.write(move |tx| written.iter().try_for_each(|e| Outbox::enqueue(tx, e)))
            .await
            .expect("enqueued");

        let rows = db.read(|tx| fetch(tx, FETCH, 3)).await.expect("fetched");
        let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, [&events[0].id, &events[1].id, &events[2].id]);
        assert_eq!(rows[0].body, events[0].to_json());
        assert_eq!(rows[0].event_type, "order.completed");

        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        db.write(move |tx| mark_range_sent(tx, &seqs[..2]))
            .await
            .expect("marked");
        assert_eq!(Outbox::unsent(&db).await, Ok(3));

        let last = db.read(|tx| fetch(tx, FETCH, 10)).await.expect("fetched");
        let seqs: Vec<i64> = last.iter().map(|r| r.seq).collect();
        db.write(move |tx| mark_listed_sent(tx, &seqs))
            .await
            .expect("marked");
        assert_eq!(Outbox::unsent(&db).await, Ok(0));
    }
}
