//! The SQL of billing. Each function runs on the transaction it is given.

use crate::rules::{Payment, PaymentState};
use choreo_store::{Error, Result, Tx};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serialize;

/// A payment as `GET /payments` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PaymentView {
    pub id: String,
    pub order_id: String,
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    /// The amount charged (or declined), in minor units.
    pub amount_cents: i64,
    pub currency: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The refund of a `refunded` payment; null otherwise.
    pub refund_id: Option<String>,
}

fn status_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = PaymentState::ALL.iter().map(|s| s.as_str()).collect();
    json_schema!({"type": "string", "enum": names})
}

pub fn payment_of(tx: &mut dyn Tx, order_id: &str) -> Result<Option<Payment>> {
    let Some(mut row) = tx.query_opt(
        "SELECT id, status, amount_cents, currency FROM payments WHERE order_id = $1",
        &[order_id.into()],
    )?
    else {
        return Ok(None);
    };
    let id = row.take(0)?;
    let status: String = row.take(1)?;
    let state = PaymentState::parse(&status)
        .ok_or_else(|| Error::Failed(format!("impossible payment status {status}")))?;
    Ok(Some(Payment {
        id,
        state,
        amount_cents: row.take(2)?,
        currency: row.take(3)?,
    }))
}

/// Records the one payment of `order_id`. Returns `false`, writing nothing, if the order already
/// has one (`UNIQUE (order_id)`): at most one payment per order, whatever is redelivered.
pub fn insert_payment(
    tx: &mut dyn Tx,
    order_id: &str,
    payment: &Payment,
    decline_reason: Option<&str>,
    now: &str,
) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO payments (id, order_id, status, amount_cents, currency, decline_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (order_id) DO NOTHING",
        &[
            (&payment.id).into(),
            order_id.into(),
            payment.state.as_str().into(),
            payment.amount_cents.into(),
            (&payment.currency).into(),
            decline_reason.into(),
            now.into(),
        ],
    )?;
    Ok(inserted == 1)
}

/// Records the one refund of a payment and marks the payment refunded; `UNIQUE (payment_id)`
/// refuses a second.
pub fn insert_refund(
    tx: &mut dyn Tx,
    refund_id: &str,
    payment: &Payment,
    order_id: &str,
    reason: &str,
    now: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO refunds (id, payment_id, order_id, amount_cents, currency, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            refund_id.into(),
            (&payment.id).into(),
            order_id.into(),
            payment.amount_cents.into(),
            (&payment.currency).into(),
            reason.into(),
            now.into(),
        ],
    )?;
    tx.execute(
        "UPDATE payments SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        &[
            PaymentState::Refunded.as_str().into(),
            now.into(),
            (&payment.id).into(),
            PaymentState::Captured.as_str().into(),
        ],
    )?;
    Ok(())
}

/// The payments of one order (at most one), or the newest ones.
pub fn list_payments(
    tx: &mut dyn Tx,
    order_id: Option<&str>,
    limit: i64,
) -> Result<Vec<PaymentView>> {
    const SELECT: &str = "SELECT p.id, p.order_id, p.status, p.amount_cents, p.currency, p.created_at, r.id AS refund_id
                          FROM payments p LEFT JOIN refunds r ON r.payment_id = p.id";
    let rows = match order_id {
        Some(order_id) => tx.query(
            &format!("{SELECT} WHERE p.order_id = $1 ORDER BY p.created_at DESC LIMIT $2"),
            &[order_id.into(), limit.into()],
        )?,
        None => tx.query(
            &format!("{SELECT} ORDER BY p.created_at DESC LIMIT $1"),
            &[limit.into()],
        )?,
    };
    rows.into_iter()
        .map(|mut row| {
            Ok(PaymentView {
                id: row.take(0)?,
                order_id: row.take(1)?,
                status: row.take(2)?,
                amount_cents: row.take(3)?,
                currency: row.take(4)?,
                created_at: row.take(5)?,
                refund_id: row.take(6)?,
            })
        })
        .collect()
}
