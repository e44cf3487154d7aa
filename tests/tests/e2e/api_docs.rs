//! The API documents against the running suite: the events real sagas publish validate against
//! the committed JSON Schemas (`docs/api/schemas`), and each service serves at `/openapi.json`
//! the document committed in `docs/api/openapi`, routing every operation it documents.

use choreo_e2e::{Options, Suite, Which, order_request};
use choreo_events::EventType;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn docs_api() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make api-docs`)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A validator per event type, from the committed schema files; `format` is checked too
/// (`time` must be an RFC 3339 date-time).
fn validators() -> BTreeMap<&'static str, jsonschema::Validator> {
    EventType::ALL
        .into_iter()
        .map(|t| {
            let schema = read_json(docs_api().join(format!("schemas/{}.json", t.routing_key())));
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("the schema of {t} is not a valid schema: {e}"));
            (t.routing_key(), validator)
        })
        .collect()
}

/// Every problem of `event` against the schema of the type it claims.
fn problems(validators: &BTreeMap<&str, jsonschema::Validator>, event: &Value) -> Vec<String> {
    let Some(validator) = event["type"].as_str().and_then(|t| validators.get(t)) else {
        return vec![format!("no schema for type {}", event["type"])];
    };
    validator
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Makes an event invalid in one way.
type Breakage = fn(&mut Value);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_the_three_sagas_validates_against_its_published_schema() {
    let suite = Suite::start_with(
        Options {
            tap: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let validators = validators();

    // Completed (placed, captured, dispatched, completed), declined (placed, declined,
    // cancelled), shipment failed (placed, captured, failed, refunded, cancelled).
    let completed = suite.place_order(&order_request(1500, 2, "AT")).await;
    let declined = suite.place_order(&order_request(100_001, 1, "AT")).await;
    let failed = suite.place_order(&order_request(1500, 1, "AQ")).await;
    for (order, status) in [
        (&completed, "completed"),
        (&declined, "cancelled"),
        (&failed, "cancelled"),
    ] {
        suite
            .wait_for_status(order["id"].as_str().expect("id"), status)
            .await;
    }
    let captured: Vec<Value> = suite
        .wait_for_messages("tap", 12)
        .await
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).expect("every event body is JSON"))
        .collect();

    let types: BTreeSet<&str> = captured.iter().filter_map(|e| e["type"].as_str()).collect();
    let all: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.routing_key()).collect();
    assert_eq!(types, all, "the three sagas publish every event type");
    for event in &captured {
        let problems = problems(&validators, event);
        assert!(problems.is_empty(), "{event}: {problems:?}");
    }

    // The schemas are not vacuous: each broken copy of a real event is rejected.
    let placed = captured
        .iter()
        .find(|e| e["type"] == "order.placed")
        .expect("an order.placed");
    let breakages: [(&str, Breakage); 7] = [
        ("no id", |e| drop(e.as_object_mut().map(|o| o.remove("id")))),
        ("another specversion", |e| e["specversion"] = json!("0.3")),
        ("another source", |e| e["source"] = json!("billing")),
        ("a time that is no date", |e| e["time"] = json!("yesterday")),
        ("no data", |e| {
            drop(e.as_object_mut().map(|o| o.remove("data")))
        }),
        ("a lower-case currency", |e| {
            e["data"]["currency"] = json!("eur")
        }),
        ("a quantity of 0", |e| {
            e["data"]["items"][0]["quantity"] = json!(0)
        }),
    ];
    for (what, breaks) in breakages {
        let mut broken = placed.clone();
        breaks(&mut broken);
        assert!(
            !problems(&validators, &broken).is_empty(),
            "an order.placed with {what} passes its schema"
        );
    }
    // And a real event is not valid as another publisher's type (its source and data disagree).
    // As another type of the same publisher it may be: `order.placed` renamed `order.completed`
    // carries an `order_id`, and readers are tolerant of the rest.
    let mut renamed = placed.clone();
    renamed["type"] = json!("payment.captured");
    assert!(!problems(&validators, &renamed).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_openapi_document_and_routes_every_operation_in_it() {
    let suite = Suite::start().await;

    for (which, name) in [
        (Which::Orders, "orders"),
        (Which::Billing, "billing"),
        (Which::Shipping, "shipping"),
    ] {
        let response = suite
            .http
            .get(suite.url(which, "/openapi.json"))
            .send()
            .await
            .expect("GET /openapi.json");
        assert_eq!(response.status(), 200, "{name}");
        let served: Value = response.json().await.expect("JSON");
        assert_eq!(served["openapi"], "3.1.0");
        assert_eq!(
            served,
            read_json(docs_api().join(format!("openapi/{name}.json"))),
            "{name} serves what docs/api/openapi/{name}.json holds"
        );

        let paths = served["paths"].as_object().expect("paths");
        for (path, item) in paths {
            let uri = path.replace("{id}", "0193b0a4-0000-7000-8000-000000000000");
            let item = item.as_object().expect("a path item");
            for method in ["get", "post", "put", "patch", "delete"] {
                let request = suite
                    .http
                    .request(
                        method.to_uppercase().parse().expect("a method"),
                        suite.url(which, &uri),
                    )
                    .header("content-type", "application/json")
                    .body("{}");
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body: Value = if status == 200 && content_type.starts_with("text/plain") {
                    // `/metrics`, in the Prometheus text format: documented as that.
                    let documented = item.get(method).and_then(|op| {
                        op["responses"]["200"]["content"]
                            .as_object()
                            .map(|c| c.keys().any(|k| k.starts_with("text/plain")))
                    });
                    assert_eq!(
                        documented,
                        Some(true),
                        "{name}: {method} {path} answers text"
                    );
                    Value::Null
                } else {
                    response.json().await.expect("every other answer is JSON")
                };
                if item.contains_key(method) {
                    assert_ne!(
                        status, 405,
                        "{name}: {method} {path} is documented, not routed"
                    );
                    assert_ne!(
                        body["error"], "no such route",
                        "{name}: {method} {path} is documented, not routed"
                    );
                } else {
                    assert_eq!(
                        status, 405,
                        "{name}: {method} {path} is routed, not documented"
                    );
                }
            }
        }
    }
}
