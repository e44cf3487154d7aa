//! The consumer loop: messages in order, a message's effect committed with its inbox row and its
//! events, and only then acked.
//!
//! Deliveries the broker has already pushed (up to `CHOREO_CONSUMER_BATCH`) are handled together:
//! one unit of work on the database thread, one transaction, the batch inside one savepoint,
//! then one `multiple` ack. For each message: check its provenance, record its id in the inbox
//! (already there: a duplicate, acked without effect), decode its event, run the service's
//! [`Handler`], write the events it returns to the outbox. A message that fails rolls the batch
//! back to the savepoint and the batch runs again without it, so only its own writes are lost
//! and every outcome is exactly what it would be alone:
//! - undecodable, or [`HandlerError::Permanent`]: dead-lettered at once;
//! - [`HandlerError::Transient`]: sent to a delay queue, back later, dead-lettered once the
//!   configured attempts are used up;
//! - [`HandlerError::Unavailable`] (the database is unreachable): nothing is kept, and the whole
//!   batch is held and tried again with backoff, spending none of its retries. A stop meanwhile
//!   leaves the whole batch unacked; the broker hands it back.
//!
//! Dead-letter and retry copies are confirmed by the broker before the batch is acked, so a crash
//! at any point means redelivery, never loss. Nothing is ever requeued in a hot loop.
//!
//! In four parts: the [`Handler`] a service implements (`handler`, which knows nothing of the
//! broker), the delivery loop that takes batches, acks them and holds them through a database
//! outage (`delivery_loop`), the transaction that runs a batch on the database thread
//! (`transaction`), and the retry and dead-letter copies (`copies`).

mod copies;
mod delivery_loop;
mod handler;
#[cfg(test)]
mod tests;
mod transaction;

pub(crate) use delivery_loop::ConsumerLoop;
pub use handler::{Handler, HandlerError};
