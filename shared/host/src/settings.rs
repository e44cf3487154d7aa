//! Settings in layers: built-in defaults, then an optional TOML file named by `CHOREO_CONFIG_FILE`,
//! then environment variables `CHOREO_<KEY>` (for example `CHOREO_AMQP_URL`). Every key is listed
//! with its default in docs/configuration.md.
//!
//! One [`config::Config`] is built per service; [`CommonSettings`] and each service's own rules
//! are deserialized from it separately, so a service adds keys without touching this file.
//!
//! The `config` crate parses the variables (`try_parsing`: numbers; `list_separator`: the list
//! keys). Each default is a [`Setting`], which also says how its variable is read, because
//! `try_parsing` alone would read too much: `CHOREO_PREFIX=007` as the number 7,
//! `CHOREO_PREFETCH=1.5` as 2 (config rounds floats into integers) or `CHOREO_PREFETCH=yes` as
//! 1, and `CHOREO_RETRY_DELAYS_MS=1000` (one delay) as a number instead of a list. [`Variables`]
//! keeps text as written, refuses a number that is not a whole one, and makes a one-element
//! list of a lone value; any value that does not deserialize is reported with its variable.

use choreo_messaging::topology::DeclareScope;
use choreo_messaging::{BrokerSettings, Nodes, Secret, Tls, TlsFiles};
use config::{Config, ConfigError, Environment, File, Map, Source, Value, ValueKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::time::Duration;

/// A setting's default, which also says how its `CHOREO_*` variable is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Text, kept exactly as written (`CHOREO_PREFIX=007` stays `007`).
    Text(&'static str),
    /// A whole number; anything else stops the service.
    Number(i64),
    /// Whole numbers separated by commas (`CHOREO_RETRY_DELAYS_MS=100,300`); empty: none.
    Numbers(&'static [i64]),
    /// Words separated by commas (`CHOREO_COUNTRIES=DE,FR`); empty: none.
    Words(&'static [&'static str]),
}

impl Setting {
    fn value(self) -> Value {
        let kind = match self {
            Setting::Text(text) => ValueKind::from(text),
            Setting::Number(number) => ValueKind::from(number),
            Setting::Numbers(numbers) => ValueKind::from(numbers.to_vec()),
            Setting::Words(words) => ValueKind::from(words.to_vec()),
        };
        Value::new(None, kind)
    }

    fn is_list(self) -> bool {
        matches!(self, Setting::Numbers(_) | Setting::Words(_))
    }
}

/// The `CHOREO_*` variables a process was started with. A value that is not Unicode stops the
/// service, naming its variable.
pub fn environment() -> crate::Result<HashMap<String, String>> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with("CHOREO_").then_some((name, value))
        })
        .map(|(name, value)| match value.into_string() {
            Ok(value) => Ok((name, value)),
            Err(_) => Err(crate::Error::Usage(format!(
                "{name} is not valid UTF-8 text"
            ))),
        })
        .collect()
}

/// Builds the layered configuration of `service`, with its own `defaults` on top of the common
/// ones (its HTTP port, its business rules), from the process's environment.
pub fn layered(defaults: &[(&str, Setting)]) -> crate::Result<Config> {
    layered_from(defaults, &environment()?)
}

/// Builds the layered configuration from `variables` instead of the process's environment
/// (`CHOREO_CONFIG_FILE` among them names the settings file): what tests feed a fake
/// environment through.
pub fn layered_from(
    defaults: &[(&str, Setting)],
    variables: &HashMap<String, String>,
) -> crate::Result<Config> {
    refuse_unknown_variables(variables, defaults)?;
    let mut builder = with_defaults(defaults)?;
    if let Some(path) = variables.get("CHOREO_CONFIG_FILE") {
        // Read once: its keys are checked, then it is a layer.
        let file = Config::builder()
            .add_source(File::with_name(path).required(true))
            .build()?;
        refuse_unknown_keys(path, &file, defaults)?;
        builder = builder.add_source(file);
    }
    let settings: Vec<(String, Setting)> = COMMON_DEFAULTS
        .iter()
        .chain(defaults)
        .map(|(key, setting)| ((*key).to_owned(), *setting))
        .collect();
    let config = builder
        .add_source(Variables {
            variables: variables.clone(),
            settings,
        })
        .build()?;
    Ok(config)
}

/// The keys of the suite's processes beyond the common ones. A process reads its own and
/// accepts the others' without reading them, because one environment often serves them all
/// (`make up` passes every `CHOREO_*` variable to every process; Compose shares a block); any
/// other key is refused. The end-to-end crate's `settings` tests keep this list equal to the
/// services' own `SETTINGS`.
pub const SERVICE_KEYS: &[&str] = &[
    "http_addr",
    "max_unfinished_orders",
    "max_charge_cents",
    "countries",
    "carrier",
    "observer_step_deadline_ms",
    "observer_sweep_ms",
];

/// `CHOREO_*` variables that are not settings: the settings file's name, the service an image
/// runs (deploy/Dockerfile), and the variables of the project's scripts (`make cluster`,
/// `make tls-test`, the images), which a shell that ran them may still export.
pub const NOT_SETTINGS: &[&str] = &[
    "CHOREO_CONFIG_FILE",
    "CHOREO_SERVICE",
    "CHOREO_CLUSTER_DIR",
    "CHOREO_IMAGE_PREFIX",
    "CHOREO_IMAGE_TAG",
    "CHOREO_TLS_DIR",
    "CHOREO_TLS_DIST_PORT",
    "CHOREO_TLS_PORT",
    "CHOREO_TOOLS_DIR",
];

/// Every settings key a process of the suite knows, `defaults`' included.
fn known_keys<'a>(defaults: &'a [(&'a str, Setting)]) -> Vec<&'a str> {
    COMMON_DEFAULTS
        .iter()
        .chain(defaults)
        .map(|(key, _)| *key)
        .chain(SERVICE_KEYS.iter().copied())
        .collect()
}

/// Refuses a `CHOREO_*` variable that is no setting of the suite (a typo such as
/// `CHOREO_PREFECTH` would otherwise leave the default in force, silently), naming the closest
/// setting when one is near.
fn refuse_unknown_variables(
    variables: &HashMap<String, String>,
    defaults: &[(&str, Setting)],
) -> crate::Result<()> {
    let keys = variables
        .keys()
        .filter(|name| !NOT_SETTINGS.contains(&name.as_str()))
        .filter_map(|name| name.strip_prefix("CHOREO_"))
        .map(str::to_ascii_lowercase);
    match unknown(keys, defaults, "", variable) {
        None => Ok(()),
        Some(list) => Err(crate::Error::Usage(format!(
            "{list}; every setting is in docs/configuration.md"
        ))),
    }
}

/// Refuses a key of the settings file that is no setting of the suite.
fn refuse_unknown_keys(
    path: &str,
    file: &Config,
    defaults: &[(&str, Setting)],
) -> crate::Result<()> {
    let keys = file.collect()?.into_keys();
    let place = format!(" in the settings file {path} (CHOREO_CONFIG_FILE)");
    match unknown(keys, defaults, &place, |key| format!("`{key}`")) {
        None => Ok(()),
        Some(list) => Err(crate::Error::Usage(list)),
    }
}

/// `unknown setting(s)<place>: <each key no process knows, with the known one it was near>`,
/// each written by `shown`; `None` when every key is known.
fn unknown(
    keys: impl Iterator<Item = String>,
    defaults: &[(&str, Setting)],
    place: &str,
    shown: impl Fn(&str) -> String,
) -> Option<String> {
    let known = known_keys(defaults);
    let mut unknown: Vec<String> = keys
        .filter(|key| !known.contains(&key.as_str()))
        .map(|key| match closest(&key, &known) {
            Some(near) => format!("{} (did you mean {}?)", shown(&key), shown(near)),
            None => shown(&key),
        })
        .collect();
    unknown.sort();
    (!unknown.is_empty()).then(|| {
        format!(
            "unknown setting{}{place}: {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        )
    })
}

/// The known key nearest to `key`, if it is near enough to be a typo of it: at most two
/// single-character edits (a swap of two neighbours counts as one), and fewer than a third of
/// its length.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edits(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2 && *distance * 3 < key.len().max(1))
        .min()
        .map(|(_, candidate)| candidate)
}

/// Edits between `a` and `b`: insertions, deletions, substitutions and swaps of two neighbouring
/// characters (optimal string alignment distance).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The built-in defaults alone, with `defaults` on top: what tests start from, so that a
/// developer's own `CHOREO_*` variables or settings file never leak into them.
pub fn defaults_only(defaults: &[(&str, Setting)]) -> crate::Result<Config> {
    Ok(with_defaults(defaults)?.build()?)
}

fn with_defaults(
    defaults: &[(&str, Setting)],
) -> crate::Result<config::ConfigBuilder<config::builder::DefaultState>> {
    let mut builder = Config::builder();
    for (key, setting) in COMMON_DEFAULTS.iter().chain(defaults) {
        builder = builder.set_default(*key, setting.value())?;
    }
    Ok(builder)
}

/// Deserializes one part of the settings. A value of the wrong type (`CHOREO_PREFETCH=70000`,
/// too large for its 16 bits) is reported with its variable: config's own error names only the
/// key.
pub fn part<T: DeserializeOwned>(config: &Config) -> crate::Result<T> {
    config
        .clone()
        .try_deserialize()
        .map_err(|error| match error {
            ConfigError::Type {
                key: Some(key),
                unexpected,
                expected,
                ..
            } => {
                let setting = key.split(['[', '.']).next().unwrap_or(&key);
                crate::Error::Usage(format!(
                    "{} (`{key}` in the settings file) is {unexpected}: it must be {expected}",
                    variable(setting)
                ))
            }
            other => other.into(),
        })
}

/// The variable of a settings key: `prefetch` is `CHOREO_PREFETCH`.
fn variable(key: &str) -> String {
    format!("CHOREO_{}", key.to_ascii_uppercase())
}

/// The `CHOREO_*` variables as a configuration source: config's `Environment` with
/// `try_parsing` and the list keys, read again where it reads too much (see the module's
/// opening).
#[derive(Debug, Clone)]
struct Variables {
    variables: HashMap<String, String>,
    /// Every key the service knows, with its default.
    settings: Vec<(String, Setting)>,
}

impl Source for Variables {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        let mut environment = Environment::with_prefix("CHOREO")
            .prefix_separator("_")
            .try_parsing(true)
            .list_separator(",");
        for (key, setting) in &self.settings {
            if setting.is_list() {
                environment = environment.with_list_parse_key(key);
            }
        }
        let source: Map<String, String> = self
            .variables
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let mut values = environment.source(Some(source)).collect()?;
        for (name, text) in &self.variables {
            let Some(key) = name.strip_prefix("CHOREO_").map(str::to_ascii_lowercase) else {
                continue;
            };
            let Some((_, setting)) = self.settings.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let Some(value) = values.get_mut(&key) else {
                continue;
            };
            *value = read_again(name, text, *setting, value.clone())?;
        }
        Ok(values)
    }
}

/// One variable's value as `setting` wants it, from what config made of `text`.
fn read_again(
    name: &str,
    text: &str,
    setting: Setting,
    parsed: Value,
) -> Result<Value, ConfigError> {
    let origin = "the environment".to_owned();
    let whole = |text: &str| text.trim().parse::<i64>().ok();
    let not_whole =
        |what: &str| ConfigError::Message(format!("{name} is {text:?}: it must be {what}"));
    Ok(match setting {
        Setting::Text(_) => Value::new(Some(&origin), text),
        Setting::Number(_) => match parsed.kind {
            ValueKind::I64(_) => parsed,
            _ => return Err(not_whole("a whole number")),
        },
        Setting::Numbers(_) | Setting::Words(_) => {
            let elements: Vec<String> = match parsed.kind {
                ValueKind::Array(elements) => elements.into_iter().map(|e| e.to_string()).collect(),
                _ => vec![text.to_owned()],
            };
            let elements = elements.iter().map(|e| e.trim()).filter(|e| !e.is_empty());
            let kinds: Vec<Value> = if matches!(setting, Setting::Numbers(_)) {
                elements
                    .map(|e| {
                        whole(e)
                            .map(|n| Value::new(Some(&origin), n))
                            .ok_or_else(|| not_whole("whole numbers separated by commas"))
                    })
                    .collect::<Result<_, _>>()?
            } else {
                elements.map(|e| Value::new(Some(&origin), e)).collect()
            };
            Value::new(Some(&origin), kinds)
        }
    })
}

/// The settings every process of the suite has, with their defaults.
pub const COMMON_DEFAULTS: &[(&str, Setting)] = &[
    (
        "amqp_url",
        Setting::Text("amqp://guest:guest@127.0.0.1:5672/%2f"),
    ),
    ("amqp_connect_timeout_ms", Setting::Number(5000)),
    ("amqp_tls_ca_file", Setting::Text("")),
    ("amqp_tls_cert_file", Setting::Text("")),
    ("amqp_tls_key_file", Setting::Text("")),
    ("declare_topology", Setting::Text("suite")),
    ("consume_queue", Setting::Text("")),
    ("data_dir", Setting::Text("./data")),
    ("database_url", Setting::Text("")),
    ("db_max_connections", Setting::Number(8)),
    ("prefetch", Setting::Number(64)),
    ("prefix", Setting::Text("")),
    ("heartbeat_secs", Setting::Number(10)),
    ("retry_delays_ms", Setting::Numbers(&[1000, 5000, 30000])),
    ("reconnect_min_ms", Setting::Number(200)),
    ("reconnect_max_ms", Setting::Number(10000)),
    ("shutdown_timeout_secs", Setting::Number(10)),
    ("outbox_batch", Setting::Number(256)),
    ("outbox_sweep_ms", Setting::Number(1000)),
    ("log_format", Setting::Text("pretty")),
    ("failpoints", Setting::Text("")),
    ("consumer_batch", Setting::Number(32)),
    ("consumer_linger_ms", Setting::Number(0)),
    ("worker_threads", Setting::Number(1)),
    ("http_max_concurrency", Setting::Number(256)),
    ("http_request_timeout_ms", Setting::Number(10000)),
    ("http_header_timeout_ms", Setting::Number(5000)),
    ("http_body_timeout_ms", Setting::Number(5000)),
    ("http_max_connections", Setting::Number(1024)),
    ("api_tokens", Setting::Text("")),
    ("otlp_endpoint", Setting::Text("")),
    ("retention_hours", Setting::Number(168)),
    ("retention_sweep_secs", Setting::Number(60)),
];

/// The settings every service has.
#[derive(Clone, Deserialize)]
pub struct CommonSettings {
    /// Broker URL, or the URLs of a cluster's nodes separated by commas; holds the password, so
    /// it is redacted in `Debug`.
    pub amqp_url: Secret,
    /// How long a broker node may take to accept a connection before the next one is tried.
    pub amqp_connect_timeout_ms: u64,
    /// `amqps://` only: the CA that signs the broker's certificate (empty: the system's bundle),
    /// and the client's certificate and key for a broker that verifies clients (both or neither).
    pub amqp_tls_ca_file: String,
    pub amqp_tls_cert_file: String,
    pub amqp_tls_key_file: String,
    /// `suite` (every exchange, queue and binding of the suite) or `own` (only the service's
    /// own queues: a broker whose topology a deploy step loaded, with one user per service).
    pub declare_topology: String,
    /// The queue this process consumes, prefix applied; empty: its service's own queue. Only for
    /// a topology that partitions a service's events over several queues, one per replica (the
    /// experiment of docs/benchmarks.md, "Replicas"): the contract's topology has one queue.
    pub consume_queue: String,
    /// Where the HTTP server listens; port 0 picks a free one.
    pub http_addr: String,
    /// Directory of the SQLite file `<service>.db`, used when `database_url` is empty.
    pub data_dir: String,
    /// `sqlite://...` or `postgres://...`; empty means SQLite in `data_dir`.
    pub database_url: Secret,
    /// Pool size on PostgreSQL (SQLite always uses one connection: one writer).
    pub db_max_connections: u32,
    pub prefetch: u16,
    /// Prepended to every exchange and queue name (tests isolate themselves with it).
    pub prefix: String,
    pub heartbeat_secs: u64,
    /// Delays of the retries of a transient failure (comma-separated in a variable).
    pub retry_delays_ms: Vec<u64>,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub shutdown_timeout_secs: u64,
    pub outbox_batch: i64,
    pub outbox_sweep_ms: u64,
    /// `pretty` (human) or `json`.
    pub log_format: String,
    /// Fault testing only: see `choreo_messaging::failpoint`.
    pub failpoints: String,
    /// The most received deliveries handled in one transaction.
    pub consumer_batch: usize,
    /// How long a batch waits for more deliveries before it is handled; 0: it takes what has
    /// arrived and goes.
    pub consumer_linger_ms: u64,
    /// Tokio worker threads; 0 runs everything async on the main thread (a current-thread
    /// runtime). The database has threads of its own either way.
    pub worker_threads: usize,
    /// API requests handled at once; more are shed with 503 and `Retry-After`.
    pub http_max_concurrency: usize,
    /// How long an API request may take before it is answered 503.
    pub http_request_timeout_ms: u64,
    /// How long a client may take to send a request head (a kept-alive connection: from its
    /// last answer) before its connection is closed.
    pub http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body, once its head is in; the body is
    /// read in whole (when declared JSON) before the request takes a concurrency slot.
    pub http_body_timeout_ms: u64,
    /// HTTP connections open at once; one more is closed as soon as it is accepted.
    pub http_max_connections: usize,
    /// Bearer tokens the API accepts, comma-separated; empty: no authentication (see
    /// [`crate::auth`]). Redacted in `Debug`.
    pub api_tokens: crate::auth::ApiTokens,
    /// Where traces are exported by OTLP/HTTP (`http://host:4318`); empty: traces off.
    pub otlp_endpoint: String,
    /// How long consumed event ids, sent outbox rows and a service's own such rows (orders'
    /// idempotency keys) are kept: a duplicate within it is recognised by its id.
    pub retention_hours: u64,
    /// The pause between two retention sweeps.
    pub retention_sweep_secs: u64,
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
        if !["pretty", "json"]
            .iter()
            .any(|format| self.log_format.trim().eq_ignore_ascii_case(format))
        {
            return Err(crate::Error::Usage(format!(
                "CHOREO_LOG_FORMAT (`log_format` in the settings file) is {:?}: it must be \
                 `pretty` or `json`",
                self.log_format
            )));
        }
        self.failpoints()?;
        let ranges: [(&str, i128, i128, i128); 17] = [
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
            (
                "consumer_linger_ms",
                self.consumer_linger_ms.into(),
                0,
                10_000,
            ),
            ("worker_threads", self.worker_threads as i128, 0, 256),
            ("retention_hours", self.retention_hours.into(), 1, 87_600),
            (
                "retention_sweep_secs",
                self.retention_sweep_secs.into(),
                1,
                86_400,
            ),
            (
                "retry_delays_ms (count)",
                self.retry_delays_ms.len() as i128,
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
                "http_body_timeout_ms",
                self.http_body_timeout_ms.into(),
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
        for &delay in &self.retry_delays_ms {
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

    /// What is pruned by age, and how often (the runtime's tables; services add their own).
    pub fn retention(&self) -> choreo_messaging::Retention {
        choreo_messaging::Retention::new(
            Duration::from_secs(self.retention_hours.saturating_mul(3600)),
            Duration::from_secs(self.retention_sweep_secs),
        )
    }

    /// The bounds of the HTTP API.
    pub fn http_limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            max_concurrent: self.http_max_concurrency,
            request_timeout: Duration::from_millis(self.http_request_timeout_ms),
            body_timeout: Duration::from_millis(self.http_body_timeout_ms),
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

    /// The fault-test points, from `failpoints`.
    fn failpoints(&self) -> crate::Result<choreo_messaging::failpoint::Failpoints> {
        choreo_messaging::failpoint::Failpoints::parse(&self.failpoints).map_err(|e| {
            crate::Error::Usage(format!(
                "CHOREO_FAILPOINTS (`failpoints` in the settings file): {e}"
            ))
        })
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
            retry_delays: self
                .retry_delays_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            outbox_batch: self.outbox_batch,
            outbox_sweep: Duration::from_millis(self.outbox_sweep_ms),
            failpoints: self.failpoints()?,
            consumer_batch: self.consumer_batch,
            consumer_linger: Duration::from_millis(self.consumer_linger_ms),
            declare: self.declare_scope()?,
            consume_queue: Some(self.consume_queue.trim())
                .filter(|queue| !queue.is_empty())
                .map(str::to_owned),
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

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP_ADDR: &[(&str, Setting)] = &[("http_addr", Setting::Text("0.0.0.0:8080"))];

    fn defaults() -> CommonSettings {
        let config = defaults_only(HTTP_ADDR).expect("builds");
        part(&config).expect("deserializes")
    }

    /// What a service would start with given these variables and no others: the settings, or
    /// the message it would stop with.
    fn load(variables: &[(&str, &str)]) -> Result<CommonSettings, String> {
        let variables: HashMap<String, String> = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        load_map(&variables)
    }

    fn load_map(variables: &HashMap<String, String>) -> Result<CommonSettings, String> {
        let settings: CommonSettings = layered_from(HTTP_ADDR, variables)
            .and_then(|config| part(&config))
            .map_err(|e| e.to_string())?;
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
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
        assert!(refused(|s| s.retry_delays_ms = vec![100, 0]).contains("CHOREO_RETRY_DELAYS_MS"));
        assert!(refused(|s| s.failpoints = "x=explode".into()).contains("CHOREO_FAILPOINTS"));
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
        assert_eq!(settings.http_body_timeout_ms, 5000);
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
    fn an_unknown_variable_stops_the_service_naming_it_and_the_setting_it_was_near() {
        let message = load(&[("CHOREO_PREFECTH", "5")]).expect_err("a typo");
        assert!(
            message.contains("unknown setting: CHOREO_PREFECTH (did you mean CHOREO_PREFETCH?)"),
            "{message}"
        );
        let message = load(&[("CHOREO_LOG_FROMAT", "json"), ("CHOREO_SPEED", "11")])
            .expect_err("two unknowns");
        assert!(
            message.contains(
                "unknown settings: CHOREO_LOG_FROMAT (did you mean CHOREO_LOG_FORMAT?), CHOREO_SPEED;"
            ),
            "{message}"
        );
        // Another service's setting, the settings file's name and a script's variable are fine.
        let fine = load(&[
            ("CHOREO_MAX_CHARGE_CENTS", "5"),
            ("CHOREO_COUNTRIES", "DE"),
            ("CHOREO_IMAGE_TAG", "local"),
        ]);
        assert!(fine.is_ok(), "{fine:?}");
    }

    #[test]
    fn an_unknown_key_of_the_settings_file_stops_the_service_naming_it() {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::io::Write::write_all(&mut file, b"prefetch = 8\nretry_delay_ms = [10]\n")
            .expect("written");
        let path = file.path().display().to_string();
        let message = load(&[("CHOREO_CONFIG_FILE", &path)]).expect_err("a typo in the file");
        assert!(
            message.contains(&format!(
                "unknown setting in the settings file {path} (CHOREO_CONFIG_FILE): \
                 `retry_delay_ms` (did you mean `retry_delays_ms`?)"
            )),
            "{message}"
        );
    }

    #[test]
    fn a_log_format_that_is_neither_pretty_nor_json_stops_the_service() {
        let message = load(&[("CHOREO_LOG_FORMAT", "jsno")]).expect_err("a typo");
        assert!(
            message.contains("CHOREO_LOG_FORMAT (`log_format` in the settings file) is \"jsno\""),
            "{message}"
        );
        assert!(load(&[("CHOREO_LOG_FORMAT", "JSON")]).is_ok());
    }

    #[test]
    fn near_misses_are_named_and_far_ones_are_not() {
        let known = ["prefetch", "prefix", "carrier", "log_format"];
        assert_eq!(closest("prefecth", &known), Some("prefetch"));
        assert_eq!(closest("prefx", &known), Some("prefix"));
        assert_eq!(closest("carier", &known), Some("carrier"));
        assert_eq!(closest("speed", &known), None);
        assert_eq!(closest("x", &known), None);
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
        let common = defaults();
        assert_eq!(
            common.database_url_for("orders"),
            "sqlite://./data/orders.db"
        );
        assert_eq!(common.broker().expect("valid").retry_delays.len(), 3);
        assert!(!format!("{common:?}").contains("guest:guest"));
    }

    #[test]
    fn a_service_consumes_its_own_queue_unless_told_a_partition_of_it() {
        assert_eq!(defaults().broker().expect("valid").consume_queue, None);
        let partition = load(&[("CHOREO_CONSUME_QUEUE", " orders.p2 ")]).expect("valid");
        assert_eq!(
            partition.broker().expect("valid").consume_queue.as_deref(),
            Some("orders.p2")
        );
    }

    #[test]
    fn a_variable_that_is_no_whole_number_stops_the_service_naming_it_and_its_value() {
        for bad in ["abc", "", "1.5", "yes", "true", "1e3", "12 apples"] {
            let message = load(&[("CHOREO_PREFETCH", bad)]).expect_err(bad);

            assert!(message.contains("CHOREO_PREFETCH"), "{message}");
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(message.contains("a whole number"), "{message}");
        }
        assert_eq!(
            load(&[("CHOREO_PREFETCH", "16")]).map(|s| s.prefetch),
            Ok(16)
        );
    }

    #[test]
    fn a_number_out_of_its_range_or_its_type_stops_the_service_naming_it() {
        let zero = load(&[("CHOREO_PREFETCH", "0")]).expect_err("zero");
        let too_large = load(&[("CHOREO_PREFETCH", "70000")]).expect_err("70000");
        let negative = load(&[("CHOREO_HEARTBEAT_SECS", "-5")]).expect_err("-5");

        assert!(
            zero.contains("CHOREO_PREFETCH") && zero.contains("between 1 and 65535"),
            "{zero}"
        );
        assert!(
            too_large.contains("CHOREO_PREFETCH") && too_large.contains("70000"),
            "{too_large}"
        );
        assert!(too_large.contains("16 bit"), "{too_large}");
        assert!(
            negative.contains("CHOREO_HEARTBEAT_SECS") && negative.contains("-5"),
            "{negative}"
        );
    }

    #[test]
    fn a_list_is_read_with_spaces_one_element_or_none() {
        let delays =
            |text: &str| load(&[("CHOREO_RETRY_DELAYS_MS", text)]).map(|s| s.retry_delays_ms);

        assert_eq!(delays("100, 300,,"), Ok(vec![100, 300]));
        assert_eq!(delays("1000"), Ok(vec![1000]));
        assert_eq!(delays(""), Ok(vec![]));
        assert_eq!(delays(" "), Ok(vec![]));
    }

    #[test]
    fn a_bad_list_stops_the_service_naming_it_and_its_value() {
        let word = load(&[("CHOREO_RETRY_DELAYS_MS", "100,soon")]).expect_err("soon");
        let zero = load(&[("CHOREO_RETRY_DELAYS_MS", "100,0")]).expect_err("zero");
        let fraction = load(&[("CHOREO_RETRY_DELAYS_MS", "2.5")]).expect_err("2.5");

        assert!(
            word.contains("CHOREO_RETRY_DELAYS_MS") && word.contains("100,soon"),
            "{word}"
        );
        assert!(
            zero.contains("CHOREO_RETRY_DELAYS_MS") && zero.contains("is 0"),
            "{zero}"
        );
        assert!(
            fraction.contains("CHOREO_RETRY_DELAYS_MS") && fraction.contains("2.5"),
            "{fraction}"
        );
    }

    #[test]
    fn text_settings_keep_their_text_when_it_looks_like_a_number_or_a_boolean() {
        let settings = load(&[
            ("CHOREO_PREFIX", "007"),
            ("CHOREO_DATA_DIR", "1e3"),
            ("CHOREO_CONSUME_QUEUE", "TRUE"),
            ("CHOREO_OTLP_ENDPOINT", "1.50"),
        ])
        .expect("loads");

        assert_eq!(settings.prefix, "007");
        assert_eq!(settings.data_dir, "1e3");
        assert_eq!(settings.consume_queue, "TRUE");
        assert_eq!(settings.otlp_endpoint, "1.50");
    }

    /// The parent of [`in_a_child_with_failpoints_set`]: the variable must really be in the
    /// process's environment, and setting it here would take `unsafe` (`std::env::set_var`).
    #[test]
    fn a_developers_failpoints_in_the_environment_reach_layered_but_never_defaults_only() {
        let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--exact", "settings::tests::in_a_child_with_failpoints_set"])
            .args(["--ignored", "--test-threads=1"])
            .env("CHOREO_FAILPOINTS", "consumer.after_commit")
            .output()
            .expect("runs");

        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[test]
    #[ignore = "run in a child process, with CHOREO_FAILPOINTS set, by the test above"]
    fn in_a_child_with_failpoints_set() {
        let Ok(set) = std::env::var("CHOREO_FAILPOINTS") else {
            return;
        };

        let layered: CommonSettings = part(&layered(HTTP_ADDR).expect("builds")).expect("parts");
        let defaults = defaults();

        assert_eq!(
            layered.failpoints, set,
            "the variable is visible to layered"
        );
        assert_eq!(defaults.failpoints, "", "and never to defaults_only");
    }

    /// Text a person might put in a variable: anything, numbers of any sign and size, lists,
    /// and the words config would read as something else.
    fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "-?[0-9]{1,21}",
            "[0-9, ]{0,24}",
            "(true|TRUE|yes|off|1\\.5|1e3|NaN|inf|-0|\\+7| 8 )",
            "(amqp|amqps|http)://[a-z:@/%.0-9]{0,20}",
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_text_in_any_setting_loads_in_range_or_stops_naming_a_variable_it_was_given(
            given in proptest::collection::vec(
                (0..COMMON_DEFAULTS.len(), any_text()),
                0..6,
            )
        ) {
            let variables: HashMap<String, String> = given
                .iter()
                .map(|(index, text)| (variable(COMMON_DEFAULTS[*index].0), text.clone()))
                .collect();

            let loaded = load_map(&variables);

            match loaded {
                // `load_map` validated them: every number in its range.
                Ok(settings) => {
                    for (name, text) in &variables {
                        let kept = match name.as_str() {
                            "CHOREO_PREFIX" => &settings.prefix,
                            "CHOREO_DATA_DIR" => &settings.data_dir,
                            "CHOREO_LOG_FORMAT" => &settings.log_format,
                            "CHOREO_FAILPOINTS" => &settings.failpoints,
                            _ => continue,
                        };
                        proptest::prop_assert_eq!(kept, text);
                    }
                }
                Err(message) => {
                    // CHOREO_RECONNECT_MAX_MS is bounded below by CHOREO_RECONNECT_MIN_MS.
                    let named = variables.keys().any(|name| message.contains(name.as_str()))
                        || (variables.contains_key("CHOREO_RECONNECT_MIN_MS")
                            && message.contains("CHOREO_RECONNECT_MAX_MS"));
                    proptest::prop_assert!(named, "{message} (given {variables:?})");
                }
            }
        }
    }
}
