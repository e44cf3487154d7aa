//! Hosting for a Choreo service: what `orders`, `billing` and `shipping` share that is neither the
//! event contract nor the messaging runtime.
//!
//! - [`settings`]: sections of settings, each key declared once; defaults, then an optional TOML
//!   file, then `CHOREO_*` environment variables, checked and deserialized into typed structs;
//! - [`telemetry`]: one tracing subscriber, human or JSON;
//! - [`http`]: the JSON error shape of the contract, a body extractor that never answers 500 for
//!   bad input, `/healthz`, `/readyz` and `/openapi.json`;
//! - [`metrics`]: `GET /metrics` in the Prometheus text format, one recorder per service;
//! - [`openapi`]: a service's OpenAPI 3.1 document, assembled from the types of its routes;
//! - [`runtime`]: the Tokio runtime, current-thread or multi-thread by setting;
//! - [`server`]: the HTTP accept loop, with a header-read timeout and a bound on open connections;
//! - [`auth`]: optional bearer-token authentication of the API (`CHOREO_API_TOKENS`);
//! - [`service`]: a service put together by its builder; binds, runs the HTTP server and the
//!   broker supervisor, stops gracefully;
//! - [`traces`]: each service's own OTLP trace exporter, when `CHOREO_OTLP_ENDPOINT` is set.

pub mod auth;
pub mod cli;
pub mod dlq;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod runtime;
pub mod server;
pub mod service;
pub mod settings;
pub mod telemetry;
pub mod traces;

pub use service::Service;
pub use settings::CommonSettings;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a `#[source]`: its text is in the message already, and a caller printing the chain
    /// (anyhow's `Caused by`) would print it twice.
    #[error("settings: {0}")]
    Settings(config::ConfigError),
    #[error(transparent)]
    Database(#[from] choreo_store::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker: {0}")]
    Messaging(#[from] choreo_messaging::Error),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<config::ConfigError> for Error {
    fn from(error: config::ConfigError) -> Self {
        Error::Settings(error)
    }
}
