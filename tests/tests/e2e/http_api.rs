//! The HTTP contract: validation with JSON errors, idempotency keys, listing, health.

use choreo_e2e::{Suite, Which, order_request};
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
