//! Retention: rows that only guard against duplicates are deleted once they are older than the
//! retention (`CHOREO_RETENTION_HOURS`, a week by default), so the inbox, the sent outbox rows
//! and a service's own such tables (orders' idempotency keys, the observer's sagas quiet for that long) do
//! not grow without bound.
//!
//! A sweep runs every `CHOREO_RETENTION_SWEEP_SECS` beside the consumer and the relay. It
//! deletes at most [`BATCH`] rows per unit of work and goes back to the async side between two,
//! so SQLite's one writer is never held for longer than one small delete: messages and requests
//! queued meanwhile run between the batches. Unsent outbox rows are never deleted, whatever
//! their age.
//!
//! The runtime names only its own tables; a service adds its own with [`Retention::also`] and a
//! [`Prune`] of its own SQL.

use choreo_store::{Backend, Database, Tx};
use chrono::{DateTime, Utc};
use metrics::{Counter, Key, KeyName, Label, Recorder};
use std::time::Duration;

/// `choreo_retention_pruned_total{table}`.
pub const PRUNED: &str = "choreo_retention_pruned_total";
/// `choreo_retention_sweeps_total`.
pub const SWEEPS: &str = "choreo_retention_sweeps_total";

/// The most rows one unit of work deletes.
pub const BATCH: i64 = 256;

/// Deletes at most `limit` rows stored before `cutoff` (a time as [`choreo_store::time_text`]
/// writes it), oldest first, and returns how many it deleted. One unit of work: it must be
/// cheap whatever the size of the table (read a bounded number of rows, by an index or the
/// insertion order).
pub type Prune = fn(tx: &mut dyn Tx, cutoff: &str, limit: i64) -> choreo_store::Result<u64>;

/// Rows of one kind that expire.
#[derive(Debug, Clone, Copy)]
pub struct Expiring {
    /// What they are: the `table` label of [`PRUNED`].
    pub name: &'static str,
    pub prune: Prune,
}

/// The runtime's own expiring rows.
const RUNTIME: [Expiring; 2] = [
    Expiring {
        name: "inbox",
        prune: prune_inbox,
    },
    Expiring {
        name: "outbox",
        prune: prune_sent_outbox,
    },
];

/// What is pruned, how old it may grow and how often it is looked at.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Rows older than this are deleted.
    pub keep: Duration,
    /// The pause between two sweeps.
    pub every: Duration,
    /// The most rows deleted per unit of work.
    pub batch: i64,
    expiring: Vec<Expiring>,
}

impl Retention {
    /// The runtime's inbox and sent outbox rows, kept for `keep`, swept `every` so often.
    pub fn new(keep: Duration, every: Duration) -> Self {
        Retention {
            keep,
            every,
            batch: BATCH,
            expiring: RUNTIME.to_vec(),
        }
    }

    /// Adds a service's own expiring rows.
    pub fn also(&mut self, expiring: Expiring) {
        self.expiring.push(expiring);
    }

    /// The names of what is pruned, in sweep order.
    pub fn names(&self) -> Vec<&'static str> {
        self.expiring.iter().map(|e| e.name).collect()
    }

    /// One sweep as of `now`: every kind of row, batch after batch until a batch deletes fewer
    /// than [`Retention::batch`]. Returns how many rows of each kind it deleted.
    pub async fn sweep(
        &self,
        db: &Database,
        now: DateTime<Utc>,
    ) -> choreo_store::Result<Vec<(&'static str, u64)>> {
        let keep = chrono::Duration::from_std(self.keep).unwrap_or(chrono::Duration::MAX);
        let cutoff = choreo_store::time_text(now.checked_sub_signed(keep).unwrap_or(now));
        let mut pruned = Vec::with_capacity(self.expiring.len());
        for expiring in &self.expiring {
            let mut total = 0;
            loop {
                let (prune, cutoff, limit) = (expiring.prune, cutoff.clone(), self.batch);
                let deleted = db.write(move |tx| prune(tx, &cutoff, limit)).await?;
                total += deleted;
                if deleted < u64::try_from(limit).unwrap_or(0) {
                    break;
                }
                // Whatever queued up behind this batch runs before the next one.
                tokio::task::yield_now().await;
            }
            pruned.push((expiring.name, total));
        }
        Ok(pruned)
    }

    /// Sweeps every [`Retention::every`], forever (spawn it; dropping it stops it). Its counts
    /// are registered on `recorder` now. A sweep the database refuses is logged and tried
    /// again at the next one.
    pub fn run(
        self,
        db: Database,
        recorder: &dyn Recorder,
    ) -> impl Future<Output = ()> + Send + 'static {
        let counters = Counters::register(recorder, &self.names());
        async move {
            let mut warned = false;
            loop {
                tokio::time::sleep(self.every).await;
                // The process's steady time (choreo_store::now): a wall clock that jumps prunes
                // nothing early. Said once when the two part by more than a minute.
                let drift = choreo_store::drift();
                if drift.num_seconds().abs() > 60 && !warned {
                    tracing::warn!(
                        drift_secs = drift.num_seconds(),
                        "the wall clock moved away from the time this process keeps; retention and timestamps go on by the process's own time until it restarts"
                    );
                }
                warned = drift.num_seconds().abs() > 60;
                match self.sweep(&db, choreo_store::now()).await {
                    Ok(pruned) => {
                        counters.sweeps.increment(1);
                        for ((name, count), counter) in pruned.iter().zip(&counters.pruned) {
                            counter.increment(*count);
                            if *count > 0 {
                                tracing::debug!(table = name, count, "pruned expired rows");
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "retention sweep failed; trying again later")
                    }
                }
            }
        }
    }
}

/// The retention's metrics.
struct Counters {
    sweeps: Counter,
    /// One per kind of row, in sweep order.
    pruned: Vec<Counter>,
}

impl Counters {
    fn register(recorder: &dyn Recorder, names: &[&'static str]) -> Self {
        recorder.describe_counter(
            KeyName::from_const_str(SWEEPS),
            None,
            "Retention sweeps completed (each deletes what is older than CHOREO_RETENTION_HOURS)."
                .into(),
        );
        recorder.describe_counter(
            KeyName::from_const_str(PRUNED),
            None,
            "Rows deleted by the retention sweeps, by table.".into(),
        );
        let metadata = &crate::metrics::METADATA;
        Counters {
            sweeps: recorder.register_counter(&Key::from_static_name(SWEEPS), metadata),
            pruned: names
                .iter()
                .map(|name| {
                    let labels = vec![Label::from_static_parts("table", name)];
                    recorder.register_counter(&Key::from_parts(PRUNED, labels), metadata)
                })
                .collect(),
        }
    }
}

/// The inbox's oldest rows received before `cutoff`. On SQLite the oldest are the first rows
/// by `rowid` (one writer: insertion order is time order), so a batch reads `limit` rows and no
/// more, with no index of its own; rows behind a younger one wait for the next sweep that finds
/// it expired. PostgreSQL has no such order and uses `inbox_received_at` (see
/// [`crate::schema`]).
fn prune_inbox(tx: &mut dyn Tx, cutoff: &str, limit: i64) -> choreo_store::Result<u64> {
    let sql = match tx.backend() {
        Backend::Sqlite => {
            "DELETE FROM inbox WHERE rowid IN (SELECT rowid FROM inbox ORDER BY rowid LIMIT $2)
             AND received_at < $1"
        }
        Backend::Postgres => {
            "DELETE FROM inbox WHERE event_id IN
             (SELECT event_id FROM inbox WHERE received_at < $1 ORDER BY received_at LIMIT $2)"
        }
    };
    tx.execute(sql, &[cutoff.into(), limit.into()])
}

/// The outbox's oldest sent rows, by `seq` (its key on both backends), that were sent before
/// `cutoff`. An unsent row has no `sent_at` and is never deleted; the batch reads past it (the
/// unsent rows are the newest, unless one is stuck), so it holds up nothing behind it.
fn prune_sent_outbox(tx: &mut dyn Tx, cutoff: &str, limit: i64) -> choreo_store::Result<u64> {
    tx.execute(
        "DELETE FROM outbox WHERE seq IN
         (SELECT seq FROM outbox WHERE sent_at IS NOT NULL ORDER BY seq LIMIT $2)
         AND sent_at < $1",
        &[cutoff.into(), limit.into()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::memory_database;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn days_ago(days: i64) -> String {
        choreo_store::time_text(Utc::now() - chrono::Duration::days(days))
    }

    async fn count(db: &Database, sql: &'static str) -> i64 {
        db.read(move |tx| tx.query_opt(sql, &[])?.unwrap_or_default().take::<i64>(0))
            .await
            .expect("counted")
    }

    /// `n` inbox rows received `days` ago, oldest first.
    async fn received(db: &Database, prefix: &str, n: usize, days: i64) {
        let (prefix, at) = (prefix.to_owned(), days_ago(days));
        db.write(move |tx| {
            for i in 0..n {
                tx.execute(
                    "INSERT INTO inbox (event_id, event_type, received_at) VALUES ($1, 'x', $2)",
                    &[format!("{prefix}-{i}").as_str().into(), at.as_str().into()],
                )?;
            }
            Ok::<_, choreo_store::Error>(())
        })
        .await
        .expect("inserted");
    }

    /// An outbox row created `days` ago and sent then (or never).
    async fn enqueued(db: &Database, id: &str, days: i64, sent: bool) {
        let (id, at) = (id.to_owned(), days_ago(days));
        db.write(move |tx| {
            tx.execute(
                "INSERT INTO outbox (event_id, event_type, correlation_id, time_ms, body, created_at, sent_at)
                 VALUES ($1, 'x', 'o', 0, '{}', $2, $3)",
                &[id.as_str().into(), at.as_str().into(), sent.then_some(at.as_str()).into()],
            )
        })
        .await
        .expect("inserted");
    }

    #[tokio::test]
    async fn inbox_rows_older_than_the_retention_are_pruned_in_batches_and_younger_ones_kept() {
        let db = memory_database().await;
        received(&db, "old", 25, 8).await;
        received(&db, "young", 3, 6).await;
        let mut retention = Retention::new(7 * DAY, DAY);
        retention.batch = 10;

        let pruned = retention.sweep(&db, Utc::now()).await.expect("swept");

        assert_eq!(pruned, vec![("inbox", 25), ("outbox", 0)]);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 3);
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM inbox WHERE event_id LIKE 'young-%'"
            )
            .await,
            3
        );
    }

    #[tokio::test]
    async fn sent_outbox_rows_older_than_the_retention_go_and_unsent_ones_stay_whatever_their_age()
    {
        let db = memory_database().await;
        enqueued(&db, "stuck", 30, false).await;
        for i in 0..5 {
            enqueued(&db, &format!("sent-{i}"), 10, true).await;
        }
        enqueued(&db, "unsent-old", 9, false).await;
        enqueued(&db, "sent-young", 1, true).await;
        let mut retention = Retention::new(7 * DAY, DAY);
        retention.batch = 2;

        let pruned = retention.sweep(&db, Utc::now()).await.expect("swept");

        assert_eq!(pruned, vec![("inbox", 0), ("outbox", 5)]);
        let left = db
            .read(|tx| {
                tx.query("SELECT event_id FROM outbox ORDER BY seq", &[])?
                    .into_iter()
                    .map(|mut row| row.take::<String>(0))
                    .collect::<choreo_store::Result<Vec<_>>>()
            })
            .await
            .expect("read");
        assert_eq!(left, ["stuck", "unsent-old", "sent-young"]);
    }

    #[tokio::test]
    async fn a_service_adds_its_own_rows_and_a_sweep_of_nothing_expired_deletes_nothing() {
        fn prune_things(tx: &mut dyn Tx, cutoff: &str, limit: i64) -> choreo_store::Result<u64> {
            tx.execute(
                "DELETE FROM inbox WHERE event_id IN
                 (SELECT event_id FROM inbox WHERE event_type = 'thing' AND received_at < $1 LIMIT $2)",
                &[cutoff.into(), limit.into()],
            )
        }
        let db = memory_database().await;
        received(&db, "young", 4, 1).await;
        let mut retention = Retention::new(7 * DAY, DAY);
        retention.also(Expiring {
            name: "things",
            prune: prune_things,
        });

        let pruned = retention.sweep(&db, Utc::now()).await.expect("swept");

        assert_eq!(pruned, vec![("inbox", 0), ("outbox", 0), ("things", 0)]);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 4);
    }
}
