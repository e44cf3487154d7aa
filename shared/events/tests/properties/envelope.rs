//! [`Envelope::decode`] and [`Envelope::event`] against arbitrary and damaged input.

use crate::strategies::{ATTRIBUTES, damaged_envelope, enveloped, json};
use choreo_events::{DecodeError, Envelope, Event, SCHEMA_VERSION, SPEC_VERSION};
use proptest::prelude::*;
use serde_json::Value;

/// Decodes `body` as the consumer does; whatever comes out must be an event or a typed error,
/// and an envelope that decodes must hold the attributes decoding promises.
fn decode_fully(body: &[u8]) -> Result<Event, DecodeError> {
    let envelope = Envelope::decode(body)?;
    assert_eq!(envelope.specversion, SPEC_VERSION);
    for value in [
        &envelope.id,
        &envelope.event_type,
        &envelope.source,
        &envelope.correlationid,
    ] {
        assert!(!value.trim().is_empty(), "{envelope:?}");
    }
    let event = envelope.event()?;
    assert_eq!(event.event_type().routing_key(), envelope.event_type);
    Ok(event)
}

/// The JSON object of a valid envelope.
fn object_of(envelope: &Envelope) -> serde_json::Map<String, Value> {
    match serde_json::to_value(envelope).expect("an envelope is JSON") {
        Value::Object(object) => object,
        other => panic!("an envelope is an object, not {other}"),
    }
}

fn decode_object(object: serde_json::Map<String, Value>) -> Result<Envelope, DecodeError> {
    Envelope::decode(&serde_json::to_vec(&Value::Object(object)).expect("JSON"))
}

/// The attributes an envelope cannot do without; the others have defaults.
const REQUIRED: [&str; 7] = [
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "schemaversion",
    "correlationid",
];

proptest! {
    #[test]
    fn arbitrary_bytes_are_an_event_or_a_typed_error(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_fully(&body);
    }

    #[test]
    fn a_valid_envelope_with_bytes_flipped_is_an_event_or_a_typed_error(
        (_, envelope) in enveloped(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut body = envelope.encode();
        for (at, byte) in flips {
            let at = at.index(body.len());
            body[at] = byte;
        }
        let _ = decode_fully(&body);
    }

    #[test]
    fn arbitrary_json_is_an_event_or_a_typed_error(value in json()) {
        let _ = decode_fully(&serde_json::to_vec(&value).expect("JSON"));
    }

    #[test]
    fn a_damaged_envelope_is_an_event_or_a_typed_error(value in damaged_envelope()) {
        let _ = decode_fully(&serde_json::to_vec(&value).expect("JSON"));
    }

    #[test]
    fn every_valid_envelope_survives_encode_and_decode((event, envelope) in enveloped()) {
        let decoded = Envelope::decode(&envelope.encode());

        prop_assert_eq!(decoded.as_ref(), Ok(&envelope));
        prop_assert_eq!(envelope.to_json().into_bytes(), envelope.encode());
        prop_assert_eq!(decoded.and_then(|d| d.event()), Ok(event));
    }

    #[test]
    fn a_specversion_other_than_1_0_is_rejected_as_unsupported(
        (_, envelope) in enveloped(),
        specversion in ".{0,8}".prop_filter("not 1.0", |s| s != SPEC_VERSION),
    ) {
        let mut object = object_of(&envelope);
        object.insert("specversion".into(), specversion.clone().into());

        prop_assert_eq!(
            decode_object(object),
            Err(DecodeError::UnsupportedSpecVersion(specversion))
        );
    }

    #[test]
    fn an_unknown_schemaversion_is_rejected_with_a_reason_naming_it(
        (_, envelope) in enveloped(),
        schemaversion in any::<u32>().prop_filter("unsupported", |v| *v != SCHEMA_VERSION),
    ) {
        let mut object = object_of(&envelope);
        object.insert("schemaversion".into(), schemaversion.into());

        let decoded = decode_object(object).expect("the envelope itself is fine");
        let error = decoded.event().expect_err("the version is not supported");

        prop_assert_eq!(
            &error,
            &DecodeError::UnsupportedSchemaVersion {
                event_type: envelope.event_type.clone(),
                found: schemaversion,
                supported: SCHEMA_VERSION,
            }
        );
        let reason = error.to_string();
        prop_assert!(reason.contains(&format!("unsupported schemaversion {schemaversion}")), "{}", reason);
    }

    #[test]
    fn a_missing_attribute_is_rejected_if_required_and_defaulted_otherwise(
        (event, envelope) in enveloped(),
        attribute in proptest::sample::select(ATTRIBUTES.to_vec()),
    ) {
        let mut object = object_of(&envelope);
        object.remove(attribute);

        let decoded = decode_object(object);

        if REQUIRED.contains(&attribute) {
            let error = decoded.expect_err("a required attribute is missing");
            prop_assert!(matches!(error, DecodeError::Undecodable(_)), "{:?}", error);
            prop_assert!(error.to_string().contains(&format!("`{attribute}`")), "{}", error);
        } else if attribute == "data" {
            let error = decoded.expect("data defaults to null").event().expect_err("null is no payload");
            prop_assert!(matches!(error, DecodeError::InvalidData(_)), "{:?}", error);
        } else {
            let decoded = decoded.expect("an optional attribute is missing");
            let mut expected = envelope.clone();
            match attribute {
                "subject" => expected.subject = None,
                "causationid" => expected.causationid = None,
                "traceparent" => expected.traceparent = None,
                "datacontenttype" => expected.datacontenttype = "application/json".into(),
                other => panic!("no default for {other}"),
            }
            prop_assert_eq!(&decoded, &expected);
            prop_assert_eq!(decoded.event(), Ok(event));
        }
    }

    #[test]
    fn unknown_attributes_and_data_fields_are_ignored(
        (event, envelope) in enveloped(),
        extensions in proptest::collection::btree_map("zz[a-z0-9]{0,8}", json(), 1..4),
        extra_fields in proptest::collection::btree_map("zz[a-z0-9_]{0,8}", json(), 1..4),
    ) {
        let mut object = object_of(&envelope);
        object.extend(extensions);
        if let Some(Value::Object(data)) = object.get_mut("data") {
            data.extend(extra_fields);
        }

        let decoded = decode_object(object).expect("unknown attributes are ignored");

        prop_assert_eq!(Envelope { data: envelope.data.clone(), ..decoded.clone() }, envelope);
        prop_assert_eq!(decoded.event(), Ok(event));
    }

    #[test]
    fn an_attribute_of_the_wrong_type_is_rejected_with_a_reason_naming_it(
        (_, envelope) in enveloped(),
        attribute in proptest::sample::select(
            ATTRIBUTES.iter().copied().filter(|a| *a != "data").collect::<Vec<_>>()
        ),
        replacement in json(),
    ) {
        let optional = ["subject", "causationid", "traceparent"].contains(&attribute);
        let wrong = match &replacement {
            Value::String(_) => attribute == "schemaversion",
            Value::Null => !optional,
            Value::Number(n) => attribute != "schemaversion" || n.as_u64().is_none_or(|n| n > u64::from(u32::MAX)),
            _ => true,
        };
        prop_assume!(wrong);
        let mut object = object_of(&envelope);
        object.insert(attribute.into(), replacement);

        let error = decode_object(object).expect_err("a wrong type is refused");

        prop_assert!(matches!(error, DecodeError::Undecodable(_)), "{:?}", error);
        prop_assert!(error.to_string().contains(&format!("`{attribute}`")), "{}", error);
    }

    #[test]
    fn a_time_that_is_not_rfc_3339_is_rejected_with_a_reason_naming_it(
        (_, envelope) in enveloped(),
        time in ".{0,30}".prop_filter("not RFC 3339", |t| chrono::DateTime::parse_from_rfc3339(t).is_err()),
    ) {
        let mut object = object_of(&envelope);
        object.insert("time".into(), time.into());

        let error = decode_object(object).expect_err("not a time");

        prop_assert!(error.to_string().contains("`time`"), "{}", error);
    }
}
