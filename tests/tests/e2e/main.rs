//! The end-to-end tests: one binary, the real services against the real broker.
//! Each test gets its own [`choreo_e2e::Suite`] (names prefix, databases, ports), so they run in
//! parallel and leave nothing behind.

mod api_docs;
mod broker_users;
mod delivery;
mod guarantees;
mod harness;
mod http_api;
mod logs;
mod metrics;
mod observer;
mod restarts;
mod retention;
mod saga;
mod scale;
mod secrets;
mod settings;
mod tls;
mod traces;
