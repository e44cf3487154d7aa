//! The SQL of the observer. Each function runs on the transaction it is given.

use crate::saga::{
    self, Anomaly, AnomalyKind, Deadlines, Expectation, Observed, Report, SagaState,
};
use choreo_events::{Envelope, EventType};
use choreo_store::{Backend, Error, Result, Row, Tx};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

/// One event as the timeline shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ObservedEvent {
    /// The order in which the observer stored events (increasing).
    pub seq: i64,
    pub event_id: String,
    pub order_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The service that published it.
    pub source: String,
    pub causation_id: Option<String>,
    /// The event's `time` (RFC 3339, UTC).
    pub time: String,
    /// When the observer stored it.
    pub observed_at: String,
    /// The event's `data`.
    pub data: serde_json::Value,
}

/// One saga as the lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SagaSummary {
    pub order_id: String,
    pub state: SagaState,
    /// The furthest event type reached.
    pub current_step: String,
    pub started_at: String,
    pub last_event_at: String,
    /// The earliest deadline still ahead, if the saga waits for something.
    pub next_deadline: Option<String>,
    /// What the saga waits for, and by when.
    pub expected: Vec<Expectation>,
    pub anomalies: Vec<Anomaly>,
}

/// Stores `envelope` (already decoded, for `order_id`). `false` when this event id was stored
/// before, which the inbox makes impossible but costs nothing to allow.
pub fn insert_event(tx: &mut dyn Tx, envelope: &Envelope, order_id: &str) -> Result<bool> {
    let data = envelope.data.to_string();
    let inserted = tx.execute(
        "INSERT INTO observed_events (event_id, order_id, event_type, source, causation_id, occurred_at, observed_at, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (event_id) DO NOTHING",
        &[
            (&envelope.id).into(),
            order_id.into(),
            (&envelope.event_type).into(),
            (&envelope.source).into(),
            envelope.causationid.as_deref().into(),
            saga::timestamp(envelope.time).as_str().into(),
            choreo_store::now_text().as_str().into(),
            data.as_str().into(),
        ],
    )?;
    if inserted == 1 {
        apply(tx, &[(format!("event {}", envelope.event_type), 1)])?;
    }
    Ok(inserted == 1)
}

const EVENT_COLUMNS: &str =
    "seq, event_id, order_id, event_type, source, causation_id, occurred_at, observed_at, data";

fn event_from(mut row: Row) -> Result<ObservedEvent> {
    let data: String = row.take(8)?;
    Ok(ObservedEvent {
        seq: row.take(0)?,
        event_id: row.take(1)?,
        order_id: row.take(2)?,
        event_type: row.take(3)?,
        source: row.take(4)?,
        causation_id: row.take(5)?,
        time: row.take(6)?,
        observed_at: row.take(7)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
    })
}

/// The events of one order, in the order they were stored.
pub fn events_of(tx: &mut dyn Tx, order_id: &str) -> Result<Vec<ObservedEvent>> {
    tx.query(
        &format!("SELECT {EVENT_COLUMNS} FROM observed_events WHERE order_id = $1 ORDER BY seq"),
        &[order_id.into()],
    )?
    .into_iter()
    .map(event_from)
    .collect()
}

/// The events stored after `seq`, oldest first, at most `limit`.
pub fn events_after(tx: &mut dyn Tx, seq: i64, limit: i64) -> Result<Vec<ObservedEvent>> {
    tx.query(
        &format!(
            "SELECT {EVENT_COLUMNS} FROM observed_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ),
        &[seq.into(), limit.into()],
    )?
    .into_iter()
    .map(event_from)
    .collect()
}

/// The last stored event's `seq` (0 when none).
pub fn last_seq(tx: &mut dyn Tx) -> Result<i64> {
    let row = tx.query_opt("SELECT COALESCE(MAX(seq), 0) FROM observed_events", &[])?;
    row.map_or(Ok(0), |mut row| row.take(0))
}

/// The times of the events stored after `seq`, oldest first, at most `limit`, each with its
/// `seq`, its cause's time and its saga's start ([`crate::recent`]).
pub fn timings_after(
    tx: &mut dyn Tx,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, crate::recent::Timing)>> {
    tx.query(
        "SELECT e.seq, e.event_type, e.occurred_at, c.occurred_at, s.started_at
         FROM observed_events e
         LEFT JOIN observed_events c ON c.event_id = e.causation_id
         LEFT JOIN sagas s ON s.order_id = e.order_id
         WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
        &[seq.into(), limit.into()],
    )?
    .into_iter()
    .map(|mut row| {
        let time: String = row.take(2)?;
        let cause: Option<String> = row.take(3)?;
        let started: Option<String> = row.take(4)?;
        Ok((
            row.take(0)?,
            crate::recent::Timing {
                event_type: row.take(1)?,
                time: parse_time(&time)?,
                cause: cause.as_deref().map(parse_time).transpose()?,
                started: started.as_deref().map(parse_time).transpose()?,
            },
        ))
    })
    .collect()
}

/// The `seq` after which the events stored since `since` begin (the last stored event's when
/// none was): where [`crate::recent`] starts reading after the observer starts. It scans the
/// stored events once.
pub fn seq_before(tx: &mut dyn Tx, since: &str) -> Result<i64> {
    let row = tx.query_opt(
        "SELECT COALESCE(MIN(seq) - 1, (SELECT COALESCE(MAX(seq), 0) FROM observed_events))
         FROM observed_events WHERE observed_at >= $1",
        &[since.into()],
    )?;
    row.map_or(Ok(0), |mut row| row.take(0))
}

fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Failed(format!("stored time {text:?}: {e}")))
}

/// Judges the saga of `order_id` again from its stored events, at `now`, and stores the
/// judgement. Returns it (`None` when the order has no events).
pub fn judge(
    tx: &mut dyn Tx,
    order_id: &str,
    now: DateTime<Utc>,
    deadlines: &Deadlines,
) -> Result<Option<Report>> {
    let mut observed = Vec::new();
    for event in events_of(tx, order_id)? {
        // Only known types are stored: the consumer dead-letters the rest before the handler.
        let Some(event_type) = EventType::from_routing_key(&event.event_type) else {
            continue;
        };
        let occurred_at = parse_time(&event.time)?;
        observed.push(Observed {
            clocked_at: occurred_at.max(parse_time(&event.observed_at)?),
            occurred_at,
            event_id: event.event_id,
            event_type,
            source: event.source,
            causation_id: event.causation_id,
        });
    }
    if observed.is_empty() {
        return Ok(None);
    }
    let report = saga::analyze(&observed, now, deadlines);
    save(tx, order_id, &report)?;
    Ok(Some(report))
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and booleans: serializing has no failure mode.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

/// Stores `report` as the saga of `order_id`, marking it changed when it differs, and moves the
/// counts from what the saga was to what it is.
fn save(tx: &mut dyn Tx, order_id: &str, report: &Report) -> Result<()> {
    serialize_counts(tx)?;
    let before = tx
        .query_opt(
            "SELECT state, anomalies FROM sagas WHERE order_id = $1",
            &[order_id.into()],
        )?
        .map(tally_of)
        .transpose()?;
    let after = Tally {
        state: report.state.as_str().to_owned(),
        kinds: kinds_in(&report.anomalies),
    };
    let expected = to_json(&report.expected);
    let anomalies = to_json(&report.anomalies);
    let started_at = saga::timestamp(report.started_at);
    let last_event_at = saga::timestamp(report.last_event_at);
    let next_deadline = report.next_deadline.map(saga::timestamp);
    tx.execute(
        "INSERT INTO sagas (order_id, state, current_step, started_at, last_event_at, next_deadline, expected, anomalies, changed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT COALESCE(MAX(changed), 0) + 1 FROM sagas))
         ON CONFLICT (order_id) DO UPDATE SET
           state = excluded.state, current_step = excluded.current_step,
           started_at = excluded.started_at, last_event_at = excluded.last_event_at,
           next_deadline = excluded.next_deadline, expected = excluded.expected,
           anomalies = excluded.anomalies, changed = excluded.changed",
        &[
            order_id.into(),
            report.state.as_str().into(),
            report.current_step.routing_key().into(),
            started_at.as_str().into(),
            last_event_at.as_str().into(),
            next_deadline.as_deref().into(),
            expected.as_str().into(),
            anomalies.as_str().into(),
        ],
    )?;
    let mut changes = Vec::new();
    recount(&mut changes, before.as_ref(), Some(&after));
    apply(tx, &changes)
}

/// On PostgreSQL, makes the transactions that move a saga's counts take turns, from before they
/// read what the saga was until they commit: the handler's and the sweep's can judge one saga at
/// once, and under READ COMMITTED both would read its old state and move the counts twice (and
/// lock the counts' rows in different orders). A transaction-scoped advisory lock, taken by
/// `save` and the prune. An event's own count needs none: its upsert adds 1 atomically, and only
/// the handler, which has one consumer, runs it. SQLite has one writer, so nothing to do there.
fn serialize_counts(tx: &mut dyn Tx) -> Result<()> {
    /// The lock's key: "obs_cnts" in ASCII.
    const COUNTS_LOCK: i64 = 0x6f62_735f_636e_7473;
    if tx.backend() == Backend::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[COUNTS_LOCK.into()])?;
    }
    Ok(())
}

/// What one stored saga adds to the counts: its state, and each kind of anomaly it has (once,
/// however many of that kind).
struct Tally {
    state: String,
    kinds: Vec<AnomalyKind>,
}

fn kinds_in(anomalies: &[Anomaly]) -> Vec<AnomalyKind> {
    AnomalyKind::ALL
        .into_iter()
        .filter(|kind| anomalies.iter().any(|a| a.kind == *kind))
        .collect()
}

/// The tally of a stored saga, from its `state` and `anomalies` columns (in that order).
fn tally_of(mut row: Row) -> Result<Tally> {
    let state: String = row.take(0)?;
    let anomalies: String = row.take(1)?;
    let anomalies: Vec<Anomaly> = serde_json::from_str(&anomalies).unwrap_or_default();
    Ok(Tally {
        state,
        kinds: kinds_in(&anomalies),
    })
}

/// Adds to `changes` what moves the counts from a saga as it was (`None`: not stored yet) to
/// as it is (`None`: pruned).
fn recount(changes: &mut Vec<(String, i64)>, before: Option<&Tally>, after: Option<&Tally>) {
    let (was, is) = (
        before.map(|t| t.state.as_str()),
        after.map(|t| t.state.as_str()),
    );
    if was != is {
        if let Some(was) = was {
            changes.push((format!("state {was}"), -1));
        }
        if let Some(is) = is {
            changes.push((format!("state {is}"), 1));
        }
    }
    for kind in AnomalyKind::ALL {
        let has = |tally: Option<&Tally>| i64::from(tally.is_some_and(|t| t.kinds.contains(&kind)));
        let delta = has(after) - has(before);
        if delta != 0 {
            changes.push((format!("anomaly {}", kind.as_str()), delta));
        }
    }
}

/// Adds each change to its count in `observer_counts`, summed by name first (one statement per
/// count, however many sagas a prune removes).
fn apply(tx: &mut dyn Tx, changes: &[(String, i64)]) -> Result<()> {
    let mut summed = std::collections::BTreeMap::<&str, i64>::new();
    for (name, delta) in changes {
        *summed.entry(name.as_str()).or_default() += delta;
    }
    for (name, delta) in summed {
        if delta != 0 {
            tx.execute(
                "INSERT INTO observer_counts (name, n) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET n = observer_counts.n + excluded.n",
                &[name.into(), delta.into()],
            )?;
        }
    }
    Ok(())
}

/// The orders whose next deadline has passed at `now`: their sagas must be judged again.
pub fn due_for_judgement(tx: &mut dyn Tx, now: &str, limit: i64) -> Result<Vec<String>> {
    tx.query(
        "SELECT order_id FROM sagas WHERE next_deadline IS NOT NULL AND next_deadline <= $1
         ORDER BY next_deadline LIMIT $2",
        &[now.into(), limit.into()],
    )?
    .into_iter()
    .map(|mut row| row.take(0))
    .collect()
}

const SAGA_COLUMNS: &str = "order_id, state, current_step, started_at, last_event_at, next_deadline, expected, anomalies, changed";

fn saga_from(mut row: Row) -> Result<(i64, SagaSummary)> {
    let state: String = row.take(1)?;
    let expected: String = row.take(6)?;
    let anomalies: String = row.take(7)?;
    let summary = SagaSummary {
        order_id: row.take(0)?,
        state: SagaState::parse(&state)
            .ok_or_else(|| Error::Failed(format!("impossible saga state {state}")))?,
        current_step: row.take(2)?,
        started_at: row.take(3)?,
        last_event_at: row.take(4)?,
        next_deadline: row.take(5)?,
        expected: serde_json::from_str(&expected).unwrap_or_default(),
        anomalies: serde_json::from_str(&anomalies).unwrap_or_default(),
    };
    Ok((row.take(8)?, summary))
}

/// One saga.
pub fn saga(tx: &mut dyn Tx, order_id: &str) -> Result<Option<SagaSummary>> {
    tx.query_opt(
        &format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE order_id = $1"),
        &[order_id.into()],
    )?
    .map(|row| saga_from(row).map(|(_, summary)| summary))
    .transpose()
}

/// Sagas, newest first, in `state` if given, at most `limit`.
pub fn list(tx: &mut dyn Tx, state: Option<SagaState>, limit: i64) -> Result<Vec<SagaSummary>> {
    let rows = match state {
        Some(state) => tx.query(
            &format!(
                "SELECT {SAGA_COLUMNS} FROM sagas WHERE state = $1 ORDER BY started_at DESC, order_id LIMIT $2"
            ),
            &[state.as_str().into(), limit.into()],
        )?,
        None => tx.query(
            &format!(
                "SELECT {SAGA_COLUMNS} FROM sagas ORDER BY started_at DESC, order_id LIMIT $1"
            ),
            &[limit.into()],
        )?,
    };
    rows.into_iter()
        .map(|row| saga_from(row).map(|(_, summary)| summary))
        .collect()
}

/// The sagas changed after `changed`, oldest change first, at most `limit`, with the last
/// change's number.
pub fn changed_after(tx: &mut dyn Tx, changed: i64, limit: i64) -> Result<Vec<(i64, SagaSummary)>> {
    tx.query(
        &format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE changed > $1 ORDER BY changed LIMIT $2"),
        &[changed.into(), limit.into()],
    )?
    .into_iter()
    .map(saga_from)
    .collect()
}

/// The number of the last change (0 when none).
pub fn last_change(tx: &mut dyn Tx) -> Result<i64> {
    let row = tx.query_opt("SELECT COALESCE(MAX(changed), 0) FROM sagas", &[])?;
    row.map_or(Ok(0), |mut row| row.take(0))
}

/// Counts for the map and the metrics, as `observer_counts` keeps them: reading them costs the
/// same however many events the observer has stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events stored ever, by type (pruning does not lower them).
    pub events: Vec<(String, i64)>,
    /// Stored sagas by state.
    pub states: Vec<(String, i64)>,
    /// Stored sagas that have an anomaly of a kind, by kind.
    pub anomalies: Vec<(String, i64)>,
}

impl Counts {
    /// The count of `key` in `list` (0 when absent).
    pub fn of(list: &[(String, i64)], key: &str) -> i64 {
        list.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
    }
}

pub fn counts(tx: &mut dyn Tx) -> Result<Counts> {
    let mut counts = Counts::default();
    for mut row in tx.query("SELECT name, n FROM observer_counts ORDER BY name", &[])? {
        let name: String = row.take(0)?;
        let n: i64 = row.take(1)?;
        let Some((what, key)) = name.split_once(' ') else {
            continue;
        };
        let list = match what {
            "event" => &mut counts.events,
            "state" => &mut counts.states,
            "anomaly" => &mut counts.anomalies,
            _ => continue,
        };
        list.push((key.to_owned(), n));
    }
    Ok(counts)
}

/// Deletes at most `limit` sagas whose first and last events are both older than `cutoff`, and
/// were observed before it too (an event's own `time` is its sender's clock), with their events, oldest first by `sagas_state` (one index range per state). Finished or not: a
/// saga that heard nothing for the whole retention is abandoned (it has shown as stuck on the
/// page and in `choreo_observer_sagas` for that long), and an event replayed long after its
/// saga was pruned starts a saga that can never finish, which must not stay for good. Returns
/// how many sagas went.
pub fn prune_sagas(tx: &mut dyn Tx, cutoff: &str, limit: i64) -> Result<u64> {
    serialize_counts(tx)?;
    let mut quiet = Vec::new();
    let mut changes = Vec::new();
    for mut row in tx.query(
        "SELECT state, anomalies, order_id FROM sagas
         WHERE state IN ('cancelled', 'completed', 'failed', 'running', 'stuck')
         AND started_at < $1 AND last_event_at < $1
         AND NOT EXISTS (SELECT 1 FROM observed_events e
                         WHERE e.order_id = sagas.order_id AND e.observed_at >= $1)
         ORDER BY state, started_at LIMIT $2",
        &[cutoff.into(), limit.into()],
    )? {
        quiet.push(row.take::<String>(2)?);
        recount(&mut changes, Some(&tally_of(row)?), None);
    }
    if quiet.is_empty() {
        return Ok(0);
    }
    apply(tx, &changes)?;
    let ids: Vec<choreo_store::Param<'_>> = quiet.iter().map(|id| id.as_str().into()).collect();
    let list = choreo_store::placeholders(1, ids.len());
    tx.execute(
        &format!("DELETE FROM observed_events WHERE order_id IN ({list})"),
        &ids,
    )?;
    tx.execute(
        &format!("DELETE FROM sagas WHERE order_id IN ({list})"),
        &ids,
    )
}

/// The observer's own expiring rows, for [`choreo_messaging::Retention::also`].
pub const EXPIRING_SAGAS: choreo_messaging::Expiring = choreo_messaging::Expiring {
    name: "sagas",
    prune: prune_sagas,
};

#[cfg(test)]
mod tests {
    use choreo_store::{Database, Options};

    async fn database() -> Database {
        let options = Options {
            max_connections: 1,
            patience: std::time::Duration::ZERO,
            failpoints: Default::default(),
        };
        Database::open("sqlite::memory:", &options, &crate::MIGRATIONS, |_| {
            Vec::new()
        })
        .await
        .expect("an in-memory database")
    }

    /// A saga in `state` whose events are all from `at`, with one event.
    fn saga(
        tx: &mut dyn choreo_store::Tx,
        order: &str,
        state: &str,
        at: &str,
    ) -> choreo_store::Result<()> {
        tx.execute(
            "INSERT INTO sagas (order_id, state, current_step, started_at, last_event_at, expected, anomalies, changed)
             VALUES ($1, $2, 'order.placed', $3, $3, '[]', '[]', 1)",
            &[order.into(), state.into(), at.into()],
        )?;
        tx.execute(
            "INSERT INTO observed_events (event_id, order_id, event_type, source, occurred_at, observed_at, data)
             VALUES ($1, $2, 'order.placed', 'orders', $3, $3, '{}')",
            &[format!("e-{order}").as_str().into(), order.into(), at.into()],
        )?;
        Ok(())
    }

    #[tokio::test]
    async fn sagas_quiet_since_before_the_cutoff_go_with_their_events_finished_or_not() {
        let db = database().await;
        db.write(|tx| {
            saga(tx, "old-completed", "completed", "2026-01-01T00:00:00.000Z")?;
            saga(tx, "old-failed", "failed", "2026-01-02T00:00:00.000Z")?;
            saga(tx, "old-stuck", "stuck", "2026-01-01T00:00:00.000Z")?;
            saga(tx, "old-running", "running", "2026-01-03T00:00:00.000Z")?;
            saga(tx, "young-stuck", "stuck", "2026-03-01T00:00:00.000Z")?;
            // Sent with an old time, but seen after the cutoff: alive.
            saga(
                tx,
                "old-time-seen-late",
                "running",
                "2026-01-01T00:00:00.000Z",
            )?;
            tx.execute(
                "UPDATE observed_events SET observed_at = '2026-03-01T00:00:00.000Z'
                 WHERE order_id = 'old-time-seen-late'",
                &[],
            )?;
            saga(
                tx,
                "young-completed",
                "completed",
                "2026-03-01T00:00:00.000Z",
            )
        })
        .await
        .expect("written");

        let pruned = db
            .write(|tx| super::prune_sagas(tx, "2026-02-01T00:00:00.000Z", 10))
            .await
            .expect("pruned");

        let sagas = db
            .read(|tx| {
                tx.query("SELECT order_id FROM sagas ORDER BY order_id", &[])?
                    .into_iter()
                    .map(|mut r| r.take::<String>(0))
                    .collect::<choreo_store::Result<Vec<_>>>()
            })
            .await
            .expect("read");
        let events = db
            .read(|tx| {
                tx.query(
                    "SELECT order_id FROM observed_events ORDER BY order_id",
                    &[],
                )?
                .into_iter()
                .map(|mut r| r.take::<String>(0))
                .collect::<choreo_store::Result<Vec<_>>>()
            })
            .await
            .expect("read");
        assert_eq!(pruned, 4, "abandoned ones too: they would stay for good");
        assert_eq!(
            sagas,
            ["old-time-seen-late", "young-completed", "young-stuck"]
        );
        assert_eq!(
            events,
            ["old-time-seen-late", "young-completed", "young-stuck"]
        );
    }

    /// `(name, count)` pairs without the zeros, sorted: what two ways of counting must agree on.
    fn nonzero(list: &[(String, i64)]) -> Vec<(String, i64)> {
        let mut list: Vec<_> = list.iter().filter(|(_, n)| *n != 0).cloned().collect();
        list.sort();
        list
    }

    /// What `observer_counts` must hold, counted from the tables the slow way.
    fn recounted(tx: &mut dyn choreo_store::Tx) -> choreo_store::Result<super::Counts> {
        let pairs = |tx: &mut dyn choreo_store::Tx, sql: &str| {
            tx.query(sql, &[])?
                .into_iter()
                .map(|mut row| Ok((row.take::<String>(0)?, row.take::<i64>(1)?)))
                .collect::<choreo_store::Result<Vec<_>>>()
        };
        let mut anomalies = Vec::new();
        for kind in crate::saga::AnomalyKind::ALL {
            let sql = format!(
                "SELECT '{0}', COUNT(*) FROM sagas WHERE anomalies LIKE '%\"{0}\"%'",
                kind.as_str()
            );
            anomalies.extend(pairs(tx, &sql)?);
        }
        Ok(super::Counts {
            events: pairs(
                tx,
                "SELECT event_type, COUNT(*) FROM observed_events GROUP BY event_type",
            )?,
            states: pairs(tx, "SELECT state, COUNT(*) FROM sagas GROUP BY state")?,
            anomalies,
        })
    }

    fn kept_and_recounted(
        tx: &mut dyn choreo_store::Tx,
    ) -> choreo_store::Result<(super::Counts, super::Counts)> {
        Ok((super::counts(tx)?, recounted(tx)?))
    }

    #[tokio::test]
    async fn the_kept_counts_equal_a_recount_through_every_change_of_state_and_a_prune() {
        use choreo_events::Envelope;
        let db = database().await;
        let start = chrono::Utc::now() - chrono::Duration::hours(2);
        // (order, event id, type, source, the id it follows, seconds after `start`): each event
        // is stored and its saga judged at once, as the handler does, so sagas move from state
        // to state and gain anomalies along the way.
        let events = [
            ("done", "d1", "order.placed", "orders", None, 0),
            ("done", "d2", "payment.captured", "billing", Some("d1"), 1),
            (
                "done",
                "d3",
                "shipment.dispatched",
                "shipping",
                Some("d2"),
                2,
            ),
            ("done", "d4", "order.completed", "orders", Some("d3"), 3),
            ("declined", "x1", "order.placed", "orders", None, 0),
            (
                "declined",
                "x2",
                "payment.declined",
                "billing",
                Some("x1"),
                1,
            ),
            ("declined", "x3", "order.cancelled", "orders", Some("x2"), 2),
            ("both", "b1", "order.placed", "orders", None, 0),
            ("both", "b2", "payment.captured", "billing", Some("b1"), 1),
            ("both", "b3", "payment.declined", "billing", Some("b1"), 2),
            ("twice", "t1", "order.placed", "orders", None, 0),
            ("twice", "t2", "payment.captured", "billing", Some("t1"), 1),
            ("twice", "t3", "payment.captured", "billing", Some("t1"), 2),
            ("orphan", "o1", "shipment.dispatched", "shipping", None, 0),
            ("waiting", "w1", "order.placed", "orders", None, 7000),
        ];
        for (order, id, event_type, source, cause, seconds) in events {
            let time = start + chrono::Duration::seconds(seconds);
            let envelope = Envelope {
                specversion: "1.0".to_owned(),
                id: id.to_owned(),
                event_type: event_type.to_owned(),
                source: source.to_owned(),
                time,
                subject: Some(order.to_owned()),
                datacontenttype: "application/json".to_owned(),
                schemaversion: 1,
                correlationid: order.to_owned(),
                causationid: cause.map(str::to_owned),
                traceparent: None,
                data: serde_json::json!({}),
            };
            let now = time + chrono::Duration::milliseconds(10);
            db.write(move |tx| {
                super::insert_event(tx, &envelope, order)?;
                super::judge(tx, order, now, &Default::default())
            })
            .await
            .expect("stored and judged");
            let (kept, slow) = db.read(kept_and_recounted).await.expect("counted");
            assert_eq!(nonzero(&kept.events), nonzero(&slow.events), "after {id}");
            assert_eq!(nonzero(&kept.states), nonzero(&slow.states), "after {id}");
            assert_eq!(
                nonzero(&kept.anomalies),
                nonzero(&slow.anomalies),
                "after {id}"
            );
        }
        let before = db.read(super::counts).await.expect("counted");
        let states: Vec<_> = nonzero(&before.states)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(
            states,
            ["cancelled", "completed", "failed", "running"],
            "{before:?}"
        );
        let kinds: Vec<_> = nonzero(&before.anomalies)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            kinds,
            ["duplicate_effect", "illegal_sequence"],
            "{before:?}"
        );

        // As if each had been observed when it was sent (they were stored just now).
        db.write(|tx| tx.execute("UPDATE observed_events SET observed_at = occurred_at", &[]))
            .await
            .expect("backdated");
        let cutoff = crate::saga::timestamp(start + chrono::Duration::hours(1));
        let pruned = db
            .write(move |tx| super::prune_sagas(tx, &cutoff, 100))
            .await
            .expect("pruned");
        assert_eq!(
            pruned, 5,
            "every saga but the one whose event is younger than the cutoff"
        );
        let (kept, slow) = db.read(kept_and_recounted).await.expect("counted");
        assert_eq!(nonzero(&kept.states), nonzero(&slow.states));
        assert_eq!(nonzero(&kept.states), [("running".to_owned(), 1)]);
        assert_eq!(nonzero(&kept.anomalies), []);
        assert_eq!(
            kept.events, before.events,
            "pruning does not lower the events ever stored"
        );
    }
}
