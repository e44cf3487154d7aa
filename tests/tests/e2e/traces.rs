//! Traces: one trace per order across the three services, exported by OTLP to a receiver that
//! runs in the test (an axum route `POST /v1/traces` decoding the protobuf the exporters send).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use choreo_e2e::{Options, Suite, Which, order_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/HTTP receiver on a port of its own, keeping every span posted to it.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, spans, task }
    }

    /// What `CHOREO_OTLP_ENDPOINT` names: the base URL, as for a collector on 4318.
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> impl IntoResponse {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            received.push(Received {
                service: service.clone(),
                kind: span.kind(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
            });
        }
    }
    spans.lock().expect("spans").extend(received);
    // An empty `ExportTraceServiceResponse` is zero bytes of protobuf.
    (StatusCode::OK, protobuf, Vec::new())
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The one span `service` sent under `name`.
fn one<'a>(spans: &'a [Received], service: &str, name: &str) -> &'a Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {name:?} span from {service}; all spans: {spans:#?}"
    );
    found[0]
}

/// The `event_id` of the order's history entry of type `event_type`.
fn event_id(order: &serde_json::Value, event_type: &str) -> String {
    order["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|entry| entry["type"] == event_type)
        .and_then(|entry| entry["event_id"].as_str())
        .unwrap_or_else(|| panic!("{event_type} in the history of {order}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_order_through_the_three_services_from_the_callers_traceparent() {
    // Arrange: a receiver, and the three services exporting to it.
    let receiver = Receiver::start().await;
    let mut suite = Suite::start_with(
        Options {
            otlp_endpoint: receiver.endpoint(),
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let (trace_id, caller_span) = (random_hex(16), random_hex(8));

    // Act: the caller's trace goes in with the order, which completes.
    let response = suite
        .http
        .post(suite.url(Which::Orders, "/orders"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&order_request(1500, 2, "AT"))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), 201);
    let order: serde_json::Value = response.json().await.expect("order");
    let id = order["id"].as_str().expect("id");
    let done = suite.wait_for_status(id, "completed").await;
    // A graceful stop flushes each service's exporter: it returns once the receiver answered.
    for which in Which::ALL {
        suite.take(which).stop().await;
    }
    let spans = receiver.spans();

    // Assert: one trace, the caller's, with spans from all three services...
    assert_eq!(spans.len(), 9, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.trace_id, trace_id, "{span:#?}");
    }
    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["billing", "orders", "shipping"]
    );

    // ...each parented to what caused it.
    let request = one(&spans, "orders", "POST /orders");
    assert_eq!(request.kind, SpanKind::Server);
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.attributes["http.response.status_code"], "201");
    let chain = [
        ("orders", "publish order.placed", "orders", "POST /orders"),
        (
            "billing",
            "process order.placed",
            "orders",
            "publish order.placed",
        ),
        (
            "billing",
            "publish payment.captured",
            "billing",
            "process order.placed",
        ),
        (
            "orders",
            "process payment.captured",
            "billing",
            "publish payment.captured",
        ),
        (
            "shipping",
            "process payment.captured",
            "billing",
            "publish payment.captured",
        ),
        (
            "shipping",
            "publish shipment.dispatched",
            "shipping",
            "process payment.captured",
        ),
        (
            "orders",
            "process shipment.dispatched",
            "shipping",
            "publish shipment.dispatched",
        ),
        (
            "orders",
            "publish order.completed",
            "orders",
            "process shipment.dispatched",
        ),
    ];
    for (service, name, parent_service, parent_name) in chain {
        let span = one(&spans, service, name);
        let parent = one(&spans, parent_service, parent_name);
        assert_eq!(
            span.parent_span_id, parent.span_id,
            "{service} {name:?} is a child of {parent_service} {parent_name:?}"
        );
        let (kind, operation) = if name.starts_with("publish") {
            (SpanKind::Producer, "create")
        } else {
            (SpanKind::Consumer, "process")
        };
        assert_eq!(span.kind, kind, "{span:#?}");
        assert_eq!(span.attributes["messaging.system"], "rabbitmq");
        assert_eq!(span.attributes["messaging.operation.type"], operation);
        let event_type = name.split(' ').nth(1).expect("event type");
        assert_eq!(
            span.attributes["messaging.rabbitmq.destination.routing_key"],
            event_type
        );
        let publisher = if name.starts_with("publish") {
            service
        } else {
            parent_service
        };
        assert_eq!(
            span.attributes["messaging.destination.name"],
            format!("{}{publisher}.events", suite.prefix)
        );
        assert_eq!(span.attributes["messaging.message.conversation_id"], id);
    }
    // The message ids are the events' ids, as the order's history has them.
    assert_eq!(
        one(&spans, "orders", "publish order.placed").attributes["messaging.message.id"],
        event_id(&done, "order.placed")
    );
    for event_type in ["payment.captured", "shipment.dispatched"] {
        assert_eq!(
            one(&spans, "orders", &format!("process {event_type}")).attributes["messaging.message.id"],
            event_id(&done, event_type)
        );
    }
}

/// What an operator reads: orders and billing in processes of their own, writing JSON lines to
/// a pipe and exporting traces, as a deployment runs them. Every line written while a message
/// or `POST /orders` is handled carries the caller's trace id and a span id of its own, in the
/// fields of its span; the pipe gets no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_a_handled_message_or_request_carry_its_trace_and_span_ids() {
    use tokio::io::AsyncReadExt;
    let receiver = Receiver::start().await;
    let suite = Suite::start_with(
        Options {
            otlp_endpoint: receiver.endpoint(),
            ..Options::default()
        },
        &[Which::Shipping],
    )
    .await;
    let port = choreo_e2e::processes::free_port().expect("a port");
    let logged = |which: Which, http_addr: String| {
        let extra = [
            ("RUST_LOG", "info".to_owned()),
            ("CHOREO_OTLP_ENDPOINT", receiver.endpoint()),
            ("CHOREO_HTTP_ADDR", http_addr),
        ];
        suite.spawn_process_with(
            env!("CARGO_BIN_EXE_e2e-service"),
            which,
            "",
            &extra,
            std::process::Stdio::piped(),
        )
    };
    let mut orders = logged(Which::Orders, format!("127.0.0.1:{port}"));
    let mut billing = logged(Which::Billing, "127.0.0.1:0".to_owned());
    let base = format!("http://127.0.0.1:{port}");
    choreo_e2e::poll("orders in its process ready", || {
        let ready = suite.http.get(format!("{base}/readyz")).send();
        Box::pin(async move { ready.await.ok().filter(|r| r.status() == 200).map(|_| ()) })
    })
    .await;
    let trace_id = random_hex(16);

    let response = suite
        .http
        .post(format!("{base}/orders"))
        .header("traceparent", format!("00-{trace_id}-{}-01", random_hex(8)))
        .json(&order_request(1500, 2, "AT"))
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), 201);
    let order: serde_json::Value = response.json().await.expect("order");
    let url = format!("{base}/orders/{}", order["id"].as_str().expect("id"));
    choreo_e2e::poll("the order completed", || {
        let got = suite.http.get(&url).send();
        Box::pin(async move {
            let order: serde_json::Value = got.await.ok()?.json().await.ok()?;
            (order["status"] == "completed").then_some(())
        })
    })
    .await;
    let mut logs = Vec::new();
    for (name, child) in [("orders", &mut orders), ("billing", &mut billing)] {
        child.start_kill().expect("kill");
        let mut text = String::new();
        child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut text)
            .await
            .expect("the log");
        logs.push((name, text));
    }

    let mut spans_seen = Vec::new();
    for (name, text) in &logs {
        assert!(
            !text.contains('\u{1b}'),
            "{name} wrote colour codes to a pipe:\n{text}"
        );
        for line in text.lines() {
            let line: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            let Some(span) = line.get("span") else {
                continue;
            };
            let span_name = span["name"].as_str().unwrap_or_default();
            if span_name != "message" && span_name != "request" {
                continue;
            }
            assert_eq!(span["trace_id"], trace_id.as_str(), "{name}: {line}");
            let span_id = span["span_id"].as_str().unwrap_or_default();
            assert!(
                span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}: {line}"
            );
            spans_seen.push(format!("{name} {span_name}"));
        }
    }
    for wanted in ["orders request", "orders message", "billing message"] {
        assert!(
            spans_seen.iter().any(|seen| seen == wanted),
            "no log line inside a {wanted} span: {spans_seen:?}\n{logs:#?}"
        );
    }
}
