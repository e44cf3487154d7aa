//! Generators of the contract's values: every payload valid by its own rules, every event type,
//! envelopes around them, and arbitrary JSON (with envelope-shaped JSON that gets past the first
//! checks of the decoder, where random JSON rarely does).

use choreo_events::payloads::*;
use choreo_events::{Envelope, Event, SCHEMA_VERSION, SPEC_VERSION};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::Value;

/// Text the contract accepts where it asks for a non-empty value: anything but blank, control
/// characters and non-ASCII included (they must survive JSON escaping).
pub fn text() -> impl Strategy<Value = String> {
    "(?s).{1,16}".prop_filter("non-blank", |s| !s.trim().is_empty())
}

pub fn currency() -> impl Strategy<Value = String> {
    "[A-Z]{3}"
}

pub fn country() -> impl Strategy<Value = String> {
    "[A-Z]{2}"
}

pub fn cents() -> impl Strategy<Value = i64> {
    prop_oneof![0..=1_000_000i64, 0..=i64::MAX]
}

pub fn address() -> impl Strategy<Value = Address> {
    (
        text(),
        text(),
        proptest::option::of(".{0,16}"),
        text(),
        text(),
        country(),
    )
        .prop_map(|(name, line1, line2, city, postal_code, country)| Address {
            name,
            line1,
            line2,
            city,
            postal_code,
            country,
        })
}

/// Lines whose total always fits in an `i64`: at most 8 lines of 1000 at 10^12 cents.
pub fn items() -> impl Strategy<Value = Vec<LineItem>> {
    let item = (text(), 1..=MAX_QUANTITY, 0..=1_000_000_000_000i64).prop_map(
        |(sku, quantity, unit_price_cents)| LineItem {
            sku,
            quantity,
            unit_price_cents,
        },
    );
    proptest::collection::vec(item, 1..=8)
}

pub fn order_placed() -> impl Strategy<Value = OrderPlaced> {
    (text(), text(), items(), currency(), address()).prop_map(
        |(order_id, customer_id, items, currency, shipping_address)| OrderPlaced {
            order_id,
            customer_id,
            total_cents: items_total(&items).expect("the lines are small enough"),
            items,
            currency,
            shipping_address,
        },
    )
}

pub fn payment_captured() -> impl Strategy<Value = PaymentCaptured> {
    (
        text(),
        text(),
        cents(),
        currency(),
        proptest::option::of(address()),
    )
        .prop_map(
            |(order_id, payment_id, amount_cents, currency, shipping_address)| PaymentCaptured {
                order_id,
                payment_id,
                amount_cents,
                currency,
                shipping_address,
            },
        )
}

pub fn payment_declined() -> impl Strategy<Value = PaymentDeclined> {
    (text(), cents(), currency(), text()).prop_map(|(order_id, amount_cents, currency, reason)| {
        PaymentDeclined {
            order_id,
            amount_cents,
            currency,
            reason,
        }
    })
}

pub fn payment_refunded() -> impl Strategy<Value = PaymentRefunded> {
    (text(), text(), text(), cents(), currency(), text()).prop_map(
        |(order_id, payment_id, refund_id, amount_cents, currency, reason)| PaymentRefunded {
            order_id,
            payment_id,
            refund_id,
            amount_cents,
            currency,
            reason,
        },
    )
}

pub fn shipment_dispatched() -> impl Strategy<Value = ShipmentDispatched> {
    (text(), text(), text(), text()).prop_map(
        |(order_id, shipment_id, carrier, tracking_number)| ShipmentDispatched {
            order_id,
            shipment_id,
            carrier,
            tracking_number,
        },
    )
}

pub fn shipment_failed() -> impl Strategy<Value = ShipmentFailed> {
    (text(), text()).prop_map(|(order_id, reason)| ShipmentFailed { order_id, reason })
}

pub fn order_completed() -> impl Strategy<Value = OrderCompleted> {
    text().prop_map(|order_id| OrderCompleted { order_id })
}

pub fn order_cancelled() -> impl Strategy<Value = OrderCancelled> {
    (text(), text()).prop_map(|(order_id, reason)| OrderCancelled { order_id, reason })
}

/// An event of any of the suite's eight types.
pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        order_placed().prop_map(Event::OrderPlaced),
        order_completed().prop_map(Event::OrderCompleted),
        order_cancelled().prop_map(Event::OrderCancelled),
        payment_captured().prop_map(Event::PaymentCaptured),
        payment_declined().prop_map(Event::PaymentDeclined),
        payment_refunded().prop_map(Event::PaymentRefunded),
        shipment_dispatched().prop_map(Event::ShipmentDispatched),
        shipment_failed().prop_map(Event::ShipmentFailed),
    ]
}

/// A time the wire format can carry: milliseconds, years 1 to 9999 (what RFC 3339 spells).
pub fn time() -> impl Strategy<Value = DateTime<Utc>> {
    let first = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .expect("a time")
        .timestamp_millis();
    let last = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999Z")
        .expect("a time")
        .timestamp_millis();
    (first..=last).prop_map(|millis| DateTime::from_timestamp_millis(millis).expect("in range"))
}

/// A valid envelope around `event`, with every optional attribute present or absent.
pub fn envelope_of(event: Event) -> impl Strategy<Value = Envelope> {
    (
        text(),
        text(),
        time(),
        proptest::option::of(text()),
        prop_oneof![Just("application/json".to_owned()), text()],
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(
            move |(
                id,
                source,
                time,
                subject,
                datacontenttype,
                correlationid,
                causationid,
                traceparent,
            )| {
                Envelope {
                    specversion: SPEC_VERSION.to_owned(),
                    id,
                    event_type: event.event_type().routing_key().to_owned(),
                    source,
                    time,
                    subject,
                    datacontenttype,
                    schemaversion: SCHEMA_VERSION,
                    correlationid,
                    causationid,
                    traceparent,
                    data: event.to_data(),
                }
            },
        )
}

/// An event and a valid envelope around it.
pub fn enveloped() -> impl Strategy<Value = (Event, Envelope)> {
    event().prop_flat_map(|event| (Just(event.clone()), envelope_of(event)))
}

/// Any JSON value: scalars of every kind, nested arrays and objects.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The JSON of a valid envelope with some of its attributes (or of its data's fields) replaced
/// by arbitrary JSON or removed: input that reaches every check of the decoder.
pub fn damaged_envelope() -> impl Strategy<Value = Value> {
    // An attribute of the envelope, or (with an index) one of the fields of its data.
    let damage = (
        proptest::sample::select(ATTRIBUTES.to_vec()),
        proptest::option::of(any::<proptest::sample::Index>()),
        proptest::option::of(json()),
    );
    (enveloped(), proptest::collection::vec(damage, 1..4)).prop_map(|((_, envelope), damages)| {
        let mut value = serde_json::to_value(&envelope).expect("an envelope is JSON");
        for (attribute, field, replacement) in damages {
            let (target, key) = match field {
                None => (value.as_object_mut(), Some(attribute.to_owned())),
                Some(index) => {
                    let data = value.get_mut("data").and_then(Value::as_object_mut);
                    let key = data
                        .as_ref()
                        .filter(|data| !data.is_empty())
                        .and_then(|data| data.keys().nth(index.index(data.len())).cloned());
                    (data, key)
                }
            };
            let (Some(target), Some(key)) = (target, key) else {
                continue;
            };
            match replacement {
                Some(replacement) => target.insert(key, replacement),
                None => target.remove(&key),
            };
        }
        value
    })
}

/// Every attribute of the envelope as the wire spells it.
pub const ATTRIBUTES: [&str; 12] = [
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "subject",
    "datacontenttype",
    "schemaversion",
    "correlationid",
    "causationid",
    "traceparent",
    "data",
];
