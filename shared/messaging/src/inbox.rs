//! The inbox: the ids of the events a service has handled, written in the same transaction as
//! their effect. A redelivered event finds its id here and is acked without effect.

use sqlx::AnyConnection;

/// Records `event_id` as handled. Returns `false` if it already was: the caller must then apply
/// no effect. Must run inside the transaction that applies the effect.
pub async fn record(
    conn: &mut AnyConnection,
    event_id: &str,
    event_type: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (event_id, event_type, received_at) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(crate::outbox::now_text())
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
