//! Settings in layers: built-in defaults, then an optional TOML file named by `CHOREO_CONFIG_FILE`,
//! then environment variables `CHOREO_<KEY>` (for example `CHOREO_AMQP_URL`). Every key is listed
//! with its default in the README's settings table.
//!
//! One [`config::Config`] is built per service; [`CommonSettings`] and each service's own rules
//! are deserialized from it separately, so a service adds keys without touching this file.

use choreo_messaging::topology::DeclareScope;
use choreo_messaging::{BrokerSettings, Nodes, Secret, Tls, TlsFiles};
use config::{Config, Environment, File};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Builds the layered configuration of `service`, with its own `defaults` on top of the common
/// ones (its HTTP port, its business rules).
pub fn layered(defaults: &[(&str, &str)]) -> crate::Result<Config> {
    let mut builder = with_defaults(defaults)?;
    if let Ok(path) = std::env::var("CHOREO_CONFIG_FILE") {
        builder = builder.add_source(File::with_name(&path).required(true));
    }
    let config = builder
        .add_source(Environment::with_prefix("CHOREO").prefix_separator("_"))
        .build()?;
    Ok(config)
}

/// The built-in defaults alone, with `defaults` on top: what tests start from, so that a
/// developer's own `CHOREO_*` variables or settings file never leak into them.
pub fn defaults_only(defaults: &[(&str, &str)]) -> crate::Result<Config> {
    Ok(with_defaults(defaults)?.build()?)
}

fn with_defaults(
    defaults: &[(&str, &str)],
) -> crate::Result<config::ConfigBuilder<config::builder::DefaultState>> {
    let mut builder = Config::builder();
    for (key, value) in COMMON_DEFAULTS.iter().chain(defaults) {
        builder = builder.set_default(*key, *value)?;
    }
    Ok(builder)
}

/// Deserializes one part of the settings.
pub fn part<T: DeserializeOwned>(config: &Config) -> crate::Result<T> {
    Ok(config.clone().try_deserialize()?)
}

const COMMON_DEFAULTS: &[(&str, &str)] = &[
    ("amqp_url", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ("amqp_connect_timeout_ms", "5000"),
    ("amqp_tls_ca_file", ""),
    ("amqp_tls_cert_file", ""),
    ("amqp_tls_key_file", ""),
    ("declare_topology", "suite"),
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
    ("http_max_concurrency", "256"),
    ("http_request_timeout_ms", "10000"),
    ("http_header_timeout_ms", "5000"),
    ("http_max_connections", "1024"),
    ("api_tokens", ""),
    ("otlp_endpoint", ""),
];

/// The settings every service has.
#[derive(Clone, Deserialize)]
pub struct CommonSettings {
    /// Broker URL, or the URLs of a cluster's nodes separated by commas; holds the password, so
    /// it is redacted in `Debug`.
    pub amqp_url: Secret,
    /// How long a broker node may take to accept a connection before the next one is tried.
    #[serde(deserialize_with = "from_text")]
    pub amqp_connect_timeout_ms: u64,
    /// `amqps://` only: the CA that signs the broker's certificate (empty: the system's bundle),
    /// and the client's certificate and key for a broker that verifies clients (both or neither).
    pub amqp_tls_ca_file: String,
    pub amqp_tls_cert_file: String,
    pub amqp_tls_key_file: String,
    /// `suite` (every exchange, queue and binding of the suite) or `own` (only the service's
    /// own queues: a broker whose topology a deploy step loaded, with one user per service).
    pub declare_topology: String,
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
    /// API requests handled at once; more are shed with 503 and `Retry-After`.
    #[serde(deserialize_with = "from_text")]
    pub http_max_concurrency: usize,
    /// How long an API request may take before it is answered 503.
    #[serde(deserialize_with = "from_text")]
    pub http_request_timeout_ms: u64,
    /// How long a client may take to send a request head (a kept-alive connection: from its
    /// last answer) before its connection is closed.
    #[serde(deserialize_with = "from_text")]
    pub http_header_timeout_ms: u64,
    /// HTTP connections open at once; one more is closed as soon as it is accepted.
    #[serde(deserialize_with = "from_text")]
    pub http_max_connections: usize,
    /// Bearer tokens the API accepts, comma-separated; empty: no authentication (see
    /// [`crate::auth`]). Redacted in `Debug`.
    pub api_tokens: crate::auth::ApiTokens,
    /// Where traces are exported by OTLP/HTTP (`http://host:4318`); empty: traces off.
    pub otlp_endpoint: String,
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

    /// Refuses a value out of its range, naming the setting, the value and the range: a service
    /// must not start with `CHOREO_OUTBOX_BATCH=0` (a relay that publishes nothing, forever),
    /// `CHOREO_PREFETCH=0` (unlimited, in AMQP) or `CHOREO_RECONNECT_MIN_MS=0` (reconnecting in
    /// a hot loop).
    pub fn validate(&self) -> crate::Result<()> {
        self.broker_nodes()?;
        self.declare_scope()?;
        let count = |list: &str| parse_list::<u64>(list).map_or(0, |l| l.len());
        let ranges: [(&str, i128, i128, i128); 14] = [
            (
                "amqp_connect_timeout_ms",
                self.amqp_connect_timeout_ms.into(),
                100,
                600_000,
            ),
            (
                "http_max_concurrency",
                self.http_max_concurrency as i128,
                1,
                100_000,
            ),
            (
                "http_request_timeout_ms",
                self.http_request_timeout_ms.into(),
                100,
                600_000,
            ),
            (
                "db_max_connections",
                self.db_max_connections.into(),
                1,
                1_000,
            ),
            ("prefetch", self.prefetch.into(), 1, 65_535),
            ("heartbeat_secs", self.heartbeat_secs.into(), 1, 600),
            ("reconnect_min_ms", self.reconnect_min_ms.into(), 1, 60_000),
            (
                "reconnect_max_ms",
                self.reconnect_max_ms.into(),
                self.reconnect_min_ms.max(1).into(),
                3_600_000,
            ),
            (
                "shutdown_timeout_secs",
                self.shutdown_timeout_secs.into(),
                1,
                3_600,
            ),
            ("outbox_batch", self.outbox_batch.into(), 1, 10_000),
            (
                "outbox_sweep_ms",
                self.outbox_sweep_ms.into(),
                10,
                3_600_000,
            ),
            ("consumer_batch", self.consumer_batch as i128, 1, 1_000),
            ("worker_threads", self.worker_threads as i128, 0, 256),
            (
                "retry_delays_ms (count)",
                count(&self.retry_delays_ms) as i128,
                0,
                100,
            ),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(out_of_range(key, &value.to_string(), min, max));
            }
        }
        // The HTTP server's own bounds (crate::server).
        for (key, value, min, max) in [
            (
                "http_header_timeout_ms",
                self.http_header_timeout_ms.into(),
                100,
                600_000,
            ),
            (
                "http_max_connections",
                self.http_max_connections as i128,
                1,
                1_000_000,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(out_of_range(key, &value.to_string(), min, max));
            }
        }
        self.api_tokens.validate()?;
        for delay in parse_list::<u64>(&self.retry_delays_ms).map_err(|e| {
            config::ConfigError::Message(format!(
                "CHOREO_RETRY_DELAYS_MS={:?} is not a list of milliseconds: {e}",
                self.retry_delays_ms
            ))
        })? {
            if !(1..=86_400_000).contains(&delay) {
                return Err(out_of_range(
                    "retry_delays_ms",
                    &delay.to_string(),
                    1,
                    86_400_000,
                ));
            }
        }
        Ok(())
    }

    /// The bounds of the HTTP API.
    pub fn http_limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            max_concurrent: self.http_max_concurrency,
            request_timeout: Duration::from_millis(self.http_request_timeout_ms),
        }
    }

    /// What the HTTP server allows each client connection.
    pub fn connection_bounds(&self) -> crate::server::ConnectionBounds {
        crate::server::ConnectionBounds {
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            max_connections: self.http_max_connections,
        }
    }

    /// The broker's nodes, from `amqp_url`, with the TLS files read when a node is `amqps://`.
    pub fn broker_nodes(&self) -> crate::Result<Nodes> {
        let nodes = Nodes::parse(&self.amqp_url).map_err(|e| {
            crate::Error::Usage(format!(
                "CHOREO_AMQP_URL (`amqp_url` in the settings file): {e}"
            ))
        })?;
        if !nodes.any_tls() {
            return Ok(nodes);
        }
        let tls = Tls::load(&TlsFiles {
            ca_file: self.amqp_tls_ca_file.clone(),
            cert_file: self.amqp_tls_cert_file.clone(),
            key_file: self.amqp_tls_key_file.clone(),
        })
        .map_err(|e| crate::Error::Usage(e.to_string()))?;
        Ok(nodes.with_tls(tls))
    }

    /// What the service declares on the broker, from `declare_topology`.
    pub fn declare_scope(&self) -> crate::Result<DeclareScope> {
        match self.declare_topology.trim() {
            "suite" => Ok(DeclareScope::Suite),
            "own" => Ok(DeclareScope::Own),
            other => Err(crate::Error::Usage(format!(
                "CHOREO_DECLARE_TOPOLOGY (`declare_topology` in the settings file) is {other:?}: \
                 it must be `suite` or `own`"
            ))),
        }
    }

    /// The broker half of the settings.
    pub fn broker(&self) -> crate::Result<BrokerSettings> {
        Ok(BrokerSettings {
            nodes: self.broker_nodes()?,
            connect_timeout: Duration::from_millis(self.amqp_connect_timeout_ms),
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
            declare: self.declare_scope()?,
        })
    }
}

fn out_of_range(key: &str, value: &str, min: i128, max: i128) -> crate::Error {
    let variable = format!(
        "CHOREO_{}",
        key.split(' ').next().unwrap_or(key).to_ascii_uppercase()
    );
    crate::Error::Usage(format!(
        "{variable} (`{key}` in the settings file) is {value}: it must be between {min} and {max}"
    ))
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

    fn defaults() -> CommonSettings {
        let config = layered(&[("http_addr", "0.0.0.0:8080")]).expect("builds");
        part(&config).expect("deserializes")
    }

    #[test]
    fn the_defaults_are_valid_and_a_value_out_of_range_is_named_with_its_range() {
        assert!(defaults().validate().is_ok());
        let refused = |change: fn(&mut CommonSettings)| {
            let mut settings = defaults();
            change(&mut settings);
            settings.validate().expect_err("refused").to_string()
        };

        let message = refused(|s| s.outbox_batch = 0);
        assert!(message.contains("CHOREO_OUTBOX_BATCH"), "{message}");
        assert!(message.contains("is 0"), "{message}");
        assert!(message.contains("between 1 and 10000"), "{message}");
        assert!(refused(|s| s.outbox_batch = -3).contains("is -3"));
        assert!(refused(|s| s.prefetch = 0).contains("CHOREO_PREFETCH"));
        assert!(refused(|s| s.reconnect_min_ms = 0).contains("CHOREO_RECONNECT_MIN_MS"));
        assert!(
            refused(|s| s.reconnect_max_ms = s.reconnect_min_ms - 1)
                .contains("CHOREO_RECONNECT_MAX_MS")
        );
        assert!(refused(|s| s.consumer_batch = 0).contains("CHOREO_CONSUMER_BATCH"));
        assert!(refused(|s| s.retry_delays_ms = "100,0".into()).contains("CHOREO_RETRY_DELAYS_MS"));
        assert!(refused(|s| s.retry_delays_ms = "100,soon".into()).contains("not a list"));
        assert!(refused(|s| s.declare_topology = "mine".into()).contains("`suite` or `own`"));
        let message = refused(|s| {
            s.amqp_url = Secret::new("amqps://u:p@h/%2f");
            s.amqp_tls_ca_file = "/nonexistent/ca.pem".into();
        });
        assert!(
            message.contains("CHOREO_AMQP_TLS_CA_FILE: cannot read /nonexistent/ca.pem"),
            "{message}"
        );
    }

    #[test]
    fn the_http_servers_bounds_and_tokens_are_validated_and_tokens_stay_out_of_debug() {
        let mut settings = defaults();
        assert_eq!(settings.http_header_timeout_ms, 5000);
        assert_eq!(settings.http_max_connections, 1024);
        assert!(settings.api_tokens.is_empty());

        settings.http_header_timeout_ms = 0;
        let timeout = settings.validate().expect_err("refused").to_string();
        settings = defaults();
        settings.http_max_connections = 0;
        let connections = settings.validate().expect_err("refused").to_string();
        settings = defaults();
        settings.api_tokens = crate::auth::ApiTokens::parse("0123456789abcdef-secret");
        let valid = settings.validate();
        let debug = format!("{settings:?} {:?}", settings.api_tokens);

        assert!(
            timeout.contains("CHOREO_HTTP_HEADER_TIMEOUT_MS"),
            "{timeout}"
        );
        assert!(
            connections.contains("CHOREO_HTTP_MAX_CONNECTIONS"),
            "{connections}"
        );
        assert!(valid.is_ok(), "{valid:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }

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
