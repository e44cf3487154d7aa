//! Dead letters: what the runtime writes on a message it gives up on, and how to read it back.
//!
//! The consumer does not `basic.reject` a message it cannot handle: RabbitMQ's own dead-lettering
//! cannot add a header, and the contract wants the reason in `x-error`. It publishes a copy to
//! `<service>.dlx` (confirmed, persistent) with the headers below, then acks the original. A crash
//! between the two leaves the original unacked, so it is redelivered and dead-lettered again: a
//! duplicate in the DLQ, never a loss. Messages dead-lettered by the broker itself (the queue's
//! delivery limit) carry RabbitMQ's `x-death` header instead of `x-error`.

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

/// Reads a text header.
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
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

/// A text header value.
pub fn text(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}
