//! Services that stop, crash, start late or cannot reach the broker: the saga still completes.

use choreo_e2e::{Options, Suite, Which, order_request};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_mid_saga_picks_up_where_it_left_off_when_started_again() {
    let mut suite = Suite::start().await;
    suite.wait_ready().await;
    suite.take(Which::Shipping).stop().await;

    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    suite.wait_for_status(id, "paid").await;
    suite.start_service(Which::Shipping).await;

    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.shipments(id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_order_does_not_matter_an_order_placed_before_billing_ever_ran_completes() {
    let mut suite = Suite::start_with(Options::default(), &[Which::Orders]).await;
    suite.wait_ready().await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");

    suite.start_service(Which::Shipping).await;
    suite.start_service(Which::Billing).await;

    suite.wait_for_status(id, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_orders_are_still_accepted_readyz_says_503_and_they_flow_once_it_is_back()
{
    let unreachable = Options {
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        wait_ready: false,
        ..Options::default()
    };
    let mut suite = Suite::start_with(unreachable, &[Which::Orders]).await;

    let ready = suite
        .http
        .get(suite.url(Which::Orders, "/readyz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(ready.status(), 503);
    let checks: Value = ready.json().await.expect("JSON");
    assert_eq!(checks["checks"]["broker"], "failing");
    assert_eq!(checks["checks"]["database"], "ok");
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id").to_owned();
    suite.take(Which::Orders).stop().await;

    suite.options.amqp_url = choreo_e2e::amqp_url();
    for which in Which::ALL {
        suite.start_service(which).await;
    }
    suite.wait_for_status(&id, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_holds_messages_instead_of_dead_lettering_them_and_the_saga_resumes() {
    let suite = Suite::start_with(
        Options {
            postgres: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let billing_db = suite.postgres_database(Which::Billing);
    // Billing's database goes away.
    crate::guarantees::set_database_reachable(&billing_db, false).await;
    let ready = suite.url(Which::Billing, "/readyz");
    choreo_e2e::poll("billing to see its database down", || {
        let request = suite.http.get(&ready).send();
        Box::pin(async move { request.await.ok().filter(|r| r.status() == 503).map(|_| ()) })
    })
    .await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    // Billing tries its batch more often than the whole retry budget (two retries here) would
    // allow a failing message: it holds it, spending none.
    crate::guarantees::wait_for_billing_tries(&suite, 4.0).await;
    assert_eq!(suite.order(id).await["status"], "pending");
    crate::guarantees::set_database_reachable(&billing_db, true).await;

    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    assert!(
        suite.drain("billing.dlq").await.is_empty(),
        "held, not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_once_the_outbox_is_drained_not_at_the_shutdown_timeout() {
    a_graceful_stop_drains_the_outbox(false).await;
}

/// The same on PostgreSQL, whose relay claims a batch and waits for its confirms before the
/// next: once drained, its drain at the stop must end, not go on claiming nothing until the
/// shutdown timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_on_postgresql_ends_once_the_outbox_is_drained_not_at_the_shutdown_timeout()
{
    a_graceful_stop_drains_the_outbox(true).await;
}

async fn a_graceful_stop_drains_the_outbox(postgres: bool) {
    use choreo_e2e::proxy::NodeProxy;
    // Orders reaches the broker through a relay that can hold back what the broker answers on
    // one connection: the first orders opens is its publishing one (then the consuming one).
    let node = NodeProxy::start(broker_address().await).await;
    let mut suite = Suite::start_with(
        Options {
            amqp_url_of: vec![(Which::Orders, node.url(&choreo_e2e::amqp_url()))],
            postgres,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let warm = suite.place_order(&order_request(1500, 1, "AT")).await;
    suite
        .wait_for_status(warm["id"].as_str().expect("id"), "completed")
        .await;
    // Its last event (order.completed) confirmed too: no earlier publish waits for a confirm,
    // which PostgreSQL's relay would wait for before it claimed the next batch.
    choreo_e2e::poll("orders' outbox empty", || {
        Box::pin(async {
            let scrape = suite.scrape(Which::Orders).await;
            (scrape.value("choreo_outbox_backlog", &[]) == 0.0).then_some(())
        })
    })
    .await;

    // The broker's confirms stop reaching orders: its relay sends these orders' events and waits
    // (on SQLite every one of them, pipelined; on PostgreSQL the batch it claimed first).
    node.hold(0);
    for price in 200..210 {
        suite.place_order(&order_request(price, 1, "AT")).await;
    }
    let placed = [("type", "order.placed")];
    let sent = if postgres { 2.0 } else { 11.0 };
    choreo_e2e::poll("the events sent", || {
        Box::pin(async {
            let scrape = suite.scrape(Which::Orders).await;
            (scrape.value(choreo_messaging::metrics::PUBLISHED, &placed) >= sent).then_some(())
        })
    })
    .await;
    let scrape = suite.scrape(Which::Orders).await;
    assert_eq!(
        scrape.value(choreo_messaging::metrics::CONFIRMED, &placed),
        1.0,
        "only the first order's event is confirmed"
    );
    assert!(scrape.value("choreo_outbox_backlog", &[]) >= 10.0);
    let database_url = suite
        .settings_for(Which::Orders)
        .database
        .database_url
        .expose()
        .to_owned();
    let data_dir = suite.settings_for(Which::Orders).database.data_dir;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(suite.take(Which::Orders).stop());
    // The stop is under way once orders' consumer has left its queue; the relay's stop follows
    // within milliseconds, and it must then wait for what it is owed. The confirms stay away a
    // while longer (the fault's length, not a wait for something to happen: were it too short
    // on a slow machine, the test would check less, never fail wrongly), then flow again.
    suite.wait_for_no_consumers("orders").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    node.release();
    stopping.await.expect("the stop completes");

    // The relay waited for the confirms it was owed, marked them, published the rest, and
    // ended; the shutdown timeout (5 s here) is for a broker that never answers.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    let unsent: i64 = {
        use sqlx::Connection as _;
        const UNSENT: &str = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL";
        if postgres {
            let mut db = sqlx::PgConnection::connect(&database_url)
                .await
                .expect("orders' database");
            sqlx::query_scalar(UNSENT).fetch_one(&mut db).await
        } else {
            let file = format!("sqlite://{data_dir}/orders.db");
            let mut db = sqlx::SqliteConnection::connect(&file)
                .await
                .expect("orders' database");
            sqlx::query_scalar(UNSENT).fetch_one(&mut db).await
        }
        .expect("count")
    };
    assert_eq!(
        unsent, 0,
        "every row published, confirmed and marked sent before the stop ended"
    );
}

/// The address of the test broker's first node (`AMQP_URL`), for a relay in front of it.
async fn broker_address() -> std::net::SocketAddr {
    let real = choreo_e2e::amqp_url();
    let authority = real.split("://").nth(1).expect("url");
    let host_port = authority
        .rsplit('@')
        .next()
        .expect("host")
        .split('/')
        .next()
        .expect("host:port");
    tokio::net::lookup_host(host_port)
        .await
        .expect("resolves")
        .next()
        .expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_several_broker_nodes_the_services_skip_dead_and_frozen_ones_and_move_on_when_theirs_dies()
 {
    use choreo_e2e::proxy::NodeProxy;
    let real = choreo_e2e::amqp_url();
    let broker = broker_address().await;
    // A node that refuses connections, one that accepts TCP and never answers (frozen), then
    // two live ones: the first is taken away mid-saga.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let first = NodeProxy::start(broker).await;
    let second = NodeProxy::start(broker).await;
    let nodes = [
        "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
        format!(
            "amqp://guest:guest@{}/%2f",
            frozen.local_addr().expect("addr")
        ),
        first.url(&real),
        second.url(&real),
    ];
    let mut suite = Suite::start_with(
        Options {
            amqp_url: nodes.join(","),
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    suite.wait_ready().await;
    let before = suite.place_order(&order_request(1500, 1, "AT")).await;
    suite
        .wait_for_status(before["id"].as_str().expect("id"), "completed")
        .await;

    // The node every service is connected to dies; the next live one serves the rest.
    first.fail().await;
    let after = suite.place_order(&order_request(1600, 1, "AT")).await;
    suite
        .wait_for_status(after["id"].as_str().expect("id"), "completed")
        .await;
    suite.wait_ready().await;
    drop(frozen);
    suite.take(Which::Orders).stop().await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parking_lot_left_classic_by_an_earlier_version_is_kept_and_the_saga_completes() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    // Before the parking lots were quorum queues, they were classic lazy ones; RabbitMQ refuses
    // to change a queue's type, so a service meeting one keeps it (and binds it) instead of
    // failing every session.
    let mut suite = Suite::start_with(
        Options {
            wait_ready: false,
            ..Options::default()
        },
        &[],
    )
    .await;
    let mut lazy = FieldTable::default();
    lazy.insert("x-queue-mode".into(), AMQPValue::LongString("lazy".into()));
    let parking_lot = format!("{}orders.events.unrouted", suite.prefix);
    suite
        .channel
        .queue_declare(
            parking_lot.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            lazy,
        )
        .await
        .expect("the old classic parking lot");
    for which in Which::ALL {
        suite.start_service(which).await;
    }
    suite.wait_ready().await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    suite
        .wait_for_status(order["id"].as_str().expect("id"), "completed")
        .await;
    // order.completed went to the old queue: bound, and kept as it was.
    let ready = || async {
        suite
            .channel
            .queue_declare(
                parking_lot.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("still there")
            .message_count()
    };
    let deadline = std::time::Instant::now() + choreo_e2e::deadline();
    let mut count = ready().await;
    while count < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        count = ready().await;
    }
    assert_eq!(count, 1, "order.completed parked in the old queue");
    let _ = suite
        .channel
        .queue_delete(parking_lot.as_str().into(), QueueDeleteOptions::default())
        .await;
}
