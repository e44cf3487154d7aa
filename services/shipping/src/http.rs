//! The shipping HTTP API: `GET /shipments?order_id=`.

use crate::store;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use choreo_host::http::ApiError;
use choreo_host::service::Parts;
use serde::Deserialize;
use serde_json::json;

/// How many shipments `GET /shipments` lists without an `order_id`.
pub const LIST_LIMIT: i64 = 100;

pub fn routes(parts: &Parts) -> Router {
    Router::new()
        .route("/shipments", get(list_shipments))
        .with_state(parts.clone())
}

#[derive(Debug, Deserialize)]
pub struct ShipmentsQuery {
    pub order_id: Option<String>,
}

async fn list_shipments(
    State(parts): State<Parts>,
    query: Result<Query<ShipmentsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::unprocessable(vec![rejection.body_text()]))?;
    let order_id = query.order_id.filter(|id| !id.is_empty());
    let shipments = parts
        .database
        .read(move |tx| store::list_shipments(tx, order_id.as_deref(), LIST_LIMIT))
        .await?;
    Ok(Json(json!({ "shipments": shipments })))
}
