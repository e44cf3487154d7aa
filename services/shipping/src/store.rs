//! The SQL of shipping. Each function runs on the caller's connection (and so its transaction).

use serde::Serialize;
use sqlx::{AnyConnection, Row};

/// A shipment as `GET /shipments` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShipmentView {
    pub id: String,
    pub order_id: String,
    pub status: String,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub reason: Option<String>,
}

/// A shipment to record.
#[derive(Debug, Clone)]
pub struct NewShipment<'a> {
    pub id: &'a str,
    pub order_id: &'a str,
    pub payment_id: &'a str,
    pub dispatched: bool,
    pub carrier: Option<&'a str>,
    pub tracking_number: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub now: &'a str,
}

pub async fn has_shipment(conn: &mut AnyConnection, order_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT id FROM shipments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// Records the one shipment of an order; `UNIQUE (order_id)` refuses a second.
pub async fn insert_shipment(
    conn: &mut AnyConnection,
    s: &NewShipment<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO shipments (id, order_id, payment_id, status, carrier, tracking_number, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(s.id)
    .bind(s.order_id)
    .bind(s.payment_id)
    .bind(if s.dispatched { "dispatched" } else { "failed" })
    .bind(s.carrier)
    .bind(s.tracking_number)
    .bind(s.reason)
    .bind(s.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list_shipments(
    conn: &mut AnyConnection,
    order_id: Option<&str>,
    limit: i64,
) -> Result<Vec<ShipmentView>, sqlx::Error> {
    const SELECT: &str =
        "SELECT id, order_id, status, carrier, tracking_number, reason FROM shipments";
    let rows = match order_id {
        Some(order_id) => {
            sqlx::query(&format!(
                "{SELECT} WHERE order_id = $1 ORDER BY created_at DESC LIMIT $2"
            ))
            .bind(order_id)
            .bind(limit)
            .fetch_all(conn)
            .await?
        }
        None => {
            sqlx::query(&format!("{SELECT} ORDER BY created_at DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(conn)
                .await?
        }
    };
    rows.iter()
        .map(|row| {
            Ok(ShipmentView {
                id: row.try_get("id")?,
                order_id: row.try_get("order_id")?,
                status: row.try_get("status")?,
                carrier: row.try_get("carrier")?,
                tracking_number: row.try_get("tracking_number")?,
                reason: row.try_get("reason")?,
            })
        })
        .collect()
}
