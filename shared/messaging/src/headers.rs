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

/// Where a message the broker dead-lettered by itself (a queue's delivery limit) was first
/// published: the exchange and routing key of the oldest entry of RabbitMQ's `x-death` header.
/// Such a message carries no `x-original-*` headers of ours.
pub fn first_death(properties: &BasicProperties) -> Option<(String, String)> {
    let headers = properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    // Newest first: the last entry is the first time it was dead-lettered.
    let AMQPValue::FieldTable(death) = deaths.as_slice().last()? else {
        return None;
    };
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let exchange = text(death.inner().get("exchange")?)?;
    let AMQPValue::FieldArray(keys) = death.inner().get("routing-keys")? else {
        return None;
    };
    let routing_key = text(keys.as_slice().first()?)?;
    Some((exchange, routing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_first_death_gives_where_the_broker_dead_lettered_message_was_published() {
        let death = |exchange: &str, key: &str| {
            let mut table = FieldTable::default();
            table.insert("exchange".into(), text(exchange));
            table.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(vec![text(key)].into()),
            );
            AMQPValue::FieldTable(table)
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![
                    death("", "billing.retry.1000ms"),
                    death("orders.events", "order.placed"),
                ]
                .into(),
            ),
        );
        let properties = BasicProperties::default().with_headers(headers);

        assert_eq!(
            first_death(&properties),
            Some(("orders.events".to_owned(), "order.placed".to_owned()))
        );
        assert_eq!(first_death(&BasicProperties::default()), None);
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
