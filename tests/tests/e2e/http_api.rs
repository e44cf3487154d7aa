//! The HTTP contract: validation with JSON errors, idempotency keys, listing, health.

use choreo_e2e::{Suite, Which, order_request};
use reqwest::Method;
use serde_json::{Value, json};

async fn post(suite: &Suite, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = suite
        .http
        .post(suite.url(Which::Orders, "/orders"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("every answer is JSON"))
}

async fn get_json(suite: &Suite, path: &str) -> Value {
    suite
        .http
        .get(suite.url(Which::Orders, path))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("every answer is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_orders_get_a_422_listing_every_problem_and_malformed_json_a_400() {
    let suite = Suite::start_with(Default::default(), &[Which::Orders]).await;

    let mut invalid = order_request(-1, 0, "Austria");
    invalid["currency"] = json!("eu");
    invalid["shipping_address"]["name"] = json!("  ");
    let (status, body) = post(&suite, &invalid.to_string(), None).await;
    assert_eq!(status, 422);
    let details = body["details"].to_string();
    for field in [
        "currency",
        "quantity",
        "unit_price_cents",
        "country",
        "shipping_address.name",
    ] {
        assert!(details.contains(field), "{field} missing from {details}");
    }

    let mut no_items = order_request(1, 1, "AT");
    no_items["items"] = json!([]);
    assert_eq!(post(&suite, &no_items.to_string(), None).await.0, 422);
    let mut too_many = order_request(1, 1001, "AT");
    too_many["customer_id"] = json!("c");
    assert_eq!(post(&suite, &too_many.to_string(), None).await.0, 422);
    let missing_field = json!({"customer_id": "c"});
    assert_eq!(post(&suite, &missing_field.to_string(), None).await.0, 422);

    let (status, body) = post(&suite, "{\"customer_id\": ", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "malformed JSON");

    let huge = format!("{{\"customer_id\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, body) = post(&suite, &huge, None).await;
    assert_eq!(status, 413);
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_order_and_a_reused_key_with_another_body_is_a_conflict()
 {
    let suite = Suite::start().await;
    let body = order_request(1500, 1, "AT").to_string();

    let (first_status, first) = post(&suite, &body, Some("key-1")).await;
    let (second_status, second) = post(&suite, &body, Some("key-1")).await;
    assert_eq!((first_status, second_status), (201, 200));
    assert_eq!(first["id"], second["id"]);

    let other = order_request(2500, 1, "AT").to_string();
    let (status, error) = post(&suite, &other, Some("key-1")).await;
    assert_eq!(status, 409);
    assert!(
        error["error"]
            .as_str()
            .expect("error")
            .contains("Idempotency-Key")
    );

    let id = first["id"].as_str().expect("id");
    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    let listed: Value = get_json(&suite, "/orders").await;
    assert_eq!(
        listed["orders"].as_array().expect("orders").len(),
        1,
        "one order for one key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_read_by_id_and_listed_newest_first_with_filters() {
    let suite = Suite::start_with(Default::default(), &[Which::Orders]).await;
    let first = suite.place_order(&order_request(100, 1, "AT")).await;
    let second = suite.place_order(&order_request(200, 1, "AT")).await;

    let response = suite
        .http
        .get(suite.url(
            Which::Orders,
            &format!("/orders/{}", first["id"].as_str().expect("id")),
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let read: Value = response.json().await.expect("JSON");
    assert_eq!(read, first);
    for field in [
        "id",
        "customer_id",
        "status",
        "cancellation_reason",
        "total_cents",
        "currency",
        "items",
        "shipping_address",
        "created_at",
        "updated_at",
        "history",
    ] {
        assert!(read.get(field).is_some(), "{field} missing");
    }

    let list = |query: &'static str| {
        let request = suite
            .http
            .get(suite.url(Which::Orders, &format!("/orders{query}")))
            .send();
        async move {
            let response = request.await.expect("GET");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("JSON"),
            )
        }
    };
    let (status, all) = list("?status=pending&limit=10").await;
    assert_eq!(status, 200);
    let ids: Vec<&Value> = all["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]]);
    assert_eq!(
        list("?limit=1").await.1["orders"]
            .as_array()
            .expect("orders")
            .len(),
        1
    );
    assert_eq!(list("?status=completed").await.1["orders"], json!([]));
    assert_eq!(list("?status=lost").await.0, 422);
    assert_eq!(list("?limit=0").await.0, 422);
    assert_eq!(list("?limit=many").await.0, 422);

    let missing = suite
        .http
        .get(suite.url(Which::Orders, "/orders/no-such-order"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.expect("JSON")["error"].is_string());
    let nowhere = suite
        .http
        .get(suite.url(Which::Orders, "/nowhere"))
        .send()
        .await
        .expect("GET");
    assert_eq!(nowhere.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_is_healthy_and_ready_once_connected() {
    let suite = Suite::start().await;
    suite.wait_ready().await;
    for which in Which::ALL {
        let health = suite
            .http
            .get(suite.url(which, "/healthz"))
            .send()
            .await
            .expect("GET");
        assert_eq!(health.status(), 200);
        let ready: Value = suite
            .http
            .get(suite.url(which, "/readyz"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            ready["checks"],
            json!({"broker": "ok", "consumer": "ok", "database": "ok"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_declared_json_is_a_415_and_a_bad_path_a_json_400() {
    let suite = Suite::start_with(Default::default(), &[Which::Orders]).await;
    let body = order_request(100, 1, "AT").to_string();

    // What a cross-site form can send without a CORS preflight.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = suite
            .http
            .post(suite.url(Which::Orders, "/orders"))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("POST");
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let error: Value = response.json().await.expect("JSON");
        assert!(
            error["error"]
                .as_str()
                .expect("error")
                .contains("application/json")
        );
    }
    let listed: Value = get_json(&suite, "/orders").await;
    assert_eq!(listed["orders"], json!([]), "no order was created");

    let response = suite
        .http
        .get(suite.url(Which::Orders, "/orders/%FF"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.expect("every answer is JSON");
    assert_eq!(error["error"], "invalid order id");
}

/// Where a test sends a request: a service of the suite, or its observer.
#[derive(Debug, Clone, Copy)]
enum Target {
    Service(Which),
    Observer,
}

fn url_of(suite: &Suite, target: Target, path: &str) -> String {
    match target {
        Target::Service(which) => suite.url(which, path),
        Target::Observer => suite.observer_url(path),
    }
}

/// Asserts that `response` is the contract's error: JSON `{"error", "details"}` (no body for
/// `HEAD`, but still its `Content-Type`).
async fn assert_json_error(response: reqwest::Response, head: bool, what: &str) {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: Content-Type {content_type:?}"
    );
    let text = response.text().await.expect("body");
    if head {
        assert!(text.is_empty(), "{what}: a HEAD answer with a body");
        return;
    }
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text:?}"));
    assert!(body["error"].is_string(), "{what}: {body}");
    assert!(body["details"].is_array(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_tokens_every_route_but_the_probes_needs_a_right_bearer_token_and_the_saga_still_runs()
 {
    const TOKENS: &str = "e2e-first-token-0123456789,e2e-second-token-0123456789";
    let options = choreo_e2e::Options {
        api_tokens: TOKENS.to_owned(),
        ..Default::default()
    };
    let mut suite = Suite::start_with(options, &Which::ALL).await;
    suite
        .start_observer(std::time::Duration::from_secs(30))
        .await;
    let anonymous = reqwest::Client::new();
    let common = ["/metrics", "/openapi.json", "/nowhere"];
    let routes: Vec<(Target, Vec<&str>)> = vec![
        (
            Target::Service(Which::Orders),
            vec!["/orders", "/orders/some-order"],
        ),
        (Target::Service(Which::Billing), vec!["/payments"]),
        (Target::Service(Which::Shipping), vec!["/shipments"]),
        (
            Target::Observer,
            vec!["/flow", "/sagas", "/sagas/some-order", "/live"],
        ),
    ];

    for (target, paths) in &routes {
        for path in paths.iter().chain(&common) {
            let url = url_of(&suite, *target, path);
            let missing = anonymous.get(&url).send().await.expect("GET");
            let challenge = missing.headers().get("www-authenticate").cloned();
            assert_eq!(missing.status(), 401, "{target:?} {path} without a token");
            assert_eq!(
                challenge.as_ref().map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            assert_json_error(missing, false, path).await;
            let wrong = anonymous
                .get(&url)
                .bearer_auth("e2e-first-token-012345678")
                .send()
                .await
                .expect("GET");
            assert_eq!(wrong.status(), 401, "{target:?} {path} with a wrong token");
            assert_json_error(wrong, false, path).await;
            let right = anonymous
                .get(&url)
                .bearer_auth("e2e-second-token-0123456789")
                .send()
                .await
                .expect("GET");
            let expected = if path.contains("some-order") || *path == "/nowhere" {
                404
            } else {
                200
            };
            assert_eq!(
                right.status(),
                expected,
                "{target:?} {path} with a right token"
            );
        }
        for probe in ["/healthz", "/readyz"] {
            let response = anonymous
                .get(url_of(&suite, *target, probe))
                .send()
                .await
                .expect("GET");
            assert_eq!(response.status(), 200, "{target:?} {probe} without a token");
        }
    }
    let page = anonymous
        .get(suite.observer_url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(
        page.status(),
        200,
        "the observer's page, which asks for the token itself"
    );
    let placed = anonymous
        .post(suite.url(Which::Orders, "/orders"))
        .json(&order_request(100, 1, "AT"))
        .send()
        .await
        .expect("POST");
    assert_eq!(placed.status(), 401, "an order placed without a token");

    // The suite's own client sends the first token: the saga runs as without tokens.
    let order = suite.place_order(&order_request(1500, 2, "AT")).await;
    let id = order["id"].as_str().expect("id");
    suite.wait_for_status(id, "completed").await;
    assert_eq!(suite.payments(id).await.len(), 1);
    assert_eq!(suite.shipments(id).await.len(), 1);
}

/// One request of the walk: where, which method and path, the body's `Content-Type` and the
/// body, and the status expected.
type Case<'a> = (Target, Method, &'a str, Option<&'a str>, &'a str, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_of_every_service_is_the_contracts_json_error() {
    let mut suite = Suite::start().await;
    suite
        .start_observer(std::time::Duration::from_secs(30))
        .await;
    let orders = Target::Service(Which::Orders);
    let billing = Target::Service(Which::Billing);
    let shipping = Target::Service(Which::Shipping);
    let observer = Target::Observer;
    let json = Some("application/json");
    let too_big = format!("{{\"customer_id\": \"{}\"}}", "x".repeat(70 * 1024));
    let cases: Vec<Case> = vec![
        // Unknown routes, bad UTF-8 in a path included.
        (orders, Method::GET, "/nowhere", None, "", 404),
        (orders, Method::GET, "/nowhere/%FF", None, "", 404),
        (billing, Method::GET, "/nowhere", None, "", 404),
        (shipping, Method::POST, "/nowhere", json, "{}", 404),
        (observer, Method::GET, "/nowhere", None, "", 404),
        (observer, Method::HEAD, "/nowhere", None, "", 404),
        // Methods a route does not have; OPTIONS included.
        (orders, Method::DELETE, "/orders", None, "", 405),
        (orders, Method::PUT, "/orders/some-order", json, "{}", 405),
        (orders, Method::OPTIONS, "/orders", None, "", 405),
        (orders, Method::POST, "/healthz", None, "", 405),
        (billing, Method::POST, "/payments", json, "{}", 405),
        (billing, Method::OPTIONS, "/metrics", None, "", 405),
        (shipping, Method::PATCH, "/shipments", json, "{}", 405),
        (observer, Method::POST, "/flow", None, "", 405),
        (observer, Method::POST, "/live", None, "", 405),
        (observer, Method::OPTIONS, "/sagas", None, "", 405),
        (observer, Method::DELETE, "/", None, "", 405),
        // Path segments that are not UTF-8.
        (orders, Method::GET, "/orders/%FF", None, "", 400),
        (orders, Method::HEAD, "/orders/%FF", None, "", 400),
        (observer, Method::GET, "/sagas/%FF", None, "", 400),
        // Queries that do not parse, bad UTF-8 included, or hold values out of range.
        (orders, Method::GET, "/orders?limit=many", None, "", 422),
        (orders, Method::GET, "/orders?status=%FF", None, "", 422),
        (orders, Method::GET, "/orders?limit=0", None, "", 422),
        (
            billing,
            Method::GET,
            "/payments?order_id=a&order_id=b",
            None,
            "",
            422,
        ),
        (
            shipping,
            Method::GET,
            "/shipments?order_id=a&order_id=b",
            None,
            "",
            422,
        ),
        (observer, Method::GET, "/sagas?limit=%FF", None, "", 422),
        (observer, Method::GET, "/sagas?state=%FF", None, "", 422),
        // Bodies: not declared JSON, not JSON, the wrong shape, too big.
        (
            orders,
            Method::POST,
            "/orders",
            Some("text/plain"),
            "{}",
            415,
        ),
        (
            orders,
            Method::POST,
            "/orders",
            json,
            "{\"customer_id\": ",
            400,
        ),
        (orders, Method::POST, "/orders", json, "[1, 2]", 422),
        (orders, Method::POST, "/orders", json, too_big.as_str(), 413),
        // The Content-Type is judged before the size, though the body is read first.
        (
            orders,
            Method::POST,
            "/orders",
            Some("text/plain"),
            too_big.as_str(),
            415,
        ),
        // Found nothing.
        (orders, Method::GET, "/orders/some-order", None, "", 404),
        (observer, Method::GET, "/sagas/some-order", None, "", 404),
    ];

    for (target, method, path, content_type, body, status) in cases {
        let what = format!("{method} {path} on {target:?}");
        let mut request = suite
            .http
            .request(method.clone(), url_of(&suite, target, path));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if !body.is_empty() {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("sent");

        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_json_error(response, method == Method::HEAD, &what).await;
    }
}

/// Admission control: with billing and shipping not running, every order stays `pending`. Once
/// `CHOREO_MAX_UNFINISHED_ORDERS` of them are unfinished, the next `POST /orders` is refused with
/// a 503, `Retry-After` and a JSON error, and counted; once the sagas have completed, orders are
/// taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_refused_with_503_and_retry_after_while_the_unfinished_ones_reach_the_bound() {
    let options = choreo_e2e::Options {
        max_unfinished_orders: 3,
        ..Default::default()
    };
    let mut suite = Suite::start_with(options, &[Which::Orders]).await;
    let mut ids = Vec::new();
    for price in 100..103 {
        let order = suite.place_order(&order_request(price, 1, "AT")).await;
        ids.push(order["id"].as_str().expect("id").to_owned());
    }

    let response = suite
        .http
        .post(suite.url(Which::Orders, "/orders"))
        .json(&order_request(200, 1, "AT"))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"], "overloaded, retry later");
    assert!(
        body["details"][0]
            .as_str()
            .is_some_and(|d| d.contains("3 orders are still unfinished")),
        "{body}"
    );
    let scrape = suite.scrape(Which::Orders).await;
    assert_eq!(scrape.value("choreo_orders_shed_total", &[]), 1.0);
    let listed = get_json(&suite, "/orders?limit=100").await;
    assert_eq!(
        listed["orders"].as_array().map(Vec::len),
        Some(3),
        "the refused order was not placed"
    );

    suite.start_service(Which::Billing).await;
    suite.start_service(Which::Shipping).await;
    for id in &ids {
        suite.wait_for_status(id, "completed").await;
    }
    // The next count (at most 100 ms old) sees none unfinished.
    choreo_e2e::poll("an order taken once the others completed", || {
        let suite = &suite;
        Box::pin(async move {
            let (status, _) = post(suite, &order_request(300, 1, "AT").to_string(), None).await;
            (status == 201).then_some(())
        })
    })
    .await;
}
