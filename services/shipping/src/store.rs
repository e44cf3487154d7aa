//! The SQL of shipping. Each function runs on the transaction it is given.

use crate::rules::{ShipmentState, Shipped};
use choreo_store::{Result, Tx};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serialize;

/// A shipment as `GET /shipments` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ShipmentView {
    pub id: String,
    pub order_id: String,
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    /// The carrier of a `dispatched` shipment; null otherwise.
    pub carrier: Option<String>,
    /// The carrier's tracking number of a `dispatched` shipment; null otherwise.
    pub tracking_number: Option<String>,
    /// Why a `failed` shipment failed; null otherwise.
    pub reason: Option<String>,
}

fn status_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = ShipmentState::ALL.iter().map(|s| s.as_str()).collect();
    json_schema!({"type": "string", "enum": names})
}

/// Records the one shipment of `order_id`. Returns `false`, writing nothing, if the order already
/// has one (`UNIQUE (order_id)`): at most one shipment per order, whatever is redelivered.
pub fn insert_shipment(
    tx: &mut dyn Tx,
    id: &str,
    order_id: &str,
    payment_id: &str,
    shipped: &Shipped,
    now: &str,
) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO shipments (id, order_id, payment_id, status, carrier, tracking_number, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id) DO NOTHING",
        &[
            id.into(),
            order_id.into(),
            payment_id.into(),
            shipped.state.as_str().into(),
            shipped.carrier.as_deref().into(),
            shipped.tracking_number.as_deref().into(),
            shipped.reason.into(),
            now.into(),
        ],
    )?;
    Ok(inserted == 1)
}

pub fn list_shipments(
    tx: &mut dyn Tx,
    order_id: Option<&str>,
    limit: i64,
) -> Result<Vec<ShipmentView>> {
    const SELECT: &str =
        "SELECT id, order_id, status, carrier, tracking_number, reason FROM shipments";
    let rows = match order_id {
        Some(order_id) => tx.query(
            &format!("{SELECT} WHERE order_id = $1 ORDER BY created_at DESC LIMIT $2"),
            &[order_id.into(), limit.into()],
        )?,
        None => tx.query(
            &format!("{SELECT} ORDER BY created_at DESC LIMIT $1"),
            &[limit.into()],
        )?,
    };
    rows.into_iter()
        .map(|mut row| {
            Ok(ShipmentView {
                id: row.take(0)?,
                order_id: row.take(1)?,
                status: row.take(2)?,
                carrier: row.take(3)?,
                tracking_number: row.take(4)?,
                reason: row.take(5)?,
            })
        })
        .collect()
}
