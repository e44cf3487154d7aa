//! The observer's clock: every sweep period it judges again the sagas whose next deadline has
//! passed (so a saga becomes stuck without any event arriving), then reads what changed since
//! the last sweep (new events, sagas whose judgement changed) and sends it to the live page's
//! subscribers. Reading from the database, not from the handler, means the page only ever shows
//! what was committed, whoever changed it.

use crate::saga::{Deadlines, timestamp};
use crate::store::{self, SagaSummary};
use choreo_store::Database;
use chrono::Utc;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The most sagas judged again, events and changes read, per sweep.
const BATCH: i64 = 500;

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
    /// Set from the database's counts every [`crate::metrics::REFRESH`].
    pub metrics: crate::metrics::ObserverMetrics,
}

impl Watch {
    /// Sweeps until `stop` is cancelled. A database failure is logged and the next sweep tries
    /// again: the observer's judgement may be late, never wrong.
    pub async fn run(self, stop: CancellationToken) {
        let mut cursor: Option<(i64, i64)> = None;
        let mut counted: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.period) => {}
                () = stop.cancelled() => return,
            }
            if let Err(error) = self.judge_overdue().await {
                tracing::warn!(%error, "could not judge the overdue sagas; trying again");
                continue;
            }
            if counted.is_none_or(|at| at.elapsed() >= crate::metrics::REFRESH) {
                let since = timestamp(Utc::now() - chrono::Duration::seconds(60));
                match self.db.read(move |tx| store::counts(tx, &since)).await {
                    Ok(counts) => {
                        self.metrics.set(&counts);
                        counted = Some(std::time::Instant::now());
                    }
                    Err(error) => tracing::warn!(%error, "could not count for the metrics"),
                }
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
                let now = Utc::now();
                let due = store::due_for_judgement(tx, &timestamp(now), BATCH)?;
                for order_id in &due {
                    store::judge(tx, order_id, now, &deadlines)?;
                }
                Ok(due.len())
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
