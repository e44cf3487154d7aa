//! Retention: what the sweeps keep still does its job. A duplicate delivered within the
//! retention, after a sweep ran, is recognised by the inbox and has no effect; an
//! `Idempotency-Key` within it still returns its order.

use choreo_e2e::{Options, Suite, Which, order_request, poll};
use choreo_events::Envelope;
use choreo_messaging::metrics::CONSUMED;
use choreo_messaging::retention::SWEEPS;
use lapin::BasicProperties;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_and_a_repeated_key_within_the_retention_have_no_effect_after_a_sweep() {
    duplicates_after_a_sweep(Options {
        tap: true,
        ..Options::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_and_a_repeated_key_within_the_retention_have_no_effect_after_a_sweep_on_postgresql()
 {
    duplicates_after_a_sweep(Options {
        tap: true,
        postgres: true,
        ..Options::default()
    })
    .await;
}

async fn place_with_key(suite: &Suite, key: &str) -> (u16, Value) {
    let response = suite
        .http
        .post(suite.url(Which::Orders, "/orders"))
        .header("Idempotency-Key", key)
        .json(&order_request(1500, 2, "AT"))
        .send()
        .await
        .expect("POST /orders");
    let status = response.status().as_u16();
    (status, response.json().await.expect("order JSON"))
}

/// Waits until every service has finished one more retention sweep than now.
async fn a_sweep_of_every_service(suite: &Suite) {
    for which in Which::ALL {
        let before = suite.scrape(which).await.value(SWEEPS, &[]);
        poll(&format!("a retention sweep of {which:?}"), || {
            Box::pin(async move {
                (suite.scrape(which).await.value(SWEEPS, &[]) > before).then_some(())
            })
        })
        .await;
    }
}

async fn duplicates(suite: &Suite, which: Which) -> f64 {
    suite
        .scrape(which)
        .await
        .value(CONSUMED, &[("outcome", "duplicate")])
}

async fn duplicates_after_a_sweep(options: Options) {
    let suite = Suite::start_with(options, &Which::ALL).await;
    let (status, order) = place_with_key(&suite, "retention-key-1").await;
    assert_eq!(status, 201);
    let id = order["id"].as_str().expect("id").to_owned();
    let completed = suite.wait_for_status(&id, "completed").await;
    let originals: Vec<Envelope> = suite.wait_for_tapped(4).await;
    a_sweep_of_every_service(&suite).await;
    let mut before = Vec::new();
    for which in Which::ALL {
        before.push(duplicates(&suite, which).await);
    }

    // Every event of the saga again, with its own id: a broker redelivery.
    for event in originals
        .iter()
        .filter(|e| e.event_type != "order.completed")
    {
        let exchange = choreo_events::EventType::from_routing_key(&event.event_type)
            .expect("known")
            .exchange();
        let properties = BasicProperties::default()
            .with_message_id(event.id.as_str().into())
            .with_type(event.event_type.as_str().into())
            .with_content_type("application/cloudevents+json".into());
        suite
            .publish(exchange, &event.event_type, &event.encode(), properties)
            .await;
    }
    let (again, same) = place_with_key(&suite, "retention-key-1").await;
    // A later order behind the duplicates: once it completes, every duplicate was handled.
    let sentinel = suite.place_order(&order_request(100, 1, "DE")).await;
    suite
        .wait_for_status(sentinel["id"].as_str().expect("id"), "completed")
        .await;

    assert_eq!(again, 200, "the key within the retention: {same}");
    assert_eq!(same["id"], order["id"]);
    assert_eq!(suite.payments(&id).await.len(), 1, "one payment");
    assert_eq!(suite.shipments(&id).await.len(), 1, "one shipment");
    assert_eq!(suite.order(&id).await["history"], completed["history"]);
    // orders binds payment.captured and shipment.dispatched; billing order.placed; shipping
    // payment.captured.
    for (which, (expected, before)) in Which::ALL
        .into_iter()
        .zip([2.0, 1.0, 1.0].iter().zip(&before))
    {
        let now = duplicates(&suite, which).await;
        assert_eq!(
            now - before,
            *expected,
            "{which:?} acked its duplicates without effect"
        );
    }
}
