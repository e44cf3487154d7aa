//! The RabbitMQ runtime of the Choreo suite.
//!
//! Everything a service needs to take part in the choreography, and nothing about what the
//! service does: a [`Broker`] supervises the connections (reconnecting with capped, jittered
//! backoff), declares the whole suite [`topology`], runs the [`consumer`] loop (inbox
//! de-duplication, one database transaction per message, ack after commit, retries through delay
//! queues, dead-lettering with `x-error`) and the [`outbox`] relay (confirmed publishing of what
//! handlers and HTTP requests committed).
//!
//! Architecture invariant: this crate never names a business type. It sees events as
//! [`choreo_events::Envelope`]s and hands them to a service's [`Handler`].

pub mod broker;
pub mod consumer;
pub mod dead_letter;
pub mod error;
pub mod failpoint;
pub mod inbox;
pub mod names;
pub mod outbox;
pub mod publisher;
pub mod schema;
pub mod secret;
pub mod topology;

pub use broker::{Broker, BrokerHealth, BrokerSettings};
pub use consumer::{Handler, HandlerError};
pub use error::{Error, Result};
pub use names::Names;
pub use outbox::{Outbox, OutboxWaker};
pub use publisher::Publisher;
pub use schema::Backend;
pub use secret::Secret;
