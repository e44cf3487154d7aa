//! The event contract of the Choreo suite, as data.
//!
//! This crate is what every service agrees on: the CloudEvents 1.0 [`Envelope`], one typed payload
//! per event type ([`payloads`]), the [`Event`] enum that ties a routing key to its payload, and the
//! broker [`topology`] (which exchange each service publishes to, which routing keys each service's
//! queue binds), the saga's declared [`flow`] (which event may follow which, by whom, how soon), and the JSON [`schema`]s of all of it, generated from the types. It is serde (and
//! schemars, and `serde_path_to_error` for errors that name their field) only: no broker, database or HTTP code lives here, so a client written by another
//! team can depend on it without pulling in a runtime.
//!
//! Architecture invariant: nothing in this crate performs I/O.

pub mod envelope;
pub mod event;
pub mod flow;
pub mod payloads;
pub mod provenance;
pub mod schema;
pub mod topology;

pub use envelope::{DecodeError, Envelope, SCHEMA_VERSION, SPEC_VERSION};
pub use event::{Event, EventType};
