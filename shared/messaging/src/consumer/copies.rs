//! The copies a consumer publishes instead of handling a message: to a delay queue, to be tried
//! again, or to the dead-letter queue, with why. Each is confirmed before the batch is acked.

use super::{ConsumerLoop, Handler};
use crate::Result;
use crate::headers::{
    self, X_DEAD_LETTERED_AT, X_ERROR, X_LAST_ERROR, X_ORIGINAL_EXCHANGE, X_ORIGINAL_ROUTING_KEY,
    X_RETRY_COUNT,
};
use crate::publisher::{Outgoing, Publisher};
use crate::topology::retry_queue_name;
use lapin::message::Delivery;
use lapin::types::AMQPValue;

impl<H: Handler> ConsumerLoop<H> {
    /// Publishes a dead-letter copy of `delivery` with `reason` and waits for its confirm.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(reason, "dead-lettering message");
        // Without its `expiration`: a per-message TTL would expire it out of the DLQ.
        let [exchange, routing_key] = first_published(delivery);
        let properties = headers::with_headers(
            &headers::for_keeping(&delivery.properties),
            &[
                (X_ERROR, headers::text(reason)),
                exchange,
                routing_key,
                (X_DEAD_LETTERED_AT, headers::text(choreo_store::now_text())),
            ],
        );
        publisher
            .publish(Outgoing {
                exchange: self.names.of(&self.service.dead_letter_exchange()),
                routing_key: original(delivery, X_ORIGINAL_ROUTING_KEY, &delivery.routing_key),
                body: delivery.data.clone(),
                properties,
            })
            .await
    }

    /// Publishes `delivery` to the delay queue of its next attempt (confirmed), or dead-letters
    /// it once the attempts are used up.
    pub(super) async fn retry(
        &self,
        delivery: &Delivery,
        publisher: &Publisher,
        reason: &str,
    ) -> Result<()> {
        let attempts = headers::header_count(&delivery.properties, X_RETRY_COUNT);
        let Some(delay) = self.retry_delays.get(attempts as usize) else {
            let reason = format!(
                "retries exhausted after {} attempts: {reason}",
                attempts + 1
            );
            return self.dead_letter(delivery, publisher, &reason).await;
        };
        tracing::warn!(
            reason,
            attempt = attempts + 1,
            ?delay,
            "transient failure; retrying later"
        );
        let [exchange, routing_key] = first_published(delivery);
        let properties = headers::with_headers(
            &delivery.properties,
            &[
                (
                    X_RETRY_COUNT,
                    AMQPValue::LongLongInt(i64::from(attempts + 1)),
                ),
                (X_LAST_ERROR, headers::text(reason)),
                exchange,
                routing_key,
            ],
        );
        publisher
            .publish(Outgoing {
                exchange: self.redeliver.clone(),
                routing_key: self.names.of(&retry_queue_name(self.service.name, *delay)),
                body: delivery.data.clone(),
                properties,
            })
            .await
    }
}

/// The headers that keep where `delivery` was first published, for a copy of it.
fn first_published(delivery: &Delivery) -> [(&'static str, AMQPValue); 2] {
    [
        (
            X_ORIGINAL_EXCHANGE,
            headers::text(original(delivery, X_ORIGINAL_EXCHANGE, &delivery.exchange)),
        ),
        (
            X_ORIGINAL_ROUTING_KEY,
            headers::text(original(
                delivery,
                X_ORIGINAL_ROUTING_KEY,
                &delivery.routing_key,
            )),
        ),
    ]
}

/// Where the message was first published: a redelivered message arrives through another
/// exchange, so the first exchange and key are kept in headers.
pub(super) fn original(
    delivery: &Delivery,
    header: &str,
    current: &lapin::types::ShortString,
) -> String {
    headers::header_text(&delivery.properties, header)
        .unwrap_or_else(|| current.as_str().to_owned())
}
