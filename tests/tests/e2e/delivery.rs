//! At-least-once delivery: duplicates have one effect; what cannot be handled is dead-lettered
//! with its reason while the service keeps consuming.

use choreo_e2e::{Options, Suite, Which, header, order_request};
use choreo_events::Envelope;
use choreo_messaging::dead_letter::Selection;
use lapin::BasicProperties;

/// A valid `order.placed` for `order_id`, published by the test itself (source `test`).
fn placed_by_the_test(order_id: &str) -> Envelope {
    let placed = choreo_events::Event::from_data(
        choreo_events::EventType::OrderPlaced,
        &serde_json::json!({
            "order_id": order_id, "customer_id": "c", "total_cents": 500, "currency": "EUR",
            "items": [{"sku": "S", "quantity": 1, "unit_price_cents": 500}],
            "shipping_address": {"name": "n", "line1": "l", "city": "c", "postal_code": "p", "country": "AT"}
        }),
    )
    .expect("valid");
    Envelope::root("orders", &placed)
}

fn properties(envelope: &Envelope) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(envelope.id.as_str().into())
        .with_type(envelope.event_type.as_str().into())
        .with_content_type("application/cloudevents+json".into())
}

/// The `x-error` of each dead letter, in the order taken.
fn reasons(letters: &[(lapin::types::FieldTable, Vec<u8>)]) -> Vec<String> {
    letters
        .iter()
        .map(|(headers, _)| header(headers, "x-error").expect("x-error"))
        .collect()
}

/// Headers of text values, as a sender writes them.
fn text_headers(headers: &[(&str, String)]) -> lapin::types::FieldTable {
    let mut table = lapin::types::FieldTable::default();
    for (name, value) in headers {
        table.insert(
            (*name).into(),
            lapin::types::AMQPValue::LongString(value.clone().into()),
        );
    }
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_redelivered_events_has_exactly_one_effect() {
    let suite = Suite::start_with(
        Options {
            tap: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let order = suite.place_order(&order_request(1500, 2, "AT")).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let completed = suite.wait_for_status(&id, "completed").await;
    let originals = suite.wait_for_tapped(4).await;

    // Every event again, twice, with its own id (a broker redelivery) ...
    for event in originals
        .iter()
        .filter(|e| e.event_type != "order.completed")
    {
        let exchange = choreo_events::EventType::from_routing_key(&event.event_type)
            .expect("known")
            .exchange();
        for _ in 0..2 {
            suite
                .publish(
                    exchange,
                    &event.event_type,
                    &event.encode(),
                    properties(event),
                )
                .await;
        }
    }
    // ... and the payment-causing and shipment-causing events once more under new ids (a
    // publisher that retried without its outbox), which only the unique constraints can catch.
    let mut injected = Vec::new();
    for event in originals
        .iter()
        .filter(|e| e.event_type == "order.placed" || e.event_type == "payment.captured")
    {
        let mut copy = event.clone();
        copy.id = uuid::Uuid::new_v4().to_string();
        injected.push(copy.id.clone());
        let exchange = choreo_events::EventType::from_routing_key(&copy.event_type)
            .expect("known")
            .exchange();
        suite
            .publish(
                exchange,
                &copy.event_type,
                &copy.encode(),
                properties(&copy),
            )
            .await;
    }
    // A later order passes through the same queues behind the duplicates: once it completes,
    // every duplicate has been handled.
    let sentinel = suite.place_order(&order_request(100, 1, "DE")).await;
    let sentinel_id = sentinel["id"].as_str().expect("id");
    suite.wait_for_status(sentinel_id, "completed").await;

    assert_eq!(suite.payments(&id).await.len(), 1, "one payment");
    assert_eq!(suite.shipments(&id).await.len(), 1, "one shipment");
    assert_eq!(
        suite.order(&id).await["history"],
        completed["history"],
        "the history did not move"
    );
    // Nothing new was published about the first order: every tapped event about it is an
    // original or one the test injected. (6 redeliveries + 2 copies + the sentinel's 4 events.)
    let later = suite.wait_for_tapped(6 + 2 + 4).await;
    let emitted_again = later
        .iter()
        .filter(|e| e.correlationid == id)
        .filter(|e| !originals.iter().any(|o| o.id == e.id) && !injected.contains(&e.id))
        .count();
    assert_eq!(
        emitted_again, 0,
        "no service emitted a second event for the first order: {later:#?}"
    );
    for service in ["orders", "billing", "shipping"] {
        assert!(
            suite.drain(&format!("{service}.dlq")).await.is_empty(),
            "a duplicate is acked, not dead-lettered ({service})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_invalid_unknown_and_unsupported_messages_are_dead_lettered_with_a_reason_and_consumption_goes_on()
 {
    let suite = Suite::start().await;
    suite.wait_ready().await;
    let order = suite.place_order(&order_request(500, 1, "AT")).await;
    suite
        .wait_for_status(order["id"].as_str().expect("id"), "completed")
        .await;
    let template = placed_by_the_test("not-an-order-of-ours");

    suite
        .publish(
            "orders.events",
            "order.placed",
            b"this is not json",
            BasicProperties::default(),
        )
        .await;
    let mut unsupported = template.clone();
    unsupported.id = uuid::Uuid::new_v4().to_string();
    unsupported.schemaversion = 2;
    suite
        .publish(
            "orders.events",
            "order.placed",
            &unsupported.encode(),
            properties(&unsupported),
        )
        .await;
    let mut invalid = template.clone();
    invalid.id = uuid::Uuid::new_v4().to_string();
    invalid.data["total_cents"] = serde_json::json!(-5);
    suite
        .publish(
            "orders.events",
            "order.placed",
            &invalid.encode(),
            properties(&invalid),
        )
        .await;
    let mut unknown = template.clone();
    unknown.id = uuid::Uuid::new_v4().to_string();
    unknown.event_type = "order.teleported".into();
    // No binding routes an unknown type to billing, so it is sent to the queue directly.
    suite
        .publish(
            "",
            &suite.name("billing"),
            &unknown.encode(),
            properties(&unknown),
        )
        .await;

    let dead = suite.wait_for_messages("billing.dlq", 4).await;
    let reasons = reasons(&dead);
    assert!(reasons[0].contains("undecodable envelope"), "{reasons:?}");
    assert!(
        reasons[1].contains("unsupported schemaversion 2"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("total_cents must not be negative"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("unknown event type \"order.teleported\""),
        "{reasons:?}"
    );
    assert_eq!(dead[0].1, b"this is not json", "the original body is kept");
    assert_eq!(
        header(&dead[0].0, "x-original-routing-key").as_deref(),
        Some("order.placed")
    );

    // The service kept consuming: a new order still goes all the way.
    let order = suite.place_order(&order_request(700, 1, "FR")).await;
    suite
        .wait_for_status(order["id"].as_str().expect("id"), "completed")
        .await;
    assert!(
        suite.drain("billing.dlq").await.is_empty(),
        "nothing else was dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_contradicts_what_a_service_knows_is_dead_lettered_not_dropped() {
    let suite = Suite::start().await;
    suite.wait_ready().await;
    // A payment for an order orders never took, with no address for shipping.
    let captured =
        choreo_events::Event::PaymentCaptured(choreo_events::payloads::PaymentCaptured {
            order_id: "ghost-order".into(),
            payment_id: "ghost-payment".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            shipping_address: None,
        });
    let envelope = Envelope::root("billing", &captured);
    suite
        .publish(
            "billing.events",
            "payment.captured",
            &envelope.encode(),
            properties(&envelope),
        )
        .await;

    let at_orders = suite.wait_for_messages("orders.dlq", 1).await;
    assert!(
        header(&at_orders[0].0, "x-error")
            .expect("x-error")
            .contains("no order ghost-order")
    );
    let at_shipping = suite.wait_for_messages("shipping.dlq", 1).await;
    assert!(
        header(&at_shipping[0].0, "x-error")
            .expect("x-error")
            .contains("no shipping_address")
    );
}

/// Billing's events, from the right exchange and source, that contradict what orders knows of
/// the order (docs/contract-notes.md): a decline after the capture, a capture after the decline.
/// Each is dead-lettered with the contradiction; neither moves its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_dead_letters_a_payment_event_that_contradicts_the_order() {
    use choreo_events::Event;
    use choreo_events::payloads::{PaymentCaptured, PaymentDeclined};
    let suite = Suite::start().await;
    suite.wait_ready().await;
    let paid = suite.place_order(&order_request(1500, 2, "AT")).await;
    let paid = paid["id"].as_str().expect("id").to_owned();
    // Over billing's limit (100000): declined.
    let declined = suite.place_order(&order_request(60_000, 2, "AT")).await;
    let declined = declined["id"].as_str().expect("id").to_owned();
    suite.wait_for_status(&paid, "completed").await;
    suite.wait_for_status(&declined, "cancelled").await;

    let contradictions = [
        Event::PaymentDeclined(PaymentDeclined {
            order_id: paid.clone(),
            amount_cents: 3000,
            currency: "EUR".into(),
            reason: "limit_exceeded".into(),
        }),
        // No address: shipping dead-letters its copy too, and ships nothing.
        Event::PaymentCaptured(PaymentCaptured {
            order_id: declined.clone(),
            payment_id: "a-payment-billing-never-took".into(),
            amount_cents: 120_000,
            currency: "EUR".into(),
            shipping_address: None,
        }),
    ];
    for event in &contradictions {
        let envelope = Envelope::root("billing", event);
        suite
            .publish(
                "billing.events",
                event.event_type().routing_key(),
                &envelope.encode(),
                properties(&envelope),
            )
            .await;
    }

    let at_orders = suite.wait_for_messages("orders.dlq", 2).await;
    let reasons = reasons(&at_orders);
    let named = |needle: &str| reasons.iter().any(|reason| reason.contains(needle));
    assert!(
        named(&format!(
            "payment.declined contradicts order {paid}, which is completed"
        )),
        "{reasons:?}"
    );
    assert!(
        named(&format!(
            "payment.captured contradicts order {declined}, which is cancelled (payment_declined)"
        )),
        "{reasons:?}"
    );
    assert_eq!(suite.order(&paid).await["status"], "completed");
    let still = suite.order(&declined).await;
    assert_eq!(still["status"], "cancelled");
    assert_eq!(still["cancellation_reason"], "payment_declined");
    assert!(suite.shipments(&declined).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_through_the_delay_queues_and_the_saga_completes() {
    let failing = Options {
        failpoints: vec![(Which::Billing, "consumer.before_handle=transient:2".into())],
        ..Options::default()
    };
    let suite = Suite::start_with(failing, &Which::ALL).await;

    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");

    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    assert!(
        suite.drain("billing.dlq").await.is_empty(),
        "recovered, so not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_outlasts_every_retry_is_dead_lettered_with_the_last_error() {
    let failing = Options {
        failpoints: vec![(
            Which::Billing,
            "consumer.before_handle=transient:1000".into(),
        )],
        ..Options::default()
    };
    let suite = Suite::start_with(failing, &Which::ALL).await;

    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");

    let dead = suite.wait_for_messages("billing.dlq", 1).await;
    let reason = header(&dead[0].0, "x-error").expect("x-error");
    assert!(
        reason.starts_with("retries exhausted after 3 attempts"),
        "{reason}"
    );
    assert!(reason.contains("injected transient failure"), "{reason}");
    assert_eq!(
        header(&dead[0].0, "x-original-exchange").as_deref(),
        Some(suite.name("orders.events").as_str())
    );
    let body = Envelope::decode(&dead[0].1).expect("the original event");
    assert_eq!(body.data["order_id"], id);
    assert_eq!(
        suite.order(id).await["status"],
        "pending",
        "no effect without the handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_redriven_with_their_original_id_and_purged() {
    use choreo_messaging::Names;
    use choreo_messaging::dead_letter::DeadLetterQueue;
    // Three failing attempts exhaust the two retries; the fourth (the redrive) succeeds.
    let failing = Options {
        failpoints: vec![(Which::Billing, "consumer.before_handle=transient:3".into())],
        ..Options::default()
    };
    let suite = Suite::start_with(failing, &Which::ALL).await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    let names = Names::new(suite.prefix.clone());
    let connection = lapin::Connection::connect(
        &choreo_e2e::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let billing = choreo_events::topology::BILLING;
    let open = || DeadLetterQueue::open(&connection, &names, &billing);

    let letters = choreo_e2e::poll("a dead letter", || {
        Box::pin(async {
            open()
                .await
                .expect("open")
                .list()
                .await
                .ok()
                .filter(|l| !l.is_empty())
        })
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_type.as_deref(), Some("order.placed"));
    assert!(
        letters[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("retries exhausted")
    );
    let event_id = letters[0].message_id.clone().expect("message id");
    assert_eq!(
        open()
            .await
            .expect("open")
            .list()
            .await
            .expect("list")
            .len(),
        1,
        "listing removes nothing"
    );

    assert_eq!(
        open()
            .await
            .expect("open")
            .redrive(&Selection::Id(letters[0].id.clone()))
            .await
            .expect("redrive")
            .len(),
        1
    );
    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    assert_eq!(
        suite.order(id).await["history"][0]["event_id"],
        event_id.as_str(),
        "the original event id"
    );

    suite
        .publish(
            "orders.events",
            "order.placed",
            b"garbage",
            BasicProperties::default(),
        )
        .await;
    suite
        .publish(
            "orders.events",
            "order.placed",
            b"more garbage",
            BasicProperties::default(),
        )
        .await;
    choreo_e2e::poll("two dead letters", || {
        Box::pin(async {
            open()
                .await
                .expect("open")
                .count()
                .await
                .ok()
                .filter(|n| *n == 2)
        })
    })
    .await;
    assert_eq!(open().await.expect("open").purge().await.expect("purge"), 2);
    assert_eq!(open().await.expect("open").count().await.expect("count"), 0);
    let _ = connection.close(200, "done".into()).await;
}

/// The operator's access to billing's DLQ in a suite, on a connection of its own.
struct BillingDeadLetters {
    connection: lapin::Connection,
    names: choreo_messaging::Names,
}

impl BillingDeadLetters {
    async fn of(suite: &Suite) -> Self {
        let connection = lapin::Connection::connect(
            &choreo_e2e::amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("connect");
        BillingDeadLetters {
            connection,
            names: choreo_messaging::Names::new(suite.prefix.clone()),
        }
    }

    /// The letters, once there is at least one.
    async fn wait_for_any(&self) -> Vec<choreo_messaging::dead_letter::DeadLetter> {
        choreo_e2e::poll("a dead letter in billing's DLQ", || {
            Box::pin(async {
                self.open()
                    .await
                    .list()
                    .await
                    .ok()
                    .filter(|letters| !letters.is_empty())
            })
        })
        .await
    }

    /// The first letter `which` picks, once there is one.
    async fn wait_for(
        &self,
        what: &str,
        which: impl Fn(&choreo_messaging::dead_letter::DeadLetter) -> bool + Sync,
    ) -> choreo_messaging::dead_letter::DeadLetter {
        choreo_e2e::poll(what, || {
            Box::pin(async {
                let letters = self.open().await.list().await.ok()?;
                letters.into_iter().find(|letter| which(letter))
            })
        })
        .await
    }

    /// Redrives the letters `selection` picks; returns them.
    async fn redrive(
        &self,
        selection: &Selection,
    ) -> Vec<choreo_messaging::dead_letter::DeadLetter> {
        self.open().await.redrive(selection).await.expect("redrive")
    }

    async fn open(&self) -> choreo_messaging::dead_letter::DeadLetterQueue {
        choreo_messaging::dead_letter::DeadLetterQueue::open(
            &self.connection,
            &self.names,
            &choreo_events::topology::BILLING,
        )
        .await
        .expect("open")
    }
}

/// Takes the next message of a prefixed queue as it is stored (no operator tool in between),
/// waiting for one to arrive.
async fn take_stored(suite: &Suite, queue: &str) -> lapin::message::Delivery {
    choreo_e2e::poll(&format!("a message in {queue}"), || {
        Box::pin(async {
            suite
                .channel
                .basic_get(
                    suite.name(queue).as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic.get")
                .map(|message| message.delivery)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_listed_more_often_than_the_delivery_limit_stays_unchanged_and_is_never_redelivered()
 {
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;
    let dlq = BillingDeadLetters::of(&suite).await;
    let message_id = uuid::Uuid::new_v4().to_string();
    suite
        .publish(
            "orders.events",
            "order.placed",
            b"not an event",
            BasicProperties::default().with_message_id(message_id.as_str().into()),
        )
        .await;
    let first = choreo_e2e::poll("a dead letter", || {
        Box::pin(async { dlq.open().await.list().await.ok().filter(|l| l.len() == 1) })
    })
    .await;

    // RabbitMQ 4.x drops a message handed back to a quorum queue more than 20 times (its
    // default delivery limit); 3.10 counts each return in x-delivery-count.
    for read in 0..25 {
        let letters = dlq.open().await.list().await.expect("list");

        assert_eq!(letters.len(), 1, "read {read}: the letter is still there");
        assert_eq!(letters[0].id, first[0].id, "read {read}");
        assert_eq!(
            letters[0].message_id,
            Some(message_id.clone()),
            "read {read}"
        );
        assert_eq!(letters[0].body, b"not an event", "read {read}");
        assert_eq!(letters[0].error, first[0].error, "read {read}");
        assert_eq!(letters[0].position, 1);
    }

    let stored = take_stored(&suite, "billing.dlq").await;
    assert!(!stored.redelivered, "the broker never handed it out twice");
    let headers = stored.properties.headers().clone().unwrap_or_default();
    // 3.10 says 0 (or nothing) on a first delivery and counts up on every return.
    let delivered_before = match headers.inner().get("x-delivery-count") {
        None => 0,
        Some(lapin::types::AMQPValue::LongLongInt(n)) => *n,
        Some(other) => panic!("x-delivery-count {other:?}"),
    };
    assert_eq!(delivered_before, 0, "{headers:?}");
    assert_eq!(
        stored
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some(message_id.as_str())
    );
    assert!(
        header(&headers, "x-error")
            .unwrap_or_default()
            .contains("undecodable envelope")
    );
    let _ = dlq.connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_an_expiration_is_dead_lettered_without_it() {
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;

    // Ten minutes: long enough that nothing expires during the test, and kept today.
    suite
        .publish(
            "orders.events",
            "order.placed",
            b"expiring garbage",
            BasicProperties::default().with_expiration("600000".into()),
        )
        .await;

    let stored = take_stored(&suite, "billing.dlq").await;
    assert_eq!(stored.data, b"expiring garbage");
    assert_eq!(
        stored.properties.expiration(),
        &None,
        "it cannot expire out of the DLQ"
    );
    assert_eq!(stored.properties.delivery_mode(), &Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_shown_and_redriven_by_position_or_by_the_id_the_runtime_gave_them() {
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;
    let dlq = BillingDeadLetters::of(&suite).await;
    for garbage in [&b"first garbage"[..], b"second garbage"] {
        suite
            .publish(
                "orders.events",
                "order.placed",
                garbage,
                BasicProperties::default(),
            )
            .await;
    }
    // Waits by counting, not by listing: a listing copies each letter to the back of the queue,
    // so one taken while the second letter arrives would put the second first.
    choreo_e2e::poll("two dead letters", || {
        Box::pin(async { dlq.open().await.count().await.ok().filter(|n| *n == 2) })
    })
    .await;
    let listed = dlq.open().await.list().await.expect("list");
    let again = dlq.open().await.list().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|l| (l.position, l.id.clone()))
            .collect::<Vec<_>>(),
        again
            .iter()
            .map(|l| (l.position, l.id.clone()))
            .collect::<Vec<_>>(),
        "ids and positions are the same on every read"
    );
    assert!(
        listed
            .iter()
            .all(|l| l.message_id.is_none() && l.id.starts_with("dl-"))
    );
    assert_ne!(listed[0].id, listed[1].id);

    let by_position = dlq
        .open()
        .await
        .redrive(&Selection::Position(2))
        .await
        .expect("redrive");
    assert_eq!(by_position.len(), 1);
    assert_eq!(by_position[0].id, listed[1].id);
    assert_eq!(by_position[0].body, b"second garbage");
    let by_id = dlq
        .open()
        .await
        .redrive(&Selection::Id(listed[0].id.clone()))
        .await
        .expect("redrive");
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].body, b"first garbage");
    assert!(
        dlq.open()
            .await
            .redrive(&Selection::Id("dl-0000000000000000".into()))
            .await
            .expect("redrive")
            .is_empty()
    );
    // Both went back to billing, which dead-letters garbage again: still nothing lost.
    choreo_e2e::poll("both dead-lettered again", || {
        Box::pin(async { dlq.open().await.count().await.ok().filter(|n| *n == 2) })
    })
    .await;
    let _ = dlq.connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_with_export_deletes_only_the_letters_it_wrote_first() {
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;
    let dlq = BillingDeadLetters::of(&suite).await;
    suite
        .publish(
            "orders.events",
            "order.placed",
            b"text garbage",
            BasicProperties::default(),
        )
        .await;
    suite
        .publish(
            "orders.events",
            "order.placed",
            &[0xff, 0xfe, 0x00],
            BasicProperties::default(),
        )
        .await;
    choreo_e2e::poll("two dead letters", || {
        Box::pin(async { dlq.open().await.count().await.ok().filter(|n| *n == 2) })
    })
    .await;
    let mut exported = Vec::new();

    let purged = dlq
        .open()
        .await
        .purge_exported(|letters| {
            exported = letters.iter().map(|l| l.to_json()).collect();
            // A dead letter arriving while the export is written is not among those taken.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(suite.publish(
                    "billing.dlx",
                    "order.placed",
                    b"late garbage",
                    BasicProperties::default(),
                ))
            });
            Ok(())
        })
        .await
        .expect("purge");

    assert_eq!(purged.len(), 2);
    assert_eq!(exported[0]["body"], "text garbage");
    assert_eq!(exported[0]["body_encoding"], "utf-8");
    assert_eq!(exported[1]["body"], "//4A");
    assert_eq!(exported[1]["body_encoding"], "base64");
    assert!(
        exported[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("undecodable envelope")
    );
    assert_eq!(exported[1]["routing_key"], "order.placed");
    let left = dlq.open().await.list().await.expect("list");
    assert_eq!(left.len(), 1, "the late letter was not deleted");
    assert_eq!(left[0].body, b"late garbage");

    let failed = dlq
        .open()
        .await
        .purge_exported(|_| Err(std::io::Error::other("disk full")))
        .await;
    assert!(failed.is_err());
    assert_eq!(
        dlq.open().await.count().await.expect("count"),
        1,
        "a failed export deletes nothing"
    );
    let _ = dlq.connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_event_queued_among_good_ones_is_dead_lettered_alone_and_the_others_handled_once()
 {
    let mut suite = Suite::start().await;
    // With billing away, its queue fills. When it comes back the broker pushes them all, and the
    // ones that arrive while billing is busy are handled as one batch; the invalid one makes its
    // batch fall back to one at a time. Either way the outcome must be the same.
    suite.take(Which::Billing).stop().await;
    let mut orders = Vec::new();
    for price in 1000..1010 {
        orders.push(suite.place_order(&order_request(price, 1, "AT")).await);
    }
    let mut invalid = placed_by_the_test("batch-poison");
    invalid.data["currency"] = serde_json::json!("euros");
    suite
        .publish(
            "orders.events",
            "order.placed",
            &invalid.encode(),
            properties(&invalid),
        )
        .await;
    for price in 2000..2010 {
        orders.push(suite.place_order(&order_request(price, 1, "AT")).await);
    }

    suite.start_service(Which::Billing).await;

    for order in &orders {
        let id = order["id"].as_str().expect("id");
        suite.wait_for_status(id, "completed").await;
        assert_eq!(suite.payments(id).await.len(), 1);
    }
    let dead = suite.wait_for_messages("billing.dlq", 1).await;
    assert_eq!(dead.len(), 1);
    assert!(
        header(&dead[0].0, "x-error")
            .expect("x-error")
            .contains("currency")
    );
    assert_eq!(
        Envelope::decode(&dead[0].1).expect("envelope").id,
        invalid.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_events_are_dead_lettered_with_the_mismatch_and_refund_nothing() {
    let suite = Suite::start().await;
    suite.wait_ready().await;
    let order = suite.place_order(&order_request(700, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    suite.wait_for_status(id, "completed").await;
    let failed = |source: &str| {
        Envelope::root(
            source,
            &choreo_events::Event::ShipmentFailed(choreo_events::payloads::ShipmentFailed {
                order_id: id.to_owned(),
                reason: "unserviceable_country".into(),
            }),
        )
    };

    // Under another type's routing key, through that type's exchange (billing binds it).
    let under_placed = failed("shipping");
    suite
        .publish(
            "orders.events",
            "order.placed",
            &under_placed.encode(),
            properties(&under_placed),
        )
        .await;
    // Through the right exchange and key, but claiming a source that never publishes it
    // (billing and orders both bind it).
    let wrong_source = failed("orders");
    suite
        .publish(
            "shipping.events",
            "shipment.failed",
            &wrong_source.encode(),
            properties(&wrong_source),
        )
        .await;
    // Straight into billing's queue through the default exchange.
    let straight_in = failed("shipping");
    suite
        .publish(
            "",
            &suite.name("billing"),
            &straight_in.encode(),
            properties(&straight_in),
        )
        .await;
    // Under another type's key again, vouching for itself with the headers a redelivery carries:
    // they are believed only on the default exchange and billing's own redelivery exchange.
    let vouched = failed("shipping");
    let mut vouching = lapin::types::FieldTable::default();
    for (name, value) in [
        ("x-original-exchange", suite.name("shipping.events")),
        ("x-original-routing-key", "shipment.failed".to_owned()),
    ] {
        vouching.insert(
            name.into(),
            lapin::types::AMQPValue::LongString(value.into()),
        );
    }
    suite
        .publish(
            "orders.events",
            "order.placed",
            &vouched.encode(),
            properties(&vouched).with_headers(vouching),
        )
        .await;

    let at_billing = suite.wait_for_messages("billing.dlq", 4).await;
    let reasons = reasons(&at_billing);
    let named = |needle: &str| reasons.iter().any(|reason| reason.contains(needle));
    assert!(named("claims source \"orders\""), "{reasons:?}");
    assert_eq!(
        reasons
            .iter()
            .filter(|reason| reason.contains("differs from the routing key \"order.placed\""))
            .count(),
        2,
        "both forgeries under order.placed, the vouched one too: {reasons:?}"
    );
    assert!(
        named("differs from the routing key \"order.placed\""),
        "{reasons:?}"
    );
    assert!(
        named(&format!(
            "differs from the routing key \"{}\"",
            suite.name("billing")
        )),
        "{reasons:?}"
    );
    let at_orders = suite.wait_for_messages("orders.dlq", 1).await;
    assert!(
        header(&at_orders[0].0, "x-error")
            .expect("x-error")
            .contains("only shipping publishes it")
    );
    // No effect: the payment is still captured, no refund, the order still completed.
    let payments = suite.payments(id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "captured");
    assert!(payments[0]["refund_id"].is_null());
    assert_eq!(suite.order(id).await["status"], "completed");
}

/// Headers of a sender's choosing cannot crash a consumer nor swell what it writes: a routing key
/// or exchange longer than AMQP's 255-byte short strings in `x-original-*` (lapin panics on such a
/// routing key), headers of the wrong type, and a currency of 100 KB that the reason quotes.
/// Each message is dead-lettered once, with its reason, bounded, and where it was really
/// delivered; the sender's claims are kept under names of their own; billing goes on consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_mistyped_headers_are_dead_lettered_once_with_a_bounded_reason_and_consumption_goes_on()
 {
    use lapin::types::{AMQPValue, FieldTable};
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;
    let long_key = "k".repeat(300);
    let mut oversized = FieldTable::default();
    oversized.insert(
        "x-original-routing-key".into(),
        AMQPValue::LongString(long_key.clone().into()),
    );
    oversized.insert(
        "x-original-exchange".into(),
        AMQPValue::LongString("e".repeat(300).into()),
    );
    suite
        .publish(
            "orders.events",
            "order.placed",
            b"garbage",
            BasicProperties::default().with_headers(oversized.clone()),
        )
        .await;
    let mut mistyped = FieldTable::default();
    mistyped.insert(
        "x-original-routing-key".into(),
        AMQPValue::FieldTable(oversized),
    );
    mistyped.insert("x-original-exchange".into(), AMQPValue::LongLongInt(7));
    mistyped.insert("x-retry-count".into(), AMQPValue::LongString("many".into()));
    suite
        .publish(
            "orders.events",
            "order.placed",
            b"more garbage",
            BasicProperties::default().with_headers(mistyped),
        )
        .await;
    let mut huge_currency = placed_by_the_test("o-huge-currency");
    huge_currency.data["currency"] = "E".repeat(100_000).into();
    suite
        .publish(
            "orders.events",
            "order.placed",
            &huge_currency.encode(),
            properties(&huge_currency),
        )
        .await;

    let letters = suite.wait_for_messages("billing.dlq", 3).await;
    for (headers, _) in &letters {
        let error = header(headers, "x-error").expect("every letter has our reason");
        assert!(
            error.len() <= 1_100,
            "a bounded reason: {} bytes",
            error.len()
        );
        assert_eq!(
            header(headers, "x-original-routing-key").as_deref(),
            Some("order.placed"),
            "where it was really delivered"
        );
        assert_eq!(
            header(headers, "x-original-exchange"),
            Some(suite.name("orders.events"))
        );
    }
    let (first, _) = letters
        .iter()
        .find(|(headers, _)| header(headers, "x-claimed-original-routing-key").is_some())
        .expect("the oversized claim kept");
    assert_eq!(
        header(first, "x-claimed-original-routing-key"),
        Some(long_key),
        "the sender's claim, kept under its own name"
    );
    let cut = letters
        .iter()
        .filter_map(|(headers, _)| header(headers, "x-error"))
        .find(|error| error.contains("currency must be"))
        .expect("the invalid currency's reason, which quotes it");
    assert!(cut.contains("cut from"), "says it was cut: {cut}");

    // Billing still consumes, and dead-lettered nothing else.
    let honest = placed_by_the_test("o-after-the-hostile-headers");
    suite
        .publish(
            "orders.events",
            "order.placed",
            &honest.encode(),
            properties(&honest),
        )
        .await;
    choreo_e2e::poll("the honest order's payment", || {
        Box::pin(async {
            let payments = suite.payments("o-after-the-hostile-headers").await;
            (!payments.is_empty()).then_some(())
        })
    })
    .await;
    assert_eq!(suite.ready_messages("billing.dlq").await, 0, "taken above");
}

/// The attack of issue 19: an `order.placed` body sent as `shipment.failed` on `shipping.events`
/// (which a publisher of `shipment.failed` may do) with forged `x-original-*` headers naming
/// `orders.events` and `order.placed`. The dead letter records where it was really delivered and
/// keeps the claim apart; it cannot be selected by the message id its sender chose; redriven, it
/// is dead-lettered again; no one is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_dead_letter_keeps_the_truth_and_redriven_is_dead_lettered_again() {
    let suite = Suite::start().await;
    suite.wait_ready().await;
    let forged = placed_by_the_test("o-no-one-placed");
    let forging = text_headers(&[
        ("x-original-exchange", suite.name("orders.events")),
        ("x-original-routing-key", "order.placed".to_owned()),
    ]);
    suite
        .publish(
            "shipping.events",
            "shipment.failed",
            &forged.encode(),
            properties(&forged).with_headers(forging),
        )
        .await;
    let dlq = BillingDeadLetters::of(&suite).await;
    let letters = dlq.wait_for_any().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.routing_key.as_deref(), Some("shipment.failed"));
    assert_eq!(
        letter.exchange.as_deref(),
        Some(suite.name("shipping.events").as_str())
    );
    assert_eq!(
        letter.claimed_routing_key.as_deref(),
        Some("order.placed"),
        "the forged header, kept for the operator to see"
    );
    assert_ne!(letter.id, forged.id, "not the id its sender chose");
    let shown = choreo_host::dlq::details(letter);
    assert!(
        shown.contains("routing key: shipment.failed")
            && shown.contains("claimed routing key: order.placed"),
        "dlq show prints both:\n{shown}"
    );

    assert!(
        dlq.redrive(&Selection::Id(forged.id.clone()))
            .await
            .is_empty(),
        "the sender's message id selects nothing"
    );
    let redriven = dlq.redrive(&Selection::Id(letter.id.clone())).await;
    assert_eq!(redriven.len(), 1);
    let again = dlq
        .wait_for("the forgery dead-lettered again", |again| {
            again.id != letter.id
        })
        .await;
    assert!(
        again
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("differs from the routing key \"shipment.failed\""),
        "{:?}",
        again.error
    );
    assert_eq!(again.routing_key.as_deref(), Some("shipment.failed"));
    // Believed, it would have charged an order no one placed, and shipping would have shipped it.
    assert!(
        suite.payments("o-no-one-placed").await.is_empty(),
        "no one charged"
    );
}

/// The same forgery, made to be dead-lettered by the broker itself rather than by billing: sent
/// with a per-message TTL of 1 ms while billing is stopped, it expires in billing's queue and the
/// broker dead-letters it with every header its sender wrote (RabbitMQ 3.10 quorum queues honour
/// per-message TTL). Its letter believes none of them, and redriven it is dead-lettered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_the_broker_dead_lettered_by_itself_is_believed_no_more_when_redriven() {
    let mut suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;
    suite.take(Which::Billing).stop().await;
    let forged = placed_by_the_test("o-expired-forgery");
    let forging = text_headers(&[
        ("x-original-exchange", suite.name("orders.events")),
        ("x-original-routing-key", "order.placed".to_owned()),
        ("x-dead-letter-id", "dl-00000000000000a1".to_owned()),
    ]);
    suite
        .publish(
            "shipping.events",
            "shipment.failed",
            &forged.encode(),
            properties(&forged)
                .with_headers(forging)
                .with_expiration("1".into()),
        )
        .await;
    let dlq = BillingDeadLetters::of(&suite).await;
    let letters = dlq.wait_for_any().await;
    let letter = &letters[0];
    assert!(letter.by_the_broker, "{:?}", letter.error);
    assert_ne!(
        letter.id, "dl-00000000000000a1",
        "not the id its sender wrote"
    );
    assert_eq!(letter.routing_key.as_deref(), Some("shipment.failed"));
    assert_eq!(letter.claimed_routing_key.as_deref(), Some("order.placed"));

    suite.start_service(Which::Billing).await;
    suite.wait_ready().await;
    let redriven = dlq.redrive(&Selection::Id(letter.id.clone())).await;
    assert_eq!(redriven.len(), 1);
    let again = dlq
        .wait_for("the forgery dead-lettered again", |l| !l.by_the_broker)
        .await;
    assert!(
        again
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("differs from the routing key \"shipment.failed\""),
        "{:?}",
        again.error
    );
    assert!(
        suite.payments("o-expired-forgery").await.is_empty(),
        "no one charged"
    );
}
