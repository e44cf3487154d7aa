//! The copies a consumer publishes instead of handling a message: to a delay queue, to be tried
//! again, or to the dead-letter queue, with why. Each is confirmed before the batch is acked.
//!
//! A copy records where the message was first published ([`Origin`]: never a header the sender
//! could have forged) and keeps the sender's claims apart; a reason is bounded
//! ([`headers::reason`]). So no header a sender chooses can become a routing key, and a copy adds
//! at most about 1.8 KB of headers to what its sender sent. (A sender whose own headers already
//! fill the broker's frame to within that would still see its copies refused: not handled.)

use super::{ConsumerLoop, Handler};
use crate::Result;
use crate::headers::{
    self, X_DEAD_LETTER_ID, X_DEAD_LETTERED_AT, X_ERROR, X_LAST_ERROR, X_RETRY_COUNT,
};
use crate::origin::Origin;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::retry_queue_name;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;

impl<H: Handler> ConsumerLoop<H> {
    /// Publishes a dead-letter copy of `delivery` with `reason` and waits for its confirm.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        origin: &Origin,
        publisher: &Publisher,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(reason, "dead-lettering message");
        publisher
            .publish(Outgoing {
                exchange: self.names.of(&self.service.dead_letter_exchange()),
                routing_key: origin.routing_key.clone(),
                body: delivery.data.clone(),
                properties: dead_letter_properties(&delivery.properties, origin, reason),
            })
            .await
    }

    /// Publishes `delivery` to the delay queue of its next attempt (confirmed), or dead-letters
    /// it once the attempts are used up.
    pub(super) async fn retry(
        &self,
        delivery: &Delivery,
        origin: &Origin,
        publisher: &Publisher,
        reason: &str,
    ) -> Result<()> {
        let attempts = headers::header_count(&delivery.properties, X_RETRY_COUNT);
        let Some(delay) = self.retry_delays.get(attempts as usize) else {
            let reason = format!(
                "retries exhausted after {} attempts: {reason}",
                attempts + 1
            );
            return self.dead_letter(delivery, origin, publisher, &reason).await;
        };
        tracing::warn!(
            reason,
            attempt = attempts + 1,
            ?delay,
            "transient failure; retrying later"
        );
        publisher
            .publish(Outgoing {
                exchange: self.redeliver.clone(),
                routing_key: self.names.of(&retry_queue_name(self.service.name, *delay)),
                body: delivery.data.clone(),
                properties: retry_properties(&delivery.properties, origin, attempts + 1, reason),
            })
            .await
    }
}

/// The properties of a dead-letter copy: the delivery's own, without a per-message TTL (it would
/// expire out of the DLQ) nor the broker's delivery counts, plus the reason, the origin, when,
/// and a fresh id of the runtime's ([`X_DEAD_LETTER_ID`]).
pub(crate) fn dead_letter_properties(
    delivered: &BasicProperties,
    origin: &Origin,
    reason: &str,
) -> BasicProperties {
    let mut added = vec![
        (X_ERROR, headers::reason(reason)),
        (X_DEAD_LETTERED_AT, headers::text(choreo_store::now_text())),
        (X_DEAD_LETTER_ID, headers::text(dead_letter_id())),
    ];
    added.extend(origin.headers());
    headers::with_headers(&headers::for_keeping(delivered), &added)
}

/// The properties of a copy to a delay queue: the delivery's own, its attempt, the last reason,
/// and the origin it is to be checked against when it comes back.
pub(crate) fn retry_properties(
    delivered: &BasicProperties,
    origin: &Origin,
    attempt: u32,
    reason: &str,
) -> BasicProperties {
    let mut added = vec![
        (X_RETRY_COUNT, AMQPValue::LongLongInt(i64::from(attempt))),
        (X_LAST_ERROR, headers::reason(reason)),
    ];
    added.extend(origin.headers());
    headers::with_headers(delivered, &added)
}

/// `dl-` and 16 random hex digits: unguessable, so no sender can know another letter's id.
fn dead_letter_id() -> String {
    use rand::Rng;
    format!("dl-{:016x}", rand::thread_rng().r#gen::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{
        MAX_REASON_BYTES, X_CLAIMED_ORIGINAL_ROUTING_KEY, X_ORIGINAL_EXCHANGE,
        X_ORIGINAL_ROUTING_KEY, header_text,
    };
    use lapin::types::{ByteArray, FieldArray, FieldTable, LongString};
    use proptest::prelude::*;

    const REDELIVER: &str = "p.billing.redeliver";

    /// Any header value: every type, text of any length (past a short string's 255 bytes), bytes
    /// that are not text, tables and arrays nested in each other.
    fn value() -> impl Strategy<Value = AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<f64>().prop_map(AMQPValue::Double),
            "[a-z.]{0,300}".prop_map(|s| AMQPValue::LongString(LongString::from(s))),
            ".{0,40}".prop_map(|s| AMQPValue::LongString(LongString::from(s))),
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
            prop::collection::vec(any::<u8>(), 0..20)
                .prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| AMQPValue::FieldArray(FieldArray::from(values))),
                prop::collection::vec(("[a-z-]{1,12}", inner), 0..4)
                    .prop_map(|entries| AMQPValue::FieldTable(table(entries))),
            ]
        })
    }

    fn table(entries: Vec<(String, AMQPValue)>) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert(name.into(), value);
        }
        table
    }

    /// Headers that often carry the names the runtime reads, with any value.
    fn headers() -> impl Strategy<Value = FieldTable> {
        let name = prop_oneof![
            Just("x-original-exchange".to_owned()),
            Just("x-original-routing-key".to_owned()),
            Just("x-retry-count".to_owned()),
            Just("x-dead-letter-id".to_owned()),
            Just("x-death".to_owned()),
            "[a-z-]{1,20}",
        ];
        prop::collection::vec((name, value()), 0..6).prop_map(table)
    }

    proptest! {
        /// Whatever a sender puts in its headers and reason, a copy is routed by a key the broker
        /// gave, records that origin, keeps the sender's claims apart and unchanged, and carries a
        /// bounded reason and an id of the runtime's.
        #[test]
        fn no_header_becomes_a_routing_key_and_every_copy_is_bounded(
            headers in headers(),
            exchange in prop_oneof![Just(REDELIVER.to_owned()), "[a-z.]{0,255}"],
            routing_key in "[a-z.]{0,255}",
            reason in ".{0,3000}",
        ) {
            let delivered = BasicProperties::default().with_headers(headers.clone());
            let origin = Origin::of(&exchange, &routing_key, &delivered, REDELIVER);
            prop_assert!(origin.exchange.len() <= 255 && origin.routing_key.len() <= 255);
            if exchange != REDELIVER {
                prop_assert_eq!(&origin.exchange, &exchange);
                prop_assert_eq!(&origin.routing_key, &routing_key);
            }
            for copy in [
                dead_letter_properties(&delivered, &origin, &reason),
                retry_properties(&delivered, &origin, 1, &reason),
            ] {
                let reason_header = header_text(&copy, X_ERROR)
                    .or_else(|| header_text(&copy, X_LAST_ERROR))
                    .expect("a reason");
                prop_assert!(reason_header.len() <= MAX_REASON_BYTES);
                prop_assert_eq!(
                    header_text(&copy, X_ORIGINAL_ROUTING_KEY),
                    Some(origin.routing_key.clone())
                );
                prop_assert_eq!(
                    header_text(&copy, X_ORIGINAL_EXCHANGE),
                    Some(origin.exchange.clone())
                );
                let kept = copy.headers().clone().unwrap_or_default();
                if exchange != REDELIVER {
                    prop_assert_eq!(
                        kept.inner().get(X_CLAIMED_ORIGINAL_ROUTING_KEY),
                        headers.inner().get(X_ORIGINAL_ROUTING_KEY)
                    );
                }
                // The copy can come back through the redelivery exchange: then it is checked
                // against the very same origin.
                let back = Origin::of(REDELIVER, "p.billing", &copy, REDELIVER);
                prop_assert_eq!(&back.exchange, &origin.exchange);
                prop_assert_eq!(&back.routing_key, &origin.routing_key);
            }
            let letter = dead_letter_properties(&delivered, &origin, &reason);
            let id = header_text(&letter, X_DEAD_LETTER_ID).expect("an id");
            prop_assert!(id.starts_with("dl-") && id.len() == 19, "{}", id);
        }
    }
}
