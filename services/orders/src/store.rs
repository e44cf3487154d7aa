//! The SQL of the orders service. Every function runs on the transaction it is given, so the
//! caller decides the unit of work: the handler and `POST /orders` write state and outbox
//! together, in one hand-off to the database thread.

use crate::lifecycle::{CancellationReason, OrderStatus};
use choreo_events::payloads::{Address, LineItem};
use choreo_store::{Backend, Error, Param, Result, Row, Tx, placeholders};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serialize;
use std::collections::HashMap;

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderView {
    /// The order id (a UUIDv7), also the `correlationid` of every event of its saga.
    pub id: String,
    pub customer_id: String,
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    /// Why a `cancelled` order was cancelled; null otherwise.
    #[schemars(schema_with = "cancellation_reason_schema")]
    pub cancellation_reason: Option<String>,
    /// The sum of the items' `quantity * unit_price_cents`, in minor units.
    pub total_cents: i64,
    pub currency: String,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC: when the status last changed.
    pub updated_at: String,
    /// Each event that moved the order, in the order orders handled them.
    pub history: Vec<HistoryEntry>,
}

/// One event that moved (or marked) an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct HistoryEntry {
    /// When orders handled the event: RFC 3339, UTC.
    pub at: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's CloudEvents `id`.
    pub event_id: String,
    /// The order's status after the event.
    #[schemars(schema_with = "status_schema")]
    pub status: String,
}

fn status_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": OrderStatus::NAMES})
}

fn cancellation_reason_schema(_: &mut SchemaGenerator) -> Schema {
    let mut reasons: Vec<serde_json::Value> = CancellationReason::ALL
        .iter()
        .map(|reason| reason.as_str().into())
        .collect();
    reasons.push(serde_json::Value::Null);
    json_schema!({"type": ["string", "null"], "enum": reasons})
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

pub fn insert_order(tx: &mut dyn Tx, order: &NewOrder<'_>) -> Result<()> {
    let (items, address) = (to_json(order.items), to_json(order.shipping_address));
    tx.execute(
        "INSERT INTO orders (id, customer_id, status, cancellation_reason, total_cents, currency, items, shipping_address, created_at, updated_at)
         VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8, $8)",
        &[
            order.id.into(),
            order.customer_id.into(),
            OrderStatus::Pending.as_str().into(),
            order.total_cents.into(),
            order.currency.into(),
            items.as_str().into(),
            address.as_str().into(),
            order.now.into(),
        ],
    )?;
    Ok(())
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub fn insert_history(tx: &mut dyn Tx, order_id: &str, entry: &HistoryEntry) -> Result<()> {
    tx.execute(
        "INSERT INTO order_history (order_id, at, event_type, event_id, status) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id, event_id) DO NOTHING",
        &[
            order_id.into(),
            (&entry.at).into(),
            (&entry.event_type).into(),
            (&entry.event_id).into(),
            (&entry.status).into(),
        ],
    )?;
    Ok(())
}

/// What the handler needs of an order: its status and what its payment must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub status: OrderStatus,
    pub total_cents: i64,
    pub currency: String,
}

/// The status and amount of an order, or `None` if there is no such order. On PostgreSQL the
/// row stays locked until the transaction ends, so replicas handling two events of one order
/// take turns instead of one of them losing the guarded update below.
pub fn load_facts(tx: &mut dyn Tx, id: &str) -> Result<Option<OrderFacts>> {
    let sql = match tx.backend() {
        Backend::Sqlite => {
            "SELECT status, cancellation_reason, total_cents, currency FROM orders WHERE id = $1"
        }
        Backend::Postgres => {
            "SELECT status, cancellation_reason, total_cents, currency FROM orders WHERE id = $1 FOR UPDATE"
        }
    };
    let Some(mut row) = tx.query_opt(sql, &[id.into()])? else {
        return Ok(None);
    };
    let status: String = row.take(0)?;
    let reason: Option<String> = row.take(1)?;
    let status = OrderStatus::from_columns(&status, reason.as_deref()).ok_or_else(|| {
        Error::Failed(format!(
            "order {id} has an impossible status {status}/{reason:?}"
        ))
    })?;
    Ok(Some(OrderFacts {
        status,
        total_cents: row.take(2)?,
        currency: row.take(3)?,
    }))
}

/// Moves an order from `from` to `to`. Returns `false` if the order was not in `from` any more
/// (a guard that holds even without the row lock).
pub fn set_status(
    tx: &mut dyn Tx,
    id: &str,
    from: OrderStatus,
    to: OrderStatus,
    now: &str,
) -> Result<bool> {
    let moved = tx.execute(
        "UPDATE orders SET status = $1, cancellation_reason = $2, updated_at = $3 WHERE id = $4 AND status = $5",
        &[
            to.as_str().into(),
            to.cancellation_reason().map(|r| r.as_str()).into(),
            now.into(),
            id.into(),
            from.as_str().into(),
        ],
    )?;
    Ok(moved == 1)
}

const ORDER_COLUMNS: &str = "id, customer_id, status, cancellation_reason, total_cents, currency, items, shipping_address, created_at, updated_at";

/// Orders not yet finished (`pending` or `paid`): the saga's backlog, for admission control.
pub fn unfinished_orders(tx: &mut dyn Tx) -> Result<u64> {
    let mut row = tx
        .query_opt(
            "SELECT COUNT(*) FROM orders WHERE status IN ('pending', 'paid')",
            &[],
        )?
        .unwrap_or_default();
    let count: i64 = row.take(0)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub fn get_order(tx: &mut dyn Tx, id: &str) -> Result<Option<OrderView>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let rows = tx.query(&sql, &[id.into()])?;
    Ok(with_history(tx, rows)?.pop())
}

/// Orders newest first, optionally of one status: two queries whatever the page size.
pub fn list_orders(tx: &mut dyn Tx, status: Option<&str>, limit: i64) -> Result<Vec<OrderView>> {
    let rows = match status {
        Some(status) => tx.query(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status = $1 ORDER BY id DESC LIMIT $2"
            ),
            &[status.into(), limit.into()],
        )?,
        None => tx.query(
            &format!("SELECT {ORDER_COLUMNS} FROM orders ORDER BY id DESC LIMIT $1"),
            &[limit.into()],
        )?,
    };
    with_history(tx, rows)
}

/// The orders of `rows` (in [`ORDER_COLUMNS`] order) with their history, read in one query.
fn with_history(tx: &mut dyn Tx, rows: Vec<Row>) -> Result<Vec<OrderView>> {
    let mut orders = rows.into_iter().map(order_of).collect::<Result<Vec<_>>>()?;
    if orders.is_empty() {
        return Ok(orders);
    }
    let ids: Vec<Param<'_>> = orders.iter().map(|o| o.id.as_str().into()).collect();
    let sql = format!(
        "SELECT order_id, at, event_type, event_id, status FROM order_history
         WHERE order_id IN ({}) ORDER BY seq",
        placeholders(1, ids.len())
    );
    let mut history: HashMap<String, Vec<HistoryEntry>> = HashMap::new();
    for mut row in tx.query(&sql, &ids)? {
        let order_id: String = row.take(0)?;
        history.entry(order_id).or_default().push(HistoryEntry {
            at: row.take(1)?,
            event_type: row.take(2)?,
            event_id: row.take(3)?,
            status: row.take(4)?,
        });
    }
    for order in &mut orders {
        order.history = history.remove(&order.id).unwrap_or_default();
    }
    Ok(orders)
}

fn order_of(mut row: Row) -> Result<OrderView> {
    let decode = |e: serde_json::Error| Error::Failed(format!("stored JSON: {e}"));
    let id = row.take(0)?;
    let customer_id = row.take(1)?;
    let status = row.take(2)?;
    let cancellation_reason = row.take(3)?;
    let total_cents = row.take(4)?;
    let currency = row.take(5)?;
    let items: String = row.take(6)?;
    let address: String = row.take(7)?;
    Ok(OrderView {
        id,
        customer_id,
        status,
        cancellation_reason,
        total_cents,
        currency,
        items: serde_json::from_str(&items).map_err(decode)?,
        shipping_address: serde_json::from_str(&address).map_err(decode)?,
        created_at: row.take(8)?,
        updated_at: row.take(9)?,
        history: Vec::new(),
    })
}

/// The request and order of an `Idempotency-Key` seen before.
pub fn find_idempotency_key(tx: &mut dyn Tx, key: &str) -> Result<Option<(String, String)>> {
    tx.query_opt(
        "SELECT request, order_id FROM idempotency_keys WHERE key = $1",
        &[key.into()],
    )?
    .map(|mut row| Ok((row.take(0)?, row.take(1)?)))
    .transpose()
}

pub fn insert_idempotency_key(
    tx: &mut dyn Tx,
    key: &str,
    request: &str,
    order_id: &str,
    now: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO idempotency_keys (key, request, order_id, created_at) VALUES ($1, $2, $3, $4)",
        &[key.into(), request.into(), order_id.into(), now.into()],
    )?;
    Ok(())
}

/// Deletes at most `limit` `Idempotency-Key`s created before `cutoff`, oldest first (the
/// service's part of the retention: a key older than it places a new order). SQLite takes the
/// first rows by `rowid`, insertion order, reading `limit` rows and no more; PostgreSQL uses
/// the index `idempotency_keys_created_at`.
pub fn prune_idempotency_keys(tx: &mut dyn Tx, cutoff: &str, limit: i64) -> Result<u64> {
    let sql = match tx.backend() {
        Backend::Sqlite => {
            "DELETE FROM idempotency_keys WHERE rowid IN
             (SELECT rowid FROM idempotency_keys ORDER BY rowid LIMIT $2) AND created_at < $1"
        }
        Backend::Postgres => {
            "DELETE FROM idempotency_keys WHERE key IN
             (SELECT key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
        }
    };
    tx.execute(sql, &[cutoff.into(), limit.into()])
}

/// Orders' own expiring rows, for [`choreo_messaging::Retention::also`].
pub const EXPIRING_IDEMPOTENCY_KEYS: choreo_messaging::Expiring = choreo_messaging::Expiring {
    name: "idempotency_keys",
    prune: prune_idempotency_keys,
};
