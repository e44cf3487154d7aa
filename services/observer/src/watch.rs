//! The observer's clock: every sweep period it judges again the sagas whose next deadline has
//! passed (so a saga becomes stuck without any event arriving), then reads what changed since
//! the last sweep (new events, sagas whose judgement changed) and sends it to the live page's
//! subscribers. Reading from the database, not from the handler, means the page only ever shows
//! what was committed, whoever changed it.

use crate::saga::{Deadlines, timestamp};
use crate::store::{self, Counts, SagaSummary};
use choreo_store::Database;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The most sagas judged again, events and changes read, per sweep.
const BATCH: i64 = 500;

/// The most events whose times are recorded per sweep: 20,000 a second at the default sweep of
/// 250 ms, four times what `make bench` stores at saturation.
const TIMINGS: i64 = 5000;

/// One event, as the live page moves it along its arrow.
#[derive(Debug, Clone, Serialize)]
pub struct FeedEvent {
    pub seq: i64,
    pub order_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub time: String,
}

/// What one sweep sends to the live page.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    pub events: Vec<FeedEvent>,
    pub sagas: Vec<SagaSummary>,
}

/// The sweep and the feed.
#[derive(Debug)]
pub struct Watch {
    pub db: Database,
    pub deadlines: Deadlines,
    pub period: Duration,
    /// Each update, serialized once for every subscriber.
    pub feed: broadcast::Sender<Arc<str>>,
    /// Set from the database's counts every sweep.
    pub metrics: crate::metrics::ObserverMetrics,
    /// Worked out every sweep, for the map.
    pub last_minute: LastMinute,
    /// Fed every sweep with the events stored since the last, for the map and the charts.
    pub recent: crate::recent::Recent,
}

/// Events stored in the last minute, by type: what the map shows beside each arrow. Every sweep
/// works it out from the counts, those of now less those of a minute before (or of the first
/// sweep, while the observer has run less than a minute), so the map never scans the history.
#[derive(Debug, Clone, Default)]
pub struct LastMinute(Arc<Mutex<Vec<(String, i64)>>>);

impl LastMinute {
    /// Events of `event_type` stored in the last minute.
    pub fn of(&self, event_type: &str) -> i64 {
        Counts::of(
            &self.0.lock().unwrap_or_else(PoisonError::into_inner),
            event_type,
        )
    }

    fn set(&self, recent: Vec<(String, i64)>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = recent;
    }
}

/// The counts of the sweeps of the last minute, oldest first, from which [`LastMinute`] is
/// worked out.
#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<(Instant, Vec<(String, i64)>)>,
}

impl Window {
    const SPAN: Duration = Duration::from_secs(60);

    /// Adds the event counts of `now`, and returns how much each grew since the newest sample at
    /// least a minute old (or the oldest, when none is).
    fn push(&mut self, now: Instant, events: &[(String, i64)]) -> Vec<(String, i64)> {
        self.samples.push_back((now, events.to_vec()));
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= Self::SPAN)
        {
            self.samples.pop_front();
        }
        let base = self
            .samples
            .front()
            .map(|(_, counts)| counts.as_slice())
            .unwrap_or_default();
        events
            .iter()
            .map(|(event_type, n)| (event_type.clone(), n - Counts::of(base, event_type)))
            .collect()
    }
}

impl Watch {
    /// Sweeps until `stop` is cancelled. A database failure is logged and the next sweep tries
    /// again: the observer's judgement may be late, never wrong.
    pub async fn run(self, stop: CancellationToken) {
        let mut cursor: Option<(i64, i64)> = None;
        let mut timings: Option<i64> = None;
        let mut window = Window::default();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.period) => {}
                () = stop.cancelled() => return,
            }
            if let Err(error) = self.judge_overdue().await {
                tracing::warn!(%error, "could not judge the overdue sagas; trying again");
                continue;
            }
            match self.db.read(store::counts).await {
                Ok(counts) => {
                    self.metrics.set(&counts);
                    self.last_minute
                        .set(window.push(Instant::now(), &counts.events));
                }
                Err(error) => tracing::warn!(%error, "could not read the counts"),
            }
            match self.record_timings(timings).await {
                Ok(next) => timings = Some(next),
                Err(error) => tracing::warn!(%error, "could not read the events' times"),
            }
            match self.read_changes(cursor).await {
                Ok((next, update)) => {
                    // Nothing to tell (or nobody listening: send fails, which is fine).
                    if cursor.is_some() && !(update.events.is_empty() && update.sagas.is_empty()) {
                        let text = serde_json::to_string(&update).unwrap_or_default();
                        let _ = self.feed.send(text.into());
                    }
                    cursor = Some(next);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read the changes for the live page")
                }
            }
        }
    }

    async fn judge_overdue(&self) -> choreo_store::Result<usize> {
        let deadlines = self.deadlines;
        self.db
            .write(move |tx| {
                let now = choreo_store::now();
                let due = store::due_for_judgement(tx, &timestamp(now), BATCH)?;
                for order_id in &due {
                    store::judge(tx, order_id, now, &deadlines)?;
                }
                Ok(due.len())
            })
            .await
    }

    /// Records the times of the events stored after `cursor` (at most [`TIMINGS`] a sweep) in
    /// [`Watch::recent`], and returns where the next sweep reads from. The first call starts
    /// with the events stored in the last hour, so a restarted observer charts them again.
    async fn record_timings(&self, cursor: Option<i64>) -> choreo_store::Result<i64> {
        let recent = self.recent.clone();
        self.db
            .read(move |tx| {
                let now = choreo_store::now();
                let seq = match cursor {
                    Some(seq) => seq,
                    None => store::seq_before(
                        tx,
                        &timestamp(now - chrono::TimeDelta::minutes(crate::recent::MINUTES as i64)),
                    )?,
                };
                let rows = store::timings_after(tx, seq, TIMINGS)?;
                let next = rows.last().map_or(seq, |(seq, _)| *seq);
                let timings: Vec<_> = rows.into_iter().map(|(_, timing)| timing).collect();
                recent.record(now, &timings);
                Ok(next)
            })
            .await
    }

    /// What changed after `cursor` (event seq, saga change); the first call only finds where
    /// things stand, so a page connecting late gets no backlog (it reads the lists instead).
    async fn read_changes(
        &self,
        cursor: Option<(i64, i64)>,
    ) -> choreo_store::Result<((i64, i64), Update)> {
        self.db
            .read(move |tx| {
                let Some((seq, changed)) = cursor else {
                    let start = (store::last_seq(tx)?, store::last_change(tx)?);
                    return Ok((
                        start,
                        Update {
                            events: Vec::new(),
                            sagas: Vec::new(),
                        },
                    ));
                };
                let events = store::events_after(tx, seq, BATCH)?;
                let sagas = store::changed_after(tx, changed, BATCH)?;
                let next = (
                    events.last().map_or(seq, |e| e.seq),
                    sagas.last().map_or(changed, |(c, _)| *c),
                );
                let update = Update {
                    events: events
                        .into_iter()
                        .map(|e| FeedEvent {
                            seq: e.seq,
                            order_id: e.order_id,
                            event_type: e.event_type,
                            source: e.source,
                            time: e.time,
                        })
                        .collect(),
                    sagas: sagas.into_iter().map(|(_, s)| s).collect(),
                };
                Ok((next, update))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: i64) -> Vec<(String, i64)> {
        vec![("order.placed".to_owned(), n)]
    }

    #[test]
    fn the_last_minute_is_the_growth_since_the_newest_count_at_least_a_minute_old() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut window = Window::default();
        assert_eq!(window.push(at(0), &counts(10)), counts(0));
        assert_eq!(window.push(at(30), &counts(20)), counts(10));
        // The count of 0 s is 61 s old, that of 30 s only 31: the growth since 0 s.
        assert_eq!(window.push(at(61), &counts(30)), counts(20));
        // Now the count of 30 s is 65 s old, and the newest that old: the growth since 30 s.
        assert_eq!(window.push(at(95), &counts(35)), counts(15));
        // A type not counted a minute ago counts whole.
        let both = vec![
            ("order.placed".to_owned(), 35),
            ("payment.captured".to_owned(), 4),
        ];
        assert_eq!(
            window.push(at(96), &both),
            vec![
                ("order.placed".to_owned(), 15),
                ("payment.captured".to_owned(), 4)
            ]
        );
    }
}
