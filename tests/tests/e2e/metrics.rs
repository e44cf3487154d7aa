//! `GET /metrics`: the counters move by exactly what the orders do, and the scraped text is kept
//! under `target/tmp/metrics/` for `promtool check metrics` (`make check-metrics`, in CI).

use choreo_e2e::{Labels, Options, Scrape, Suite, Which, order_request, poll};
use lapin::BasicProperties;
use std::collections::BTreeMap;

const CONSUMED: &str = "choreo_messages_consumed_total";
const PUBLISHED: &str = "choreo_messages_published_total";
const CONFIRMED: &str = "choreo_messages_confirmed_total";

/// Series (name, labels) and how much each moved, for the series of `names`.
type Deltas = BTreeMap<(String, Labels), f64>;

/// How much every series named in `names` moved from `before` to `after` (those that did not
/// move included, at 0).
fn deltas(before: &Scrape, after: &Scrape, names: &[&str]) -> Deltas {
    after
        .samples
        .iter()
        .filter(|(name, _, _)| names.contains(&name.as_str()))
        .map(|(name, labels, value)| {
            let was = before
                .samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map_or(0.0, |(_, _, v)| *v);
            ((name.clone(), labels.clone()), value - was)
        })
        .collect()
}

/// A series by name and labels, and how much it should move.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// `expected` in the shape of [`moved`]: every series not listed must not have moved.
fn expect(expected: &[Expected<'_>]) -> BTreeMap<String, f64> {
    expected
        .iter()
        .map(|(name, labels, value)| {
            let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            (format!("{name}{{{}}}", labels.join(",")), *value)
        })
        .collect()
}

/// The deltas that are not 0, as `name{k=v,...}` without the `service` label.
fn moved(deltas: &Deltas) -> BTreeMap<String, f64> {
    deltas
        .iter()
        .filter(|(_, delta)| **delta != 0.0)
        .map(|((name, labels), delta)| {
            let mut labels: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k != "service")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            (format!("{name}{{{}}}", labels.join(",")), *delta)
        })
        .collect()
}

async fn scrape_all(suite: &Suite) -> [Scrape; 3] {
    [
        suite.scrape(Which::Orders).await,
        suite.scrape(Which::Billing).await,
        suite.scrape(Which::Shipping).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_of_each_kind_moves_every_counter_by_exactly_what_it_does() {
    let suite = Suite::start_with(
        Options {
            tap: true,
            ..Options::default()
        },
        &Which::ALL,
    )
    .await;
    let before = scrape_all(&suite).await;

    // Arrange / Act: one order completes, one is declined, one cannot be shipped.
    let mut ids = Vec::new();
    for (price, country, status) in [
        (1500, "AT", "completed"),
        (100_001, "AT", "cancelled"),
        (1500, "AQ", "cancelled"),
    ] {
        let order = suite.place_order(&order_request(price, 1, country)).await;
        let id = order["id"].as_str().expect("id").to_owned();
        suite.wait_for_status(&id, status).await;
        ids.push(id);
    }
    // Terminal is not the end: wait until every outbox is confirmed empty.
    let after = poll("every outbox drained", || {
        Box::pin(async {
            let now = scrape_all(&suite).await;
            let drained = now.iter().all(|s| {
                s.value("choreo_outbox_backlog", &[]) == 0.0
                    && s.value(PUBLISHED, &[]) == s.value(CONFIRMED, &[])
            });
            let orders_confirmed = now[0].value(CONFIRMED, &[]) - before[0].value(CONFIRMED, &[]);
            (drained && orders_confirmed >= 6.0).then_some(now)
        })
    })
    .await;

    // Assert: every message counter moved by exactly what the three orders do, and no other.
    let names = [
        CONSUMED,
        PUBLISHED,
        CONFIRMED,
        "choreo_sagas_completed_total",
        "choreo_sagas_cancelled_total",
        "choreo_broker_reconnects_total",
    ];
    let handled = |t: &'static str| -> [(&'static str, &'static str); 2] {
        [("type", t), ("outcome", "handled")]
    };
    let orders_expected = expect(&[
        (CONSUMED, &handled("payment.captured"), 2.0),
        (CONSUMED, &handled("payment.declined"), 1.0),
        (CONSUMED, &handled("payment.refunded"), 1.0),
        (CONSUMED, &handled("shipment.dispatched"), 1.0),
        (CONSUMED, &handled("shipment.failed"), 1.0),
        (PUBLISHED, &[("type", "order.placed")], 3.0),
        (CONFIRMED, &[("type", "order.placed")], 3.0),
        (PUBLISHED, &[("type", "order.completed")], 1.0),
        (CONFIRMED, &[("type", "order.completed")], 1.0),
        (PUBLISHED, &[("type", "order.cancelled")], 2.0),
        (CONFIRMED, &[("type", "order.cancelled")], 2.0),
        ("choreo_sagas_completed_total", &[], 1.0),
        (
            "choreo_sagas_cancelled_total",
            &[("reason", "payment_declined")],
            1.0,
        ),
        (
            "choreo_sagas_cancelled_total",
            &[("reason", "shipping_failed")],
            1.0,
        ),
    ]);
    let billing_expected = expect(&[
        (CONSUMED, &handled("order.placed"), 3.0),
        (CONSUMED, &handled("shipment.failed"), 1.0),
        (PUBLISHED, &[("type", "payment.captured")], 2.0),
        (CONFIRMED, &[("type", "payment.captured")], 2.0),
        (PUBLISHED, &[("type", "payment.declined")], 1.0),
        (CONFIRMED, &[("type", "payment.declined")], 1.0),
        (PUBLISHED, &[("type", "payment.refunded")], 1.0),
        (CONFIRMED, &[("type", "payment.refunded")], 1.0),
    ]);
    let shipping_expected = expect(&[
        (CONSUMED, &handled("payment.captured"), 2.0),
        (PUBLISHED, &[("type", "shipment.dispatched")], 1.0),
        (CONFIRMED, &[("type", "shipment.dispatched")], 1.0),
        (PUBLISHED, &[("type", "shipment.failed")], 1.0),
        (CONFIRMED, &[("type", "shipment.failed")], 1.0),
    ]);
    for (index, expected) in [orders_expected, billing_expected, shipping_expected]
        .into_iter()
        .enumerate()
    {
        let service = Which::ALL[index];
        assert_eq!(
            moved(&deltas(&before[index], &after[index], &names)),
            expected,
            "{service:?}"
        );
    }

    // The handler ran once per handled message; the HTTP series use the route, not the path.
    let histogram_count = |scrape: &Scrape, t: &str| {
        scrape.value("choreo_handler_duration_seconds_count", &[("type", t)])
    };
    assert_eq!(histogram_count(&after[0], "payment.captured"), 2.0);
    assert_eq!(histogram_count(&after[1], "order.placed"), 3.0);
    assert!(after[0].value("choreo_consumer_transaction_duration_seconds_count", &[]) >= 1.0);
    let posted = [("route", "/orders"), ("method", "POST"), ("status", "201")];
    assert_eq!(
        after[0].value("choreo_http_requests_total", &posted)
            - before[0].value("choreo_http_requests_total", &posted),
        3.0
    );
    assert_eq!(
        after[0].value("choreo_http_request_duration_seconds_count", &posted)
            - before[0].value("choreo_http_request_duration_seconds_count", &posted),
        3.0
    );
    let polled = [
        ("route", "/orders/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert!(after[0].value("choreo_http_requests_total", &polled) >= 3.0);
    assert!(
        !after[0].text.contains(&ids[0]),
        "no series names an order id"
    );

    // The gauges read when scraped: nothing waits in an outbox, every consumed id is in an inbox.
    for (index, inbox) in [(0, 6.0), (1, 4.0), (2, 2.0)] {
        let scrape = &after[index];
        let service = Which::ALL[index];
        assert_eq!(
            scrape.value("choreo_outbox_backlog", &[]),
            0.0,
            "{service:?}"
        );
        assert_eq!(
            scrape.value("choreo_outbox_oldest_age_seconds", &[]),
            0.0,
            "{service:?}"
        );
        assert_eq!(scrape.value("choreo_inbox_rows", &[]), inbox, "{service:?}");
        assert_eq!(
            scrape.value("choreo_broker_connected", &[]),
            1.0,
            "{service:?}"
        );
        assert_eq!(
            scrape.value("choreo_consumer_consuming", &[]),
            1.0,
            "{service:?}"
        );
        let name = service.topology().name;
        assert!(
            scrape
                .samples
                .iter()
                .all(|(_, labels, _)| labels.contains(&("service".to_owned(), name.to_owned()))),
            "every series of {name} says so"
        );
    }

    // Act again: the broker hands billing an `order.placed` it has handled already.
    let tapped = suite.wait_for_tapped(12).await;
    let placed = tapped
        .iter()
        .find(|e| e.event_type == "order.placed")
        .expect("an order.placed");
    suite
        .publish(
            "orders.events",
            "order.placed",
            &placed.encode(),
            BasicProperties::default().with_message_id(placed.id.as_str().into()),
        )
        .await;
    let duplicate = [("type", "order.placed"), ("outcome", "duplicate")];
    let again = poll("the duplicate counted", || {
        Box::pin(async {
            let billing = suite.scrape(Which::Billing).await;
            (billing.value(CONSUMED, &duplicate) == 1.0).then_some(billing)
        })
    })
    .await;

    // Assert: counted as a duplicate, and nothing else moved.
    assert_eq!(
        moved(&deltas(&after[1], &again, &names)),
        expect(&[(CONSUMED, &duplicate, 1.0)])
    );

    // Keep the live text of each service for `promtool check metrics`.
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics");
    std::fs::create_dir_all(&kept).expect("target/tmp/metrics");
    for (which, scrape) in Which::ALL.iter().zip(scrape_all(&suite).await) {
        let file = kept.join(format!("{}.prom", which.topology().name));
        std::fs::write(&file, &scrape.text).expect("metrics written");
    }
}

/// A client that makes up methods (any token is a valid HTTP method) adds no series: methods are
/// labelled from a closed set plus `other`, on `/healthz` as on every route, token or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_are_counted_as_other_and_add_no_series() {
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;
    suite.wait_ready().await;
    let client = choreo_e2e::http_client().build().expect("client");
    for i in 0..40 {
        let method =
            reqwest::Method::from_bytes(format!("M{i:03}{}", "X".repeat(1_000)).as_bytes())
                .expect("a token is a method");
        let path = if i % 2 == 0 { "/healthz" } else { "/payments" };
        let answer = client
            .request(method, suite.url(Which::Billing, path))
            .send()
            .await
            .expect("answered");
        assert!(answer.status().is_client_error(), "{}", answer.status());
    }
    let scrape = suite.scrape(Which::Billing).await;
    let methods: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .filter(|(name, _, _)| name == "choreo_http_requests_total")
        .filter_map(|(_, labels, _)| {
            labels
                .iter()
                .find(|(k, _)| k == "method")
                .map(|(_, v)| v.clone())
        })
        .collect();
    let made_up: Vec<&str> = methods
        .iter()
        .filter(|m| m.len() > 7)
        .map(|m| &m[..m.len().min(8)])
        .collect();
    assert!(
        made_up.is_empty(),
        "only known methods and other, but {} made-up ones: {made_up:?}",
        made_up.len()
    );
    let other: f64 = scrape
        .samples
        .iter()
        .filter(|(name, labels, _)| {
            name == "choreo_http_requests_total"
                && labels.iter().any(|(k, v)| k == "method" && v == "other")
        })
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(other, 40.0, "each made-up request counted once, as other");
}

/// What an operator joins and graphs beside the suite's own series: the binary's version, and
/// the process's CPU, memory and file descriptors as Prometheus's client libraries name them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exports_its_build_info_and_its_process_metrics() {
    let suite = Suite::start_with(Options::default(), &[Which::Billing]).await;

    let scrape = suite.scrape(Which::Billing).await;

    let version = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("service", "billing"),
    ];
    assert_eq!(scrape.value("choreo_build_info", &version), 1.0);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = scrape.value(name, &[("service", "billing")]);
        assert!(value > 0.0, "{name} is {value}:\n{}", scrape.text);
    }
    let started = scrape.value("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 3_600.0,
        "started {started}, now {now}"
    );
}
