//! One example event per type, from the three sagas of one order (placed 1, captured 2, then
//! dispatched 3 and completed 4; or declined 5 after 1; or failed 6 after 2, refunded 7,
//! cancelled 8), with fixed ids and times so
//! that the generated files only change when the contract does. They are built from the real
//! payload types and serialized by the real [`Envelope`], so an example cannot show a field the
//! code does not write.

use choreo_events::payloads::{
    Address, LineItem, OrderCancelled, OrderCompleted, OrderPlaced, PaymentCaptured,
    PaymentDeclined, PaymentRefunded, ShipmentDispatched, ShipmentFailed,
};
use choreo_events::{Envelope, Event, EventType};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

const ORDER: &str = "0193b0a4-5c1e-7d2a-9f10-3e4b5c6d7e8f";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 14, 0, second)
        .single()
        .unwrap_or_default()
}

fn address(country: &str) -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Main St".into(),
        line2: None,
        city: "Vienna".into(),
        postal_code: "1010".into(),
        country: country.into(),
    }
}

/// The envelope of `event`, the `step`th event of the example saga, caused by event `cause`.
fn envelope(event: &Event, step: u32, cause: Option<u32>) -> Envelope {
    let id = |n: u32| format!("00000000-0000-4000-8000-{n:012}");
    Envelope {
        specversion: choreo_events::SPEC_VERSION.into(),
        id: id(step),
        event_type: event.event_type().routing_key().into(),
        source: event.event_type().publisher().name.into(),
        time: at(step),
        subject: Some(ORDER.into()),
        datacontenttype: choreo_events::envelope::DATA_CONTENT_TYPE.into(),
        schemaversion: choreo_events::SCHEMA_VERSION,
        correlationid: ORDER.into(),
        causationid: cause.map(id),
        traceparent: Some(format!("00-{TRACE}-{:016x}-01", step + 1)),
        data: event.to_data(),
    }
}

/// The example event of `event_type`, as its JSON.
pub fn example(event_type: EventType) -> Value {
    let placed = OrderPlaced {
        order_id: ORDER.into(),
        customer_id: "c-42".into(),
        items: vec![LineItem {
            sku: "BOOK-1".into(),
            quantity: 2,
            unit_price_cents: 1500,
        }],
        total_cents: 3000,
        currency: "EUR".into(),
        shipping_address: address("AT"),
    };
    let captured = PaymentCaptured {
        order_id: ORDER.into(),
        payment_id: "0193b0a4-5c1f-7000-8000-000000000001".into(),
        amount_cents: 3000,
        currency: "EUR".into(),
        shipping_address: Some(address("AT")),
    };
    // (the event, its step, the step that caused it)
    let (event, step, cause) = match event_type {
        EventType::OrderPlaced => (Event::OrderPlaced(placed), 1, None),
        EventType::PaymentCaptured => (Event::PaymentCaptured(captured), 2, Some(1)),
        EventType::ShipmentDispatched => (
            Event::ShipmentDispatched(ShipmentDispatched {
                order_id: ORDER.into(),
                shipment_id: "0193b0a4-5c20-7000-8000-000000000002".into(),
                carrier: "choreo-post".into(),
                tracking_number: "CP0193B0A45C20".into(),
            }),
            3,
            Some(2),
        ),
        EventType::OrderCompleted => (
            Event::OrderCompleted(OrderCompleted {
                order_id: ORDER.into(),
            }),
            4,
            Some(3),
        ),
        EventType::PaymentDeclined => (
            Event::PaymentDeclined(PaymentDeclined {
                order_id: ORDER.into(),
                amount_cents: 3000,
                currency: "EUR".into(),
                reason: "limit_exceeded".into(),
            }),
            5,
            Some(1),
        ),
        EventType::ShipmentFailed => (
            Event::ShipmentFailed(ShipmentFailed {
                order_id: ORDER.into(),
                reason: "unserviceable_country".into(),
            }),
            6,
            Some(2),
        ),
        EventType::PaymentRefunded => (
            Event::PaymentRefunded(PaymentRefunded {
                order_id: ORDER.into(),
                payment_id: "0193b0a4-5c1f-7000-8000-000000000001".into(),
                refund_id: "0193b0a4-5c21-7000-8000-000000000003".into(),
                amount_cents: 3000,
                currency: "EUR".into(),
                reason: "shipping_failed".into(),
            }),
            7,
            Some(6),
        ),
        EventType::OrderCancelled => (
            Event::OrderCancelled(OrderCancelled {
                order_id: ORDER.into(),
                reason: "shipping_failed".into(),
            }),
            8,
            Some(7),
        ),
    };
    serde_json::from_slice(&envelope(&event, step, cause).encode()).unwrap_or(Value::Null)
}
