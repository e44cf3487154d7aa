//! The inbox: the ids of the events a service has handled, written in the same transaction as
//! their effect. A redelivered event finds its id here and is acked without effect.

use choreo_store::{Result, Tx};

/// Records `event_id` as handled. Returns `false` if it already was: the caller must then apply
/// no effect. Must run inside the transaction that applies the effect.
pub(crate) fn record(tx: &mut dyn Tx, event_id: &str, event_type: &str) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO inbox (event_id, event_type, received_at) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO NOTHING",
        &[
            event_id.into(),
            event_type.into(),
            choreo_store::now_text().as_str().into(),
        ],
    )?;
    Ok(inserted == 1)
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
}
