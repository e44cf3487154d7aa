//! Dead letters: what the runtime writes on a message it gives up on, and how to read it back.
//!
//! The consumer does not `basic.reject` a message it cannot handle: RabbitMQ's own dead-lettering
//! cannot add a header, and the contract wants the reason in `x-error`. It publishes a copy to
//! `<service>.dlx` (confirmed, persistent) with the headers of [`crate::headers`], then acks the original. A crash
//! between the two leaves the original unacked, so it is redelivered and dead-lettered again: a
//! duplicate in the DLQ, never a loss. Messages dead-lettered by the broker itself (the queue's
//! delivery limit) carry RabbitMQ's `x-death` header instead of `x-error`.

use crate::headers::{
    X_DEAD_LETTERED_AT, X_ERROR, X_LAST_ERROR, X_ORIGINAL_EXCHANGE, X_ORIGINAL_ROUTING_KEY,
    X_RETRY_COUNT, first_death, header_text, text,
};
use lapin::BasicProperties;
use lapin::types::FieldTable;
use std::time::Duration;

/// One dead letter, as the operator tools show it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub routing_key: Option<String>,
    pub error: Option<String>,
    pub dead_lettered_at: Option<String>,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl DeadLetter {
    fn read(properties: &BasicProperties, body: &[u8]) -> Self {
        DeadLetter {
            message_id: properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            event_type: properties.kind().as_ref().map(|t| t.as_str().to_owned()),
            routing_key: header_text(properties, X_ORIGINAL_ROUTING_KEY),
            // Dead-lettered by the broker itself (delivery limit): the reason is in x-death.
            error: header_text(properties, X_ERROR).or_else(|| {
                header_text(properties, "x-death")
                    .map(|d| format!("dead-lettered by the broker: {d}"))
            }),
            dead_lettered_at: header_text(properties, X_DEAD_LETTERED_AT),
            properties: properties.clone(),
            body: body.to_vec(),
        }
    }
}

/// Operator access to one service's dead-letter queue.
#[derive(Debug)]
pub struct DeadLetterQueue {
    channel: lapin::Channel,
    /// A second channel that outlives `channel`, to watch the queue after `channel` closes.
    probe: lapin::Channel,
    /// The prefixed name of the dead-letter queue.
    pub queue: String,
    /// The prefixed name of the service's own queue, where redriven messages go.
    pub home: String,
    /// The service's redelivery exchange, through which they go.
    pub redeliver: String,
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    MessageId(String),
}

impl DeadLetterQueue {
    /// Opens the dead-letter queue of `service` (names with `prefix`).
    pub async fn open(
        connection: &lapin::Connection,
        names: &crate::Names,
        service: &choreo_events::topology::ServiceTopology,
    ) -> crate::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        let probe = connection.create_channel().await?;
        Ok(DeadLetterQueue {
            channel,
            probe,
            queue: names.of(&service.dead_letter_queue()),
            home: names.of(service.name),
            redeliver: names.of(&service.redeliver_exchange()),
        })
    }

    /// Reads every dead letter without removing any: they are fetched unacked and handed back to
    /// the queue when the channel closes. Returns once they are all back (the broker requeues
    /// them a moment after the close), so a command right after this one sees them.
    pub async fn list(self) -> crate::Result<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for _ in 0..self.count().await? {
            let Some(message) = self.get().await? else {
                break;
            };
            letters.push(DeadLetter::read(
                &message.delivery.properties,
                &message.delivery.data,
            ));
        }
        self.channel.close(200, "listed".into()).await?;
        self.until_ready(letters.len()).await?;
        Ok(letters)
    }

    /// Waits (at most 5 s) until at least `count` dead letters are ready again.
    async fn until_ready(&self, count: usize) -> crate::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (self.count().await? as usize) < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// How many dead letters are ready now.
    pub async fn count(&self) -> crate::Result<u32> {
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        Ok(self
            .probe
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await?
            .message_count())
    }

    async fn get(&self) -> crate::Result<Option<lapin::message::BasicGetMessage>> {
        let options = lapin::options::BasicGetOptions { no_ack: false };
        Ok(self
            .channel
            .basic_get(self.queue.as_str().into(), options)
            .await?)
    }

    /// Sends the selected dead letters back to the service's own queue, with their original
    /// body and message id (so the service's inbox still de-duplicates them) and without the
    /// dead-letter headers. Each is removed from the DLQ only after the broker confirmed its
    /// copy. Returns how many were redriven.
    pub async fn redrive(self, selection: &Selection) -> crate::Result<usize> {
        let mut redriven = 0;
        // At most the messages there now: one redriven and dead-lettered again at once must not
        // be picked up a second time in the same run.
        let present = self.count().await?;
        for _ in 0..present {
            let Some(message) = self.get().await? else {
                break;
            };
            let delivery = &message.delivery;
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned());
            let selected = match selection {
                Selection::All => true,
                Selection::MessageId(wanted) => id.as_deref() == Some(wanted.as_str()),
            };
            if !selected {
                continue;
            }
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            let mut kept = FieldTable::default();
            for (name, value) in headers.inner() {
                if ![
                    X_ERROR,
                    X_DEAD_LETTERED_AT,
                    X_RETRY_COUNT,
                    X_LAST_ERROR,
                    "x-death",
                    "x-first-death-exchange",
                    "x-first-death-queue",
                    "x-first-death-reason",
                    "x-delivery-count",
                ]
                .contains(&name.as_str())
                {
                    kept.insert(name.clone(), value.clone());
                }
            }
            // One the broker dead-lettered by itself has no x-original-* headers of ours: take
            // them from its x-death (about to be stripped), so that its provenance can be checked
            // when it comes back through the redelivery exchange.
            if header_text(&delivery.properties, X_ORIGINAL_EXCHANGE).is_none()
                && let Some((exchange, routing_key)) = first_death(&delivery.properties)
            {
                kept.insert(X_ORIGINAL_EXCHANGE.into(), text(exchange));
                kept.insert(X_ORIGINAL_ROUTING_KEY.into(), text(routing_key));
            }
            headers = kept;
            let properties = delivery
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(crate::publisher::PERSISTENT);
            let publisher = crate::Publisher::from_channel(self.channel.clone());
            publisher
                .publish(crate::publisher::Outgoing {
                    exchange: self.redeliver.clone(),
                    routing_key: self.home.clone(),
                    body: delivery.data.clone(),
                    properties,
                })
                .await?;
            if !delivery
                .acker
                .ack(lapin::options::BasicAckOptions::default())
                .await?
            {
                return Err(crate::Error::ChannelGone);
            }
            redriven += 1;
        }
        self.channel.close(200, "redriven".into()).await?;
        // The ones not selected go back to the queue: wait until they are ready again.
        self.until_ready(present as usize - redriven).await?;
        Ok(redriven)
    }

    /// Deletes every dead letter. Returns how many there were.
    pub async fn purge(self) -> crate::Result<u32> {
        let purged = self
            .channel
            .queue_purge(
                self.queue.as_str().into(),
                lapin::options::QueuePurgeOptions::default(),
            )
            .await?;
        self.channel.close(200, "purged".into()).await?;
        Ok(purged)
    }
}
