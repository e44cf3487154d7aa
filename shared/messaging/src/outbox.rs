//! The transactional outbox: events are written to the `outbox` table in the same transaction as
//! the state change that caused them, and the relay publishes them afterwards with confirms.
//!
//! The relay is woken at once by [`OutboxWaker::wake`] after a commit, so the hot path has no
//! polling delay, and it also sweeps on a timer as a safety net (a wake lost to a crash, rows left
//! by a previous process). A row is marked sent only after the broker confirmed it; a crash between
//! the confirm and the mark publishes the row again on restart, which the consumers' inboxes absorb.

use crate::metrics::RuntimeMetrics;
use crate::publisher::{Outgoing, PendingConfirm, event_properties};
use crate::{Publisher, Result};
use choreo_events::Envelope;
use choreo_store::{Backend, Database, Param, Tx, placeholders, runs_of_powers_of_two, value_rows};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
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
        Self::enqueue_all(tx, std::slice::from_ref(envelope))
    }

    /// Adds `envelopes` to the outbox in order, with one statement per run of a power of two of
    /// them instead of one per event: rows take their `seq` in the order of the `VALUES` list.
    /// Must run inside the transaction of the state change.
    pub(crate) fn enqueue_all(tx: &mut dyn Tx, envelopes: &[Envelope]) -> choreo_store::Result<()> {
        let now = choreo_store::now_text();
        for run in runs_of_powers_of_two(envelopes) {
            let bodies: Vec<String> = run.iter().map(Envelope::to_json).collect();
            let sql = format!(
                "INSERT INTO outbox (event_id, event_type, correlation_id, time_ms, body, created_at)
                 VALUES {}",
                value_rows(run.len(), 6)
            );
            let params: Vec<Param<'_>> = run
                .iter()
                .zip(&bodies)
                .flat_map(|(envelope, body)| {
                    [
                        (&envelope.id).into(),
                        (&envelope.event_type).into(),
                        (&envelope.correlationid).into(),
                        envelope.time.timestamp_millis().into(),
                        body.as_str().into(),
                        now.as_str().into(),
                    ]
                })
                .collect();
            tx.execute(&sql, &params)?;
        }
        Ok(())
    }

    /// The rows the broker has not confirmed yet, read through the partial index on them: cheap
    /// however many sent rows the table keeps.
    pub fn backlog(tx: &mut dyn Tx) -> choreo_store::Result<Backlog> {
        let mut row = tx
            .query_opt(
                "SELECT COUNT(*), MIN(time_ms) FROM outbox WHERE sent_at IS NULL",
                &[],
            )?
            .unwrap_or_default();
        Ok(Backlog {
            rows: row.take::<Option<i64>>(0)?.unwrap_or_default(),
            oldest_ms: row.take::<Option<i64>>(1)?,
        })
    }

    /// How many rows have not been confirmed by the broker yet.
    pub async fn unsent(db: &Database) -> choreo_store::Result<i64> {
        db.read(|tx| Ok(Self::backlog(tx)?.rows)).await
    }
}

/// What the outbox holds that the broker has not confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// How many rows.
    pub rows: i64,
    /// The `time_ms` of the oldest (its event's time), if there is one.
    pub oldest_ms: Option<i64>,
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

const FETCH_AFTER: &str = "SELECT seq, event_id, event_type, correlation_id, time_ms, body
                           FROM outbox WHERE sent_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2";
const FETCH_SKIP_LOCKED: &str = "SELECT seq, event_id, event_type, correlation_id, time_ms, body
                                 FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1
                                 FOR UPDATE SKIP LOCKED";

/// Unsent rows in `seq` order, by one of the queries above.
fn fetch(
    tx: &mut dyn Tx,
    sql: &str,
    params: &[Param<'_>],
) -> choreo_store::Result<Vec<UnsentEvent>> {
    tx.query(sql, params)?
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

/// SQLite only: marks a confirmed run `first..=last` with one statement. The run is of unsent
/// rows in `seq` order (the relay sends every unsent row after the last one it sent, and confirms
/// come back in order), and with one writer `seq` order is commit order, so every unsent row
/// between `first` and `last` was sent and confirmed.
fn mark_range_sent(tx: &mut dyn Tx, first: i64, last: i64) -> choreo_store::Result<()> {
    tx.execute(
        "UPDATE outbox SET sent_at = $1 WHERE seq BETWEEN $2 AND $3 AND sent_at IS NULL",
        &[
            choreo_store::now_text().as_str().into(),
            first.into(),
            last.into(),
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

/// How many published events may wait for their confirms at once (SQLite's pipelined relay).
const CONFIRM_WINDOW: usize = 1024;

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
    pub(crate) metrics: Arc<RuntimeMetrics>,
}

/// A sent row awaiting its confirm: its `seq`, its `type` label
/// ([`RuntimeMetrics::published_type`]) and the confirm.
type Sent = (i64, usize, PendingConfirm);

impl Relay {
    /// Publishes until `stop` is cancelled, then drains what is committed (bounded by `drain`).
    /// Returns an error when the broker fails; the supervisor reconnects and starts a new relay,
    /// which publishes again whatever was not marked sent.
    pub(crate) async fn run(
        self,
        publisher: Publisher,
        stop: CancellationToken,
        drain: Duration,
    ) -> Result<()> {
        match self.db.backend() {
            Backend::Sqlite => self.run_pipelined(publisher, stop, drain).await,
            Backend::Postgres => self.run_claiming(publisher, stop, drain).await,
        }
    }

    /// SQLite: one process owns the table, so the relay need not wait for a batch's confirms
    /// before it publishes the next one. It remembers the last `seq` it sent in this session and
    /// sends newer rows as they commit; a second task waits for the confirms in order and marks
    /// each confirmed run of rows in one statement. Waiting for confirms (a quorum queue's
    /// replication and fsync) is then off the path of the next event.
    async fn run_pipelined(
        self,
        publisher: Publisher,
        stop: CancellationToken,
        drain: Duration,
    ) -> Result<()> {
        let (window, confirms) = mpsc::channel(CONFIRM_WINDOW);
        let mut marker = AbortOnDrop(tokio::spawn(mark_confirmed(
            self.db.clone(),
            confirms,
            self.failpoints.clone(),
            self.metrics.clone(),
        )));
        let publishing = async {
            let sent_up_to = AtomicI64::new(0);
            self.until_stopped(&stop, || {
                self.publish_after(&publisher, &window, &sent_up_to)
            })
            .await?;
            // Stopping: what is committed goes out, within the shutdown timeout from now.
            let deadline = tokio::time::Instant::now() + drain;
            let drained = tokio::time::timeout_at(deadline, async {
                while self.publish_after(&publisher, &window, &sent_up_to).await? > 0 {}
                Ok::<_, crate::Error>(())
            })
            .await;
            drained.unwrap_or_else(|_| {
                warn_undrained(drain);
                Ok(())
            })?;
            Ok::<_, crate::Error>(deadline)
        };
        let deadline = tokio::select! {
            published = publishing => published?,
            // The marker ends early only on a failed confirm.
            marked = &mut marker.0 => return marked.unwrap_or(Err(crate::Error::ChannelGone)),
        };
        // Every send is in the window; closing it lets the marker finish the rest and end.
        drop(window);
        match tokio::time::timeout_at(deadline, &mut marker.0).await {
            Ok(marked) => marked.unwrap_or(Err(crate::Error::ChannelGone)),
            Err(_) => {
                warn_undrained(drain);
                Ok(())
            }
        }
    }

    /// Sends the committed rows after `sent_up_to`, in `seq` order, into the confirm window.
    async fn publish_after(
        &self,
        publisher: &Publisher,
        window: &mpsc::Sender<Sent>,
        sent_up_to: &AtomicI64,
    ) -> Result<usize> {
        let (after, limit) = (sent_up_to.load(Ordering::Relaxed), self.batch_size);
        let rows = self
            .db
            .read(move |tx| fetch(tx, FETCH_AFTER, &[after.into(), limit.into()]))
            .await?;
        let count = rows.len();
        for row in rows {
            let (seq, kind) = (row.seq, self.metrics.published_type(&row.event_type));
            let confirm = publisher.send(self.message(row)).await?;
            self.metrics.published(kind);
            sent_up_to.store(seq, Ordering::Relaxed);
            window
                .send((seq, kind, confirm))
                .await
                .map_err(|_| crate::Error::ChannelGone)?;
        }
        Ok(count)
    }

    /// PostgreSQL: replicas share the table, so each batch is claimed with row locks
    /// (`FOR UPDATE SKIP LOCKED`) held until its confirms are in and the rows are marked.
    async fn run_claiming(
        self,
        publisher: Publisher,
        stop: CancellationToken,
        drain: Duration,
    ) -> Result<()> {
        self.until_stopped(&stop, || self.publish_claimed(&publisher))
            .await?;
        let drained = tokio::time::timeout(drain, async {
            while self.publish_claimed(&publisher).await? > 0 {}
            Ok::<_, crate::Error>(())
        })
        .await;
        drained.unwrap_or_else(|_| {
            warn_undrained(drain);
            Ok(())
        })
    }

    /// Runs `publish` whenever a commit wakes the relay or the sweep interval passes, and again
    /// at once while it finds rows, until `stop`. A database error is the relay's problem, not
    /// the broker's: it keeps the session (and the consumer's deliveries) and tries again later.
    async fn until_stopped<'a, F, Fut>(
        &'a self,
        stop: &CancellationToken,
        mut publish: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut + 'a,
        Fut: std::future::Future<Output = Result<usize>> + 'a,
    {
        loop {
            let published = match publish().await {
                Ok(published) => published,
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
                () = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Claims one batch of unsent rows, publishes it in order and marks the confirmed ones
    /// sent. Returns how many rows were published.
    async fn publish_claimed(&self, publisher: &Publisher) -> Result<usize> {
        let limit = self.batch_size;
        let mut held = self.db.hold().await?;
        let rows = held
            .run(move |tx| fetch(tx, FETCH_SKIP_LOCKED, &[limit.into()]))
            .await?;
        let (confirmed, failure) = self.publish(publisher, rows).await;
        let count = confirmed.len();
        if count > 0 {
            held.run(move |tx| mark_listed_sent(tx, &confirmed)).await?;
        }
        held.commit().await?;
        failure.map_or(Ok(count), Err)
    }

    /// The message of an outbox row.
    fn message(&self, row: UnsentEvent) -> Outgoing {
        let properties = event_properties(
            &row.event_id,
            &row.event_type,
            &self.source,
            &row.correlation_id,
            row.time_ms,
            None,
        );
        Outgoing {
            exchange: self.exchange.clone(),
            routing_key: row.event_type,
            body: row.body.into_bytes(),
            properties,
        }
    }

    /// Sends every row, then waits for the confirms in order. Returns the seqs confirmed before
    /// the first failure, and that failure: the caller marks the former and reports the latter.
    async fn publish(
        &self,
        publisher: &Publisher,
        rows: Vec<UnsentEvent>,
    ) -> (Vec<i64>, Option<crate::Error>) {
        let mut pending: Vec<Sent> = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let (seq, kind) = (row.seq, self.metrics.published_type(&row.event_type));
            match publisher.send(self.message(row)).await {
                Ok(confirm) => {
                    self.metrics.published(kind);
                    pending.push((seq, kind, confirm));
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        for (seq, kind, confirm) in pending {
            if failure.is_some() {
                // Confirms after a failure are not awaited: those rows stay unsent and are
                // published again, which the consumers' inboxes absorb.
                break;
            }
            match confirm.confirmed().await {
                Ok(()) => {
                    self.metrics.confirmed(kind);
                    let _ = self.failpoints.hit("relay.after_confirm");
                    confirmed.push(seq);
                }
                Err(error) => failure = Some(error),
            }
        }
        (confirmed, failure)
    }
}

/// The marking half of the pipelined relay: waits for each confirm in send order and marks
/// every confirmed run in one statement. Ends when the window closes (every confirm handled) or
/// at the first failed confirm, having marked what was confirmed before it. A database that
/// cannot take the mark is waited for with backoff, not reported: ending the broker session for
/// it would hand the consumer's messages back and count against their delivery limit.
async fn mark_confirmed(
    db: Database,
    mut confirms: mpsc::Receiver<Sent>,
    failpoints: crate::failpoint::Failpoints,
    metrics: Arc<RuntimeMetrics>,
) -> Result<()> {
    while let Some(first) = confirms.recv().await {
        // The confirmed run so far, as (first seq, last seq).
        let mut run: Option<(i64, i64)> = None;
        let mut failure = None;
        let mut next = Some(first);
        while let Some((seq, kind, confirm)) = next.take() {
            if let Err(error) = confirm.confirmed().await {
                failure = Some(error);
                break;
            }
            metrics.confirmed(kind);
            let _ = failpoints.hit("relay.after_confirm");
            run = Some((run.map_or(seq, |(first, _)| first), seq));
            // Whatever was sent meanwhile joins this mark; its confirms are most likely in.
            next = confirms.try_recv().ok();
        }
        if let Some((first, last)) = run {
            mark_until_done(&db, first, last).await;
        }
        if let Some(error) = failure {
            return Err(error);
        }
    }
    Ok(())
}

/// Marks the run `first..=last` sent, trying again with backoff while the database refuses.
async fn mark_until_done(db: &Database, first: i64, last: i64) {
    let mut failures: u32 = 0;
    loop {
        match db.write(move |tx| mark_range_sent(tx, first, last)).await {
            Ok(()) => return,
            Err(error) => {
                if failures.is_multiple_of(20) {
                    tracing::warn!(%error, "cannot mark confirmed outbox rows sent; retrying");
                }
                let pause = crate::backoff::backoff(
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    failures,
                );
                failures = failures.saturating_add(1);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

fn warn_undrained(drain: Duration) {
    tracing::warn!(
        ?drain,
        "outbox not drained before the shutdown timeout; the rest is published on the next start"
    );
}

/// Aborts a task when dropped, so a relay that ends takes its marker with it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
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

    #[test]
    fn a_wake_before_the_relay_waits_is_kept_once_and_without_one_the_relay_waits() {
        use futures_util::FutureExt;
        let waker = OutboxWaker::default();
        assert!(
            waker.woken().now_or_never().is_none(),
            "nothing committed: the relay waits"
        );
        waker.wake();
        waker.wake();
        assert!(
            waker.woken().now_or_never().is_some(),
            "a commit's wake is kept until the relay waits"
        );
        assert!(
            waker.woken().now_or_never().is_none(),
            "two wakes before one wait wake it once"
        );
    }

    /// After a read that published, the relay reads again at once; after one that found
    /// nothing, it waits for a wake (or its sweep, an hour away here) instead of reading again.
    #[tokio::test]
    async fn the_relay_reads_again_at_once_only_after_it_published_and_otherwise_waits_for_a_wake()
    {
        use std::sync::atomic::AtomicUsize;
        let relay = Relay {
            db: memory_database().await,
            exchange: "orders.events".to_owned(),
            source: "orders".to_owned(),
            waker: OutboxWaker::default(),
            batch_size: 10,
            sweep_interval: Duration::from_secs(3600),
            failpoints: crate::failpoint::Failpoints::default(),
            metrics: Arc::new(RuntimeMetrics::detached(&choreo_events::topology::ORDERS)),
        };
        let reads = AtomicUsize::new(0);
        let stop = CancellationToken::new();
        // The first read publishes two rows, every later one finds nothing.
        let running = relay.until_stopped(&stop, || {
            let n = reads.fetch_add(1, Ordering::SeqCst);
            async move { Ok(if n == 0 { 2 } else { 0 }) }
        });
        tokio::pin!(running);
        let waiting = tokio::time::timeout(Duration::from_millis(50), &mut running).await;
        assert!(waiting.is_err(), "an idle relay waits");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "read again at once after publishing, then wait"
        );

        relay.waker.wake();
        let waiting = tokio::time::timeout(Duration::from_millis(50), &mut running).await;
        assert!(waiting.is_err());
        assert_eq!(reads.load(Ordering::SeqCst), 3, "one read per wake");

        stop.cancel();
        assert!(running.await.is_ok(), "a stop ends it");
    }

    #[tokio::test]
    async fn the_relay_reads_unsent_rows_in_order_and_marks_a_confirmed_prefix_in_one_statement() {
        let db = memory_database().await;
        let events: Vec<Envelope> = (0..5).map(|i| completed(&format!("o-{i}"))).collect();
        let written = events.clone();
        db.write(move |tx| written.iter().try_for_each(|e| Outbox::enqueue(tx, e)))
            .await
            .expect("enqueued");

        let rows = db
            .read(|tx| fetch(tx, FETCH_AFTER, &[0.into(), 3.into()]))
            .await
            .expect("fetched");
        let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, [&events[0].id, &events[1].id, &events[2].id]);
        assert_eq!(rows[0].body, events[0].to_json());
        assert_eq!(rows[0].event_type, "order.completed");

        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        db.write(move |tx| mark_range_sent(tx, seqs[0], seqs[1]))
            .await
            .expect("marked");
        assert_eq!(Outbox::unsent(&db).await, Ok(3));

        let after = rows[2].seq;
        let later = db
            .read(move |tx| fetch(tx, FETCH_AFTER, &[after.into(), 10.into()]))
            .await
            .expect("fetched");
        assert_eq!(later.len(), 2, "only what comes after the last sent");
        let last = db
            .read(|tx| fetch(tx, FETCH_AFTER, &[0.into(), 10.into()]))
            .await
            .expect("fetched");
        let seqs: Vec<i64> = last.iter().map(|r| r.seq).collect();
        db.write(move |tx| mark_listed_sent(tx, &seqs))
            .await
            .expect("marked");
        assert_eq!(Outbox::unsent(&db).await, Ok(0));
    }
}
