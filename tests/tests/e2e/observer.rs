//! The observer watching real sagas: it builds each order's timeline and causation tree from the
//! bus, judges it against the declared flow, and flags a saga stuck while a service is away.

use choreo_e2e::{Suite, Which, order_request, poll};
use serde_json::Value;
use std::time::Duration;

/// Polls `GET /sagas/{id}` until the saga is in `state`; returns it.
async fn saga_in_state(suite: &Suite, id: &str, state: &str) -> Value {
    poll(&format!("saga {id} {state}"), || {
        let path = format!("/sagas/{id}");
        Box::pin(async move {
            let (status, saga) = suite.observer_get(&path).await;
            (status == 200 && saga["state"] == state).then_some(saga)
        })
    })
    .await
}

fn types(saga: &Value) -> Vec<&str> {
    saga["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

#[tokio::test]
async fn the_observer_shows_each_sagas_timeline_causation_and_end_state() {
    // Arrange
    let mut suite = Suite::start().await;
    suite.start_observer(Duration::from_secs(5)).await;

    // Act
    let happy = suite.place_order(&order_request(1500, 2, "AT")).await;
    let unserviceable = suite.place_order(&order_request(1500, 1, "AQ")).await;
    let happy_id = happy["id"].as_str().expect("id");
    let failed_id = unserviceable["id"].as_str().expect("id");

    // Assert
    let completed = saga_in_state(&suite, happy_id, "completed").await;
    assert_eq!(
        types(&completed),
        [
            "order.placed",
            "payment.captured",
            "shipment.dispatched",
            "order.completed"
        ]
    );
    assert_eq!(
        completed["services"],
        serde_json::json!(["orders", "billing", "shipping"])
    );
    assert_eq!(completed["current_step"], "order.completed");
    assert_eq!(completed["anomalies"], serde_json::json!([]));
    let root = &completed["causation"][0];
    assert_eq!(root["type"], "order.placed");
    assert_eq!(root["children"][0]["type"], "payment.captured");
    assert!(
        completed["timeline"][1]["since_previous_ms"]
            .as_i64()
            .is_some()
    );

    let cancelled = saga_in_state(&suite, failed_id, "cancelled").await;
    assert_eq!(
        types(&cancelled),
        [
            "order.placed",
            "payment.captured",
            "shipment.failed",
            "payment.refunded",
            "order.cancelled"
        ]
    );
    // Cancelled by the flow, compensation made: a business outcome, nothing anomalous, and not
    // counted as failed (what an operator alerts on).
    assert_eq!(cancelled["anomalies"], serde_json::json!([]));
    let (status, failed_list) = suite.observer_get("/sagas?state=failed").await;
    assert_eq!(status, 200);
    assert_eq!(failed_list["sagas"], serde_json::json!([]));

    let (status, completed_list) = suite.observer_get("/sagas?state=completed&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(completed_list["sagas"][0]["order_id"], happy_id);
    let (status, _) = suite.observer_get("/sagas?state=lost").await;
    assert_eq!(status, 422);
    let (status, _) = suite.observer_get("/sagas/no-such-order").await;
    assert_eq!(status, 404);

    // The map's times and the hour's charts, from the same two sagas.
    let flow = poll("both sagas timed end to end", || {
        Box::pin(async {
            let (status, flow) = suite.observer_get("/flow").await;
            (status == 200 && flow["end_to_end"]["count"] == 2).then_some(flow)
        })
    })
    .await;
    let minutes = flow["minutes"].as_array().expect("minutes");
    let sum = |field: &str| {
        minutes
            .iter()
            .map(|m| m[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(minutes.len(), 60);
    assert_eq!((sum("orders"), sum("finished")), (2, 2));
    let latency = |event_type: &str| {
        flow["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["type"] == event_type)
            .map(|e| e["latency"].clone())
            .expect("declared")
    };
    assert_eq!(
        latency("order.placed"),
        Value::Null,
        "the start has no cause"
    );
    for (event_type, count) in [
        ("payment.captured", 2),
        ("shipment.dispatched", 1),
        ("shipment.failed", 1),
        ("payment.refunded", 1),
        ("order.completed", 1),
        ("order.cancelled", 1),
    ] {
        let latency = latency(event_type);
        assert_eq!(latency["count"], count, "{event_type}: {latency}");
        assert!(latency["p50_ms"].as_u64() <= latency["p99_ms"].as_u64());
    }
    // The longer saga, from its timeline, is the p99 of two (read within 5%, never above).
    let took = |saga: &Value| {
        saga["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter_map(|e| e["since_previous_ms"].as_u64())
            .sum::<u64>()
    };
    let longest = took(&completed).max(took(&cancelled)) as f64;
    let p99 = flow["end_to_end"]["p99_ms"].as_u64().expect("p99") as f64;
    assert!(
        p99 <= longest && p99 >= longest / 1.05 - 1.0,
        "{p99} against {longest}"
    );
}

#[tokio::test]
async fn a_saga_is_stuck_while_shipping_is_away_and_clears_when_it_is_back() {
    // Arrange
    let mut suite = Suite::start().await;
    suite.start_observer(Duration::from_millis(1500)).await;
    suite.take(Which::Shipping).stop().await;

    // Act
    let order = suite.place_order(&order_request(1500, 1, "DE")).await;
    let id = order["id"].as_str().expect("id").to_owned();

    // Assert: stuck after payment.captured, waiting for shipping, and listed as such.
    let stuck = saga_in_state(&suite, &id, "stuck").await;
    assert_eq!(stuck["current_step"], "payment.captured");
    let waiting = &stuck["expected"][0];
    assert_eq!(waiting["by"], "shipping");
    assert_eq!(waiting["overdue"], true);
    let (_, listed) = suite.observer_get("/sagas?state=stuck").await;
    assert!(
        listed["sagas"]
            .as_array()
            .expect("sagas")
            .iter()
            .any(|s| s["order_id"] == id.as_str()),
        "{listed}"
    );
    // The metrics follow at the next sweep.
    let stuck_line = |text: &str| {
        text.lines().any(|line| {
            line.starts_with("choreo_observer_sagas{")
                && line.contains("state=\"stuck\"")
                && line.ends_with(" 1")
        })
    };
    let deadline = std::time::Instant::now() + choreo_e2e::deadline();
    loop {
        let metrics = observer_metrics(&suite).await;
        if stuck_line(&metrics) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stuck saga in the metrics: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Shipping back: the saga moves on and is no longer stuck.
    suite.start_service(Which::Shipping).await;
    saga_in_state(&suite, &id, "completed").await;
    let (_, listed) = suite.observer_get("/sagas?state=stuck").await;
    assert_eq!(listed["sagas"], serde_json::json!([]));

    // Keep the observer's live text for `promtool check metrics` and the alert rules' names
    // (`make check-metrics`).
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics");
    std::fs::create_dir_all(&kept).expect("target/tmp/metrics");
    let text = observer_metrics(&suite).await;
    std::fs::write(kept.join("observer.prom"), text).expect("metrics written");
}

/// The observer's `GET /metrics` text.
async fn observer_metrics(suite: &Suite) -> String {
    suite
        .http
        .get(suite.observer_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}
