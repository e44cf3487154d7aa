//! The SQL of billing. Each function runs on the caller's connection (and so its transaction).

use crate::rules::PaymentState;
use serde::Serialize;
use sqlx::{AnyConnection, Row};

/// A payment as `GET /payments` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentView {
    pub id: String,
    pub order_id: String,
    pub status: String,
    pub amount_cents: i64,
    pub currency: String,
    pub created_at: String,
    pub refund_id: Option<String>,
}

/// The payment of an order: its id, state, amount and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: String,
    pub state: PaymentState,
    pub amount_cents: i64,
    pub currency: String,
}

pub async fn payment_of(
    conn: &mut AnyConnection,
    order_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    let row =
        sqlx::query("SELECT id, status, amount_cents, currency FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    row.map(|row| {
        let status: String = row.try_get("status")?;
        let state = match status.as_str() {
            "captured" => PaymentState::Captured,
            "declined" => PaymentState::Declined,
            "refunded" => PaymentState::Refunded,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("impossible payment status {other}").into(),
                ));
            }
        };
        Ok(Payment {
            id: row.try_get("id")?,
            state,
            amount_cents: row.try_get("amount_cents")?,
            currency: row.try_get("currency")?,
        })
    })
    .transpose()
}

/// A payment to record: captured, or declined with a reason.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub id: &'a str,
    pub order_id: &'a str,
    pub captured: bool,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub decline_reason: Option<&'a str>,
    pub now: &'a str,
}

/// Records the one payment of an order; the `UNIQUE (order_id)` refuses a second.
pub async fn insert_payment(
    conn: &mut AnyConnection,
    p: &NewPayment<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payments (id, order_id, status, amount_cents, currency, decline_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(p.id)
    .bind(p.order_id)
    .bind(if p.captured { "captured" } else { "declined" })
    .bind(p.amount_cents)
    .bind(p.currency)
    .bind(p.decline_reason)
    .bind(p.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the one refund of a payment and marks the payment refunded; `UNIQUE (payment_id)`
/// refuses a second.
pub async fn insert_refund(
    conn: &mut AnyConnection,
    refund_id: &str,
    payment: &Payment,
    order_id: &str,
    reason: &str,
    now: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, order_id, amount_cents, currency, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(refund_id)
    .bind(&payment.id)
    .bind(order_id)
    .bind(payment.amount_cents)
    .bind(&payment.currency)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE payments SET status = 'refunded', updated_at = $1 WHERE id = $2 AND status = 'captured'")
        .bind(now)
        .bind(&payment.id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The payments of one order (at most one), or the newest ones.
pub async fn list_payments(
    conn: &mut AnyConnection,
    order_id: Option<&str>,
    limit: i64,
) -> Result<Vec<PaymentView>, sqlx::Error> {
    const SELECT: &str = "SELECT p.id, p.order_id, p.status, p.amount_cents, p.currency, p.created_at, r.id AS refund_id
                          FROM payments p LEFT JOIN refunds r ON r.payment_id = p.id";
    let rows = match order_id {
        Some(order_id) => {
            sqlx::query(&format!(
                "{SELECT} WHERE p.order_id = $1 ORDER BY p.created_at DESC LIMIT $2"
            ))
            .bind(order_id)
            .bind(limit)
            .fetch_all(conn)
            .await?
        }
        None => {
            sqlx::query(&format!("{SELECT} ORDER BY p.created_at DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(conn)
                .await?
        }
    };
    rows.iter()
        .map(|row| {
            Ok(PaymentView {
                id: row.try_get("id")?,
                order_id: row.try_get("order_id")?,
                status: row.try_get("status")?,
                amount_cents: row.try_get("amount_cents")?,
                currency: row.try_get("currency")?,
                created_at: row.try_get("created_at")?,
                refund_id: row.try_get("refund_id")?,
            })
        })
        .collect()
}
