//! The end-to-end tests: one binary, the real services against the real broker.
//! Each test gets its own [`choreo_e2e::Suite`] (names prefix, databases, ports), so they run in
//! parallel and leave nothing behind.

mod api_docs;
mod delivery;
mod http_api;
mod restarts;
mod saga;
mod scale;
mod traces;
