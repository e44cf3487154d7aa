//! The headers the runtime writes on the copies it publishes (dead letters and retries), and
//! how to read them back: plumbing shared by the consumer and the operator's DLQ tool.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Why the message was dead-lettered.
pub const X_ERROR: &str = "x-error";
/// The exchange the message was first published to.
pub const X_ORIGINAL_EXCHANGE: &str = "x-original-exchange";
/// The routing key the message was first published with.
pub const X_ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
/// When the runtime dead-lettered it (RFC 3339).
pub const X_DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
/// How many times the runtime retried the message through its delay queues.
pub const X_RETRY_COUNT: &str = "x-retry-count";
/// The error of the last failed attempt, on a message waiting in a delay queue.
pub const X_LAST_ERROR: &str = "x-last-error";
/// The id the runtime gave a dead letter when it made it: what `dlq redrive <id>` selects by.
/// Random, so a sender cannot give its forgery the id of another letter.
pub const X_DEAD_LETTER_ID: &str = "x-dead-letter-id";
/// The sender's own `x-original-exchange` on a delivery where it is not believed, kept as it came
/// ([`crate::origin`]).
pub const X_CLAIMED_ORIGINAL_EXCHANGE: &str = "x-claimed-original-exchange";
/// The sender's own `x-original-routing-key`, likewise.
pub const X_CLAIMED_ORIGINAL_ROUTING_KEY: &str = "x-claimed-original-routing-key";

/// The most bytes of a reason the runtime writes into `x-error` or `x-last-error`. A reason may
/// quote what the sender chose (a claimed source, an unknown type), and a header past the
/// broker's frame size closes the connection.
pub const MAX_REASON_BYTES: usize = 1_024;

/// Reads a text header.
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Reads a text header that can be an AMQP short string (at most 255 bytes, so it can be an
/// exchange name or a routing key); `None` if absent, of another type, or longer.
pub fn short_text(properties: &BasicProperties, name: &str) -> Option<String> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    let text = match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.to_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        _ => return None,
    };
    (text.len() <= 255).then_some(text)
}

/// A reason as a header value, cut to [`MAX_REASON_BYTES`] (at a character boundary) with a note
/// that says it was cut and from how long.
pub fn reason(reason: &str) -> AMQPValue {
    if reason.len() <= MAX_REASON_BYTES {
        return text(reason);
    }
    let note = format!(" ... (cut from {} bytes)", reason.len());
    let mut end = MAX_REASON_BYTES - note.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    text(format!("{}{note}", &reason[..end]))
}

/// Reads an integer header; absent or not an integer reads as 0.
pub fn header_count(properties: &BasicProperties, name: &str) -> u32 {
    let Some(value) = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
    else {
        return 0;
    };
    let n: i64 = match value {
        AMQPValue::LongLongInt(n) => n,
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        _ => 0,
    };
    u32::try_from(n).unwrap_or(0)
}

/// `properties` with `headers` added (replacing same-named ones) and made persistent.
pub fn with_headers(
    properties: &BasicProperties,
    headers: &[(&str, AMQPValue)],
) -> BasicProperties {
    let mut table: FieldTable = properties.headers().clone().unwrap_or_default();
    for (name, value) in headers {
        table.insert(ShortString::from(*name), value.clone());
    }
    properties
        .clone()
        .with_headers(table)
        .with_delivery_mode(crate::publisher::PERSISTENT)
}

/// Headers the broker writes on a delivery, not on the stored message: RabbitMQ's quorum queues
/// count deliveries in `x-delivery-count` (and, from 4.3, acquisitions in `x-acquired-count`).
/// A copy that kept them would carry a count that is no longer true.
pub const DELIVERY_ANNOTATIONS: [&str; 2] = ["x-delivery-count", "x-acquired-count"];

/// `properties` as a copy into a dead-letter queue (or out of one) must have them: persistent,
/// without the broker's delivery annotations, and without a per-message TTL. A message published
/// with an `expiration` keeps it on every copy made of it, and a dead letter must not expire out
/// of its queue before an operator has seen it.
pub fn for_keeping(properties: &BasicProperties) -> BasicProperties {
    let mut kept = BasicProperties::default().with_delivery_mode(crate::publisher::PERSISTENT);
    // The generated properties can be set but not unset, so the copy is built field by field.
    macro_rules! copy {
        ($($get:ident => $set:ident),* $(,)?) => {
            $(if let Some(value) = properties.$get().clone() {
                kept = kept.$set(value);
            })*
        };
    }
    copy!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    if let Some(headers) = properties.headers() {
        let mut table = FieldTable::default();
        for (name, value) in headers.inner() {
            if !DELIVERY_ANNOTATIONS.contains(&name.as_str()) {
                table.insert(name.clone(), value.clone());
            }
        }
        kept = kept.with_headers(table);
    }
    kept
}

/// A header value as JSON, for people and files: text as strings (bytes that are not UTF-8 as
/// `{"base64": ...}`), numbers as numbers, tables and arrays as objects and arrays.
pub fn json(value: &AMQPValue) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::Value;
    let bytes = |bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(bytes)
        }),
    };
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => serde_json::json!({"scale": d.scale, "value": d.value}),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => bytes(s.as_bytes()),
        AMQPValue::FieldArray(values) => Value::Array(values.as_slice().iter().map(json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(b) => bytes(b.as_slice()),
        AMQPValue::Void => Value::Null,
    }
}

/// A header table as a JSON object (keys in the table's own, sorted, order).
pub fn table_json(table: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .inner()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), json(value)))
            .collect(),
    )
}

/// The properties that are set, as a JSON object (headers apart: see [`table_json`]).
pub fn properties_json(properties: &BasicProperties) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    let mut text = |name: &str, value: &Option<ShortString>| {
        if let Some(value) = value {
            object.insert(name.to_owned(), value.as_str().into());
        }
    };
    text("content_type", properties.content_type());
    text("content_encoding", properties.content_encoding());
    text("correlation_id", properties.correlation_id());
    text("reply_to", properties.reply_to());
    text("expiration", properties.expiration());
    text("message_id", properties.message_id());
    text("type", properties.kind());
    text("user_id", properties.user_id());
    text("app_id", properties.app_id());
    text("cluster_id", properties.cluster_id());
    if let Some(mode) = properties.delivery_mode() {
        object.insert("delivery_mode".into(), (*mode).into());
    }
    if let Some(priority) = properties.priority() {
        object.insert("priority".into(), (*priority).into());
    }
    if let Some(timestamp) = properties.timestamp() {
        object.insert("timestamp".into(), (*timestamp).into());
    }
    serde_json::Value::Object(object)
}

/// A text header value.
pub fn text(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}

/// The queue named by the newest entry of RabbitMQ's `x-death` header: for a message the broker
/// dead-lettered by itself (a per-message TTL, a delivery limit, an overflow), the queue it was
/// dead-lettered from. The broker writes that entry (or moves the one it updates to the front)
/// whenever it dead-letters, so it is the one entry a sender cannot place; every other field of
/// the header, older entries included, can be the sender's.
pub fn newest_death_queue(properties: &BasicProperties) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    match death.inner().get("queue")? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_past_the_bound_is_cut_at_a_character_boundary_and_says_so() {
        let short = "provenance: type differs";
        assert_eq!(json(&reason(short)), short);
        let quoted = format!("claims source {:?}", "é".repeat(5_000));
        let AMQPValue::LongString(cut) = reason(&quoted) else {
            panic!("text")
        };
        let cut = std::str::from_utf8(cut.as_bytes()).expect("whole characters");
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.starts_with("claims source \"éé"));
        assert!(
            cut.ends_with(&format!(" ... (cut from {} bytes)", quoted.len())),
            "{cut}"
        );
        let exactly = "r".repeat(MAX_REASON_BYTES);
        assert_eq!(
            json(&reason(&exactly)),
            exactly.as_str(),
            "at the bound: whole"
        );
    }

    #[test]
    fn only_text_that_fits_a_short_string_reads_as_one() {
        let mut table = FieldTable::default();
        table.insert("fits".into(), text("k".repeat(255)));
        table.insert("long".into(), text("k".repeat(256)));
        table.insert("short".into(), AMQPValue::ShortString("s".into()));
        table.insert("number".into(), AMQPValue::LongLongInt(1));
        table.insert(
            "bytes".into(),
            AMQPValue::LongString(LongString::from(vec![0xff_u8, 0xfe])),
        );
        let properties = BasicProperties::default().with_headers(table);
        assert_eq!(short_text(&properties, "fits"), Some("k".repeat(255)));
        assert_eq!(short_text(&properties, "short").as_deref(), Some("s"));
        for refused in ["long", "number", "bytes", "absent"] {
            assert_eq!(short_text(&properties, refused), None, "{refused}");
        }
    }

    #[test]
    fn headers_are_added_over_the_existing_ones_and_read_back() {
        let mut existing = FieldTable::default();
        existing.insert("keep".into(), text("me"));
        existing.insert(X_ERROR.into(), text("old reason"));
        let original = BasicProperties::default()
            .with_headers(existing)
            .with_delivery_mode(1);

        let copy = with_headers(
            &original,
            &[
                (X_ERROR, text("new reason")),
                (X_RETRY_COUNT, AMQPValue::LongLongInt(2)),
            ],
        );

        assert_eq!(header_text(&copy, X_ERROR).as_deref(), Some("new reason"));
        assert_eq!(header_text(&copy, "keep").as_deref(), Some("me"));
        assert_eq!(header_count(&copy, X_RETRY_COUNT), 2);
        assert_eq!(copy.delivery_mode(), &Some(crate::publisher::PERSISTENT));
    }

    #[test]
    fn the_newest_death_names_the_queue_the_broker_dead_lettered_from() {
        let death = |queue: &str| {
            let mut table = FieldTable::default();
            table.insert("queue".into(), text(queue));
            table.insert("exchange".into(), text("forged.events"));
            AMQPValue::FieldTable(table)
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![death("p.billing"), death("p.billing.delay.1000ms")].into()),
        );
        let properties = BasicProperties::default().with_headers(headers);

        assert_eq!(
            newest_death_queue(&properties).as_deref(),
            Some("p.billing")
        );
        assert_eq!(newest_death_queue(&BasicProperties::default()), None);
    }

    #[test]
    fn a_copy_for_keeping_has_no_expiration_nor_delivery_count_and_everything_else() {
        let mut table = FieldTable::default();
        table.insert(X_ERROR.into(), text("undecodable"));
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        table.insert("x-acquired-count".into(), AMQPValue::LongLongInt(4));
        let delivered = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_type("order.placed".into())
            .with_app_id("orders".into())
            .with_correlation_id("o-1".into())
            .with_content_type("application/cloudevents+json".into())
            .with_timestamp(1_700_000_000)
            .with_expiration("60000".into())
            .with_delivery_mode(1)
            .with_headers(table);

        let kept = for_keeping(&delivered);

        assert_eq!(kept.expiration(), &None);
        assert_eq!(kept.delivery_mode(), &Some(crate::publisher::PERSISTENT));
        assert_eq!(header_text(&kept, X_ERROR).as_deref(), Some("undecodable"));
        assert_eq!(header_text(&kept, "x-delivery-count"), None);
        assert_eq!(header_text(&kept, "x-acquired-count"), None);
        let unchanged = |p: &BasicProperties| {
            (
                p.message_id().clone(),
                p.kind().clone(),
                p.app_id().clone(),
                p.correlation_id().clone(),
                p.content_type().clone(),
                *p.timestamp(),
            )
        };
        assert_eq!(unchanged(&kept), unchanged(&delivered));
    }

    #[test]
    fn headers_read_as_json_with_bytes_that_are_not_text_in_base64() {
        let mut inner = FieldTable::default();
        inner.insert("count".into(), AMQPValue::LongLongInt(2));
        let mut table = FieldTable::default();
        table.insert("reason".into(), text("bad"));
        table.insert(
            "raw".into(),
            AMQPValue::LongString(LongString::from(vec![0xff, 0x00])),
        );
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(inner)].into()),
        );

        assert_eq!(
            table_json(&table),
            serde_json::json!({
                "raw": {"base64": "/wA="},
                "reason": "bad",
                "x-death": [{"count": 2}],
            })
        );
    }

    #[test]
    fn a_missing_or_odd_count_reads_as_zero_and_any_integer_width_counts() {
        let mut table = FieldTable::default();
        table.insert("short".into(), AMQPValue::ShortInt(3));
        table.insert("negative".into(), AMQPValue::LongLongInt(-1));
        table.insert("text".into(), text("7"));
        let properties = BasicProperties::default().with_headers(table);

        assert_eq!(header_count(&properties, "short"), 3);
        assert_eq!(header_count(&properties, "negative"), 0);
        assert_eq!(header_count(&properties, "text"), 0);
        assert_eq!(header_count(&properties, "absent"), 0);
        assert_eq!(header_text(&properties, "absent"), None);
    }
}
