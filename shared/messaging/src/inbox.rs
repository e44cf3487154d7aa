//! The inbox: the ids of the events a service has handled, written in the same transaction as
//! their effect. A redelivered event finds its id here and is acked without effect.

use choreo_store::{Backend, Param, Result, Tx, runs_of_powers_of_two, value_rows};
use std::collections::HashSet;

/// Records `event_id` as handled. Returns `false` if it already was: the caller must then apply
/// no effect. Must run inside the transaction that applies the effect.
pub(crate) fn record(tx: &mut dyn Tx, event_id: &str, event_type: &str) -> Result<bool> {
    Ok(record_all(tx, &[(event_id, event_type)])?[0])
}

/// Records a batch's events, `(event_id, event_type)`, as handled, with one statement per run of
/// a power of two of them instead of one per event. Returns, for each event in order, whether it
/// is new: `false` if its id was recorded before, or earlier in `events` (a redelivery in the
/// same batch). The caller must apply no effect for a `false`. Must run inside the transaction
/// that applies the effects.
pub(crate) fn record_all(tx: &mut dyn Tx, events: &[(&str, &str)]) -> Result<Vec<bool>> {
    let now = choreo_store::now_text();
    let mut inserted = HashSet::new();
    for run in runs_of_powers_of_two(events) {
        let sql = format!(
            "INSERT INTO inbox (event_id, event_type, received_at) VALUES {}
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            value_rows(run.len(), 3)
        );
        let params: Vec<Param<'_>> = run
            .iter()
            .flat_map(|&(id, kind)| [id.into(), kind.into(), now.as_str().into()])
            .collect();
        for mut row in tx.query(&sql, &params)? {
            inserted.insert(row.take::<String>(0)?);
        }
    }
    // An id inserted by this call is new for its first event only.
    Ok(events.iter().map(|(id, _)| inserted.remove(*id)).collect())
}

/// The inbox as a whole, for its gauge.
#[derive(Debug, Clone, Copy)]
pub struct Inbox;

impl Inbox {
    /// How many event ids the inbox holds, without reading them all (a scrape must stay cheap
    /// however large the retention lets it grow). On SQLite, exact: one writer gives rows
    /// consecutive `rowid`s (a rolled-back insert takes none, `ON CONFLICT DO NOTHING` none),
    /// and retention deletes only a prefix of them, the oldest, so the rows are the `rowid`s
    /// from the smallest to the largest. On PostgreSQL, the planner's estimate.
    pub fn rows(tx: &mut dyn Tx) -> Result<i64> {
        let sql = match tx.backend() {
            Backend::Sqlite => "SELECT COALESCE(MAX(rowid) - MIN(rowid) + 1, 0) FROM inbox",
            Backend::Postgres => {
                "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = 'inbox'::regclass"
            }
        };
        match tx.query_opt(sql, &[])? {
            Some(mut row) => row.take::<i64>(0),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::memory_database;

    #[tokio::test]
    async fn an_event_id_is_recorded_once_and_a_second_time_reports_a_duplicate() {
        let db = memory_database().await;

        let first = db
            .write(|tx| super::record(tx, "e-1", "order.placed"))
            .await;
        let second = db
            .write(|tx| super::record(tx, "e-1", "order.placed"))
            .await;
        let other = db
            .write(|tx| super::record(tx, "e-2", "order.placed"))
            .await;

        assert_eq!(first, Ok(true));
        assert_eq!(second, Ok(false));
        assert_eq!(other, Ok(true));
    }

    #[tokio::test]
    async fn a_batch_is_recorded_together_and_names_its_duplicates_in_order() {
        let db = memory_database().await;
        db.write(|tx| super::record(tx, "seen", "order.placed"))
            .await
            .unwrap();

        let ids = ["a", "seen", "b", "a", "c"];
        let fresh = db
            .write(move |tx| {
                let events: Vec<(&str, &str)> =
                    ids.iter().map(|id| (*id, "order.placed")).collect();
                super::record_all(tx, &events)
            })
            .await;
        let again = db
            .write(|tx| super::record_all(tx, &[("c", "order.placed"), ("d", "order.placed")]))
            .await;

        assert_eq!(fresh, Ok(vec![true, false, true, false, true]));
        assert_eq!(again, Ok(vec![false, true]));
        let rows = db
            .read(|tx| tx.query("SELECT event_id FROM inbox ORDER BY event_id", &[]))
            .await
            .unwrap();
        assert_eq!(rows.len(), 5, "a, b, c, d and seen, each once");
    }

    #[tokio::test]
    async fn the_row_count_stays_exact_after_a_rollback_a_duplicate_and_a_pruned_prefix() {
        let db = memory_database().await;
        let rows = |db: &choreo_store::Database| {
            let db = db.clone();
            async move {
                db.read(|tx| {
                    let counted = tx
                        .query_opt("SELECT COUNT(*) FROM inbox", &[])?
                        .unwrap_or_default()
                        .take::<i64>(0)?;
                    Ok::<_, choreo_store::Error>((super::Inbox::rows(tx)?, counted))
                })
                .await
                .expect("read")
            }
        };
        assert_eq!(rows(&db).await, (0, 0));
        let ids: Vec<String> = (0..6).map(|i| format!("e-{i}")).collect();
        let first = ids[..3].to_vec();
        db.write(move |tx| {
            let events: Vec<(&str, &str)> = first.iter().map(|id| (id.as_str(), "x")).collect();
            super::record_all(tx, &events)
        })
        .await
        .expect("recorded");
        // A unit of work that recorded an id and then failed leaves no row, and no gap.
        let failed: choreo_store::Result<()> = db
            .write(|tx| {
                super::record(tx, "e-rolled-back", "x")?;
                Err(choreo_store::Error::Failed("handler failed".into()))
            })
            .await;
        assert!(failed.is_err());
        let rest = ids[2..].to_vec();
        db.write(move |tx| {
            // e-2 again: a duplicate, no row.
            let events: Vec<(&str, &str)> = rest.iter().map(|id| (id.as_str(), "x")).collect();
            super::record_all(tx, &events)
        })
        .await
        .expect("recorded");
        assert_eq!(rows(&db).await, (6, 6));
        // Retention deletes the oldest first (crate::retention).
        db.write(|tx| {
            tx.execute(
                "DELETE FROM inbox WHERE rowid IN (SELECT rowid FROM inbox ORDER BY rowid LIMIT 2)",
                &[],
            )
        })
        .await
        .expect("pruned");
        assert_eq!(rows(&db).await, (4, 4));
    }
}
