//! The sections every process of the suite has. Each declares its keys once ([`Key`]: name,
//! default, bound, meaning), holds them in a struct that denies unknown fields, and converts
//! them into what the code uses (durations, enums, the broker's settings).

use super::{Key, Section, Shown};
use choreo_messaging::topology::DeclareScope;
use choreo_messaging::{BrokerSettings, Nodes, Secret, Tls, TlsFiles};
use serde::Deserialize;
use std::time::Duration;

/// The common sections, in the order the docs and `settings` show them.
pub const COMMON: &[Section] = &[
    BROKER, CONSUMER, OUTBOX, HTTP, DATABASE, RETENTION, TELEMETRY, RUNTIME,
];

/// The settings every process of the suite has, one field per section.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonSettings {
    pub broker: Broker,
    pub consumer: Consumer,
    pub outbox: Outbox,
    pub http: Http,
    pub database: Database,
    pub retention: Retention,
    pub telemetry: Telemetry,
    pub runtime: Runtime,
}

impl CommonSettings {
    /// What no single value says: a value against another, files that must be readable, URLs
    /// and tokens that must parse. (Each value's own bound was checked when it was loaded.)
    pub fn validate(&self) -> crate::Result<()> {
        self.broker.nodes()?;
        self.broker.declare_scope()?;
        if self.broker.reconnect_max_ms < self.broker.reconnect_min_ms {
            return Err(super::refused(
                BROKER.name,
                "reconnect_max_ms",
                &self.broker.reconnect_max_ms.to_string(),
                &format!(
                    "at least CHOREO_RECONNECT_MIN_MS ({})",
                    self.broker.reconnect_min_ms
                ),
            ));
        }
        self.runtime.failpoints()?;
        self.http.api_tokens.validate()?;
        Ok(())
    }

    /// The messaging runtime's settings, from the broker, consumer, outbox and runtime sections.
    pub fn messaging(&self) -> crate::Result<BrokerSettings> {
        let (broker, consumer) = (&self.broker, &self.consumer);
        Ok(BrokerSettings {
            nodes: broker.nodes()?,
            connect_timeout: Duration::from_millis(broker.amqp_connect_timeout_ms),
            prefix: broker.prefix.clone(),
            prefetch: consumer.prefetch,
            heartbeat: Duration::from_secs(broker.heartbeat_secs),
            retry_delays: consumer
                .retry_delays_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            reconnect_min: Duration::from_millis(broker.reconnect_min_ms),
            reconnect_max: Duration::from_millis(broker.reconnect_max_ms),
            shutdown_timeout: Duration::from_secs(self.runtime.shutdown_timeout_secs),
            outbox_batch: self.outbox.outbox_batch,
            outbox_sweep: Duration::from_millis(self.outbox.outbox_sweep_ms),
            failpoints: self.runtime.failpoints()?,
            consumer_batch: consumer.consumer_batch,
            consumer_linger: Duration::from_millis(consumer.consumer_linger_ms),
            declare: broker.declare_scope()?,
            consume_queue: Some(consumer.consume_queue.trim())
                .filter(|queue| !queue.is_empty())
                .map(str::to_owned),
        })
    }
}

pub const BROKER: Section = Section {
    name: "broker",
    about: "where the broker is, how to reach it, what to declare on it",
    keys: &[
        Key::text(
            "amqp_url",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "broker URL; choose the vhost in its path. The nodes of a cluster: their URLs \
             separated by commas (see [Running on a cluster](deployment.md#running-on-a-cluster)). \
             Never logged with its password; a malformed one stops the service, reported with \
             its password masked",
        )
        .shown(Shown::Redacted),
        Key::number(
            "amqp_connect_timeout_ms",
            5000,
            100,
            600_000,
            "how long a broker node may take to accept a connection (TCP and AMQP handshake) \
             before the next one is tried",
        ),
        Key::text(
            "amqp_tls_ca_file",
            "",
            "`amqps://` only: PEM file of the CA(s) that sign the broker's certificate, and the \
             only ones trusted; empty: the system bundle (`/etc/ssl/certs/ca-certificates.crt` \
             or `/etc/pki/tls/certs/ca-bundle.crt`). Read at start-up: one missing or holding no \
             certificate stops the service. See [TLS](security.md#tls)",
        ),
        Key::text(
            "amqp_tls_cert_file",
            "",
            "`amqps://` only: PEM client certificate (chain), for a broker that verifies \
             clients; with `CHOREO_AMQP_TLS_KEY_FILE`, both or neither",
        ),
        Key::text(
            "amqp_tls_key_file",
            "",
            "`amqps://` only: the client certificate's unencrypted private key",
        ),
        Key::choice(
            "declare_topology",
            "suite",
            &["suite", "own"],
            "`suite`: declare every exchange, queue and binding of the suite at each connect; \
             `own`: only the service's own queue, DLQ and delay queues (the broker loaded the \
             rest, see [Broker users](security.md#broker-users))",
        ),
        Key::text(
            "prefix",
            "",
            "prepended to every exchange and queue name, to isolate tests or tenants",
        ),
        Key::number("heartbeat_secs", 10, 1, 600, "AMQP heartbeat"),
        Key::number(
            "reconnect_min_ms",
            200,
            1,
            60_000,
            "reconnect backoff's first pause (exponential, full jitter)",
        ),
        Key::number(
            "reconnect_max_ms",
            10_000,
            1,
            3_600_000,
            "reconnect backoff's longest pause; at least `CHOREO_RECONNECT_MIN_MS`",
        ),
    ],
};

/// `[broker]`: where the broker is, how to reach it, what to declare on it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// Holds the password, so it is redacted in `Debug`.
    pub amqp_url: Secret,
    pub amqp_connect_timeout_ms: u64,
    pub amqp_tls_ca_file: String,
    pub amqp_tls_cert_file: String,
    pub amqp_tls_key_file: String,
    pub declare_topology: String,
    pub prefix: String,
    pub heartbeat_secs: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("amqp_url", &self.amqp_url)
            .field("prefix", &self.prefix)
            .field("declare_topology", &self.declare_topology)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// The broker's nodes, from `amqp_url`, with the TLS files read when a node is `amqps://`.
    pub fn nodes(&self) -> crate::Result<Nodes> {
        let nodes = Nodes::parse(&self.amqp_url).map_err(|e| {
            crate::Error::Usage(format!("CHOREO_AMQP_URL ([broker] amqp_url): {e}"))
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
        match self.declare_topology.trim().to_ascii_lowercase().as_str() {
            "suite" => Ok(DeclareScope::Suite),
            "own" => Ok(DeclareScope::Own),
            other => Err(super::refused(
                BROKER.name,
                "declare_topology",
                &format!("{other:?}"),
                "`suite` or `own`",
            )),
        }
    }
}

pub const CONSUMER: Section = Section {
    name: "consumer",
    about: "how deliveries are taken from the service's queue and retried",
    keys: &[
        Key::number(
            "prefetch",
            64,
            1,
            65_535,
            "unacked deliveries the broker may push ahead of the consumer (0 would mean \
             unlimited in AMQP)",
        ),
        Key::number(
            "consumer_batch",
            32,
            1,
            1_000,
            "the most already-received deliveries handled in one transaction and acked together \
             (1: one at a time)",
        ),
        Key::number(
            "consumer_linger_ms",
            0,
            0,
            10_000,
            "how long a batch, once its first delivery is in, waits for more (up to \
             `CHOREO_CONSUMER_BATCH`) before it is handled: fewer, larger transactions for that \
             much latency, meant for the observer, a bystander; not yet measured \
             ([benchmarks](benchmarks.md#as-make-up-runs-it))",
        ),
        Key::numbers(
            "retry_delays_ms",
            &[1000, 5000, 30_000],
            1,
            86_400_000,
            "delays of the retries of a transient handler failure; then dead-lettered",
        ),
        Key::text(
            "consume_queue",
            "",
            "the queue this process consumes (prefix applied) instead of its service's own; only \
             for a topology that partitions a service's events over one queue per replica, as \
             `bench --partitioned` does ([benchmarks](benchmarks.md#replicas)); the contract's \
             topology has one queue per service",
        ),
    ],
};

/// `[consumer]`: how deliveries are taken from the service's queue and retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub prefetch: u16,
    pub consumer_batch: usize,
    pub consumer_linger_ms: u64,
    pub retry_delays_ms: Vec<u64>,
    pub consume_queue: String,
}

pub const OUTBOX: Section = Section {
    name: "outbox",
    about: "how the relay publishes committed events",
    keys: &[
        Key::number(
            "outbox_batch",
            256,
            1,
            10_000,
            "outbox rows published per batch",
        ),
        Key::number(
            "outbox_sweep_ms",
            1000,
            10,
            3_600_000,
            "period of the relay's safety-net sweep (commits wake it at once)",
        ),
    ],
};

/// `[outbox]`: how the relay publishes committed events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    pub outbox_batch: i64,
    pub outbox_sweep_ms: u64,
}

pub const HTTP: Section = Section {
    name: "http",
    about: "the HTTP server and its bounds",
    keys: &[
        Key::text(
            "http_addr",
            "127.0.0.1:0",
            "HTTP listen address: loopback unless told otherwise (port 0 picks a free one); the \
             container image, the compose file and the Kubernetes manifests set \
             `0.0.0.0:<port>`",
        ),
        Key::number(
            "http_max_concurrency",
            256,
            1,
            100_000,
            "API requests handled at once; one more is answered `503` with `Retry-After: 1` at \
             once (health endpoints are not counted)",
        ),
        Key::number(
            "http_request_timeout_ms",
            10_000,
            100,
            600_000,
            "an API request taking longer is answered `503` (the order may or may not have been \
             placed: retry with the same `Idempotency-Key`)",
        ),
        Key::number(
            "http_header_timeout_ms",
            5000,
            100,
            600_000,
            "a client must send a whole request head within this long, on a new connection or \
             on a kept-alive one after its last answer; otherwise its connection is closed. A \
             client that pools connections should drop idle ones sooner (the bench, chaos and \
             test clients keep them 2 s), or retry: a request sent just as the service closes \
             an idle connection gets a reset, and `POST /orders` with an `Idempotency-Key` is \
             safe to send again",
        ),
        Key::number(
            "http_body_timeout_ms",
            5000,
            100,
            600_000,
            "a client must send a request's whole body within this long after its head, or it \
             is answered `408`; a JSON body is read before the request takes one of the \
             `CHOREO_HTTP_MAX_CONCURRENCY` slots, so a slow body holds a connection, never a \
             slot",
        ),
        Key::number(
            "http_max_connections",
            1024,
            1,
            1_000_000,
            "HTTP connections open at once; one more is closed as soon as it is accepted, \
             before a byte is read",
        ),
        Key::text(
            "api_tokens",
            "",
            "bearer tokens the API accepts, comma-separated (any one; two during a rotation), \
             each at least 16 visible ASCII characters; empty: authentication off. When set, \
             every request but `GET /healthz`, `GET /readyz` (and the observer's page `GET /`) \
             needs `Authorization: Bearer <token>`, else `401` with `WWW-Authenticate: Bearer`. \
             Never logged",
        )
        .shown(Shown::Hidden),
    ],
};

/// `[http]`: the HTTP server and its bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub http_addr: String,
    pub http_max_concurrency: usize,
    pub http_request_timeout_ms: u64,
    pub http_header_timeout_ms: u64,
    pub http_body_timeout_ms: u64,
    pub http_max_connections: usize,
    /// Redacted in `Debug` (see [`crate::auth`]).
    pub api_tokens: crate::auth::ApiTokens,
}

impl Http {
    /// The bounds of the HTTP API.
    pub fn limits(&self) -> crate::http::Limits {
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
}

pub const DATABASE: Section = Section {
    name: "database",
    about: "where the service keeps its state",
    keys: &[
        Key::text(
            "data_dir",
            "./data",
            "directory of the SQLite file `<service>.db`, used when `CHOREO_DATABASE_URL` is \
             empty",
        ),
        Key::text(
            "database_url",
            "",
            "`sqlite://path` or `postgres://user@host/db`; overrides `CHOREO_DATA_DIR`. Each \
             service needs its own database (replicas of one service share it)",
        )
        .shown(Shown::Redacted),
        Key::number(
            "db_max_connections",
            8,
            1,
            1_000,
            "PostgreSQL pool size (SQLite has one writer and one reader connection, each on its \
             own thread)",
        ),
    ],
};

/// `[database]`: where the service keeps its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub data_dir: String,
    /// May hold a password, so it is redacted in `Debug`.
    pub database_url: Secret,
    pub db_max_connections: u32,
}

impl Database {
    /// The database URL of `service`: `database_url`, else a SQLite file in `data_dir`.
    pub fn url_for(&self, service: &str) -> String {
        if self.database_url.expose().trim().is_empty() {
            format!(
                "sqlite://{}/{service}.db",
                self.data_dir.trim_end_matches('/')
            )
        } else {
            self.database_url.expose().to_owned()
        }
    }
}

pub const RETENTION: Section = Section {
    name: "retention",
    about: "how long what deduplicates is kept",
    keys: &[
        Key::number(
            "retention_hours",
            168,
            1,
            87_600,
            "how long consumed event ids (the inbox), sent outbox rows, orders' \
             `Idempotency-Key`s and the observer's sagas (finished or not: one that heard \
             nothing for this long is abandoned, and goes with its events) are kept (168: a \
             week); a duplicate within it is recognised by its id (see \
             [Guarantees](guarantees.md))",
        ),
        Key::number(
            "retention_sweep_secs",
            60,
            1,
            86_400,
            "the pause between two retention sweeps (each deletes at most 256 rows per \
             transaction)",
        ),
    ],
};

/// `[retention]`: how long what deduplicates is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub retention_hours: u64,
    pub retention_sweep_secs: u64,
}

impl Retention {
    /// What is pruned by age, and how often (the runtime's tables; services add their own).
    pub fn pruning(&self) -> choreo_messaging::Retention {
        choreo_messaging::Retention::new(
            Duration::from_secs(self.retention_hours.saturating_mul(3600)),
            Duration::from_secs(self.retention_sweep_secs),
        )
    }
}

pub const TELEMETRY: Section = Section {
    name: "telemetry",
    about: "logs and traces",
    keys: &[
        Key::choice(
            "log_format",
            "pretty",
            &["pretty", "json"],
            "`pretty` (in colour only on a terminal without `NO_COLOR`; plain text in a file or \
             a pipe) or `json` (every line written while a message or `POST /orders` is handled \
             carries `trace_id` and, with traces on, `span_id` in its `span`); `RUST_LOG` sets \
             levels (default `info`, lapin's own lines off: a refused broker login is logged \
             once, with the user and what to check, and retried quietly)",
        ),
        Key::text(
            "otlp_endpoint",
            "",
            "where to export traces by OTLP/HTTP (protobuf), as a base URL: \
             `http://127.0.0.1:4318` posts to `/v1/traces`; empty: traces off. `http://` only \
             (no TLS is built in). See [Traces](observability.md#traces)",
        ),
    ],
};

/// `[telemetry]`: logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub log_format: String,
    pub otlp_endpoint: String,
}

pub const RUNTIME: Section = Section {
    name: "runtime",
    about: "the process itself",
    keys: &[
        Key::number(
            "worker_threads",
            1,
            0,
            256,
            "Tokio worker threads; `0` runs the async side on the main thread alone (measured \
             in [benchmarks](benchmarks.md)); the database has threads of its own either way",
        ),
        Key::number(
            "shutdown_timeout_secs",
            10,
            1,
            3_600,
            "how long a graceful stop may spend publishing the outbox",
        ),
        Key::text(
            "failpoints",
            "",
            "fault testing only, and it must parse: see [operations.md](operations.md)",
        ),
    ],
};

/// `[runtime]`: the process itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub worker_threads: usize,
    pub shutdown_timeout_secs: u64,
    pub failpoints: String,
}

impl Runtime {
    /// The fault-test points, from `failpoints`.
    pub fn failpoints(&self) -> crate::Result<choreo_messaging::failpoint::Failpoints> {
        choreo_messaging::failpoint::Failpoints::parse(&self.failpoints).map_err(|e| {
            crate::Error::Usage(format!("CHOREO_FAILPOINTS ([runtime] failpoints): {e}"))
        })
    }
}
