//! The billing HTTP API: `GET /payments?order_id=`.

use crate::store;
use crate::store::PaymentView;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use choreo_events::topology::BILLING;
use choreo_host::http::{ApiError, Routes};
use choreo_host::openapi::OpenApi;
use choreo_host::service::Parts;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How many payments `GET /payments` lists without an `order_id`.
pub const LIST_LIMIT: i64 = 100;

/// The routes of the billing API.
pub fn routes(parts: &Parts) -> Router {
    routing().with_state(parts.clone())
}

/// The routes, before they get their state: what [`openapi`] must document.
pub fn routing() -> Routes<Parts> {
    Routes::default().route("/payments", get(list_payments))
}

/// The OpenAPI document of the billing API, served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        BILLING.name,
        8081,
        "Charges orders when they are placed (or declines them over the limit) and refunds a captured payment when its shipment failed. Its HTTP API only reads. Errors are `{\"error\", \"details\"}`.",
    );
    let parameters = api.query_parameters::<PaymentsQuery>();
    let list = api.json_response::<PaymentList>("The payments, newest first.");
    let invalid = api.error_response("A malformed query.");
    api.operation(
        "get",
        "/payments",
        json!({
            "operationId": "listPayments",
            "summary": "List payments",
            "tags": ["payments"],
            "parameters": parameters,
            "responses": {"200": list, "422": invalid},
        }),
    );
    api.finish()
}

/// The query of `GET /payments`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PaymentsQuery {
    /// Only the payments of this order; without it, the latest 100.
    pub order_id: Option<String>,
}

/// The answer of `GET /payments`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PaymentList {
    pub payments: Vec<PaymentView>,
}

async fn list_payments(
    State(parts): State<Parts>,
    query: Result<Query<PaymentsQuery>, QueryRejection>,
) -> Result<Json<PaymentList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::unprocessable(vec![rejection.body_text()]))?;
    let order_id = query.order_id.filter(|id| !id.is_empty());
    let payments = parts
        .database
        .read(move |tx| store::list_payments(tx, order_id.as_deref(), LIST_LIMIT))
        .await?;
    Ok(Json(PaymentList { payments }))
}
