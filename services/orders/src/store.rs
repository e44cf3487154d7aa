//! The SQL of the orders service. Every function takes the connection it runs on, so the caller
//! decides the transaction: the handler and `POST /orders` write state and outbox together.

use crate::lifecycle::OrderStatus;
use choreo_events::payloads::{Address, LineItem};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderView {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub cancellation_reason: Option<String>,
    pub total_cents: i64,
    pub currency: String,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    pub created_at: String,
    pub updated_at: String,
    pub history: Vec<HistoryEntry>,
}

/// One event that moved (or marked) an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub at: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub event_id: String,
    pub status: String,
}

/// A new order, as `POST /orders` writes it.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub id: &'a str,
    pub customer_id: &'a str,
    pub total_cents: i64,
    pub currency: &'a str,
    pub items: &'a [LineItem],
    pub shipping_address: &'a Address,
    pub now: &'a str,
}

pub async fn insert_order(
    conn: &mut AnyConnection,
    order: &NewOrder<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, status, cancellation_reason, total_cents, currency, items, shipping_address, created_at, updated_at)
         VALUES ($1, $2, 'pending', NULL, $3, $4, $5, $6, $7, $7)",
    )
    .bind(order.id)
    .bind(order.customer_id)
    .bind(order.total_cents)
    .bind(order.currency)
    .bind(to_json(order.items))
    .bind(to_json(order.shipping_address))
    .bind(order.now)
    .execute(conn)
    .await?;
    Ok(())
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub async fn insert_history(
    conn: &mut AnyConnection,
    order_id: &str,
    entry: &HistoryEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_history (order_id, at, event_type, event_id, status) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id, event_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(&entry.at)
    .bind(&entry.event_type)
    .bind(&entry.event_id)
    .bind(&entry.status)
    .execute(conn)
    .await?;
    Ok(())
}

/// The status of an order, or `None` if there is no such order.
pub async fn load_status(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let row = sqlx::query("SELECT status, cancellation_reason FROM orders WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        let status: String = row.try_get("status")?;
        let reason: Option<String> = row.try_get("cancellation_reason")?;
        OrderStatus::from_columns(&status, reason.as_deref()).ok_or_else(|| {
            sqlx::Error::Decode(
                format!("order {id} has an impossible status {status}/{reason:?}").into(),
            )
        })
    })
    .transpose()
}

/// Moves an order from `from` to `to`. Returns `false` if the order was not in `from` any more:
/// another replica moved it since it was read (optimistic concurrency, portable across SQLite
/// and PostgreSQL without `SELECT ... FOR UPDATE`).
pub async fn set_status(
    conn: &mut AnyConnection,
    id: &str,
    from: OrderStatus,
    to: OrderStatus,
    now: &str,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE orders SET status = $1, cancellation_reason = $2, updated_at = $3 WHERE id = $4 AND status = $5",
    )
    .bind(to.as_str())
    .bind(to.cancellation_reason().map(|r| r.as_str()))
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .execute(conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

const ORDER_COLUMNS: &str = "id, customer_id, status, cancellation_reason, total_cents, currency, items, shipping_address, created_at, updated_at";

pub async fn get_order(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(with_history(conn, &row).await?)),
        None => Ok(None),
    }
}

/// Orders newest first, optionally of one status.
pub async fn list_orders(
    conn: &mut AnyConnection,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<OrderView>, sqlx::Error> {
    let rows = match status {
        Some(status) => {
            sqlx::query(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(status)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders ORDER BY id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut orders = Vec::with_capacity(rows.len());
    for row in &rows {
        orders.push(with_history(conn, row).await?);
    }
    Ok(orders)
}

async fn with_history(conn: &mut AnyConnection, row: &AnyRow) -> Result<OrderView, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let history = sqlx::query("SELECT at, event_type, event_id, status FROM order_history WHERE order_id = $1 ORDER BY seq")
        .bind(&id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|h| {
            Ok(HistoryEntry {
                at: h.try_get("at")?,
                event_type: h.try_get("event_type")?,
                event_id: h.try_get("event_id")?,
                status: h.try_get("status")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let json = |column: &str| -> Result<String, sqlx::Error> { row.try_get(column) };
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    Ok(OrderView {
        customer_id: row.try_get("customer_id")?,
        status: row.try_get("status")?,
        cancellation_reason: row.try_get("cancellation_reason")?,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        items: serde_json::from_str(&json("items")?).map_err(decode)?,
        shipping_address: serde_json::from_str(&json("shipping_address")?).map_err(decode)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
        history,
    })
}

/// The request and order of an `Idempotency-Key` seen before.
pub async fn find_idempotency_key(
    conn: &mut AnyConnection,
    key: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT request, order_id FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?;
    row.map(|row| Ok((row.try_get("request")?, row.try_get("order_id")?)))
        .transpose()
}

pub async fn insert_idempotency_key(
    conn: &mut AnyConnection,
    key: &str,
    request: &str,
    order_id: &str,
    now: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO idempotency_keys (key, request, order_id, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(key)
    .bind(request)
    .bind(order_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
