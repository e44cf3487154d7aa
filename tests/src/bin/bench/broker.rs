//! The broker alone, as the services use it: connections, and quorum queues declared the way the
//! services declare theirs, for the ceiling and the floor to measure against.

use crate::cleanup::Cleanup;
use anyhow::{Context, Result, bail};
use choreo_e2e::amqp_url;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};

/// About the size of an `order.placed` envelope, the largest event of a saga.
pub const MESSAGE_BYTES: usize = 700;

/// Persistent, as every event of the suite is.
pub fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

pub async fn connect(name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(&amqp_url(), properties)
        .await
        .with_context(|| format!("connect to the broker at {}", redacted(&amqp_url())))
}

/// A channel in publisher-confirm mode.
pub async fn confirming_channel(connection: &Connection) -> Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Waits for the broker's confirm of one publish; a nack is an error, as it is to the relay.
pub async fn confirmed(confirm: PublisherConfirm) -> Result<()> {
    if !confirm.await?.is_ack() {
        bail!("the broker did not ack a publish");
    }
    Ok(())
}

/// Declares a durable quorum queue, listed for the final cleanup first.
pub async fn quorum_queue(channel: &Channel, name: &str, cleanup: &Cleanup) -> Result<()> {
    cleanup.queue(name);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, arguments)
        .await
        .with_context(|| format!("declare quorum queue {name}"))?;
    Ok(())
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
