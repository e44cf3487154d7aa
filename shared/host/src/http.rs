//! The HTTP conventions of the contract: every error is `{"error", "details"}` JSON with a 4xx
//! status for bad input (400 malformed JSON, 404, 409, 413 over 64 KiB, 422 invalid values), never
//! a 500; and `/healthz`, `/readyz` on every service.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use choreo_messaging::BrokerHealth;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    pub fn unprocessable(details: Vec<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid request").with_details(details)
    }

    /// A failure of ours (the database is down): 503, so clients retry; logged with its cause.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable, retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "details": self.details})),
        )
            .into_response()
    }
}

impl From<choreo_store::Error> for ApiError {
    /// Whatever the database says, it is not the client's fault: 503, so the client retries.
    fn from(error: choreo_store::Error) -> Self {
        ApiError::unavailable(error)
    }
}

/// A JSON body, whatever the `Content-Type`, with the contract's errors: 413 over
/// [`BODY_LIMIT`], 400 for bytes that are not JSON, 422 for JSON of the wrong shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(ref failure)
                    if failure.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over {BODY_LIMIT} bytes"),
                    )
                }
                other => ApiError::new(other.status(), other.body_text()),
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON with the contract's statuses.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => ApiError::unprocessable(vec![error.to_string()]),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed JSON")
                    .with_details(vec![error.to_string()])
            }
        }
    })
}

/// What `/readyz` checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub database: choreo_store::Database,
    pub broker: Arc<BrokerHealth>,
}

/// `/healthz` and `/readyz`, plus JSON answers for unknown routes and methods, around `routes`.
pub fn with_conventions(routes: Router, readiness: Readiness) -> Router {
    routes
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz).with_state(readiness))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let database = readiness.database.ping().await;
    let broker = readiness.broker.connected();
    let consumer = readiness.broker.consuming();
    let verdict = |ok: bool| if ok { "ok" } else { "failing" };
    let body = json!({"checks": {"broker": verdict(broker), "consumer": verdict(consumer), "database": verdict(database)}});
    let status = if database && broker && consumer {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
