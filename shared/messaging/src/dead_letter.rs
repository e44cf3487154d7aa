//! Dead letters: what the runtime writes on a message it gives up on, and the operator's access to
//! a service's dead-letter queue ([`DeadLetterQueue`]: list, redrive, purge).
//!
//! The consumer does not `basic.reject` a message it cannot handle: RabbitMQ's own dead-lettering
//! cannot add a header, and the contract wants the reason in `x-error`. It publishes a copy to
//! `<service>.dlx` (confirmed, persistent, without any per-message `expiration`, so it cannot
//! expire out of the DLQ) with the headers of [`crate::headers`], then acks the original. A crash
//! between the two leaves the original unacked, so it is redelivered and dead-lettered again: a
//! duplicate in the DLQ, never a loss. Messages dead-lettered by the broker itself (the queue's
//! delivery limit) carry RabbitMQ's `x-death` header instead of `x-error`.
//!
//! # Reading never hands a message back
//!
//! The DLQ is a quorum queue without a dead-letter exchange of its own, and quorum queues count
//! a message handed back to them (RabbitMQ's "Poison Message Handling", docs/quorum-queues):
//! - 3.10 to 3.13 count every return (a `basic.nack` or `basic.reject` with requeue, or the
//!   channel closing on unacked deliveries) in the `x-delivery-count` header of the next delivery;
//!   they have no limit unless one is set, so a count only grows;
//! - 4.0 gives every quorum queue a delivery limit of 20 by default, evaluated on every return
//!   up to 4.2; past it the message is dropped, or dead-lettered where the queue has a DLX. Ours
//!   has none, so a dead letter read 20 times by "take it and give it back" would be deleted;
//! - 4.3 counts only failed deliveries against the limit (`basic.reject`, a channel or connection
//!   that goes away holding the message), no longer `basic.nack`, and adds `x-acquired-count`.
//!
//! Giving the DLQ `x-delivery-limit: -1` or a DLX would change its declared arguments, and a
//! broker holding the queue with other arguments refuses the declaration (and `definitions.json`
//! loads the same ones), so the reads are made safe without that, the same way on every version:
//! a read takes each message, publishes a **copy** of it (same body, properties and headers, but
//! no broker delivery annotations and no `expiration`: [`crate::headers::for_keeping`]) through
//! `<service>.dlx`, which the service's broker user may write, waits for the broker's confirm,
//! and only then acks the original. Nothing is ever returned, so nothing is counted, on 3.x or
//! 4.x. A crash between the confirm and the ack leaves both: a duplicate in the DLQ, never a
//! loss. The copies go to the back of the queue in the order they were read, so after a full
//! listing the letters are in the same order as before. A letter that arrived in between is
//! then among them: positions are those of one listing, ids are stable.

use crate::headers::{
    X_CLAIMED_ORIGINAL_EXCHANGE, X_CLAIMED_ORIGINAL_ROUTING_KEY, X_DEAD_LETTER_ID,
    X_DEAD_LETTERED_AT, X_ERROR, X_LAST_ERROR, X_ORIGINAL_EXCHANGE, X_ORIGINAL_ROUTING_KEY,
    X_RETRY_COUNT, for_keeping, header_text, newest_death_queue, properties_json, short_text,
    table_json, text,
};
use crate::publisher::{Outgoing, Publisher};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// One dead letter, as the operator tools show it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it was in the queue when it was read: 1 for the oldest.
    pub position: usize,
    /// The id the runtime gave it when it dead-lettered it (`dl-` and 16 random hex digits, in
    /// `x-dead-letter-id`), or for one the broker dead-lettered by itself (or an earlier version
    /// of the runtime) `sha256:` and the first 12 hex digits of a hash of its body and headers:
    /// the same on every read. Never the message id, which its sender chose.
    pub id: String,
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    /// The exchange it was first published to, as the runtime knew it (never a header its
    /// sender wrote: [`crate::origin`]); for a letter the broker dead-lettered by itself, the
    /// exchange of the event type its routing key names, if it names one.
    pub exchange: Option<String>,
    /// The routing key it was first published with, likewise; for a letter the broker
    /// dead-lettered by itself, the routing key the broker dead-lettered it with.
    pub routing_key: Option<String>,
    /// What its sender claimed in an `x-original-exchange` header of its own, not believed.
    pub claimed_exchange: Option<String>,
    /// What its sender claimed in an `x-original-routing-key` header of its own, not believed.
    pub claimed_routing_key: Option<String>,
    /// Whether the broker dead-lettered it by itself out of the service's queue (a per-message
    /// TTL, the delivery limit, an overflow), rather than the runtime with its reason: then no
    /// header on it was written by the runtime, and none is believed.
    pub by_the_broker: bool,
    pub error: Option<String>,
    pub dead_lettered_at: Option<String>,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl DeadLetter {
    fn read(position: usize, delivery: &Delivery, queue: &DeadLetterQueue) -> Self {
        Self::from_parts(
            position,
            &delivery.properties,
            delivery.routing_key.as_str(),
            &delivery.data,
            &queue.home,
            &queue.names,
        )
    }

    /// The letter stored with `delivered` properties, under `routing_key`, with `body`, in the
    /// DLQ of the service whose own queue is `home`.
    fn from_parts(
        position: usize,
        delivered: &BasicProperties,
        routing_key: &str,
        body: &[u8],
        home: &str,
        names: &crate::Names,
    ) -> Self {
        // What is hashed and shown is what a read keeps: without the broker's delivery counts.
        let properties = for_keeping(delivered);
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        let by_the_broker = newest_death_queue(&properties).as_deref() == Some(home);
        let claimed = |ours: &str, theirs: &str| {
            header_text(&properties, theirs).or_else(|| {
                by_the_broker
                    .then(|| header_text(&properties, ours))
                    .flatten()
            })
        };
        let (id, exchange, first_key) = if by_the_broker {
            // Every header is as its sender wrote it; the routing key is the broker's.
            (
                generated_id(&properties, body),
                choreo_events::EventType::from_routing_key(routing_key)
                    .map(|event_type| names.of(event_type.exchange())),
                Some(routing_key.to_owned()),
            )
        } else {
            (
                short_text(&properties, X_DEAD_LETTER_ID)
                    .unwrap_or_else(|| generated_id(&properties, body)),
                header_text(&properties, X_ORIGINAL_EXCHANGE),
                header_text(&properties, X_ORIGINAL_ROUTING_KEY)
                    .or_else(|| Some(routing_key.to_owned())),
            )
        };
        DeadLetter {
            position,
            id,
            message_id,
            event_type: properties.kind().as_ref().map(|t| t.as_str().to_owned()),
            exchange,
            routing_key: first_key,
            claimed_exchange: claimed(X_ORIGINAL_EXCHANGE, X_CLAIMED_ORIGINAL_EXCHANGE),
            claimed_routing_key: claimed(X_ORIGINAL_ROUTING_KEY, X_CLAIMED_ORIGINAL_ROUTING_KEY),
            by_the_broker,
            // Dead-lettered by the broker itself: the reason is in x-death.
            error: if by_the_broker {
                header_text(&properties, "x-death")
                    .map(|d| format!("dead-lettered by the broker: {d}"))
            } else {
                header_text(&properties, X_ERROR)
            },
            dead_lettered_at: header_text(&properties, X_DEAD_LETTERED_AT),
            properties,
            body: body.to_vec(),
        }
    }

    /// Whether `selection` picks this letter.
    pub fn is(&self, selection: &Selection) -> bool {
        match selection {
            Selection::All => true,
            Selection::Id(id) => self.id == *id,
            Selection::Position(position) => self.position == *position,
        }
    }

    /// The letter as one JSON object (the lines of `dlq purge --export`): its id, message id,
    /// routing key, `x-error`, headers, properties, and body, as text when it is UTF-8 and in
    /// base64 otherwise (`body_encoding` says which).
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        let (body, encoding) = match std::str::from_utf8(&self.body) {
            Ok(text) => (text.to_owned(), "utf-8"),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&self.body),
                "base64",
            ),
        };
        serde_json::json!({
            "id": self.id,
            "message_id": self.message_id,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "claimed_exchange": self.claimed_exchange,
            "claimed_routing_key": self.claimed_routing_key,
            "error": self.error,
            "headers": self.properties.headers().as_ref().map(table_json).unwrap_or_default(),
            "properties": properties_json(&self.properties),
            "body": body,
            "body_encoding": encoding,
        })
    }
}

/// `sha256:` and 12 hex digits of a hash of `body` and the headers (in their sorted order).
fn generated_id(properties: &BasicProperties, body: &[u8]) -> String {
    use sha2::Digest as _;
    let headers = properties
        .headers()
        .as_ref()
        .map(table_json)
        .unwrap_or_default();
    let mut hash = sha2::Sha256::new();
    hash.update(headers.to_string().as_bytes());
    hash.update([0]);
    hash.update(body);
    let digest = hash.finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Operator access to one service's dead-letter queue.
#[derive(Debug)]
pub struct DeadLetterQueue {
    channel: lapin::Channel,
    /// The prefixed name of the dead-letter queue.
    pub queue: String,
    /// The prefixed name of the service's dead-letter exchange, through which a read puts back
    /// its copies.
    pub exchange: String,
    /// The prefixed name of the service's own queue, where redriven messages go.
    pub home: String,
    /// The service's redelivery exchange, through which they go.
    pub redeliver: String,
    names: crate::Names,
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// The letter(s) with this id ([`DeadLetter::id`]: the runtime's, or a hash; never a message
    /// id).
    Id(String),
    /// The letter at this position (1 for the oldest) in the queue as it is read.
    Position(usize),
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
        Ok(DeadLetterQueue {
            channel,
            queue: names.of(&service.dead_letter_queue()),
            exchange: names.of(&service.dead_letter_exchange()),
            home: names.of(service.name),
            redeliver: names.of(&service.redeliver_exchange()),
            names: names.clone(),
        })
    }

    /// Reads every dead letter, oldest first, and keeps each: see the module's documentation.
    pub async fn list(self) -> crate::Result<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for position in 1..=self.count().await? as usize {
            let Some(delivery) = self.take().await? else {
                break;
            };
            letters.push(DeadLetter::read(position, &delivery, &self));
            self.keep(&delivery).await?;
        }
        self.close("listed").await?;
        Ok(letters)
    }

    /// How many dead letters are ready now.
    pub async fn count(&self) -> crate::Result<u32> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        Ok(self
            .channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await?
            .message_count())
    }

    /// The next dead letter, unacked.
    async fn take(&self) -> crate::Result<Option<Delivery>> {
        let options = BasicGetOptions { no_ack: false };
        Ok(self
            .channel
            .basic_get(self.queue.as_str().into(), options)
            .await?
            .map(|message| message.delivery))
    }

    /// Puts a confirmed copy of `delivery` at the back of the queue, then acks the original.
    async fn keep(&self, delivery: &Delivery) -> crate::Result<()> {
        Publisher::from_channel(self.channel.clone())
            .publish(Outgoing {
                exchange: self.exchange.clone(),
                routing_key: delivery.routing_key.as_str().to_owned(),
                body: delivery.data.clone(),
                properties: for_keeping(&delivery.properties),
            })
            .await?;
        ack(delivery, false).await
    }

    async fn close(&self, reason: &str) -> crate::Result<()> {
        Ok(self.channel.close(200, reason.into()).await?)
    }

    /// Sends the selected dead letters back to the service's own queue, with their original
    /// body and message id (so the service's inbox still de-duplicates them), without the
    /// dead-letter headers and without any `expiration`. Each is removed from the DLQ only after
    /// the broker confirmed its copy; the others are kept as a read keeps them. Returns the
    /// letters redriven.
    pub async fn redrive(self, selection: &Selection) -> crate::Result<Vec<DeadLetter>> {
        let mut redriven = Vec::new();
        // At most the messages there now: one redriven and dead-lettered again at once must not
        // be picked up a second time in the same run.
        for position in 1..=self.count().await? as usize {
            let Some(delivery) = self.take().await? else {
                break;
            };
            let letter = DeadLetter::read(position, &delivery, &self);
            if !letter.is(selection) {
                self.keep(&delivery).await?;
                continue;
            }
            Publisher::from_channel(self.channel.clone())
                .publish(Outgoing {
                    exchange: self.redeliver.clone(),
                    routing_key: self.home.clone(),
                    body: delivery.data.clone(),
                    properties: redriven_properties(&delivery.properties, &letter),
                })
                .await?;
            ack(&delivery, false).await?;
            redriven.push(letter);
        }
        self.close("redriven").await?;
        Ok(redriven)
    }

    /// Deletes every dead letter (`queue.purge`). Returns how many there were.
    pub async fn purge(self) -> crate::Result<u32> {
        let purged = self
            .channel
            .queue_purge(
                self.queue.as_str().into(),
                lapin::options::QueuePurgeOptions::default(),
            )
            .await?;
        self.close("purged").await?;
        Ok(purged)
    }

    /// Deletes the dead letters there now, but only once `export` has written them somewhere safe
    /// (and returned `Ok`): they are taken, handed to `export`, then acked. A letter that arrives
    /// meanwhile is not taken, so it is neither exported nor deleted (`queue.purge` would delete
    /// it unseen). If `export` fails, every letter is kept as a read keeps it, and its error is
    /// returned. Returns the letters deleted.
    pub async fn purge_exported<F>(self, export: F) -> crate::Result<Vec<DeadLetter>>
    where
        F: FnOnce(&[DeadLetter]) -> std::io::Result<()>,
    {
        let mut deliveries = Vec::new();
        let mut letters = Vec::new();
        for position in 1..=self.count().await? as usize {
            let Some(delivery) = self.take().await? else {
                break;
            };
            letters.push(DeadLetter::read(position, &delivery, &self));
            deliveries.push(delivery);
        }
        if let Err(error) = export(&letters) {
            for delivery in &deliveries {
                self.keep(delivery).await?;
            }
            self.close("export failed").await?;
            return Err(crate::Error::Export(error));
        }
        if let Some(last) = deliveries.last() {
            // Every delivery on this channel up to the last one taken: exactly the exported ones.
            ack(last, true).await?;
        }
        self.close("purged").await?;
        Ok(letters)
    }
}

async fn ack(delivery: &Delivery, multiple: bool) -> crate::Result<()> {
    if delivery.acker.ack(BasicAckOptions { multiple }).await? {
        Ok(())
    } else {
        Err(crate::Error::ChannelGone)
    }
}

/// The properties a redriven dead letter goes back with: those it was kept with, minus the
/// dead-letter headers (so it looks as it did when first published), plus the `x-original-*`
/// headers that let its provenance be checked when it comes back through the redelivery exchange:
/// the ones the runtime wrote on its letter, or, for a letter the broker dead-lettered by itself,
/// the exchange of the event type its routing key names and that key (none if it names no event
/// type: it is then dead-lettered again). A sender's own `x-original-*` on such a letter travel
/// as claims.
fn redriven_properties(delivered: &BasicProperties, letter: &DeadLetter) -> BasicProperties {
    let kept = for_keeping(delivered);
    let mut headers = FieldTable::default();
    for (name, value) in kept.headers().clone().unwrap_or_default().inner() {
        if ![
            X_ERROR,
            X_DEAD_LETTERED_AT,
            X_DEAD_LETTER_ID,
            X_RETRY_COUNT,
            X_LAST_ERROR,
            X_ORIGINAL_EXCHANGE,
            X_ORIGINAL_ROUTING_KEY,
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
        ]
        .contains(&name.as_str())
        {
            headers.insert(name.clone(), value.clone());
        }
    }
    if letter.by_the_broker {
        for (theirs, kept_as) in [
            (X_ORIGINAL_EXCHANGE, X_CLAIMED_ORIGINAL_EXCHANGE),
            (X_ORIGINAL_ROUTING_KEY, X_CLAIMED_ORIGINAL_ROUTING_KEY),
        ] {
            if let Some(value) = kept.headers().as_ref().and_then(|h| h.inner().get(theirs))
                && !headers.contains_key(kept_as)
            {
                headers.insert(kept_as.into(), value.clone());
            }
        }
    }
    if let (Some(exchange), Some(routing_key)) = (&letter.exchange, &letter.routing_key) {
        headers.insert(X_ORIGINAL_EXCHANGE.into(), text(exchange.as_str()));
        headers.insert(X_ORIGINAL_ROUTING_KEY.into(), text(routing_key.as_str()));
    }
    kept.with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(body: &[u8], headers: FieldTable, message_id: Option<&str>) -> DeadLetter {
        let mut properties = BasicProperties::default().with_headers(headers);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        DeadLetter::from_parts(
            1,
            &properties,
            "order.placed",
            body,
            "p.billing",
            &crate::Names::new("p."),
        )
    }

    /// A header table of text values.
    fn texts(entries: &[(&str, &str)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert((*name).into(), text(*value));
        }
        table
    }

    /// `headers` with an `x-death` header whose one entry is `death`.
    fn with_death(mut headers: FieldTable, death: FieldTable) -> FieldTable {
        use lapin::types::AMQPValue;
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        headers
    }

    #[test]
    fn a_letter_is_known_by_the_id_the_runtime_gave_it_never_by_its_message_id() {
        let headers = texts(&[
            (X_ERROR, "provenance"),
            (X_DEAD_LETTER_ID, "dl-00000000000000a1"),
        ]);
        let ours = letter(b"{}", headers, Some("m-1"));
        assert_eq!(ours.id, "dl-00000000000000a1");
        assert_eq!(ours.message_id.as_deref(), Some("m-1"));
        assert!(
            !ours.is(&Selection::Id("m-1".into())),
            "the sender's id selects nothing"
        );
        let by_the_broker = letter(b"{}", FieldTable::default(), Some("m-1"));
        assert!(
            by_the_broker.id.starts_with("sha256:"),
            "{}",
            by_the_broker.id
        );
    }

    #[test]
    fn a_letter_shows_where_it_was_delivered_and_what_its_sender_claimed_apart() {
        let headers = texts(&[
            (X_ORIGINAL_EXCHANGE, "p.shipping.events"),
            (X_ORIGINAL_ROUTING_KEY, "shipment.failed"),
            (X_CLAIMED_ORIGINAL_EXCHANGE, "p.orders.events"),
            (X_CLAIMED_ORIGINAL_ROUTING_KEY, "order.placed"),
        ]);
        let forged = letter(b"{}", headers, Some("m-1"));
        assert_eq!(forged.exchange.as_deref(), Some("p.shipping.events"));
        assert_eq!(forged.routing_key.as_deref(), Some("shipment.failed"));
        assert_eq!(forged.claimed_exchange.as_deref(), Some("p.orders.events"));
        assert_eq!(forged.claimed_routing_key.as_deref(), Some("order.placed"));
        let json = forged.to_json();
        assert_eq!(json["routing_key"], "shipment.failed");
        assert_eq!(json["claimed_routing_key"], "order.placed");
    }

    #[test]
    fn a_letter_without_an_id_of_the_runtimes_gets_one_from_its_body_and_headers() {
        let mut headers = FieldTable::default();
        headers.insert(X_ERROR.into(), text("undecodable"));
        let mut other_headers = headers.clone();
        other_headers.insert(X_DEAD_LETTERED_AT.into(), text("2026-12-02T04:00:00Z"));

        let garbage = letter(b"garbage", headers.clone(), None);
        let again = letter(b"garbage", headers.clone(), None);
        let other_body = letter(b"more garbage", headers, None);
        let other_headers = letter(b"garbage", other_headers, None);
        let identified = letter(b"garbage", FieldTable::default(), Some("m-1"));

        assert!(garbage.id.starts_with("sha256:"), "{}", garbage.id);
        assert_eq!(garbage.id.len(), "sha256:".len() + 12);
        assert_eq!(garbage.id, again.id, "stable");
        assert_ne!(garbage.id, other_body.id);
        assert_ne!(garbage.id, other_headers.id);
        assert!(identified.id.starts_with("sha256:"), "not its message id");
    }

    #[test]
    fn a_letter_is_selected_by_id_or_by_position() {
        let garbage = letter(b"garbage", FieldTable::default(), None);

        assert!(garbage.is(&Selection::All));
        assert!(garbage.is(&Selection::Position(1)));
        assert!(!garbage.is(&Selection::Position(2)));
        assert!(garbage.is(&Selection::Id(garbage.id.clone())));
        assert!(!garbage.is(&Selection::Id("sha256:000000000000".into())));
    }

    #[test]
    fn an_exported_letter_has_its_body_as_text_or_in_base64() {
        let mut headers = FieldTable::default();
        headers.insert(X_ERROR.into(), text("undecodable"));

        let text_letter = letter(b"{\"a\":1}", headers.clone(), Some("m-1")).to_json();
        let binary = letter(&[0xff, 0xfe], headers, None).to_json();

        assert_eq!(text_letter["message_id"], "m-1");
        assert_eq!(text_letter["body"], "{\"a\":1}");
        assert_eq!(text_letter["body_encoding"], "utf-8");
        assert_eq!(text_letter["headers"]["x-error"], "undecodable");
        assert_eq!(text_letter["properties"]["message_id"], "m-1");
        assert_eq!(binary["body"], "//4=");
        assert_eq!(binary["body_encoding"], "base64");
        assert!(
            binary["id"]
                .as_str()
                .unwrap_or_default()
                .starts_with("sha256:")
        );
    }

    #[test]
    fn a_redriven_letter_loses_the_dead_letter_headers_and_its_expiration() {
        let mut headers = FieldTable::default();
        headers.insert(X_ERROR.into(), text("retries exhausted"));
        headers.insert(X_RETRY_COUNT.into(), text("2"));
        headers.insert(X_DEAD_LETTER_ID.into(), text("dl-00000000000000a1"));
        headers.insert(X_ORIGINAL_EXCHANGE.into(), text("orders.events"));
        headers.insert("traceparent".into(), text("00-abc-def-01"));
        let delivered = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_expiration("1000".into())
            .with_headers(headers);

        let letter = DeadLetter::from_parts(
            1,
            &delivered,
            "order.placed",
            b"{}",
            "p.billing",
            &crate::Names::new("p."),
        );
        let redriven = redriven_properties(&delivered, &letter);

        assert_eq!(redriven.expiration(), &None);
        assert_eq!(header_text(&redriven, X_ERROR), None);
        assert_eq!(header_text(&redriven, X_RETRY_COUNT), None);
        assert_eq!(
            header_text(&redriven, X_DEAD_LETTER_ID),
            None,
            "dead-lettered again, it gets a new one"
        );
        assert_eq!(
            header_text(&redriven, X_ORIGINAL_EXCHANGE).as_deref(),
            Some("orders.events")
        );
        assert_eq!(
            header_text(&redriven, "traceparent").as_deref(),
            Some("00-abc-def-01")
        );
        assert_eq!(redriven.message_id(), delivered.message_id());
    }

    /// A letter the broker dead-lettered by itself out of the service's queue (a sender can make
    /// that happen with a per-message TTL) carries every header as its sender wrote it: the
    /// runtime's names on it are claims, its id is a hash, its origin is the routing key the
    /// broker used, and a redrive sends it back checked against that.
    #[test]
    fn a_letter_the_broker_made_believes_none_of_its_headers() {
        let headers = with_death(
            texts(&[
                (X_ORIGINAL_EXCHANGE, "p.shipping.events"),
                (X_ORIGINAL_ROUTING_KEY, "shipment.failed"),
                (X_DEAD_LETTER_ID, "dl-00000000000000a1"),
            ]),
            texts(&[
                ("queue", "p.billing"),
                ("reason", "expired"),
                ("exchange", "p.shipping.events"),
            ]),
        );
        let delivered = BasicProperties::default().with_headers(headers);
        let names = crate::Names::new("p.");

        let letter =
            DeadLetter::from_parts(1, &delivered, "order.placed", b"{}", "p.billing", &names);

        assert!(letter.by_the_broker);
        assert!(
            letter.id.starts_with("sha256:"),
            "not the sender's: {}",
            letter.id
        );
        assert_eq!(letter.routing_key.as_deref(), Some("order.placed"));
        assert_eq!(letter.exchange.as_deref(), Some("p.orders.events"));
        assert_eq!(
            letter.claimed_exchange.as_deref(),
            Some("p.shipping.events")
        );
        assert_eq!(
            letter.claimed_routing_key.as_deref(),
            Some("shipment.failed")
        );
        let redriven = redriven_properties(&delivered, &letter);
        assert_eq!(
            header_text(&redriven, X_ORIGINAL_ROUTING_KEY).as_deref(),
            Some("order.placed")
        );
        assert_eq!(
            header_text(&redriven, X_ORIGINAL_EXCHANGE).as_deref(),
            Some("p.orders.events")
        );
        assert_eq!(
            header_text(&redriven, X_CLAIMED_ORIGINAL_ROUTING_KEY).as_deref(),
            Some("shipment.failed")
        );

        // Dead-lettered by the broker out of another queue (a delay queue's TTL, before the
        // runtime dead-lettered it with its reason): the runtime's letter, believed.
        let other = with_death(
            texts(&[
                (X_ORIGINAL_ROUTING_KEY, "shipment.failed"),
                (X_DEAD_LETTER_ID, "dl-00000000000000a1"),
            ]),
            texts(&[("queue", "p.billing.delay.1000ms")]),
        );
        let ours = DeadLetter::from_parts(
            1,
            &BasicProperties::default().with_headers(other),
            "shipment.failed",
            b"{}",
            "p.billing",
            &names,
        );
        assert!(!ours.by_the_broker);
        assert_eq!(ours.id, "dl-00000000000000a1");
    }
}
