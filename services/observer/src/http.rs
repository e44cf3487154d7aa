//! The observer's HTTP API and live page: `GET /` (the page), `GET /flow` (the declared flow with
//! counts), `GET /sagas?state=&limit=`, `GET /sagas/{order_id}` (timeline and causation tree),
//! and `GET /live` (server-sent events for the page, outside the request timeout, since a stream
//! stays open). `GET /metrics` is the service's, like every service's (see [`crate::metrics`]).

use crate::recent::{Latency, MinuteFigures};
use crate::saga::{Deadlines, SagaState};
use crate::store::{self, ObservedEvent, SagaSummary};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use choreo_events::EventType;
use choreo_events::flow::{self, StepKind};
use choreo_events::topology::{OBSERVER, SERVICES};
use choreo_host::http::{ApiError, Routes};
use choreo_host::openapi::OpenApi;
use choreo_store::Database;
use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The page: plain HTML and a little JavaScript, compiled into the binary.
const PAGE: &str = include_str!("page.html");

/// How many sagas `GET /sagas` lists unless `limit` says otherwise, and the most it lists.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// What the bounded routes use.
#[derive(Debug, Clone)]
pub struct Web {
    pub database: Database,
    pub deadlines: Deadlines,
    /// The sweep's count of the last minute's events, for the map.
    pub last_minute: crate::watch::LastMinute,
    /// The last hour by minute, for the arrows' times and the charts.
    pub recent: crate::recent::Recent,
}

/// What the live stream uses.
#[derive(Debug, Clone)]
pub struct Live {
    pub feed: broadcast::Sender<Arc<str>>,
    /// Cancelled when the observer stops, ending every stream so the HTTP server can stop.
    pub stop: CancellationToken,
    /// One permit per stream open ([`Live::streams_for`]): one more is refused with 503.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// How long one stream lasts; the page opens the next a second after it ends.
    pub lifetime: std::time::Duration,
}

/// How long a live stream lasts before the server ends it (the page reconnects by itself).
pub const LIVE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

impl Live {
    /// The most live streams open at once for a server that keeps at most `max_connections`
    /// connections: 16, and at most a quarter of them (but one), so streams cannot take the
    /// connections health checks and the API need (each stream holds one for its lifetime,
    /// outside the concurrency limit and the request timeout).
    pub fn streams_for(max_connections: usize) -> usize {
        (max_connections / 4).clamp(1, 16)
    }
}

/// The bounded routes, with their state.
pub fn routes(web: Web) -> Router {
    routing().with_state(web)
}

/// The bounded routes, before they get their state: what [`openapi`] must document.
pub fn routing() -> Routes<Web> {
    Routes::default()
        .route("/", get(page))
        .route("/flow", get(flow_map))
        .route("/sagas", get(list_sagas))
        .route("/sagas/{order_id}", get(saga_detail))
}

/// The live stream's route, outside the concurrency limit and request timeout.
pub fn live_routing() -> Routes<Live> {
    Routes::default().route("/live", get(live))
}

/// The OpenAPI document of the observer, served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        OBSERVER.name,
        8083,
        "Watches every event of the saga (it takes part in nothing and publishes nothing), keeps each order's timeline and judges it against the declared flow: running, stuck (a step overdue), failed (the flow broken: an illegal sequence, a missing compensation, a duplicate effect), cancelled (ended by `order.cancelled`, by the flow: a business outcome) or completed. Errors are `{\"error\", \"details\"}`.",
    );
    let html = json!({"description": "The live page.", "content": {"text/html": {"schema": {"type": "string"}}}});
    api.operation(
        "get",
        "/",
        json!({"operationId": "getPage", "summary": "The live map of the flow", "description": "Open without a token: the page holds no data, and asks for the API token itself when the API answers 401.", "tags": ["page"], "security": [], "responses": {"200": html}}),
    );
    let flow = api.json_response::<FlowMap>("The declared flow, with counts.");
    api.operation(
        "get",
        "/flow",
        json!({"operationId": "getFlow", "summary": "The declared flow, with counts, rates and times of each event type, and the last hour by minute", "tags": ["flow"], "responses": {"200": flow}}),
    );
    let parameters = api.query_parameters::<SagasQuery>();
    let list = api.json_response::<SagaList>("The sagas, newest first.");
    let invalid = api.error_response("An unknown state or a limit out of range.");
    api.operation(
        "get",
        "/sagas",
        json!({"operationId": "listSagas", "summary": "List sagas", "tags": ["sagas"], "parameters": parameters, "responses": {"200": list, "422": invalid}}),
    );
    let detail = api.json_response::<SagaDetail>("The saga with its timeline.");
    let missing = api.error_response("The observer has seen no event of this order.");
    let invalid_id = api.error_response("An order id that is not UTF-8.");
    api.operation(
        "get",
        "/sagas/{order_id}",
        json!({
            "operationId": "getSaga",
            "summary": "One saga: timeline, causation tree, services, current step, what is expected next and by when",
            "tags": ["sagas"],
            "parameters": [{"name": "order_id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": detail, "400": invalid_id, "404": missing},
        }),
    );
    let too_many =
        api.error_response("Every live stream place is taken: try again after `Retry-After`.");
    let stream = json!({"description": "`update` events, each a JSON object `{\"events\": [...], \"sagas\": [...]}` of what changed.", "content": {"text/event-stream": {"schema": {"type": "string"}}}});
    api.operation(
        "get",
        "/live",
        json!({"operationId": "getLive", "summary": "Server-sent events for the live page (not bounded by the request timeout)", "description": "At most 16 streams at once, and at most a quarter of `CHOREO_HTTP_MAX_CONNECTIONS` (but one); each ends after 5 minutes (the page opens the next).", "tags": ["page"], "responses": {"200": stream, "503": too_many}}),
    );
    api.finish()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The flow as the page draws it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FlowMap {
    /// The services, one lane each, in the order of the saga.
    pub lanes: Vec<String>,
    pub start: String,
    pub terminal: Vec<String>,
    pub events: Vec<FlowEvent>,
    pub steps: Vec<FlowStep>,
    /// End to end over the last hour: a terminal event's time less its saga's first.
    pub end_to_end: Option<Latency>,
    /// The last hour, a minute each, oldest first.
    pub minutes: Vec<MinuteFigures>,
}

/// One event type: an arrow from its publisher to its consumers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FlowEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub publisher: String,
    pub consumers: Vec<String>,
    /// Its distance from the start along the flow: the map's column.
    pub column: usize,
    /// Events of this type stored, ever and in the last minute (by when the observer stored
    /// them, as of its last sweep).
    pub count: i64,
    pub last_minute: i64,
    /// Over the last hour, its time less its cause's; none for the start, which has no cause.
    pub latency: Option<Latency>,
}

/// One step of the declared flow.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FlowStep {
    pub on: String,
    pub by: String,
    pub emits: Vec<String>,
    /// The deadline in force (the setting's, or the flow's own).
    pub within_ms: u64,
    pub compensation: bool,
}

async fn flow_map(State(web): State<Web>) -> Result<Json<FlowMap>, ApiError> {
    let now = choreo_store::now();
    let counts = web.database.read(store::counts).await?;
    let count_of = |event_type: EventType| {
        let name = event_type.routing_key();
        (
            store::Counts::of(&counts.events, name),
            web.last_minute.of(name),
        )
    };
    Ok(Json(FlowMap {
        lanes: SERVICES.iter().map(|s| s.name.to_owned()).collect(),
        start: flow::START.routing_key().to_owned(),
        terminal: flow::TERMINAL
            .iter()
            .map(|t| t.routing_key().to_owned())
            .collect(),
        events: EventType::ALL
            .iter()
            .map(|t| {
                let (count, last_minute) = count_of(*t);
                FlowEvent {
                    event_type: t.routing_key().to_owned(),
                    publisher: t.publisher().name.to_owned(),
                    consumers: flow::consumers_of(*t).map(str::to_owned).collect(),
                    column: flow::depth(*t),
                    count,
                    last_minute,
                    latency: web.recent.step(now, t.routing_key()),
                }
            })
            .collect(),
        steps: flow::FLOW
            .iter()
            .map(|step| FlowStep {
                on: step.on.routing_key().to_owned(),
                by: step.by.to_owned(),
                emits: step
                    .emits
                    .iter()
                    .map(|t| t.routing_key().to_owned())
                    .collect(),
                within_ms: u64::try_from(web.deadlines.within(step).as_millis())
                    .unwrap_or(u64::MAX),
                compensation: step.kind == StepKind::Compensation,
            })
            .collect(),
        end_to_end: web.recent.end_to_end(now),
        minutes: web.recent.minutes(now),
    }))
}

/// The query of `GET /sagas`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SagasQuery {
    /// `running`, `stuck`, `failed`, `cancelled` or `completed`; without it, every saga.
    pub state: Option<String>,
    /// At most this many (1 to 1000; 100 without it), newest first.
    pub limit: Option<i64>,
}

/// The answer of `GET /sagas`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SagaList {
    pub sagas: Vec<SagaSummary>,
}

async fn list_sagas(
    State(web): State<Web>,
    query: Result<Query<SagasQuery>, QueryRejection>,
) -> Result<Json<SagaList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::unprocessable(vec![rejection.body_text()]))?;
    let mut problems = Vec::new();
    let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            let state = SagaState::parse(text);
            if state.is_none() {
                problems.push(format!(
                    "state must be running, stuck, failed, cancelled or completed, not {text:?}"
                ));
            }
            state
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        problems.push(format!("limit must be 1 to {MAX_LIMIT}, not {limit}"));
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(problems));
    }
    let sagas = web
        .database
        .read(move |tx| store::list(tx, state, limit))
        .await?;
    Ok(Json(SagaList { sagas }))
}

/// One saga in full.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SagaDetail {
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// The services that took part or are expected to, in the order they appear.
    pub services: Vec<String>,
    /// Every event of the order, in time order, with the time since the previous one.
    pub timeline: Vec<TimelineEntry>,
    /// The events as a tree: each under the event that caused it.
    pub causation: Vec<CausationNode>,
}

/// One event of a timeline.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimelineEntry {
    #[serde(flatten)]
    pub event: ObservedEvent,
    /// Milliseconds since the first event of the order.
    pub since_start_ms: i64,
    /// Milliseconds since the event before it (null for the first).
    pub since_previous_ms: Option<i64>,
}

/// An event and what it caused.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CausationNode {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub time: String,
    pub children: Vec<CausationNode>,
}

async fn saga_detail(
    State(web): State<Web>,
    order_id: Result<Path<String>, PathRejection>,
) -> Result<Json<SagaDetail>, ApiError> {
    // An id that is not UTF-8 (`/sagas/%FF`) gets the contract's JSON error, not axum's text.
    let Path(order_id) = order_id.map_err(|rejection| {
        ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid order id")
            .with_details(vec![rejection.body_text()])
    })?;
    let id = order_id.clone();
    let (summary, events) = web
        .database
        .read(move |tx| {
            Ok::<_, choreo_store::Error>((store::saga(tx, &id)?, store::events_of(tx, &id)?))
        })
        .await?;
    let Some(summary) = summary else {
        return Err(ApiError::not_found(format!(
            "the observer has seen no event of order {order_id}"
        )));
    };
    Ok(Json(detail(summary, events)))
}

/// The timeline, services and causation tree of a saga from its events.
pub fn detail(summary: SagaSummary, mut events: Vec<ObservedEvent>) -> SagaDetail {
    events.sort_by(|a, b| (&a.time, a.seq).cmp(&(&b.time, b.seq)));
    let millis = |time: &str| {
        chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    };
    let start = events.first().map(|e| millis(&e.time)).unwrap_or_default();
    let mut previous: Option<i64> = None;
    let mut timeline = Vec::with_capacity(events.len());
    for event in &events {
        let at = millis(&event.time);
        timeline.push(TimelineEntry {
            event: event.clone(),
            since_start_ms: at - start,
            since_previous_ms: previous.map(|p| at - p),
        });
        previous = Some(at);
    }
    let mut services: Vec<String> = Vec::new();
    let expected = summary.expected.iter().map(|e| &e.by);
    for name in events.iter().map(|e| &e.source).chain(expected) {
        if !services.contains(name) {
            services.push(name.clone());
        }
    }
    let known = |id: &Option<String>| {
        id.as_ref()
            .is_some_and(|id| events.iter().any(|e| &e.event_id == id))
    };
    let causation = events
        .iter()
        .filter(|e| !known(&e.causation_id))
        .map(|root| node(root, &events, 0))
        .collect();
    SagaDetail {
        summary,
        services,
        timeline,
        causation,
    }
}

fn node(event: &ObservedEvent, events: &[ObservedEvent], depth: usize) -> CausationNode {
    // A saga has a handful of events; the depth bound only guards against a forged cycle.
    let children = if depth < 32 {
        events
            .iter()
            .filter(|e| e.causation_id.as_deref() == Some(event.event_id.as_str()))
            .map(|child| node(child, events, depth + 1))
            .collect()
    } else {
        Vec::new()
    };
    CausationNode {
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        source: event.source.clone(),
        time: event.time.clone(),
        children,
    }
}

async fn live(State(live): State<Live>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Held by the stream for as long as it lasts.
    let Ok(permit) = live.streams.clone().try_acquire_owned() else {
        return (
            [(axum::http::header::RETRY_AFTER, "5")],
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too many live streams, retry later",
            ),
        )
            .into_response();
    };
    let updates = futures_util::stream::unfold(live.feed.subscribe(), |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(update) => SseEvent::default().event("update").data(&*update),
            // Too slow a reader missed updates: it reads the lists again.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                SseEvent::default().event("lagged").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), receiver))
    });
    let hello =
        futures_util::stream::once(async { Ok(SseEvent::default().event("hello").data("{}")) });
    let ended = {
        let stop = live.stop.clone();
        let lifetime = live.lifetime;
        async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(lifetime) => {}
            }
        }
    };
    let stream = hello.chain(updates).take_until(ended).map(move |item| {
        // The permit goes when the stream is dropped: when it ends or its client goes.
        let _held = &permit;
        item
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{Expectation, SagaState};

    fn event(seq: i64, id: &str, event_type: &str, cause: Option<&str>, ms: u32) -> ObservedEvent {
        ObservedEvent {
            seq,
            event_id: id.into(),
            order_id: "o".into(),
            event_type: event_type.into(),
            source: EventType::from_routing_key(event_type)
                .map(|t| t.publisher().name.to_owned())
                .unwrap_or_default(),
            causation_id: cause.map(str::to_owned),
            time: format!("2027-01-15T08:00:00.{ms:03}Z"),
            observed_at: String::new(),
            data: json!({}),
        }
    }

    #[test]
    fn a_timeline_is_in_time_order_with_the_gaps_and_the_causation_tree() {
        let summary = SagaSummary {
            order_id: "o".into(),
            state: SagaState::Stuck,
            current_step: "payment.captured".into(),
            started_at: String::new(),
            last_event_at: String::new(),
            next_deadline: None,
            expected: vec![Expectation {
                after: "payment.captured".into(),
                after_event_id: "c".into(),
                by: "shipping".into(),
                one_of: vec!["shipment.dispatched".into()],
                due: String::new(),
                overdue: true,
                compensation: false,
            }],
            anomalies: Vec::new(),
        };
        // Stored out of time order: the capture was seen first.
        let events = vec![
            event(1, "c", "payment.captured", Some("p"), 40),
            event(2, "p", "order.placed", None, 10),
        ];

        let detail = detail(summary, events);

        let types: Vec<&str> = detail
            .timeline
            .iter()
            .map(|e| e.event.event_type.as_str())
            .collect();
        assert_eq!(types, ["order.placed", "payment.captured"]);
        assert_eq!(detail.timeline[1].since_previous_ms, Some(30));
        assert_eq!(detail.services, ["orders", "billing", "shipping"]);
        assert_eq!(detail.causation.len(), 1);
        assert_eq!(detail.causation[0].children[0].event_id, "c");
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::time::Duration;
    use tower::ServiceExt;

    fn router(streams: usize, lifetime: Duration) -> (Router, broadcast::Sender<Arc<str>>) {
        let (feed, _) = broadcast::channel(16);
        let live = Live {
            feed: feed.clone(),
            stop: CancellationToken::new(),
            streams: Arc::new(tokio::sync::Semaphore::new(streams)),
            lifetime,
        };
        (live_routing().with_state(live), feed)
    }

    async fn open(router: &Router) -> axum::response::Response {
        router
            .clone()
            .oneshot(Request::get("/live").body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    /// A client that opens stream after stream (the flood of the issue) gets at most the cap,
    /// then a 503 in JSON with Retry-After; a stream that ends, or whose client goes, frees its
    /// place; and no stream outlives its lifetime.
    #[tokio::test]
    async fn live_streams_are_capped_freed_when_they_go_and_end_after_their_lifetime() {
        let (router, _feed) = router(2, Duration::from_millis(300));
        let first = open(&router).await;
        let second = open(&router).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(second.status(), StatusCode::OK);

        let refused = open(&router).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            refused
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or_default()),
            Some("5")
        );
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
            .await
            .expect("body");
        assert!(
            String::from_utf8_lossy(&body).contains("too many live streams"),
            "{body:?}"
        );

        drop(first);
        assert_eq!(
            open(&router).await.status(),
            StatusCode::OK,
            "a client gone frees its place"
        );

        let started = std::time::Instant::now();
        let whole = tokio::time::timeout(
            Duration::from_secs(5),
            axum::body::to_bytes(second.into_body(), 1 << 20),
        )
        .await
        .expect("the stream ends by itself")
        .expect("read");
        assert!(String::from_utf8_lossy(&whole).contains("event: hello"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn streams_take_at_most_a_quarter_of_the_connections_but_one() {
        assert_eq!(Live::streams_for(1024), 16);
        assert_eq!(Live::streams_for(40), 10);
        assert_eq!(Live::streams_for(4), 1);
        assert_eq!(Live::streams_for(1), 1);
    }
}
