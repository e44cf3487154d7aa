//! The orders HTTP API: `POST /orders`, `GET /orders/{id}`, `GET /orders?status=&limit=`.

use crate::admission::{Admission, Refused};
use crate::lifecycle::OrderStatus;
use crate::store::{self, HistoryEntry, NewOrder, OrderView};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use choreo_events::payloads::{
    Address, CURRENCY, LineItem, NON_BLANK, OrderPlaced, Problems, check_items, items_total,
};
use choreo_events::topology::ORDERS;
use choreo_events::{Envelope, Event};
use choreo_host::http::{ApiError, BODY_LIMIT, JsonBody, Routes};
use choreo_host::openapi::OpenApi;
use choreo_host::service::Parts;
use choreo_messaging::{Outbox, Outcome, Unit};
use choreo_store::Tx;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use tracing::Instrument as _;

/// The routes of the orders API; `POST /orders` asks `admission` first.
pub fn routes(parts: &Parts, admission: Arc<Admission>) -> Router {
    routing()
        .with_state(parts.clone())
        .layer(Extension(admission))
}

/// The routes, before they get their state: what [`openapi`] must document.
pub fn routing() -> Routes<Parts> {
    Routes::default()
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
}

/// The OpenAPI document of the orders API, served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        ORDERS.name,
        8080,
        "Takes orders and follows each one through the saga to `completed` or `cancelled`. \
         Errors are `{\"error\", \"details\"}`; bad input is never a 500.",
    );
    let body = api.request_schema::<PlaceOrder>();
    let order = api.json_response::<OrderView>("The order, `pending`.");
    let replayed = api.json_response::<OrderView>(
        "The order placed earlier with the same `Idempotency-Key` and the same body, as it is now.",
    );
    let responses = json!({
        "201": {
            "description": "Placed: the order, `pending`; its `order.placed` event is committed \
                            with it and published right after.",
            "headers": {"Location": {
                "description": "`/orders/{id}` of the new order.",
                "schema": {"type": "string"},
            }},
            "content": order["content"],
        },
        "200": replayed,
        "400": api.error_response("Malformed JSON."),
        "408": api.error_response("The body did not arrive within `CHOREO_HTTP_BODY_TIMEOUT_MS` of the request head."),
        "409": api.error_response("The `Idempotency-Key` was used with a different body."),
        "413": api.error_response(&format!("The body is over {BODY_LIMIT} bytes.")),
        "415": api.error_response("The `Content-Type` is not JSON."),
        "422": api.error_response("Invalid values or `Idempotency-Key`: `details` lists every problem."),
    });
    api.operation(
        "post",
        "/orders",
        json!({
            "operationId": "placeOrder",
            "summary": "Place an order",
            "tags": ["orders"],
            "parameters": [{
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "The same key with the same body returns the same order (200), never \
                                a second one; with another body it is a 409.",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            }],
            "requestBody": {
                "required": true,
                "content": {"application/json": {"schema": body}},
            },
            "responses": responses,
        }),
    );
    let parameters = api.query_parameters::<ListQuery>();
    let list = api.json_response::<OrderList>("The orders, newest first.");
    let invalid = api.error_response("An unknown `status` or a `limit` out of range.");
    api.operation(
        "get",
        "/orders",
        json!({
            "operationId": "listOrders",
            "summary": "List orders, newest first",
            "tags": ["orders"],
            "parameters": parameters,
            "responses": {"200": list, "422": invalid},
        }),
    );
    let found = api.json_response::<OrderView>("The order, with its history.");
    let missing = api.error_response("No such order.");
    let bad_id = api.error_response("The id is not UTF-8.");
    api.operation(
        "get",
        "/orders/{id}",
        json!({
            "operationId": "getOrder",
            "summary": "Get an order",
            "tags": ["orders"],
            "parameters": [{
                "name": "id",
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
            }],
            "responses": {"200": found, "400": bad_id, "404": missing},
        }),
    );
    api.finish()
}

/// The answer of `GET /orders`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
}

/// The body of `POST /orders`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PlaceOrder {
    #[schemars(regex(pattern = NON_BLANK))]
    pub customer_id: String,
    /// ISO 4217, three capital letters.
    #[schemars(regex(pattern = CURRENCY))]
    pub currency: String,
    #[schemars(length(min = 1))]
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
}

impl PlaceOrder {
    /// Every problem of the request, or its total.
    pub fn validate(&self) -> Result<i64, Vec<String>> {
        let mut problems = Problems::default();
        problems.non_empty("customer_id", &self.customer_id);
        problems.currency("currency", &self.currency);
        check_items(&self.items, &mut problems);
        self.shipping_address
            .check("shipping_address", &mut problems);
        let total = items_total(&self.items);
        problems.check(total.is_some(), || {
            "the order total does not fit in 64 bits".to_owned()
        });
        problems.into_result().map(|()| total.unwrap_or_default())
    }
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LENGTH: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LENGTH {
        return Err(ApiError::unprocessable(vec![format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )]));
    }
    Ok(Some(key.to_owned()))
}

/// The 503 of a request admission control refused: the client may send it again after
/// `Retry-After`, with the same `Idempotency-Key`.
fn shed(refused: Refused) -> Response {
    let body = json!({
        "error": choreo_host::http::OVERLOADED,
        "details": [format!(
            "{} orders are still unfinished; new ones are refused from {} on (CHOREO_MAX_UNFINISHED_ORDERS)",
            refused.unfinished, refused.bound
        )],
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

fn created(status: StatusCode, order: OrderView) -> Response {
    let location = format!("/orders/{}", order.id);
    (status, [(header::LOCATION, location)], Json(order)).into_response()
}

/// What `POST /orders` did.
#[derive(Debug)]
enum Placed {
    /// A new order, committed with its `order.placed` event.
    New(OrderView),
    /// The `Idempotency-Key` was seen before with the same request: that order, unchanged.
    Replayed(OrderView),
    /// The `Idempotency-Key` was seen before with another request.
    KeyReused,
}

/// `POST /orders` in its SERVER span (parented to the `traceparent` header); `order.placed`
/// gets a PRODUCER span under it, recorded if the order was committed (answered 201).
async fn place_order(
    State(parts): State<Parts>,
    Extension(admission): Extension<Arc<Admission>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrder>,
) -> Result<Response, ApiError> {
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let trace = parts.traces.request("POST", "/orders", traceparent);
    // Every log line of the request carries its trace id (with traces off and no
    // `traceparent`, the new order's event's) and, with traces on, its span id: recorded once
    // the event is stamped, before anything is logged.
    let span = tracing::info_span!(
        "request",
        method = "POST",
        route = "/orders",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let answer = place_order_traced(&parts, &admission, &headers, request, &trace)
        .instrument(span)
        .await;
    let status = answer.as_ref().map_or_else(|e| e.status, Response::status);
    trace.set_http_status(status.as_u16());
    trace.end(&match status {
        StatusCode::CREATED => Outcome::Handled(Vec::new()),
        _ => Outcome::Unchanged,
    });
    answer
}

async fn place_order_traced(
    parts: &Parts,
    admission: &Admission,
    headers: &HeaderMap,
    request: PlaceOrder,
    trace: &Unit,
) -> Result<Response, ApiError> {
    let total = request.validate().map_err(ApiError::unprocessable)?;
    let key = idempotency_key(headers)?;
    if let Err(refused) = admission.admit(&parts.database).await {
        return Ok(shed(refused));
    }
    let canonical = serde_json::to_string(&request).unwrap_or_default();

    let id = uuid::Uuid::now_v7().to_string();
    let now = choreo_store::now_text();
    let event = Event::OrderPlaced(OrderPlaced {
        order_id: id.clone(),
        customer_id: request.customer_id.clone(),
        items: request.items.clone(),
        total_cents: total,
        currency: request.currency.clone(),
        shipping_address: request.shipping_address.clone(),
    });
    let envelope = trace.stamp(Envelope::root(ORDERS.name, &event));
    trace.record_ids(&tracing::Span::current(), envelope.traceparent.as_deref());
    // The order as it will be committed: the answer needs no read-back.
    let order = OrderView {
        history: vec![HistoryEntry {
            at: now.clone(),
            event_type: envelope.event_type.clone(),
            event_id: envelope.id.clone(),
            status: OrderStatus::Pending.as_str().to_owned(),
        }],
        id,
        customer_id: request.customer_id,
        status: OrderStatus::Pending.as_str().to_owned(),
        cancellation_reason: None,
        total_cents: total,
        currency: request.currency,
        items: request.items,
        shipping_address: request.shipping_address,
        created_at: now.clone(),
        updated_at: now,
    };

    // One unit of work: the key look-up, the order, its history, its event and the key.
    let (work_key, work_canonical) = (key.clone(), canonical.clone());
    let placed = match parts
        .database
        .write(move |tx| place(tx, work_key.as_deref(), &work_canonical, order, &envelope))
        .await
    {
        Ok(placed) => placed,
        Err(error) => match key {
            // Another replica took the key between our look-up and our insert: answer as it did.
            Some(key) if error.is_unique_violation() => parts
                .database
                .read(move |tx| replay(tx, &key, &canonical))
                .await?
                .ok_or_else(|| ApiError::unavailable(error))?,
            _ => return Err(error.into()),
        },
    };
    match placed {
        Placed::New(order) => {
            let _ = parts.failpoints.hit("orders.after_commit");
            parts.waker.wake();
            tracing::info!(order_id = %order.id, total_cents = order.total_cents, "order placed");
            Ok(created(StatusCode::CREATED, order))
        }
        Placed::Replayed(order) => Ok(created(StatusCode::OK, order)),
        Placed::KeyReused => Err(ApiError::new(
            StatusCode::CONFLICT,
            "Idempotency-Key was already used with a different request",
        )),
    }
}

/// The unit of work of `POST /orders`, on the database thread.
fn place(
    tx: &mut dyn Tx,
    key: Option<&str>,
    canonical: &str,
    order: OrderView,
    envelope: &Envelope,
) -> Result<Placed, choreo_store::Error> {
    if let Some(key) = key
        && let Some(replayed) = replay(tx, key, canonical)?
    {
        return Ok(replayed);
    }
    let new = NewOrder {
        id: &order.id,
        customer_id: &order.customer_id,
        total_cents: order.total_cents,
        currency: &order.currency,
        items: &order.items,
        shipping_address: &order.shipping_address,
        now: &order.created_at,
    };
    store::insert_order(tx, &new)?;
    for entry in &order.history {
        store::insert_history(tx, &order.id, entry)?;
    }
    Outbox::enqueue(tx, envelope)?;
    if let Some(key) = key {
        store::insert_idempotency_key(tx, key, canonical, &order.id, &order.created_at)?;
    }
    Ok(Placed::New(order))
}

/// What a request whose `Idempotency-Key` was seen before gets: the same order, or a conflict
/// if the key came with a different request; `None` for a new key.
fn replay(
    tx: &mut dyn Tx,
    key: &str,
    canonical: &str,
) -> Result<Option<Placed>, choreo_store::Error> {
    let Some((request, order_id)) = store::find_idempotency_key(tx, key)? else {
        return Ok(None);
    };
    if request != canonical {
        return Ok(Some(Placed::KeyReused));
    }
    let order = store::get_order(tx, &order_id)?.ok_or_else(|| {
        choreo_store::Error::Failed(format!("the order {order_id} of a known key is missing"))
    })?;
    Ok(Some(Placed::Replayed(order)))
}

async fn get_order(
    State(parts): State<Parts>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    // An id that is not UTF-8 (`/orders/%FF`) gets the contract's JSON error, not axum's text.
    let Path(id) = id.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid order id")
            .with_details(vec![rejection.body_text()])
    })?;
    let order = {
        let id = id.clone();
        parts
            .database
            .read(move |tx| store::get_order(tx, &id))
            .await?
    };
    order
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no order {id}")))
}

/// The query of `GET /orders`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Only orders in this status.
    #[schemars(extend("enum" = OrderStatus::NAMES))]
    pub status: Option<String>,
    /// How many orders at most.
    #[schemars(range(min = 1, max = MAX_LIMIT), extend("default" = DEFAULT_LIMIT))]
    pub limit: Option<i64>,
}

/// The largest page of `GET /orders`, and the default one.
pub const MAX_LIMIT: i64 = 500;
pub const DEFAULT_LIMIT: i64 = 50;

async fn list_orders(
    State(parts): State<Parts>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<OrderList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::unprocessable(vec![rejection.body_text()]))?;
    let status = query.status.filter(|s| !s.is_empty());
    if let Some(status) = &status
        && !OrderStatus::NAMES.contains(&status.as_str())
    {
        return Err(ApiError::unprocessable(vec![format!(
            "status must be one of pending, paid, completed, cancelled; got {status:?}"
        )]));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::unprocessable(vec![format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )]));
    }
    let orders = parts
        .database
        .read(move |tx| store::list_orders(tx, status.as_deref(), limit))
        .await?;
    Ok(Json(OrderList { orders }))
}
