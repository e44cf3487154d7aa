//! The CloudEvents 1.0 envelope, structured JSON mode, as carried in the AMQP body.

use crate::payloads::NON_BLANK;
use crate::{Event, EventType};
use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The only CloudEvents version this suite speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The payload schema version this suite writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// `datacontenttype` of every event.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// The AMQP `content_type` of every message.
pub const AMQP_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The longest `id`, `type`, `source` and `correlationid`: an AMQP short string's 255 bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 255;

/// Why a message could not be turned into an [`Event`]. Every variant is permanent: the same bytes
/// will fail the same way, so the consumer dead-letters them with this error as `x-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a JSON CloudEvent with the required attributes.
    #[error("undecodable envelope: {0}")]
    Undecodable(String),
    /// `specversion` is not `1.0`.
    #[error("unsupported specversion {0:?}, expected \"1.0\"")]
    UnsupportedSpecVersion(String),
    /// `type` is not one of the suite's event types.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// `schemaversion` is one this consumer does not support.
    #[error("unsupported schemaversion {found} for {event_type}, supported: {supported}")]
    UnsupportedSchemaVersion {
        event_type: String,
        found: u32,
        supported: u32,
    },
    /// `data` does not match the payload of its type, or fails validation.
    #[error("invalid data: {0}")]
    InvalidData(String),
}

/// A CloudEvents 1.0 event in structured JSON mode, as carried in the AMQP body. Unknown
/// attributes are ignored when reading (tolerant reader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// The CloudEvents version: always `1.0`.
    pub specversion: String,
    /// Unique per event; also the AMQP `message_id`. Consumers de-duplicate by it.
    #[schemars(regex(pattern = NON_BLANK))]
    pub id: String,
    /// The event type, equal to the routing key it was published with.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = NON_BLANK))]
    pub event_type: String,
    /// The publishing service (`orders`, `billing` or `shipping`); also the AMQP `app_id`.
    #[schemars(regex(pattern = NON_BLANK))]
    pub source: String,
    /// When the event was created: RFC 3339, written in UTC with milliseconds.
    #[serde(serialize_with = "time_millis", deserialize_with = "time_any")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub time: DateTime<Utc>,
    /// The order the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The media type of `data`: always `application/json`.
    #[serde(default = "default_content_type")]
    pub datacontenttype: String,
    /// The version of the payload schema; a consumer dead-letters a version it does not support.
    pub schemaversion: u32,
    /// The saga's id, the order id for every event of one order; also the AMQP `correlation_id`.
    #[schemars(regex(pattern = NON_BLANK))]
    pub correlationid: String,
    /// The `id` of the event that caused this one; absent for `order.placed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// The W3C trace context: one trace id for the whole saga, a new span id per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload of the event's type.
    #[serde(default)]
    pub data: serde_json::Value,
}

fn default_content_type() -> String {
    DATA_CONTENT_TYPE.to_owned()
}

fn time_millis<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn time_any<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

impl Envelope {
    /// The first event of a saga (`order.placed`): a fresh trace, correlated by the order id.
    pub fn root(source: &str, event: &Event) -> Self {
        Self::build(
            source,
            event,
            event.order_id().to_owned(),
            None,
            new_traceparent(None),
        )
    }

    /// An event caused by `cause`: same correlation id and trace, `causationid` = `cause.id`.
    pub fn caused_by(cause: &Envelope, source: &str, event: &Event) -> Self {
        Self::build(
            source,
            event,
            cause.correlationid.clone(),
            Some(cause.id.clone()),
            new_traceparent(cause.traceparent.as_deref()),
        )
    }

    fn build(
        source: &str,
        event: &Event,
        correlationid: String,
        causationid: Option<String>,
        traceparent: String,
    ) -> Self {
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            event_type: event.event_type().routing_key().to_owned(),
            source: source.to_owned(),
            time: Utc::now(),
            subject: Some(event.order_id().to_owned()),
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            schemaversion: SCHEMA_VERSION,
            correlationid,
            causationid,
            traceparent: Some(traceparent),
            data: event.to_data(),
        }
    }

    /// Reads an envelope from an AMQP body, checking the attributes every event needs.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut json = serde_json::Deserializer::from_slice(body);
        let envelope: Envelope = serde_path_to_error::deserialize(&mut json)
            .map_err(|e| DecodeError::Undecodable(located(e)))?;
        // As `serde_json::from_slice` does: nothing but whitespace may follow the envelope.
        json.end()
            .map_err(|e| DecodeError::Undecodable(e.to_string()))?;
        if envelope.specversion != SPEC_VERSION {
            return Err(DecodeError::UnsupportedSpecVersion(envelope.specversion));
        }
        for (name, value) in [
            ("id", &envelope.id),
            ("type", &envelope.event_type),
            ("source", &envelope.source),
            ("correlationid", &envelope.correlationid),
        ] {
            if value.trim().is_empty() {
                return Err(DecodeError::Undecodable(format!(
                    "attribute {name} is empty"
                )));
            }
            // They travel as AMQP short strings (message id, type, app id, correlation id),
            // and `correlationid` is copied onto every event this one causes: a longer one
            // could never be published.
            if value.len() > MAX_ATTRIBUTE_BYTES {
                return Err(DecodeError::Undecodable(format!(
                    "attribute {name} is {} bytes, over {MAX_ATTRIBUTE_BYTES}",
                    value.len()
                )));
            }
        }
        Ok(envelope)
    }

    /// The envelope as the JSON bytes of an AMQP body.
    pub fn encode(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }

    /// The envelope as JSON text (what the outbox stores).
    pub fn to_json(&self) -> String {
        // An `Envelope` holds strings, integers, a timestamp and a `Value`: it always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The type of this envelope, if the suite knows it.
    pub fn known_type(&self) -> Result<EventType, DecodeError> {
        EventType::from_routing_key(&self.event_type)
            .ok_or_else(|| DecodeError::UnknownType(self.event_type.clone()))
    }

    /// The typed, validated event inside, or why there is none.
    pub fn event(&self) -> Result<Event, DecodeError> {
        let event_type = self.known_type()?;
        if self.schemaversion != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedSchemaVersion {
                event_type: self.event_type.clone(),
                found: self.schemaversion,
                supported: SCHEMA_VERSION,
            });
        }
        Event::from_data(event_type, &self.data)
    }

    /// The order id the event is about, for logs: `subject`, else `data.order_id`.
    pub fn order_id_hint(&self) -> Option<&str> {
        self.subject
            .as_deref()
            .or_else(|| self.data.get("order_id").and_then(|v| v.as_str()))
    }
}

/// A deserialization error with the attribute or field it is about, `` `items[0].quantity`: ``
/// first (serde's own message names a missing field but not a value of the wrong type), so a
/// dead letter's `x-error` says which value was wrong.
pub(crate) fn located<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> String {
    let path = error.path().to_string();
    if path == "." {
        error.inner().to_string()
    } else {
        format!("`{path}`: {}", error.inner())
    }
}

/// A W3C `traceparent`: the trace id of `parent` when it is well formed, a new span id always.
fn new_traceparent(parent: Option<&str>) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let trace_id = parent
        .and_then(|p| {
            let parts: Vec<&str> = p.split('-').collect();
            (parts.len() == 4
                && parts[1].len() == 32
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| parts[1].to_owned())
        })
        .unwrap_or_else(|| format!("{:032x}", rng.r#gen::<u128>()));
    format!("00-{trace_id}-{:016x}-01", rng.r#gen::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payloads::*;

    fn placed() -> Event {
        Event::OrderPlaced(OrderPlaced {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            items: vec![LineItem {
                sku: "SKU".into(),
                quantity: 2,
                unit_price_cents: 500,
            }],
            total_cents: 1000,
            currency: "EUR".into(),
            shipping_address: Address {
                name: "Ada".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Vienna".into(),
                postal_code: "1010".into(),
                country: "AT".into(),
            },
        })
    }

    #[test]
    fn an_envelope_survives_a_round_trip_through_json() {
        let envelope = Envelope::root("orders", &placed());
        let decoded = Envelope::decode(&envelope.encode()).expect("decodes");
        // The wire format keeps milliseconds only.
        assert_eq!(
            decoded.time.timestamp_millis(),
            envelope.time.timestamp_millis()
        );
        assert_eq!(decoded.id, envelope.id);
        assert_eq!(decoded.event().expect("valid"), placed());
    }

    #[test]
    fn the_wire_form_has_the_contract_attributes() {
        let json: serde_json::Value =
            serde_json::from_slice(&Envelope::root("orders", &placed()).encode()).expect("json");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "order.placed");
        assert_eq!(json["subject"], "o-1");
        assert_eq!(json["correlationid"], "o-1");
        assert_eq!(json["schemaversion"], 1);
        assert!(json.get("causationid").is_none());
        let time = json["time"].as_str().expect("time is a string");
        assert!(
            time.ends_with('Z') && time.len() == "2026-11-28T14:00:00.123Z".len(),
            "{time}"
        );
    }

    #[test]
    fn a_caused_event_carries_correlation_causation_and_trace() {
        let cause = Envelope::root("orders", &placed());
        let effect = Envelope::caused_by(
            &cause,
            "billing",
            &Event::PaymentDeclined(PaymentDeclined {
                order_id: "o-1".into(),
                amount_cents: 1000,
                currency: "EUR".into(),
                reason: "limit_exceeded".into(),
            }),
        );
        assert_eq!(effect.correlationid, "o-1");
        assert_eq!(effect.causationid.as_deref(), Some(cause.id.as_str()));
        let trace = |e: &Envelope| e.traceparent.clone().expect("traceparent")[3..35].to_owned();
        assert_eq!(trace(&effect), trace(&cause));
        assert_ne!(effect.traceparent, cause.traceparent);
    }

    #[test]
    fn unknown_attributes_and_fields_are_ignored() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&Envelope::root("orders", &placed()).encode()).expect("json");
        json["someextension"] = "x".into();
        json["data"]["loyalty_tier"] = "gold".into();
        let envelope = Envelope::decode(json.to_string().as_bytes()).expect("decodes");
        assert!(envelope.event().is_ok());
    }

    /// A `correlationid` is copied onto the events this one causes, as an AMQP short string: one
    /// over 255 bytes would stop the relay of whoever handled it, so it is refused here.
    #[test]
    fn attributes_that_cannot_be_amqp_short_strings_are_undecodable() {
        for attribute in ["id", "source", "correlationid"] {
            let mut json: serde_json::Value =
                serde_json::from_slice(&Envelope::root("orders", &placed()).encode())
                    .expect("json");
            json[attribute] = "c".repeat(MAX_ATTRIBUTE_BYTES).into();
            assert!(
                Envelope::decode(json.to_string().as_bytes()).is_ok(),
                "{attribute}"
            );
            json[attribute] = "c".repeat(MAX_ATTRIBUTE_BYTES + 1).into();
            let Err(DecodeError::Undecodable(why)) = Envelope::decode(json.to_string().as_bytes())
            else {
                panic!("{attribute} over 255 bytes decoded");
            };
            assert!(
                why.contains(attribute) && why.contains("256 bytes"),
                "{why}"
            );
        }
    }

    #[test]
    fn garbage_is_undecodable() {
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(DecodeError::Undecodable(_))
        ));
        assert!(matches!(
            Envelope::decode(b"{\"id\": 1}"),
            Err(DecodeError::Undecodable(_))
        ));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_rejected_naming_its_attribute_or_field() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&Envelope::root("orders", &placed()).encode()).expect("json");
        json["schemaversion"] = "1".into();
        let error = Envelope::decode(json.to_string().as_bytes()).expect_err("a string");
        assert!(error.to_string().contains("`schemaversion`"), "{error}");

        let mut envelope = Envelope::root("orders", &placed());
        envelope.data["items"][0]["quantity"] = (-1).into();
        let error = envelope
            .event()
            .expect_err("a negative quantity")
            .to_string();
        assert!(error.contains("`items[0].quantity`"), "{error}");
    }

    #[test]
    fn bytes_after_the_envelope_make_it_undecodable() {
        let mut body = Envelope::root("orders", &placed()).encode();
        body.extend_from_slice(b" {}");
        assert!(matches!(
            Envelope::decode(&body),
            Err(DecodeError::Undecodable(_))
        ));
    }

    #[test]
    fn a_wrong_specversion_is_rejected() {
        let mut envelope = Envelope::root("orders", &placed());
        envelope.specversion = "0.3".into();
        assert!(matches!(
            Envelope::decode(&envelope.encode()),
            Err(DecodeError::UnsupportedSpecVersion(_))
        ));
    }

    #[test]
    fn an_unknown_type_is_rejected() {
        let mut envelope = Envelope::root("orders", &placed());
        envelope.event_type = "order.teleported".into();
        assert!(matches!(envelope.event(), Err(DecodeError::UnknownType(_))));
    }

    #[test]
    fn an_unsupported_schema_version_is_rejected() {
        let mut envelope = Envelope::root("orders", &placed());
        envelope.schemaversion = 2;
        let error = envelope.event().expect_err("version 2 is not supported");
        assert!(
            error.to_string().contains("unsupported schemaversion 2"),
            "{error}"
        );
    }

    #[test]
    fn invalid_data_is_rejected_with_every_problem() {
        let mut envelope = Envelope::root("orders", &placed());
        envelope.data["currency"] = "euro".into();
        envelope.data["shipping_address"]["country"] = "Austria".into();
        let error = envelope.event().expect_err("invalid").to_string();
        assert!(
            error.contains("currency") && error.contains("country"),
            "{error}"
        );
        envelope.data = serde_json::json!({"order_id": 7});
        assert!(matches!(envelope.event(), Err(DecodeError::InvalidData(_))));
    }
}
