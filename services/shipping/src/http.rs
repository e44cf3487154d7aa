//! The shipping HTTP API: `GET /shipments?order_id=`.

use crate::store;
use crate::store::ShipmentView;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use choreo_events::topology::SHIPPING;
use choreo_host::http::{ApiError, Routes};
use choreo_host::openapi::OpenApi;
use choreo_host::service::Parts;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How many shipments `GET /shipments` lists without an `order_id`.
pub const LIST_LIMIT: i64 = 100;

/// The routes of the shipping API.
pub fn routes(parts: &Parts) -> Router {
    routing().with_state(parts.clone())
}

/// The routes, before they get their state: what [`openapi`] must document.
pub fn routing() -> Routes<Parts> {
    Routes::default().route("/shipments", get(list_shipments))
}

/// The OpenAPI document of the shipping API, served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        SHIPPING.name,
        8082,
        "Ships orders whose payment was captured, to the countries it serves. Its HTTP API only reads. Errors are `{\"error\", \"details\"}`.",
    );
    let parameters = api.query_parameters::<ShipmentsQuery>();
    let list = api.json_response::<ShipmentList>("The shipments, newest first.");
    let invalid = api.error_response("A malformed query.");
    api.operation(
        "get",
        "/shipments",
        json!({
            "operationId": "listShipments",
            "summary": "List shipments",
            "tags": ["shipments"],
            "parameters": parameters,
            "responses": {"200": list, "422": invalid},
        }),
    );
    api.finish()
}

/// The query of `GET /shipments`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ShipmentsQuery {
    /// Only the shipments of this order; without it, the latest 100.
    pub order_id: Option<String>,
}

/// The answer of `GET /shipments`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ShipmentList {
    pub shipments: Vec<ShipmentView>,
}

async fn list_shipments(
    State(parts): State<Parts>,
    query: Result<Query<ShipmentsQuery>, QueryRejection>,
) -> Result<Json<ShipmentList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::unprocessable(vec![rejection.body_text()]))?;
    let order_id = query.order_id.filter(|id| !id.is_empty());
    let shipments = parts
        .database
        .read(move |tx| store::list_shipments(tx, order_id.as_deref(), LIST_LIMIT))
        .await?;
    Ok(Json(ShipmentList { shipments }))
}
