//! The end-to-end harness: spawns the three real services in-process against the local RabbitMQ
//! (`AMQP_URL` overrides `amqp://guest:guest@127.0.0.1:5672/%2f`; a comma-separated list of a
//! cluster's nodes is given whole to the services, and the harness itself uses the first), each
//! [`Suite`] with its own
//! name prefix, temporary databases and HTTP ports, and removes its exchanges and queues when
//! dropped (even after a failed assertion). Waiting is always polling with a deadline.

mod leftovers;
pub mod processes;
pub mod proxy;

use choreo_events::topology::{SERVICES, ServiceTopology};
use choreo_host::CommonSettings;
use futures_util::future::BoxFuture;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any wait in a test may last before it fails: 30 s, or `E2E_DEADLINE_SECS`. `make
/// mutants` shortens it, so that a mutant that stops a saga is caught sooner than 30 s.
pub fn deadline() -> Duration {
    static DEADLINE: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
        let secs = std::env::var("E2E_DEADLINE_SECS").ok();
        Duration::from_secs(secs.and_then(|s| s.parse().ok()).unwrap_or(30))
    });
    *DEADLINE
}

/// The broker the harness itself connects to: the first of `AMQP_URL`'s nodes.
pub fn amqp_url() -> String {
    amqp_urls()
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The broker the services are given: `AMQP_URL` whole, one node or a cluster's list.
pub fn amqp_urls() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Orders,
    Billing,
    Shipping,
}

impl Which {
    pub const ALL: [Which; 3] = [Which::Orders, Which::Billing, Which::Shipping];

    pub fn topology(self) -> ServiceTopology {
        match self {
            Which::Orders => choreo_events::topology::ORDERS,
            Which::Billing => choreo_events::topology::BILLING,
            Which::Shipping => choreo_events::topology::SHIPPING,
        }
    }
}

/// A service running in-process.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops gracefully, as SIGTERM would, and waits for the service to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = tokio::time::timeout(deadline(), &mut self.task).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "service did not stop cleanly: {stopped:?}"
        );
    }

    /// Ends the service abruptly: its task is dropped mid-flight, its connections close without
    /// acks, as a crash would leave them.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Settings a test may change before starting services.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_charge_cents: i64,
    pub countries: Vec<String>,
    /// Binds a `tap` queue to every exchange with `#`, to read every event the suite publishes.
    pub tap: bool,
    /// The broker URL the services use (tests of an unreachable broker change it).
    pub amqp_url: String,
    /// Run on PostgreSQL (a fresh database per service) instead of SQLite.
    pub postgres: bool,
    /// `CHOREO_FAILPOINTS` of each service, by name.
    pub failpoints: Vec<(Which, String)>,
    /// Wait until every started service is ready (connected, topology declared) before the
    /// test goes on.
    pub wait_ready: bool,
    /// The broker URL of one service, instead of `amqp_url` (a user per service).
    pub amqp_url_of: Vec<(Which, String)>,
    /// The TLS files every service is given (`CHOREO_AMQP_TLS_*`), for an `amqps://` URL.
    pub tls: choreo_messaging::TlsFiles,
    /// `CHOREO_DECLARE_TOPOLOGY` of every service (`suite` unless changed).
    pub declare_topology: String,
    /// A name prefix of the test's choosing instead of a fresh one. The suite then deletes none
    /// of the broker's objects when dropped: the test owns them (a vhost of its own, say), and
    /// the names may be the real ones.
    pub fixed_prefix: Option<String>,
    /// `CHOREO_OTLP_ENDPOINT` of every service (empty: traces off).
    pub otlp_endpoint: String,
    /// `CHOREO_API_TOKENS` of every service (empty: authentication off). When set, the suite's
    /// own client ([`Suite::http`]) sends the first of them.
    pub api_tokens: String,
    /// `CHOREO_OUTBOX_SWEEP_MS` of every service: how long a relay that nothing wakes waits
    /// before it reads its outbox again (200 ms in tests unless set).
    pub outbox_sweep_ms: u64,
    /// orders' `CHOREO_MAX_UNFINISHED_ORDERS` (admission control; 0: no bound).
    pub max_unfinished_orders: u64,
    /// `CHOREO_CONSUMER_LINGER_MS` of every service (0 unless set).
    pub consumer_linger_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_charge_cents: 100_000,
            countries: shipping::rules::DEFAULT_COUNTRIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            tap: false,
            amqp_url: amqp_urls(),
            postgres: false,
            failpoints: Vec::new(),
            wait_ready: true,
            amqp_url_of: Vec::new(),
            tls: choreo_messaging::TlsFiles::default(),
            declare_topology: "suite".to_owned(),
            fixed_prefix: None,
            otlp_endpoint: String::new(),
            api_tokens: String::new(),
            outbox_sweep_ms: 200,
            max_unfinished_orders: orders::DEFAULT_MAX_UNFINISHED_ORDERS,
            consumer_linger_ms: 0,
        }
    }
}

/// One isolated copy of the suite.
#[derive(Debug)]
pub struct Suite {
    pub prefix: String,
    pub options: Options,
    dir: tempfile::TempDir,
    pub orders: Option<Running>,
    pub billing: Option<Running>,
    pub shipping: Option<Running>,
    /// Extra instances (replicas) started with [`Suite::start_together`].
    pub replicas: Vec<Running>,
    /// The observer, when started with [`Suite::start_observer`].
    pub observer: Option<Running>,
    pub http: reqwest::Client,
    /// Kept open: `channel` lives on it.
    broker: Connection,
    pub channel: Channel,
    /// This suite's entry in [`leftovers`]: what to remove if a signal ends the test.
    leftovers: u64,
}

/// The retry delays of the services under test: short, so retry tests are quick.
pub const RETRY_DELAYS_MS: &[u64] = &[100, 300];

impl Suite {
    /// Starts all three services.
    pub async fn start() -> Suite {
        Self::start_with(Options::default(), &Which::ALL).await
    }

    /// Starts the services in `which`, with `options`.
    pub async fn start_with(options: Options, which: &[Which]) -> Suite {
        choreo_host::telemetry::init_for_tests();
        let prefix = options.fixed_prefix.clone().unwrap_or_else(|| {
            format!("e2e-{}.", &uuid::Uuid::new_v4().simple().to_string()[..10])
        });
        let broker = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("the test broker is reachable");
        let channel = broker.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let http = client(&options.api_tokens);
        let databases = if options.postgres {
            Which::ALL
                .iter()
                .map(|which| postgres_database(&prefix, *which))
                .collect()
        } else {
            Vec::new()
        };
        let owned_prefix = options.fixed_prefix.is_none().then(|| prefix.clone());
        let leftovers = leftovers::register(owned_prefix, databases);
        let mut suite = Suite {
            prefix,
            options,
            dir: tempfile::tempdir().expect("temp dir"),
            orders: None,
            billing: None,
            shipping: None,
            replicas: Vec::new(),
            observer: None,
            http,
            broker,
            channel,
            leftovers,
        };
        if suite.options.tap {
            suite.declare_tap().await;
        }
        if suite.options.postgres {
            suite.create_databases().await;
        }
        for service in which {
            suite.start_service(*service).await;
        }
        if suite.options.wait_ready {
            suite.wait_ready().await;
        }
        suite
    }

    /// The PostgreSQL database of one service of this suite.
    pub fn postgres_database(&self, which: Which) -> String {
        postgres_database(&self.prefix, which)
    }

    async fn create_databases(&self) {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&postgres_url("postgres"))
            .await
            .expect("the test PostgreSQL is reachable");
        for which in Which::ALL {
            sqlx::query(&format!(
                "CREATE DATABASE {}",
                self.postgres_database(which)
            ))
            .execute(&mut admin)
            .await
            .expect("create database");
        }
    }

    /// The settings of one service of this suite.
    pub fn settings_for(&self, which: Which) -> CommonSettings {
        let mut common = self.common();
        if self.options.postgres {
            common.database.database_url =
                choreo_messaging::Secret::new(postgres_url(&self.postgres_database(which)));
        }
        if let Some((_, points)) = self.options.failpoints.iter().find(|(w, _)| *w == which) {
            common.runtime.failpoints = points.clone();
        }
        if let Some((_, url)) = self.options.amqp_url_of.iter().find(|(w, _)| *w == which) {
            common.broker.amqp_url = choreo_messaging::Secret::new(url.clone());
        }
        common.telemetry.otlp_endpoint = self.options.otlp_endpoint.clone();
        common
    }

    /// The common settings every service of this suite gets.
    pub fn common(&self) -> CommonSettings {
        // Defaults only: a developer's CHOREO_* variables (CHOREO_FAILPOINTS, say) stay out.
        let mut common = choreo_host::settings::defaults(&orders::SETTINGS)
            .and_then(|defaults| defaults.common())
            .expect("settings");
        common.broker.amqp_url = choreo_messaging::Secret::new(self.options.amqp_url.clone());
        common.http.http_addr = "127.0.0.1:0".into();
        common.database.data_dir = self.dir.path().display().to_string();
        common.database.database_url = choreo_messaging::Secret::default();
        common.broker.prefix = self.prefix.clone();
        common.consumer.retry_delays_ms = RETRY_DELAYS_MS.to_vec();
        common.broker.reconnect_min_ms = 50;
        common.broker.amqp_connect_timeout_ms = 1000;
        common.broker.reconnect_max_ms = 500;
        common.outbox.outbox_sweep_ms = self.options.outbox_sweep_ms;
        common.consumer.consumer_linger_ms = self.options.consumer_linger_ms;
        common.runtime.shutdown_timeout_secs = 5;
        // Sweeps run in every test, beside everything the test does.
        common.retention.retention_sweep_secs = 1;
        common.broker.amqp_tls_ca_file = self.options.tls.ca_file.clone();
        common.broker.amqp_tls_cert_file = self.options.tls.cert_file.clone();
        common.broker.amqp_tls_key_file = self.options.tls.key_file.clone();
        common.broker.declare_topology = self.options.declare_topology.clone();
        common.http.api_tokens = choreo_host::auth::ApiTokens::parse(&self.options.api_tokens);
        common
    }

    /// Starts one service (again, after a stop: same database, same queues).
    pub async fn start_service(&mut self, which: Which) {
        let running = self.spawn(which).await;
        *self.slot(which) = Some(running);
    }

    /// Starts `per_service` instances of every service all at once, as replicas deployed together
    /// would start: their migrations race. The first of each is the one [`Suite::url`] uses.
    pub async fn start_together(&mut self, per_service: usize) {
        let wanted: Vec<Which> = Which::ALL
            .iter()
            .flat_map(|w| std::iter::repeat_n(*w, per_service))
            .collect();
        let started = futures_util::future::join_all(wanted.iter().map(|w| self.spawn(*w))).await;
        for (which, running) in wanted.into_iter().zip(started) {
            if self.slot(which).is_none() {
                *self.slot(which) = Some(running);
            } else {
                self.replicas.push(running);
            }
        }
    }

    async fn spawn(&self, which: Which) -> Running {
        let common = self.settings_for(which);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (addr, task): (SocketAddr, JoinHandle<std::io::Result<()>>) = match which {
            Which::Orders => {
                let service = orders::build(orders::Settings {
                    common,
                    own: orders::Own {
                        max_unfinished_orders: self.options.max_unfinished_orders,
                    },
                })
                .await
                .expect("orders builds");
                (
                    service.local_addr(),
                    tokio::spawn(service.run_until_stopped(shutdown)),
                )
            }
            Which::Billing => {
                let rules = billing::rules::BillingRules {
                    max_charge_cents: self.options.max_charge_cents,
                };
                let service = billing::build(billing::Settings { common, rules })
                    .await
                    .expect("billing builds");
                (
                    service.local_addr(),
                    tokio::spawn(service.run_until_stopped(shutdown)),
                )
            }
            Which::Shipping => {
                let rules = shipping::rules::ShippingRules {
                    countries: self.options.countries.clone(),
                    carrier: "test-post".into(),
                };
                let service = shipping::build(shipping::Settings { common, rules })
                    .await
                    .expect("shipping builds");
                (
                    service.local_addr(),
                    tokio::spawn(service.run_until_stopped(shutdown)),
                )
            }
        };
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Starts one service in a process of its own, on this suite's broker names and database, with
    /// `CHOREO_FAILPOINTS=failpoints`: for tests that end it the way a crash does (a failpoint's
    /// `abort` would end the test too if the service ran in-process). `binary` is the path of
    /// `e2e-service`, which only a test binary knows (`env!("CARGO_BIN_EXE_e2e-service")`). Its
    /// log goes to the test's output; it is killed if dropped.
    pub fn spawn_process(
        &self,
        binary: &str,
        which: Which,
        failpoints: &str,
    ) -> tokio::process::Child {
        self.spawn_process_with(
            binary,
            which,
            failpoints,
            &[],
            std::process::Stdio::inherit(),
        )
    }

    /// [`Suite::spawn_process`] with `extra` variables over its settings (`RUST_LOG`,
    /// `CHOREO_HTTP_ADDR`, ...) and its standard error sent to `stderr`.
    pub fn spawn_process_with(
        &self,
        binary: &str,
        which: Which,
        failpoints: &str,
        extra: &[(&str, String)],
        stderr: std::process::Stdio,
    ) -> tokio::process::Child {
        let common = self.settings_for(which);
        let list = |values: &[u64]| {
            values
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let database_url = common.database.database_url.expose().to_owned();
        let settings = [
            (
                "CHOREO_AMQP_URL",
                common.broker.amqp_url.expose().to_owned(),
            ),
            ("CHOREO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("CHOREO_DATA_DIR", common.database.data_dir.clone()),
            ("CHOREO_DATABASE_URL", database_url),
            ("CHOREO_PREFIX", common.broker.prefix.clone()),
            (
                "CHOREO_RETRY_DELAYS_MS",
                list(&common.consumer.retry_delays_ms),
            ),
            (
                "CHOREO_RECONNECT_MIN_MS",
                common.broker.reconnect_min_ms.to_string(),
            ),
            (
                "CHOREO_RECONNECT_MAX_MS",
                common.broker.reconnect_max_ms.to_string(),
            ),
            (
                "CHOREO_OUTBOX_SWEEP_MS",
                common.outbox.outbox_sweep_ms.to_string(),
            ),
            (
                "CHOREO_CONSUMER_LINGER_MS",
                common.consumer.consumer_linger_ms.to_string(),
            ),
            (
                "CHOREO_DECLARE_TOPOLOGY",
                common.broker.declare_topology.clone(),
            ),
            ("CHOREO_FAILPOINTS", failpoints.to_owned()),
            ("CHOREO_LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let rules = match which {
            Which::Billing => vec![(
                "CHOREO_MAX_CHARGE_CENTS",
                self.options.max_charge_cents.to_string(),
            )],
            Which::Shipping => vec![("CHOREO_COUNTRIES", self.options.countries.join(","))],
            Which::Orders => vec![(
                "CHOREO_MAX_UNFINISHED_ORDERS",
                self.options.max_unfinished_orders.to_string(),
            )],
        };
        let mut command = tokio::process::Command::new(binary);
        command.arg(which.topology().name);
        // The developer's own CHOREO_* variables stay out, as they do for in-process services.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("CHOREO_")) {
            command.env_remove(name);
        }
        command
            .envs(
                settings
                    .into_iter()
                    .chain(rules)
                    .filter(|(_, value)| !value.is_empty()),
            )
            .envs(extra.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        command.spawn().expect("the e2e-service binary starts")
    }

    /// Starts the observer (SQLite in the suite's directory) with every step's deadline at
    /// `step_deadline`, and waits until it is ready: its queue exists from then on.
    pub async fn start_observer(&mut self, step_deadline: Duration) {
        let mut common = self.common();
        common.database.database_url = choreo_messaging::Secret::default();
        let settings = observer::Settings {
            common,
            watching: observer::Watching {
                step_deadline: Some(step_deadline),
                sweep: Duration::from_millis(50),
            },
        };
        let built = observer::build(settings).await.expect("observer builds");
        let addr = built.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(built.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        self.observer = Some(Running {
            addr,
            stop: Some(stop),
            task,
        });
        let url = self.observer_url("/readyz");
        poll("observer ready", || {
            let request = self.http.get(&url).send();
            Box::pin(async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) })
        })
        .await;
    }

    /// A URL of the running observer.
    pub fn observer_url(&self, path: &str) -> String {
        let running = self.observer.as_ref().expect("the observer is running");
        format!("http://{}{path}", running.addr)
    }

    /// GETs a path of the observer: status and JSON body (null when not JSON).
    pub async fn observer_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.observer_url(path))
            .send()
            .await
            .expect("GET observer");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn slot(&mut self, which: Which) -> &mut Option<Running> {
        match which {
            Which::Orders => &mut self.orders,
            Which::Billing => &mut self.billing,
            Which::Shipping => &mut self.shipping,
        }
    }

    /// Takes a running service out of the suite, to stop or kill it.
    pub fn take(&mut self, which: Which) -> Running {
        self.slot(which).take().expect("the service is running")
    }

    /// The base URL of a running service.
    pub fn url(&self, which: Which, path: &str) -> String {
        let running = match which {
            Which::Orders => &self.orders,
            Which::Billing => &self.billing,
            Which::Shipping => &self.shipping,
        };
        format!(
            "http://{}{path}",
            running.as_ref().expect("the service is running").addr
        )
    }

    /// Waits until every running service answers `/readyz` with 200.
    pub async fn wait_ready(&self) {
        for which in Which::ALL {
            let running = match which {
                Which::Orders => &self.orders,
                Which::Billing => &self.billing,
                Which::Shipping => &self.shipping,
            };
            if running.is_none() {
                continue;
            }
            let url = self.url(which, "/readyz");
            poll(&format!("{which:?} ready"), || {
                let request = self.http.get(&url).send();
                Box::pin(
                    async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) },
                )
            })
            .await;
        }
    }

    /// Places an order and returns the response body (panics unless 201).
    pub async fn place_order(&self, body: &Value) -> Value {
        let response = self
            .http
            .post(self.url(Which::Orders, "/orders"))
            .json(body)
            .send()
            .await
            .expect("POST /orders");
        assert_eq!(response.status(), 201, "POST /orders");
        response.json().await.expect("order JSON")
    }

    /// Reads an order.
    pub async fn order(&self, id: &str) -> Value {
        self.http
            .get(self.url(Which::Orders, &format!("/orders/{id}")))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }

    /// Polls an order until its status is `status`; returns it.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        poll(&format!("order {id} {status}"), || {
            let id = id.to_owned();
            Box::pin(async move {
                let order = self.order(&id).await;
                (order["status"] == status).then_some(order)
            })
        })
        .await
    }

    /// The payments billing has for an order.
    pub async fn payments(&self, order_id: &str) -> Vec<Value> {
        self.list(
            Which::Billing,
            &format!("/payments?order_id={order_id}"),
            "payments",
        )
        .await
    }

    /// The shipments shipping has for an order.
    pub async fn shipments(&self, order_id: &str) -> Vec<Value> {
        self.list(
            Which::Shipping,
            &format!("/shipments?order_id={order_id}"),
            "shipments",
        )
        .await
    }

    async fn list(&self, which: Which, path: &str, key: &str) -> Vec<Value> {
        let body: Value = self
            .http
            .get(self.url(which, path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        body[key].as_array().cloned().unwrap_or_default()
    }

    /// The prefixed name of a broker object.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Publishes raw bytes (confirmed) to a prefixed exchange.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let exchange = if exchange.is_empty() {
            String::new()
        } else {
            self.name(exchange)
        };
        self.channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// How many messages a prefixed queue holds ready for delivery now (not those a consumer
    /// holds unacked).
    pub async fn ready_messages(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(
                self.name(queue).as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await
            .expect("the queue exists")
            .message_count()
    }

    /// Polls until no consumer is left on a prefixed queue (a stopping service has closed its
    /// channel, so the broker has taken back whatever it held unacked), then says how many
    /// messages the queue holds ready.
    pub async fn wait_for_no_consumers(&self, queue: &str) -> u32 {
        let queue = self.name(queue);
        poll(&format!("no consumer on {queue}"), || {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let declared =
                self.channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default());
            Box::pin(async move {
                let declared = declared.await.ok()?;
                (declared.consumer_count() == 0).then_some(declared.message_count())
            })
        })
        .await
    }

    /// Polls until a prefixed queue holds exactly `count` ready messages.
    pub async fn wait_for_ready_messages(&self, queue: &str, count: u32) {
        poll(&format!("{count} ready messages in {queue}"), || {
            Box::pin(async move { (self.ready_messages(queue).await == count).then_some(()) })
        })
        .await;
    }

    /// Takes every message now in a prefixed queue: (headers, body).
    pub async fn drain(&self, queue: &str) -> Vec<(FieldTable, Vec<u8>)> {
        let mut messages = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(
                self.name(queue).as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let headers = message
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            messages.push((headers, message.delivery.data.clone()));
        }
        messages
    }

    /// Polls a prefixed queue until it has yielded `count` messages; returns them.
    pub async fn wait_for_messages(&self, queue: &str, count: usize) -> Vec<(FieldTable, Vec<u8>)> {
        let collected = std::sync::Mutex::new(Vec::new());
        poll(&format!("{count} messages in {queue}"), || {
            let collected = &collected;
            Box::pin(async move {
                let more = self.drain(queue).await;
                let mut all = collected.lock().expect("lock");
                all.extend(more);
                (all.len() >= count).then(|| all.clone())
            })
        })
        .await
    }

    async fn declare_tap(&self) {
        let tap = self.name("tap");
        // Durable: RabbitMQ 4.3 refuses transient queues that are not exclusive (the suite deletes
        // it with the rest of its topology).
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(tap.as_str().into(), durable, FieldTable::default())
            .await
            .expect("tap");
        // The suite topology first, so the exchanges exist to bind to.
        choreo_messaging::topology::declare_suite(
            &self.broker,
            &choreo_messaging::Names::new(self.prefix.clone()),
        )
        .await
        .expect("topology");
        for service in SERVICES {
            self.channel
                .queue_bind(
                    tap.as_str().into(),
                    self.name(service.exchange).as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind tap");
        }
    }

    /// Waits until the tap has seen `count` events and returns them (needs [`Options::tap`]).
    pub async fn wait_for_tapped(&self, count: usize) -> Vec<choreo_events::Envelope> {
        self.wait_for_messages("tap", count)
            .await
            .iter()
            .map(|(_, body)| choreo_events::Envelope::decode(body).expect("tapped events decode"))
            .collect()
    }
}

/// The PostgreSQL database of one service of the suite named by `prefix`.
fn postgres_database(prefix: &str, which: Which) -> String {
    format!(
        "{}_{}",
        prefix.trim_end_matches('.').replace('-', "_"),
        which.topology().name
    )
}

impl Drop for Suite {
    fn drop(&mut self) {
        for which in Which::ALL {
            if let Some(running) = self.slot(which).take() {
                running.task.abort();
            }
        }
        for replica in self.replicas.drain(..) {
            replica.task.abort();
        }
        if let Some(observer) = self.observer.take() {
            observer.task.abort();
        }
        let databases: Vec<String> = if self.options.postgres {
            Which::ALL
                .iter()
                .map(|w| self.postgres_database(*w))
                .collect()
        } else {
            Vec::new()
        };
        // Remove this suite's exchanges and queues, even when a test failed: on a thread of its
        // own, since a runtime cannot block inside itself. Not with a prefix the test chose: the
        // names may be real ones, and the test cleans up what it made.
        let prefix = self.prefix.clone();
        let owned_by_test = self.options.fixed_prefix.is_some();
        let delays = RETRY_DELAYS_MS;
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if !owned_by_test {
                runtime.block_on(delete_topology(&prefix, delays));
            }
            runtime.block_on(drop_databases(&databases));
        })
        .join();
        leftovers::release(self.leftovers);
    }
}

/// Whether `queue` (its whole name) exists on the broker: a passive declare, on a channel of its
/// own (a refused declare closes the channel it ran on).
pub async fn queue_exists(connection: &Connection, queue: &str) -> bool {
    let Ok(channel) = connection.create_channel().await else {
        return false;
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok()
}

/// Removes what test processes ended by SIGKILL left behind: every exchange and queue whose name
/// starts with `e2e-` (listed with `rabbitmqctl`) and every `e2e_` database. Returns how many it
/// removed. Only for when no test runs (`make mutants` between its groups): it takes everything.
pub async fn sweep_leftovers() -> anyhow::Result<usize> {
    use anyhow::Context as _;
    use sqlx::Connection as _;
    let list = |what: &str| -> anyhow::Result<Vec<String>> {
        let output = std::process::Command::new("rabbitmqctl")
            .args([what, "--silent", "name"])
            .output()
            .with_context(|| format!("rabbitmqctl {what}"))?;
        anyhow::ensure!(output.status.success(), "rabbitmqctl {what} failed");
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| name.starts_with("e2e-"))
            .map(str::to_owned)
            .collect())
    };
    let (queues, exchanges) = (list("list_queues")?, list("list_exchanges")?);
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    for queue in &queues {
        // A fresh channel each time: an error closes the channel it happened on.
        let channel = connection.create_channel().await?;
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in &exchanges {
        let channel = connection.create_channel().await?;
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let databases: Vec<String> = match sqlx::PgConnection::connect(&postgres_url("postgres")).await
    {
        Ok(mut admin) => {
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'e2e\\_%'")
                .fetch_all(&mut admin)
                .await?
        }
        Err(_) => Vec::new(),
    };
    drop_databases(&databases).await;
    Ok(queues.len() + exchanges.len() + databases.len())
}

/// Deletes every exchange and queue of the suite under `prefix` (and its retry queues).
pub async fn delete_topology(prefix: &str, delays_ms: &[u64]) {
    let Ok(connection) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await
    else {
        return;
    };
    // Every name walked from what the services and the observer declare, as the API documents
    // are: nothing here spells a name. The observer's, if a test started it, and the tap
    // (deleting what is absent is harmless).
    let names = choreo_messaging::Names::new(prefix.to_owned());
    let delays: Vec<Duration> = delays_ms
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    let observer = choreo_events::topology::OBSERVER;
    let mut declared = vec![
        choreo_messaging::topology::suite(&names),
        choreo_messaging::topology::bystander(&names, &observer),
        choreo_messaging::topology::retry_queues(&names, &observer, &delays),
    ];
    for service in SERVICES {
        declared.push(choreo_messaging::topology::retry_queues(
            &names, service, &delays,
        ));
    }
    let mut queues = vec![names.of("tap")];
    let mut exchanges = Vec::new();
    for declarations in declared {
        queues.extend(declarations.queues.into_iter().map(|q| q.name));
        exchanges.extend(declarations.exchanges.into_iter().map(|e| e.name));
    }
    queues.sort();
    queues.dedup();
    exchanges.sort();
    exchanges.dedup();
    // A service aborted a moment ago may still be declaring its topology: delete, then check
    // that every queue is gone, and again until it is (bounded).
    for _ in 0..20 {
        for queue in &queues {
            // A fresh channel each time: an error closes the channel it happened on.
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        for exchange in &exchanges {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let mut left = 0;
        for queue in &queues {
            if queue_exists(&connection, queue).await {
                left += 1;
            }
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = connection.close(200, "cleaned up".into()).await;
}

/// The URL of a database on the test PostgreSQL (`PG_URL` overrides the server part,
/// default `postgres://postgres@127.0.0.1:5432`).
pub fn postgres_url(database: &str) -> String {
    let server =
        std::env::var("PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    format!("{}/{database}", server.trim_end_matches('/'))
}

/// Drops test databases on the test PostgreSQL.
pub async fn drop_databases(databases: &[String]) {
    use sqlx::Connection as _;
    if databases.is_empty() {
        return;
    }
    let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_url("postgres")).await else {
        return;
    };
    for database in databases {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// Polls `check` every 25 ms until it yields a value; panics after [`deadline`].
pub async fn poll<'a, T>(what: &str, mut check: impl FnMut() -> BoxFuture<'a, Option<T>>) -> T {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline(),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An HTTP client for the services. A service closes a kept-alive connection that stays idle
/// for its header timeout (`CHOREO_HTTP_HEADER_TIMEOUT_MS`, 5 s by default), and a client that
/// picks such a connection from its pool just as the service closes it gets a reset. So the
/// client lets its own idle connections go sooner (reqwest keeps them 90 s by default).
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(2))
}

/// An HTTP client sending the first of `api_tokens` (comma-separated) as its bearer token.
fn client(api_tokens: &str) -> reqwest::Client {
    let Some(token) = api_tokens.split(',').map(str::trim).find(|t| !t.is_empty()) else {
        return http_client().build().expect("client");
    };
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value: reqwest::header::HeaderValue = format!("Bearer {token}")
        .parse()
        .expect("a token fits a header");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    http_client()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// An order request: `quantity` x `unit_price_cents` shipped to `country`.
pub fn order_request(unit_price_cents: i64, quantity: u32, country: &str) -> Value {
    json!({
        "customer_id": "customer-1",
        "currency": "EUR",
        "items": [{"sku": "BOOK-1", "quantity": quantity, "unit_price_cents": unit_price_cents}],
        "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main Street", "city": "Vienna", "postal_code": "1010", "country": country}
    })
}

/// A header's text value.
pub fn header(headers: &FieldTable, name: &str) -> Option<String> {
    headers.inner().get(name).map(|value| match value {
        lapin::types::AMQPValue::LongString(s) => s.to_string(),
        other => format!("{other:?}"),
    })
}

/// The history of an order as `type -> status` lines.
pub fn journey(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|h| {
                    format!(
                        "{} -> {}",
                        h["type"].as_str().unwrap_or("?"),
                        h["status"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The labels of a sample, as (name, value) pairs in the order served.
pub type Labels = Vec<(String, String)>;

/// One scrape of a service's `GET /metrics`, parsed: every sample with its labels.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The text as served.
    pub text: String,
    /// (name, labels, value) of every sample line.
    pub samples: Vec<(String, Labels, f64)>,
}

impl Scrape {
    /// Parses the Prometheus text format (comments and blank lines skipped).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let value: f64 = value.parse().expect("a sample's value is a number");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, Vec::new()),
                };
                (name.to_owned(), labels, value)
            })
            .collect();
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// The sum of the samples named `name` that have every label of `labels`; 0 if none has.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }
}

/// `a="x",b="y"` as pairs, with `\"`, `\\` and `\n` unescaped.
fn parse_labels(text: &str) -> Labels {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "a label value is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                other => value.push(other),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

impl Suite {
    /// Scrapes a running service's `/metrics`.
    pub async fn scrape(&self, which: Which) -> Scrape {
        let response = self
            .http
            .get(self.url(which, "/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape::parse(&response.text().await.expect("metrics text"))
    }
}
