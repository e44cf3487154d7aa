//! The three paths of the saga, and the event chain they leave behind.

use choreo_e2e::{Options, Suite, Which, journey, order_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_within_the_limit_to_a_served_country_completes_with_one_payment_and_one_shipment()
{
    let suite = Suite::start().await;

    let order = suite.place_order(&order_request(1500, 2, "AT")).await;
    let id = order["id"].as_str().expect("id");
    let done = suite.wait_for_status(id, "completed").await;

    assert_eq!(done["cancellation_reason"], serde_json::Value::Null);
    assert_eq!(done["total_cents"], 3000);
    assert_eq!(
        journey(&done),
        [
            "order.placed -> pending",
            "payment.captured -> paid",
            "shipment.dispatched -> completed"
        ]
    );
    let payments = suite.payments(id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "captured");
    assert_eq!(payments[0]["amount_cents"], 3000);
    let shipments = suite.shipments(id).await;
    assert_eq!(shipments.len(), 1);
    assert_eq!(shipments[0]["status"], "dispatched");
    assert_eq!(shipments[0]["carrier"], "test-post");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_over_the_charge_limit_is_cancelled_as_payment_declined_and_never_shipped() {
    let suite = Suite::start().await;

    let order = suite.place_order(&order_request(100_001, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    let done = suite.wait_for_status(id, "cancelled").await;

    assert_eq!(done["cancellation_reason"], "payment_declined");
    assert_eq!(
        journey(&done),
        ["order.placed -> pending", "payment.declined -> cancelled"]
    );
    let payments = suite.payments(id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "declined");
    assert!(suite.shipments(id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_to_an_unserviceable_country_is_refunded_then_cancelled_as_shipping_failed() {
    let suite = Suite::start().await;

    let order = suite.place_order(&order_request(1500, 1, "AQ")).await;
    let id = order["id"].as_str().expect("id");
    let done = suite.wait_for_status(id, "cancelled").await;

    assert_eq!(done["cancellation_reason"], "shipping_failed");
    assert_eq!(
        journey(&done),
        [
            "order.placed -> pending",
            "payment.captured -> paid",
            "payment.refunded -> cancelled"
        ]
    );
    let payments = suite.payments(id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "refunded");
    assert!(payments[0]["refund_id"].is_string());
    let shipments = suite.shipments(id).await;
    assert_eq!(shipments.len(), 1);
    assert_eq!(shipments[0]["reason"], "unserviceable_country");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_saga_carries_the_order_as_correlation_and_its_cause_as_causation() {
    let suite = Suite::start_with(
        Options {
            tap: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;

    let order = suite.place_order(&order_request(1500, 1, "AQ")).await;
    let id = order["id"].as_str().expect("id");
    suite.wait_for_status(id, "cancelled").await;
    // placed, captured, failed, refunded, cancelled.
    let events = suite.wait_for_tapped(5).await;

    let of_type = |t: &str| {
        events
            .iter()
            .find(|e| e.event_type == t)
            .unwrap_or_else(|| panic!("no {t} among {events:?}"))
    };
    let placed = of_type("order.placed");
    let captured = of_type("payment.captured");
    let failed = of_type("shipment.failed");
    let refunded = of_type("payment.refunded");
    let cancelled = of_type("order.cancelled");
    assert_eq!(placed.causationid, None);
    for (effect, cause) in [
        (captured, placed),
        (failed, captured),
        (refunded, failed),
        (cancelled, refunded),
    ] {
        assert_eq!(effect.correlationid, id, "{}", effect.event_type);
        assert_eq!(
            effect.causationid.as_deref(),
            Some(cause.id.as_str()),
            "{}",
            effect.event_type
        );
        let trace = |e: &choreo_events::Envelope| {
            e.traceparent.clone().expect("traceparent")[3..35].to_owned()
        };
        assert_eq!(trace(effect), trace(placed), "one trace for the whole saga");
    }
    assert_eq!(cancelled.data["reason"], "shipping_failed");
    assert_eq!(
        suite.order(id).await["history"][0]["event_id"],
        placed.id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_no_service_consumes_are_kept_by_the_alternate_exchange_not_dropped() {
    let suite = Suite::start().await;

    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    suite.wait_for_status(id, "completed").await;

    let kept = suite.wait_for_messages("orders.events.unrouted", 1).await;
    let completed = choreo_events::Envelope::decode(&kept[0].1).expect("an envelope");
    assert_eq!(completed.event_type, "order.completed");
    assert_eq!(completed.data["order_id"], id);
}

/// Every event the relays publish carries the contract's AMQP properties (CONTRACT.md, "The
/// envelope"): the ones consumers and operators read without opening the body, and the
/// persistence that keeps it through a broker restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_event_carries_the_contracts_amqp_properties() {
    use lapin::options::BasicGetOptions;
    let suite = Suite::start_with(
        Options {
            tap: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    suite
        .wait_for_status(order["id"].as_str().expect("id"), "completed")
        .await;

    // order.placed, payment.captured, shipment.dispatched, order.completed.
    suite.wait_for_ready_messages("tap", 4).await;
    let tap = suite.name("tap");
    let mut sources = Vec::new();
    while let Some(message) = suite
        .channel
        .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let properties = &message.delivery.properties;
        let envelope =
            choreo_events::Envelope::decode(&message.delivery.data).expect("an envelope");
        let text = |value: &Option<lapin::types::ShortString>| {
            value.as_ref().map(|v| v.as_str().to_owned())
        };
        assert_eq!(text(properties.message_id()), Some(envelope.id.clone()));
        assert_eq!(text(properties.kind()), Some(envelope.event_type.clone()));
        assert_eq!(
            message.delivery.routing_key.as_str(),
            envelope.event_type,
            "routed by its type"
        );
        assert_eq!(text(properties.app_id()), Some(envelope.source.clone()));
        assert_eq!(
            text(properties.correlation_id()),
            Some(envelope.correlationid.clone())
        );
        assert_eq!(
            text(properties.content_type()),
            Some("application/cloudevents+json".to_owned())
        );
        assert_eq!(
            properties.timestamp(),
            &Some(u64::try_from(envelope.time.timestamp()).expect("after 1970")),
            "the event's time, in seconds"
        );
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        sources.push(envelope.source.clone());
    }
    sources.sort();
    assert_eq!(sources, ["billing", "orders", "orders", "shipping"]);
}

/// A relay publishes what a commit wrote as soon as the commit wakes it, not at its next sweep:
/// with every sweep an hour away, a saga completes only if each of its four commits (the order
/// over HTTP, then a consumed event in billing, shipping and orders) wakes its service's relay.
/// No service may have started a new broker session meanwhile: a new session's relay reads its
/// outbox first, which would hide a wake that never came (a consumer that panics after its
/// commit, say, is back in a new session, and the inbox takes the redelivery as a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_that_writes_the_outbox_wakes_its_relay() {
    let suite = Suite::start_with(
        Options {
            outbox_sweep_ms: 3_600_000,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;

    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.shipments(id).await.len(), 1);
    for which in Which::ALL {
        let scrape = suite.scrape(which).await;
        assert_eq!(
            scrape.value("choreo_broker_reconnects_total", &[]),
            0.0,
            "{which:?} started no new broker session"
        );
    }
}
