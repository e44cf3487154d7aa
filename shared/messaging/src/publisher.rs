//! A publisher whose every publish is confirmed by the broker, persistent and mandatory.
//!
//! A publish is a success only when the broker acks it and did not return it: lapin reports a
//! mandatory message that reached no queue as an *ack carrying the returned message*, which here
//! is [`Error::Unroutable`], never a success. With every exchange's alternate exchange in place a
//! return should not happen; if it does, the topology is broken and the caller must keep the
//! message (the outbox row stays unsent).

use crate::{Error, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

/// How long a publish may wait for its confirm. A broker that takes longer (blocked by a resource
/// alarm, or gone without a TCP reset) ends the session, which releases whatever the caller holds
/// (the relay's PostgreSQL row locks) and reconnects; the unconfirmed rows stay unsent.
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// AMQP delivery mode of a message written to disk.
pub const PERSISTENT: u8 = 2;

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// The AMQP properties of an event, as the contract fixes them.
pub fn event_properties(
    event_id: &str,
    event_type: &str,
    source: &str,
    correlation_id: &str,
    time_millis: i64,
    headers: Option<FieldTable>,
) -> BasicProperties {
    let props = BasicProperties::default()
        .with_message_id(event_id.into())
        .with_type(event_type.into())
        .with_app_id(source.into())
        .with_correlation_id(correlation_id.into())
        .with_content_type(choreo_events::envelope::AMQP_CONTENT_TYPE.into())
        .with_timestamp(u64::try_from(time_millis / 1000).unwrap_or_default())
        .with_delivery_mode(PERSISTENT);
    match headers {
        Some(headers) => props.with_headers(headers),
        None => props,
    }
}

/// A channel in confirm mode. Cheap to clone; clones share the channel.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

/// A publish the broker has received but not yet confirmed.
#[derive(Debug)]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    exchange: String,
    routing_key: String,
}

impl PendingConfirm {
    /// Waits for the broker's verdict.
    pub async fn confirmed(self) -> Result<()> {
        let failure = |unroutable: bool| {
            let (exchange, routing_key) = (self.exchange.clone(), self.routing_key.clone());
            if unroutable {
                Error::Unroutable {
                    exchange,
                    routing_key,
                }
            } else {
                Error::Nacked {
                    exchange,
                    routing_key,
                }
            }
        };
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, self.confirm)
            .await
            .map_err(|_| Error::ConfirmTimeout(CONFIRM_TIMEOUT))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(failure(true)),
            Confirmation::Nack(_) => Err(failure(false)),
            Confirmation::NotRequested => Err(Error::NotConfirmed),
        }
    }
}

impl Publisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &Connection) -> Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Wraps a channel the caller already put in confirm mode.
    pub fn from_channel(channel: Channel) -> Self {
        Publisher { channel }
    }

    /// Sends `message` (mandatory) and returns the confirm to wait for. Sending many before waiting
    /// for any is what makes the relay fast: confirms arrive in batches.
    pub async fn send(&self, message: Outgoing) -> Result<PendingConfirm> {
        let confirm = self
            .channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties,
            )
            .await?;
        Ok(PendingConfirm {
            confirm,
            exchange: message.exchange,
            routing_key: message.routing_key,
        })
    }

    /// Sends `message` and waits for its confirm.
    pub async fn publish(&self, message: Outgoing) -> Result<()> {
        self.send(message).await?.confirmed().await
    }

    /// The underlying channel, for declarations.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}
