//! The HTTP conventions of the contract: every error is `{"error", "details"}` JSON with a 4xx
//! status for bad input (400 malformed JSON, 404, 409, 413 over 64 KiB, 422 invalid values), never
//! a 500; and `/healthz`, `/readyz`, `/openapi.json` and `/metrics` on every service.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::routing::get;
use axum::{Json, Router};
use choreo_messaging::BrokerHealth;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, in one sentence.
    pub error: String,
    /// Every problem found: a 422 lists each invalid value.
    pub details: Vec<String>,
}

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
        let body = ErrorBody {
            error: self.error,
            details: self.details,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<choreo_store::Error> for ApiError {
    /// Whatever the database says, it is not the client's fault: 503, so the client retries.
    fn from(error: choreo_store::Error) -> Self {
        ApiError::unavailable(error)
    }
}

/// A JSON body with the contract's errors: 415 unless the `Content-Type` says JSON (so a
/// cross-site `text/plain` form cannot post one without a CORS preflight), 413 over
/// [`BODY_LIMIT`], 400 for bytes that are not JSON, 422 for JSON of the wrong shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !declares_json(&request) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or `application/<something>+json`, with
/// or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// How much HTTP work a service takes on at once, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests handled at once; one more is shed at once with 503 and `Retry-After`.
    pub max_concurrent: usize,
    /// How long one request may take before it is answered 503. Work it queued on SQLite still
    /// commits (only its answer is lost); on PostgreSQL the dropped transaction rolls back.
    /// Either way a client retrying with its `Idempotency-Key` gets exactly one order.
    pub request_timeout: std::time::Duration,
    /// How long a request's body may take to arrive once its head is in. A body declared JSON
    /// is read in whole (up to [`BODY_LIMIT`]) before the request takes a concurrency slot, so
    /// a body sent a byte at a time holds a connection, never a slot; past this it is answered
    /// 408. Any other body is never read.
    pub body_timeout: std::time::Duration,
}

/// `router` with [`Limits`]: each request's body read first, within its own timeout; then a
/// shared concurrency limit (not one per route), load shedding in front of it and a timeout
/// behind it, each refusal in the contract's JSON shape.
pub fn bounded(router: Router, limits: Limits) -> Router {
    router
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(refusal))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrent,
                ))
                .timeout(limits.request_timeout),
        )
        .layer(axum::middleware::from_fn_with_state(
            limits.body_timeout,
            read_body_first,
        ))
}

/// Reads a body declared JSON in whole within `timeout` (and within the body limit of
/// [`with_conventions`]), then hands the request on with the body in memory. Any other body is
/// handed on unread: no route reads one ([`JsonBody`] answers 415 before reading), so it holds
/// no slot for longer than the answer takes.
async fn read_body_first(
    State(timeout): State<std::time::Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if !declares_json(&request) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let reading = axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), &());
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(rejection)) => body_rejection(rejection).into_response(),
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "request body too slow")
            .with_details(vec![format!(
                "the body must arrive within {} ms of the request head",
                timeout.as_millis()
            )])
            .into_response(),
    }
}

/// Whether `request`'s `Content-Type` says JSON ([`is_json`]).
fn declares_json(request: &Request) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_json)
}

/// The contract's answer to a body that could not be read: 413 over [`BODY_LIMIT`].
fn body_rejection(rejection: BytesRejection) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(ref failure)
            if failure.status() == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {BODY_LIMIT} bytes"),
            )
        }
        other => ApiError::new(other.status(), other.body_text()),
    }
}

/// The `error` of the 503 a request gets when it is shed at the concurrency limit, before it
/// ran: a client may send it again after `Retry-After`.
pub const OVERLOADED: &str = "overloaded, retry later";

/// The answer to a request the bounds refused.
async fn refusal(error: tower::BoxError) -> Response {
    let (error, details) = if error.is::<tower::load_shed::error::Overloaded>() {
        (OVERLOADED, "too many requests in progress")
    } else if error.is::<tower::timeout::error::Elapsed>() {
        (
            "timed out, retry later",
            "the request took longer than allowed",
        )
    } else {
        tracing::error!(%error, "request failed");
        ("temporarily unavailable, retry later", "internal error")
    };
    let body = ErrorBody {
        error: error.to_owned(),
        details: vec![details.to_owned()],
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// Parses JSON with the contract's statuses.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    let mut json = serde_json::Deserializer::from_slice(bytes);
    // Through serde_path_to_error, so a 422 names the field: serde's own message says which
    // type it expected ("invalid value: integer `-1`, expected u32") but not where.
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let detail = if path == "." {
            inner.to_string()
        } else {
            format!("`{path}`: {inner}")
        };
        match inner.classify() {
            Category::Data => ApiError::unprocessable(vec![detail]),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed JSON").with_details(vec![detail])
            }
        }
    })?;
    // As `serde_json::from_slice` does: nothing but whitespace may follow the value.
    json.end().map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed JSON")
            .with_details(vec![error.to_string()])
    })?;
    Ok(value)
}

/// What `/readyz` checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub database: choreo_store::Database,
    pub broker: Arc<BrokerHealth>,
}

/// The answer of `/healthz`: the process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`: a process that can answer is alive.
    #[schemars(extend("const" = "ok"))]
    pub status: String,
}

/// The answer of `/readyz`: 200 when every check is `ok`, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReadinessReport {
    pub checks: Checks,
}

/// What `/readyz` checks, each `ok` or `failing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Checks {
    /// The broker connection is up.
    pub broker: Check,
    /// The service's consumer is consuming its queue.
    pub consumer: Check,
    /// The database answers.
    pub database: Check,
}

/// The verdict of one readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Ok,
    Failing,
}

impl Check {
    fn of(ok: bool) -> Self {
        if ok { Check::Ok } else { Check::Failing }
    }
}

/// A service's routes together with their paths, which axum cannot list: a test holds the paths
/// against the service's OpenAPI document, so no route goes undocumented.
#[derive(Debug)]
pub struct Routes<S> {
    router: Router<S>,
    paths: Vec<&'static str>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// Adds `path`, as [`Router::route`] does.
    pub fn route(mut self, path: &'static str, method_router: MethodRouter<S>) -> Self {
        self.router = self.router.route(path, method_router);
        self.paths.push(path);
        self
    }

    /// The paths routed, in the order they were added.
    pub fn paths(&self) -> &[&'static str] {
        &self.paths
    }

    /// The router, with its state.
    pub fn with_state(self, state: S) -> Router {
        self.router.with_state(state)
    }
}

/// The paths [`with_conventions`] adds to every service.
pub const CONVENTION_PATHS: [&str; 4] = ["/healthz", "/readyz", "/openapi.json", "/metrics"];

/// `/healthz`, `/readyz`, `/openapi.json` (serving `openapi`) and `/metrics` (serving
/// `metrics`), plus JSON answers for unknown routes and methods, around `routes`.
pub fn with_conventions(
    routes: Router,
    readiness: Readiness,
    openapi: serde_json::Value,
    metrics: crate::metrics::Endpoint,
) -> Router {
    // Serialized once: the document is fixed for the life of the process.
    let openapi: Arc<str> = serde_json::to_string(&openapi).unwrap_or_default().into();
    routes
        .route(
            "/healthz",
            get(|| async {
                Json(Health {
                    status: "ok".to_owned(),
                })
            }),
        )
        .route("/readyz", get(readyz).with_state(readiness))
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi.to_string(),
                )
            }),
        )
        .route("/metrics", get(crate::metrics::scrape).with_state(metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// The answer to a method a route does not have, in the contract's shape (axum's own is an
/// empty body). A router merged in after [`with_conventions`] needs it as its own fallback.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let database = readiness.database.ping().await;
    let broker = readiness.broker.connected();
    let consumer = readiness.broker.consuming();
    let body = ReadinessReport {
        checks: Checks {
            broker: Check::of(broker),
            consumer: Check::of(consumer),
            database: Check::of(database),
        },
    };
    let status = if database && broker && consumer {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_a_422_naming_the_field() {
        #[derive(Debug, serde::Deserialize)]
        struct Line {
            #[expect(dead_code, reason = "only its parsing is tested")]
            quantity: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[expect(dead_code, reason = "only its parsing is tested")]
            items: Vec<Line>,
        }

        let error = parse_json::<Body>(br#"{"items": [{"quantity": -1}]}"#).expect_err("negative");

        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            error.details[0].starts_with("`items[0].quantity`: "),
            "{error:?}"
        );
    }

    #[test]
    fn bytes_after_the_json_value_are_malformed_json() {
        let error = parse_json::<serde_json::Value>(b"{} {}").expect_err("two values");

        assert_eq!(error.status, StatusCode::BAD_REQUEST);
    }

    async fn status_and_body(router: &Router, uri: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        (status, retry_after, text_of(response).await)
    }

    async fn text_of(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn a_request_over_the_concurrency_limit_is_shed_with_retry_after_and_json() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (held, arrived) = (release.clone(), entered.clone());
        let routes = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    arrived.notify_one();
                    held.notified().await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }));
        let router = bounded(
            routes,
            Limits {
                max_concurrent: 1,
                request_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_secs(30),
            },
        );

        let first = tokio::spawn({
            let router = router.clone();
            async move { status_and_body(&router, "/slow").await }
        });
        entered.notified().await;
        // The one slot is taken (by another route: the limit is shared).
        let (status, retry_after, body) = status_and_body(&router, "/fast").await;
        release.notify_one();

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(body.contains("overloaded"), "{body}");
        assert_eq!(first.await.expect("joined").0, StatusCode::OK);
        assert_eq!(status_and_body(&router, "/fast").await.0, StatusCode::OK);
    }

    /// A client that sends a request head, then its body a byte at a time and never the end
    /// (the slow-body attack): it holds no concurrency slot while the body trickles in, so with
    /// one slot another request is served meanwhile, and it is answered 408 in JSON once the
    /// body timeout has passed, without its handler ever running.
    #[tokio::test]
    async fn a_body_that_trickles_in_holds_no_slot_and_is_answered_408_after_its_timeout() {
        let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = handled.clone();
        let routes = Router::new()
            .route(
                "/orders",
                axum::routing::post(move |body: axum::body::Bytes| async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    format!("{} bytes", body.len())
                }),
            )
            .route("/fast", get(|| async { "fast" }));
        let router = bounded(
            routes,
            Limits {
                max_concurrent: 1,
                request_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_millis(300),
            },
        );
        let trickle = futures_util::stream::unfold(0u8, |sent| async move {
            if sent < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{")),
                    sent + 1,
                ))
            } else {
                std::future::pending().await
            }
        });
        let slow = tokio::spawn({
            let router = router.clone();
            async move {
                let request = Request::post("/orders")
                    .header("content-type", "application/json")
                    .body(Body::from_stream(trickle))
                    .expect("request");
                let started = std::time::Instant::now();
                let response = router.oneshot(request).await.expect("infallible");
                let status = response.status();
                (status, text_of(response).await, started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _, body) = status_and_body(&router, "/fast").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the slow body holds no slot: {body}"
        );

        let (status, body, took) = slow.await.expect("joined");
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
        assert!(
            body.contains("\"error\":\"request body too slow\""),
            "{body}"
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 0);

        // A whole body, read first, is handed on as it came.
        let whole = router
            .clone()
            .oneshot(
                Request::post("/orders")
                    .header("content-type", "application/json")
                    .body(Body::from("{\"a\":1}"))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(text_of(whole).await, "7 bytes");
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_503_in_json() {
        let routes = Router::new().route(
            "/stuck",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        );
        let router = bounded(
            routes,
            Limits {
                max_concurrent: 8,
                request_timeout: Duration::from_millis(50),
                body_timeout: Duration::from_secs(30),
            },
        );

        let (status, _, body) = status_and_body(&router, "/stuck").await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("timed out"), "{body}");
    }
}
