//! The guarantees of docs/guarantees.md, each broken on purpose at the moment that matters: a crash between
//! the handlers and the commit, a stop while the database is down, a publish the broker refuses
//! or cannot route, a duplicate only the inbox can stop, two requests racing for one
//! `Idempotency-Key`. Each test fails if the guarantee it names is broken (docs/testing.md lists
//! which change to the code each one catches).

use choreo_e2e::{Options, Suite, Which, order_request, poll};
use choreo_events::{Envelope, Event, EventType};
use choreo_host::Service;
use choreo_messaging::{Handler, HandlerError};
use choreo_store::Tx;
use lapin::BasicProperties;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use std::os::unix::process::ExitStatusExt;

/// The signal `abort()` ends a process with.
const SIGABRT: i32 = 6;

/// Five orders wait in billing's queue; billing starts in a process of its own with `failpoint`
/// set to abort, takes them, runs its handlers and dies at the failpoint, before its commit. The
/// broker must have every message back, and billing, started again, must charge each order once.
async fn billing_aborted_before_its_commit_at(failpoint: &str) {
    let mut suite = Suite::start_with(Options::default(), &[Which::Orders, Which::Shipping]).await;
    let mut ids = Vec::new();
    for price in 100..105 {
        let order = suite.place_order(&order_request(price, 1, "AT")).await;
        ids.push(order["id"].as_str().expect("id").to_owned());
    }
    suite.wait_for_ready_messages("billing", 5).await;

    let mut billing = suite.spawn_process(
        env!("CARGO_BIN_EXE_e2e-service"),
        Which::Billing,
        &format!("{failpoint}=abort"),
    );
    let status = tokio::time::timeout(choreo_e2e::deadline(), billing.wait())
        .await
        .expect("billing reaches its failpoint")
        .expect("billing's exit status");

    // Only a write reaches the failpoint, and billing's first is its first batch: it had the
    // messages in hand, unacked, when it died.
    assert_eq!(status.signal(), Some(SIGABRT), "aborted at {failpoint}");
    suite.wait_for_ready_messages("billing", 5).await;
    suite.start_service(Which::Billing).await;
    for id in &ids {
        suite.wait_for_status(id, "completed").await;
        assert_eq!(suite.payments(id).await.len(), 1, "one payment for {id}");
    }
    assert!(suite.drain("billing.dlq").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_service_gets_its_unacked_messages_again_and_the_saga_completes_once() {
    billing_aborted_before_its_commit_at("consumer.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_dies_as_its_store_commits_gets_every_message_again_and_charges_once() {
    billing_aborted_before_its_commit_at("store.before_commit").await;
}

/// A batch is acked whole: one `multiple` ack for its last delivery covers the others. Twenty
/// orders wait in billing's queue before it starts, and billing lingers (2 s, far longer than
/// the broker takes to push twenty messages), so it takes all of them in one batch (checked: one
/// transaction). Once all are handled, billing stops; had any delivery of the batch been left
/// unacked, closing its channel would put it back in the queue. (Without the linger the last
/// batch was sometimes a single delivery, whose `multiple` ack covered the ones left before it,
/// and a mutant that acked only each batch's last delivery survived a run of `make mutants`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_taken_from_a_full_queue_is_acked_whole() {
    const ORDERS: u32 = 20;
    let options = Options {
        consumer_linger_ms: 2000,
        ..Options::default()
    };
    let mut suite = Suite::start_with(options, &[Which::Orders, Which::Shipping]).await;
    let mut ids = Vec::new();
    for price in 0..ORDERS {
        let order = suite
            .place_order(&order_request(100 + i64::from(price), 1, "AT"))
            .await;
        ids.push(order["id"].as_str().expect("id").to_owned());
    }
    suite.wait_for_ready_messages("billing", ORDERS).await;

    suite.start_service(Which::Billing).await;
    for id in &ids {
        suite.wait_for_status(id, "completed").await;
    }
    let transactions = billing_transactions(&suite).await;
    assert_eq!(
        transactions, 1.0,
        "{ORDERS} waiting messages taken in one batch"
    );

    suite.take(Which::Billing).stop().await;
    let left = suite.wait_for_no_consumers("billing").await;
    assert_eq!(left, 0, "every delivery of every batch was acked");
}

/// With a linger, a batch waits for deliveries that arrive after its first: five orders placed
/// 50 ms apart reach billing one by one, and billing, lingering a second, handles them in one
/// or two transactions instead of five. Every saga still completes, and every delivery is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_lingers_takes_the_deliveries_that_arrive_meanwhile() {
    let options = Options {
        consumer_linger_ms: 1000,
        ..Options::default()
    };
    let mut suite = Suite::start_with(options, &Which::ALL).await;
    let mut ids = Vec::new();
    for price in 0..5 {
        let order = suite
            .place_order(&order_request(100 + price, 1, "AT"))
            .await;
        ids.push(order["id"].as_str().expect("id").to_owned());
        // Spacing the orders is the point: each event reaches billing on its own.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for id in &ids {
        suite.wait_for_status(id, "completed").await;
    }
    let transactions = billing_transactions(&suite).await;
    assert!(
        transactions <= 2.0,
        "five events 50 ms apart in at most two transactions: {transactions}"
    );
    suite.take(Which::Billing).stop().await;
    assert_eq!(
        suite.wait_for_no_consumers("billing").await,
        0,
        "every delivery acked"
    );
}

/// Consumer transactions billing has run (its transaction histogram's count).
async fn billing_transactions(suite: &Suite) -> f64 {
    suite.scrape(Which::Billing).await.value(
        &format!("{}_count", choreo_messaging::metrics::TRANSACTION_SECONDS),
        &[],
    )
}

/// Makes a PostgreSQL database refuse connections (or accept them again), ending those open.
pub async fn set_database_reachable(database: &str, reachable: bool) {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&choreo_e2e::postgres_url("postgres"))
        .await
        .expect("admin connection");
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS {reachable}"
    ))
    .execute(&mut admin)
    .await
    .expect("ALTER DATABASE");
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&mut admin)
            .await
            .expect("terminate");
    }
}

/// Waits until billing has tried its unit of work `tries` times (each try is one sample of the
/// transaction histogram, failed or not).
pub async fn wait_for_billing_tries(suite: &Suite, tries: f64) {
    poll(&format!("billing to try its batch {tries} times"), || {
        Box::pin(async move {
            let scrape = suite.scrape(Which::Billing).await;
            let count = scrape.value(
                &format!("{}_count", choreo_messaging::metrics::TRANSACTION_SECONDS),
                &[],
            );
            (count >= tries).then_some(())
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_while_its_database_is_down_leaves_the_held_batch_to_the_broker() {
    let mut suite = Suite::start_with(
        Options {
            postgres: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let billing_db = suite.postgres_database(Which::Billing);
    set_database_reachable(&billing_db, false).await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    // Held past the whole retry budget (two retries here): the batch is in billing's hands.
    wait_for_billing_tries(&suite, 4.0).await;
    assert_eq!(suite.ready_messages("billing").await, 0, "billing holds it");

    suite.take(Which::Billing).stop().await;

    // Nothing committed, so nothing was acked: the broker has the message back.
    suite.wait_for_ready_messages("billing", 1).await;
    set_database_reachable(&billing_db, true).await;
    suite.start_service(Which::Billing).await;
    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    assert!(suite.drain("billing.dlq").await.is_empty());
}

/// A publish of orders' `order.placed` that the broker answers with `refuse` (a nack or a
/// return), for as long as the refusal is in place: the row must stay unsent, be published
/// again, and be marked sent only after a confirm; the saga then completes with one payment.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// A queue bound to `order.placed` that takes no message (`x-max-length` 0,
    /// `x-overflow: reject-publish`): the broker nacks every publish routed to it.
    Nack,
    /// Billing's binding and the alternate exchange's queue unbound: `order.placed` reaches no
    /// queue, and the broker returns it (mandatory). The relay's next session declares the
    /// topology again, which ends the refusal.
    Return,
}

async fn a_refused_publish_stays_unsent(refusal: Refusal, postgres: bool) {
    let suite = Suite::start_with(
        Options {
            postgres,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let orders_exchange = suite.name("orders.events");
    match refusal {
        Refusal::Nack => {
            let mut full = FieldTable::default();
            full.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
            full.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
            // Exclusive: the broker deletes it with the test's connection, whatever happens.
            let refusing = suite.name("refusing");
            let exclusive = QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            };
            suite
                .channel
                .queue_declare(refusing.as_str().into(), exclusive, full)
                .await
                .expect("a queue that takes nothing");
            suite
                .channel
                .queue_bind(
                    refusing.as_str().into(),
                    orders_exchange.as_str().into(),
                    "order.placed".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        }
        Refusal::Return => {
            suite
                .channel
                .queue_unbind(
                    suite.name("billing").as_str().into(),
                    orders_exchange.as_str().into(),
                    "order.placed".into(),
                    FieldTable::default(),
                )
                .await
                .expect("unbind billing");
            let unrouted = choreo_messaging::topology::unrouted_name("orders.events");
            suite
                .channel
                .queue_unbind(
                    suite.name(&unrouted).as_str().into(),
                    suite.name(&unrouted).as_str().into(),
                    "".into(),
                    FieldTable::default(),
                )
                .await
                .expect("unbind the parking lot");
        }
    }
    let placed = [("type", "order.placed")];
    let published =
        |scrape: &choreo_e2e::Scrape| scrape.value(choreo_messaging::metrics::PUBLISHED, &placed);
    let confirmed =
        |scrape: &choreo_e2e::Scrape| scrape.value(choreo_messaging::metrics::CONFIRMED, &placed);

    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");

    // Refused, so published again: never marked sent on a refusal.
    poll("order.placed published a second time", || {
        Box::pin(async {
            let scrape = suite.scrape(Which::Orders).await;
            (published(&scrape) >= 2.0).then_some(())
        })
    })
    .await;
    if let Refusal::Nack = refusal {
        // Still refused: not one confirm, and the row is still in the outbox.
        let scrape = suite.scrape(Which::Orders).await;
        assert_eq!(confirmed(&scrape), 0.0, "a nack is no confirm");
        assert!(scrape.value("choreo_outbox_backlog", &[]) >= 1.0);
        suite
            .channel
            .queue_unbind(
                suite.name("refusing").as_str().into(),
                orders_exchange.as_str().into(),
                "order.placed".into(),
                FieldTable::default(),
            )
            .await
            .expect("the refusal ends");
    }

    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1, "one payment");
    poll("the outbox marked sent after a confirm", || {
        Box::pin(async {
            let scrape = suite.scrape(Which::Orders).await;
            (confirmed(&scrape) >= 1.0 && scrape.value("choreo_outbox_backlog", &[]) == 0.0)
                .then_some(())
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_nacks_stays_unsent_and_is_published_again_on_sqlite() {
    a_refused_publish_stays_unsent(Refusal::Nack, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_nacks_stays_unsent_and_is_published_again_on_postgresql() {
    a_refused_publish_stays_unsent(Refusal::Nack, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_returns_stays_unsent_and_is_published_again_on_sqlite() {
    a_refused_publish_stays_unsent(Refusal::Return, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_returns_stays_unsent_and_is_published_again_on_postgresql() {
    a_refused_publish_stays_unsent(Refusal::Return, true).await;
}

/// A handler whose effect has no unique key: a row per handling, so only the inbox can stop a
/// duplicate from counting twice.
#[derive(Debug)]
struct Tally;

impl Handler for Tally {
    fn handle(
        &self,
        event: &Event,
        _envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        tx.execute(
            "INSERT INTO tally (order_id) VALUES ($1)",
            &[event.order_id().into()],
        )?;
        Ok(Vec::new())
    }
}

/// A `payment.captured` for `order_id` as billing would publish it.
fn captured(order_id: &str) -> Envelope {
    let event = Event::from_data(
        EventType::PaymentCaptured,
        &json!({
            "order_id": order_id, "payment_id": format!("pay-{order_id}"),
            "amount_cents": 500, "currency": "EUR",
            "shipping_address": {"name": "n", "line1": "l", "city": "c", "postal_code": "p", "country": "AT"}
        }),
    )
    .expect("valid");
    Envelope::root("billing", &event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_inbox_stops_a_redelivered_event_whose_effect_has_no_unique_key() {
    // Shipping's queue and bindings, with the tally in place of shipping's handler.
    let suite = Suite::start_with(Options::default(), &[]).await;
    let service = Service::builder(
        choreo_events::topology::SHIPPING,
        &suite.settings_for(Which::Shipping),
        &shipping::MIGRATIONS,
        Tally,
    )
    .build()
    .await
    .expect("builds");
    let db = service.database().clone();
    db.write(|tx| -> Result<(), choreo_store::Error> {
        tx.execute("CREATE TABLE tally (order_id TEXT NOT NULL)", &[])?;
        Ok(())
    })
    .await
    .expect("the tally table");
    let ready = format!("http://{}/readyz", service.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    poll("the tally service ready", || {
        let request = suite.http.get(&ready).send();
        Box::pin(async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) })
    })
    .await;
    let publish = |envelope: Envelope| {
        let suite = &suite;
        async move {
            let properties = BasicProperties::default()
                .with_message_id(envelope.id.as_str().into())
                .with_type(envelope.event_type.as_str().into())
                .with_content_type("application/cloudevents+json".into());
            suite
                .publish(
                    "billing.events",
                    "payment.captured",
                    &envelope.encode(),
                    properties,
                )
                .await;
        }
    };
    let tallied = |order_id: &'static str| {
        let db = db.clone();
        async move {
            db.read(move |tx| {
                tx.query_opt(
                    "SELECT COUNT(*) FROM tally WHERE order_id = $1",
                    &[order_id.into()],
                )?
                .unwrap_or_default()
                .take::<i64>(0)
            })
            .await
            .expect("count")
        }
    };
    let handled = |order_id: &'static str| async move {
        poll(&format!("{order_id} tallied"), || {
            Box::pin(async move { (tallied(order_id).await > 0).then_some(()) })
        })
        .await;
    };

    // Handled alone, then its copy alone: a duplicate by the inbox's row.
    let first = captured("first");
    publish(first.clone()).await;
    handled("first").await;
    publish(first).await;
    // Published together, most likely handled in one batch: the second copy by the batch's own
    // inbox statement. A later event behind them says both copies were handled.
    let second = captured("second");
    publish(second.clone()).await;
    publish(second).await;
    publish(captured("sentinel")).await;
    handled("sentinel").await;

    assert_eq!(
        tallied("first").await,
        1,
        "the copy of `first` had no effect"
    );
    assert_eq!(
        tallied("second").await,
        1,
        "the copy of `second` had no effect"
    );
    let _ = stop.send(());
    running.await.expect("joins").expect("stops cleanly");
}

/// Sends two `POST /orders` with one `Idempotency-Key` at once, `rounds` times; returns each
/// round's two answers (status, body).
async fn racing_posts(suite: &Suite, bodies: [&Value; 2], rounds: usize) -> Vec<[(u16, Value); 2]> {
    let post = |key: String, body: &Value| {
        let request = suite
            .http
            .post(suite.url(Which::Orders, "/orders"))
            .header("Idempotency-Key", key)
            .json(body)
            .send();
        async move {
            let response = request.await.expect("POST /orders");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("a JSON body"))
        }
    };
    let mut answers = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let key = uuid::Uuid::new_v4().to_string();
        let (a, b) = tokio::join!(post(key.clone(), bodies[0]), post(key, bodies[1]));
        answers.push([a, b]);
    }
    answers
}

async fn one_key_racing(postgres: bool) {
    let suite = Suite::start_with(
        Options {
            postgres,
            ..Options::default()
        },
        &[Which::Orders],
    )
    .await;
    let body = order_request(1500, 1, "AT");
    let other = order_request(1600, 1, "AT");

    for [(status_a, a), (status_b, b)] in racing_posts(&suite, [&body, &body], 40).await {
        let mut statuses = [status_a, status_b];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "one order, answered twice: {a} {b}");
        assert_eq!(a["id"], b["id"], "the same order");
    }
    for [(status_a, a), (status_b, b)] in racing_posts(&suite, [&body, &other], 40).await {
        let mut statuses = [status_a, status_b];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "one order and one conflict: {a} {b}");
    }
    let listed: Value = suite
        .http
        .get(suite.url(Which::Orders, "/orders?limit=500"))
        .send()
        .await
        .expect("GET /orders")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listed["orders"].as_array().map(Vec::len),
        Some(80),
        "one order per key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_racing_with_one_idempotency_key_get_one_order_on_postgresql() {
    one_key_racing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_racing_with_one_idempotency_key_get_one_order_on_sqlite() {
    one_key_racing(false).await;
}
