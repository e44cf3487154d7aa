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
async fn a_crashed_service_gets_its_unacked_messages_again_and_the_saga_completes_once() {
    let mut suite = Suite::start().await;
    suite.wait_ready().await;
    suite.take(Which::Billing).kill().await;

    let mut orders: Vec<Value> = Vec::new();
    for price in 100..105 {
        orders.push(suite.place_order(&order_request(price, 1, "AT")).await);
    }
    suite.start_service(Which::Billing).await;

    for order in &orders {
        let id = order["id"].as_str().expect("id");
        suite.wait_for_status(id, "completed").await;
        assert_eq!(suite.payments(id).await.len(), 1);
    }
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
    use sqlx::Connection as _;
    let suite = Suite::start_with(
        Options {
            postgres: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let billing_db = suite.postgres_database(Which::Billing);
    let mut admin = sqlx::PgConnection::connect(&choreo_e2e::postgres_url("postgres"))
        .await
        .expect("admin");
    let set_allowed =
        |allowed: bool| format!("ALTER DATABASE {billing_db} ALLOW_CONNECTIONS {allowed}");

    // Billing's database goes away.
    sqlx::query(&set_allowed(false))
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&billing_db)
        .execute(&mut admin)
        .await
        .expect("terminate");
    let ready = suite.url(Which::Billing, "/readyz");
    choreo_e2e::poll("billing to see its database down", || {
        let request = suite.http.get(&ready).send();
        Box::pin(async move { request.await.ok().filter(|r| r.status() == 503).map(|_| ()) })
    })
    .await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    let id = order["id"].as_str().expect("id");
    // The outage lasts several times the whole retry budget (100 ms + 300 ms here).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(suite.order(id).await["status"], "pending");
    sqlx::query(&set_allowed(true))
        .execute(&mut admin)
        .await
        .expect("allow connections");

    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    assert!(
        suite.drain("billing.dlq").await.is_empty(),
        "held, not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_once_the_outbox_is_drained_not_at_the_shutdown_timeout() {
    let mut suite = Suite::start().await;
    suite.wait_ready().await;
    let order = suite.place_order(&order_request(1500, 1, "AT")).await;
    suite
        .wait_for_status(order["id"].as_str().expect("id"), "completed")
        .await;

    let started = std::time::Instant::now();
    suite.take(Which::Orders).stop().await;

    // Every confirm is in: the relay's marker ends with the window, well before the shutdown
    // timeout (5 s here), which is for a broker that does not answer.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "stopping took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_several_broker_nodes_the_services_skip_dead_and_frozen_ones_and_move_on_when_theirs_dies()
 {
    use choreo_e2e::proxy::NodeProxy;
    let real = choreo_e2e::amqp_url();
    let broker: std::net::SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let broker = if real.contains("127.0.0.1:5672") {
        broker
    } else {
        // AMQP_URL points elsewhere: relay to its host and port.
        let authority = real.split("://").nth(1).expect("url");
        let host_port = authority
            .rsplit('@')
            .next()
            .expect("host")
            .split('/')
            .next();
        tokio::net::lookup_host(host_port.expect("host:port"))
            .await
            .expect("resolves")
            .next()
            .expect("an address")
    };
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
    let deadline = std::time::Instant::now() + choreo_e2e::DEADLINE;
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
