//! Each payload type alone: [`Event::from_data`] of its own JSON gives it back, arbitrary JSON
//! gives a valid payload or `InvalidData`, and a field of the wrong type is named in the error.

use crate::strategies::{self, json};
use choreo_events::{DecodeError, Event, EventType};
use proptest::prelude::*;
use serde_json::Value;

/// Whether `replacement` has a JSON type that `original`'s field cannot take.
fn wrong_type(original: &Value, replacement: &Value) -> bool {
    !matches!(
        (original, replacement),
        (Value::String(_), Value::String(_))
            | (Value::Number(_), Value::Number(_))
            | (Value::Array(_), Value::Array(_))
            | (Value::Object(_), Value::Object(_))
    ) && !replacement.is_null()
}

/// The properties of one payload type, as a module of tests named after it.
macro_rules! payload_properties {
    ($module:ident, $strategy:path, $variant:ident) => {
        mod $module {
            use super::*;

            proptest! {
                #[test]
                fn its_json_reads_back_as_the_same_payload(payload in $strategy()) {
                    let event = Event::$variant(payload);
                    let bytes = serde_json::to_vec(&event.to_data()).expect("JSON");
                    let data: Value = serde_json::from_slice(&bytes).expect("JSON");

                    prop_assert_eq!(Event::from_data(EventType::$variant, &data), Ok(event));
                }

                #[test]
                fn arbitrary_json_is_a_valid_payload_or_invalid_data(data in json()) {
                    match Event::from_data(EventType::$variant, &data) {
                        Ok(event) => prop_assert_eq!(event.event_type(), EventType::$variant),
                        Err(error) => prop_assert!(matches!(error, DecodeError::InvalidData(_)), "{:?}", error),
                    }
                }

                #[test]
                fn a_field_of_the_wrong_type_is_invalid_data_naming_the_field(
                    payload in $strategy(),
                    field in any::<proptest::sample::Index>(),
                    replacement in json(),
                ) {
                    let Value::Object(mut data) = Event::$variant(payload).to_data() else {
                        panic!("a payload is an object");
                    };
                    let name = data.keys().nth(field.index(data.len())).cloned().expect("a field");
                    prop_assume!(wrong_type(&data[&name], &replacement));
                    data.insert(name.clone(), replacement);

                    let error = Event::from_data(EventType::$variant, &Value::Object(data))
                        .expect_err("a wrong type is refused");

                    prop_assert!(matches!(error, DecodeError::InvalidData(_)), "{:?}", error);
                    // `{name}` alone, or with the index of an element when serde read an
                    // object's fields from an array (derived structs accept both).
                    prop_assert!(error.to_string().contains(&format!("`{name}")), "{}", error);
                }
            }
        }
    };
}

payload_properties!(order_placed, strategies::order_placed, OrderPlaced);
payload_properties!(order_completed, strategies::order_completed, OrderCompleted);
payload_properties!(order_cancelled, strategies::order_cancelled, OrderCancelled);
payload_properties!(
    payment_captured,
    strategies::payment_captured,
    PaymentCaptured
);
payload_properties!(
    payment_declined,
    strategies::payment_declined,
    PaymentDeclined
);
payload_properties!(
    payment_refunded,
    strategies::payment_refunded,
    PaymentRefunded
);
payload_properties!(
    shipment_dispatched,
    strategies::shipment_dispatched,
    ShipmentDispatched
);
payload_properties!(shipment_failed, strategies::shipment_failed, ShipmentFailed);
