//! Settings in layers: built-in defaults, then an optional TOML file named by `CHOREO_CONFIG_FILE`,
//! then environment variables `CHOREO_<KEY>` (for example `CHOREO_AMQP_URL`). Every key is listed
//! with its default in the README's settings table.
//!
//! One [`config::Config`] is built per service; [`CommonSettings`] and each service's own rules
//! are deserialized from it separately, so a service adds keys without touching this file.

use choreo_messaging::{BrokerSettings, Secret};
use config::{Config, Environment, File};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Builds the layered configuration of `service`, with its own `defaults` on top of the common
/// ones (its HTTP port, its business rules).
pub fn layered(defaults: &[(&str, &str)]) -> crate::Result<Config> {
    let mut builder = Config::builder();
    for (key, value) in COMMON_DEFAULTS.iter().chain(defaults) {
        builder = builder.set_default(*key, *value)?;
    }
    if let Ok(path) = std::env::var("CHOREO_CONFIG_FILE") {
        builder = builder.add_source(File::with_name(&path).required(true));
    }
    let config = builder
        .add_source(Environment::with_prefix("CHOREO").prefix_separator("_"))
        .build()?;
    Ok(config)
}

/// Deserializes one part of the settings.
pub fn part<T: DeserializeOwned>(config: &Config) -> crate::Result<T> {
    Ok(config.clone().try_deserialize()?)
}

const COMMON_DEFAULTS: &[(&str, &str)] = &[
    ("amqp_url", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ("data_dir", "./data"),
    ("database_url", ""),
    ("db_max_connections", "8"),
    ("prefetch", "64"),
    ("prefix", ""),
    ("heartbeat_secs", "10"),
    ("retry_delays_ms", "1000,5000,30000"),
    ("reconnect_min_ms", "200"),
    ("reconnect_max_ms", "10000"),
    ("shutdown_timeout_secs", "10"),
    ("outbox_batch", "256"),
    ("outbox_sweep_ms", "1000"),
    ("log_format", "pretty"),
    ("failpoints", ""),
    ("consumer_batch", "32"),
    ("worker_threads", "1"),
];

/// The settings every service has.
#[derive(Clone, Deserialize)]
pub struct CommonSettings {
    /// Broker URL; holds the password, so it is redacted in `Debug`.
    pub amqp_url: Secret,
    /// Where the HTTP server listens; port 0 picks a free one.
    pub http_addr: String,
    /// Directory of the SQLite file `<service>.db`, used when `database_url` is empty.
    pub data_dir: String,
    /// `sqlite://...` or `postgres://...`; empty means SQLite in `data_dir`.
    pub database_url: Secret,
    /// Pool size on PostgreSQL (SQLite always uses one connection: one writer).
    #[serde(deserialize_with = "from_text")]
    pub db_max_connections: u32,
    #[serde(deserialize_with = "from_text")]
    pub prefetch: u16,
    /// Prepended to every exchange and queue name (tests isolate themselves with it).
    pub prefix: String,
    #[serde(deserialize_with = "from_text")]
    pub heartbeat_secs: u64,
    /// Comma-separated delays of the retries of a transient failure.
    pub retry_delays_ms: String,
    #[serde(deserialize_with = "from_text")]
    pub reconnect_min_ms: u64,
    #[serde(deserialize_with = "from_text")]
    pub reconnect_max_ms: u64,
    #[serde(deserialize_with = "from_text")]
    pub shutdown_timeout_secs: u64,
    #[serde(deserialize_with = "from_text")]
    pub outbox_batch: i64,
    #[serde(deserialize_with = "from_text")]
    pub outbox_sweep_ms: u64,
    /// `pretty` (human) or `json`.
    pub log_format: String,
    /// Fault testing only: see `choreo_messaging::failpoint`.
    pub failpoints: String,
    /// The most received deliveries handled in one transaction.
    #[serde(deserialize_with = "from_text")]
    pub consumer_batch: usize,
    /// Tokio worker threads; 0 runs everything async on the main thread (a current-thread
    /// runtime). The database has threads of its own either way.
    #[serde(deserialize_with = "from_text")]
    pub worker_threads: usize,
}

impl std::fmt::Debug for CommonSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonSettings")
            .field("amqp_url", &self.amqp_url)
            .field("http_addr", &self.http_addr)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url)
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("worker_threads", &self.worker_threads)
            .finish_non_exhaustive()
    }
}

impl CommonSettings {
    /// The database URL of `service`: `database_url`, else a SQLite file in `data_dir`.
    pub fn database_url_for(&self, service: &str) -> String {
        if self.database_url.expose().trim().is_empty() {
            format!(
                "sqlite://{}/{service}.db",
                self.data_dir.trim_end_matches('/')
            )
        } else {
            self.database_url.expose().to_owned()
        }
    }

    /// The broker half of the settings.
    pub fn broker(&self) -> crate::Result<BrokerSettings> {
        Ok(BrokerSettings {
            url: self.amqp_url.clone(),
            prefix: self.prefix.clone(),
            prefetch: self.prefetch,
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            retry_delays: parse_list(&self.retry_delays_ms)
                .map_err(|e| config::ConfigError::Message(format!("retry_delays_ms: {e}")))?
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            outbox_batch: self.outbox_batch,
            outbox_sweep: Duration::from_millis(self.outbox_sweep_ms),
            failpoints: choreo_messaging::failpoint::Failpoints::parse(&self.failpoints)
                .map_err(config::ConfigError::Message)?,
            consumer_batch: self.consumer_batch,
        })
    }
}

/// Parses a comma-separated list; empty text is an empty list.
pub fn parse_list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, T::Err> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Reads a number from a setting, which arrives as text from the environment and from defaults.
pub fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Number(i64),
    }
    let text = match TextOrNumber::deserialize(deserializer)? {
        TextOrNumber::Text(text) => text,
        TextOrNumber::Number(n) => n.to_string(),
    };
    text.trim().parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_spaces_and_empties() {
        assert_eq!(
            parse_list::<u64>("100, 200,,300").expect("parses"),
            vec![100, 200, 300]
        );
        assert!(parse_list::<u64>("").expect("parses").is_empty());
        assert!(parse_list::<u64>("1,x").is_err());
    }

    #[test]
    fn defaults_give_a_sqlite_file_per_service() {
        let config = layered(&[("http_addr", "0.0.0.0:8080")]).expect("builds");
        let common: CommonSettings = part(&config).expect("deserializes");
        assert_eq!(
            common.database_url_for("orders"),
            "sqlite://./data/orders.db"
        );
        assert_eq!(common.broker().expect("valid").retry_delays.len(), 3);
        assert!(!format!("{common:?}").contains("guest:guest"));
    }
}
