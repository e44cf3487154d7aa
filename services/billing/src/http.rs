//! The billing HTTP API: `GET /payments?order_id=`.

use crate::store;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use choreo_host::http::ApiError;
use choreo_host::service::Parts;
use serde::Deserialize;
use serde_json::json;

/// How many payments `GET /payments` lists without an `order_id`.
pub const LIST_LIMIT: i64 = 100;

pub fn routes(parts: &Parts) -> Router {
    Router::new()
        .route("/payments", get(list_payments))
        .with_state(parts.clone())
}

#[derive(Debug, Deserialize)]
pub struct PaymentsQuery {
    pub order_id: Option<String>,
}

async fn list_payments(
    State(parts): State<Parts>,
    query: Result<Query<PaymentsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::unprocessable(vec![rejection.body_text()]))?;
    let order_id = query.order_id.filter(|id| !id.is_empty());
    let payments = parts
        .database
        .read(move |tx| store::list_payments(tx, order_id.as_deref(), LIST_LIMIT))
        .await?;
    Ok(Json(json!({ "payments": payments })))
}
