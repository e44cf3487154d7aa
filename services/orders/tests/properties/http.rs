//! `POST /orders` through the real router: whatever the body, the answer is the contract's
//! (201 or 200 with the order, or 400/422 with `{"error", "details"}`, never a 500 nor a panic);
//! every order within the contract's rules is taken, and every single-field violation of them is
//! refused with one detail that names the field.

use crate::service::service;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Posts `body` as JSON and returns the status, the `Location` header and the JSON answer.
fn post(body: Vec<u8>, idempotency_key: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let service = service();
    let mut request = Request::post("/orders").header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let request = request.body(Body::from(body)).expect("a request");
    service.runtime.block_on(async {
        let response = service
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().expect("ASCII").to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let answer = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: the answer is not JSON ({e}): {bytes:?}"));
        (status, location, answer)
    })
}

/// The error shape of the contract: `error` a sentence, `details` a list of strings.
fn assert_error_shape(answer: &Value) {
    let object = answer.as_object().expect("an object");
    assert!(
        object["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    let details = object["details"].as_array().expect("details");
    assert!(details.iter().all(Value::is_string), "{answer}");
}

/// The answer to any body: an order (201, or 200 for a replayed key) or a client error.
fn assert_contract_answer(status: StatusCode, location: Option<&str>, answer: &Value) {
    match status {
        StatusCode::CREATED | StatusCode::OK => {
            let id = answer["id"].as_str().expect("an order id");
            assert_eq!(location, Some(format!("/orders/{id}").as_str()));
        }
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => assert_error_shape(answer),
        other => panic!("{other} is not an answer to a client's body: {answer}"),
    }
}

fn text() -> impl Strategy<Value = String> {
    "(?s).{1,12}".prop_filter("non-blank", |s| !s.trim().is_empty())
}

fn blank() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

/// A body within every rule of the contract (totals small enough to fit in 64 bits).
fn valid_order() -> impl Strategy<Value = Value> {
    let item = (text(), 1..=1000u32, 0..=1_000_000_000_000i64).prop_map(|(sku, quantity, price)| {
        json!({"sku": sku, "quantity": quantity, "unit_price_cents": price})
    });
    let address = (
        text(),
        text(),
        proptest::option::of(".{0,12}"),
        text(),
        text(),
        "[A-Z]{2}",
    )
        .prop_map(|(name, line1, line2, city, postal_code, country)| {
            let mut address = json!({
                "name": name, "line1": line1, "city": city,
                "postal_code": postal_code, "country": country,
            });
            if let Some(line2) = line2 {
                address["line2"] = line2.into();
            }
            address
        });
    (
        text(),
        "[A-Z]{3}",
        proptest::collection::vec(item, 1..=6),
        address,
    )
        .prop_map(|(customer_id, currency, items, address)| {
            json!({
                "customer_id": customer_id,
                "currency": currency,
                "items": items,
                "shipping_address": address,
            })
        })
}

/// Any JSON value.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON that is not a string.
fn not_a_string() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a string", |v| !v.is_string())
}

/// One field of a valid order, by its path, and a value that breaks one of the contract's rules
/// for it (a value of the wrong type, or one out of its range), or `None` to leave it out.
fn violation(items: usize) -> impl Strategy<Value = (String, Option<Value>)> {
    let item = 0..items;
    let not_blank = |path: &'static str| {
        prop_oneof![blank().prop_map(Value::from), not_a_string()]
            .prop_map(move |v| (path.to_owned(), Some(v)))
    };
    let code = |path: &'static str, len: usize| {
        prop_oneof![
            ".{0,5}"
                .prop_filter("not a code", move |s: &String| {
                    !(s.len() == len && s.bytes().all(|b| b.is_ascii_uppercase()))
                })
                .prop_map(Value::from),
            not_a_string(),
        ]
        .prop_map(move |v| (path.to_owned(), Some(v)))
    };
    let quantity = prop_oneof![
        Just(json!(0)),
        // Not up to u32::MAX: a quantity that large makes the total overflow as well, a second
        // problem the answer rightly lists.
        (1001..=1_000_000u64).prop_map(Value::from),
        (u64::from(u32::MAX) + 1..=u64::MAX).prop_map(Value::from),
        (i64::MIN..0).prop_map(Value::from),
        any::<f64>()
            .prop_filter("not whole", |f| f.fract() != 0.0)
            .prop_map(Value::from),
        not_a_number(),
    ];
    let price = prop_oneof![
        (-1_000_000_000_000..0i64).prop_map(Value::from),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::from),
        any::<f64>()
            .prop_filter("not whole", |f| f.fract() != 0.0)
            .prop_map(Value::from),
        not_a_number(),
    ];
    let required = proptest::sample::select(vec![
        "customer_id",
        "currency",
        "items",
        "shipping_address",
        "shipping_address.name",
        "shipping_address.line1",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
    ]);
    prop_oneof![
        not_blank("customer_id"),
        code("currency", 3),
        prop_oneof![
            Just(json!([])),
            json_value().prop_filter("not an array", |v| !v.is_array())
        ]
        .prop_map(|v| ("items".to_owned(), Some(v))),
        (
            item.clone(),
            prop_oneof![blank().prop_map(Value::from), not_a_string()]
        )
            .prop_map(|(i, v)| (format!("items[{i}].sku"), Some(v))),
        (item.clone(), quantity).prop_map(|(i, v)| (format!("items[{i}].quantity"), Some(v))),
        (item.clone(), price).prop_map(|(i, v)| (format!("items[{i}].unit_price_cents"), Some(v))),
        (
            item,
            proptest::sample::select(vec!["sku", "quantity", "unit_price_cents"])
        )
            .prop_map(|(i, field)| (format!("items[{i}].{field}"), None)),
        not_blank("shipping_address.name"),
        not_blank("shipping_address.line1"),
        not_blank("shipping_address.city"),
        not_blank("shipping_address.postal_code"),
        code("shipping_address.country", 2),
        not_a_string()
            .prop_filter("null is no line2", |v| !v.is_null())
            .prop_map(|v| ("shipping_address.line2".to_owned(), Some(v))),
        json_value()
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(|v| ("shipping_address".to_owned(), Some(v))),
        required.prop_map(|path| (path.to_owned(), None)),
    ]
}

fn not_a_number() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a number", |v| !v.is_number())
}

/// `path` (`items[2].quantity`) split into its parent's segments and the field's name.
fn segments(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

/// Sets (or removes) the value at `path` in `order`.
fn apply(order: &mut Value, path: &str, value: Option<Value>) {
    let segments = segments(path);
    let (last, parents) = segments.split_last().expect("a path");
    let mut target = &mut *order;
    for segment in parents {
        target = match segment.split_once('[') {
            Some((name, index)) => {
                let index: usize = index.trim_end_matches(']').parse().expect("an index");
                &mut target[name][index]
            }
            None => &mut target[segment.as_str()],
        };
    }
    let (name, index) = match last.split_once('[') {
        Some((name, index)) => (name, Some(index)),
        None => (last.as_str(), None),
    };
    assert!(index.is_none(), "a path ends at a field");
    let object = target.as_object_mut().expect("an object");
    match value {
        Some(value) => object.insert(name.to_owned(), value),
        None => object.remove(name),
    };
}

/// A valid order and one violation of a field it has.
fn invalid_order() -> impl Strategy<Value = (Value, String, Option<Value>)> {
    valid_order().prop_flat_map(|order| {
        let items = order["items"].as_array().map_or(1, Vec::len);
        (Just(order), violation(items)).prop_map(|(order, (path, value))| (order, path, value))
    })
}

/// An order with some fields replaced by arbitrary JSON or removed: bodies that reach each
/// check of the validation, where random JSON stops at the first.
fn damaged_order() -> impl Strategy<Value = Value> {
    let damage = (violation(1), proptest::option::of(json_value()));
    (valid_order(), proptest::collection::vec(damage, 1..4)).prop_map(|(mut order, damages)| {
        for ((path, value), arbitrary) in damages {
            // A path under a field an earlier damage replaced may lead nowhere: skip it.
            let reachable = segments(&path)
                .split_last()
                .map(|(_, parents)| {
                    let mut at = &order;
                    parents.iter().all(|segment| {
                        let next = match segment.split_once('[') {
                            Some((name, index)) => at.get(name).and_then(|v| {
                                v.get(index.trim_end_matches(']').parse::<usize>().unwrap_or(0))
                            }),
                            None => at.get(segment.as_str()),
                        };
                        next.inspect(|v| at = v).is_some_and(Value::is_object)
                    })
                })
                .unwrap_or(false);
            if reachable && (path.contains('.') || order.is_object()) {
                apply(&mut order, &path, arbitrary.or(value));
            }
        }
        order
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_get_an_order_or_a_json_client_error(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (status, location, answer) = post(body, None);
        assert_contract_answer(status, location.as_deref(), &answer);
    }

    #[test]
    fn arbitrary_json_gets_an_order_or_a_422(body in json_value()) {
        let (status, location, answer) = post(serde_json::to_vec(&body).expect("JSON"), None);
        assert_contract_answer(status, location.as_deref(), &answer);
        prop_assert!(status != StatusCode::BAD_REQUEST, "valid JSON is not malformed: {}", answer);
    }

    #[test]
    fn a_damaged_order_gets_an_order_or_a_422_listing_its_problems(body in damaged_order()) {
        let (status, location, answer) = post(serde_json::to_vec(&body).expect("JSON"), None);
        assert_contract_answer(status, location.as_deref(), &answer);
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            prop_assert!(!answer["details"].as_array().expect("details").is_empty(), "{}", answer);
        }
    }

    #[test]
    fn every_order_within_the_rules_is_placed_pending_with_its_total(order in valid_order()) {
        let (status, location, answer) = post(serde_json::to_vec(&order).expect("JSON"), None);

        prop_assert_eq!(status, StatusCode::CREATED, "{}", answer);
        assert_contract_answer(status, location.as_deref(), &answer);
        prop_assert_eq!(&answer["status"], "pending");
        let total: i64 = order["items"].as_array().expect("items").iter()
            .map(|i| i["quantity"].as_i64().expect("a quantity") * i["unit_price_cents"].as_i64().expect("a price"))
            .sum();
        prop_assert_eq!(answer["total_cents"].as_i64(), Some(total));
        for field in ["customer_id", "currency", "items", "shipping_address"] {
            prop_assert_eq!(&answer[field], &order[field], "{}", field);
        }
    }

    #[test]
    fn the_same_order_with_the_same_idempotency_key_is_the_same_order(
        order in valid_order(),
        key in "[!-~]{1,40}",
    ) {
        let body = serde_json::to_vec(&order).expect("JSON");
        let key = format!("{key}-{}", uuid::Uuid::new_v4());

        let (first, _, placed) = post(body.clone(), Some(&key));
        let (again, location, replayed) = post(body, Some(&key));

        prop_assert_eq!(first, StatusCode::CREATED, "{}", placed);
        prop_assert_eq!(again, StatusCode::OK, "{}", replayed);
        prop_assert_eq!(location, Some(format!("/orders/{}", placed["id"].as_str().expect("an id"))));
        prop_assert_eq!(replayed, placed);
    }

    #[test]
    fn every_single_field_violation_is_a_422_with_one_detail_naming_the_field(
        (mut order, path, value) in invalid_order(),
    ) {
        apply(&mut order, &path, value);

        let (status, _, answer) = post(serde_json::to_vec(&order).expect("JSON"), None);

        prop_assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}: {}", path, answer);
        assert_error_shape(&answer);
        let details = answer["details"].as_array().expect("details");
        prop_assert_eq!(details.len(), 1, "{}", answer);
        let detail = details[0].as_str().expect("a detail");
        // `items[0].quantity must be...`, `` `items[0].quantity`: invalid type...``, or
        // `` `items[0]`: missing field `quantity` ``: the parent's path and the field's name.
        let segments = segments(&path);
        let (name, parents) = segments.split_last().expect("a path");
        let name = name.split('[').next().expect("a name");
        prop_assert!(detail.contains(name), "{} is not named in {}", path, detail);
        if !parents.is_empty() {
            prop_assert!(detail.contains(&parents.join(".")), "{} is not named in {}", path, detail);
        }
    }
}
