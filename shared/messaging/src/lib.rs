//! The RabbitMQ runtime of the Choreo suite.
//!
//! Everything a service needs to take part in the choreography, and nothing about what the
//! service does: a [`Broker`] supervises the connections (reconnecting with capped, jittered
//! backoff), declares the whole suite [`topology`], runs the [`consumer`] loop (inbox
//! de-duplication, one database transaction per message, ack after commit, retries through delay
//! queues, dead-lettering with `x-error`) and the [`outbox`] relay (confirmed publishing of what
//! handlers and HTTP requests committed).
//!
//! Architecture invariant: this crate never names a business type nor decides anything about
//! one. It decodes the contract's [`choreo_events::Envelope`]s and [`choreo_events::Event`]s,
//! hands them to a service's [`Handler`] and wraps what the handler returns.

mod backoff;
mod broker;
mod consumer;
pub mod dead_letter;
mod error;
mod headers;
mod health;
mod inbox;
pub mod metrics;
mod names;
mod nodes;
mod origin;
mod outbox;
mod outcome;
mod publisher;
pub mod retention;
pub mod schema;
mod secret;
pub mod testing;
mod tls;
pub mod topology;
mod traces;

pub use broker::{Broker, BrokerSettings};
/// The failpoints live in the store (which has one of its own); the runtime's are the same.
pub use choreo_store::failpoint;
pub use consumer::{Handler, HandlerError};
pub use error::{Error, Result};
pub use health::BrokerHealth;
pub use inbox::Inbox;
pub use metrics::RuntimeMetrics;
pub use names::Names;
pub use nodes::Nodes;
pub use outbox::{Backlog, Outbox, OutboxWaker};
pub use outcome::Outcome;
pub use publisher::Publisher;
pub use retention::{Expiring, Retention};
pub use secret::{Secret, redact};
pub use tls::{Tls, TlsFiles};
pub use traces::{Traces, Unit};
